"""The pure core after issue 13: transient-error retries under a new taskUUID, the ERROR state,
the busy heartbeat, success without an image. No sockets, no clock."""

from __future__ import annotations

import random
from itertools import count
from typing import Any

import orjson
import pytest

from upscale_stream import protocol
from upscale_stream.config import Heartbeat, TaskRetry
from upscale_stream.errors import APIError, InternalError, InvalidResult
from upscale_stream.jobs import JobTask
from upscale_stream.models import UpscaleTask
from upscale_stream.protocol import (
    Authenticated,
    ClientSession,
    Discarded,
    HeartbeatMissed,
    Phase,
    TaskFailed,
    TaskResult,
    TaskRetrying,
    TaskState,
)

KEY = "key-SECRET-0123456789"
SESSION = "5f0c6d2e-1111-4222-8333-444455556666"
U1 = "11111111-1111-4111-8111-111111111111"
U2 = "22222222-2222-4222-8222-222222222222"
IMAGE = "33333333-3333-4333-8333-333333333333"
FAST = TaskRetry(max_attempts=3, initial=0.1, factor=2.0, max_delay=1.0, jitter=0.0)


def task_json(uuid: str) -> bytes:
    return UpscaleTask(task_uuid=uuid, input_image=IMAGE).to_json()


def data(*items: dict[str, Any]) -> bytes:
    return orjson.dumps({"data": list(items)})


def errors(*items: dict[str, Any]) -> bytes:
    return orjson.dumps({"errors": list(items)})


def error_item(uuid: str, code: str) -> dict[str, Any]:
    return {"taskType": "upscale", "taskUUID": uuid, "code": code, "message": "try again"}


def result_item(uuid: str) -> dict[str, Any]:
    return {"taskType": "upscale", "taskUUID": uuid, "imageUUID": IMAGE, "imageURL": "https://x/y"}


def numbered_uuids() -> Any:
    numbers = count(0xA0)
    return lambda: f"{next(numbers):08x}-aaaa-4aaa-8aaa-aaaaaaaaaaaa"


def open_session(**kwargs: Any) -> ClientSession:
    kwargs.setdefault("rng", random.Random(1))
    kwargs.setdefault("task_retry", FAST)
    kwargs.setdefault("new_uuid", numbered_uuids())
    session = ClientSession(**kwargs)
    session.authenticate(KEY, 0.0)
    session.data_to_send(0.0)
    session.receive_text(data({"taskType": "authentication", "connectionSessionUUID": SESSION}), 0)
    assert session.events_received() == [Authenticated(SESSION, resumed=False)]
    return session


def sent_uuids(session: ClientSession, now: float) -> list[str]:
    items = [item for frame in session.data_to_send(now) for item in orjson.loads(frame)]
    return [item["taskUUID"] for item in items if item["taskType"] == "upscale"]


# -- transient errors ------------------------------------------------------------------------------


def test_a_transient_error_retries_the_task_under_a_new_task_uuid_after_a_delay() -> None:
    session = open_session()
    session.submit(U1, task_json(U1), 0.0)
    assert sent_uuids(session, 0.0) == [U1]
    session.receive_text(errors(error_item(U1, "timeoutProvider")), 0.5)
    (retrying,) = session.events_received()
    assert isinstance(retrying, TaskRetrying)
    assert (retrying.task_uuid, retrying.old_uuid) == (U1, U1)
    new = retrying.new_uuid
    assert new != U1 and retrying.attempt == 2 and retrying.delay == pytest.approx(0.1)
    assert session.state_of(U1) is TaskState.RETRY_WAIT
    assert sent_uuids(session, 0.55) == []  # not before its delay
    assert session.next_deadline() == pytest.approx(0.6)
    session.handle_timer(0.6)
    frames = session.data_to_send(0.6)
    (item,) = [item for f in frames for item in orjson.loads(f)]
    assert item["taskUUID"] == new and item["inputImage"] == IMAGE  # same task, new taskUUID
    session.receive_text(data(result_item(new)), 0.7)
    (done,) = session.events_received()
    assert isinstance(done, TaskResult)
    assert (done.task_uuid, done.result.task_uuid) == (U1, new)
    assert session.live_count == 0


def test_a_resent_task_answered_with_a_transient_error_keeps_its_task_uuid() -> None:
    # The resend's error may answer a copy while the first send runs: a new taskUUID could
    # run the task twice. The same taskUUID is safe (a server that has it says conflict).
    session = open_session()
    session.submit(U1, task_json(U1), 0.0)
    session.data_to_send(0.0)
    session.connection_lost(0.1)
    session.authenticate(KEY, 0.2)
    session.data_to_send(0.2)
    new_session = "99999999-1111-4222-8333-444455556666"
    auth = {"taskType": "authentication", "connectionSessionUUID": new_session}
    session.receive_text(data(auth), 0.3)
    session.events_received()
    assert sent_uuids(session, 0.3) == [U1] and session.was_resent(U1)
    session.receive_text(errors(error_item(U1, "rateLimitExceeded")), 0.4)
    (retrying,) = session.events_received()
    assert isinstance(retrying, TaskRetrying) and retrying.new_uuid == U1
    session.handle_timer(5.0)
    assert sent_uuids(session, 5.0) == [U1]
    session.receive_text(errors(error_item(U1, "conflictTaskUUID")), 5.1)
    assert session.state_of(U1) is TaskState.RECOVERING  # fetched, never run again


def test_an_answer_to_an_earlier_attempt_is_discarded() -> None:
    session = open_session()
    session.submit(U1, task_json(U1), 0.0)
    session.data_to_send(0.0)
    session.receive_text(errors(error_item(U1, "serviceUnavailable")), 0.1)
    session.events_received()
    session.receive_text(data(result_item(U1)), 0.2)  # a late duplicate for the old taskUUID
    assert session.events_received() == [Discarded(U1, "no live task with this taskUUID")]
    assert session.state_of(U1) is TaskState.RETRY_WAIT


def test_retries_stop_after_max_attempts_and_the_last_error_fails_the_task() -> None:
    session = open_session()
    session.submit(U1, task_json(U1), 0.0)
    now = 0.0
    current = sent_uuids(session, now)[0]
    for _ in range(FAST.max_attempts - 1):
        session.receive_text(errors(error_item(current, "internalServerError")), now)
        (retrying,) = session.events_received()
        assert isinstance(retrying, TaskRetrying)
        now += 5.0
        session.handle_timer(now)
        (current,) = sent_uuids(session, now)
    session.receive_text(errors(error_item(current, "internalServerError")), now)
    (failed,) = session.events_received()
    assert isinstance(failed, TaskFailed) and failed.attempts == FAST.max_attempts
    assert isinstance(failed.error, APIError) and failed.error.task_uuid == current


@pytest.mark.parametrize(
    "code", ["invalidUpscaleFactor", "contentPolicyViolation", "invalidApiKey"]
)
def test_non_retryable_errors_fail_at_once(code: str) -> None:
    session = open_session()
    session.submit(U1, task_json(U1), 0.0)
    session.data_to_send(0.0)
    session.receive_text(errors(error_item(U1, code)), 0.1)
    (failed,) = session.events_received()
    assert isinstance(failed, TaskFailed) and failed.attempts == 1


def test_never_fails_on_the_first_transient_error() -> None:
    session = open_session(task_retry=TaskRetry.NEVER)
    session.submit(U1, task_json(U1), 0.0)
    session.data_to_send(0.0)
    session.receive_text(errors(error_item(U1, "timeoutProvider")), 0.1)
    (failed,) = session.events_received()
    assert isinstance(failed, TaskFailed)


def test_a_retry_that_cannot_finish_before_the_task_deadline_fails_now() -> None:
    session = open_session(task_retry=TaskRetry(initial=5.0, jitter=0.0))
    session.submit(U1, task_json(U1), 0.0, timeout=2.0)
    session.data_to_send(0.0)
    session.receive_text(errors(error_item(U1, "timeoutProvider")), 0.1)
    (failed,) = session.events_received()
    assert isinstance(failed, TaskFailed)


def test_a_job_task_retries_under_its_own_task_uuid_after_an_error_answer() -> None:
    # A refused taskUUID may be unknown to the server afterwards; a later process of the job
    # starts again from attempt 0, so moving on to attempt 1 here could run the input twice.
    job = JobTask("job-1", "path:a.png", "digest")
    first = job.task_uuid(0)
    session = open_session()
    session.submit(first, task_json(first), 0.0, job=job)
    session.data_to_send(0.0)
    session.receive_text(errors(error_item(first, "noAvailableServer")), 0.1)
    (retrying,) = session.events_received()
    assert isinstance(retrying, TaskRetrying) and retrying.new_uuid == first
    session.handle_timer(10.0)
    assert sent_uuids(session, 10.0) == [first]
    # The server now knows it: its conflict is recovered, never taken as the caller's mistake.
    session.receive_text(errors(error_item(first, "conflictTaskUUID")), 10.1)
    assert session.events_received() == []
    assert session.state_of(first) is not None


def test_rate_limited_retries_wait_for_room_on_the_wire() -> None:
    session = open_session()
    for uuid in (U1, U2):
        session.submit(uuid, task_json(uuid), 0.0)
    assert len(sent_uuids(session, 0.0)) == 2
    assert session.on_wire == 2
    session.receive_text(errors(error_item(U1, "rateLimitExceeded")), 0.1)
    (retrying,) = session.events_received()
    assert isinstance(retrying, TaskRetrying) and retrying.rate_limited
    assert session.on_wire == 1
    session.send_limit = 1  # the shell's window shrank to one
    session.handle_timer(1.0)
    assert not session.wants_write and sent_uuids(session, 1.0) == []  # U2 is still out
    session.receive_text(data(result_item(U2)), 1.1)
    session.events_received()
    assert session.wants_write
    assert sent_uuids(session, 1.2) == [retrying.new_uuid]


def test_a_live_task_uuid_cannot_be_reused_even_after_its_retry_renamed_it() -> None:
    from upscale_stream.errors import DuplicateTaskUUID

    session = open_session()
    session.submit(U1, task_json(U1), 0.0)
    session.data_to_send(0.0)
    session.receive_text(errors(error_item(U1, "timeoutProvider")), 0.1)
    (retrying,) = session.events_received()
    assert isinstance(retrying, TaskRetrying)
    for uuid in (U1, retrying.new_uuid):
        with pytest.raises(DuplicateTaskUUID) as info:
            session.submit(uuid, task_json(uuid), 0.2)
        assert isinstance(info.value, ValueError) and info.value.parameter == "taskUUID"


def test_cancelling_a_task_waiting_for_its_retry_forgets_it() -> None:
    session = open_session()
    session.submit(U1, task_json(U1), 0.0)
    session.data_to_send(0.0)
    session.receive_text(errors(error_item(U1, "timeoutProvider")), 0.1)
    session.events_received()
    assert session.cancel(U1)
    session.handle_timer(10.0)
    assert sent_uuids(session, 10.0) == [] and session.live_count == 0


# -- results ---------------------------------------------------------------------------------------


def test_success_without_an_image_fails_its_task() -> None:
    session = open_session()
    session.submit(U1, task_json(U1), 0.0)
    session.data_to_send(0.0)
    session.receive_text(data({"taskType": "upscale", "taskUUID": U1, "status": "success"}), 0.1)
    (failed,) = session.events_received()
    assert isinstance(failed, TaskFailed) and isinstance(failed.error, InvalidResult)
    assert "no image" in str(failed.error)


# -- the ERROR state -------------------------------------------------------------------------------


def test_an_unexpected_exception_moves_the_core_to_error_and_it_refuses_every_later_call(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    session = open_session()
    session.submit(U1, task_json(U1), 0.0)
    session.data_to_send(0.0)

    def broken(*args: Any) -> None:
        raise KeyError("half-updated")

    monkeypatch.setattr(protocol, "decode_plain_frame", broken)  # the usual frame's first step
    with pytest.raises(InternalError) as info:
        session.receive_text(data(result_item(U1)), 0.1)
    assert isinstance(info.value.__cause__, KeyError)
    assert session.phase is Phase.ERROR
    for call in (
        lambda: session.receive_text(data(result_item(U1)), 0.2),
        lambda: session.data_to_send(0.2),
        lambda: session.handle_timer(0.2),
        lambda: session.submit(U2, task_json(U2), 0.2),
        lambda: session.connection_lost(0.2),
        lambda: session.authenticate(KEY, 0.2),
    ):
        with pytest.raises(InternalError):
            call()
    assert session.next_deadline() is None
    assert session.close() == [U1]  # the shell can still learn what to fail
    assert session.phase is Phase.ERROR


# -- heartbeat -------------------------------------------------------------------------------------


def test_with_tasks_live_a_silent_link_is_found_dead_within_20_s_with_the_defaults() -> None:
    session = open_session(heartbeat=Heartbeat())
    session.submit(U1, task_json(U1), 0.0)
    session.data_to_send(0.0)
    now = 0.0
    missed_at = None
    while now < 60.0 and missed_at is None:
        now = min(session.next_deadline() or now + 1.0, now + 1.0)
        session.submit(f"{int(now * 1000):08x}-0000-4000-8000-000000000000", task_json(U2), now)
        session.handle_timer(now)
        session.data_to_send(now)  # we keep sending; nothing comes back
        if any(isinstance(e, HeartbeatMissed) for e in session.events_received()):
            missed_at = now
    assert missed_at is not None and missed_at <= 20.0


def test_an_idle_connection_pings_only_after_long_silence() -> None:
    session = open_session(heartbeat=Heartbeat())
    assert session.next_deadline() == pytest.approx(Heartbeat().interval)
