"""Bad input for the client: the frame reader never dies, never hangs, never fails a bystander.

Property-based tests (hypothesis) drive the pure core,
:class:`~upscale_stream.protocol.ClientSession`, with arbitrary bytes, arbitrary JSON, wrongly
typed fields, unknown taskUUIDs, answers for finished tasks and enormous frames. After every
frame:

* nothing escaped :meth:`~upscale_stream.protocol.ClientSession.receive_text`;
* every event is one of the typed events of the ``Event`` union;
* a live task whose taskUUID the frame does not contain is still live, in the same state;
* the session still works: a good result for a live task resolves it.

Two socket tests then aim a hostile server at a real :class:`~upscale_stream.UpscaleClient`.
"""

from __future__ import annotations

import asyncio
import base64
import io
import typing
from collections.abc import AsyncIterator
from typing import Any
from unittest import mock

import orjson
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from PIL import Image
from websockets.asyncio.server import ServerConnection, serve

from upscale_stream import Retry, UpscaleClient
from upscale_stream.errors import AUTH_ERROR_CODES, UpscaleError
from upscale_stream.models import UpscaleTask
from upscale_stream.protocol import (
    Authenticated,
    AuthRejected,
    ClientSession,
    Discarded,
    Event,
    MalformedMessage,
    Phase,
    TaskAccepted,
    TaskFailed,
    TaskResult,
    TaskRetrying,
    TaskState,
)
from upscale_stream.results import decode_result
from upscale_stream.server import ReferenceServer, ServerConfig

KEY = "fuzz-key-SECRET-0123456789"
SESSION = "5f0c6d2e-1111-4222-8333-444455556666"
SYNC = "11111111-1111-4111-8111-111111111111"  # sent, waiting for its result
ASYNC = "22222222-2222-4222-8222-222222222222"  # acknowledged, being polled
QUEUED = "33333333-3333-4333-8333-333333333333"  # not sent yet
LIVE = (SYNC, ASYNC, QUEUED)
FINISHED = "44444444-4444-4444-8444-444444444444"  # resolved before the frame arrives
UNKNOWN = "55555555-5555-4555-8555-555555555555"  # never submitted
EVENT_TYPES = typing.get_args(Event)
IMAGE = "66666666-6666-4666-8666-666666666666"
FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def result_item(task_uuid: Any) -> dict[str, Any]:
    return {"taskType": "upscale", "taskUUID": task_uuid, "imageUUID": IMAGE, "imageURL": "u"}


def live_session() -> ClientSession:
    """An open session holding one task in each live state, and one finished task."""
    session = ClientSession()
    session.authenticate(KEY, 0.0)
    session.data_to_send(0.0)
    auth = {"taskType": "authentication", "connectionSessionUUID": SESSION}
    session.receive_text(orjson.dumps({"data": [auth]}), 0.0)
    for task_uuid, is_async in ((SYNC, False), (ASYNC, True), (FINISHED, False)):
        payload = UpscaleTask(task_uuid=task_uuid, input_image=IMAGE).to_json()
        session.submit(task_uuid, payload, 0.0, is_async=is_async)
    session.data_to_send(0.0)
    ack = {"taskType": "upscale", "taskUUID": ASYNC}
    session.receive_text(orjson.dumps({"data": [ack, result_item(FINISHED)]}), 0.1)
    session.submit(QUEUED, UpscaleTask(task_uuid=QUEUED, input_image=IMAGE).to_json(), 0.1)
    events = session.events_received()
    assert events[0] == Authenticated(SESSION, resumed=False)
    assert TaskAccepted(ASYNC) in events and any(type(e) is TaskResult for e in events)
    assert [session.state_of(u) for u in LIVE] == [
        TaskState.IN_FLIGHT,
        TaskState.ACKNOWLEDGED,
        TaskState.QUEUED,
    ]
    return session


def feed(frame: str | bytes) -> tuple[ClientSession, list[Event]]:
    """Feed one frame to a fresh live session; check the reader's promises; return the events."""
    session = live_session()
    before = {u: session.state_of(u) for u in LIVE}
    session.receive_text(frame, 1.0)  # must not raise, whatever the frame
    events = session.events_received()
    text = frame.decode("utf-8", "replace") if isinstance(frame, bytes) else frame
    named = {u for u in (*LIVE, FINISHED) if u in text}
    for event in events:
        assert isinstance(event, EVENT_TYPES), event
        if isinstance(event, TaskResult | TaskFailed):
            assert event.task_uuid in named, f"{event} for a task the frame did not name"
            assert event.task_uuid != FINISHED, "a finished task resolved a second time"
        if isinstance(event, TaskFailed):
            assert isinstance(event.error, UpscaleError)
        if isinstance(event, MalformedMessage):
            assert len(event.sample) <= 120  # the log line stays small however big the frame
        if isinstance(event, AuthRejected):  # only an explicit authentication error does that
            assert "authentication" in text or any(code in text for code in AUTH_ERROR_CODES)
    for task_uuid, state in before.items():
        if task_uuid not in named:
            assert session.state_of(task_uuid) is state, f"{task_uuid} was touched"
    assert session.phase is Phase.OPEN
    return session, events


def still_works(session: ClientSession) -> None:
    """After any frame, a good result for a live task still resolves it."""
    for task_uuid in LIVE:
        if session.state_of(task_uuid) is TaskState.IN_FLIGHT:
            session.receive_text(orjson.dumps({"data": [result_item(task_uuid)]}), 2.0)
            expected = TaskResult(task_uuid, decode_result(result_item(task_uuid)), 0.0)
            assert expected in session.events_received()
            assert session.state_of(task_uuid) is None


# -- strategies --------------------------------------------------------------------------------

task_uuids = st.sampled_from([*LIVE, FINISHED, UNKNOWN]) | st.text(max_size=40)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30)
    | task_uuids,
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=12), children, max_size=5)
    ),
    max_leaves=25,
)
field_names = st.sampled_from(
    [
        "taskType",
        "taskUUID",
        "status",
        "imageURL",
        "imageUUID",
        "imageBase64Data",
        "error",
        "code",
        "message",
        "parameter",
        "pong",
        "connectionSessionUUID",
        "errorId",
        "errorMessage",
    ]
)
items = st.dictionaries(field_names | st.text(max_size=8), json_values, max_size=8)
envelope_keys = st.sampled_from(["data", "errors", "error"]) | st.text(max_size=8)
envelopes = st.dictionaries(
    envelope_keys, st.lists(items | json_values, max_size=6) | json_values, max_size=3
)


# -- the pure core -----------------------------------------------------------------------------


@FUZZ
@given(st.binary(max_size=2_000))
def test_arbitrary_bytes_never_escape_the_reader_or_touch_a_task(frame: bytes) -> None:
    session, _ = feed(frame)
    still_works(session)


@FUZZ
@given(st.text(max_size=2_000))
def test_arbitrary_text_never_escapes_the_reader_or_touches_a_task(frame: str) -> None:
    session, _ = feed(frame)
    still_works(session)


@FUZZ
@given(json_values)
def test_arbitrary_json_never_escapes_the_reader_or_touches_a_task(value: Any) -> None:
    session, _ = feed(orjson.dumps(value))
    still_works(session)


@FUZZ
@given(envelopes)
def test_envelopes_with_wrongly_typed_fields_fail_no_task_they_do_not_name(
    envelope: dict[str, Any],
) -> None:
    session, _ = feed(orjson.dumps(envelope))
    still_works(session)


@FUZZ
@given(st.lists(items, min_size=1, max_size=6), st.sampled_from(["data", "errors"]))
def test_items_of_any_shape_fail_no_task_they_do_not_name(
    frame_items: list[dict[str, Any]], key: str
) -> None:
    session, _ = feed(orjson.dumps({key: frame_items}))
    still_works(session)


@FUZZ
@given(st.lists(st.uuids(version=4).map(str), min_size=1, max_size=20), st.booleans())
def test_answers_for_unknown_task_uuids_are_discarded(uuids: list[str], as_errors: bool) -> None:
    if as_errors:
        body = {"errors": [{"code": "internalServerError", "taskUUID": u} for u in uuids]}
    else:
        body = {"data": [result_item(u) for u in uuids]}
    session, events = feed(orjson.dumps(body))
    assert {e.task_uuid for e in events if isinstance(e, Discarded)} == set(uuids) - set(LIVE)
    still_works(session)


@FUZZ
@given(
    st.sampled_from(
        [
            {"data": [result_item(FINISHED)]},
            {"data": [{"taskType": "upscale", "taskUUID": FINISHED, "status": "processing"}]},
            {"data": [{**result_item(FINISHED), "status": "success"}]},
            {"errors": [{"code": "conflictTaskUUID", "taskUUID": FINISHED}]},
            {"errors": [{"code": "internalServerError", "taskUUID": FINISHED}]},
            {"data": [{"taskUUID": FINISHED, "status": "error", "error": {"code": "x"}}]},
        ]
    ),
    st.integers(min_value=1, max_value=5),
)
def test_answers_for_a_finished_task_are_discarded_however_often_they_come(
    body: dict[str, Any], repeat: int
) -> None:
    session = live_session()
    for _ in range(repeat):
        session.receive_text(orjson.dumps(body), 1.0)
    events = session.events_received()
    assert events and all(isinstance(e, Discarded) and e.task_uuid == FINISHED for e in events)
    assert [session.state_of(u) for u in LIVE] == [
        TaskState.IN_FLIGHT,
        TaskState.ACKNOWLEDGED,
        TaskState.QUEUED,
    ]


ENORMOUS = 5 * 1024 * 1024


# The typed path (decode_plain_frame: {"data": [results]} straight into structs) must end
# tasks exactly as the JSON path does: same events, same states, for every item shape.
_text_or_odd = st.text(max_size=6) | st.none() | st.integers(0, 9) | st.booleans()
_result_like = st.fixed_dictionaries(
    {"taskType": st.sampled_from(["upscale", "getTaskDetails", "ping"]), "taskUUID": task_uuids},
    optional={
        "imageUUID": _text_or_odd,
        "inputImageUUID": _text_or_odd,
        "imageURL": _text_or_odd,
        "imageBase64Data": _text_or_odd,
        "imageDataURI": _text_or_odd,
        "mediaUUID": _text_or_odd,
        "mediaURL": _text_or_odd,
        "cost": st.floats(0, 1) | st.text(max_size=3),
        "status": st.sampled_from(["success", "processing", "error"]) | st.none(),
        "error": st.just({"code": "timeoutProvider", "message": "m"}),
        "somethingNew": json_values,
    },
)


def _comparable(event: Event) -> Any:
    """An event without what differs by chance: errors as text (exceptions do not compare
    equal by value), a retry without its random new taskUUID and jittered delay, and the
    rest by repr (a ``cost`` of NaN, which both paths read from "NaN", is never equal to
    itself)."""
    if isinstance(event, TaskFailed):
        return (TaskFailed, event.task_uuid, type(event.error), str(event.error), event.attempts)
    if isinstance(event, TaskRetrying):
        return (TaskRetrying, event.task_uuid, event.old_uuid, event.attempt, str(event.error))
    return repr(event)


@FUZZ
@given(st.lists(_result_like, max_size=6))
@example([{"taskType": "upscale", "taskUUID": LIVE[0], "imageURL": "0", "cost": "NAN"}])
def test_the_typed_frame_path_ends_tasks_exactly_as_the_json_path_does(
    items: list[dict[str, Any]],
) -> None:
    frame = orjson.dumps({"data": items})
    typed = live_session()
    typed.receive_text(frame, 1.0)
    plain = live_session()
    with mock.patch("upscale_stream.protocol.decode_plain_frame", return_value=None):
        plain.receive_text(frame, 1.0)
    assert [_comparable(e) for e in typed.events_received()] == [
        _comparable(e) for e in plain.events_received()
    ]
    assert [typed.state_of(u) for u in LIVE] == [plain.state_of(u) for u in LIVE]


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    "frame",
    [
        pytest.param(b"\xff" * ENORMOUS, id="5 MB of invalid UTF-8"),
        pytest.param(b"[" * ENORMOUS, id="5 MB of open brackets"),
        pytest.param(b'{"data":[' + b"[" * 100_000 + b"]" * 100_000 + b"]}", id="nested deep"),
        pytest.param(
            orjson.dumps({"data": [{**result_item(UNKNOWN), "imageBase64Data": "A" * ENORMOUS}]}),
            id="5 MB result for an unknown task",
        ),
        pytest.param(
            orjson.dumps({"errors": [{"code": "x" * ENORMOUS, "taskUUID": UNKNOWN}]}),
            id="5 MB error code",
        ),
        pytest.param(
            orjson.dumps({"data": [result_item(UNKNOWN)] * 100_000}),
            id="100,000 items for an unknown task",
        ),
        pytest.param(orjson.dumps({"data": [0] * 1_000_000}), id="a million bad items"),
    ],
)
def test_enormous_frames_leave_the_reader_alive_and_the_tasks_untouched(frame: bytes) -> None:
    session, events = feed(frame)
    assert events  # every enormous frame was reported, none silently swallowed
    still_works(session)


def test_an_enormous_result_for_a_live_task_is_delivered_whole() -> None:
    session = live_session()
    item = {**result_item(SYNC), "imageBase64Data": "A" * ENORMOUS}
    session.receive_text(orjson.dumps({"data": [item]}), 1.0)
    assert session.events_received() == [TaskResult(SYNC, decode_result(item), 0.0)]


# -- over a socket -------------------------------------------------------------------------------


def png_data_uri(size: int) -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), (90, 20, 200)).save(buffer, "PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


@pytest.fixture
async def reference_server() -> AsyncIterator[ReferenceServer]:
    config = ServerConfig(api_keys=frozenset({KEY}), port=0)
    async with ReferenceServer(config) as running:
        yield running


async def test_malformed_stray_and_duplicate_frames_from_the_server_harm_no_running_task(
    reference_server: ReferenceServer,
) -> None:
    faults = reference_server.faults
    faults.malformed_every = 1
    faults.stray_error_every = 1
    faults.duplicate_results = True
    faults.shuffle_results = True
    async with UpscaleClient(api_key=KEY, url=reference_server.url, seed=1) as client:
        tasks = [UpscaleTask(input_image=png_data_uri(2 + n % 6)) for n in range(200)]
        futures = [await client.submit(task) for task in tasks]
        results = await asyncio.wait_for(asyncio.gather(*futures), timeout=30)
        assert client.reconnects == 0
    assert [r.task_uuid for r in results] == [t.task_uuid for t in tasks]
    assert faults.fired["malformed_every"] >= 5 and faults.fired["stray_error_every"] >= 5


HOSTILE_FRAMES: tuple[bytes | str, ...] = (
    b"\x00\xff\xfe binary junk",
    "not json {",
    "[]",
    "null",
    '{"data": 7}',
    '{"errors": [null, 1, "x", {"taskUUID": 5}]}',
    '{"data": [{"taskUUID": "55555555-5555-4555-8555-555555555555", "imageURL": "x"}]}',
    '{"errors": [{"code": "internalServerError"}]}',
    '{"error": {"code": "internalServerError", "message": "legacy, stray"}}',
    '{"data": [{"taskType": "authentication", "connectionSessionUUID": "another"}]}',
    orjson.dumps({"data": [{"taskUUID": UNKNOWN, "imageBase64Data": "B" * 2_000_000}]}),
)


async def test_a_hostile_server_cannot_kill_the_reader_or_fail_a_task_it_did_not_name() -> None:
    """A raw server that answers every task, but sends every hostile frame before each answer."""

    async def hostile(ws: ServerConnection) -> None:
        auth = orjson.loads(await ws.recv())
        assert auth[0]["taskType"] == "authentication"
        await ws.send(
            orjson.dumps(
                {"data": [{"taskType": "authentication", "connectionSessionUUID": SESSION}]}
            ).decode()
        )
        async for message in ws:
            for item in orjson.loads(message):
                if item.get("taskType") != "upscale":
                    continue
                for junk in HOSTILE_FRAMES:
                    await ws.send(junk)
                answer = result_item(item["taskUUID"])
                await ws.send(orjson.dumps({"data": [answer]}).decode())
                await ws.send(orjson.dumps({"data": [answer]}).decode())  # and a duplicate

    async with serve(hostile, "127.0.0.1", 0, max_size=None) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        client = UpscaleClient(
            api_key=KEY, url=f"ws://127.0.0.1:{port}/v1", retry=Retry(initial=0.01), seed=1
        )
        async with client:
            tasks = [UpscaleTask(input_image=IMAGE) for _ in range(20)]
            futures = [await client.submit(task) for task in tasks]
            results = await asyncio.wait_for(asyncio.gather(*futures), timeout=30)
            assert client.reconnects == 0
    assert [r.task_uuid for r in results] == [t.task_uuid for t in tasks]
