"""The client core's records: connection phases, task states, the task record, deadlines.

Pure data for :mod:`upscale_stream.protocol` (and its recovery rules in
:mod:`upscale_stream.recovery`); no I/O, no clock.
"""

from __future__ import annotations

import enum
import heapq
import math
import random
from collections.abc import Callable
from dataclasses import dataclass

import msgspec

from .config import Heartbeat, Polling, Retry, TaskRetry
from .jobs import JobTask

__all__ = ["Phase", "Schedule", "SessionSettings", "TaskRecord", "TaskState"]


class Phase(enum.Enum):
    """Where the session's current socket is (see the module docstring)."""

    IDLE = "idle"
    AUTHENTICATING = "authenticating"
    OPEN = "open"
    CLOSED = "closed"
    ERROR = "error"


class TaskState(enum.Enum):
    """Where one task is in its lifecycle (see the module docstring)."""

    QUEUED = "queued"
    IN_FLIGHT = "in_flight"
    ACKNOWLEDGED = "acknowledged"
    AWAITING_REPLAY = "awaiting_replay"
    RECOVERING = "recovering"
    RETRY_WAIT = "retry_wait"
    ENDED = "ended"  # out of the table; a queue may still hold the record, which skips it


class TaskRecord(msgspec.Struct, eq=False, gc=False):
    """One live task as the core keeps it (the shell never sees it).

    A msgspec Struct rather than a dataclass: its ``__init__`` is one C call where the
    dataclass's ran 48 bytecodes (once per task). ``eq=False``: records compare by identity.
    ``gc=False``: a record holds only strings, numbers, an enum and a :class:`JobTask`, so it
    can never be part of a reference cycle and the collector need not track it.
    """

    key: str  # the first taskUUID: how the shell knows the task
    uuid: str  # the current attempt's taskUUID, on the wire
    payload: bytes
    is_async: bool
    timeout: float | None
    deadline: float | None
    submitted: float = 0.0  # when it was handed over: its latency runs from here
    job: JobTask | None = None
    state: TaskState = TaskState.QUEUED
    resent: bool = False
    poll_at: float = 0.0
    poll_delay: float = 0.0
    attempts: int = 1
    rate_limited: int = 0
    sent_seq: int = 0
    retry_at: float = 0.0
    details: bool = False  # recovering with getTaskDetails (not getResponse)
    scheduled: bool = False  # its deadline is in Deadlines' schedule (a timeout of its own)


class Schedule:
    """Keys due at given times, bucketed so that removal is O(1) and memory stays bounded by the
    number of live keys (not by everything ever scheduled)."""

    __slots__ = ("_buckets", "_heap", "_resolution")

    def __init__(self, resolution: float) -> None:
        self._resolution = resolution
        self._buckets: dict[int, dict[str, None]] = {}  # dicts keep insertion order
        self._heap: list[int] = []

    def _slot(self, when: float) -> int:
        return math.ceil(when / self._resolution)

    def add(self, key: str, when: float) -> None:
        slot = _ceil(when / self._resolution)  # _slot, inlined: once per task
        bucket = self._buckets.get(slot)
        if bucket is None:
            bucket = self._buckets[slot] = {}
            heapq.heappush(self._heap, slot)
        bucket[key] = None

    def discard(self, key: str, when: float) -> None:
        bucket = self._buckets.get(_ceil(when / self._resolution))
        if bucket is not None:
            bucket.pop(key, None)

    def next_time(self) -> float | None:
        while self._heap:
            slot = self._heap[0]
            if self._buckets.get(slot):
                return slot * self._resolution
            heapq.heappop(self._heap)
            self._buckets.pop(slot, None)
        return None

    def pop_due(self, now: float) -> list[str]:
        due: list[str] = []
        while self._heap and self._heap[0] * self._resolution <= now:
            slot = heapq.heappop(self._heap)
            due.extend(self._buckets.pop(slot, ()))
        return due


_ceil = math.ceil


class Deadlines:
    """The live tasks' timeouts: the one owner of "which task times out when".

    Tasks with the session's default timeout (nearly all) fall due in the order they were
    submitted, which is the order of the core's task table: a dict keeps insertion order, and
    the core inserts a record once, when it is submitted, and deletes it once, when it ends.
    So those tasks need nothing of their own here, and nothing per task at all: the earliest
    default deadline is that of the table's first record without a timeout of its own, and
    the due ones are read off the table's head. Other timeouts go in a :class:`Schedule`,
    and :attr:`scheduled` counts those tasks, so that finding the head passes at most that
    many records and a table holding only them is not read at all.

    The core's side of the contract: call :meth:`add` for a task whose timeout differs from
    the default (and :meth:`discard` when a task with ``scheduled`` set ends); for a task with
    the default timeout, call nothing, and re-arm the timer only when it is the table's one
    task without a timeout of its own (``len(tasks) == scheduled + 1`` just after inserting
    it): one behind others is due after them.

    Args:
        tasks: The core's live tasks by key, in the order they were submitted.
        default: The default timeout in seconds (``None``: no default deadline).
    """

    __slots__ = ("_other", "_tasks", "default", "scheduled")

    def __init__(self, tasks: dict[str, TaskRecord], default: float | None) -> None:
        self._tasks = tasks
        self.default = default
        """The session's default timeout (tasks with it are tracked by the table's order)."""
        self.scheduled = 0
        """Live tasks with a timeout of their own (``scheduled`` set)."""
        self._other = Schedule(0.05)

    def add(self, task: TaskRecord) -> None:
        """Track the deadline of ``task``, whose timeout differs from the default (the timer
        must be re-armed: it may be the earliest)."""
        assert task.deadline is not None and task.timeout != self.default
        self._other.add(task.key, task.deadline)
        task.scheduled = True
        self.scheduled += 1

    def discard(self, task: TaskRecord) -> None:
        """Stop tracking ``task`` (it ended). Only a task whose ``scheduled`` is set needs
        this call; one with the default timeout leaves with its table entry."""
        if task.scheduled:
            task.scheduled = False
            self.scheduled -= 1
            assert task.deadline is not None
            self._other.discard(task.key, task.deadline)

    def _defaults(self) -> bool:
        """Whether the table holds a task with the default timeout."""
        return self.default is not None and len(self._tasks) > self.scheduled

    def next_time(self) -> float | None:
        """The earliest live deadline, or ``None``."""
        first = None
        if self._defaults():
            for task in self._tasks.values():  # passes at most `scheduled` records
                if not task.scheduled:
                    first = task.deadline
                    break
        other = self._other.next_time()
        if first is None or (other is not None and other < first):
            return other
        return first

    def pop_due(self, now: float) -> list[str]:
        """Keys of the live tasks whose deadline is at or before ``now`` (the core ends them
        before it asks again)."""
        due: list[str] = []
        if self._defaults():
            for task in self._tasks.values():
                if task.scheduled:
                    continue
                deadline = task.deadline
                assert deadline is not None
                if deadline > now:
                    break
                due.append(task.key)
        due.extend(self._other.pop_due(now))
        return due

    def clear(self) -> None:
        """Forget every deadline (the session closed; the core empties its table too)."""
        self.scheduled = 0
        self._other = Schedule(0.05)


@dataclass(frozen=True, slots=True)
class SessionSettings:
    """The core's settings that are read rarely (not per task), kept in one attribute."""

    heartbeat: Heartbeat
    polling: Polling
    retry: Retry
    task_retry: TaskRetry
    auth_timeout: float
    task_timeout: float | None
    rng: random.Random
    new_uuid: Callable[[], str]
