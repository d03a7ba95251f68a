"""The core's batch submit (ClientSession.submit_many) does what one submit per task does: the
same tasks queued in the same order, the same refusals, the same deadlines, and a timer re-arm
whenever one of the single submits would have asked for one."""

from __future__ import annotations

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from upscale_stream.errors import DuplicateTaskUUID
from upscale_stream.protocol import ClientSession

DEFAULT = 10.0
UUIDS = [f"11111111-2222-4333-8444-5555555555{i:02d}" for i in range(6)]


def _open_session() -> ClientSession:
    session = ClientSession(task_timeout=DEFAULT)
    session.authenticate("key", 0.0)
    session.receive_text(
        b'{"data":[{"taskType":"authentication","connectionSessionUUID":"s"}]}', 0.0
    )
    session.data_to_send(0.0)
    return session


def _payload(key: str) -> bytes:
    return b'{"taskUUID":"%s"}' % key.encode()


def _sent(session: ClientSession, now: float) -> list[str]:
    return [item["taskUUID"] for frame in session.data_to_send(now) for item in orjson.loads(frame)]


# Earlier single submits (key index, timeout), then one batch (key indexes, one timeout).
timeouts = st.sampled_from([None, 1.0, 25.0, DEFAULT])
earlier = st.lists(st.tuples(st.integers(0, 5), timeouts), max_size=4)
batch = st.tuples(st.lists(st.integers(0, 5), min_size=1, max_size=8), timeouts)


@settings(max_examples=300, deadline=None)
@given(earlier, batch, st.booleans())
def test_a_batch_is_one_submit_per_task(before, batch, send_first) -> None:
    one, many = _open_session(), _open_session()
    for session in (one, many):
        for index, timeout in before:
            if UUIDS[index] not in session._tasks:
                session.submit(UUIDS[index], _payload(UUIDS[index]), 0.0, timeout=timeout)
        if send_first:
            _sent(session, 0.5)
    keys, timeout = [UUIDS[i] for i in batch[0]], batch[1]

    version = one.deadline_version
    refused_one = []
    for position, key in enumerate(keys):
        try:
            one.submit(key, _payload(key), 1.0, timeout=timeout)
        except DuplicateTaskUUID:
            refused_one.append(position)
    one_rearms = one.deadline_version != version

    version = many.deadline_version
    refused_many = many.submit_many(keys, [_payload(k) for k in keys], 1.0, timeout=timeout)
    assert refused_many == refused_one
    assert (many.deadline_version != version) == one_rearms
    assert many.next_deadline() == one.next_deadline()
    assert _sent(many, 1.0) == _sent(one, 1.0)
    for now in (2.0, 11.0, 26.0, 30.0):
        one.handle_timer(now)
        many.handle_timer(now)
        ended_one = [
            (type(e).__name__, getattr(e, "task_uuid", None)) for e in one.events_received()
        ]
        ended_many = [
            (type(e).__name__, getattr(e, "task_uuid", None)) for e in many.events_received()
        ]
        assert ended_many == ended_one


def test_a_taskuuid_twice_in_one_batch_queues_the_first_and_refuses_the_second() -> None:
    session = _open_session()
    keys = [UUIDS[0], UUIDS[1], UUIDS[0]]
    assert session.submit_many(keys, [_payload(k) for k in keys], 0.0) == [2]
    assert _sent(session, 0.0) == [UUIDS[0], UUIDS[1]]
