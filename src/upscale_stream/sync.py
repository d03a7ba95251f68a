"""The blocking facade: :class:`Client` runs one :class:`UpscaleClient` on a private event loop.

For scripts and notebooks::

    with Client() as client:
        result = client.upscale("photo.jpg", factor=4)
        for outcome in client.map(paths, factor=2):
            ...

The event loop lives in a daemon thread owned by the client, so the facade also works where a
loop is already running in the calling thread (Jupyter): calls block the caller, never that loop.
Every method forwards to the async method of the same name; the logic exists only once.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import AsyncIterable, Callable, Coroutine, Iterable, Iterator
from typing import Any, TypeVar, Unpack

from .client import Outcome, UpscaleClient
from .config import Heartbeat, Limits, Polling, Retry, TaskRetry, Timeouts
from .errors import ClientClosed, EventLoopError
from .inputs import ImageSource
from .metrics import Stats
from .models import SWINIR, UpscaleResult, UpscaleTask
from .options import ClientOptions, Factor, TaskOptions

__all__ = ["Client"]

T = TypeVar("T")
S = TypeVar("S", bound=ImageSource)

_DONE = object()


class Client:
    """Blocking client with the same options as :class:`UpscaleClient` (see there).

    Use it as a context manager, or call :meth:`close` when done.
    """

    def __init__(self, api_key: str | None = None, **options: Unpack[ClientOptions]) -> None:
        self._async = UpscaleClient(api_key, **options)
        self._async._not_connected = (  # the facade says how to use the facade
            "the client is not connected: use `with Client(...) as client:`, or call "
            "client.connect() first and client.close() when done (in a notebook: "
            "client = Client(...).connect())"
        )
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="upscale-stream-loop", daemon=True
        )
        self._thread.start()
        self._closed = False

    def __repr__(self) -> str:
        return f"<Client {self._async!r}>"

    def __enter__(self) -> Client:
        self.connect()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close(cancel=exc_info[0] is not None)

    def _run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        if self._closed:
            coroutine.close()
            raise ClientClosed("the client is closed; create a new one")
        if threading.current_thread() is self._thread:
            coroutine.close()
            raise EventLoopError(
                "Client methods cannot be called from its own event loop (they would wait on "
                "themselves); call them from another thread"
            )
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    # -- the same names as UpscaleClient -------------------------------------------------------

    def connect(self) -> Client:
        """Open the socket and authenticate (see :meth:`UpscaleClient.connect`).

        Returns:
            The client itself, for ``client = Client(...).connect()`` in a notebook (then
            ``client.close()`` when done).
        """
        self._run(self._async.connect())
        return self

    def close(self, *, cancel: bool = False) -> None:
        """Drain or cancel in-flight tasks, close the socket and stop the loop thread."""
        if self._closed:
            return
        try:
            self._run(self._async.close(cancel=cancel))
        finally:
            self._closed = True
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
            if not self._thread.is_alive():
                self._loop.close()

    def submit(
        self, task: UpscaleTask, *, timeout: float | None = None
    ) -> concurrent.futures.Future[UpscaleResult]:
        """Queue a task (blocking while the window is full); returns a thread-safe future."""

        async def submit_and_wait() -> UpscaleResult:
            future = await self._async.submit(task, timeout=timeout)
            return await future

        if self._closed:
            raise ClientClosed("the client is closed; create a new one")
        return asyncio.run_coroutine_threadsafe(submit_and_wait(), self._loop)

    def upscale(
        self,
        image: ImageSource,
        *,
        factor: Factor = 2,
        model: str = SWINIR,
        timeout: float | None = None,
        task_uuid: str | None = None,
        job_id: str | None = None,
        job_key: str | None = None,
        **options: Unpack[TaskOptions],
    ) -> UpscaleResult:
        """Upscale one image (see :meth:`UpscaleClient.upscale`, also for ``job_id``)."""
        return self._run(
            self._async.upscale(
                image,
                factor=factor,
                model=model,
                timeout=timeout,
                task_uuid=task_uuid,
                job_id=job_id,
                job_key=job_key,
                **options,
            )
        )

    def build_task(
        self,
        image: ImageSource,
        *,
        factor: Factor = 2,
        model: str = SWINIR,
        task_uuid: str | None = None,
        job_id: str | None = None,
        job_key: str | None = None,
        **options: Unpack[TaskOptions],
    ) -> UpscaleTask:
        """Validate and prepare a task without sending it (see :meth:`UpscaleClient.build_task`)."""
        return self._run(
            self._async.build_task(
                image,
                factor=factor,
                model=model,
                task_uuid=task_uuid,
                job_id=job_id,
                job_key=job_key,
                **options,
            )
        )

    def upscale_many(
        self,
        images: Iterable[S] | AsyncIterable[S],
        *,
        factor: Factor = 2,
        model: str = SWINIR,
        ordered: bool = False,
        timeout: float | None = None,
        job_id: str | None = None,
        key: Callable[[S], str] | None = None,
        window: int | None = None,
        **options: Unpack[TaskOptions],
    ) -> Iterator[Outcome[S]]:
        """Stream outcomes as tasks finish (see :meth:`UpscaleClient.upscale_many`).

        The iterator pulls from the async stream one outcome at a time, so memory stays bounded.
        Stopping early (``break``) cancels the tasks still in flight.
        """
        stream = self._async.upscale_many(
            images,
            factor=factor,
            model=model,
            ordered=ordered,
            timeout=timeout,
            job_id=job_id,
            key=key,
            window=window,
            **options,
        )

        async def step() -> Any:
            try:
                return await anext(stream)
            except StopAsyncIteration:
                return _DONE

        try:
            while (item := self._run(step())) is not _DONE:
                yield item
        finally:
            if not self._closed:
                self._run(stream.aclose())

    def map(
        self,
        images: Iterable[S],
        *,
        factor: Factor = 2,
        model: str = SWINIR,
        timeout: float | None = None,
        job_id: str | None = None,
        key: Callable[[S], str] | None = None,
        **options: Unpack[TaskOptions],
    ) -> Iterator[Outcome[S]]:
        """Like :meth:`upscale_many` with ``ordered=True``: outcomes in input order."""
        return self.upscale_many(
            images,
            factor=factor,
            model=model,
            ordered=True,
            timeout=timeout,
            job_id=job_id,
            key=key,
            **options,
        )

    @property
    def session_id(self) -> str | None:
        """The ``connectionSessionUUID`` granted by the server, once connected."""
        return self._async.session_id

    @property
    def in_flight(self) -> int:
        """Tasks submitted and not finished."""
        return self._async.in_flight

    @property
    def reconnects(self) -> int:
        """Successful reconnects so far."""
        return self._async.reconnects

    @property
    def window(self) -> int:
        """The in-flight window now (see :attr:`UpscaleClient.window`)."""
        return self._async.window

    def stats(self) -> Stats:
        """A frozen snapshot of the client's figures (see :meth:`UpscaleClient.stats`)."""
        return self._async.stats()

    def export_metrics(self, meter_provider: Any = None) -> None:
        """Report the figures to OpenTelemetry (see :meth:`UpscaleClient.export_metrics`)."""
        self._async.export_metrics(meter_provider)

    @property
    def url(self) -> str:
        """The WebSocket endpoint."""
        return self._async.url

    @property
    def limits(self) -> Limits:
        """Window, batching and frame-size limits in force."""
        return self._async.limits

    @property
    def timeouts(self) -> Timeouts:
        """Connect, auth, task and close limits in force."""
        return self._async.timeouts

    @property
    def heartbeat(self) -> Heartbeat:
        """Heartbeat settings in force."""
        return self._async.heartbeat

    @property
    def retry(self) -> Retry:
        """Reconnect policy in force."""
        return self._async.retry

    @property
    def task_retry(self) -> TaskRetry:
        """Task retries in force."""
        return self._async.task_retry

    @property
    def polling(self) -> Polling:
        """``getResponse`` polling in force."""
        return self._async.polling
