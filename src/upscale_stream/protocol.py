"""The pure core of the client: one Runware session as a state machine, with no I/O and no clock.

Theory of operation
-------------------
:class:`ClientSession` never awaits and never imports asyncio. The shell
(:mod:`upscale_stream.connection`) feeds it what the socket received (:meth:`receive_text`),
what time it is (``now`` arguments) and what the user asked for (:meth:`submit`,
:meth:`cancel`). It collects what the core produced: :meth:`events_received` (things that
happened, as frozen dataclasses) and :meth:`data_to_send` (frames to write, in order, all from
one outbound queue). :meth:`next_deadline` tells the shell when to call :meth:`handle_timer`.

Connection phases (:class:`Phase`)::

    IDLE --authenticate()--> AUTHENTICATING --auth ok--> OPEN
      ^                           |                        |
      +------connection_lost()----+------------------------+
    any phase --close()--> CLOSED

Task lifecycle (:class:`TaskState`), protocol.md sections 2, 4 and 6::

    QUEUED --packed into a frame--> IN_FLIGHT --result / error--> (forgotten)
                                        | async ACK
                                        v
                                   ACKNOWLEDGED --getResponse polls--> (forgotten)
    IN_FLIGHT --connection lost--> AWAITING_REPLAY
    AWAITING_REPLAY --result replayed after resume--> (forgotten)
    AWAITING_REPLAY --resume grace over, or session not resumed--> QUEUED (resent, same taskUUID)
    ACKNOWLEDGED / RECOVERING --session not resumed (server restart)--> QUEUED (resent)
    resent task --conflictTaskUUID--> RECOVERING --getResponse polls--> (forgotten)

Rules that keep every task resolved exactly once and never run twice:

* A task keeps its taskUUID forever; it is never re-submitted under a new one.
* After a drop, the shell re-authenticates with the old ``connectionSessionUUID``. If the server
  echoes it (resumed), results it held are replayed, so unanswered tasks wait ``resume_grace``
  before they are resent. If the server hands out a new session id, nothing will be replayed
  and the tasks are resent at once.
* A resent task answered with ``conflictTaskUUID`` is known to the server: the core fetches its
  result with ``getResponse`` instead of running it again. A ``conflictTaskUUID`` for a task sent
  only once is a real error (the caller reused a taskUUID).
* Errors fail only the task they name. An error with no taskUUID, a result for an unknown task,
  or a malformed frame becomes a :class:`StrayError` / :class:`Discarded` /
  :class:`MalformedMessage` event for the log, and touches no task.
* Time-outs are deadlines kept here (tasks, auth, pong, polls, resume grace), so the shell has
  one timer, not one per task.
* An unexpected exception inside the core closes the session: it never goes on in an unknown state.
"""

from __future__ import annotations

import enum
import heapq
import math
import random
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import orjson

from . import wire
from .config import Heartbeat, Limits, Polling, Retry
from .errors import (
    AUTH_ERROR_CODES,
    APIError,
    AuthenticationError,
    UpscaleError,
    UpscaleTimeout,
)
from .events import (
    Authenticated,
    AuthRejected,
    AuthTimedOut,
    Discarded,
    Event,
    HeartbeatMissed,
    MalformedMessage,
    Pong,
    ResendPlan,
    StrayError,
    TaskAccepted,
    TaskFailed,
    TaskResult,
)
from .models import ErrorItem

__all__ = [
    "AuthRejected",
    "AuthTimedOut",
    "Authenticated",
    "ClientSession",
    "Discarded",
    "Event",
    "HeartbeatMissed",
    "MalformedMessage",
    "Phase",
    "Pong",
    "ResendPlan",
    "StrayError",
    "TaskAccepted",
    "TaskFailed",
    "TaskResult",
    "TaskState",
    "backoff",
]


class Phase(enum.Enum):
    """Where the session's current socket is (see the module docstring)."""

    IDLE = "idle"
    AUTHENTICATING = "authenticating"
    OPEN = "open"
    CLOSED = "closed"


class TaskState(enum.Enum):
    """Where one task is in its lifecycle (see the module docstring)."""

    QUEUED = "queued"
    IN_FLIGHT = "in_flight"
    ACKNOWLEDGED = "acknowledged"
    AWAITING_REPLAY = "awaiting_replay"
    RECOVERING = "recovering"


# -- internals ---------------------------------------------------------------------------------


@dataclass(slots=True, eq=False)
class _Task:
    uuid: str
    payload: bytes
    is_async: bool
    timeout: float | None
    deadline: float | None
    state: TaskState = TaskState.QUEUED
    resent: bool = False
    poll_at: float = 0.0
    poll_delay: float = 0.0


class _Schedule:
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
        slot = self._slot(when)
        bucket = self._buckets.get(slot)
        if bucket is None:
            bucket = self._buckets[slot] = {}
            heapq.heappush(self._heap, slot)
        bucket[key] = None

    def discard(self, key: str, when: float) -> None:
        bucket = self._buckets.get(self._slot(when))
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


def backoff(rng: random.Random, retry: Retry) -> Iterator[float]:
    """Reconnect delays: a random first delay, then growing by ``retry.factor`` to a cap.

    Each delay after the first carries +-25 % jitter so that many clients do not reconnect in
    step. The caller restarts the generator after a successful authentication.
    """
    delay = rng.uniform(0, retry.initial)
    yield delay
    delay = max(delay, retry.initial / 2)
    while True:
        delay = min(delay * retry.factor, retry.max_delay)
        yield min(retry.max_delay, delay * rng.uniform(0.75, 1.25))


# -- the session -------------------------------------------------------------------------------


class ClientSession:
    """One logical Runware session across any number of sockets.

    Args:
        limits: Batching caps (``max_batch``, ``max_frame_bytes``) for outgoing frames.
        heartbeat: Ping after silence, and the pong deadline.
        polling: ``getResponse`` backoff for async and recovering tasks.
        retry: ``resume_grace`` is used here; the delays are the shell's business.
        auth_timeout: Seconds to wait for the answer to the authentication frame.
        task_timeout: Default seconds from :meth:`submit` to a task's end (``None``: no limit).
    """

    def __init__(
        self,
        *,
        limits: Limits | None = None,
        heartbeat: Heartbeat | None = None,
        polling: Polling | None = None,
        retry: Retry | None = None,
        auth_timeout: float = 15.0,
        task_timeout: float | None = 300.0,
    ) -> None:
        self.limits = limits or Limits()
        self.heartbeat = heartbeat or Heartbeat()
        self.polling = polling or Polling()
        self.retry = retry or Retry()
        self.auth_timeout = auth_timeout
        self.task_timeout = task_timeout
        self.phase = Phase.IDLE
        self.session_id: str | None = None
        self._tasks: dict[str, _Task] = {}
        self._queue: deque[_Task] = deque()
        self._timeouts = _Schedule(0.05)
        self._polls = _Schedule(0.05)
        self._events: list[Event] = []
        self._control: list[bytes] = []  # whole frames (pings), sent first
        self._polls_out: list[bytes] = []  # encoded getResponse items, packed like tasks
        self._auth_frame: bytes | None = None
        self._auth_deadline: float | None = None
        self._replay_deadline: float | None = None
        self._last_received = 0.0
        self._last_sent = 0.0
        self._ping_sent_at: float | None = None
        self.deadline_version = 0
        """Bumped whenever a deadline may have moved *earlier*; the shell re-arms its timer only
        then (other deadlines, like the heartbeat's, only ever move later)."""

    # -- commands ------------------------------------------------------------------------------

    def authenticate(self, api_key: str, now: float) -> None:
        """Start authenticating a fresh socket (resuming the session if we have one).

        The auth frame becomes the only output until the server answers. Then call
        :meth:`data_to_send` and write it.
        """
        self._check_open()
        self.phase = Phase.AUTHENTICATING
        self._auth_frame = orjson.dumps([wire.auth_item(api_key, self.session_id)])
        self._auth_deadline = now + self.auth_timeout
        self.deadline_version += 1
        self._last_received = self._last_sent = now
        self._ping_sent_at = None
        self._control.clear()
        self._polls_out.clear()

    def submit(
        self,
        task_uuid: str,
        payload: bytes,
        now: float,
        *,
        is_async: bool = False,
        timeout: float | None = None,
    ) -> None:
        """Queue one task. ``payload`` is the task's JSON object, already encoded.

        Args:
            task_uuid: The task's taskUUID (unique among live tasks).
            payload: The encoded task object, sent verbatim (and resent verbatim).
            now: The current time.
            is_async: The task uses ``deliveryMethod: "async"`` (ACK, then polling).
            timeout: Seconds until the task fails with :class:`UpscaleTimeout`; ``None`` uses
                the session's ``task_timeout``.

        Raises:
            ValueError: a live task already has this taskUUID.

        Then call :meth:`data_to_send` (once per event-loop turn is enough).
        """
        self._check_open()
        if task_uuid in self._tasks:
            raise ValueError(f"taskUUID {task_uuid} is already in flight")
        seconds = self.task_timeout if timeout is None else timeout
        deadline = None if seconds is None else now + seconds
        task = _Task(task_uuid, payload, is_async, seconds, deadline)
        self._tasks[task_uuid] = task
        self._queue.append(task)
        if deadline is not None:
            self._timeouts.add(task_uuid, deadline)
            self.deadline_version += 1

    def cancel(self, task_uuid: str) -> bool:
        """Forget a task (its caller gave up). A queued task is never sent; a late answer for a
        sent one is discarded. Returns whether the task was live."""
        task = self._tasks.get(task_uuid)
        if task is None:
            return False
        self._forget(task)
        return True

    def close(self) -> list[str]:
        """End the session for good. Returns the taskUUIDs still live (the shell fails them)."""
        live = list(self._tasks)
        for task in list(self._tasks.values()):
            self._forget(task)
        self.phase = Phase.CLOSED
        self._control.clear()
        self._polls_out.clear()
        self._auth_frame = None
        return live

    def connection_lost(self, now: float) -> ResendPlan:
        """The socket is gone. Keep every task; decide what each one waits for.

        Then reconnect and call :meth:`authenticate` again.
        """
        awaiting: list[str] = []
        polling: list[str] = []
        unsent: list[str] = []
        for task in self._tasks.values():
            if task.state is TaskState.IN_FLIGHT or task.state is TaskState.AWAITING_REPLAY:
                task.state = TaskState.AWAITING_REPLAY
                awaiting.append(task.uuid)
            elif task.state is TaskState.QUEUED:
                unsent.append(task.uuid)
            else:
                polling.append(task.uuid)
        if self.phase is not Phase.CLOSED:
            self.phase = Phase.IDLE
        self._control.clear()
        self._polls_out.clear()
        self._auth_frame = None
        self._auth_deadline = None
        self._replay_deadline = None
        self._ping_sent_at = None
        return ResendPlan(self.session_id, tuple(awaiting), tuple(polling), tuple(unsent))

    # -- input ---------------------------------------------------------------------------------

    def receive_text(self, text: str | bytes, now: float) -> None:
        """Feed one WebSocket message; then read the events and the frames to send."""
        self._last_received = now
        try:
            message = orjson.loads(text)
        except orjson.JSONDecodeError:
            self._events.append(MalformedMessage("not JSON", _sample(text)))
            return
        if not isinstance(message, dict):
            self._events.append(MalformedMessage("not a JSON object", _sample(text)))
            return
        handled = False
        errors = message.get("errors")
        if isinstance(errors, list):
            handled = True
            for item in errors:
                self._receive_error(item, now)
        elif "error" in message:
            handled = True
            self._receive_legacy_error(message)
        data = message.get("data")
        if isinstance(data, list):
            handled = True
            for item in data:
                self._receive_item(item, now)
        if not handled:
            self._events.append(MalformedMessage("no data or errors array", _sample(text)))

    def handle_timer(self, now: float) -> None:
        """Act on every deadline that has passed. Then read events and output."""
        if self.phase is Phase.CLOSED:
            return
        if self._auth_deadline is not None and now >= self._auth_deadline:
            self._auth_deadline = None
            self._events.append(AuthTimedOut(self.auth_timeout))
        if self.phase is Phase.OPEN:
            self._heartbeat_timer(now)
            if self._replay_deadline is not None and now >= self._replay_deadline:
                self._replay_deadline = None
                self._requeue_awaiting()
            for uuid in self._polls.pop_due(now):
                task = self._tasks.get(uuid)
                if task is not None and task.poll_at:
                    self._polls_out.append(orjson.dumps(wire.get_response_item(uuid)))
                    task.poll_delay = min(
                        max(task.poll_delay * self.polling.factor, self.polling.initial),
                        self.polling.max_delay,
                    )
                    self._schedule_poll(task, now + task.poll_delay)
        for uuid in self._timeouts.pop_due(now):
            task = self._tasks.get(uuid)
            if task is not None and task.timeout is not None:
                self._fail(task, UpscaleTimeout("task", seconds=task.timeout, task_uuid=uuid))

    # -- output --------------------------------------------------------------------------------

    def events_received(self) -> list[Event]:
        """Return and clear the events produced since the last call."""
        events, self._events = self._events, []
        return events

    def data_to_send(self, now: float) -> list[bytes]:
        """Return and clear the frames to write, in order (UTF-8 JSON text frames).

        While authenticating, only the auth frame goes out; tasks wait until the server accepted
        the key. Queued tasks are packed into arrays of at most ``limits.max_batch`` tasks and
        ``limits.max_frame_bytes`` bytes (a single larger task goes alone).
        """
        if self.phase is Phase.AUTHENTICATING:
            frame, self._auth_frame = self._auth_frame, None
            return [frame] if frame is not None else []
        if self.phase is not Phase.OPEN:
            return []
        frames = self._control
        self._control = []
        if self._polls_out:
            frames.extend(self._pack(self._polls_out))
            self._polls_out = []
        if self._queue:
            frames.extend(self._pack_tasks())
        if frames:
            self._last_sent = now
        return frames

    def next_deadline(self) -> float | None:
        """The earliest time :meth:`handle_timer` has work to do, or ``None``."""
        candidates: list[float] = []
        if self._auth_deadline is not None:
            candidates.append(self._auth_deadline)
        if self.phase is Phase.OPEN:
            if self._ping_sent_at is not None:
                candidates.append(self._ping_sent_at + self.heartbeat.pong_timeout)
            else:
                quiet_since = min(self._last_received, self._last_sent)
                candidates.append(quiet_since + self.heartbeat.interval)
            if self._replay_deadline is not None:
                candidates.append(self._replay_deadline)
            poll = self._polls.next_time()
            if poll is not None:
                candidates.append(poll)
        timeout = self._timeouts.next_time()
        if timeout is not None:
            candidates.append(timeout)
        return min(candidates) if candidates else None

    # -- introspection -------------------------------------------------------------------------

    @property
    def wants_write(self) -> bool:
        """Whether :meth:`data_to_send` would return something now."""
        if self.phase is Phase.AUTHENTICATING:
            return self._auth_frame is not None
        return self.phase is Phase.OPEN and bool(self._control or self._polls_out or self._queue)

    @property
    def live_count(self) -> int:
        """Tasks submitted and not yet finished, failed or cancelled."""
        return len(self._tasks)

    def state_of(self, task_uuid: str) -> TaskState | None:
        """The lifecycle state of a live task, or ``None`` if it is not live."""
        task = self._tasks.get(task_uuid)
        return task.state if task is not None else None

    def was_resent(self, task_uuid: str) -> bool:
        """Whether a live task was sent more than once (always with the same taskUUID)."""
        task = self._tasks.get(task_uuid)
        return task is not None and task.resent

    # -- internals -----------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self.phase is Phase.CLOSED:
            raise RuntimeError("the session is closed")

    def _pack(self, encoded: list[bytes]) -> list[bytes]:
        parts = wire.frame_slices(
            [len(item) for item in encoded], max_items=self.limits.max_batch, max_bytes=None
        )
        return [wire.join_frame(encoded[part]) for part in parts]

    def _pack_tasks(self) -> list[bytes]:
        queue = self._queue
        queued = TaskState.QUEUED
        in_flight = TaskState.IN_FLIGHT
        payloads: list[bytes] = []
        while queue:
            task = queue.popleft()
            if task.state is not queued or self._tasks.get(task.uuid) is not task:
                continue  # cancelled or finished while queued
            payloads.append(task.payload)
            task.state = in_flight
        parts = wire.frame_slices(
            [len(payload) for payload in payloads],
            max_items=self.limits.max_batch,
            max_bytes=self.limits.max_frame_bytes,
        )
        return [wire.join_frame(payloads[part]) for part in parts]

    def _heartbeat_timer(self, now: float) -> None:
        if self._ping_sent_at is not None:
            if now >= self._ping_sent_at + self.heartbeat.pong_timeout:
                self._events.append(HeartbeatMissed(now - self._ping_sent_at))
                self._ping_sent_at = None
            return
        if now >= min(self._last_received, self._last_sent) + self.heartbeat.interval:
            self._control.append(wire.PING_FRAME)
            self._ping_sent_at = now
            self.deadline_version += 1

    def _requeue_awaiting(self) -> None:
        """Resend, with the same taskUUID, every task still waiting for a replay (oldest first)."""
        waiting = [t for t in self._tasks.values() if t.state is TaskState.AWAITING_REPLAY]
        for task in reversed(waiting):
            task.state = TaskState.QUEUED
            task.resent = True
            self._queue.appendleft(task)

    def _schedule_poll(self, task: _Task, when: float) -> None:
        if task.poll_at:
            self._polls.discard(task.uuid, task.poll_at)
        task.poll_at = when
        self._polls.add(task.uuid, when)
        self.deadline_version += 1

    def _forget(self, task: _Task) -> None:
        del self._tasks[task.uuid]
        if task.deadline is not None:
            self._timeouts.discard(task.uuid, task.deadline)
        if task.poll_at:
            self._polls.discard(task.uuid, task.poll_at)
            task.poll_at = 0.0

    def _fail(self, task: _Task, error: UpscaleError) -> None:
        self._forget(task)
        self._events.append(TaskFailed(task.uuid, error))

    def _authenticated(self, session_id: str) -> None:
        resumed = session_id == self.session_id
        if self.session_id is not None and not resumed:
            # A new session: the server may have lost everything (a restart), polled tasks
            # included. Resend those too, under the same taskUUID; a server that still knows
            # one answers conflictTaskUUID and polling resumes (protocol.md section 2).
            for task in self._tasks.values():
                if task.state is TaskState.ACKNOWLEDGED or task.state is TaskState.RECOVERING:
                    if task.poll_at:
                        self._polls.discard(task.uuid, task.poll_at)
                        task.poll_at = 0.0
                    task.state = TaskState.AWAITING_REPLAY
        self.session_id = session_id
        self.phase = Phase.OPEN
        self._auth_deadline = None
        self._events.append(Authenticated(session_id, resumed))
        if any(t.state is TaskState.AWAITING_REPLAY for t in self._tasks.values()):
            if resumed:
                self._replay_deadline = self._last_received + self.retry.resume_grace
                self.deadline_version += 1
            else:
                self._requeue_awaiting()
        for task in self._tasks.values():  # go on polling right away on the new socket
            if task.poll_at:
                self._schedule_poll(task, self._last_received)

    def _receive_item(self, item: Any, now: float) -> None:
        if not isinstance(item, dict):
            self._events.append(MalformedMessage("data item is not an object", _sample(item)))
            return
        task_uuid = item.get("taskUUID")
        task = self._tasks.get(task_uuid) if isinstance(task_uuid, str) else None
        if task is None:
            self._receive_session_item(item, task_uuid, now)
            return
        status = item.get("status")
        if status == "error":
            nested = item.get("error")
            error = ErrorItem.from_wire(nested if isinstance(nested, dict) else {})
            self._fail(task, _task_error(error, task.uuid))
        elif (
            item.get("imageURL")
            or item.get("imageBase64Data")
            or item.get("imageDataURI")
            or item.get("mediaURL")
            or status == "success"
        ):  # a finished output (protocol.md section 5.3); checked once per task
            self._forget(task)
            self._events.append(TaskResult(task.uuid, item))
        elif task.state is TaskState.IN_FLIGHT and task.is_async:
            task.state = TaskState.ACKNOWLEDGED
            task.poll_delay = self.polling.initial
            self._schedule_poll(task, now + self.polling.initial)
            self._events.append(TaskAccepted(task.uuid))
        # Otherwise a progress item (status processing) or an ACK for a sync task: the
        # scheduled poll, or the server's push, will bring the result.

    def _receive_session_item(self, item: dict[str, Any], task_uuid: Any, now: float) -> None:
        task_type = item.get("taskType")
        if task_type == wire.PING and item.get("pong"):
            # Only a pong answers a ping: other traffic moves the idle deadline, but the pong
            # keeps its own (aiohttp's rule), so a server that stopped answering is found.
            sent, self._ping_sent_at = self._ping_sent_at, None
            self._events.append(Pong(now - sent if sent is not None else 0.0))
        elif task_type == wire.AUTH or (
            task_uuid is None and isinstance(item.get("connectionSessionUUID"), str)
        ):
            session_id = item.get("connectionSessionUUID")
            if self.phase is Phase.AUTHENTICATING and isinstance(session_id, str) and session_id:
                self._authenticated(session_id)
        elif isinstance(task_uuid, str):
            self._events.append(Discarded(task_uuid, "no live task with this taskUUID"))
        else:
            self._events.append(MalformedMessage("data item without taskUUID", _sample(item)))

    def _receive_error(self, raw: Any, now: float) -> None:
        if not isinstance(raw, dict):
            self._events.append(MalformedMessage("error item is not an object", _sample(raw)))
            return
        error = ErrorItem.from_wire(raw)
        task = self._tasks.get(error.task_uuid) if error.task_uuid else None
        if task is None:
            if error.task_uuid is None and (
                error.code in AUTH_ERROR_CODES or error.task_type == wire.AUTH
            ):
                self._reject(error)
            elif error.task_uuid is not None:
                self._events.append(Discarded(error.task_uuid, f"late error {error.code}"))
            else:
                self._events.append(StrayError(error))
            return
        if error.code == "conflictTaskUUID" and task.resent:
            # The server already has this task (protocol.md section 2): fetch, never rerun.
            task.state = TaskState.RECOVERING
            task.poll_delay = 0.0
            self._schedule_poll(task, now)
            return
        self._fail(task, _task_error(error, task.uuid))

    def _receive_legacy_error(self, message: dict[str, Any]) -> None:
        # {"error": true, "errorId": 19, "errorMessage": ...} (older docs), or a singular
        # {"error": {...}} object; both only matter for authentication (protocol.md section 2).
        body = message.get("error")
        raw = body if isinstance(body, dict) else message
        error = ErrorItem.from_wire(raw)
        if message.get("errorId") == 19 and error.code == "unknownError":
            error = error.model_copy(update={"code": "invalidApiKey"})
        if self.phase is Phase.AUTHENTICATING or error.code in AUTH_ERROR_CODES:
            self._reject(error)
        else:
            task = self._tasks.get(error.task_uuid) if error.task_uuid else None
            if task is not None:
                self._fail(task, _task_error(error, task.uuid))
            else:
                self._events.append(StrayError(error))

    def _reject(self, error: ErrorItem) -> None:
        self._auth_deadline = None
        code = error.code if error.code != "unknownError" else "authenticationFailed"
        self._events.append(
            AuthRejected(
                AuthenticationError(
                    code,
                    error.message or "the server rejected the API key",
                    parameter="apiKey",
                    task_type=wire.AUTH,
                )
            )
        )


def _task_error(error: ErrorItem, task_uuid: str) -> APIError:
    exc = error.to_exception()
    if exc.task_uuid is None:
        exc.task_uuid = task_uuid
    if exc.code in AUTH_ERROR_CODES:
        return AuthenticationError(
            exc.code,
            exc.message,
            parameter=exc.parameter,
            task_uuid=exc.task_uuid,
            task_type=exc.task_type,
            documentation=exc.documentation,
        )
    return exc


def _sample(value: Any, limit: int = 120) -> str:
    text = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
    return text[:limit]
