"""upscale_many hands image UUIDs to the connection in batches (Stream._submit_batch and
Connection.submit_many): every input still gets exactly one outcome, whatever is refused."""

from __future__ import annotations

import asyncio
import base64
import io
import itertools
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from PIL import Image

from upscale_stream import UpscaleClient
from upscale_stream import streaming as streaming_module
from upscale_stream.connection import Connection
from upscale_stream.errors import ClientClosed, DuplicateTaskUUID
from upscale_stream.server import ReferenceServer, ServerConfig

KEY = "batch-test-key"


@pytest.fixture
async def server() -> AsyncIterator[ReferenceServer]:
    config = ServerConfig(api_keys=frozenset({KEY}), port=0, allow_private_urls=True)
    async with ReferenceServer(config) as running:
        yield running


async def _stored_image(client: UpscaleClient) -> str:
    """An image UUID the server holds for our key: a first result's."""
    buffer = io.BytesIO()
    Image.new("RGB", (3, 2), (10, 200, 30)).save(buffer, "PNG")
    result = await client.upscale(
        "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
    )
    assert result.image_uuid is not None
    return result.image_uuid


def _uuids_repeating(index: int) -> Iterator[str]:
    """Fresh UUIDs, except that draw ``index + 1`` repeats draw ``index``."""
    for n in itertools.count():
        drawn = str(uuid.uuid4())
        yield drawn
        if n == index:
            yield drawn


async def test_image_uuids_go_in_batches_and_each_input_gets_one_outcome(
    server: ReferenceServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    sizes: list[int] = []
    submit_many = Connection.submit_many

    def counted(self: Connection, task_uuids: list[str], *args: Any) -> Any:
        sizes.append(len(task_uuids))
        return submit_many(self, task_uuids, *args)

    monkeypatch.setattr(Connection, "submit_many", counted)
    async with UpscaleClient(api_key=KEY, url=server.url, max_in_flight=300) as client:
        image = await _stored_image(client)
        async with asyncio.timeout(30):
            outcomes = [o async for o in client.upscale_many([image] * 200)]
    assert sorted(o.index for o in outcomes) == list(range(200))
    assert all(o.ok for o in outcomes)
    assert len({o.task_uuid for o in outcomes}) == 200
    assert sum(sizes) == 200 and max(sizes) <= streaming_module._BATCH and len(sizes) < 200


async def test_a_taskuuid_drawn_twice_in_a_batch_fails_only_the_second_input(
    server: ReferenceServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with UpscaleClient(api_key=KEY, url=server.url) as client:
        image = await _stored_image(client)
        draws = _uuids_repeating(3)
        monkeypatch.setattr(streaming_module, "new_task_uuid", lambda: next(draws))
        async with asyncio.timeout(30):
            outcomes = [o async for o in client.upscale_many([image] * 10, ordered=True)]
    assert [o.index for o in outcomes] == list(range(10))
    failed = [o for o in outcomes if not o.ok]
    assert [(o.index, type(o.error), o.attempts) for o in failed] == [(4, DuplicateTaskUUID, 0)]
    assert failed[0].task_uuid == outcomes[3].task_uuid


async def test_a_taskuuid_another_caller_holds_fails_only_that_input(
    server: ReferenceServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with UpscaleClient(api_key=KEY, url=server.url) as client:
        image = await _stored_image(client)
        held = str(uuid.uuid4())
        server.faults.result_delay = 0.3  # the other caller's task is still live meanwhile
        other = await client.submit(await client.build_task(image, task_uuid=held))  # queued
        draws = iter([str(uuid.uuid4()), held, *(str(uuid.uuid4()) for _ in range(3))])
        monkeypatch.setattr(streaming_module, "new_task_uuid", lambda: next(draws))
        async with asyncio.timeout(30):
            outcomes = [o async for o in client.upscale_many([image] * 5, ordered=True)]
        assert (await other).task_uuid == held
    assert [o.ok for o in outcomes] == [True, False, True, True, True]
    assert isinstance(outcomes[1].error, DuplicateTaskUUID) and outcomes[1].attempts == 0


async def test_inputs_read_before_the_iterable_failed_still_run(server: ReferenceServer) -> None:
    async with UpscaleClient(api_key=KEY, url=server.url) as client:
        image = await _stored_image(client)

        def inputs() -> Iterator[str]:
            yield from [image] * 5
            raise RuntimeError("the source broke")

        outcomes = []
        with pytest.raises(RuntimeError, match="the source broke"):
            async with asyncio.timeout(30):
                async for outcome in client.upscale_many(inputs()):
                    outcomes.append(outcome)
    assert sorted(o.index for o in outcomes) == list(range(5))
    assert all(o.ok for o in outcomes)


async def test_a_stream_stops_reading_its_inputs_once_the_client_closes(
    server: ReferenceServer,
) -> None:
    """Closing the client while a stream runs (window slots still free) ends the stream with
    ClientClosed after the outcomes of the inputs already read; it does not go on reading a
    long input source only to refuse every input."""
    read = 0
    outcomes: list[Any] = []
    async with UpscaleClient(api_key=KEY, url=server.url, max_in_flight=500) as client:
        image = await _stored_image(client)

        async def inputs() -> AsyncIterator[str]:
            nonlocal read
            for _ in range(100_000):
                read += 1
                yield image
                await asyncio.sleep(0)  # a lazy source: lets the loop run between inputs

        closing: asyncio.Task[None] | None = None
        with pytest.raises(ClientClosed):
            async with asyncio.timeout(30):
                async for outcome in client.upscale_many(inputs()):
                    outcomes.append(outcome)
                    if closing is None:
                        closing = asyncio.create_task(client.close())
        assert closing is not None
        await closing
    assert outcomes and all(o.error is None or isinstance(o.error, ClientClosed) for o in outcomes)
    assert read < 2_000, read
