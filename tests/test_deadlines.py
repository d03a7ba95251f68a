"""The core's task deadlines (records.Deadlines): a FIFO for the default timeout, a schedule
for the rest, checked against a plain model of "which live task is due"."""

from __future__ import annotations

import sys

from hypothesis import given, settings
from hypothesis import strategies as st

from upscale_stream.protocol import ClientSession
from upscale_stream.records import Deadlines, TaskRecord

DEFAULT = 10.0


def _record(key: str, now: float, timeout: float | None) -> TaskRecord:
    deadline = None if timeout is None else now + timeout
    return TaskRecord(key, key, b"{}", False, timeout, deadline)


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
            task = _record(key, now, op[2])
            tasks[key] = task
            if task.deadline is not None:
                deadlines.add(task)
        elif op[0] == "end":
            task = tasks.pop(f"k{op[1]}", None)
            if task is not None and task.deadline is not None:
                deadlines.discard(task)
        else:
            now += op[1]
            # Schedule buckets are 50 ms wide; the FIFO is exact. Both never fire early.
            due = deadlines.pop_due(now)
            expected = {k for k, t in tasks.items() if t.deadline is not None and t.deadline <= now}
            assert set(due) <= expected
            assert len(due) == len(set(due))
            for key in due:
                del tasks[key]
            late = {
                k for k, t in tasks.items() if t.deadline is not None and t.deadline <= now - 0.05
            }
            assert not late, f"overdue tasks were not returned: {late}"
        live = [t.deadline for t in tasks.values() if t.deadline is not None]
        upcoming = deadlines.next_time()
        if live:
            assert upcoming is not None and upcoming <= min(live) + 0.05
        else:
            assert upcoming is None


def test_the_fifo_of_finished_tasks_stays_bounded_by_the_live_ones() -> None:
    tasks: dict[str, TaskRecord] = {}
    deadlines = Deadlines(tasks, DEFAULT)
    stuck = _record("stuck", 0.0, DEFAULT)  # one task that never ends pins the FIFO's head
    tasks["stuck"] = stuck
    deadlines.add(stuck)
    for i in range(100_000):
        task = _record(f"t{i}", 0.0, DEFAULT)
        tasks[task.key] = task
        deadlines.add(task)
        del tasks[task.key]
        deadlines.discard(task)
    assert len(deadlines._fifo) <= 1025


def test_a_taskuuid_used_again_does_not_inherit_the_earlier_tasks_deadline() -> None:
    session = ClientSession(task_timeout=DEFAULT)
    session.authenticate("key", 0.0)
    session.receive_text(
        b'{"data":[{"taskType":"authentication","connectionSessionUUID":"s"}]}', 0.0
    )
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
    """The FIFO forgets ended records lazily: a record it still holds must not pin the task's
    payload (a data URI input can be megabytes, and up to 2,048 ended records may wait)."""
    session = ClientSession(task_timeout=DEFAULT)
    session.authenticate("key", 0.0)
    session.receive_text(
        b'{"data":[{"taskType":"authentication","connectionSessionUUID":"s"}]}', 0.0
    )
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
