"""upscale()'s tasks reach the core in one call per loop turn (Connection.submit_soon), and the
connection gives each one's window slot back when it ends.

The batch is an optimisation that must not be seen: the wire order is the call order (a call
with its own taskUUID, or another timeout, keeps its place), a task cancelled or closed before
its turn ends is never sent, a core that fails on the batch fails its calls, and every way a
call can end (result, error, timeout, cancel, close) gives its slot back exactly once.
"""

from __future__ import annotations

import asyncio
import base64
import io
import itertools
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from PIL import Image

import upscale_stream.client as client_module
from upscale_stream import (
    APIError,
    ClientClosed,
    ConnectionLost,
    InternalError,
    Retry,
    UpscaleClient,
    UpscaleTimeout,
)
from upscale_stream.connection import Connection
from upscale_stream.models import SWINIR
from upscale_stream.server import ReferenceServer, ServerConfig

KEY = "test-key-SECRET-submit-soon-01"


def png_data_uri(width: int, height: int) -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (9, 99, 199)).save(buffer, "PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


IMAGE = "11111111-2222-4333-8444-555555555555"  # an image UUID: no thread, no await before submit
PNG = png_data_uri(2, 2)


@pytest.fixture
async def server() -> AsyncIterator[ReferenceServer]:
    async with ReferenceServer(ServerConfig(api_keys=frozenset({KEY}), port=0)) as running:
        yield running


def client_for(server: ReferenceServer, **options: Any) -> UpscaleClient:
    options.setdefault("retry", Retry(initial=0.01, max_delay=0.05, resume_grace=0.2))
    return UpscaleClient(api_key=KEY, url=server.url, **options)


def connection_of(client: UpscaleClient) -> Connection:
    """The client's connection (it is connected)."""
    assert client._connection is not None
    return client._connection


def numbered_uuids(monkeypatch: pytest.MonkeyPatch) -> Callable[[int], str]:
    """Make upscale()'s fresh taskUUIDs 0, 1, 2, ... in call order; return the n-th's name."""

    def name(n: int) -> str:
        return f"00000000-0000-4000-8000-{n:012d}"

    counter = itertools.count()
    monkeypatch.setattr(client_module, "new_task_uuid", lambda: name(next(counter)))
    return name


def spy_on_the_core(connection: Connection) -> list[tuple[str, list[str]]]:
    """Record every submit call the connection makes into its core, in order."""
    calls: list[tuple[str, list[str]]] = []
    session = connection.session
    submit, submit_many = session.submit, session.submit_many

    def one(task_uuid: str, *args: Any, **kwargs: Any) -> None:
        calls.append(("submit", [task_uuid]))
        submit(task_uuid, *args, **kwargs)

    def many(task_uuids: list[str], *args: Any, **kwargs: Any) -> list[int]:
        calls.append(("submit_many", list(task_uuids)))
        return submit_many(task_uuids, *args, **kwargs)

    session.submit = one  # type: ignore[method-assign]
    session.submit_many = many  # type: ignore[method-assign]
    return calls


async def test_the_calls_of_one_loop_turn_reach_the_core_in_one_call_and_the_wire_in_order(
    server: ReferenceServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = numbered_uuids(monkeypatch)
    server.faults.result_delay = 30.0
    async with client_for(server) as client:
        calls = spy_on_the_core(connection_of(client))
        pending = [asyncio.ensure_future(client.upscale(IMAGE)) for _ in range(20)]
        await server.wait_received(20)
        assert calls == [("submit_many", [name(n) for n in range(20)])]
        assert list(server.received) == [name(n) for n in range(20)]
        assert client.in_flight == 20
        await client.close(cancel=True)
    assert all(isinstance(call.exception(), ClientClosed) for call in pending)


async def test_a_call_with_its_own_uuid_or_its_own_timeout_keeps_its_place_on_the_wire(
    server: ReferenceServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = numbered_uuids(monkeypatch)
    own = "aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee"
    server.faults.result_delay = 30.0
    async with client_for(server) as client:
        calls = spy_on_the_core(connection_of(client))
        pending = [asyncio.ensure_future(client.upscale(IMAGE)) for _ in range(3)]
        pending.append(asyncio.ensure_future(client.upscale(IMAGE, task_uuid=own)))
        pending += [asyncio.ensure_future(client.upscale(IMAGE)) for _ in range(2)]
        pending.append(asyncio.ensure_future(client.upscale(IMAGE, timeout=60.0)))
        pending.append(asyncio.ensure_future(client.upscale(IMAGE)))
        await server.wait_received(8)
        fresh = [name(n) for n in range(7)]
        assert (
            calls
            == [
                ("submit_many", fresh[:3]),
                ("submit", [own]),  # handed over at once, after the three before it
                ("submit_many", fresh[3:5]),
                ("submit", [fresh[5]]),  # a timeout of its own: handed over at once, in order
                ("submit_many", [fresh[6]]),
            ]
        )
        assert list(server.received) == [*fresh[:3], own, *fresh[3:]]
        await client.close(cancel=True)
    assert all(isinstance(call.exception(), ClientClosed) for call in pending)


async def test_a_task_cancelled_before_its_turn_ends_is_never_sent_and_its_slot_comes_back(
    server: ReferenceServer,
) -> None:
    server.faults.result_delay = 30.0
    async with client_for(server) as client:
        connection = connection_of(client)
        calls = spy_on_the_core(connection)
        keys = [f"00000000-0000-4000-8000-00000000000{n}" for n in range(3)]
        futures = []
        payloads = [(await client.build_task(IMAGE, task_uuid=key)).to_json() for key in keys]
        for key, payload in zip(keys, payloads, strict=True):  # upscale(), up to the hand-over
            assert connection.slots.try_acquire()
            futures.append(connection.submit_soon(key, payload, (False, SWINIR)))
        assert connection.cancel(keys[1])  # before the turn ends: the core never hears of it
        assert connection.slots_used == 2 and connection.in_flight == 2
        await server.wait_received(2)
        assert calls == [("submit_many", [keys[0], keys[2]])]
        assert list(server.received) == [keys[0], keys[2]]
        assert not futures[1].done()  # cancel() forgets: the caller is the one who gave up
        await client.close(cancel=True)
        assert connection.slots_used == 0
    assert isinstance(futures[0].exception(), ClientClosed)


async def test_closing_before_the_turn_ends_fails_the_calls_and_sends_nothing(
    server: ReferenceServer, caplog: pytest.LogCaptureFixture
) -> None:
    client = client_for(server)
    await client.connect()
    connection = connection_of(client)
    calls = spy_on_the_core(connection)
    pending = [asyncio.ensure_future(client.upscale(IMAGE)) for _ in range(5)]
    await asyncio.sleep(0)  # the five calls run up to their hand-over; the turn is not over
    assert connection.in_flight == 5 and calls == []
    with caplog.at_level(logging.WARNING):
        await client.close(cancel=True)
        done, _ = await asyncio.wait(pending, timeout=5)
    assert len(done) == 5 and all(isinstance(c.exception(), ClientClosed) for c in pending)
    assert calls == [] and server.received.total() == 0
    assert connection.slots_used == 0
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_a_core_that_fails_on_the_batch_fails_every_call_with_one_internal_error(
    server: ReferenceServer,
) -> None:
    async with client_for(server) as client:
        connection = connection_of(client)

        def broken(*args: Any, **kwargs: Any) -> list[int]:
            raise ZeroDivisionError("a bug in the core")

        connection.session.submit_many = broken  # type: ignore[method-assign]
        outcomes = await asyncio.wait_for(
            asyncio.gather(*(client.upscale(IMAGE) for _ in range(4)), return_exceptions=True),
            timeout=5,
        )
        assert all(isinstance(o, InternalError) for o in outcomes)
        assert len({id(o) for o in outcomes}) == 1  # one error, the same for every call
        with pytest.raises(InternalError):
            await client.upscale(IMAGE)
    assert server.received.total() == 0


async def test_tasks_still_held_when_the_connection_gives_up_are_reported_unsent(
    server: ReferenceServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = numbered_uuids(monkeypatch)
    async with client_for(server) as client:
        connection = connection_of(client)
        pending = [asyncio.ensure_future(client.upscale(IMAGE)) for _ in range(3)]
        await asyncio.sleep(0)  # handed to the connection, not yet to the core
        lost = ConnectionLost("the server is gone")
        connection._give_up(lost)  # what a final reconnect failure does
        done, _ = await asyncio.wait(pending, timeout=5)
        assert len(done) == 3
        for n, call in enumerate(pending):
            error = call.exception()
            assert isinstance(error, ConnectionLost)
            assert error.unsent_task_uuids == (name(n),)  # never sent: safe to send again
        assert connection.slots_used == 0
    assert server.received.total() == 0


async def test_every_way_an_upscale_call_ends_gives_its_slot_back_once(
    server: ReferenceServer,
) -> None:
    async with client_for(server, max_in_flight=4) as client:
        connection = connection_of(client)
        results = await asyncio.gather(*(client.upscale(PNG) for _ in range(10)))
        assert len(results) == 10 and connection.slots_used == 0
        bad = await asyncio.gather(
            *(client.upscale(IMAGE) for _ in range(3)), return_exceptions=True
        )
        assert all(isinstance(b, APIError) for b in bad)  # no such image stored: the server says
        assert connection.slots_used == 0
        server.faults.result_delay = 30.0
        with pytest.raises(UpscaleTimeout):
            await client.upscale(IMAGE, timeout=0.1)
        assert connection.slots_used == 0
        waiting = [asyncio.ensure_future(client.upscale(IMAGE)) for _ in range(6)]
        await server.wait_received(10 + 3 + 1 + 4)  # four sent, two wait for a slot
        assert connection.slots_used == 4 and connection.slots.waiting == 2
        for call in waiting[2:5]:  # two sent and one waiting for a slot give up
            call.cancel()
        await asyncio.wait(waiting[2:5])
        await server.wait_received(10 + 3 + 1 + 5)  # the sixth took a freed slot
        assert connection.slots_used == 3 and connection.slots.waiting == 0
        server.faults.result_delay = 0.0
        await client.close(cancel=True)
        assert connection.slots_used == 0
    assert all(isinstance(waiting[n].exception(), ClientClosed) for n in (0, 1, 5))


async def test_a_call_granted_a_slot_as_the_connection_fails_gives_the_slot_back(
    server: ReferenceServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = numbered_uuids(monkeypatch)
    server.faults.result_delay = 30.0
    async with client_for(server, max_in_flight=1) as client:
        connection = connection_of(client)
        first = asyncio.ensure_future(client.upscale(IMAGE))
        second = asyncio.ensure_future(client.upscale(IMAGE))
        await server.wait_received(1)
        assert connection.slots.waiting == 1
        assert connection.cancel(name(0))  # the first's slot goes to the second ...
        connection._give_up(ConnectionLost("the server is gone"))  # ... as the link fails
        with pytest.raises(ConnectionLost):
            await asyncio.wait_for(second, 5)  # refused at the hand-over, after the grant
        assert connection.slots_used == 0
        first.cancel()
