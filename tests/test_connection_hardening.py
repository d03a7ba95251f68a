"""Issue 13 over real sockets: the client against the reference server's fault injection.

Transient errors and rate limits are retried, the window adapts, reconnects back off and give
up by policy, closing never raises CancelledError, a failed core ends the client, a dead link
is found quickly, and repeated warnings are summarised. No mocks across the socket.
"""

from __future__ import annotations

import asyncio
import base64
import io
import logging
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
import websockets
from PIL import Image
from websockets.asyncio.server import ServerConnection, serve

from upscale_stream import (
    APIError,
    AuthenticationError,
    ClientClosed,
    ConnectionLost,
    Heartbeat,
    InternalError,
    InvalidResult,
    Retry,
    TaskRetry,
    Timeouts,
    UpscaleClient,
    UpscaleTimeout,
    protocol,
)
from upscale_stream.server import ReferenceServer, ServerConfig

KEY = "test-key-SECRET-hardening-0123"
FAST_RETRY = Retry(initial=0.01, factor=1.5, max_delay=0.05, resume_grace=0.2)
FAST_TASK_RETRY = TaskRetry(initial=0.01, factor=2.0, max_delay=0.1)


def png_data_uri(width: int, height: int) -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (width % 256, height % 256, 7)).save(buffer, "PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


INPUTS = [png_data_uri(1 + n % 40, 1 + n // 40) for n in range(2000)]


@pytest.fixture
async def server() -> AsyncIterator[ReferenceServer]:
    config = ServerConfig(api_keys=frozenset({KEY}), port=0)
    async with ReferenceServer(config) as running:
        yield running


def client_for(server: ReferenceServer, **options: Any) -> UpscaleClient:
    options.setdefault("retry", FAST_RETRY)
    options.setdefault("task_retry", FAST_TASK_RETRY)
    options.setdefault("seed", 7)
    return UpscaleClient(api_key=KEY, url=server.url, **options)


# -- transient errors --------------------------------------------------------------------------


async def test_transient_errors_on_a_fifth_of_first_attempts_are_retried_and_every_call_succeeds(
    server: ReferenceServer,
) -> None:
    server.faults.transient_error_probability = 0.2
    async with client_for(server) as client:
        results = await asyncio.gather(*(client.upscale(image) for image in INPUTS[:400]))
    hit = server.faults.fired["transient_error"]
    assert 40 <= hit <= 160  # the fault really fired, about a fifth
    finals = {r.task_uuid for r in results}
    assert len(finals) == 400
    # Every final taskUUID ran once; the refused first attempts never ran at all.
    assert all(server.executions[uuid] == 1 for uuid in finals)
    assert sum(server.executions.values()) == 400
    assert server.received.total() == 400 + hit


async def test_retried_upscale_calls_leave_no_per_task_state_behind(
    server: ReferenceServer,
) -> None:
    """Each retried task's tries are kept by key until it ends; an upscale() call, whose
    waiter is a future, must drop them too, or a long run keeps one entry per retry."""
    server.faults.transient_error_every = 3
    async with client_for(server) as client:
        await asyncio.gather(*(client.upscale(image) for image in INPUTS[:30]))
        connection = client._connection
        assert connection is not None
        assert connection.retries == 10
        assert connection._attempts == {} and connection._waiters == {}


async def test_upscale_many_outcomes_carry_attempts_and_the_final_task_uuid(
    server: ReferenceServer,
) -> None:
    server.faults.transient_error_every = 3
    async with client_for(server) as client:
        outcomes = [o async for o in client.upscale_many(INPUTS[:30])]
    assert all(o.ok for o in outcomes)
    retried = [o for o in outcomes if o.attempts == 2]
    assert len(retried) == 10 and all(o.attempts in (1, 2) for o in outcomes)
    for outcome in outcomes:
        assert outcome.result is not None and outcome.task_uuid == outcome.result.task_uuid
        assert server.executions[outcome.task_uuid] == 1


async def test_with_never_a_transient_error_fails_the_call_at_once(
    server: ReferenceServer,
) -> None:
    server.faults.transient_error_every = 1
    server.faults.transient_error_codes = ("serviceUnavailable",)
    async with client_for(server, task_retry=TaskRetry.NEVER) as client:
        with pytest.raises(APIError) as info:
            await client.upscale(INPUTS[0])
    assert info.value.code == "serviceUnavailable"
    assert server.received.total() == 1


async def test_a_validation_error_is_not_retried(server: ReferenceServer) -> None:
    unknown_image = "0badc0de-0000-4000-8000-000000000000"  # no such image on the server
    async with client_for(server) as client:
        with pytest.raises(APIError) as info:
            await client.upscale(unknown_image)
    assert info.value.code == "invalidInputImage"
    assert server.received.total() == 1


# -- rate limits and the window ----------------------------------------------------------------


async def test_two_thousand_tasks_against_a_limit_of_fifty_all_succeed_and_few_are_refused(
    server: ReferenceServer,
) -> None:
    server.faults.rate_limit = 50
    async with client_for(server, task_retry=TaskRetry()) as client:
        assert client.window == 500
        outcomes = [o async for o in client.upscale_many(INPUTS)]
        smallest = client._connection.window.shrinks if client._connection else 0
    assert all(o.ok for o in outcomes), [o.error for o in outcomes if not o.ok][:3]
    refused = sum(1 for o in outcomes if o.attempts > 1)  # tasks that ever got a refusal
    assert server.faults.fired["rate_limit"] > 0
    assert refused < 1000, refused
    assert smallest >= 1
    assert sum(server.executions.values()) == 2000


async def test_upscale_calls_share_the_same_window_and_it_shrinks_under_a_rate_limit(
    server: ReferenceServer,
) -> None:
    server.faults.rate_limit = 20
    async with client_for(server, max_in_flight=200) as client:
        results = await asyncio.gather(*(client.upscale(image) for image in INPUTS[:300]))
        assert client.window < 200  # visible, and it shrank
        assert client._connection is not None and client._connection.slots_used == 0
    assert len({r.task_uuid for r in results}) == 300


# -- reconnect policy --------------------------------------------------------------------------


@pytest.mark.parametrize("code", [1000, 1008, 4000])
async def test_a_server_that_accepts_and_hangs_up_gets_backoff_and_max_attempts(
    server: ReferenceServer, code: int
) -> None:
    retry = Retry(initial=0.02, factor=2.0, max_delay=1.0, max_attempts=4)
    async with client_for(server, retry=retry) as client:
        server.faults.close_after_auth = code
        await server.drop_connections()
        with pytest.raises(ConnectionLost, match="4 consecutive"):
            await asyncio.wait_for(client.upscale(INPUTS[0]), timeout=20)
    # Four reconnects, each closed right after its auth, then it gave up; the old client
    # reset its counter after every auth and reconnected forever, about four times a second.
    assert server.faults.fired["close_after_auth"] == 4


@pytest.mark.parametrize(("healthy_after", "proven"), [(0.0, True), (3600.0, False)])
async def test_a_result_proves_the_connection_only_healthy_after_its_authentication(
    server: ReferenceServer, healthy_after: float, proven: bool
) -> None:
    # A connection that authenticates and answers counts as healthy (the reconnect backoff and
    # max_attempts start over) only once healthy_after has passed since its authentication.
    retry = Retry(initial=0.01, factor=1.5, max_delay=0.05, healthy_after=healthy_after)
    async with client_for(server, retry=retry) as client:
        await client.upscale(INPUTS[3])
        await server.drop_connections()  # one failure: the backoff counts it on reconnecting
        await server.wait_authenticated(2)
        connection = client._connection
        assert connection is not None
        assert connection._backoff.failures == 1 and not connection._proven
        await client.upscale(INPUTS[4])  # a result on the new connection
        assert connection._proven is proven
        assert connection._backoff.failures == (0 if proven else 1)


async def test_a_pong_proves_the_connection_healthy_as_a_result_does(
    server: ReferenceServer,
) -> None:
    retry = Retry(initial=0.01, factor=1.5, max_delay=0.05, healthy_after=0.0)
    heartbeat = Heartbeat(interval=0.05, busy_interval=0.05, pong_timeout=5.0)
    async with client_for(server, retry=retry, heartbeat=heartbeat) as client:
        await client.connect()
        connection = client._connection
        assert connection is not None
        loop = asyncio.get_running_loop()
        proofs: list[tuple[int, int]] = []  # (authentications so far, failures before it)
        proven: asyncio.Future[None] = loop.create_future()
        healthy = connection._healthy

        def spy() -> None:
            proofs.append((server.counts.authentications, connection._backoff.failures))
            healthy()
            if not proven.done():
                proven.set_result(None)

        connection._healthy = spy  # type: ignore[method-assign]
        await asyncio.wait_for(proven, 10)  # no task: the first connection's pong proves it
        proven = loop.create_future()
        await server.drop_connections()
        await asyncio.wait_for(proven, 10)  # and the second's, after one failure
        assert proofs == [(1, 0), (2, 1)]
        assert connection._backoff.failures == 0


@pytest.mark.parametrize("status", [429, 500, 503])
async def test_busy_handshake_statuses_are_retried(server: ReferenceServer, status: int) -> None:
    async with client_for(server) as client:
        server.faults.refuse_status = status
        server.faults.refuse_connections = 2
        await server.drop_connections()
        result = await asyncio.wait_for(client.upscale(INPUTS[1]), timeout=20)
    assert result.image_url
    assert server.faults.fired["refuse_connections"] == 2


@pytest.mark.parametrize(
    ("status", "error"),
    [(401, AuthenticationError), (403, AuthenticationError), (404, ConnectionLost)],
)
async def test_refused_key_and_wrong_url_statuses_are_final(
    server: ReferenceServer, status: int, error: type[Exception]
) -> None:
    async with client_for(server) as client:
        server.faults.result_delay = 30.0
        pending = asyncio.ensure_future(client.upscale(INPUTS[2]))
        await server.wait_received(1)
        server.faults.refuse_status = status
        server.faults.refuse_connections = 100
        await server.drop_connections()
        with pytest.raises(error):
            await asyncio.wait_for(pending, timeout=20)
    assert server.faults.fired["refuse_connections"] == 1  # tried once, then gave up


# -- close semantics ---------------------------------------------------------------------------


async def test_close_with_cancel_ends_pending_calls_with_client_closed_not_cancelled_error(
    server: ReferenceServer,
) -> None:
    server.faults.result_delay = 30.0
    client = client_for(server)
    await client.connect()
    calls = [asyncio.ensure_future(client.upscale(image)) for image in INPUTS[:5]]
    await server.wait_received(5)
    await client.close(cancel=True)
    for call in calls:
        assert isinstance(call.exception(), ClientClosed)
        assert not call.cancelled()


async def test_an_exception_inside_async_with_ends_calls_in_a_task_group_with_client_closed(
    server: ReferenceServer,
) -> None:
    server.faults.result_delay = 30.0
    seen: list[BaseException] = []

    async def call(client: UpscaleClient, image: str) -> None:
        try:
            await client.upscale(image)
        except BaseException as exc:
            seen.append(exc)
            assert asyncio.current_task() is not None
            assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]
            raise

    with pytest.raises(ExceptionGroup) as info:
        async with asyncio.TaskGroup() as group, client_for(server) as client:
            for image in INPUTS[:3]:
                group.create_task(call(client, image))
            await server.wait_received(3)
            raise KeyError("the caller's own bug")
    assert len(seen) == 3 and all(isinstance(e, ClientClosed) for e in seen)
    assert info.group_contains(ClientClosed)


async def test_a_drain_timeout_raises_upscale_timeout_and_pending_calls_get_client_closed(
    server: ReferenceServer,
) -> None:
    server.faults.result_delay = 30.0
    client = client_for(server, timeouts=Timeouts(close=0.3))
    await client.connect()
    calls = [asyncio.ensure_future(client.upscale(image)) for image in INPUTS[:3]]
    await server.wait_received(3)
    with pytest.raises(UpscaleTimeout) as info:
        await client.close()
    assert info.value.operation == "close"
    assert all(isinstance(call.exception(), ClientClosed) for call in calls)


async def test_a_caller_waiting_for_a_window_slot_gets_client_closed(
    server: ReferenceServer,
) -> None:
    server.faults.result_delay = 30.0
    client = client_for(server, max_in_flight=1)
    await client.connect()
    first = asyncio.ensure_future(client.upscale(INPUTS[0]))
    second = asyncio.ensure_future(client.upscale(INPUTS[1]))
    await server.wait_received(1)
    await client.close(cancel=True)
    assert isinstance(first.exception(), ClientClosed)
    assert isinstance(second.exception(), ClientClosed)


# -- a core that fails safe --------------------------------------------------------------------


async def test_a_bug_in_the_core_fails_every_pending_call_with_one_error_and_never_reconnects(
    server: ReferenceServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    server.faults.result_delay = 0.5
    async with client_for(server) as client:
        assert client._connection is not None

        def buggy(*args: Any) -> None:  # every result's event, on the typed and the JSON path
            raise ZeroDivisionError("a bug in the core")

        monkeypatch.setattr(protocol, "TaskResult", buggy)
        outcomes = await asyncio.gather(
            *(client.upscale(image) for image in INPUTS[:5]), return_exceptions=True
        )
        errors = {id(o) for o in outcomes}
        assert all(isinstance(o, InternalError) for o in outcomes)
        assert len(errors) == 1  # one error for everyone
        assert isinstance(outcomes[0].__cause__, ZeroDivisionError)  # type: ignore[union-attr]
        with pytest.raises(InternalError):
            await client.upscale(INPUTS[6])
        assert client.reconnects == 0
    assert server.connection_count == 0 or server.counts.authentications == 1


async def test_a_bug_in_the_timer_path_fails_safe_too(server: ReferenceServer) -> None:
    server.faults.result_delay = 30.0
    async with client_for(server) as client:
        assert client._connection is not None
        session = client._connection.session

        def broken_timer(now: float) -> None:
            raise RuntimeError("timer bug")

        session._handle_timer = broken_timer  # type: ignore[method-assign]
        with pytest.raises(InternalError):
            await asyncio.wait_for(client.upscale(INPUTS[0], timeout=0.2), timeout=10)


async def test_a_writer_that_dies_is_noticed_at_once(server: ReferenceServer) -> None:
    heartbeat = Heartbeat(interval=60, busy_interval=60, pong_timeout=60)
    async with client_for(server, heartbeat=heartbeat) as client:
        assert client._connection is not None and client._connection._ws is not None
        ws = client._connection._ws
        real_send = ws.send
        calls = 0

        async def failing_send(message: Any, text: bool | None = None) -> None:
            nonlocal calls
            calls += 1
            if calls == 1:
                raise RuntimeError("transport bug")
            await real_send(message, text=text)

        ws.send = failing_send  # type: ignore[method-assign]
        # Without the fix nothing is sent again until a heartbeat miss (three minutes here).
        result = await asyncio.wait_for(client.upscale(INPUTS[3]), timeout=10)
        assert result.image_url and client.reconnects == 1


# -- heartbeat with tasks in flight ------------------------------------------------------------


async def test_a_dead_link_with_tasks_in_flight_is_found_within_busy_interval_and_pong_timeout(
    server: ReferenceServer,
) -> None:
    heartbeat = Heartbeat(interval=30.0, busy_interval=0.3, pong_timeout=0.5)
    async with client_for(server, heartbeat=heartbeat) as client:
        server.faults.withhold_pongs = True
        server.faults.result_delay = 60.0
        started = asyncio.get_running_loop().time()
        pending = asyncio.ensure_future(client.upscale(INPUTS[4]))
        await server.wait_received(1)
        # We keep the link busy; it never answers. The idle rule alone would wait 30 s.
        await server.wait_until(lambda: client.reconnects >= 1, timeout=10, what="reconnect")
        assert asyncio.get_running_loop().time() - started < 10
        assert not pending.done()  # the task itself waits on, across the reconnect
        await client.close(cancel=True)
    assert isinstance(pending.exception(), ClientClosed)


# -- results -----------------------------------------------------------------------------------


async def test_success_without_an_image_is_an_error_of_that_call() -> None:
    async def handler(ws: ServerConnection) -> None:
        async for message in ws:
            for item in orjson.loads(message):
                if item["taskType"] == "authentication":
                    answer = {"taskType": "authentication", "connectionSessionUUID": "s-1"}
                    await ws.send(orjson.dumps({"data": [answer]}).decode())
                elif item["taskType"] == "upscale":
                    done = {
                        "taskType": "upscale",
                        "taskUUID": item["taskUUID"],
                        "status": "success",
                    }
                    await ws.send(orjson.dumps({"data": [done]}).decode())

    async with serve(handler, "127.0.0.1", 0) as stub:
        port = stub.sockets[0].getsockname()[1]
        async with UpscaleClient(api_key=KEY, url=f"ws://127.0.0.1:{port}") as client:
            with pytest.raises(InvalidResult, match="no image"):
                await client.upscale(INPUTS[0])


# -- log volume --------------------------------------------------------------------------------


async def test_a_garbage_stream_logs_a_few_summarised_warnings(
    server: ReferenceServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="upscale_stream")
    server.faults.malformed_every = 1
    server.faults.stray_error_every = 1
    async with client_for(server) as client:
        await asyncio.gather(*(client.upscale(image) for image in INPUTS[:300]))
    assert server.faults.fired["malformed_every"] >= 300
    warnings = [r for r in caplog.records if r.name == "upscale_stream.connection"]
    assert len(warnings) <= 6, [r.getMessage() for r in warnings]
    assert any("suppressed" in r.getMessage() for r in warnings)


def test_websockets_is_the_transport_under_test() -> None:
    assert websockets.__version__
