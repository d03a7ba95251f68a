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
    any phase --unexpected exception inside the core--> ERROR (terminal, as h11's)

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
    IN_FLIGHT --transient error answer--> RETRY_WAIT --delay--> QUEUED (next attempt's taskUUID;
                                                                  a job task keeps its own)

Rules that keep every task resolved exactly once and never run twice:

* A task keeps its taskUUID across drops and resends. It gets a new one only after the server
  *answered* that taskUUID, sent exactly once, with a transient error
  (:data:`~upscale_stream.policy.RETRYABLE_CODES`): then the server is known not to have run
  it, and the next attempt's taskUUID comes from :func:`~upscale_stream.jobs.attempt_task_uuid`
  (random, or derived for a job). A taskUUID sent more than once may be running from its first
  send, so its retry keeps that taskUUID (the chaos run found this). A task of a job keeps
  its taskUUID on retry too, until the server's record says the attempt failed: a refusal
  may leave no record, and a later process of the job starts again from attempt 0
  (docs/jobs.md, "Retries after an error answer keep the taskUUID"). The shell
  keeps knowing the task by its first taskUUID (its *key*); events carry the key, result items
  the final taskUUID.
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
* An unexpected exception inside the core moves it to :attr:`Phase.ERROR` (h11's rule): every
  later call raises :class:`~upscale_stream.errors.InternalError`, so nobody feeds a
  half-updated core again. The shell fails every pending task with that one error.

Two mixins keep the one state machine readable: :mod:`upscale_stream.receiving` holds the
general receive path (frames other than a plain array of results, which
:meth:`ClientSession.receive_text` reads itself), :mod:`upscale_stream.recovery` the rules for
errors, resends and earlier runs of a job.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable

import orjson

from . import wire
from .config import Heartbeat, Limits, Polling, Retry, TaskRetry
from .errors import (
    DuplicateTaskUUID,
    InternalError,
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
    TaskRetrying,
)
from .jobs import JobTask
from .models import new_task_uuid
from .policy import backoff
from .receiving import ReceiveRules
from .records import Deadlines, Phase, Schedule, SessionSettings, TaskRecord, TaskState
from .recovery import RecoveryRules
from .results import decode_plain_frame

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
    "TaskRetrying",
    "TaskState",
    "backoff",
]


# -- the session -------------------------------------------------------------------------------


class ClientSession(ReceiveRules, RecoveryRules):
    """One logical Runware session across any number of sockets.

    Args:
        limits: Batching caps (``max_batch``, ``max_frame_bytes``) for outgoing frames.
        heartbeat: Ping after silence, and the pong deadline.
        polling: ``getResponse`` backoff for async and recovering tasks.
        retry: ``resume_grace`` is used here; the delays are the shell's business.
        task_retry: Retries of tasks answered with a transient error.
        auth_timeout: Seconds to wait for the answer to the authentication frame.
        task_timeout: Default seconds from :meth:`submit` to a task's end (``None``: no limit).
        rng: Randomness for the retry jitter (tests pass a seeded one).
        new_uuid: Draws a random taskUUID for a retry of a task without a job.
    """

    def __init__(
        self,
        *,
        limits: Limits | None = None,
        heartbeat: Heartbeat | None = None,
        polling: Polling | None = None,
        retry: Retry | None = None,
        task_retry: TaskRetry | None = None,
        auth_timeout: float = 15.0,
        task_timeout: float | None = 300.0,
        rng: random.Random | None = None,
        new_uuid: Callable[[], str] = new_task_uuid,
    ) -> None:
        self.limits = limits or Limits()
        # The rarely read settings share one attribute: CPython 3.11 keeps fast attribute
        # access only for instances of at most 30 attributes (its shared-key dicts).
        self._settings = SessionSettings(
            heartbeat or Heartbeat(),
            polling or Polling(),
            retry or Retry(),
            task_retry or TaskRetry(),
            auth_timeout,
            task_timeout,
            rng or random.Random(),
            new_uuid,
        )
        self.error: BaseException | None = None
        """The unexpected exception that moved the core to :attr:`Phase.ERROR`."""
        self.tasks_sent = 0
        """Tasks packed into frames so far (resends and retries included)."""
        self.send_limit: int | None = None
        """Set by the shell to its window: retries go out only while fewer tasks than this are
        on the wire (sent, unanswered), so a wave of rate-limited tasks does not come back
        all at once. ``None``: no cap."""
        self._on_wire = 0
        self._retry_ready: deque[TaskRecord] = deque()
        self.phase = Phase.IDLE
        self.session_id: str | None = None
        self._tasks: dict[str, TaskRecord] = {}  # by key (the first taskUUID)
        self._renamed: dict[str, TaskRecord] = {}  # by current taskUUID, for retried tasks only
        self.resent_count = 0
        """Tasks sent again with the same taskUUID after a drop (for ``client.stats()``)."""
        self.replayed_count = 0
        """Results that came as a replay of a resumed session's held answers."""
        self.fetched_count = 0
        """Results fetched with ``getResponse`` (async tasks, recovered resends)."""
        self._queue: deque[TaskRecord] = deque()
        self._timeouts = Deadlines(self._tasks, task_timeout)
        self._polls = Schedule(0.05)
        self._retries = Schedule(0.01)
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
        """Bumped whenever a deadline may have moved *earlier* or a new one began (the
        heartbeat's, once authenticated); the shell re-arms its timer only then (the others,
        like the heartbeat's while open, only ever move later)."""

    @property
    def heartbeat(self) -> Heartbeat:
        """Ping-after-silence intervals and the pong deadline."""
        return self._settings.heartbeat

    @property
    def polling(self) -> Polling:
        """``getResponse`` / ``getTaskDetails`` backoff."""
        return self._settings.polling

    @property
    def retry(self) -> Retry:
        """Reconnect settings (``resume_grace`` is used here)."""
        return self._settings.retry

    @property
    def task_retry(self) -> TaskRetry:
        """Retries of tasks answered with a transient error."""
        return self._settings.task_retry

    @property
    def auth_timeout(self) -> float:
        """Seconds to wait for the answer to the authentication frame."""
        return self._settings.auth_timeout

    @property
    def task_timeout(self) -> float | None:
        """Default seconds from :meth:`submit` to a task's end."""
        return self._settings.task_timeout

    # -- commands ------------------------------------------------------------------------------

    def authenticate(self, api_key: str, now: float) -> None:
        """Start authenticating a fresh socket (resuming the session if we have one).

        The auth frame becomes the only output until the server answers. Then call
        :meth:`data_to_send` and write it.
        """
        self._check_open()
        try:
            self._auth_frame = orjson.dumps([wire.auth_item(api_key, self.session_id)])
        except BaseException as exc:
            raise self._broken(exc) from exc
        self.phase = Phase.AUTHENTICATING
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
        is_async: bool = False,
        timeout: float | None = None,
        job: JobTask | None = None,
    ) -> None:
        """Queue one task. ``payload`` is the task's JSON object, already encoded.

        Args:
            task_uuid: The task's taskUUID (unique among live tasks); also the key by which
                events name the task, even after a retry under a new taskUUID.
            payload: The encoded task object, sent verbatim (and resent verbatim). Its first
                ``"taskUUID"`` value must be ``task_uuid`` (a retry swaps it).
            now: The current time.
            is_async: The task uses ``deliveryMethod: "async"`` (ACK, then polling).
            timeout: Seconds until the task fails with :class:`UpscaleTimeout`; ``None`` uses
                the session's ``task_timeout``. Retries count against the same deadline.
            job: For a task of a job, what its retries' taskUUIDs derive from.

        Raises:
            DuplicateTaskUUID: a live task already has this taskUUID.

        Then call :meth:`data_to_send` (once per event-loop turn is enough).
        """
        phase = self.phase
        if phase is _CLOSED or phase is _ERROR:
            self._check_open()
        tasks = self._tasks
        if task_uuid in tasks or (self._renamed and task_uuid in self._renamed):
            raise DuplicateTaskUUID(task_uuid)
        seconds = self._settings.task_timeout if timeout is None else timeout
        deadline = None if seconds is None else now + seconds
        task = TaskRecord(task_uuid, task_uuid, payload, is_async, seconds, deadline, now, job)
        tasks[task_uuid] = task
        self._queue.append(task)
        if deadline is not None:
            timeouts = self._timeouts
            if seconds != timeouts.default:
                timeouts.add(task)  # a timeout of its own: it may be the earliest
                self.deadline_version += 1
            elif len(tasks) == timeouts.scheduled + 1:  # the one default: see Deadlines
                self.deadline_version += 1

    def submit_many(
        self,
        task_uuids: list[str],
        payloads: list[bytes],
        now: float,
        is_async: bool = False,
        timeout: float | None = None,
    ) -> list[int]:
        """:meth:`submit` for several tasks (none of a job) queued at one time, with one
        timeout: the same records, queue order and deadlines as one :meth:`submit` each, with
        the per-call work (the phase test, the timeout's arithmetic) done once.

        Returns:
            The positions of the tasks refused because a live task (or an earlier one of this
            batch) already has their taskUUID; every other task is queued, in order.
        """
        phase = self.phase
        if phase is _CLOSED or phase is _ERROR:
            self._check_open()
        tasks = self._tasks
        renamed = self._renamed
        queue = self._queue.append
        timeouts = self._timeouts
        seconds = self._settings.task_timeout if timeout is None else timeout
        deadline = None if seconds is None else now + seconds
        own = deadline is not None and seconds != timeouts.default
        # The one default-timeout task (see Deadlines) when none is live before this batch.
        first_default = deadline is not None and not own and len(tasks) == timeouts.scheduled
        refused: list[int] = []
        for index, (task_uuid, payload) in enumerate(zip(task_uuids, payloads, strict=True)):
            if task_uuid in tasks or (renamed and task_uuid in renamed):
                refused.append(index)
                continue
            task = TaskRecord(task_uuid, task_uuid, payload, is_async, seconds, deadline, now)
            tasks[task_uuid] = task
            queue(task)
            if own:
                timeouts.add(task)  # a timeout of its own: it may be the earliest
        if (own or first_default) and len(refused) < len(task_uuids):
            self.deadline_version += 1
        return refused

    def submitted_at(self, task_uuid: str) -> float | None:
        """When the live task ``task_uuid`` (its key) was submitted; ``None`` if not live."""
        task = self._tasks.get(task_uuid)
        return None if task is None else task.submitted

    def cancel(self, task_uuid: str) -> bool:
        """Forget a task (its caller gave up). A queued task is never sent; a late answer for a
        sent one is discarded. Returns whether the task was live."""
        task = self._tasks.get(task_uuid)
        if task is None:
            return False
        self._forget(task)
        return True

    def close(self) -> list[str]:
        """End the session for good. Returns the keys of the tasks still live (the shell fails
        them)."""
        live = list(self._tasks)
        self._tasks.clear()
        self._renamed.clear()
        self._queue.clear()
        self._timeouts.clear()
        self._polls = Schedule(0.05)
        self._retries = Schedule(0.01)
        self._retry_ready.clear()
        self._on_wire = 0
        if self.phase is not Phase.ERROR:
            self.phase = Phase.CLOSED
        self._control.clear()
        self._polls_out.clear()
        self._auth_frame = None
        return live

    def connection_lost(self, now: float) -> ResendPlan:
        """The socket is gone. Keep every task; decide what each one waits for.

        Then reconnect and call :meth:`authenticate` again.
        """
        if self.phase is Phase.ERROR:
            self._check_open()
        try:
            return self._connection_lost()
        except BaseException as exc:
            raise self._broken(exc) from exc

    def _connection_lost(self) -> ResendPlan:
        self._on_wire = 0  # every task in flight now awaits a replay
        awaiting: list[str] = []
        polling: list[str] = []
        unsent: list[str] = []
        for task in self._tasks.values():
            if task.state is TaskState.IN_FLIGHT or task.state is TaskState.AWAITING_REPLAY:
                task.state = TaskState.AWAITING_REPLAY
                awaiting.append(task.key)
            elif task.state is TaskState.QUEUED or task.state is TaskState.RETRY_WAIT:
                unsent.append(task.key)
            else:
                polling.append(task.key)
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
        """Feed one WebSocket message; then read the events and the frames to send.

        Raises:
            InternalError: the core failed (now or earlier); it refuses every later call.
        """
        if self.phase is _ERROR:
            self._check_open()
        try:  # the body in line (no frame of its own): this runs once per frame
            self._last_received = now
            results = decode_plain_frame(text)
            if results is None:
                self._receive_json(text, now, 0)
                return
            # The usual frame, typed in one C call.
            tasks = self._tasks
            get = tasks.get
            ended = self._events.append
            answered = 0  # tasks in flight that ended here: the wire count, once a frame
            for result in results:
                task_uuid = result.task_uuid
                task = get(task_uuid)
                if (
                    task is None
                    or task.details
                    or result.status is not None
                    or task.uuid != task_uuid  # a stale attempt's (decoded: never "is")
                    or not (
                        result.image_url
                        or result.image_base64_data
                        or result.image_data_uri
                        or result.media_url
                    )
                ):  # not a plain sync result of a live task: the general path, from here on
                    self._on_wire -= answered
                    # Where the general path takes over (found by identity: equal items may
                    # repeat; rare, so the loop carries no index).
                    index = next(i for i, item in enumerate(results) if item is result)
                    self._receive_json(text, now, index)
                    return
                if task.state is _IN_FLIGHT:
                    answered += 1
                else:
                    self._count_late_result(task)
                # _forget's common case in line (once per task): table, wire count, payload.
                del tasks[task_uuid]
                task.state = _ENDED
                task.payload = b""
                if task.scheduled or task.poll_at or task.retry_at or task.uuid is not task.key:
                    self._forget_rest(task)
                ended(TaskResult(task.key, result, task.submitted))
            self._on_wire -= answered
        except BaseException as exc:
            raise self._broken(exc) from exc

    def handle_timer(self, now: float) -> None:
        """Act on every deadline that has passed. Then read events and output.

        Raises:
            InternalError: the core failed (now or earlier).
        """
        if self.phase is Phase.CLOSED:
            return
        self._check_open()
        try:
            self._handle_timer(now)
        except BaseException as exc:
            raise self._broken(exc) from exc

    def _handle_timer(self, now: float) -> None:
        for key in self._retries.pop_due(now):
            task = self._tasks.get(key)
            if task is not None and task.state is TaskState.RETRY_WAIT:
                task.retry_at = 0.0
                self._retry_ready.append(task)  # goes out when the wire has room
        if self._auth_deadline is not None and now >= self._auth_deadline:
            self._auth_deadline = None
            self._events.append(AuthTimedOut(self.auth_timeout))
        if self.phase is Phase.OPEN:
            self._heartbeat_timer(now)
            if self._replay_deadline is not None and now >= self._replay_deadline:
                self._replay_deadline = None
                self._requeue_awaiting()
            for key in self._polls.pop_due(now):
                task = self._tasks.get(key)
                if task is not None and task.poll_at:
                    poll = wire.get_task_details_item if task.details else wire.get_response_item
                    self._polls_out.append(orjson.dumps(poll(task.uuid)))
                    task.poll_delay = min(
                        max(task.poll_delay * self.polling.factor, self.polling.initial),
                        self.polling.max_delay,
                    )
                    self._schedule_poll(task, now + task.poll_delay)
        for key in self._timeouts.pop_due(now):
            task = self._tasks.get(key)
            if task is not None and task.timeout is not None:
                timeout = UpscaleTimeout("task", seconds=task.timeout, task_uuid=task.uuid)
                self._fail(task, timeout)

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

        Raises:
            InternalError: the core failed (now or earlier).
        """
        try:
            return self._data_to_send(now)
        except BaseException as exc:
            raise self._broken(exc) from exc

    def _data_to_send(self, now: float) -> list[bytes]:
        if self.phase is Phase.ERROR:
            self._check_open()
        if self.phase is Phase.AUTHENTICATING:
            frame, self._auth_frame = self._auth_frame, None
            return [frame] if frame is not None else []
        if self.phase is not Phase.OPEN:
            return []
        frames = self._control
        self._control = []
        if self._retry_ready:
            self._release_retries()
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
                candidates.append(self._ping_due())
            if self._replay_deadline is not None:
                candidates.append(self._replay_deadline)
            poll = self._polls.next_time()
            if poll is not None:
                candidates.append(poll)
        if self.phase is Phase.ERROR or self.phase is Phase.CLOSED:
            return None
        timeout = self._timeouts.next_time()
        if timeout is not None:
            candidates.append(timeout)
        retry = self._retries.next_time()
        if retry is not None:
            candidates.append(retry)
        return min(candidates) if candidates else None

    # -- introspection -------------------------------------------------------------------------

    @property
    def wants_write(self) -> bool:
        """Whether :meth:`data_to_send` would return something now."""
        if self.phase is Phase.AUTHENTICATING:
            return self._auth_frame is not None
        if self.phase is not Phase.OPEN:
            return False
        if self._control or self._polls_out or self._queue:
            return True
        return bool(self._retry_ready) and self._retry_room() > 0

    @property
    def on_wire(self) -> int:
        """Tasks sent on the current socket and not answered yet."""
        return self._on_wire

    @property
    def queued_count(self) -> int:
        """Tasks waiting to be packed into a frame."""
        return len(self._queue)

    @property
    def live_count(self) -> int:
        """Tasks submitted and not yet finished, failed or cancelled."""
        return len(self._tasks)

    def state_of(self, task_uuid: str) -> TaskState | None:
        """The lifecycle state of a live task (by key), or ``None`` if it is not live."""
        task = self._tasks.get(task_uuid)
        return task.state if task is not None else None

    def current_uuid(self, task_uuid: str) -> str | None:
        """The taskUUID a live task (by key) is sent under now, or ``None`` if not live."""
        task = self._tasks.get(task_uuid)
        return task.uuid if task is not None else None

    def attempts_of(self, task_uuid: str) -> int:
        """Tries of a live task (by key) so far, the current one included (0 if not live)."""
        task = self._tasks.get(task_uuid)
        return task.attempts if task is not None else 0

    def was_resent(self, task_uuid: str) -> bool:
        """Whether a live task was sent more than once (always with the same taskUUID)."""
        task = self._tasks.get(task_uuid)
        return task is not None and task.resent

    # -- internals -----------------------------------------------------------------------------

    def _check_open(self) -> None:
        phase = self.phase
        if phase is not _CLOSED and phase is not _ERROR:
            return
        if phase is _CLOSED:
            raise RuntimeError("the session is closed")
        raise InternalError(
            "the client core failed earlier and refuses further calls; "
            "create a new client (and please report the first error)"
        ) from self.error

    def _broken(self, exc: BaseException) -> BaseException:
        """Enter the terminal ERROR state after an unexpected exception (h11's rule).

        Returns what the caller raises: our own errors and ``InternalError`` pass through.
        """
        if isinstance(exc, InternalError) or not isinstance(exc, Exception):
            return exc  # already ours, or KeyboardInterrupt and friends: not ours to judge
        if self.phase is not Phase.ERROR:
            self.phase = Phase.ERROR
            self.error = exc
        return InternalError(f"unexpected error inside the client core: {exc!r}")

    def _retry_room(self) -> int:
        limit = self.send_limit
        if limit is None:
            return len(self._retry_ready)
        return limit - self._on_wire - len(self._queue)

    def _release_retries(self) -> None:
        ready = self._retry_ready
        room = self._retry_room()
        while room > 0 and ready:
            task = ready.popleft()
            if self._tasks.get(task.key) is not task or task.state is not TaskState.RETRY_WAIT:
                continue  # cancelled or timed out while waiting
            task.state = TaskState.QUEUED
            self._queue.append(task)
            room -= 1

    def _ping_due(self) -> float:
        heartbeat = self.heartbeat
        idle = min(self._last_received, self._last_sent) + heartbeat.interval
        if self._tasks:
            busy = self._last_received + heartbeat.busy_interval
            return busy if busy < idle else idle
        return idle

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
        add = payloads.append
        take = queue.popleft
        sent = self.tasks_sent
        while queue:
            task = take()
            if task.state is not queued:
                continue  # ended while queued (cancelled, timed out, answered by a replay)
            add(task.payload)
            task.state = in_flight
            sent += 1
            task.sent_seq = sent
        self._on_wire += sent - self.tasks_sent
        self.tasks_sent = sent
        limits = self.limits
        count = len(payloads)
        if count <= limits.max_batch and (
            limits.max_frame_bytes is None
            or sum(map(len, payloads)) + count + 2 <= limits.max_frame_bytes
        ):
            # Everything fits in one frame (the common case): no size list to pack. The
            # same test as frame_slices': 2 bytes of brackets, one byte per item for its comma.
            return [wire.join_frame(payloads)] if payloads else []
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
        if now >= self._ping_due():
            self._control.append(wire.PING_FRAME)
            self._ping_sent_at = now
            self.deadline_version += 1

    def _requeue_awaiting(self) -> None:
        """Resend, with the same taskUUID, every task still waiting for a replay (oldest first)."""
        waiting = [t for t in self._tasks.values() if t.state is TaskState.AWAITING_REPLAY]
        self.resent_count += len(waiting)
        for task in reversed(waiting):
            task.state = TaskState.QUEUED
            task.resent = True
            self._queue.appendleft(task)

    def _schedule_poll(self, task: TaskRecord, when: float) -> None:
        if task.poll_at:
            self._polls.discard(task.key, task.poll_at)
        task.poll_at = when
        self._polls.add(task.key, when)
        self.deadline_version += 1

    def _forget(self, task: TaskRecord) -> None:
        """Drop an ended task: from the table, the wire count and whatever else holds it.

        ``receive_text`` has this in line for a frame's plain results: change both together.
        """
        if task.state is _IN_FLIGHT:
            self._on_wire -= 1
        del self._tasks[task.key]
        task.state = _ENDED  # the send queue skips it by this alone
        task.payload = b""  # the send queue may hold a cancelled record a while: not its input
        if task.scheduled or task.poll_at or task.retry_at or task.uuid is not task.key:
            self._forget_rest(task)  # not the common case: one test above for all four

    def _forget_rest(self, task: TaskRecord) -> None:
        if task.uuid is not task.key:
            self._renamed.pop(task.uuid, None)
        if task.scheduled:
            self._timeouts.discard(task)
        if task.poll_at:
            self._polls.discard(task.key, task.poll_at)
            task.poll_at = 0.0
        if task.retry_at:
            self._retries.discard(task.key, task.retry_at)
            task.retry_at = 0.0

    def _fail(self, task: TaskRecord, error: UpscaleError) -> None:
        self._forget(task)
        self._events.append(TaskFailed(task.key, error, task.attempts, task.submitted))


# Module constants: an enum attribute lookup costs ~90 ns, too much per task.
_IN_FLIGHT = TaskState.IN_FLIGHT
_ENDED = TaskState.ENDED
_CLOSED = Phase.CLOSED
_ERROR = Phase.ERROR
