"""The I/O shell: the only module that touches the socket.

:class:`Connection` drives one :class:`~upscale_stream.protocol.ClientSession` over websockets:

* a **supervisor** task connects, runs the reader until the socket ends, then reconnects with
  backoff (:func:`~upscale_stream.protocol.backoff`) unless the failure is final
  (:func:`is_retryable`);
* a **writer** task wakes up once per event-loop turn after new output was queued, so every
  ``submit()`` made in the same turn leaves in the same frame (no fixed sleep);
* **one timer** (``loop.call_at``) armed at the core's next deadline, for heartbeats, polls,
  resume grace and task timeouts; there is no timer per task;
* **futures by taskUUID** live here only. Every future ends: with its result, its error, or
  :class:`~upscale_stream.errors.ConnectionLost` / :class:`~upscale_stream.errors.ClientClosed`.

Low-level errors (OSError, websockets' exceptions, timeouts) are translated here, in one place.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import random
import ssl as ssl_module
from collections.abc import Callable
from typing import Any

import websockets
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus, InvalidURI

from .config import Retry, Timeouts
from .errors import (
    AuthenticationError,
    ClientClosed,
    ConnectionLost,
    UpscaleError,
    UpscaleTimeout,
)
from .log import get_logger, register_secret, websockets_logger
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
    TaskState,
    backoff,
)

__all__ = ["Connection", "is_retryable"]

log = get_logger(__name__)

ResultFactory = Callable[[dict[str, Any]], Any]
TaskCallback = Callable[[str, Any, "UpscaleError | None"], None]
"""``callback(task_uuid, result, error)``: exactly one of ``result`` and ``error`` is set."""


def is_retryable(exc: BaseException) -> bool:
    """The one reconnect policy: a rejected key or a bad URL is final; anything else is retried.

    HTTP 401/403 at the handshake count as a rejected key.
    """
    if isinstance(exc, AuthenticationError | ClientClosed | InvalidURI):
        return False
    if isinstance(exc, InvalidStatus):
        return exc.response.status_code not in (401, 403)
    return True


class Connection:
    """One logical connection: a socket that is replaced after drops, around one session.

    Args:
        session: The pure core that holds the tasks.
        url: ``ws://`` or ``wss://`` endpoint.
        api_key: Sent in the authentication frame only; registered for log redaction.
        timeouts: Connect, auth and close limits.
        retry: Reconnect policy.
        result_factory: Turns a result item (dict) into the value a future resolves with.
        release: Called once per submitted task when its future is done (frees a window slot).
        ssl_context: TLS settings for ``wss://`` (``None``: verify with the system's CAs).
        rng: Randomness for backoff jitter (tests pass a seeded one).
        clock: The event loop's clock unless given.
    """

    def __init__(
        self,
        session: ClientSession,
        *,
        url: str,
        api_key: str,
        timeouts: Timeouts,
        retry: Retry,
        result_factory: ResultFactory,
        release: Callable[[], None] = lambda: None,
        ssl_context: ssl_module.SSLContext | None = None,
        rng: random.Random | None = None,
    ) -> None:
        register_secret(api_key)
        self.session = session
        self.url = url
        self._api_key = api_key
        self._timeouts = timeouts
        self._retry = retry
        self._result_factory = result_factory
        self._release = release
        self._ssl = ssl_context
        self._rng = rng or random.Random()
        self._loop = asyncio.get_running_loop()
        self._waiters: dict[str, asyncio.Future[Any] | TaskCallback] = {}
        self._future_type = type(self._loop.create_future())
        self._drained: asyncio.Future[None] | None = None
        self._ws: ClientConnection | None = None
        self._wake_writer = asyncio.Event()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_when = 0.0
        self._armed_version = -1
        self._supervisor: asyncio.Task[None] | None = None
        self._auth_waiter: asyncio.Future[None] | None = None
        self._fatal: UpscaleError | None = None
        self._closing = False
        self._draining = False
        self._authenticated_since_drop = False
        self.reconnects = 0
        self.frames_sent = 0

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
        """Finish (or, with ``cancel=True``, cancel) every live task, then close the socket.

        Draining waits at most ``timeouts.close``; tasks still live then are cancelled.
        """
        if self._closing:
            return
        self._draining = True
        if self._waiters and not cancel and self._fatal is None:
            self._drained = self._loop.create_future()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._drained), self._timeouts.close)
        self._closing = True
        self.session.close()
        closed = ClientClosed("the client was closed before this task finished")
        for uuid in list(self._waiters):
            self._resolve(uuid, None, closed, cancel_futures=True)
        self._cancel_timer()
        ws = self._ws
        if ws is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ws.close(), self._timeouts.close)
        await self._stop_supervisor()

    # -- tasks -----------------------------------------------------------------------------------

    def submit(
        self,
        task_uuid: str,
        payload: bytes,
        *,
        is_async: bool,
        timeout: float | None,
        watch: bool = True,
    ) -> asyncio.Future[Any]:
        """Queue one encoded task and return the future of its result.

        With ``watch`` (the default), cancelling the future cancels the task and every done
        future calls ``release``. A caller that awaits the future itself may pass
        ``watch=False`` to save that callback; it must then call :meth:`cancel` when it stops
        waiting and free its own window slot.

        Raises:
            ClientClosed: the connection is closed.
            ValueError: a live task already has this taskUUID.
        """
        self._enqueue(task_uuid, payload, is_async, timeout)
        future: asyncio.Future[Any] = self._loop.create_future()
        self._waiters[task_uuid] = future
        if watch:
            future.add_done_callback(functools.partial(self._future_done, task_uuid))
        return future

    def submit_callback(
        self,
        task_uuid: str,
        payload: bytes,
        callback: TaskCallback,
        *,
        is_async: bool,
        timeout: float | None,
    ) -> None:
        """Queue one encoded task; ``callback(task_uuid, result, error)`` runs once when it ends.

        The bulk path: no future and no scheduled callback per task. The callback runs inside
        the reader, so it must be quick and must not raise (an exception is logged).
        """
        self._enqueue(task_uuid, payload, is_async, timeout)
        self._waiters[task_uuid] = callback

    def cancel(self, task_uuid: str) -> None:
        """Forget a task: never sent if still queued, its late answer ignored otherwise."""
        if self._waiters.pop(task_uuid, None) is not None:
            self.session.cancel(task_uuid)
            self._check_drained()

    def _enqueue(
        self, task_uuid: str, payload: bytes, is_async: bool, timeout: float | None
    ) -> None:
        if self._closing or self._draining:
            raise ClientClosed("the client is closed; create a new one")
        if self._fatal is not None:
            raise self._fatal
        self.session.submit(
            task_uuid, payload, self._loop.time(), is_async=is_async, timeout=timeout
        )
        self._wake_writer.set()
        if self._timer is None:
            self._arm_timer()

    def _future_done(self, task_uuid: str, future: asyncio.Future[Any]) -> None:
        self._release()
        if future.cancelled() and self._waiters.get(task_uuid) is future:
            # The caller gave up: free the task in the core so it is never sent, or its late
            # answer is ignored.
            del self._waiters[task_uuid]
            self.session.cancel(task_uuid)
            self._check_drained()

    def _resolve(
        self,
        task_uuid: str,
        result: Any,
        error: UpscaleError | None,
        *,
        cancel_futures: bool = False,
    ) -> None:
        waiter = self._waiters.pop(task_uuid, None)
        if waiter is None:
            return
        if waiter.__class__ is self._future_type:
            future: asyncio.Future[Any] = waiter
            if future.done():
                return
            if cancel_futures:
                future.cancel()
            elif error is None:
                future.set_result(result)
            else:
                future.set_exception(error)
            return
        try:
            waiter(task_uuid, result, error)  # type: ignore[operator]
        except Exception:
            log.exception("task callback failed", task_uuid=task_uuid)

    def _check_drained(self) -> None:
        drained = self._drained
        if drained is not None and not self._waiters and not drained.done():
            drained.set_result(None)

    @property
    def in_flight(self) -> int:
        """Tasks submitted and not yet resolved."""
        return len(self._waiters)

    # -- the socket ------------------------------------------------------------------------------

    async def _open(self) -> ClientConnection:
        limits = self.session.limits
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
            status = exc.response.status_code
            if status in (401, 403):
                raise AuthenticationError(
                    "unauthorized",
                    f"the server refused the handshake with HTTP {status}",
                    parameter="apiKey",
                ) from exc
            raise ConnectionLost(f"handshake refused with HTTP {status}") from exc
        except InvalidURI as exc:
            raise UpscaleError(f"url={self.url!r} is not a valid WebSocket URL") from exc
        except (OSError, websockets.exceptions.WebSocketException) as exc:
            raise ConnectionLost(f"could not connect to {self.url}: {exc}") from exc

    async def _supervise(self, ws: ClientConnection) -> None:
        delays = backoff(self._rng, self._retry)
        failures = 0
        while True:
            reason = await self._serve(ws)
            if self._closing or self._fatal is not None:
                return
            plan = self.session.connection_lost(self._loop.time())
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
            if self._authenticated_since_drop:  # delays restart after a successful auth
                delays = backoff(self._rng, self._retry)
                failures = 0
                self._authenticated_since_drop = False
            while True:
                failures += 1
                limit = self._retry.max_attempts
                if limit is not None and failures > limit:
                    self._give_up(ConnectionLost(f"gave up after {limit} reconnect attempts"))
                    return
                delay = next(delays)
                log.info("reconnecting", attempt=failures, delay=round(delay, 3), url=self.url)
                await asyncio.sleep(delay)  # real backoff between attempts, not synchronisation
                try:
                    ws = await self._open()
                except UpscaleError as exc:
                    if not is_retryable(exc):
                        self._give_up(exc)
                        return
                    log.info("reconnect failed", attempt=failures, error=str(exc))
                    continue
                self.reconnects += 1
                break

    async def _serve(self, ws: ClientConnection) -> str:
        """Authenticate on ``ws`` and read until it ends; return why it ended."""
        self._ws = ws
        self.session.authenticate(self._api_key, self._loop.time())
        self._wake_writer.set()
        self._arm_timer()
        writer = asyncio.create_task(self._write_loop(ws), name="upscale-stream-writer")
        session = self.session
        loop = self._loop
        try:
            while True:
                message = await ws.recv(decode=False)
                session.receive_text(message, loop.time())
                self._process()
        except ConnectionClosed as exc:
            return _close_reason(exc)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug in the core: close, never go on in an unknown state
            log.exception("internal error; dropping the connection")
            return f"internal error: {exc!r}"
        finally:
            self._ws = None
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await writer
            if ws.transport is not None:
                ws.transport.abort()

    async def _write_loop(self, ws: ClientConnection) -> None:
        wake = self._wake_writer
        session = self.session
        loop = self._loop
        try:
            while True:
                await wake.wait()
                wake.clear()
                frames = session.data_to_send(loop.time())
                for frame in frames:
                    await ws.send(frame, text=True)
                if frames:
                    self.frames_sent += len(frames)
                    self._arm_timer()
        except ConnectionClosed:
            return  # the reader sees the same close and handles it

    # -- events ----------------------------------------------------------------------------------

    def _process(self) -> None:
        factory = self._result_factory
        resolve = self._resolve
        for event in self.session.events_received():
            if type(event) is TaskResult:
                try:
                    result = factory(event.item)
                except Exception as exc:  # a result we cannot read fails its task only
                    error = UpscaleError(f"task {event.task_uuid}: unreadable result: {exc}")
                    resolve(event.task_uuid, None, error)
                else:
                    resolve(event.task_uuid, result, None)
            elif type(event) is TaskFailed:
                resolve(event.task_uuid, None, event.error)
            else:
                self._session_event(event)
        if self._drained is not None:
            self._check_drained()
        if self.session.wants_write:
            self._wake_writer.set()
        self._arm_timer()

    def _session_event(self, event: object) -> None:
        match event:
            case Authenticated(session_id=session_id, resumed=resumed):
                log.info("authenticated", session_id=session_id, resumed=resumed)
                self._authenticated_since_drop = True
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
                log.warning("heartbeat missed; dropping the connection", seconds=round(seconds, 3))
                self._drop()
            case TaskAccepted(task_uuid=uuid):
                log.debug("task acknowledged", task_uuid=uuid)
            case Pong(rtt=rtt):
                log.debug("pong", rtt_ms=round(rtt * 1000, 2))
            case StrayError(error=error):
                log.warning("error item without a task", code=error.code, message=error.message)
            case Discarded(task_uuid=uuid, reason=reason):
                log.debug("item discarded", task_uuid=uuid, reason=reason)
            case MalformedMessage(reason=reason, sample=sample):
                log.warning("malformed message ignored", reason=reason, sample=sample)

    def _drop(self) -> None:
        ws = self._ws
        if ws is not None and ws.transport is not None:
            ws.transport.abort()

    def _give_up(self, error: UpscaleError) -> None:
        """A final failure: fail every live task and stop reconnecting."""
        self._fatal = error
        if self._auth_waiter is not None and not self._auth_waiter.done():
            self._auth_waiter.set_exception(error)
        never_sent = {
            uuid for uuid in self._waiters if self.session.state_of(uuid) is TaskState.QUEUED
        }
        self.session.close()
        for uuid in list(self._waiters):
            if isinstance(error, ConnectionLost):
                unsent = [uuid] if uuid in never_sent else []
                self._resolve(uuid, None, ConnectionLost(error.reason, unsent_task_uuids=unsent))
            else:
                self._resolve(uuid, None, error)
        self._check_drained()
        self._cancel_timer()
        self._drop()

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
        self.session.handle_timer(self._loop.time())
        self._process()

    async def _stop_supervisor(self) -> None:
        task = self._supervisor
        self._supervisor = None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


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
