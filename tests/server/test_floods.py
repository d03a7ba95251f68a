"""Hostile frames that used to cost the server memory and time without bound (issue 10).

Each test sends the frame from outside over a real socket and checks three things: the
answer is bounded (one error or one notice, not one per item), the server's memory grows by
a bounded amount (RSS of this process, which runs the server), and another client's ping is
answered within a second while it happens. docs/reliability.md quotes the figures.
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from upscale_stream.server import ReferenceServer
from upscale_stream.server.refusals import SCOPED_REFUSALS

from .conftest import KEY, ClientFactory, FakeClock, WireClient, upscale

PING = {"taskType": "ping", "ping": True}
PONG = {"data": [{"taskType": "ping", "pong": True}]}
MiB = 1024 * 1024
FLOOD_ITEMS = 1_048_576
ZEROS = "[" + "0," * (FLOOD_ITEMS - 1) + "0]"  # 2 MiB: the frame of the issue
RSS_BUDGET = 96 * MiB  # the old server grew by 4.2 GB on ZEROS
Servers = Callable[..., Awaitable[ReferenceServer]]

pytestmark = pytest.mark.timeout(120)


def rss() -> int:
    """Resident set size of this process (the server runs in it), in bytes."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * 4096


async def pong_delay(bystander: WireClient) -> float:
    """Seconds another client waits for its pong (fails the test after 10 s)."""
    started = time.perf_counter()
    await bystander.send([PING])
    assert await bystander.recv(timeout=10) == PONG
    return time.perf_counter() - started


async def flood_and_ping(
    flooder: WireClient, bystander: WireClient, text: str
) -> tuple[dict[str, Any], float, int]:
    """Send ``text`` from ``flooder``, ping from ``bystander``; the answer, delay, RSS growth."""
    gc.collect()
    before = rss()
    await flooder.send_text(text)
    delay = await pong_delay(bystander)
    answer = await flooder.recv(timeout=30)
    grown = rss() - before
    return answer, delay, grown


async def test_one_unauthenticated_flood_frame_gets_one_error_and_costs_nothing(
    server: ReferenceServer, client_for: ClientFactory
) -> None:
    async with client_for(server) as flooder, client_for(server) as bystander:
        await bystander.authenticate()
        answer, delay, grown = await flood_and_ping(flooder, bystander, ZEROS)
        assert [e["code"] for e in answer["errors"]] == ["authenticationRequired"]
        assert delay < 1.0, f"the other client waited {delay:.2f} s for its pong"
        assert grown < RSS_BUDGET, f"RSS grew by {grown / MiB:.0f} MiB"
        # Below the pre-authentication size limit the frame is parsed, and still one error.
        small = "[" + "0," * 200_000 + "0]"
        answer, delay, grown = await flood_and_ping(flooder, bystander, small)
        assert [e["code"] for e in answer["errors"]] == ["authenticationRequired"]
        assert delay < 1.0 and grown < RSS_BUDGET
    assert server.counts.received_total == 0


@pytest.mark.parametrize(
    "text",
    [
        pytest.param(ZEROS, id="numbers"),
        pytest.param("[" + "null," * (FLOOD_ITEMS - 1) + "null]", id="nulls"),
        pytest.param("[" + '{"taskType":"upscale"},' * 200_000 + "{}]", id="tasks without uuid"),
    ],
)
async def test_one_authenticated_flood_frame_gets_one_notice_and_costs_little(
    server: ReferenceServer, client_for: ClientFactory, text: str
) -> None:
    items = len(orjson.loads(text))
    async with client_for(server) as flooder, client_for(server) as bystander:
        await flooder.authenticate()
        await bystander.authenticate()
        answer, delay, grown = await flood_and_ping(flooder, bystander, text)
        assert list(answer) == ["data"]
        (notice,) = answer["data"]
        assert notice["taskType"] == "frameError" and notice["refused"] == items
        assert len(notice["errors"]) == 10  # quoted examples are capped
        assert delay < 1.0, f"the other client waited {delay:.2f} s for its pong"
        assert grown < RSS_BUDGET, f"RSS grew by {grown / MiB:.0f} MiB"
        await flooder.send([PING])
        assert await flooder.recv() == PONG  # the flooder's socket still works
    assert server.counts.executions_total == 0


async def test_tasks_over_the_frame_limit_get_a_bounded_number_of_scoped_errors(
    servers: Servers, client_for: ClientFactory
) -> None:
    server = await servers(max_tasks_per_frame=2)
    tasks = [upscale() for _ in range(2 + SCOPED_REFUSALS + 50)]
    async with client_for(server) as client:
        await client.authenticate()
        await client.send(tasks)
        scoped: list[dict[str, Any]] = []
        notices: list[dict[str, Any]] = []
        results = 0
        while results < 2 or not notices or len(scoped) < SCOPED_REFUSALS:
            frame = await client.recv()
            scoped += frame.get("errors", [])
            notices += [i for i in frame.get("data", []) if i.get("taskType") == "frameError"]
            results += sum("imageURL" in i for i in frame.get("data", []))
    assert [e["taskUUID"] for e in scoped] == [t["taskUUID"] for t in tasks[2:102]]
    assert {e["code"] for e in scoped} == {"tooManyTasks"}
    assert notices[0]["refused"] == 50
    assert server.counts.executions_total == 2


async def test_a_frame_of_pings_gets_one_pong(client: WireClient) -> None:
    await client.send([PING] * 10_000)
    assert await client.recv() == PONG
    await client.send([upscale(inputImage="x" * 10, upscaleFactor=3)])  # any later frame
    frame = await client.recv()
    assert "errors" in frame  # the next frame is that task's error, not a second pong


async def test_an_authenticated_oversized_frame_is_not_parsed(
    servers: Servers, client_for: ClientFactory
) -> None:
    server = await servers(max_message_bytes=4 * MiB)
    named = [upscale() for _ in range(3)]
    text = orjson.dumps(named).decode()[:-1] + "," + "{}," * (2 * MiB) + "{}]"  # 6 MiB
    async with client_for(server) as flooder, client_for(server) as bystander:
        await flooder.authenticate()
        await bystander.authenticate()
        answer, delay, grown = await flood_and_ping(flooder, bystander, text)
        assert [e["taskUUID"] for e in answer["errors"]] == [t["taskUUID"] for t in named]
        assert {(e["code"], e["taskType"]) for e in answer["errors"]} == {
            ("frameTooLarge", "upscale")
        }
        (notice,) = (await flooder.recv())["data"]
        assert notice["error"]["code"] == "frameTooLarge"
        assert delay < 1.0 and grown < RSS_BUDGET, (delay, grown / MiB)


async def test_a_huge_task_uuid_is_neither_stored_nor_echoed(
    server: ReferenceServer, client: WireClient
) -> None:
    huge = "x" * (4 * MiB)
    for task_type in ("upscale", "getResponse", "getTaskDetails", "imageUpload"):
        await client.send([{"taskType": task_type, "taskUUID": huge}])
        raw = await client.recv_raw()
        assert len(raw) < 4096, f"{task_type}: a {len(raw)}-character answer"
        (notice,) = orjson.loads(raw)["data"]
        assert notice["refused"] == 1
    counters = (server.counts.received, server.counts.polls, server.counts.executions)
    assert all(len(key) <= 64 for counter in counters for key in counter)
    assert server.counts.received_total == 2  # counted, but not by their taskUUID


async def test_the_task_uuid_counters_are_bounded(
    servers: Servers, client_for: ClientFactory
) -> None:
    server = await servers(max_counted_uuids=100)
    async with client_for(server) as client:
        await client.authenticate()
        tasks = [upscale(upscaleFactor=3) for _ in range(250)]  # refused: nothing runs
        await client.send(tasks)
        await client.collect(t["taskUUID"] for t in tasks)
    assert server.counts.received_total == 250 and len(server.received) == 100
    assert set(server.received) == {t["taskUUID"] for t in tasks[-100:]}  # the newest


async def test_failed_authentications_are_throttled_per_address_and_logged_sparingly(
    servers: Servers, caplog: pytest.LogCaptureFixture
) -> None:
    server = await servers(auth_failure_burst=5, auth_failures_per_minute=1.0)
    caplog.set_level(logging.INFO)
    codes: list[str] = []
    for attempt in range(12):
        async with connect(server.url) as ws:
            await ws.send(
                orjson.dumps([{"taskType": "authentication", "apiKey": f"k{attempt}"}]).decode()
            )
            codes.append(orjson.loads(await ws.recv())["errors"][0]["code"])
    assert codes == ["invalidApiKey"] * 5 + ["rateLimitExceeded"] * 7
    async with connect(server.url) as ws:  # a right key is refused too while throttled
        await ws.send(orjson.dumps([{"taskType": "authentication", "apiKey": KEY}]).decode())
        assert orjson.loads(await ws.recv())["errors"][0]["code"] == "rateLimitExceeded"
        with pytest.raises(ConnectionClosed):
            await ws.recv()
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING and "auth." in r.msg]
    assert len(warnings) == 1, [r.msg for r in warnings]  # one line per address per minute
    assert all(f"k{n}" not in caplog.text for n in range(12)) and KEY not in caplog.text


async def test_the_throttle_lets_an_address_try_again_once_it_refilled(
    servers: Servers, client_for: ClientFactory
) -> None:
    clock = FakeClock()
    server = await servers(auth_failure_burst=2, auth_failures_per_minute=6.0, clock=clock)
    for _ in range(3):
        async with connect(server.url) as ws:
            await ws.send(
                orjson.dumps([{"taskType": "authentication", "apiKey": "wrong"}]).decode()
            )
            await ws.recv()
    clock.advance(10.0)  # one failure regained
    async with client_for(server) as client:
        await client.authenticate()
        await client.send([PING])
        assert await client.recv() == PONG
