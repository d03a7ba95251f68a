"""The client over real sockets, against the reference server and its fault injection.

No mocks of our own code across the socket: the server is the real one on 127.0.0.1, port 0.
"""

from __future__ import annotations

import asyncio
import base64
import io
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest
import websockets
from PIL import Image

from upscale_stream import (
    AuthenticationError,
    ClientClosed,
    Heartbeat,
    InvalidTask,
    Polling,
    Retry,
    Timeouts,
    UpscaleClient,
    UpscaleTimeout,
)
from upscale_stream.server import ReferenceServer, ServerConfig

KEY = "test-key-SECRET-0123456789"
FAST_RETRY = Retry(initial=0.01, factor=1.5, max_delay=0.05, resume_grace=0.2)


def png_data_uri(width: int, height: int, colour: tuple[int, int, int] = (200, 30, 30)) -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def decoded_size(result: Any) -> tuple[int, int]:
    with Image.open(io.BytesIO(result.read_bytes())) as image:
        return image.size


@pytest.fixture
async def server() -> AsyncIterator[ReferenceServer]:
    config = ServerConfig(api_keys=frozenset({KEY}), port=0, allow_private_urls=True)
    async with ReferenceServer(config) as running:
        yield running


def client_for(server: ReferenceServer, **options: Any) -> UpscaleClient:
    options.setdefault("retry", FAST_RETRY)
    options.setdefault("seed", 7)
    return UpscaleClient(api_key=KEY, url=server.url, **options)


async def test_one_upscale_returns_an_image_twice_the_size(server: ReferenceServer) -> None:
    async with client_for(server) as client:
        result = await client.upscale(png_data_uri(8, 6), output_type="base64Data")
    assert decoded_size(result) == (16, 12)
    assert result.image_uuid and result.input_image_uuid


async def test_thousand_concurrent_upscales_share_few_frames_and_each_gets_its_own_result(
    server: ReferenceServer,
) -> None:
    server.faults.shuffle_results = True
    server.faults.group_results = 7
    sizes = [(1 + n % 25, 1 + n // 25) for n in range(1000)]
    async with client_for(server, max_in_flight=1000, max_batch=100) as client:
        results = await asyncio.gather(
            *(client.upscale(png_data_uri(w, h), output_type="base64Data") for w, h in sizes)
        )
        frames = client._connection.frames_sent if client._connection else 0
    assert [decoded_size(r) for r in results] == [(2 * w, 2 * h) for w, h in sizes]
    assert frames < 100  # 1,000 tasks in far fewer frames (the auth frame included)
    assert len({r.task_uuid for r in results}) == 1000


@pytest.mark.parametrize("mode", ["abort", "close-1000", "close-1001", "close-1011"])
async def test_drop_after_tasks_arrive_completes_every_task_once_under_its_own_uuid(
    server: ReferenceServer, mode: str
) -> None:
    server.faults.drop_after_tasks = 10
    if mode != "abort":
        server.faults.close_code = int(mode.split("-")[1])
    async with client_for(server, max_batch=4) as client:
        tasks = [await client.build_task(png_data_uri(4 + n, 4)) for n in range(30)]
        futures = [await client.submit(task) for task in tasks]
        results = await asyncio.gather(*futures)
        assert client.reconnects >= 1
    submitted = {t.task_uuid for t in tasks}
    assert [r.task_uuid for r in results] == [t.task_uuid for t in tasks]
    assert set(server.received) == submitted  # never a second taskUUID for the same task
    assert all(server.executions[u] == 1 for u in submitted)


async def test_withheld_pongs_mark_the_link_dead_and_resume_loses_nothing(
    server: ReferenceServer,
) -> None:
    server.faults.withhold_pongs = True
    server.faults.result_delay = 0.8
    heartbeat = Heartbeat(interval=0.1, pong_timeout=0.2)
    async with client_for(server, heartbeat=heartbeat) as client:
        tasks = [await client.build_task(png_data_uri(5, 5 + n)) for n in range(10)]
        futures = [await client.submit(task) for task in tasks]
        await server.wait_authenticated(2, timeout=10)
        server.faults.withhold_pongs = False
        results = await asyncio.gather(*futures)
    assert client.reconnects >= 1
    assert [r.task_uuid for r in results] == [t.task_uuid for t in tasks]
    assert all(server.executions[t.task_uuid] == 1 for t in tasks)
    assert set(server.received) == {t.task_uuid for t in tasks}


async def test_full_server_restart_resends_unanswered_tasks_with_the_same_uuid(
    server: ReferenceServer,
) -> None:
    server.faults.result_delay = 0.5
    async with client_for(server) as client:
        tasks = [await client.build_task(png_data_uri(3, 3 + n)) for n in range(8)]
        futures = [await client.submit(task) for task in tasks]
        await server.wait_received(8, timeout=10)
        await server.restart()
        server.faults.result_delay = 0.0
        results = await asyncio.gather(*futures)
    assert [r.task_uuid for r in results] == [t.task_uuid for t in tasks]
    assert set(server.received) == {t.task_uuid for t in tasks}


async def test_stray_errors_and_malformed_frames_leave_other_tasks_unharmed(
    server: ReferenceServer,
) -> None:
    server.faults.stray_error_every = 2
    server.faults.malformed_every = 3
    async with client_for(server) as client:
        results = await asyncio.gather(*(client.upscale(png_data_uri(4, 4)) for _ in range(20)))
        assert client.reconnects == 0
    assert len(results) == 20


async def test_an_invalid_task_fails_alone_while_its_frame_mates_succeed(
    server: ReferenceServer,
) -> None:
    async with client_for(server) as client:
        good = [await client.build_task(png_data_uri(4, 4)) for _ in range(3)]
        # A task the client would refuse, smuggled past validation to see the server's answer.
        bad = good[0].model_copy(update={"task_uuid": "44444444-4444-4444-8444-444444444444"})
        bad = bad.model_copy(update={"output_quality": 100})
        futures = [await client.submit(t) for t in [*good, bad]]
        outcomes = await asyncio.gather(*futures, return_exceptions=True)
    assert all(not isinstance(o, BaseException) for o in outcomes[:3])
    error = outcomes[3]
    assert getattr(error, "code", None) == "invalidOutputQuality"
    assert getattr(error, "task_uuid", None) == bad.task_uuid


async def test_rejected_key_fails_fast_and_is_never_retried(server: ReferenceServer) -> None:
    client = UpscaleClient(api_key="wrong-key-SECRET-42", url=server.url, retry=FAST_RETRY)
    with pytest.raises(AuthenticationError) as info:
        await client.connect()
    assert info.value.code == "invalidApiKey"
    assert "wrong-key-SECRET-42" not in str(info.value) + repr(info.value)
    assert client.reconnects == 0


async def test_connect_times_out_when_the_server_never_upgrades() -> None:
    stalled: list[asyncio.StreamWriter] = []

    async def accept_and_stall(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        stalled.append(writer)  # hold the socket open and never answer the upgrade request

    tcp = await asyncio.start_server(accept_and_stall, "127.0.0.1", 0)
    port = tcp.sockets[0].getsockname()[1]
    async with tcp:
        client = UpscaleClient(
            api_key=KEY, url=f"ws://127.0.0.1:{port}", timeouts=Timeouts(connect=0.3)
        )
        with pytest.raises(UpscaleTimeout) as info:
            await client.connect()
        for writer in stalled:
            writer.close()
            await writer.wait_closed()
    assert info.value.operation == "connect"


async def test_auth_times_out_when_the_server_never_answers() -> None:
    async def silent(ws: Any) -> None:
        await ws.wait_closed()

    async with websockets.serve(silent, "127.0.0.1", 0) as silent_server:
        port = next(iter(silent_server.sockets)).getsockname()[1]
        client = UpscaleClient(
            api_key=KEY, url=f"ws://127.0.0.1:{port}", timeouts=Timeouts(auth=0.3)
        )
        with pytest.raises(UpscaleTimeout) as info:
            await client.connect()
    assert info.value.operation == "authentication"


async def test_async_delivery_polls_get_response_on_the_same_socket(
    server: ReferenceServer,
) -> None:
    polling = Polling(initial=0.05, factor=1.5, max_delay=0.2)
    async with client_for(server, polling=polling) as client:
        results = await asyncio.gather(
            *(
                client.upscale(png_data_uri(6, 6), delivery_method="async", output_type="dataURI")
                for _ in range(5)
            )
        )
    assert all(decoded_size(r) == (12, 12) for r in results)


async def test_window_is_bounded_and_cancelling_a_task_frees_its_slot(
    server: ReferenceServer,
) -> None:
    server.faults.result_delay = 30.0
    async with client_for(server, max_in_flight=3) as client:
        first = [await client.submit(await client.build_task(png_data_uri(2, 2))) for _ in range(3)]
        fourth = asyncio.ensure_future(client.submit(await client.build_task(png_data_uri(2, 2))))
        await asyncio.sleep(0)  # let it try; the window is full
        assert not fourth.done()
        first[0].cancel()
        submitted = await asyncio.wait_for(fourth, timeout=5)
        assert client.in_flight == 3
        await client.close(cancel=True)
    # Closing ends pending tasks with ClientClosed; only the caller cancels (issue 13).
    assert not submitted.cancelled()
    assert isinstance(submitted.exception(), ClientClosed)
    assert all(isinstance(f.exception(), ClientClosed) for f in first[1:])


async def test_a_task_timeout_fails_that_task_only(server: ReferenceServer) -> None:
    async with client_for(server) as client:
        server.faults.result_delay = 5.0
        with pytest.raises(UpscaleTimeout) as info:
            await client.upscale(png_data_uri(2, 2), timeout=0.2)
        assert info.value.operation == "task"
        server.faults.result_delay = 0.0
        assert (await client.upscale(png_data_uri(2, 2))).image_uuid


async def test_close_drains_in_flight_tasks(server: ReferenceServer) -> None:
    server.faults.result_delay = 0.2
    client = client_for(server)
    await client.connect()
    futures = [await client.submit(await client.build_task(png_data_uri(3, 3))) for _ in range(5)]
    await client.close()
    assert all(f.done() and not f.cancelled() and f.exception() is None for f in futures)
    with pytest.raises(ClientClosed):
        await client.upscale(png_data_uri(3, 3))


async def test_upscale_many_streams_in_input_order_and_reports_bad_inputs(
    server: ReferenceServer,
) -> None:
    images: list[Any] = [png_data_uri(2 + n, 2) for n in range(12)]
    images[5] = b"\x89PNG\r\n\x1a\n-truncated"
    async with client_for(server, max_in_flight=4) as client:
        outcomes = [o async for o in client.upscale_many(images, ordered=True)]
    assert [o.index for o in outcomes] == list(range(12))
    assert isinstance(outcomes[5].error, InvalidTask)
    assert all(o.ok for i, o in enumerate(outcomes) if i != 5)


async def test_a_result_frame_over_one_mebibyte_is_accepted(server: ReferenceServer) -> None:
    noise = Image.effect_noise((400, 400), 90).convert("RGB")
    async with client_for(server) as client:
        result = await client.upscale(noise, output_type="base64Data", output_format="PNG")
    assert result.image_base64_data is not None and len(result.image_base64_data) > 1024 * 1024


async def test_the_key_never_appears_in_logs_reprs_or_errors(
    server: ReferenceServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    server.faults.drop_after_tasks = 2
    texts: list[str] = []
    async with client_for(server) as client:
        texts.append(repr(client))
        await asyncio.gather(*(client.upscale(png_data_uri(3, 3)) for _ in range(4)))
    bad = UpscaleClient(api_key=KEY + "-nope", url=server.url)
    with pytest.raises(AuthenticationError) as info:
        await bad.connect()
    texts += [repr(bad), str(info.value), repr(info.value), caplog.text]
    texts += [repr(r.msg) + repr(r.args) for r in caplog.records]
    assert caplog.records, "DEBUG logging captured nothing"
    assert not [t for t in texts if KEY in t]
