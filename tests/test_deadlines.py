"""The core's task deadlines (records.Deadlines): the task table's order for the default
timeout, a schedule for the rest, checked against a plain model of "which live task is due"."""

from __future__ import annotations

import sys

from hypothesis import given, settings
from hypothesis import strategies as st

from upscale_stream.protocol import ClientSession
from upscale_stream.records import Deadlines, TaskRecord

DEFAULT = 10.0


def _record(key: str, now: float, timeout: float | None) -> TaskRecord:
    seconds = DEFAULT if timeout is None else timeout
    return TaskRecord(key, key, b"{}", False, seconds, now + seconds)


def _submit(tasks: dict[str, TaskRecord], deadlines: Deadlines, task: TaskRecord) -> None:
    """What the core's submit does: insert, and schedule a timeout of the task's own."""
    tasks[task.key] = task
    if task.timeout != DEFAULT:
        deadlines.add(task)


# An operation: ("add", key index, timeout choice) / ("end", key index) / ("tick", seconds).
operations = st.lists(
    st.one_of(
        st.tuples(st.just("add"), st.integers(0, 7), st.sampled_from([None, 1.0, 25.0, DEFAULT])),
        st.tuples(st.just("end"), st.integers(0, 7)),
        st.tuples(st.just("tick"), st.floats(0.0, 6.0)),
    ),
    max_size=80,
)


@settings(max_examples=300, deadline=None)
@given(operations)
def test_only_live_tasks_past_their_deadline_fall_due_whatever_ended_or_came_back(ops) -> None:
    tasks: dict[str, TaskRecord] = {}
    deadlines = Deadlines(tasks, DEFAULT)
    now = 0.0
    for op in ops:
        if op[0] == "add":
            key = f"k{op[1]}"
            if key in tasks:
                continue
            _submit(tasks, deadlines, _record(key, now, op[2]))
        elif op[0] == "end":
            task = tasks.pop(f"k{op[1]}", None)
            if task is not None:
                deadlines.discard(task)
        else:
            now += op[1]
            # Schedule buckets are 50 ms wide; the table's order is exact. Both never fire early.
            due = deadlines.pop_due(now)
            expected = {k for k, t in tasks.items() if t.deadline is not None and t.deadline <= now}
            assert set(due) <= expected
            assert len(due) == len(set(due))
            for key in due:
                deadlines.discard(tasks.pop(key))  # the core ends every task it is given
            late = {
                k for k, t in tasks.items() if t.deadline is not None and t.deadline <= now - 0.05
            }
            assert not late, f"overdue tasks were not returned: {late}"
        assert deadlines.scheduled == sum(t.scheduled for t in tasks.values())
        live = [t.deadline for t in tasks.values() if t.deadline is not None]
        upcoming = deadlines.next_time()
        if live:
            assert upcoming is not None and upcoming <= min(live) + 0.05
        else:
            assert upcoming is None


def test_a_long_timeout_at_the_tables_head_does_not_hide_the_default_ones_behind_it() -> None:
    tasks: dict[str, TaskRecord] = {}
    deadlines = Deadlines(tasks, DEFAULT)
    _submit(tasks, deadlines, _record("long", 0.0, 3600.0))
    assert deadlines.next_time() == 3600.0
    _submit(tasks, deadlines, _record("a", 1.0, None))
    _submit(tasks, deadlines, _record("b", 2.0, None))
    assert deadlines.next_time() == 11.0
    assert deadlines.pop_due(11.5) == ["a"]
    del tasks["a"]
    assert deadlines.next_time() == 12.0
    assert deadlines.pop_due(3600.0) == ["b", "long"]


def test_no_default_timeout_means_no_default_deadlines() -> None:
    tasks: dict[str, TaskRecord] = {}
    deadlines = Deadlines(tasks, None)
    tasks["x"] = TaskRecord("x", "x", b"{}", False, None, None)
    assert deadlines.next_time() is None
    assert deadlines.pop_due(1e9) == []


def _open_session() -> ClientSession:
    session = ClientSession(task_timeout=DEFAULT)
    session.authenticate("key", 0.0)
    session.receive_text(
        b'{"data":[{"taskType":"authentication","connectionSessionUUID":"s"}]}', 0.0
    )
    return session


def test_the_timer_is_rearmed_for_the_first_default_task_behind_scheduled_ones_only() -> None:
    """The shell re-arms its timer when ``deadline_version`` moves: for a timeout of a task's
    own, and for the one default-timeout task (its deadline may be the earliest); not for a
    default-timeout task behind another, which is due after it."""
    session = _open_session()
    uuids = [f"11111111-2222-4333-8444-55555555555{i}" for i in range(3)]
    version = session.deadline_version
    session.submit(uuids[0], b"{}", 0.0, timeout=100.0)
    assert session.deadline_version != version
    version = session.deadline_version
    session.submit(uuids[1], b"{}", 1.0)  # the first default one: due at 11, before 100
    assert session.deadline_version != version
    version = session.deadline_version
    session.submit(uuids[2], b"{}", 2.0)  # behind it: due at 12
    assert session.deadline_version == version
    session.data_to_send(2.0)
    session.handle_timer(11.0)
    failed = [e for e in session.events_received() if type(e).__name__ == "TaskFailed"]
    assert [e.task_uuid for e in failed] == [uuids[1]]


def test_a_taskuuid_used_again_does_not_inherit_the_earlier_tasks_deadline() -> None:
    session = _open_session()
    key = "11111111-2222-4333-8444-555555555555"
    session.submit(key, b'{"taskUUID":"%s"}' % key.encode(), 0.0)
    session.data_to_send(0.0)
    session.cancel(key)
    session.submit(key, b'{"taskUUID":"%s"}' % key.encode(), 5.0)  # due at 15, not 10
    session.handle_timer(11.0)
    assert not [e for e in session.events_received() if type(e).__name__ == "TaskFailed"]
    assert session.next_deadline() is not None
    session.handle_timer(15.0)
    failed = [e for e in session.events_received() if type(e).__name__ == "TaskFailed"]
    assert [e.task_uuid for e in failed] == [key]


def test_an_ended_tasks_input_is_let_go_though_the_fifo_still_holds_its_record() -> None:
    """Nothing that may still hold an ended record (the send queue keeps a cancelled one
    until it is packed) pins the task's payload: a data URI input can be megabytes."""
    session = _open_session()
    key = "11111111-2222-4333-8444-555555555555"
    payload = b'{"taskUUID":"%s","inputs":{"image":"data:image/png;base64,%s"}}' % (
        key.encode(),
        b"A" * 1_000_000,
    )
    held_before = sys.getrefcount(payload)
    session.submit(key, payload, 0.0)
    session.data_to_send(0.0)
    session.receive_text(
        b'{"data":[{"taskType":"upscale","taskUUID":"%s","imageURL":"http://127.0.0.1/a.png"}]}'
        % key.encode(),
        1.0,
    )
    assert [type(e).__name__ for e in session.events_received()][-1] == "TaskResult"
    assert sys.getrefcount(payload) == held_before
    session.submit(key, payload, 2.0)
    assert session.cancel(key)  # still queued: the send queue holds the record
    assert sys.getrefcount(payload) == held_before
