"""The pure core: golden frames, task lifecycle, resume rules, deadlines. No sockets, no clock."""

from __future__ import annotations

import random
from typing import Any

import orjson
import pytest

from upscale_stream.config import Heartbeat, Limits, Polling, Retry
from upscale_stream.errors import APIError, AuthenticationError, InvalidResult, UpscaleTimeout
from upscale_stream.models import UpscaleTask
from upscale_stream.protocol import (
    Authenticated,
    AuthRejected,
    AuthTimedOut,
    ClientSession,
    Discarded,
    HeartbeatMissed,
    MalformedMessage,
    Phase,
    Pong,
    StrayError,
    TaskAccepted,
    TaskFailed,
    TaskResult,
    TaskState,
    backoff,
)

KEY = "key-SECRET-0123456789"
SESSION = "5f0c6d2e-1111-4222-8333-444455556666"
U1 = "11111111-1111-4111-8111-111111111111"
U2 = "22222222-2222-4222-8222-222222222222"
U3 = "33333333-3333-4333-8333-333333333333"


def task_json(uuid: str, **options: Any) -> bytes:
    return UpscaleTask(task_uuid=uuid, input_image=U3, **options).to_json()


def data(*items: dict[str, Any]) -> bytes:
    return orjson.dumps({"data": list(items)})


def errors(*items: dict[str, Any]) -> bytes:
    return orjson.dumps({"errors": list(items)})


def result_item(uuid: str) -> dict[str, Any]:
    return {"taskType": "upscale", "taskUUID": uuid, "imageUUID": U3, "imageURL": "https://x/y"}


def open_session(**kwargs: Any) -> ClientSession:
    session = ClientSession(**kwargs)
    session.authenticate(KEY, 0.0)
    session.data_to_send(0.0)
    session.receive_text(data({"taskType": "authentication", "connectionSessionUUID": SESSION}), 0)
    assert session.events_received() == [Authenticated(SESSION, resumed=False)]
    return session


def sent_items(frames: list[bytes]) -> list[dict[str, Any]]:
    return [item for frame in frames for item in orjson.loads(frame)]


# -- golden frames -----------------------------------------------------------------------------


def test_auth_frame_is_exactly_the_documented_one() -> None:
    session = ClientSession()
    session.authenticate(KEY, 0.0)
    assert session.data_to_send(0.0) == [
        b'[{"taskType":"authentication","apiKey":"key-SECRET-0123456789"}]'
    ]


def test_reauth_frame_carries_the_session_id_to_resume() -> None:
    session = open_session()
    session.connection_lost(1.0)
    session.authenticate(KEY, 2.0)
    assert session.data_to_send(2.0) == [
        b'[{"taskType":"authentication","apiKey":"key-SECRET-0123456789",'
        b'"connectionSessionUUID":"5f0c6d2e-1111-4222-8333-444455556666"}]'
    ]


def test_ping_frame_is_exactly_the_documented_one() -> None:
    session = open_session(heartbeat=Heartbeat(interval=10, busy_interval=10, pong_timeout=5))
    session.handle_timer(10.0)
    assert session.data_to_send(10.0) == [b'[{"taskType":"ping","ping":true}]']


def test_minimal_upscale_frame_is_exact() -> None:
    session = open_session()
    session.submit(U1, task_json(U1), 0.0)
    assert session.data_to_send(0.0) == [
        b'[{"taskType":"upscale","taskUUID":"11111111-1111-4111-8111-111111111111",'
        b'"inputImage":"33333333-3333-4333-8333-333333333333","model":"runware:503@1",'
        b'"upscaleFactor":2,"deliveryMethod":"sync"}]'
    ]


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({"upscale_factor": 4}, {"upscaleFactor": 4}),
        ({"output_type": "base64Data"}, {"outputType": "base64Data"}),
        ({"output_type": "dataURI"}, {"outputType": "dataURI"}),
        ({"output_type": "URL", "ttl": 60}, {"outputType": "URL", "ttl": 60}),
        ({"output_format": "webp"}, {"outputFormat": "WEBP"}),
        ({"output_format": "PNG"}, {"outputFormat": "PNG"}),
        ({"output_quality": 20}, {"outputQuality": 20}),
        (
            {"webhook_url": "https://h.example/hook?token=t"},
            {"webhookURL": "https://h.example/hook?token=t"},
        ),
        ({"delivery_method": "async"}, {"deliveryMethod": "async"}),
        (
            {"upload_endpoint": "https://s3.example/put"},
            {"uploadEndpoint": "https://s3.example/put"},
        ),
        ({"include_cost": True}, {"includeCost": True}),
        (
            {
                "model": "runware:500@1",
                "settings": {
                    "positive_prompt": "sharp",
                    "negative_prompt": "blur",
                    "strength": 0.35,
                    "control_net_weight": 0.6,
                    "steps": 20,
                    "scheduler": "Default",
                    "seed": 7,
                    "cfg_scale": 6,
                },
            },
            {
                "model": "runware:500@1",
                "settings": {
                    "positivePrompt": "sharp",
                    "negativePrompt": "blur",
                    "strength": 0.35,
                    "controlNetWeight": 0.6,
                    "steps": 20,
                    "scheduler": "Default",
                    "seed": 7,
                    "CFGScale": 6,
                },
            },
        ),
        (
            {"model": "runware:502@1", "settings": {"clip_skip": 2}},
            {"model": "runware:502@1", "settings": {"clipSkip": 2}},
        ),
    ],
)
def test_each_upscale_option_goes_out_under_its_wire_name(
    options: dict[str, Any], expected: dict[str, Any]
) -> None:
    session = open_session()
    session.submit(U1, task_json(U1, **options), 0.0)
    (item,) = sent_items(session.data_to_send(0.0))
    base = {
        "taskType": "upscale",
        "taskUUID": U1,
        "inputImage": U3,
        "model": "runware:503@1",
        "upscaleFactor": 2,
        "deliveryMethod": "sync",
    }
    assert item == base | expected


def test_get_response_frame_is_exact_and_batched_across_tasks() -> None:
    session = open_session(polling=Polling(initial=1.0, factor=2.0, max_delay=4.0))
    for uuid in (U1, U2):
        session.submit(uuid, task_json(uuid, delivery_method="async"), 0.0, is_async=True)
    session.data_to_send(0.0)
    session.receive_text(
        data({"taskType": "upscale", "taskUUID": U1}, {"taskType": "upscale", "taskUUID": U2}), 0.1
    )
    assert session.events_received() == [TaskAccepted(U1), TaskAccepted(U2)]
    session.handle_timer(1.2)
    assert session.data_to_send(1.2) == [
        b'[{"taskType":"getResponse","taskUUID":"11111111-1111-4111-8111-111111111111"},'
        b'{"taskType":"getResponse","taskUUID":"22222222-2222-4222-8222-222222222222"}]'
    ]


# -- authentication ----------------------------------------------------------------------------


def test_tasks_wait_until_the_key_is_accepted() -> None:
    session = ClientSession()
    session.authenticate(KEY, 0.0)
    session.submit(U1, task_json(U1), 0.0)
    assert len(session.data_to_send(0.0)) == 1  # the auth frame only
    assert session.data_to_send(0.0) == []
    session.receive_text(data({"taskType": "authentication", "connectionSessionUUID": SESSION}), 0)
    assert [i["taskUUID"] for i in sent_items(session.data_to_send(0.0))] == [U1]


@pytest.mark.parametrize(
    "frame",
    [
        errors(
            {
                "code": "invalidApiKey",
                "message": "Invalid API key",
                "parameter": "apiKey",
                "taskType": "authentication",
            }
        ),
        orjson.dumps(
            {
                "error": True,
                "errorMessageContentId": 1212,
                "errorId": 19,
                "errorMessage": "Invalid api key",
            }
        ),
        orjson.dumps({"error": {"code": "invalidApiKey", "message": "bad key"}}),
    ],
    ids=["errors-array", "legacy-errorId-19", "singular-error-object"],
)
def test_every_documented_rejection_shape_is_an_auth_rejection(frame: bytes) -> None:
    session = ClientSession()
    session.authenticate(KEY, 0.0)
    session.data_to_send(0.0)
    session.receive_text(frame, 0.1)
    (event,) = session.events_received()
    assert isinstance(event, AuthRejected)
    assert isinstance(event.error, AuthenticationError)
    assert event.error.code == "invalidApiKey"
    assert KEY not in str(event.error) and KEY not in repr(event.error)


def test_auth_answer_that_never_comes_times_out() -> None:
    session = ClientSession(auth_timeout=2.0)
    session.authenticate(KEY, 10.0)
    assert session.next_deadline() == 12.0
    session.handle_timer(11.9)
    assert session.events_received() == []
    session.handle_timer(12.0)
    assert session.events_received() == [AuthTimedOut(2.0)]


def test_pong_before_auth_answer_is_skipped() -> None:
    session = ClientSession()
    session.authenticate(KEY, 0.0)
    session.receive_text(data({"taskType": "ping", "pong": True}), 0.1)
    assert session.phase is Phase.AUTHENTICATING


# -- batching and dispatch ---------------------------------------------------------------------


def test_many_submits_are_packed_into_frames_of_max_batch() -> None:
    session = open_session(limits=Limits(max_batch=50))
    for n in range(1000):
        uuid = f"{n:08x}-0000-4000-8000-000000000000"
        session.submit(uuid, task_json(uuid), 0.0)
    frames = session.data_to_send(0.0)
    assert len(frames) == 20
    assert all(len(orjson.loads(f)) == 50 for f in frames)


def test_frames_respect_the_byte_cap_and_a_big_task_goes_alone() -> None:
    big = task_json(U1, webhook_url="https://h.example/" + "x" * 5000)
    small = task_json(U2)
    session = open_session(limits=Limits(max_batch=50, max_frame_bytes=len(big) + 2))
    session.submit(U2, small, 0.0)
    session.submit(U1, big, 0.0)
    session.submit(U3, task_json(U3), 0.0)
    frames = session.data_to_send(0.0)
    assert [len(orjson.loads(f)) for f in frames] == [1, 1, 1]
    assert all(len(f) <= len(big) + 2 for f in frames)


def test_results_in_any_order_and_grouping_reach_their_own_task() -> None:
    session = open_session()
    uuids = [f"{n:08x}-0000-4000-8000-000000000000" for n in range(100)]
    for uuid in uuids:
        session.submit(uuid, task_json(uuid), 0.0)
    session.data_to_send(0.0)
    shuffled = uuids[:]
    random.Random(1).shuffle(shuffled)
    groups = [shuffled[0:1], shuffled[1:8], shuffled[8:40], shuffled[40:]]
    for group in groups:
        session.receive_text(data(*(result_item(u) for u in group)), 1.0)
    events = session.events_received()
    assert {e.task_uuid for e in events if isinstance(e, TaskResult)} == set(uuids)
    assert all(e.result.task_uuid == e.task_uuid for e in events if isinstance(e, TaskResult))
    assert session.live_count == 0


def test_a_result_the_core_cannot_decode_fails_only_its_own_task() -> None:
    session = open_session()
    good, bad = "00000001-0000-4000-8000-000000000000", "00000002-0000-4000-8000-000000000000"
    for uuid in (good, bad):
        session.submit(uuid, task_json(uuid), 0.0)
    session.data_to_send(0.0)
    unreadable = {**result_item(bad), "imageUUID": 5}  # a known field of the wrong type
    session.receive_text(data(unreadable, result_item(good)), 1.0)
    failed, done = session.events_received()
    assert isinstance(failed, TaskFailed) and failed.task_uuid == bad
    assert isinstance(failed.error, InvalidResult) and bad in str(failed.error)
    assert isinstance(done, TaskResult) and done.result.task_uuid == good
    assert session.live_count == 0


def test_an_error_item_fails_only_its_own_task() -> None:
    session = open_session()
    session.submit(U1, task_json(U1), 0.0)
    session.submit(U2, task_json(U2), 0.0)
    session.data_to_send(0.0)
    session.receive_text(
        errors(
            {
                "code": "invalidUpscaleFactor",
                "message": "bad",
                "parameter": "upscaleFactor",
                "taskType": "upscale",
                "taskUUID": U1,
            }
        ),
        0.1,
    )
    (event,) = session.events_received()
    assert isinstance(event, TaskFailed) and event.task_uuid == U1
    assert isinstance(event.error, APIError)
    assert (event.error.code, event.error.parameter, event.error.task_uuid) == (
        "invalidUpscaleFactor",
        "upscaleFactor",
        U1,
    )
    assert session.state_of(U2) is TaskState.IN_FLIGHT


def test_stray_error_and_malformed_frames_touch_no_task() -> None:
    session = open_session()
    session.submit(U1, task_json(U1), 0.0)
    session.data_to_send(0.0)
    for frame in [
        errors({"code": "internalServerError", "message": "oops"}),
        b"not json",
        b"[1,2,3]",
        b'{"data": 5}',
        b'{"data": [5, "x", {"no": "uuid"}]}',
        errors({"code": "x", "taskUUID": U2}),
        data(result_item(U2)),
    ]:
        session.receive_text(frame, 0.2)
    kinds = [type(e) for e in session.events_received()]
    assert StrayError in kinds and MalformedMessage in kinds and Discarded in kinds
    assert TaskFailed not in kinds and TaskResult not in kinds
    assert session.state_of(U1) is TaskState.IN_FLIGHT


def test_duplicate_result_is_discarded_after_the_first() -> None:
    session = open_session()
    session.submit(U1, task_json(U1), 0.0)
    session.data_to_send(0.0)
    session.receive_text(data(result_item(U1), result_item(U1)), 0.1)
    events = session.events_received()
    assert [type(e) for e in events] == [TaskResult, Discarded]


def test_a_live_task_uuid_cannot_be_submitted_twice() -> None:
    session = open_session()
    session.submit(U1, task_json(U1), 0.0)
    with pytest.raises(ValueError, match=U1):
        session.submit(U1, task_json(U1), 0.0)


def test_cancelled_queued_task_is_never_sent() -> None:
    session = open_session()
    session.submit(U1, task_json(U1), 0.0)
    session.submit(U2, task_json(U2), 0.0)
    assert session.cancel(U1)
    assert [i["taskUUID"] for i in sent_items(session.data_to_send(0.0))] == [U2]
    assert not session.cancel(U1)


# -- heartbeats --------------------------------------------------------------------------------


def test_ping_goes_out_only_after_silence_and_any_message_moves_the_deadline() -> None:
    session = open_session(heartbeat=Heartbeat(interval=10, busy_interval=10, pong_timeout=5))
    session.submit(U1, task_json(U1), 8.0)
    session.data_to_send(8.0)
    session.receive_text(data({"taskType": "upscale", "taskUUID": U1, "status": "processing"}), 8.0)
    assert session.next_deadline() == 18.0
    session.handle_timer(17.9)
    assert session.data_to_send(17.9) == []
    session.handle_timer(18.0)
    assert session.data_to_send(18.0) == [b'[{"taskType":"ping","ping":true}]']
    assert session.next_deadline() == 23.0
    session.receive_text(data({"taskType": "ping", "pong": True}), 18.5)
    (pong,) = session.events_received()
    assert isinstance(pong, Pong) and pong.rtt == pytest.approx(0.5)


def test_the_heartbeat_deadline_that_begins_with_authentication_re_arms_the_shell() -> None:
    # While authenticating only the auth deadline counts (15 s by default); once open, the
    # heartbeat's falls due after `interval` of silence, earlier here: a shell that re-arms
    # only when deadline_version moves must hear of it (it pinged at the auth deadline).
    session = ClientSession(heartbeat=Heartbeat(interval=1, busy_interval=1, pong_timeout=5))
    session.authenticate(KEY, 0.0)
    session.data_to_send(0.0)
    armed = session.deadline_version
    assert session.next_deadline() == session.auth_timeout == 15.0
    accepted = data({"taskType": "authentication", "connectionSessionUUID": SESSION})
    session.receive_text(accepted, 0.5)
    assert session.next_deadline() == 1.0  # the ping: 1 s after our auth frame
    assert session.deadline_version != armed


def test_silence_on_our_side_alone_also_sends_a_ping() -> None:
    # The server closes a socket idle for 120 s *from the client*, even if it sends to us.
    session = open_session(heartbeat=Heartbeat(interval=10, busy_interval=10, pong_timeout=5))
    session.receive_text(data({"taskType": "upscale", "taskUUID": U2}), 9.0)
    assert session.next_deadline() == 10.0
    session.handle_timer(10.0)
    assert session.data_to_send(10.0) == [b'[{"taskType":"ping","ping":true}]']


def test_a_ping_needs_its_pong_even_while_other_messages_arrive() -> None:
    session = open_session(heartbeat=Heartbeat(interval=10, busy_interval=10, pong_timeout=5))
    session.submit(U1, task_json(U1), 0.0)
    session.data_to_send(0.0)
    session.handle_timer(10.0)
    assert session.data_to_send(10.0) == [b'[{"taskType":"ping","ping":true}]']
    for now in (11.0, 12.0, 13.0, 14.0):  # results keep coming, the pong never does
        session.receive_text(
            data({"taskType": "upscale", "taskUUID": U1, "status": "processing"}), now
        )
    session.handle_timer(15.0)
    assert session.events_received() == [HeartbeatMissed(5.0)]


def test_missing_pong_is_a_dead_connection() -> None:
    session = open_session(heartbeat=Heartbeat(interval=10, busy_interval=10, pong_timeout=5))
    session.handle_timer(10.0)
    session.data_to_send(10.0)
    session.handle_timer(15.0)
    assert session.events_received() == [HeartbeatMissed(5.0)]


# -- drops and resume --------------------------------------------------------------------------


def _drop_with_in_flight(session: ClientSession) -> None:
    for uuid in (U1, U2):
        session.submit(uuid, task_json(uuid), 0.0)
    session.data_to_send(0.0)
    session.submit(U3, task_json(U3), 0.5)
    plan = session.connection_lost(1.0)
    assert plan.awaiting_replay == (U1, U2) and plan.unsent == (U3,)
    assert plan.session_id == SESSION


def _resumed_after_a_drop() -> ClientSession:
    """Two tasks in flight and one queued when the socket drops; the session resumed at 2.0
    with a replay grace of 1 s (nothing sent on the new socket yet)."""
    session = open_session(retry=Retry(resume_grace=1.0))
    _drop_with_in_flight(session)
    session.authenticate(KEY, 2.0)
    session.data_to_send(2.0)
    session.receive_text(
        data({"taskType": "authentication", "connectionSessionUUID": SESSION}), 2.0
    )
    return session


def test_after_resume_replayed_results_arrive_and_only_the_rest_is_resent() -> None:
    session = _resumed_after_a_drop()
    assert session.events_received() == [Authenticated(SESSION, resumed=True)]
    # The unsent task goes at once; the in-flight ones wait for a replay.
    assert [i["taskUUID"] for i in sent_items(session.data_to_send(2.0))] == [U3]
    session.receive_text(data(result_item(U1)), 2.2)
    assert [type(e) for e in session.events_received()] == [TaskResult]
    assert session.next_deadline() == 3.0
    session.handle_timer(3.0)
    resent = sent_items(session.data_to_send(3.0))
    assert [i["taskUUID"] for i in resent] == [U2]  # same taskUUID, never a new one
    assert session.was_resent(U2)


def test_a_replay_that_lands_after_its_task_was_queued_again_is_not_sent_twice() -> None:
    """The send queue still holds the re-queued record when its replayed result ends it: the
    record, out of the table, must not go out (the server would run the task again)."""
    session = _resumed_after_a_drop()
    session.data_to_send(2.0)  # U3, never sent before
    session.handle_timer(3.0)  # no replay in time: U1 and U2 are queued again
    session.receive_text(data(result_item(U1)), 3.1)  # ...and then U1's replay arrives
    assert [type(e) for e in session.events_received()] == [Authenticated, TaskResult]
    resent = sent_items(session.data_to_send(3.1))
    assert [i["taskUUID"] for i in resent] == [U2]


def test_without_resume_unanswered_tasks_are_resent_at_once_with_the_same_uuid() -> None:
    session = open_session()
    _drop_with_in_flight(session)
    session.authenticate(KEY, 2.0)
    session.data_to_send(2.0)
    other = "99999999-9999-4999-8999-999999999999"
    session.receive_text(data({"taskType": "authentication", "connectionSessionUUID": other}), 2.0)
    assert session.events_received() == [Authenticated(other, resumed=False)]
    assert [i["taskUUID"] for i in sent_items(session.data_to_send(2.0))] == [U1, U2, U3]


def test_conflict_on_a_resent_task_fetches_its_result_instead_of_rerunning() -> None:
    session = open_session(retry=Retry(resume_grace=0.0))
    _drop_with_in_flight(session)
    session.authenticate(KEY, 2.0)
    session.data_to_send(2.0)
    session.receive_text(
        data({"taskType": "authentication", "connectionSessionUUID": SESSION}), 2.0
    )
    session.events_received()
    session.handle_timer(2.0)
    session.data_to_send(2.0)
    conflict = {
        "code": "conflictTaskUUID",
        "message": "exists",
        "parameter": "taskUUID",
        "taskType": "upscale",
    }
    session.receive_text(errors(conflict | {"taskUUID": U1}), 2.1)
    assert session.events_received() == []
    assert session.state_of(U1) is TaskState.RECOVERING
    session.handle_timer(2.1)
    assert sent_items(session.data_to_send(2.1)) == [{"taskType": "getResponse", "taskUUID": U1}]
    session.receive_text(data({"taskType": "upscale", "taskUUID": U1, "status": "processing"}), 2.2)
    session.receive_text(data(result_item(U1) | {"status": "success"}), 2.9)
    assert [type(e) for e in session.events_received()] == [TaskResult]


@pytest.mark.parametrize("recovering", [False, True], ids=["acknowledged", "recovering"])
def test_polled_tasks_are_resent_when_the_session_was_not_resumed(recovering: bool) -> None:
    session = open_session(retry=Retry(resume_grace=0.0))
    session.submit(U1, task_json(U1, delivery_method="async"), 0.0, is_async=True)
    session.data_to_send(0.0)
    if recovering:  # drop, resume, resend, conflict: the task polls as RECOVERING
        session.connection_lost(0.1)
        session.authenticate(KEY, 0.2)
        session.data_to_send(0.2)
        session.receive_text(
            data({"taskType": "authentication", "connectionSessionUUID": SESSION}), 0.2
        )
        session.handle_timer(0.2)
        session.data_to_send(0.2)
        session.receive_text(errors({"code": "conflictTaskUUID", "taskUUID": U1}), 0.3)
        assert session.state_of(U1) is TaskState.RECOVERING
    else:
        session.receive_text(data({"taskType": "upscale", "taskUUID": U1}), 0.1)
        assert session.state_of(U1) is TaskState.ACKNOWLEDGED
    session.connection_lost(1.0)
    session.authenticate(KEY, 2.0)
    session.data_to_send(2.0)
    restarted = "99999999-9999-4999-8999-999999999999"
    session.receive_text(
        data({"taskType": "authentication", "connectionSessionUUID": restarted}), 2.0
    )
    resent = sent_items(session.data_to_send(2.0))
    assert [(i["taskType"], i["taskUUID"]) for i in resent] == [("upscale", U1)]


def test_conflict_on_a_first_send_is_a_real_error() -> None:
    session = open_session()
    session.submit(U1, task_json(U1), 0.0)
    session.data_to_send(0.0)
    session.receive_text(
        errors({"code": "conflictTaskUUID", "message": "dup", "taskUUID": U1}), 0.1
    )
    (event,) = session.events_received()
    assert isinstance(event, TaskFailed) and event.error.code == "conflictTaskUUID"  # type: ignore[attr-defined]


def test_async_polls_back_off_and_stop_at_the_result() -> None:
    session = open_session(polling=Polling(initial=1.0, factor=2.0, max_delay=3.0))
    session.submit(U1, task_json(U1, delivery_method="async"), 0.0, is_async=True)
    session.data_to_send(0.0)
    session.receive_text(data({"taskType": "upscale", "taskUUID": U1}), 0.0)
    poll_times = []
    now = 0.0
    for _ in range(4):
        now = session.next_deadline() or 0.0
        session.handle_timer(now)
        if session.data_to_send(now):
            poll_times.append(round(now, 2))
        session.receive_text(
            data({"taskType": "upscale", "taskUUID": U1, "status": "processing"}), now
        )
    assert poll_times == [1.0, 3.0, 6.0, 9.0]
    session.receive_text(data(result_item(U1) | {"status": "success"}), now + 0.1)
    assert TaskResult in [type(e) for e in session.events_received()]
    assert session.next_deadline() is not None  # heartbeat only
    assert session.live_count == 0


def test_async_error_status_fails_the_task() -> None:
    session = open_session()
    session.submit(U1, task_json(U1, delivery_method="async"), 0.0, is_async=True)
    session.data_to_send(0.0)
    session.receive_text(
        data(
            {
                "taskType": "upscale",
                "taskUUID": U1,
                "status": "error",
                "error": {"code": "processingFailed", "message": "x"},
            }
        ),
        0.5,
    )
    (event,) = session.events_received()
    assert isinstance(event, TaskFailed) and event.error.code == "processingFailed"  # type: ignore[attr-defined]


def test_task_timeout_fails_only_that_task() -> None:
    session = open_session(task_timeout=5.0)
    session.submit(U1, task_json(U1), 0.0)
    session.submit(U2, task_json(U2), 3.0, timeout=10.0)
    session.data_to_send(3.0)
    session.handle_timer(5.0)
    (event,) = session.events_received()
    assert isinstance(event, TaskFailed) and isinstance(event.error, UpscaleTimeout)
    assert event.task_uuid == U1 and event.error.seconds == 5.0
    assert session.state_of(U2) is TaskState.IN_FLIGHT


def test_close_returns_live_tasks_and_refuses_more_work() -> None:
    session = open_session()
    session.submit(U1, task_json(U1), 0.0)
    assert session.close() == [U1]
    assert session.phase is Phase.CLOSED
    with pytest.raises(RuntimeError):
        session.submit(U2, task_json(U2), 0.0)


def test_backoff_starts_random_and_grows_to_the_cap() -> None:
    delays = backoff(random.Random(3), Retry(initial=1.0, factor=2.0, max_delay=10.0))
    values = [next(delays) for _ in range(10)]
    assert 0 <= values[0] <= 1.0
    assert max(values) <= 10.0
    assert values[-1] >= 7.5  # reached the cap, minus jitter


# -- edges ---------------------------------------------------------------------------------------


def test_without_a_task_timeout_nothing_is_scheduled_for_the_task() -> None:
    session = open_session(task_timeout=None)
    session.submit(U1, task_json(U1), 0.0)
    session.data_to_send(0.0)
    session.handle_timer(10_000.0)
    assert session.state_of(U1) is TaskState.IN_FLIGHT


def test_a_closed_session_ignores_timers_drops_and_sends_nothing() -> None:
    session = open_session()
    session.close()
    session.handle_timer(1_000.0)
    session.connection_lost(1_000.0)
    assert session.phase is Phase.CLOSED
    assert session.data_to_send(1_000.0) == [] and session.events_received() == []


def test_nothing_goes_out_while_disconnected_and_only_auth_while_authenticating() -> None:
    session = open_session()
    session.submit(U1, task_json(U1), 0.0)
    session.connection_lost(0.1)
    assert session.data_to_send(0.1) == [] and not session.wants_write
    session.authenticate(KEY, 0.2)
    assert session.wants_write
    assert len(session.data_to_send(0.2)) == 1
    assert not session.wants_write


def test_a_queue_of_only_cancelled_tasks_makes_no_frame() -> None:
    session = open_session()
    session.submit(U1, task_json(U1), 0.0)
    session.cancel(U1)
    assert session.data_to_send(0.0) == []


def test_a_timer_before_the_pong_deadline_changes_nothing() -> None:
    session = open_session(heartbeat=Heartbeat(interval=10, busy_interval=10, pong_timeout=5))
    session.handle_timer(10.0)
    session.data_to_send(10.0)
    session.handle_timer(12.0)
    assert session.events_received() == [] and session.data_to_send(12.0) == []


def test_an_acknowledged_task_polls_again_at_once_after_a_resume() -> None:
    session = open_session(polling=Polling(initial=5.0, factor=2.0, max_delay=10.0))
    session.submit(U1, task_json(U1, delivery_method="async"), 0.0, is_async=True)
    session.data_to_send(0.0)
    session.receive_text(data({"taskType": "upscale", "taskUUID": U1}), 0.1)
    session.connection_lost(1.0)
    session.authenticate(KEY, 2.0)
    session.data_to_send(2.0)
    session.receive_text(
        data({"taskType": "authentication", "connectionSessionUUID": SESSION}), 2.0
    )
    session.handle_timer(2.0)
    assert sent_items(session.data_to_send(2.0)) == [{"taskType": "getResponse", "taskUUID": U1}]


def test_a_singular_error_object_for_a_known_task_fails_that_task_only() -> None:
    session = open_session()
    session.submit(U1, task_json(U1), 0.0)
    session.submit(U2, task_json(U2), 0.0)
    session.data_to_send(0.0)
    session.receive_text(orjson.dumps({"error": {"code": "inferenceError", "taskUUID": U1}}), 0.1)
    session.receive_text(orjson.dumps({"error": {"code": "inferenceError"}}), 0.1)
    events = session.events_received()
    assert [type(e) for e in events] == [TaskFailed, StrayError]
    assert session.state_of(U2) is TaskState.IN_FLIGHT


def test_an_auth_code_on_a_task_is_an_authentication_error_for_that_task() -> None:
    session = open_session()
    session.submit(U1, task_json(U1), 0.0)
    session.data_to_send(0.0)
    session.receive_text(errors({"code": "accountSuspended", "message": "x", "taskUUID": U1}), 0.1)
    (event,) = session.events_received()
    assert isinstance(event, TaskFailed) and isinstance(event.error, AuthenticationError)
