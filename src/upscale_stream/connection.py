"""The I/O shell: the only module that touches the socket.

:class:`Connection` drives one :class:`~upscale_stream.protocol.ClientSession` over websockets:

* a **supervisor** task connects, runs the reader until the socket ends, then reconnects with
  :class:`~upscale_stream.policy.ReconnectBackoff` unless the failure is final
  (:func:`~upscale_stream.policy.process_exception`); the backoff starts again only after a
  connection proved healthy;
* a **writer** task wakes up once per event-loop turn after new output was queued, so every
  ``submit()`` made in the same turn leaves in the same frame (no fixed sleep);
* **one timer** (``loop.call_at``) armed at the core's next deadline, for heartbeats, polls,
  retries, resume grace and task timeouts; there is no timer per task;
* **the in-flight window** (:class:`~upscale_stream.policy.Window`, AIMD): a counter and a FIFO
  of waiters, shrunk by rate-limit answers and grown by successes. Every caller takes a slot
  with :meth:`acquire` before :meth:`submit` and gives it back with :meth:`release`;
* **one waiter per task**, a plain callback by key, called exactly once. Every task ends:
  with its result, its error, or
  :class:`~upscale_stream.errors.ClientClosed` / :class:`~upscale_stream.errors.ConnectionLost`
  / :class:`~upscale_stream.errors.InternalError`.

Reader, writer and timer share one guard (:meth:`_fail_safe`): an unexpected exception there
(or in the core, which then refuses every later call) fails every pending task with one
:class:`~upscale_stream.errors.InternalError` and closes; the shell never reconnects on a
corrupt core. Low-level errors (OSError, websockets' exceptions, timeouts) are translated
here, in one place.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import ssl as ssl_module
import time
import types
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeAlias

import websockets
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus, InvalidURI

from .config import Retry, Timeouts, Transport
from .errors import (
    ClientClosed,
    ConnectionLost,
    DuplicateTaskUUID,
    InternalError,
    InvalidURL,
    UpscaleError,
    UpscaleTimeout,
    handshake_refused,
)
from .log import Throttle, get_logger, register_secret, scrub_exception, websockets_logger
from .metrics import Live, Metrics
from .policy import ReconnectBackoff, Window, process_exception
from .protocol import (
    Authenticated,
    AuthRejected,
    AuthTimedOut,
    ClientSession,
    Discarded,
    HeartbeatMissed,
    MalformedMessage,
    Pong,
    StrayError,
    TaskAccepted,
    TaskFailed,
    TaskResult,
    TaskRetrying,
    TaskState,
)
from .window import InFlightWindow

__all__ = ["Connection", "TaskCallback"]

log = get_logger(__name__)

if TYPE_CHECKING:
    from .picows_socket import PicowsSocket

Socket: TypeAlias = "ClientConnection | PicowsSocket"
TaskCallback = Callable[[str, Any, "UpscaleError | None", int], None]
"""``callback(task_uuid, result, error, attempts)``: exactly one of ``result`` and ``error``
is set; ``task_uuid`` is the key the task was submitted under, ``attempts`` its tries."""
Waiter: TypeAlias = "TaskCallback | asyncio.Future[Any]"
"""Who hears of a task's end: a :data:`TaskCallback`, or a future that gets its result or
error (if nobody has settled or cancelled it first)."""
_Future = asyncio.Future
_InvalidState = asyncio.InvalidStateError
_Method = types.MethodType  # upscale_many's callback (Stream._finished, bound): no isinstance


class Connection:
    """One logical connection: a socket that is replaced after drops, around one session.

    Args:
        session: The pure core that holds the tasks.
        url: ``ws://`` or ``wss://`` endpoint.
        api_key: Sent in the authentication frame only; registered for log redaction.
        timeouts: Connect, auth and close limits.
        retry: Reconnect policy.
        ssl_context: TLS settings for ``wss://`` (``None``: verify with the system's CAs).
        rng: Randomness for backoff jitter (tests pass a seeded one).
    """

    def __init__(
        self,
        session: ClientSession,
        *,
        url: str,
        api_key: str,
        timeouts: Timeouts,
        retry: Retry,
        ssl_context: ssl_module.SSLContext | None = None,
        rng: random.Random | None = None,
        transport: Transport = "websockets",
        metrics: Metrics | None = None,
    ) -> None:
        register_secret(api_key)
        self._transport = transport
        self.session = session
        self.url = url
        self._api_key = api_key
        self._timeouts = timeouts
        self._retry = retry
        self._ssl = ssl_context
        self._rng = rng or random.Random()
        self._loop = asyncio.get_running_loop()
        # The loop's clock, read once per task: asyncio's own BaseEventLoop.time() is
        # time.monotonic() behind a Python frame, so that is called directly unless the loop
        # has a clock of its own (uvloop's, a test's).
        self._clock: Callable[[], float] = (
            time.monotonic
            if getattr(self._loop.time, "__func__", None) is asyncio.BaseEventLoop.time
            else self._loop.time
        )
        self.loop = self._loop
        """The event loop this connection runs on (callers make their futures with it:
        ``asyncio.get_running_loop()`` costs a ``getpid()`` system call per call on Linux)."""
        self._new_future = self._loop.create_future
        self._waiters: dict[str, Waiter] = {}
        # upscale()'s tasks of this loop turn, not yet handed to the core (see submit_soon)
        self._pending_keys: list[str] = []
        self._pending_payloads: list[bytes] = []
        self._pending_kind: tuple[bool, str] = (False, "")
        self._attempts: dict[str, int] = {}  # tries of retried tasks only, by key
        self.window = Window(session.limits.max_in_flight)
        """The adaptive in-flight window; ``window.size`` is the current limit."""
        self._slots = self.slots = InFlightWindow(self.window, self._loop)
        """The window's slots. ``slots.try_acquire()`` takes a free one without a coroutine,
        the fast path of :meth:`acquire` (it does not test :attr:`usable`: :meth:`submit`
        does, and a caller that must stop at once on a closed connection tests it first)."""
        self.release: Callable[[], None] = self._slots.release
        """Give back one slot taken with :meth:`acquire` (the window's own method: no extra call
        per task)."""
        self._drained: asyncio.Future[None] | None = None
        self._ws: Socket | None = None
        self._wake_writer = asyncio.Event()
        self._writer_woken = False  # set() called since the writer last woke (once per turn)
        self._timer: asyncio.TimerHandle | None = None
        self._timer_when = 0.0
        self._armed_version = -1
        self._supervisor: asyncio.Task[None] | None = None
        self._auth_waiter: asyncio.Future[None] | None = None
        self._fatal: UpscaleError | None = None
        self._closing = False
        self._draining = False
        self.usable = True
        """Whether the connection takes tasks now: none of closing, draining, failed (one
        test per task; :meth:`acquire` and :meth:`submit` raise why when it is not)."""
        self._backoff = ReconnectBackoff(retry, self._rng)
        # From when (the clock's time) an answer proves the current connection healthy:
        # healthy_after past its authentication; never before it authenticated.
        self._healthy_from = math.inf
        self._proven = True  # no connection to prove yet
        self._throttle = Throttle()
        self.reconnects = 0
        self.frames_sent = 0
        self.rate_limited = 0
        """Rate-limit answers received (every one, retries included)."""
        self.retries = 0
        """Task retries scheduled after transient error answers."""
        self.metrics = metrics or Metrics()
        """What ``client.stats()`` reads (:mod:`.metrics`)."""
        self.metrics.latency.clock = self._loop.time
        self.metrics.live = self._live_figures

    def __repr__(self) -> str:
        return f"<Connection url={self.url!r} live={self.session.live_count}>"

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        """Connect and authenticate once; fail fast instead of retrying the first time.

        Raises:
            AuthenticationError: the key was rejected.
            UpscaleTimeout: connecting or authenticating took too long.
            ConnectionLost: the server could not be reached.
        """
        ws = await self._open()
        self._auth_waiter = self._loop.create_future()
        self._supervisor = asyncio.create_task(self._supervise(ws), name="upscale-stream")
        try:
            await self._auth_waiter
        except BaseException:
            await self._stop_supervisor()
            raise
        finally:
            self._auth_waiter = None

    async def close(self, *, cancel: bool = False) -> None:
        """Finish (or, with ``cancel=True``, end) every live task, then close the socket.

        Draining waits at most ``timeouts.close``. Tasks still pending after
        ``cancel=True`` or a drain that ran out of time fail with
        :class:`~upscale_stream.errors.ClientClosed` (their exception is set first; a caller
        who did not cancel never sees ``CancelledError``).

        Raises:
            UpscaleTimeout: the drain ran out of time (``operation="close"``); the client is
                closed all the same.
        """
        if self._closing:
            return
        self._draining = True
        self.usable = False
        drain_timed_out = False
        if self._waiters and not cancel and self._fatal is None:
            self._drained = self._loop.create_future()
            try:
                await asyncio.wait_for(asyncio.shield(self._drained), self._timeouts.close)
            except TimeoutError:
                drain_timed_out = True
        self._closing = True
        self.usable = False
        self._forget_pending()  # their waiters are among those failed below
        pending = list(self._waiters)
        submitted = [self.session.submitted_at(key) for key in pending]
        self.session.close()
        reason = (
            f"the close drain ran out of time ({self._timeouts.close:g} s) before this task "
            "finished"
            if drain_timed_out
            else "the client was closed before this task finished"
        )
        for key, since in zip(pending, submitted, strict=True):
            error = ClientClosed(reason)
            self._resolve(key, None, error, self._attempts.get(key, 1), None, since)
        self._attempts.clear()
        self._slots.fail_waiters(ClientClosed("the client was closed while waiting for a slot"))
        self._cancel_timer()
        self._report_throttled()
        ws = self._ws
        if ws is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ws.close(), self._timeouts.close)
        await self._stop_supervisor()
        if drain_timed_out:
            raise UpscaleTimeout("close", seconds=self._timeouts.close)

    # -- the window ------------------------------------------------------------------------------

    async def acquire(self) -> None:
        """Take one slot of the in-flight window, waiting (FIFO) while it is full.

        Raises:
            ClientClosed: the connection is closed (or closes while waiting).
        """
        self._check_usable()
        await self._slots.acquire()

    @property
    def slots_used(self) -> int:
        """Window slots taken and not yet given back."""
        return self._slots.used

    # -- tasks -----------------------------------------------------------------------------------

    def submit(
        self,
        task_uuid: str,
        payload: bytes,
        waiter: Waiter,
        is_async: bool,
        timeout: float | None,
        job: Any = None,
        model: str = "",
    ) -> None:
        """Queue one encoded task; its ``waiter`` hears of its end exactly once.

        The submit path of ``upscale()``, ``submit()`` and ``upscale_many()`` (which hands
        image UUIDs over in batches: :meth:`submit_many`), after taking a window slot. A
        future as the waiter gets the result or the error (the ``upscale()`` case: nothing
        else is kept per task), and the connection gives its slot back when the task ends
        (or is cancelled); a callback is called as ``callback(task_uuid, result, error,
        attempts)`` inside the reader (or the timer), so it must be quick; an exception it
        raises is logged and swallowed, and its caller gives the slot back.

        Raises:
            ClientClosed: the connection is closed.
            InternalError: the core failed earlier.
            DuplicateTaskUUID: a live task already has this taskUUID.
        """
        if not self.usable:
            self._check_usable()
        if self._pending_keys:
            self._flush()  # upscale()'s tasks of this turn go first
        now = self._clock()
        self.session.submit(task_uuid, payload, now, is_async, timeout, job)
        self._waiters[task_uuid] = waiter
        self.metrics.task_submitted(task_uuid, model)
        if not self._writer_woken:  # one Event.set() per writer wake-up, not one per task
            self._writer_woken = True
            self._wake_writer.set()
        if self._timer is None:
            self._arm_timer()

    def submit_soon(
        self, task_uuid: str, payload: bytes, kind: tuple[bool, str]
    ) -> asyncio.Future[Any]:
        """:meth:`submit` for ``upscale()``'s tasks under a fresh random taskUUID with the
        default timeout, a future as the waiter (returned): the task joins the others
        submitted in this loop turn, and they reach the core together at the turn's end
        (:meth:`_flush`: one core call, one clock read, one metrics call and one writer
        wake-up for them all; the core sends nothing before the writer runs anyway).

        Args:
            task_uuid: A fresh taskUUID (:func:`~upscale_stream.models.new_task_uuid`): a
                caller's own goes through :meth:`submit`, which refuses a duplicate at once.
            payload: The encoded task.
            kind: ``(is_async, model)`` of the task (a template's ``kind``, compared by
                identity first): a task of another kind starts a batch of its own, after the
                earlier ones.

        Raises:
            ClientClosed: the connection is closed.
            InternalError: the core failed earlier.
        """
        if not self.usable:
            self._check_usable()
        future = self._new_future()
        self._waiters[task_uuid] = future
        keys = self._pending_keys
        if not keys:
            self._pending_kind = kind
            self._loop.call_soon(self._flush)
        elif kind is not self._pending_kind and kind != self._pending_kind:
            self._flush()  # one kind a batch: the earlier ones go first, in order
            self._pending_kind = kind
            self._loop.call_soon(self._flush)
            keys = self._pending_keys
        keys.append(task_uuid)
        self._pending_payloads.append(payload)
        return future

    def _flush(self) -> None:
        """Hand the core the tasks :meth:`submit_soon` holds, in one call (at the end of the
        loop turn they were submitted in, or before any other submit, to keep their order)."""
        keys = self._pending_keys
        if not keys:
            return
        payloads = self._pending_payloads
        self._pending_keys = []
        self._pending_payloads = []
        is_async, model = self._pending_kind
        try:
            twice = self.session.submit_many(keys, payloads, self._clock(), is_async, None)
        except Exception as exc:  # the core failed: every waiter fails, these included
            self._fail_safe(exc)
            return
        if twice:  # a fresh random taskUUID already live: impossible, but never lose a task
            for index in twice:
                self._resolve(keys[index], None, DuplicateTaskUUID(keys[index]), 1)
            skip = set(twice)
            keys = [key for i, key in enumerate(keys) if i not in skip]
        self._queued(keys, model)

    def _queued(self, keys: list[str], model: str) -> None:
        """Tasks went into the core's queue: count them, wake the writer (once until it runs)
        and arm the timer for their deadlines."""
        self.metrics.tasks_submitted(keys, model)
        if not self._writer_woken:
            self._writer_woken = True
            self._wake_writer.set()
        if self._timer is None:
            self._arm_timer()

    def _forget_pending(self) -> list[str]:
        """Drop the tasks :meth:`submit_soon` holds (their waiters are failed by the caller,
        with the others); returns their keys."""
        keys = self._pending_keys
        self._pending_keys = []
        self._pending_payloads = []
        return keys

    def submit_many(
        self,
        task_uuids: list[str],
        payloads: list[bytes],
        waiter: TaskCallback,
        is_async: bool,
        timeout: float | None,
        model: str = "",
    ) -> list[tuple[str, UpscaleError]]:
        """:meth:`submit` for several tasks (not of a job) with one callback, one slot each
        taken already: one clock read, one metrics call and one writer wake-up for them all.

        Returns:
            The tasks refused, with why (a live task already has that taskUUID); the others
            are queued.

        Raises:
            ClientClosed: the connection is closed (no task was queued).
            InternalError: the core failed earlier (no task was queued).
        """
        if not self.usable:
            self._check_usable()
        if self._pending_keys:
            self._flush()
        now = self._clock()
        twice = self.session.submit_many(task_uuids, payloads, now, is_async, timeout)
        refused: list[tuple[str, UpscaleError]] = []
        if twice:
            refused = [(task_uuids[i], DuplicateTaskUUID(task_uuids[i])) for i in twice]
            skip = set(twice)
            task_uuids = [key for i, key in enumerate(task_uuids) if i not in skip]
        self._waiters.update(dict.fromkeys(task_uuids, waiter))
        self._queued(task_uuids, model)
        return refused

    def cancel(self, task_uuid: str) -> bool:
        """Forget a task: never sent if still queued, its late answer ignored otherwise.

        Its callback is not called. Returns whether the task was live.
        """
        waiter = self._waiters.pop(task_uuid, None)
        if waiter is None:
            return False
        if isinstance(waiter, _Future):
            self._slots.release()  # a future's slot is the connection's to give back
        self.metrics.task_forgotten(task_uuid)
        if self._attempts:
            self._attempts.pop(task_uuid, None)
        if not self.session.cancel(task_uuid) and task_uuid in self._pending_keys:
            index = self._pending_keys.index(task_uuid)  # not handed to the core yet
            del self._pending_keys[index]
            del self._pending_payloads[index]
        self._check_drained()
        return True

    def _check_usable(self) -> None:
        if self._closing or self._draining:
            raise ClientClosed("the client is closed; create a new one")
        if self._fatal is not None:
            raise self._fatal

    def _resolve(
        self,
        key: str,
        result: Any,
        error: UpscaleError | None,
        attempts: int,
        now: float | None = None,
        submitted: float | None = None,
    ) -> None:
        """End the task ``key``: metrics, then its waiter (``now``: the caller's clock read;
        ``submitted``: the task's submit time, as the core kept it)."""
        waiter = self._waiters.pop(key, None)
        if waiter is None:
            return
        when = self._clock() if now is None else now
        self.metrics.task_resolved(key, error, when, submitted)
        if isinstance(waiter, _Future):
            self._settle(waiter, result, error)
            self._slots.release()
            return
        try:
            waiter(key, result, error, attempts)
        except Exception:
            log.exception("task callback failed", task_uuid=key)

    @staticmethod
    def _settle(future: asyncio.Future[Any], result: Any, error: UpscaleError | None) -> None:
        """Give a waiting future its task's result or error (unless its caller gave up)."""
        if not future.done():
            if error is None:
                future.set_result(result)
            else:
                future.set_exception(error)

    def _check_drained(self) -> None:
        drained = self._drained
        if drained is not None and not self._waiters and not drained.done():
            drained.set_result(None)

    @property
    def in_flight(self) -> int:
        """Tasks submitted and not yet resolved."""
        return len(self._waiters)

    def _live_figures(self) -> Live:
        session = self.session
        queued = session.queued_count + len(self._pending_keys)
        return Live(
            queued=queued,
            in_flight=max(0, len(self._waiters) - queued),
            window=self.window.size,
            retried=self.retries,
            resent=session.resent_count,
            replayed=session.replayed_count,
            fetched=session.fetched_count,
        )

    # -- the socket ------------------------------------------------------------------------------

    async def _open(self) -> Socket:
        limits = self.session.limits
        if self._transport == "picows":
            from .picows_socket import open_picows  # the fast extra, imported only when chosen

            return await open_picows(
                self.url,
                open_timeout=self._timeouts.connect,
                max_size=limits.max_message_size,
                ssl=self._ssl,
                user_agent=f"upscale-stream/{_version()}",
            )
        try:
            return await connect(
                self.url,
                open_timeout=self._timeouts.connect,
                close_timeout=min(self._timeouts.close, 5.0),
                ping_interval=None,  # the application ping is the protocol's heartbeat
                max_size=limits.max_message_size,
                compression="deflate" if limits.compression else None,
                ssl=self._ssl if self.url.startswith("wss://") else None,
                write_limit=1024 * 1024,
                max_queue=64,
                user_agent_header=f"upscale-stream/{_version()}",
                logger=websockets_logger(),  # its DEBUG frame log would show the auth frame
            )
        except TimeoutError as exc:
            raise UpscaleTimeout("connect", seconds=self._timeouts.connect) from exc
        except InvalidStatus as exc:
            raise handshake_refused(exc.response.status_code) from exc
        except InvalidURI as exc:
            shown = self.url.partition("?")[0]
            raise InvalidURL(f"url={shown!r} is not a valid WebSocket URL") from exc
        except (OSError, websockets.exceptions.WebSocketException) as exc:
            raise ConnectionLost(f"could not connect to {self.url}: {exc}") from exc

    async def _supervise(self, ws: Socket) -> None:
        backoff = self._backoff
        while True:
            reason = await self._serve(ws)
            if self._closing or self._fatal is not None:
                return
            try:
                plan = self.session.connection_lost(self._loop.time())
            except Exception as exc:
                self._fail_safe(exc)
                return
            self._arm_timer()
            log.warning(
                "connection lost",
                reason=reason,
                session_id=plan.session_id,
                awaiting_replay=len(plan.awaiting_replay),
                polling=len(plan.polling),
                unsent=len(plan.unsent),
            )
            if self._auth_waiter is not None and not self._auth_waiter.done():
                self._auth_waiter.set_exception(ConnectionLost(f"lost during auth: {reason}"))
                return
            while True:
                delay = backoff.next_delay()  # a connection that never proved healthy counts
                if backoff.exhausted():
                    limit = self._retry.max_attempts
                    self._give_up(
                        ConnectionLost(
                            f"gave up after {limit} consecutive failed connections; last: {reason}"
                        )
                    )
                    return
                log.info(
                    "reconnecting", attempt=backoff.failures, delay=round(delay, 3), url=self.url
                )
                await asyncio.sleep(delay)  # real backoff between attempts, not synchronisation
                try:
                    ws = await self._open()
                except UpscaleError as exc:
                    final = process_exception(exc)
                    if final is not None:
                        self._give_up(final if isinstance(final, UpscaleError) else exc)
                        return
                    reason = str(exc)
                    log.info("reconnect failed", attempt=backoff.failures, error=reason)
                    continue
                self.reconnects += 1
                self.metrics.reconnected()
                break

    async def _serve(self, ws: Socket) -> str:
        """Authenticate on ``ws`` and read until it ends; return why it ended."""
        self._ws = ws
        self._healthy_from = math.inf
        self._proven = False
        loop = self._loop
        session = self.session
        try:
            session.authenticate(self._api_key, loop.time())
        except Exception as exc:
            self._fail_safe(exc)
            ws.transport.abort()
            return "internal error"
        self._wake_writer.set()
        self._arm_timer()
        writer = asyncio.create_task(self._write_loop(ws), name="upscale-stream-writer")
        received = self.metrics.frame_received  # bound once: this loop runs once per frame
        process = self._process
        clock = self._clock
        recv = ws.recv
        # A burst of buffered frames is read without the loop ever getting back to the callers
        # the results woke: recv() returns at once while frames are queued. So the reader steps
        # aside once it has freed a frame's worth of slots (or read 64 frames), and callers can
        # refill the window and the writer send while the burst is still being read.
        refill = session.limits.max_batch
        freed = frames = 0
        try:
            while True:
                message = await recv(decode=False)
                received(len(message))
                now = clock()
                session.receive_text(message, now)  # looked up each time: tests patch it
                freed += process(now)
                frames += 1
                if freed >= refill or frames >= 64:
                    freed = frames = 0
                    await asyncio.sleep(0)
        except ConnectionClosed as exc:
            return _close_reason(exc)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the core or the shell failed: never go on, never reconnect
            self._fail_safe(exc)
            return f"internal error: {exc!r}"
        finally:
            self._ws = None
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await writer
            if ws.transport is not None:
                ws.transport.abort()

    async def _write_loop(self, ws: Socket) -> None:
        metrics = self.metrics
        wake = self._wake_writer
        session = self.session
        while True:
            await wake.wait()
            wake.clear()
            self._writer_woken = False
            try:
                frames = session.data_to_send(self._clock())
            except Exception as exc:
                self._fail_safe(exc)
                return
            try:
                for frame in frames:
                    await ws.send(frame, text=True)
                    metrics.frame_sent(len(frame))
            except ConnectionClosed:
                return  # the reader sees the same close and handles it
            except Exception as exc:
                # A writer that dies must not leave the link silently deaf: drop the socket
                # now, so the reader ends and the supervisor reconnects (frames in flight are
                # resent after the resume grace, with their taskUUIDs).
                log.warning("writing failed; dropping the connection", error=repr(exc))
                self._drop()
                return
            if frames:
                self.frames_sent += len(frames)
                self._arm_timer()

    # -- events ----------------------------------------------------------------------------------

    def _process(self, now: float) -> int:
        """Act on the core's events (of the input or timer call made at ``now``: one clock
        read for the whole batch); returns how many tasks ended with a result."""
        waiters = self._waiters
        window = self.window
        attempts = self._attempts
        task_result = TaskResult
        future = _Future
        answered: list[TaskResult] = []  # one metrics call for the batch
        grew = False  # the window grew (on_success is the one thing that grows it)
        growing = window.limit < window.maximum
        freed = 0  # the futures' slots, given back in one call after the loop
        for event in self.session.events_received():
            if type(event) is task_result:
                # The hot path (one result per task), _resolve's success case in line: the
                # metrics for the whole batch follow the loop.
                key = event.task_uuid
                waiter = waiters.pop(key, None)
                if waiter is None:
                    continue
                answered.append(event)
                tries = attempts.pop(key, 1) if attempts else 1  # for every waiter: no leak
                if type(waiter) is future:
                    freed += 1
                    try:  # noqa: SIM105 (suppress() is a context manager a task; try is free)
                        waiter.set_result(event.result)
                    except _InvalidState:  # its caller gave up already (a cancelled wait)
                        pass
                elif type(waiter) is _Method or not isinstance(waiter, future):  # a callback
                    try:
                        waiter(key, event.result, None, tries)
                    except Exception:
                        log.exception("task callback failed", task_uuid=key)
                else:  # a Future subclass
                    self._settle(waiter, event.result, None)
                    freed += 1
                if growing:
                    window.on_success()
                    grew = True
                    growing = window.limit < window.maximum
            elif type(event) is TaskFailed:
                if self._attempts:
                    self._attempts.pop(event.task_uuid, None)
                self._resolve(
                    event.task_uuid, None, event.error, event.attempts, now, event.submitted
                )
            else:
                self._session_event(event)
        if freed:
            self._slots.release(freed)
        if answered:
            self.metrics.tasks_succeeded(answered, now)
        if answered and not self._proven and now >= self._healthy_from:
            self._healthy()
        if self._drained is not None:
            self._check_drained()
        session = self.session
        if grew:  # room for more tasks: on the wire, and for callers waiting for a slot
            session.send_limit = int(window.limit)
            if self._slots.waiting:
                self._slots.grant()
        if not self._writer_woken and session.wants_write:  # one wake-up until the writer runs
            self._writer_woken = True
            self._wake_writer.set()
        if self._timer is None or session.deadline_version != self._armed_version:
            self._arm_timer()  # (_arm_timer's own first test, in line: once per frame)
        return len(answered)

    def _healthy(self) -> None:
        """A pong or a result arrived ``healthy_after`` or more past the authentication:
        the connection is proven (the reconnect backoff starts over after its next drop)."""
        self._proven = True
        self._backoff.healthy()

    def _session_event(self, event: object) -> None:
        match event:
            case TaskRetrying():
                self.retries += 1
                self._attempts[event.task_uuid] = event.attempt
                if event.rate_limited:
                    self.rate_limited += 1
                    if self.window.on_rate_limited(event.sent_seq, self.session.tasks_sent):
                        self.session.send_limit = self.window.size
                self._warn(
                    "rate_limited" if event.rate_limited else "task_retry",
                    "task answered with a transient error; retrying",
                    code=event.error.code,
                    task_uuid=event.old_uuid,
                    next_task_uuid=event.new_uuid,
                    attempt=event.attempt,
                    delay=round(event.delay, 3),
                    window=self.window.size,
                )
            case Authenticated(session_id=session_id, resumed=resumed):
                log.info("authenticated", session_id=session_id, resumed=resumed)
                self._healthy_from = self._clock() + self._retry.healthy_after
                if self._auth_waiter is not None and not self._auth_waiter.done():
                    self._auth_waiter.set_result(None)
            case AuthRejected(error=error):
                log.error("authentication rejected", code=error.code, message=error.message)
                self._give_up(error)
            case AuthTimedOut(seconds=seconds):
                log.warning("authentication timed out", seconds=seconds)
                timeout = UpscaleTimeout("authentication", seconds=seconds)
                if self._auth_waiter is not None and not self._auth_waiter.done():
                    self._auth_waiter.set_exception(timeout)
                self._drop()
            case HeartbeatMissed(seconds=seconds):
                ws = self._ws
                backlog = _unread(ws) if ws is not None else 0
                if backlog:
                    # Messages arrived that we have not read yet (a starved event loop): the
                    # link is alive; the core pings again with a fresh deadline.
                    log.info("pong late, but the link delivers", backlog=backlog)
                    return
                log.warning("heartbeat missed; dropping the connection", seconds=round(seconds, 3))
                self._drop()
            case TaskAccepted(task_uuid=uuid):
                log.debug("task acknowledged", task_uuid=uuid)
            case Pong(rtt=rtt):
                log.debug("pong", rtt_ms=round(rtt * 1000, 2))
                if not self._proven and self._clock() >= self._healthy_from:
                    self._healthy()
            case StrayError(error=error):
                self._warn(
                    "stray_error",
                    "error item without a task",
                    code=error.code,
                    message=error.message,
                )
            case Discarded(task_uuid=uuid, reason=reason):
                log.debug("item discarded", task_uuid=uuid, reason=reason)
            case MalformedMessage(reason=reason, sample=sample):
                self._warn("malformed", "malformed message ignored", reason=reason, sample=sample)

    def _warn(self, kind: str, event: str, **fields: Any) -> None:
        """A WARNING line, rate-limited per kind (see :class:`~upscale_stream.log.Throttle`)."""
        held = self._throttle.allow(kind, self._loop.time())
        if held is None:
            return
        if held:
            fields["suppressed"] = held
        log.warning(event, **fields)

    def _report_throttled(self) -> None:
        for kind, held in self._throttle.flush().items():
            log.warning("repeated warnings held back", kind=kind, suppressed=held)

    def _drop(self) -> None:
        ws = self._ws
        if ws is not None and ws.transport is not None:
            ws.transport.abort()

    def _give_up(self, error: UpscaleError) -> None:
        """A final failure: fail every live task and stop reconnecting."""
        if self._fatal is not None:
            return
        self._fatal = error
        self.usable = False
        if self._auth_waiter is not None and not self._auth_waiter.done():
            self._auth_waiter.set_exception(error)
        never_sent = set(self._forget_pending())
        if isinstance(error, ConnectionLost):
            never_sent.update(
                uuid for uuid in self._waiters if self.session.state_of(uuid) is TaskState.QUEUED
            )
        submitted = {uuid: self.session.submitted_at(uuid) for uuid in self._waiters}
        self.session.close()
        for uuid in list(self._waiters):
            if isinstance(error, ConnectionLost):
                unsent = [uuid] if uuid in never_sent else []
                task_error: UpscaleError = ConnectionLost(error.reason, unsent_task_uuids=unsent)
                task_error.__cause__ = error.__cause__
            else:
                task_error = error
            attempts = self._attempts.get(uuid, 1)
            self._resolve(uuid, None, task_error, attempts, None, submitted.get(uuid))
        self._attempts.clear()
        self._slots.fail_waiters(error)
        self._check_drained()
        self._cancel_timer()
        self._drop()

    def _fail_safe(self, exc: BaseException) -> None:
        """The one guard of reader, writer and timer: an unexpected exception ends the client.

        The core is in its ERROR state (or the shell is in an unknown one): every pending task
        fails with one :class:`~upscale_stream.errors.InternalError` carrying the cause, the
        socket is closed and nothing reconnects.
        """
        if self._fatal is not None:
            return
        if isinstance(exc, InternalError):
            error = exc
        else:
            error = InternalError(f"unexpected error in the client: {exc!r}")
            error.__cause__ = exc
        scrub_exception(error)  # a bug's message must not carry the key to every caller
        log.error(
            "internal error; closing the client", error=repr(error.__cause__ or exc), exc_info=exc
        )
        self._give_up(error)

    # -- the timer -------------------------------------------------------------------------------

    def _arm_timer(self) -> None:
        session = self.session
        if self._timer is not None and session.deadline_version == self._armed_version:
            return  # nothing moved earlier; the armed timer re-arms itself when it fires
        self._armed_version = session.deadline_version
        deadline = session.next_deadline()
        if deadline is None:
            self._cancel_timer()
            return
        if self._timer is not None:
            if self._timer_when <= deadline:
                return  # fires earlier; it re-arms for the real deadline then
            self._timer.cancel()
        self._timer_when = deadline
        self._timer = self._loop.call_at(deadline, self._on_timer)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _on_timer(self) -> None:
        self._timer = None
        if self._fatal is not None or self._closing:
            return
        try:
            now = self._clock()
            self.session.handle_timer(now)
            self._process(now)
        except Exception as exc:
            self._fail_safe(exc)

    async def _stop_supervisor(self) -> None:
        task = self._supervisor
        self._supervisor = None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def _unread(ws: Socket) -> int:
    """Messages that arrived on ``ws`` and are not read yet."""
    if isinstance(ws, ClientConnection):
        return len(ws.recv_messages.frames)
    return ws.unread


def _close_reason(exc: ConnectionClosed) -> str:
    if exc.rcvd is not None:
        reason = f" ({exc.rcvd.reason})" if exc.rcvd.reason else ""
        return f"closed by the server with code {exc.rcvd.code}{reason}"
    return "connection dropped without a close frame"


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("upscale-stream")
    except PackageNotFoundError:
        return "0"
