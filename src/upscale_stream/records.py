"""The client core's records: connection phases, task states, the task record, deadlines.

Pure data for :mod:`upscale_stream.protocol` (and its recovery rules in
:mod:`upscale_stream.recovery`); no I/O, no clock.
"""

from __future__ import annotations

import enum
import heapq
import math
import random
from collections import deque
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
    submitted, so their records go in a FIFO: O(1) to add, nothing to do when a task ends (an
    ended task is skipped when it reaches the head; a record is live while the core's task
    table maps its key to that very record). Other timeouts go in a :class:`Schedule`. The
    FIFO is compacted when it holds more than 1,024 records and twice the live ones it held
    after the last compaction, so its memory stays bounded by the live tasks, not by
    everything ever submitted, and each record is looked at about twice in all.

    Args:
        tasks: The core's live tasks by key (read to tell an ended record from a live one).
        default: The default timeout in seconds (``None``: no default deadline).
    """

    __slots__ = ("_compact_at", "_default", "_fifo", "_other", "_tasks")

    def __init__(self, tasks: dict[str, TaskRecord], default: float | None) -> None:
        self._tasks = tasks
        self._default = default
        self._fifo: deque[TaskRecord] = deque()
        self._other = Schedule(0.05)
        self._compact_at = 1024

    def add(self, task: TaskRecord) -> bool:
        """Track ``task``'s deadline (it must have one).

        Returns:
            Whether the earliest deadline may have moved earlier (the timer must be re-armed):
            always for a timeout of its own, only when the FIFO was empty for a default one
            (a record behind others is due after them).
        """
        if task.timeout != self._default:
            assert task.deadline is not None
            self._other.add(task.key, task.deadline)
            task.scheduled = True
            return True
        fifo = self._fifo
        fifo.append(task)
        if len(fifo) > self._compact_at:
            self._compact()
            return False
        return len(fifo) == 1

    def discard(self, task: TaskRecord) -> None:
        """Stop tracking ``task`` (it ended). Only a task whose ``scheduled`` is set needs
        this call; the FIFO forgets the others lazily."""
        if task.scheduled:
            task.scheduled = False
            assert task.deadline is not None
            self._other.discard(task.key, task.deadline)

    def _compact(self) -> None:
        get = self._tasks.get
        self._fifo = deque([task for task in self._fifo if get(task.key) is task])
        self._compact_at = max(1024, 2 * len(self._fifo))

    def next_time(self) -> float | None:
        """The earliest live deadline, or ``None``."""
        fifo = self._fifo
        get = self._tasks.get
        while fifo and get(fifo[0].key) is not fifo[0]:
            fifo.popleft()
        head = fifo[0].deadline if fifo else None
        other = self._other.next_time()
        if head is None or (other is not None and other < head):
            return other
        return head

    def pop_due(self, now: float) -> list[str]:
        """Keys of the live tasks whose deadline is at or before ``now``."""
        due: list[str] = []
        fifo = self._fifo
        get = self._tasks.get
        while fifo:
            task = fifo[0]
            deadline = task.deadline
            assert deadline is not None
            if deadline > now:
                break
            fifo.popleft()
            if get(task.key) is task:
                due.append(task.key)
        due.extend(self._other.pop_due(now))
        return due

    def clear(self) -> None:
        """Forget every deadline (the session closed)."""
        self._fifo.clear()
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
