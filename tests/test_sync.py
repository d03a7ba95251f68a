"""The blocking facade :class:`upscale_stream.Client`, against the reference server.

The server runs in a background thread for the whole session (``upscale_server_url``), so the
blocking calls here never wait on the test's own event loop.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import inspect
import io
import threading
from collections.abc import Iterator

import pytest
from PIL import Image

from upscale_stream import Client, ClientClosed, InvalidTask, UpscaleClient, UpscaleResult
from upscale_stream.testing import TEST_API_KEY

ASYNC_ONLY: frozenset[str] = frozenset()
"""Public names of UpscaleClient that the blocking Client deliberately lacks (none today)."""

SYNC_ONLY = frozenset({"map"})
"""Public names only the blocking Client has."""


def png(width: int, height: int, colour: int = 120) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (colour, 30, 200)).save(buffer, "PNG")
    return buffer.getvalue()


def size_of(result: UpscaleResult) -> tuple[int, int]:
    with Image.open(io.BytesIO(result.read_bytes())) as image:
        return image.size


@pytest.fixture
def client(upscale_server_url: str) -> Iterator[Client]:
    with Client(TEST_API_KEY, url=upscale_server_url) as opened:
        yield opened


def test_upscale_returns_the_result_of_one_image(client: Client) -> None:
    result = client.upscale(png(10, 7), factor=4, output_type="base64Data")
    assert size_of(result) == (40, 28)
    assert base64.b64decode(result.image_base64_data or "").startswith(b"\xff\xd8\xff")  # JPEG


def test_upscale_takes_every_task_option(client: Client) -> None:
    result = client.upscale(png(5, 5), output_format="PNG", include_cost=True)
    assert result.url is not None and result.cost is not None
    assert result.read_bytes().startswith(b"\x89PNG")


def test_map_yields_one_outcome_per_input_in_input_order(client: Client) -> None:
    inputs = [png(4 + i, 3) for i in range(5)]
    inputs.insert(2, b"not an image")

    outcomes = list(client.map(inputs, factor=2, output_type="base64Data"))

    assert [o.index for o in outcomes] == list(range(6))
    assert [o.ok for o in outcomes] == [True, True, False, True, True, True]
    assert isinstance(outcomes[2].error, InvalidTask)
    assert [size_of(o.unwrap()) for o in outcomes if o.ok] == [(2 * (4 + i), 6) for i in range(5)]


def test_upscale_many_streams_every_outcome(client: Client) -> None:
    outcomes = list(client.upscale_many([png(3, 3, c) for c in range(8)], output_type="dataURI"))
    assert sorted(o.index for o in outcomes) == list(range(8))
    assert all(o.ok and o.task_uuid for o in outcomes)


def test_submit_returns_a_thread_safe_future(client: Client) -> None:
    task = client.build_task(png(6, 4), factor=2, output_type="base64Data")
    future = client.submit(task)
    assert isinstance(future, concurrent.futures.Future)
    assert size_of(future.result(timeout=30)) == (12, 8)


def test_the_client_reports_its_session_and_closes_for_good(upscale_server_url: str) -> None:
    client = Client(TEST_API_KEY, url=upscale_server_url)
    client.connect()
    assert client.session_id and client.url == upscale_server_url and client.in_flight == 0
    client.close()
    with pytest.raises(ClientClosed):
        client.upscale(png(2, 2))


async def test_the_blocking_client_works_inside_a_running_event_loop(
    upscale_server_url: str,
) -> None:
    # As in Jupyter: the caller's thread already runs a loop. The client's own loop lives in
    # another thread, so the blocking calls work (and block only this test).
    asyncio.get_running_loop()
    with Client(TEST_API_KEY, url=upscale_server_url) as client:
        result = client.upscale(png(8, 8), output_type="base64Data")
        outcomes = list(client.map([png(2, 2), png(3, 3)], output_type="base64Data"))
    assert size_of(result) == (16, 16)
    assert [size_of(o.unwrap()) for o in outcomes] == [(4, 4), (6, 6)]


def test_the_event_loop_runs_in_a_daemon_thread_of_its_own(upscale_server_url: str) -> None:
    before = set(threading.enumerate())
    with Client(TEST_API_KEY, url=upscale_server_url):
        new = [t for t in threading.enumerate() if t not in before]
        assert any(t.name == "upscale-stream-loop" and t.daemon for t in new)
    assert all(not t.is_alive() for t in new if t.name == "upscale-stream-loop")


def public_names(cls: type) -> set[str]:
    return {name for name in dir(cls) if not name.startswith("_")}


def test_every_public_name_of_the_async_client_exists_on_the_blocking_client() -> None:
    missing = public_names(UpscaleClient) - public_names(Client) - ASYNC_ONLY
    assert not missing, f"add these to Client (or to ASYNC_ONLY, with a reason): {missing}"


def test_map_exists_only_on_the_blocking_client() -> None:
    # The settings are instance attributes of UpscaleClient and properties of Client.
    settings = {"url", "limits", "timeouts", "heartbeat", "retry", "task_retry", "polling"}
    assert public_names(Client) - public_names(UpscaleClient) - settings == SYNC_ONLY
    instance = UpscaleClient("k" * 8, url="ws://127.0.0.1:9/v1")
    assert all(hasattr(instance, name) for name in settings)
    assert not hasattr(UpscaleClient, "map")


def test_shared_methods_take_the_same_parameters() -> None:
    for name in sorted(public_names(UpscaleClient) & public_names(Client)):
        async_member = getattr(UpscaleClient, name)
        if isinstance(async_member, property):
            assert isinstance(getattr(Client, name), property), name
            continue
        async_params = inspect.signature(async_member).parameters
        sync_params = inspect.signature(getattr(Client, name)).parameters
        assert [(p.name, p.kind, p.default) for p in async_params.values()] == [
            (p.name, p.kind, p.default) for p in sync_params.values()
        ], name


def test_a_blocking_client_used_unconnected_says_how_to_connect_it_in_a_notebook() -> None:
    client = Client("k" * 8, url="ws://127.0.0.1:9/v1")
    try:
        with pytest.raises(ClientClosed) as caught:
            client.upscale(png(4, 4), factor=2)
    finally:
        client.close()
    message = str(caught.value)
    assert "async with" not in message  # the async client's advice does not fit here
    assert "with Client(...) as client:" in message
    assert "client = Client(...).connect()" in message and "client.close()" in message


def test_connect_returns_the_client_for_one_line_notebook_use(upscale_server_url) -> None:
    client = Client(api_key=TEST_API_KEY, url=upscale_server_url).connect()
    try:
        assert isinstance(client, Client) and client.session_id is not None
    finally:
        client.close()
