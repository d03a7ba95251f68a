"""The core's recovery rules for tasks of a job (issue 15, section 1). No sockets, no clock.

A job task's taskUUID is derived (same job, input and options: same taskUUID in any process).
A ``conflictTaskUUID`` on its *first* send means an earlier process of the job sent it: the
core recovers the result instead of failing or running it again.
"""

from __future__ import annotations

import random
from typing import Any

import orjson

from upscale_stream.errors import JobMismatch
from upscale_stream.jobs import JobTask
from upscale_stream.models import UpscaleTask
from upscale_stream.protocol import (
    Authenticated,
    ClientSession,
    TaskFailed,
    TaskResult,
    TaskRetrying,
    TaskState,
)
from upscale_stream.results import decode_result

KEY = "key-SECRET-0123456789"
SESSION = "5f0c6d2e-1111-4222-8333-444455556666"
IMAGE = "33333333-3333-4333-8333-333333333333"
JOB = JobTask("job-7", "path:photos/a.png", "digest-1")
U0, U1 = JOB.task_uuid(0), JOB.task_uuid(1)


def task_object(uuid: str, **options: Any) -> dict[str, Any]:
    return UpscaleTask(task_uuid=uuid, input_image=IMAGE, **options).to_wire()


def data(*items: dict[str, Any]) -> bytes:
    return orjson.dumps({"data": list(items)})


def errors(*items: dict[str, Any]) -> bytes:
    return orjson.dumps({"errors": list(items)})


def conflict(uuid: str) -> dict[str, Any]:
    return {"taskType": "upscale", "taskUUID": uuid, "code": "conflictTaskUUID", "message": "x"}


def result_item(uuid: str) -> dict[str, Any]:
    return {"taskType": "upscale", "taskUUID": uuid, "imageUUID": IMAGE, "imageURL": "https://x/y"}


def details(uuid: str, request: dict[str, Any], response: dict[str, Any] | None) -> bytes:
    item: dict[str, Any] = {"taskType": "getTaskDetails", "taskUUID": uuid, "request": [request]}
    if response is not None:
        item["response"] = response
    return data(item)


def open_session() -> ClientSession:
    session = ClientSession(rng=random.Random(1))
    session.authenticate(KEY, 0.0)
    session.data_to_send(0.0)
    session.receive_text(data({"taskType": "authentication", "connectionSessionUUID": SESSION}), 0)
    assert session.events_received() == [Authenticated(SESSION, resumed=False)]
    return session


def sent(session: ClientSession, now: float) -> list[dict[str, Any]]:
    session.handle_timer(now)
    items = [item for frame in session.data_to_send(now) for item in orjson.loads(frame)]
    return [item for item in items if item["taskType"] != "ping"]


def submitted(session: ClientSession, **options: Any) -> None:
    session.submit(U0, orjson.dumps(task_object(U0, **options)), 0.0, job=JOB)
    assert [item["taskUUID"] for item in sent(session, 0.0)] == [U0]


def test_a_conflict_on_the_first_send_of_a_sync_job_task_asks_get_task_details() -> None:
    session = open_session()
    submitted(session)
    session.receive_text(errors(conflict(U0)), 0.1)
    assert session.events_received() == []
    assert session.state_of(U0) is TaskState.RECOVERING
    assert sent(session, 0.1) == [{"taskType": "getTaskDetails", "taskUUID": U0}]


def test_the_echoed_response_is_delivered_as_the_result() -> None:
    session = open_session()
    submitted(session)
    session.receive_text(errors(conflict(U0)), 0.1)
    sent(session, 0.1)
    session.receive_text(details(U0, task_object(U0), {"data": [result_item(U0)]}), 0.2)
    (done,) = session.events_received()
    assert isinstance(done, TaskResult) and done.result == decode_result(result_item(U0))
    assert session.live_count == 0


def test_a_running_earlier_task_is_polled_again_until_it_has_a_response() -> None:
    session = open_session()
    submitted(session)
    session.receive_text(errors(conflict(U0)), 0.1)
    sent(session, 0.1)
    session.receive_text(details(U0, task_object(U0), None), 0.2)  # still running
    assert session.events_received() == []
    assert sent(session, 1.0) == [{"taskType": "getTaskDetails", "taskUUID": U0}]
    session.receive_text(details(U0, task_object(U0), {"data": [result_item(U0)]}), 1.1)
    (done,) = session.events_received()
    assert isinstance(done, TaskResult)


def test_a_mismatched_echoed_request_is_an_error_never_a_wrong_result() -> None:
    for other in (
        task_object(U0, upscale_factor=4),
        dict(task_object(U0), inputImage="44444444-4444-4444-8444-444444444444"),
        dict(task_object(U0), outputFormat="PNG"),
    ):
        session = open_session()
        submitted(session)
        session.receive_text(errors(conflict(U0)), 0.1)
        sent(session, 0.1)
        session.receive_text(details(U0, other, {"data": [result_item(U0)]}), 0.2)
        (failed,) = session.events_received()
        assert isinstance(failed, TaskFailed) and isinstance(failed.error, JobMismatch)


def test_an_elided_long_input_matches_by_its_length() -> None:
    long_image = "data:image/png;base64," + "A" * 5000
    session = open_session()
    payload = UpscaleTask(task_uuid=U0, input_image=long_image).to_wire()
    session.submit(U0, orjson.dumps(payload), 0.0, job=JOB)
    sent(session, 0.0)
    session.receive_text(errors(conflict(U0)), 0.1)
    sent(session, 0.1)
    echoed = dict(payload, inputImage=f"<{len(long_image)} characters not kept>")
    session.receive_text(details(U0, echoed, {"data": [result_item(U0)]}), 0.2)
    (done,) = session.events_received()
    assert isinstance(done, TaskResult)


def test_not_found_sends_the_task_again_under_the_next_attempts_task_uuid() -> None:
    session = open_session()
    submitted(session)
    session.receive_text(errors(conflict(U0)), 0.1)
    sent(session, 0.1)
    gone = {"taskType": "getTaskDetails", "taskUUID": U0, "code": "taskFailedOrNotFound"}
    session.receive_text(errors(gone), 0.2)
    (retrying,) = session.events_received()
    assert isinstance(retrying, TaskRetrying) and retrying.delay == 0.0
    assert (retrying.old_uuid, retrying.new_uuid, retrying.attempt) == (U0, U1, 2)
    (again,) = sent(session, 0.2)
    assert again["taskUUID"] == U1 and again["inputImage"] == IMAGE
    session.receive_text(data(result_item(U1)), 0.3)
    (done,) = session.events_received()
    assert isinstance(done, TaskResult) and done.task_uuid == U0


def test_an_echoed_transient_error_goes_again_under_the_next_attempt() -> None:
    session = open_session()
    submitted(session)
    session.receive_text(errors(conflict(U0)), 0.1)
    sent(session, 0.1)
    failure = {"taskType": "upscale", "taskUUID": U0, "code": "timeoutProvider", "message": "x"}
    session.receive_text(details(U0, task_object(U0), {"errors": [failure]}), 0.2)
    (retrying,) = session.events_received()
    assert isinstance(retrying, TaskRetrying) and retrying.new_uuid == U1
    (again,) = sent(session, 5.0)
    assert again["taskUUID"] == U1


def test_an_echoed_final_error_is_delivered_as_the_error() -> None:
    session = open_session()
    submitted(session)
    session.receive_text(errors(conflict(U0)), 0.1)
    sent(session, 0.1)
    failure = {"taskType": "upscale", "taskUUID": U0, "code": "corruptImage", "message": "x"}
    session.receive_text(details(U0, task_object(U0), {"errors": [failure]}), 0.2)
    (failed,) = session.events_received()
    assert isinstance(failed, TaskFailed) and failed.error.code == "corruptImage"  # type: ignore[attr-defined]


def test_an_async_job_task_recovers_with_get_response_as_today() -> None:
    session = open_session()
    payload = task_object(U0, delivery_method="async")
    session.submit(U0, orjson.dumps(payload), 0.0, is_async=True, job=JOB)
    sent(session, 0.0)
    session.receive_text(errors(conflict(U0)), 0.1)
    assert sent(session, 0.1) == [{"taskType": "getResponse", "taskUUID": U0}]


def test_a_poll_refused_with_a_transient_error_never_renames_the_task() -> None:
    session = open_session()
    submitted(session)
    session.receive_text(errors(conflict(U0)), 0.1)
    sent(session, 0.1)
    busy = {"taskType": "getTaskDetails", "taskUUID": U0, "code": "serviceUnavailable"}
    session.receive_text(errors(busy), 0.2)
    assert session.events_received() == []
    assert session.current_uuid(U0) == U0 and session.state_of(U0) is TaskState.RECOVERING


def test_without_a_job_a_conflict_on_the_first_send_is_the_callers_mistake() -> None:
    session = open_session()
    session.submit(U0, orjson.dumps(task_object(U0)), 0.0)
    sent(session, 0.0)
    session.receive_text(errors(conflict(U0)), 0.1)
    (failed,) = session.events_received()
    assert isinstance(failed, TaskFailed) and failed.error.code == "conflictTaskUUID"  # type: ignore[attr-defined]
