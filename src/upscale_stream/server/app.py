"""The reference server: a websockets server that speaks the Runware upscale protocol.

:class:`ReferenceServer` owns the listening socket, the shared state (sessions and task
registry, image store, fault knobs, counters), the worker threads for image work and the
background tasks. Each accepted socket is served by a :class:`~.client_socket.ClientSocket`; plain
HTTP requests on the same port are answered by :mod:`.routes`.

Usage from a test::

    config = ServerConfig(api_keys=frozenset({"test-key"}), port=0)
    async with ReferenceServer(config) as server:
        ...  # connect to server.url; inspect server.received, server.executions
        await server.wait_executions(20, timeout=10)

From synchronous code (the demo, the CLI's embedded mode)::

    with ReferenceServer(config).run_in_thread() as url:
        ...
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import http
import logging
import threading
import traceback
from collections import Counter
from collections.abc import Callable, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from types import TracebackType
from typing import Any, Self, TypeVar

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.http11 import Request, Response

from ..log import get_logger, register_secret
from .auth_guard import AuthGuard
from .client_socket import ClientSocket
from .config import ServerConfig
from .engines import get_engine
from .faults import Faults
from .handlers import TaskHandlers
from .image_store import ImageStore
from .pages import page_response
from .routes import http_response, is_upgrade, plain_response
from .sessions import Session, SessionRegistry, TaskCounts
from .status import StatusBoard

__all__ = ["ReferenceServer"]

T = TypeVar("T")

log = get_logger(__name__)

# websockets logs every frame at DEBUG, authentication frames (and their keys) included. The
# server gives it a logger of its own that never goes below INFO, whatever the root level.
_websockets_log = logging.getLogger("upscale_stream.server.websockets")
_websockets_log.setLevel(logging.INFO)


class _Waiters:
    """Futures waiting for a condition on the server's state, re-checked on every change."""

    def __init__(self) -> None:
        self._waiting: list[tuple[Callable[[], bool], asyncio.Future[None]]] = []

    def notify(self) -> None:
        for condition, future in list(self._waiting):
            if not future.done() and condition():
                future.set_result(None)

    async def wait_for(self, condition: Callable[[], bool], timeout: float, what: str) -> None:
        if condition():
            return
        future = asyncio.get_running_loop().create_future()
        entry = (condition, future)
        self._waiting.append(entry)
        try:
            async with asyncio.timeout(timeout):
                await future
        except TimeoutError:
            raise TimeoutError(f"timed out after {timeout:g} s waiting for {what}") from None
        finally:
            self._waiting.remove(entry)


class ReferenceServer:
    """A local stand-in for ``wss://ws-api.runware.ai/v1`` that really upscales.

    Use it with ``async with`` (or :meth:`start` / :meth:`stop`), :meth:`serve_forever` or
    :meth:`run_in_thread`.

    Args:
        config: The server's configuration.
        faults: Fault knobs to start with (default: all off, seeded with
            ``config.fault_seed``). Mutate ``server.faults`` at any time.

    Attributes:
        config: The configuration.
        faults: The fault-injection knobs (see :class:`~.faults.Faults`).
        registry: Sessions, held answers and the task registry
            (:class:`~.sessions.SessionRegistry`).
        images: Uploaded, input and output images.
        counts: Received and executed tasks, authentications.
    """

    def __init__(self, config: ServerConfig, *, faults: Faults | None = None) -> None:
        self.config = config
        self.faults = faults if faults is not None else Faults(seed=config.fault_seed)
        self.registry = SessionRegistry(hold_time=config.hold_time, retention=config.retention)
        self.images = ImageStore(config.image_store_bytes)
        self.counts = TaskCounts(max_keys=config.max_counted_uuids)
        self.status = StatusBoard(config.clock)  # the figures of /status and /status.json
        self.auth_guard = AuthGuard(
            burst=config.auth_failure_burst, per_minute=config.auth_failures_per_minute
        )
        self.handlers = TaskHandlers(self)
        self._connections: set[ClientSocket] = set()
        self._carriers: dict[str, ClientSocket] = {}
        self._background: set[asyncio.Task[None]] = set()
        self._waiters = _Waiters()
        self._server: Server | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._restarting = 0
        self._host = config.host
        self._port: int | None = None

    # -- addresses and counters --------------------------------------------------------------

    @property
    def port(self) -> int:
        """The bound TCP port (the real one when the configured port is 0)."""
        if self._port is None:
            raise RuntimeError("the server is not started: use 'async with' or start()")
        return self._port

    @property
    def url(self) -> str:
        """The WebSocket URL, for example ``ws://127.0.0.1:8765/v1``."""
        return f"ws://{_display_host(self._host)}:{self.port}/v1"

    @property
    def http_url(self) -> str:
        """The HTTP base URL of the same port, for example ``http://127.0.0.1:8765``."""
        return f"http://{_display_host(self._host)}:{self.port}"

    @property
    def image_base_url(self) -> str:
        """Base of the ``imageURL`` values: ``config.public_url`` or :attr:`http_url`."""
        return (self.config.public_url or self.http_url).rstrip("/")

    @property
    def received(self) -> Counter[str]:
        """Tasks received, by ``taskUUID`` (authentication, ping, getResponse excluded)."""
        return self.counts.received

    @property
    def executions(self) -> Counter[str]:
        """Task executions started, by ``taskUUID``."""
        return self.counts.executions

    @property
    def connection_count(self) -> int:
        """Open WebSocket connections (authenticated or not)."""
        return len(self._connections)

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Bind the port and start serving. Then read :attr:`url`.

        Raises:
            EngineUnavailable: ``config.engine`` cannot run here (the ``sr`` extra is missing).
        """
        if self._server is not None:
            raise RuntimeError("the server is already started")
        config = self.config
        get_engine(config.engine)  # a missing sr extra fails here, not at the first task
        for key in config.api_keys:
            register_secret(key)
        self._executor = ThreadPoolExecutor(
            max_workers=config.workers, thread_name_prefix="upscale-server"
        )
        try:
            self._server = await serve(
                self._serve_connection,
                config.host,
                config.port,
                process_request=self._process_request,
                compression="deflate" if config.compression else None,
                ping_interval=None,
                max_size=config.max_size,
                close_timeout=config.close_timeout,
                logger=_websockets_log,
            )
        except BaseException:
            # Nothing is listening (port in use, unknown host): leave no worker threads behind.
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None
            raise
        self._port = int(self._server.sockets[0].getsockname()[1])
        self._sweeper = asyncio.create_task(self._sweep())
        if config.accept_any_key:
            log.warning(
                "server.accepting_any_api_key",
                detail="development mode: EVERY API key is accepted; never expose this server",
            )
        auth = "any key" if config.accept_any_key else f"{len(config.api_keys)} API key(s)"
        log.info(
            "server.started",
            host=config.host,
            port=self._port,
            url=self.url,
            auth=auth,
            engine=config.engine,
        )

    async def stop(self) -> None:
        """Close every connection (1001), stop the background work and free the port."""
        server, self._server = self._server, None
        if server is None:
            return
        server.close(close_connections=True)
        await server.wait_closed()
        if self._sweeper is not None:
            self._sweeper.cancel()
            await asyncio.gather(self._sweeper, return_exceptions=True)
            self._sweeper = None
        await self._cancel_background()
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None
        log.info("server.stopped", port=self._port)

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def serve_forever(self) -> None:
        """Start, serve until cancelled (Ctrl-C under ``asyncio.run``), then stop."""
        async with self:
            await asyncio.Future()

    @contextlib.contextmanager
    def run_in_thread(self) -> Iterator[str]:
        """Run the server on its own event loop in a daemon thread; yields :attr:`url`.

        For synchronous callers. The server stops when the ``with`` block ends. Do not use
        the ``wait_*`` helpers from another loop.
        """
        loop = asyncio.new_event_loop()
        started = threading.Event()
        failure: list[BaseException] = []

        def main() -> None:
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self.start())
            except BaseException as exc:
                failure.append(exc)
                started.set()
                loop.close()
                return
            started.set()
            try:
                loop.run_forever()
                loop.run_until_complete(self.stop())
                loop.run_until_complete(loop.shutdown_asyncgens())
            finally:
                loop.close()

        thread = threading.Thread(target=main, name="upscale-reference-server", daemon=True)
        thread.start()
        started.wait()
        if failure:
            raise failure[0]
        try:
            yield self.url
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=self.config.close_timeout + 10)

    # -- faults and test helpers -------------------------------------------------------------

    async def drop_connections(self, code: int | None = None) -> None:
        """End every live socket now: abort the TCP connection, or close cleanly with ``code``.

        Sessions are detached first, so their answers are held for a resume.
        """
        connections = list(self._connections)
        await asyncio.gather(*(conn.drop(code) for conn in connections), return_exceptions=True)
        await self._waiters.wait_for(
            lambda: self._connections.isdisjoint(connections),
            self.config.close_timeout + 5,
            "the dropped connections to finish",
        )

    async def restart(self) -> None:
        """Simulate a restart on the same port: drop every socket, forget all state.

        Sessions, held answers, the task registry and stored images are forgotten and running
        tasks are cancelled. The counters (``received``, ``executions``) and the fault knobs
        are kept.

        The restart is atomic for clients: the state is forgotten before the first ``await``,
        and WebSocket handshakes are refused with HTTP 503 until the old sockets are gone and
        the old tasks cancelled. A session opened after the state was forgotten is never
        forgotten by this restart.
        """
        self._restarting += 1
        try:
            # Cut every socket and forget, before the first await: no frame of an old socket
            # is handled against the new (empty) state, and whatever is created from now on
            # belongs to the restarted server.
            for connection in list(self._connections):
                connection.abort()
            self.registry.clear()
            self.images.clear()
            self._carriers.clear()
            await self.drop_connections(None)
            await self._cancel_background()
        finally:
            self._restarting -= 1
        log.info("server.restarted")

    async def wait_until(
        self, condition: Callable[[], bool], timeout: float = 10.0, what: str = "a condition"
    ) -> None:
        """Wait until ``condition()`` is true; it is re-checked whenever the server's state moves
        (a frame handled, a task started or finished, a socket opened, authenticated or closed).

        Raises:
            TimeoutError: not true within ``timeout`` seconds.
        """
        await self._waiters.wait_for(condition, timeout, what)

    async def wait_received(self, count: int, timeout: float = 10.0) -> None:
        """Wait until ``count`` tasks in total have been received (not pings, polls or auth).

        Raises:
            TimeoutError: not reached within ``timeout`` seconds.
        """
        await self._waiters.wait_for(
            lambda: self.counts.received_total >= count, timeout, f"{count} received tasks"
        )

    async def wait_executions(self, count: int, timeout: float = 10.0) -> None:
        """Wait until ``count`` task executions in total have started.

        Raises:
            TimeoutError: not reached within ``timeout`` seconds.
        """
        await self._waiters.wait_for(
            lambda: self.counts.executions_total >= count, timeout, f"{count} executions"
        )

    async def wait_authenticated(self, count: int, timeout: float = 10.0) -> None:
        """Wait until ``count`` successful authentications in total have happened.

        Raises:
            TimeoutError: not reached within ``timeout`` seconds.
        """
        await self._waiters.wait_for(
            lambda: self.counts.authentications >= count, timeout, f"{count} authentications"
        )

    async def wait_connections(self, count: int, timeout: float = 10.0) -> None:
        """Wait until exactly ``count`` connections are open.

        Raises:
            TimeoutError: not reached within ``timeout`` seconds.
        """
        await self._waiters.wait_for(
            lambda: len(self._connections) == count, timeout, f"{count} open connections"
        )

    # -- used by connections and task handlers -----------------------------------------------

    def attach(self, conn: ClientSocket, session: Session) -> None:
        """Make ``conn`` the socket that carries ``session`` (taking it from any other one)."""
        previous = self._carriers.get(session.session_id)
        if previous is not None and previous is not conn:
            previous.session = None
        self._carriers[session.session_id] = conn
        conn.session = session
        if session.outbox:
            conn.wake()

    def detach(self, conn: ClientSocket) -> None:
        """``conn`` no longer carries its session: hold the session's answers from now on."""
        session, conn.session = conn.session, None
        if session is None:
            return
        if self._carriers.get(session.session_id) is conn:
            del self._carriers[session.session_id]
            self.registry.detach(session.session_id, self.config.clock())

    def release(self, session: Session) -> None:
        """A socket authenticated into ``session`` but died before carrying it."""
        if session.session_id not in self._carriers:
            self.registry.detach(session.session_id, self.config.clock())

    def wake_session(self, session_id: str) -> None:
        """Wake the sender of the socket that carries ``session_id``, if there is one."""
        conn = self._carriers.get(session_id)
        if conn is not None:
            conn.wake()

    def notify_progress(self) -> None:
        """Re-check the conditions the ``wait_*`` helpers are waiting for."""
        self._waiters.notify()

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run ``coro`` as a background task that :meth:`restart` and :meth:`stop` cancel."""
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background_done)

    async def run_in_worker(self, job: Callable[[], T]) -> T:
        """Run CPU-bound ``job`` in the server's worker threads."""
        if self._executor is None:
            raise RuntimeError("the server is not started")
        return await asyncio.get_running_loop().run_in_executor(self._executor, job)

    # -- internals ---------------------------------------------------------------------------

    def _background_done(self, task: asyncio.Task[None]) -> None:
        self._background.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error(
                "server.background_failed",
                error=repr(exc),
                traceback="".join(traceback.format_exception(exc)),
            )

    async def _cancel_background(self) -> None:
        tasks = list(self._background)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _serve_connection(self, ws: ServerConnection) -> None:
        conn = ClientSocket(self, ws)
        self._connections.add(conn)
        self.notify_progress()
        try:
            await conn.run()
        except Exception as exc:
            log.error(
                "connection.crashed",
                session=conn.session_id,
                error=repr(exc),
                traceback="".join(traceback.format_exception(exc)),
            )
        finally:
            self.detach(conn)
            self._connections.discard(conn)
            self.notify_progress()

    def _process_request(self, ws: ServerConnection, request: Request) -> Response | None:
        if is_upgrade(request):
            if self._restarting:
                log.info("server.refused_while_restarting")
                return plain_response(
                    http.HTTPStatus.SERVICE_UNAVAILABLE,
                    b"the reference server is restarting; try again\n",
                )
            if self.faults.take_refusal():
                log.info("fault.refused_connection")
                return plain_response(
                    http.HTTPStatus(self.faults.refuse_status),
                    b"refused by the reference server (fault injection)\n",
                )
            return None
        page = page_response(request.path, self)
        return page or http_response(request, self.images, self.config.clock())

    async def _sweep(self) -> None:
        freed_since_trim = 0
        last_trim = 0.0
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.config.sweep_interval)
            now = self.config.clock()
            freed_since_trim += self.registry.expire(now) + self.images.expire(now)
            # After a load, glibc keeps the freed memory in its arenas: RSS stays at the peak
            # though Python holds little (docs/reliability.md has the figures). Hand it back
            # to the system once enough was freed, at most every TRIM_INTERVAL seconds, in a
            # worker thread (ctypes releases the GIL; the event loop goes on).
            if freed_since_trim >= TRIM_AFTER_FREED and loop.time() - last_trim >= TRIM_INTERVAL:
                freed_since_trim, last_trim = 0, loop.time()
                if self._executor is not None:
                    await loop.run_in_executor(self._executor, trim_heap)


TRIM_AFTER_FREED = 1_000
"""Records and images freed by the sweeps before the heap is trimmed."""
TRIM_INTERVAL = 10.0
"""Fewest seconds between two heap trims."""


def trim_heap() -> bool:
    """Return free heap memory to the system (glibc's ``malloc_trim``); False elsewhere."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.malloc_trim(0))
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to do
        return False


def _display_host(host: str) -> str:
    if host in ("", "0.0.0.0"):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host
