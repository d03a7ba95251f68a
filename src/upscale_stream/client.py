"""The public async client: :class:`UpscaleClient`.

One client keeps one WebSocket to Runware, multiplexes every task over it (many per frame),
bounds the tasks in flight, and survives drops by resuming its session::

    async with UpscaleClient() as client:            # RUNWARE_API_KEY, RUNWARE_URL
        result = await client.upscale("photo.jpg", factor=4)
        await result.asave("photo@4x.jpg")

        async for outcome in client.upscale_many(paths, factor=2):
            print(outcome.index, outcome.ok)
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
import ssl as ssl_module
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator, Iterable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from .config import (
    Heartbeat,
    Limits,
    Polling,
    Retry,
    Timeouts,
    resolve_api_key,
    resolve_url,
)
from .connection import Connection
from .errors import ClientClosed, InvalidTask, UpscaleError
from .inputs import ImageSource, needs_thread, prepare_input
from .log import get_logger
from .models import SWINIR, UpscaleResult, UpscaleTask
from .protocol import ClientSession

__all__ = ["Outcome", "UpscaleClient"]

log = get_logger(__name__)

S = TypeVar("S", bound=ImageSource)


@dataclass(frozen=True, slots=True)
class Outcome(Generic[S]):
    """One finished item of :meth:`UpscaleClient.upscale_many`.

    Attributes:
        index: Position of the input in the iterable (0-based).
        source: The input as given.
        task_uuid: The task's UUID (``None`` if the input was rejected before sending).
        result: The result, when the task succeeded.
        error: Why it failed, otherwise.
    """

    index: int
    source: S
    task_uuid: str | None
    result: UpscaleResult | None = None
    error: UpscaleError | None = None

    @property
    def ok(self) -> bool:
        """Whether the task succeeded."""
        return self.error is None

    def unwrap(self) -> UpscaleResult:
        """The result, or raise the task's error."""
        if self.error is not None:
            raise self.error
        assert self.result is not None
        return self.result


class UpscaleClient:
    """Async client for the Runware upscale API over one multiplexed WebSocket.

    Every option is keyword-only and resolved once: argument, then environment
    (``RUNWARE_API_KEY``, ``RUNWARE_URL``), then the default in :mod:`upscale_stream.config`.

    Args:
        api_key: Runware API key. Never logged, never in a repr or an exception.
        url: WebSocket endpoint; default ``wss://ws-api.runware.ai/v1``.
        max_in_flight: Shortcut for ``limits.max_in_flight`` (tasks submitted, not finished).
        max_batch: Shortcut for ``limits.max_batch`` (tasks per outgoing frame).
        timeouts: Connect, auth, per-task and close limits.
        limits: Window, batching and frame-size limits.
        heartbeat: Ping-after-silence interval and pong deadline.
        retry: Reconnect backoff and the resume grace period.
        polling: ``getResponse`` backoff for async delivery.
        verify_ssl: Verify the server's TLS certificate (default). Turning it off is logged
            as a warning every time the client connects.
        ssl_context: A custom TLS context (overrides ``verify_ssl``).
        seed: Seed for the backoff jitter, for reproducible tests.
    """

    def __init__(
        self,
        api_key: str | None = None,
        *,
        url: str | None = None,
        max_in_flight: int | None = None,
        max_batch: int | None = None,
        timeouts: Timeouts | None = None,
        limits: Limits | None = None,
        heartbeat: Heartbeat | None = None,
        retry: Retry | None = None,
        polling: Polling | None = None,
        verify_ssl: bool = True,
        ssl_context: ssl_module.SSLContext | None = None,
        seed: int | None = None,
    ) -> None:
        self._api_key = resolve_api_key(api_key)
        self.url = resolve_url(url)
        limits = limits or Limits()
        self.limits = dataclasses.replace(
            limits,
            max_in_flight=limits.max_in_flight if max_in_flight is None else max_in_flight,
            max_batch=limits.max_batch if max_batch is None else max_batch,
        )
        for name in ("max_in_flight", "max_batch", "max_frame_bytes"):
            if getattr(self.limits, name) < 1:
                raise InvalidTask(
                    "must be at least 1", parameter=name, value=getattr(self.limits, name)
                )
        self.timeouts = timeouts or Timeouts()
        self.heartbeat = heartbeat or Heartbeat()
        self.retry = retry or Retry()
        self.polling = polling or Polling()
        self._ssl = ssl_context or _ssl_context(verify_ssl)
        self._rng = random.Random(seed)
        self._connection: Connection | None = None
        self._window: asyncio.Semaphore | None = None
        self._closed = False

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open" if self._connection else "new"
        return f"<UpscaleClient url={self.url!r} {state}>"

    # -- lifecycle -------------------------------------------------------------------------------

    async def __aenter__(self) -> UpscaleClient:
        await self.connect()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close(cancel=exc_info[0] is not None)

    async def connect(self) -> None:
        """Open the socket and authenticate. Called by ``async with``; safe to call twice.

        Raises:
            AuthenticationError: the key was rejected (never retried).
            UpscaleTimeout: connecting or authenticating took longer than ``timeouts``.
            ConnectionLost: the server could not be reached.
        """
        if self._closed:
            raise ClientClosed("the client is closed; create a new one")
        if self._connection is not None:
            return
        if self.url.startswith("wss://") and self._ssl.verify_mode == ssl_module.CERT_NONE:
            log.warning("TLS certificate verification is OFF", url=self.url)
        session = ClientSession(
            limits=self.limits,
            heartbeat=self.heartbeat,
            polling=self.polling,
            retry=self.retry,
            auth_timeout=self.timeouts.auth,
            task_timeout=self.timeouts.task,
        )
        self._window = asyncio.Semaphore(self.limits.max_in_flight)
        connection = Connection(
            session,
            url=self.url,
            api_key=self._api_key,
            timeouts=self.timeouts,
            retry=self.retry,
            result_factory=UpscaleResult.model_validate,
            release=self._window.release,
            ssl_context=self._ssl,
            rng=self._rng,
        )
        await connection.start()
        self._connection = connection
        log.info("connected", url=self.url, session_id=session.session_id)

    async def close(self, *, cancel: bool = False) -> None:
        """Close the client: wait for in-flight tasks (or cancel them), then close the socket.

        Args:
            cancel: Cancel the tasks still in flight instead of waiting for them.
        """
        if self._closed:
            return
        self._closed = True
        if self._connection is not None:
            await self._connection.close(cancel=cancel)

    # -- tasks -----------------------------------------------------------------------------------

    async def submit(
        self, task: UpscaleTask, *, timeout: float | None = None
    ) -> asyncio.Future[UpscaleResult]:
        """Queue a task, waiting for room in the in-flight window first (backpressure).

        Returns:
            A future that resolves to the task's :class:`UpscaleResult` or raises its error.
            Cancelling the future frees its slot; a task not yet sent is then never sent.

        Raises:
            ClientClosed: the client was closed.
        """
        connection = self._require_connection()
        window = self._window
        assert window is not None
        await window.acquire()
        try:
            return connection.submit(
                task.task_uuid,
                task.to_json(),
                is_async=task.delivery_method == "async",
                timeout=timeout,
            )
        except BaseException:
            window.release()
            raise

    async def upscale(
        self,
        image: ImageSource,
        *,
        factor: int = 2,
        model: str = SWINIR,
        timeout: float | None = None,
        **options: Any,
    ) -> UpscaleResult:
        """Upscale one image and return the result.

        Args:
            image: A path, bytes, a ``PIL.Image``, an http(s) URL, an image UUID, a data URI or
                bare base64. Local data is checked and encoded once, off the event loop.
            factor: ``upscaleFactor``, 2 or 4 (4 only with SwinIR).
            model: AIR id of the model; default SwinIR (``runware:503@1``).
            timeout: Seconds for this task (default ``timeouts.task``).
            **options: Any other task field by its Python name: ``output_type``,
                ``output_format``, ``output_quality``, ``webhook_url``, ``delivery_method``,
                ``upload_endpoint``, ``ttl``, ``include_cost``, ``settings``, ``task_uuid``.

        Raises:
            InvalidTask: the image or an option is invalid (nothing was sent).
            APIError: the server failed the task.
            UpscaleTimeout: the task took longer than ``timeout``.
        """
        task = await self.build_task(image, factor=factor, model=model, **options)
        future = await self.submit(task, timeout=timeout)
        return await future

    async def build_task(
        self, image: ImageSource, *, factor: int = 2, model: str = SWINIR, **options: Any
    ) -> UpscaleTask:
        """Validate the options and prepare the input into an :class:`UpscaleTask` (not sent).

        Raises:
            InvalidTask: the image or an option is invalid.
        """
        if needs_thread(image):
            prepared = await asyncio.to_thread(prepare_input, image)
        else:
            prepared = prepare_input(image)
        return UpscaleTask(
            input_image=prepared.value, model=model, upscale_factor=factor, **options
        )

    async def upscale_many(
        self,
        images: Iterable[S] | AsyncIterable[S],
        *,
        factor: int = 2,
        model: str = SWINIR,
        ordered: bool = False,
        timeout: float | None = None,
        **options: Any,
    ) -> AsyncGenerator[Outcome[S], None]:
        """Upscale many images, streaming an :class:`Outcome` per input as tasks finish.

        Inputs are read lazily and at most ``limits.max_in_flight`` of them are pending at any
        time (in ``ordered`` mode that includes results held back to keep input order), so
        memory stays bounded however long the input is. A bad input or a failed task gives an
        outcome with ``error`` set; it never stops the stream.

        Args:
            images: Any (async) iterable of image sources (see :meth:`upscale`).
            factor: ``upscaleFactor`` for every task.
            model: AIR id for every task.
            ordered: Yield in input order instead of completion order.
            timeout: Seconds per task (default ``timeouts.task``).
            **options: Task fields for every task, as in :meth:`upscale`.
        """
        self._require_connection()
        done: asyncio.Queue[Outcome[S] | _End] = asyncio.Queue()
        permits = asyncio.Semaphore(self.limits.max_in_flight)
        pending: set[asyncio.Future[UpscaleResult]] = set()
        producer = asyncio.create_task(
            self._produce(images, done, permits, pending, factor, model, timeout, options)
        )
        total: int | None = None
        yielded = 0
        held: dict[int, Outcome[S]] = {}
        try:
            while total is None or yielded < total:
                item = await done.get()
                if isinstance(item, _End):
                    if item.error is not None:
                        raise item.error
                    total = item.count
                    continue
                if not ordered:
                    yielded += 1
                    permits.release()
                    yield item
                    continue
                held[item.index] = item
                while yielded in held:
                    ready = held.pop(yielded)
                    yielded += 1
                    permits.release()
                    yield ready
        finally:
            producer.cancel()
            for future in pending:
                future.cancel()
            await asyncio.gather(producer, return_exceptions=True)

    async def _produce(
        self,
        images: Iterable[S] | AsyncIterable[S],
        done: asyncio.Queue[Outcome[S] | _End],
        permits: asyncio.Semaphore,
        pending: set[asyncio.Future[UpscaleResult]],
        factor: int,
        model: str,
        timeout: float | None,
        options: dict[str, Any],
    ) -> None:
        count = 0
        try:
            async for image in _aiter(images):
                await permits.acquire()
                index = count
                count += 1
                try:
                    task = await self.build_task(image, factor=factor, model=model, **options)
                    future = await self.submit(task, timeout=timeout)
                except UpscaleError as exc:
                    done.put_nowait(Outcome(index, image, None, error=exc))
                    continue
                pending.add(future)
                future.add_done_callback(
                    _Collector(index, image, task.task_uuid, done, pending).collect
                )
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            done.put_nowait(_End(count, exc))
            return
        done.put_nowait(_End(count, None))

    # -- introspection ---------------------------------------------------------------------------

    @property
    def session_id(self) -> str | None:
        """The ``connectionSessionUUID`` granted by the server, once connected."""
        return self._connection.session.session_id if self._connection else None

    @property
    def in_flight(self) -> int:
        """Tasks submitted and not finished."""
        return self._connection.in_flight if self._connection else 0

    @property
    def reconnects(self) -> int:
        """Successful reconnects so far."""
        return self._connection.reconnects if self._connection else 0

    def _require_connection(self) -> Connection:
        if self._closed:
            raise ClientClosed("the client is closed; create a new one")
        if self._connection is None:
            raise ClientClosed("the client is not connected: use `async with` or connect()")
        return self._connection


@dataclass(frozen=True, slots=True)
class _End:
    count: int
    error: BaseException | None


@dataclass(frozen=True, slots=True)
class _Collector(Generic[S]):
    index: int
    source: S
    task_uuid: str
    done: asyncio.Queue[Outcome[S] | _End]
    pending: set[asyncio.Future[UpscaleResult]]

    def collect(self, future: asyncio.Future[UpscaleResult]) -> None:
        self.pending.discard(future)
        error: BaseException | None
        if future.cancelled():
            error = ClientClosed("the task was cancelled before it finished")
        else:
            error = future.exception()
        if error is None:
            outcome = Outcome(self.index, self.source, self.task_uuid, result=future.result())
        elif isinstance(error, UpscaleError):
            outcome = Outcome(self.index, self.source, self.task_uuid, error=error)
        else:
            outcome = Outcome(
                self.index, self.source, self.task_uuid, error=UpscaleError(repr(error))
            )
        self.done.put_nowait(outcome)


async def _aiter(items: Iterable[S] | AsyncIterable[S]) -> AsyncIterator[S]:
    if isinstance(items, AsyncIterable):
        async for item in items:
            yield item
    else:
        for item in items:
            yield item


def _ssl_context(verify: bool) -> ssl_module.SSLContext:
    context = ssl_module.create_default_context()
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl_module.CERT_NONE
    return context
