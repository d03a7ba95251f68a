"""Each fault knob of the reference server does what it says, over real sockets."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from upscale_stream.server import Faults
from upscale_stream.server.faults import MALFORMED_FRAMES, crossings

from .conftest import WireClient, new_uuid, upscale

PING = {"taskType": "ping", "ping": True}
PONG = {"data": [{"taskType": "ping", "pong": True}]}


async def frames_until_closed(client: WireClient) -> list[dict[str, Any]]:
    """Every frame received until the server ends the connection."""
    frames = []
    with pytest.raises(ConnectionClosed):
        while True:
            frames.append(await client.recv())
    return frames


def uuids_in(frames: list[dict[str, Any]]) -> set[str]:
    return {
        item.get("taskUUID")
        for frame in frames
        for item in frame.get("data", []) + frame.get("errors", [])
    }


# -- dropping the connection -------------------------------------------------------------------


async def test_drop_after_tasks_runs_the_crossing_frame_then_aborts_before_answering_it(
    server, client_for
):
    server.faults.drop_after_tasks = 5
    first, second = [upscale() for _ in range(3)], [upscale() for _ in range(3)]
    second_uuids = {task["taskUUID"] for task in second}
    async with client_for(server) as client:
        session_id = (await client.authenticate())["connectionSessionUUID"]
        await client.send(first)
        await client.collect(task["taskUUID"] for task in first)
        await client.send(second)
        frames = await frames_until_closed(client)
        assert client.ws.close_code == 1006  # no close frame: the TCP connection was aborted
    assert not uuids_in(frames) & second_uuids
    assert server.faults.drop_after_tasks is None  # one-shot
    assert server.faults.fired["drop_after_tasks"] == 1
    await server.wait_executions(6)

    async with client_for(server) as client:
        await client.authenticate(session_id=session_id)
        results = await client.collect(second_uuids)
    assert all("imageURL" in item for item in results.values())
    assert all(server.executions[u] == 1 for u in second_uuids)


async def test_after_a_drop_an_async_ack_is_not_replayed_and_a_resend_gets_a_conflict(
    server, client_for
):
    server.faults.drop_after_tasks = 1
    task = upscale(deliveryMethod="async")
    async with client_for(server) as client:
        session_id = (await client.authenticate())["connectionSessionUUID"]
        await client.send([task])
        assert await frames_until_closed(client) == []
    record = server.registry.tasks[task["taskUUID"]]
    await server.wait_until(lambda: record.finished_at is not None, what="the task to finish")
    async with client_for(server) as client:
        await client.authenticate(session_id=session_id)
        await client.send([task])  # what runware-sdk does after a resume
        assert (await client.recv())["errors"][0]["code"] == "conflictTaskUUID"
        await client.send([{"taskType": "getResponse", "taskUUID": task["taskUUID"]}])
        assert (await client.recv())["data"][0]["status"] == "success"
    assert server.executions[task["taskUUID"]] == 1


async def test_close_code_turns_the_drop_into_a_clean_close(server, client_for):
    server.faults.drop_after_tasks = 1
    server.faults.close_code = 1001
    async with client_for(server) as client:
        await client.authenticate()
        await client.send([upscale()])
        await frames_until_closed(client)
        assert client.ws.close_code == 1001


async def test_repeat_keeps_drop_after_tasks_armed_for_every_connection(server, client_for):
    server.faults.drop_after_tasks = 1
    server.faults.repeat = True
    for _ in range(2):
        async with client_for(server) as client:
            await client.authenticate()
            await client.send([upscale()])
            await frames_until_closed(client)
    assert server.faults.drop_after_tasks == 1
    assert server.faults.fired["drop_after_tasks"] == 2


async def test_drop_probability_one_drops_after_the_first_frame(server, client_for):
    server.faults.drop_probability = 1.0
    async with client_for(server) as client:
        await client.authenticate()
        await client.send([upscale()])
        await frames_until_closed(client)
    assert server.faults.fired["drop_probability"] == 1


async def test_drop_during_auth_drops_the_socket_without_answering_once(server, client_for):
    server.faults.drop_during_auth = True
    async with client_for(server) as client:
        await client.send([{"taskType": "authentication", "apiKey": "whatever"}])
        assert await frames_until_closed(client) == []
    assert server.faults.drop_during_auth is False
    async with client_for(server) as client:
        await client.authenticate()


async def test_drop_before_frame_aborts_before_the_next_frame_is_handled_once(server, client_for):
    server.faults.drop_before_frame = True
    task = upscale()
    async with client_for(server) as client:
        await client.authenticate()  # the authentication frame is never the one dropped
        await client.send([task])
        assert await frames_until_closed(client) == []
        assert client.ws.close_code == 1006
    assert server.received[task["taskUUID"]] == 0  # the frame was never read
    assert server.faults.drop_before_frame is False
    assert server.faults.fired["drop_before_frame"] == 1
    async with client_for(server) as client:
        await client.authenticate()
        await client.send([task])
        await client.collect([task["taskUUID"]])
    assert server.executions[task["taskUUID"]] == 1


async def test_drop_on_poll_aborts_after_a_get_response_arrives_before_answering_it(
    server, client_for
):
    server.faults.drop_on_poll = True
    polled = new_uuid()
    async with client_for(server) as client:
        await client.authenticate()
        await client.send([PING])  # frames without a poll are not the target
        assert await client.recv() == PONG
        await client.send([{"taskType": "getResponse", "taskUUID": polled}])
        assert await frames_until_closed(client) == []
        assert client.ws.close_code == 1006
    assert server.counts.polls[polled] == 1  # the poll arrived; its answer was lost
    assert server.faults.drop_on_poll is False
    assert server.faults.fired["drop_on_poll"] == 1


async def test_repeat_keeps_drop_on_poll_armed_and_close_code_makes_it_a_clean_close(
    server, client_for
):
    server.faults.drop_on_poll = True
    server.faults.repeat = True
    server.faults.close_code = 1011
    for _ in range(2):
        async with client_for(server) as client:
            await client.authenticate()
            await client.send([{"taskType": "getResponse", "taskUUID": new_uuid()}])
            await frames_until_closed(client)
            assert client.ws.close_code == 1011
    assert server.faults.fired["drop_on_poll"] == 2


async def test_answers_held_for_a_detached_session_are_counted_as_replayed_on_resume(
    server, client_for
):
    server.faults.drop_after_tasks = 2
    tasks = [upscale(), upscale()]
    uuids = [task["taskUUID"] for task in tasks]
    async with client_for(server) as client:
        session_id = (await client.authenticate())["connectionSessionUUID"]
        await client.send(tasks)
        await frames_until_closed(client)
    session = server.registry.sessions[session_id]
    await server.wait_until(lambda: len(session.outbox) == 2, what="both answers to be held")
    assert server.counts.replayed == 0
    async with client_for(server) as client:
        await client.authenticate(session_id=session_id)
        await client.collect(uuids)
    assert server.counts.replayed == 2
    async with client_for(server) as client:
        await client.authenticate(session_id=session_id)  # nothing held this time
    assert server.counts.replayed == 2


async def test_refuse_connections_rejects_the_next_handshakes_with_503(server, client_for):
    server.faults.refuse_connections = 2
    for _ in range(2):
        with pytest.raises(InvalidStatus) as refused:
            async with connect(server.url):
                pass
        assert refused.value.response.status_code == 503
    async with client_for(server) as client:
        await client.authenticate()
    assert server.faults.refuse_connections == 0


async def test_drop_connections_closes_every_socket_with_the_given_code(server, client_for):
    async with client_for(server) as one, client_for(server) as two:
        await one.authenticate()
        await two.authenticate()
        await server.drop_connections(1011)
        for client in (one, two):
            await frames_until_closed(client)
            assert client.ws.close_code == 1011
    assert server.connection_count == 0


async def test_restart_forgets_sessions_tasks_and_images_but_keeps_counters(servers, client_for):
    server = await servers(task_delay=0.0)
    done = upscale()
    async with client_for(server) as client:
        session_id = (await client.authenticate())["connectionSessionUUID"]
        await client.send([done])
        url = (await client.collect([done["taskUUID"]]))[done["taskUUID"]]["imageURL"]
        await server.restart()
        await frames_until_closed(client)
    assert server.registry.sessions == {} and server.registry.tasks == {}
    assert len(server.images) == 0
    assert server.executions[done["taskUUID"]] == 1

    async with client_for(server) as client:
        answer = await client.authenticate(session_id=session_id)
        assert answer["connectionSessionUUID"] != session_id
        await client.send([{"taskType": "getResponse", "taskUUID": done["taskUUID"]}])
        assert (await client.recv())["errors"][0]["code"] == "taskFailedOrNotFound"
    image_uuid = url.rsplit("/", 1)[1].split(".")[0]
    assert server.images.get(image_uuid, server.config.clock()) is None


async def test_a_restart_forgets_at_once_and_refuses_handshakes_until_it_is_done(
    server, client_for
):
    started, cancelled, release = asyncio.Event(), asyncio.Event(), asyncio.Event()

    async def slow_to_cancel() -> None:
        started.set()
        try:
            await asyncio.Future()
        except asyncio.CancelledError:
            cancelled.set()
            await release.wait()  # holds the restart inside its awaits
            raise

    async with client_for(server) as old:
        old_session = (await old.authenticate())["connectionSessionUUID"]
        server.spawn(slow_to_cancel())
        async with asyncio.timeout(10):
            await started.wait()
        restarting = asyncio.create_task(server.restart())
        async with asyncio.timeout(10):
            await cancelled.wait()
        assert server.registry.sessions == {}  # forgotten before the first await
        with pytest.raises(InvalidStatus) as refused:
            async with connect(server.url):
                pass
        assert refused.value.response.status_code == 503
        release.set()
        await restarting
        await frames_until_closed(old)

    task = upscale()
    async with client_for(server) as client:
        session_id = (await client.authenticate())["connectionSessionUUID"]
        await client.send([task])
        assert "imageURL" in (await client.collect([task["taskUUID"]]))[task["taskUUID"]]
    assert session_id != old_session and session_id in server.registry.sessions


async def test_restart_cancels_running_tasks(servers, client_for):
    server = await servers(task_delay=30.0)
    task = upscale()
    async with client_for(server) as client:
        await client.authenticate()
        await client.send([task])
        await server.wait_executions(1)
        await server.restart()
    assert not server._background
    async with client_for(server) as client:
        await client.authenticate()
        await client.send([task])  # the registry forgot it: no conflict, it runs again
        await server.wait_executions(2)


# -- shaping the output ------------------------------------------------------------------------


async def test_withhold_pongs_leaves_pings_unanswered(server, client):
    server.faults.withhold_pongs = True
    unknown = new_uuid()
    await client.send([PING, {"taskType": "getResponse", "taskUUID": unknown}])
    frame = await client.recv()  # a pong would have come first
    assert frame["errors"][0]["taskUUID"] == unknown
    server.faults.withhold_pongs = False
    await client.send([PING])
    assert await client.recv() == PONG


async def test_result_delay_holds_each_answer_back(server, client):
    server.faults.result_delay = 0.3
    task = upscale()
    loop = asyncio.get_running_loop()
    started = loop.time()
    await client.send([task])
    await client.collect([task["taskUUID"]])
    assert loop.time() - started >= 0.3


async def test_group_results_sends_answers_in_frames_of_the_group_size(server, client):
    server.faults.group_results = 3
    server.faults.group_window = 1.0
    tasks = [upscale() for _ in range(7)]
    await client.send(tasks)
    await client.collect(task["taskUUID"] for task in tasks)
    # Two full groups, then the last result once the window has passed.
    assert [len(frame["data"]) for frame in client.frames[1:]] == [3, 3, 1]


async def test_shuffle_results_reorders_ready_answers(server, client):
    server.faults.group_results = 10
    server.faults.shuffle_results = True
    tasks = [upscale() for _ in range(10)]
    await client.send(tasks)
    answers = await client.collect(task["taskUUID"] for task in tasks)
    assert len(answers) == 10
    assert server.faults.fired["shuffle_results"] >= 1


async def test_duplicate_results_sends_every_answer_twice(server, client):
    server.faults.duplicate_results = True
    tasks = [upscale(), upscale()]
    await client.send(tasks)
    seen: list[str] = []
    while len(seen) < 4:
        seen += [item["taskUUID"] for item in (await client.recv())["data"]]
    assert sorted(seen) == sorted([t["taskUUID"] for t in tasks] * 2)


async def test_stray_error_every_sends_errors_that_name_no_task(server, client):
    server.faults.stray_error_every = 2
    for _ in range(4):
        task = upscale()
        await client.send([task])
        await client.collect([task["taskUUID"]])
    await client.send([PING])  # the last stray error goes out before this pong
    while await client.recv() != PONG:
        pass
    strays = [f for f in client.frames if "errors" in f and "taskUUID" not in f["errors"][0]]
    assert len(strays) == 2
    assert strays[0]["errors"][0]["code"] == "internalServerError"


async def test_malformed_every_sends_frames_that_are_not_valid_envelopes(server, client):
    server.faults.malformed_every = 2
    tasks = [upscale() for _ in range(4)]
    raw_frames: list[bytes | str] = []
    for task in tasks:
        await client.send([task])
        while True:
            raw = await client.recv_raw()
            raw_frames.append(raw)
            if task["taskUUID"].encode() in (raw if isinstance(raw, bytes) else raw.encode()):
                break
    await client.send([PING])
    while (raw := await client.recv_raw()) != orjson.dumps(PONG).decode():
        raw_frames.append(raw)
    malformed = [
        r for r in raw_frames if (r.encode() if isinstance(r, str) else r) in MALFORMED_FRAMES
    ]
    assert len(malformed) == 2
    assert server.connection_count == 1


# -- the knobs themselves ----------------------------------------------------------------------


def test_all_faults_are_off_by_default_and_reset_turns_them_off_again():
    faults = Faults()
    assert not faults.take_refusal()
    assert not faults.take_auth_drop()
    assert not faults.take_frame_drop(10_000, 10)
    assert not faults.take_arrival_drop()
    assert not faults.take_poll_drop()
    assert faults.group_size() == 0
    faults.drop_after_tasks = 3
    faults.withhold_pongs = True
    faults.refuse_connections = 4
    faults.take_refusal()
    faults.reset()
    assert faults == Faults()
    assert faults.fired == {"refuse_connections": 1}  # the record of what fired is kept


def test_drop_after_tasks_fires_once_the_threshold_is_reached_by_a_frame_with_tasks():
    faults = Faults(drop_after_tasks=5)
    assert not faults.take_frame_drop(4, 4)
    assert not faults.take_frame_drop(5, 0)  # a frame with no tasks never fires it
    assert faults.take_frame_drop(7, 3)
    assert faults.drop_after_tasks is None


def test_the_same_seed_gives_the_same_chaos():
    def run(seed: int) -> list[bool]:
        faults = Faults(drop_probability=0.5, seed=seed)
        return [faults.take_frame_drop(1, 1) for _ in range(50)]

    assert run(7) == run(7)
    assert run(7) != run(8)
    faults = Faults(shuffle_results=True, seed=3)
    items = list(range(20))
    faults.arrange(items)
    assert sorted(items) == list(range(20)) and items != list(range(20))


def test_crossings_counts_multiples_passed():
    assert crossings(0, 4, 2) == 2
    assert crossings(1, 2, 2) == 1
    assert crossings(2, 3, 2) == 0
    assert crossings(0, 100, None) == 0


# -- issue 13: transient errors, rate limits, accept-then-close, handshake statuses -------------


@pytest.mark.parametrize("status", [401, 403, 404, 429, 500, 503])
async def test_refuse_status_sets_the_http_status_of_a_refused_handshake(server, status):
    server.faults.refuse_status = status
    server.faults.refuse_connections = 1
    with pytest.raises(InvalidStatus) as refused:
        async with connect(server.url):
            pass
    assert refused.value.response.status_code == status


@pytest.mark.parametrize("code", [1000, 1008, 4000])
async def test_close_after_auth_answers_the_auth_then_closes_with_the_code_every_time(
    server, client_for, code
):
    server.faults.close_after_auth = code
    for _ in range(2):
        async with client_for(server) as client:
            await client.authenticate()
            await frames_until_closed(client)
            assert client.ws.close_code == code
    assert server.faults.fired["close_after_auth"] == 2


async def test_transient_errors_answer_first_attempts_at_once_and_never_run_them(server, client):
    server.faults.transient_error_every = 1
    server.faults.transient_error_codes = ("timeoutProvider",)
    first = upscale()
    await client.send([first])
    refused = (await client.collect([first["taskUUID"]]))[first["taskUUID"]]
    assert refused["code"] == "timeoutProvider"
    assert server.executions[first["taskUUID"]] == 0  # answered at once; it never ran
    # The same input under a new taskUUID (a retry) is no longer a first attempt: it runs.
    retry = dict(first, taskUUID=new_uuid())
    await client.send([retry])
    answer = (await client.collect([retry["taskUUID"]]))[retry["taskUUID"]]
    assert "imageUUID" in answer and server.executions[retry["taskUUID"]] == 1
    assert server.faults.fired["transient_error"] == 1


async def test_transient_error_probability_is_seeded(server, client):
    server.faults.seed = 3
    server.faults.transient_error_probability = 0.5
    tasks = [dict(upscale(), inputImage=f"{n:08x}-0000-4000-8000-000000000000") for n in range(40)]
    await client.send(tasks)
    answers = await client.collect(t["taskUUID"] for t in tasks)
    codes = [answers[t["taskUUID"]].get("code") for t in tasks]
    transient = sum(
        code
        in ("timeoutProvider", "internalServerError", "serviceUnavailable", "noAvailableServer")
        for code in codes
    )
    assert transient == server.faults.fired["transient_error"] and 8 <= transient <= 32


async def test_rate_limit_refuses_tasks_beyond_the_running_limit(server, client):
    server.faults.rate_limit = 2
    server.faults.result_delay = 0.5
    tasks = [upscale() for _ in range(5)]
    await client.send(tasks)
    answers = await client.collect(t["taskUUID"] for t in tasks)
    refused = [u for u, a in answers.items() if a.get("code") == "rateLimitExceeded"]
    assert len(refused) == 3 and server.faults.fired["rate_limit"] == 3
    assert all(server.executions[u] == 0 for u in refused)
    # A refused taskUUID was not registered: sent again later, it runs.
    server.faults.rate_limit = None
    await client.send([next(t for t in tasks if t["taskUUID"] == refused[0])])
    again = await client.collect([refused[0]])
    assert "imageUUID" in again[refused[0]]


def test_the_new_faults_are_off_by_default_and_reset_turns_them_off():
    faults = Faults()
    assert faults.task_refusal(upscale(), running=10_000) is None
    assert faults.take_close_after_auth() is None
    faults.rate_limit = 1
    faults.transient_error_every = 1
    faults.close_after_auth = 1000
    faults.refuse_status = 404
    assert faults.task_refusal(upscale(), running=1) is not None
    faults.reset()
    assert faults == Faults()
