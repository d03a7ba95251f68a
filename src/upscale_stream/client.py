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
from collections.abc import AsyncGenerator, AsyncIterable, Iterable
from typing import Any, TypeVar

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
from .errors import ClientClosed, InvalidTask
from .inputs import ImageSource
from .log import get_logger
from .models import SWINIR, UUID_V4, TaskTemplate, UpscaleResult, UpscaleTask, new_task_uuid
from .protocol import ClientSession
from .streaming import Outcome, Stream, input_value

__all__ = ["Outcome", "UpscaleClient"]

log = get_logger(__name__)

S = TypeVar("S", bound=ImageSource)


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
        self._templates: dict[Any, TaskTemplate] = {}

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
        return await self._submit_encoded(
            task.task_uuid, task.to_json(), task.delivery_method == "async", timeout
        )

    async def _submit_encoded(
        self, task_uuid: str, payload: bytes, is_async: bool, timeout: float | None
    ) -> asyncio.Future[UpscaleResult]:
        connection = self._require_connection()
        window = self._window
        assert window is not None
        await window.acquire()
        try:
            return connection.submit(task_uuid, payload, is_async=is_async, timeout=timeout)
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
        given = options.pop("task_uuid", None)
        task_uuid = new_task_uuid() if given is None else _checked_uuid(given)
        template = self._template(factor, model, options)
        payload = template.encode(task_uuid, await input_value(image))
        connection = self._require_connection()
        window = self._window
        assert window is not None
        await window.acquire()
        try:
            future = connection.submit(
                task_uuid,
                payload,
                is_async=template.delivery_method == "async",
                timeout=timeout,
                watch=False,  # we await it here: no done-callback per task
            )
            try:
                result: UpscaleResult = await future
                return result
            except asyncio.CancelledError:
                connection.cancel(task_uuid)
                raise
        finally:
            window.release()

    async def build_task(
        self, image: ImageSource, *, factor: int = 2, model: str = SWINIR, **options: Any
    ) -> UpscaleTask:
        """Validate the options and prepare the input into an :class:`UpscaleTask` (not sent).

        Raises:
            InvalidTask: the image or an option is invalid.
        """
        return UpscaleTask(
            input_image=await input_value(image), model=model, upscale_factor=factor, **options
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
        time (results held back for ``ordered`` output, or not yet consumed, included), so
        memory stays bounded however long the input is. A bad input or a failed task gives an
        outcome with ``error`` set; it never stops the stream. The options are validated once,
        before the first input is read.

        Args:
            images: Any (async) iterable of image sources (see :meth:`upscale`).
            factor: ``upscaleFactor`` for every task.
            model: AIR id for every task.
            ordered: Yield in input order instead of completion order.
            timeout: Seconds per task (default ``timeouts.task``).
            **options: Task fields for every task, as in :meth:`upscale`.

        Raises:
            InvalidTask: an option is invalid (raised before any task is sent).
        """
        connection = self._require_connection()
        assert self._window is not None
        template = self._template(factor, model, options)
        stream: Stream[S] = Stream(
            connection, self._window, template, ordered=ordered, timeout=timeout
        )
        producer = asyncio.create_task(stream.produce(images))
        try:
            async for outcome in stream.outcomes():
                yield outcome
        finally:
            producer.cancel()
            await asyncio.gather(producer, return_exceptions=True)
            stream.close()

    def _template(self, factor: int, model: str, options: dict[str, Any]) -> TaskTemplate:
        """A validated template for these options, cached for repeated ``upscale()`` calls."""
        try:
            key: Any = (factor, model, *options.items())
            hash(key)
        except TypeError:  # unhashable option values (settings as a dict): no caching
            return TaskTemplate(model=model, upscale_factor=factor, **options)
        template = self._templates.get(key)
        if template is None:
            if len(self._templates) >= 64:
                self._templates.clear()
            template = TaskTemplate(model=model, upscale_factor=factor, **options)
            self._templates[key] = template
        return template

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


def _checked_uuid(task_uuid: Any) -> str:
    if not isinstance(task_uuid, str) or not UUID_V4.match(task_uuid):
        raise InvalidTask("must be a UUID v4 string", parameter="taskUUID", value=task_uuid)
    return task_uuid


def _ssl_context(verify: bool) -> ssl_module.SSLContext:
    context = ssl_module.create_default_context()
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl_module.CERT_NONE
    return context
