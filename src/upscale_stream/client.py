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
from collections.abc import AsyncGenerator, AsyncIterable, Callable, Iterable
from typing import Any, TypeVar, Unpack

from .config import (
    Heartbeat,
    Limits,
    Polling,
    Retry,
    TaskRetry,
    Timeouts,
    Transport,
    resolve_api_key,
    resolve_url,
)
from .connection import Connection
from .errors import ClientClosed, InvalidLimits, InvalidTask, UpscaleError
from .inputs import ImageSource, is_uuid
from .jobs import JobTask, check_job_id, input_key, options_digest
from .log import get_logger
from .metrics import Metrics, Stats
from .models import SWINIR, UUID_V4, TaskTemplate, UpscaleResult, UpscaleTask, new_task_uuid
from .options import Factor, TaskOptions
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
        heartbeat: Ping-after-silence intervals (idle and with tasks live) and pong deadline.
        retry: Reconnect backoff and the resume grace period.
        task_retry: Retries of tasks answered with a transient error (``TaskRetry.NEVER``
            turns them off).
        polling: ``getResponse`` backoff for async delivery.
        verify_ssl: Verify the server's TLS certificate (default). Turning it off is logged
            as a warning every time the client connects.
        ssl_context: A custom TLS context (overrides ``verify_ssl``).
        seed: Seed for the backoff jitter, for reproducible tests.
        transport: ``"websockets"`` (default) or ``"picows"``, a WebSocket library written in
            C that costs less CPU per message (``pip install 'upscale-stream[fast]'``).

    Raises:
        MissingAPIKey: no ``api_key`` and no ``RUNWARE_API_KEY``.
        InvalidURL: the URL is not ``ws://`` or ``wss://``.
        InvalidLimits: a limit is below 1.
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
        task_retry: TaskRetry | None = None,
        polling: Polling | None = None,
        verify_ssl: bool = True,
        ssl_context: ssl_module.SSLContext | None = None,
        seed: int | None = None,
        transport: Transport = "websockets",
    ) -> None:
        self._api_key = resolve_api_key(api_key)
        self.url = resolve_url(url)
        limits = limits or Limits()
        self.limits = dataclasses.replace(
            limits,
            max_in_flight=limits.max_in_flight if max_in_flight is None else max_in_flight,
            max_batch=limits.max_batch if max_batch is None else max_batch,
        )
        self.timeouts = timeouts or Timeouts()
        self.heartbeat = heartbeat or Heartbeat()
        self.retry = retry or Retry()
        self.task_retry = task_retry or TaskRetry()
        self.polling = polling or Polling()
        self._ssl = ssl_context or _ssl_context(verify_ssl)
        self._rng = random.Random(seed)
        self._transport: Transport = transport
        self._connection: Connection | None = None
        self._closed = False
        self._templates: dict[Any, TaskTemplate] = {}
        self._metrics = Metrics()
        self._not_connected = "the client is not connected: use `async with` or connect()"

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open" if self._connection else "new"
        return f"<UpscaleClient url={self.url!r} {state}>"

    # -- lifecycle -------------------------------------------------------------------------------

    async def __aenter__(self) -> UpscaleClient:
        await self.connect()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        """Close; after an exception in the block, pending calls end with ``ClientClosed``."""
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
            task_retry=self.task_retry,
            auth_timeout=self.timeouts.auth,
            task_timeout=self.timeouts.task,
            rng=self._rng,
        )
        connection = Connection(
            session,
            url=self.url,
            api_key=self._api_key,
            timeouts=self.timeouts,
            retry=self.retry,
            ssl_context=self._ssl,
            rng=self._rng,
            transport=self._transport,
            metrics=self._metrics,
        )
        await connection.start()
        self._connection = connection
        log.info("connected", url=self.url, session_id=session.session_id)

    async def close(self, *, cancel: bool = False) -> None:
        """Close the client: wait for in-flight tasks (or end them), then close the socket.

        Pending calls that do not finish (``cancel=True``, or the drain ran past
        ``timeouts.close``) raise :class:`~upscale_stream.errors.ClientClosed`, never
        ``asyncio.CancelledError``.

        Args:
            cancel: End the tasks still in flight instead of waiting for them.

        Raises:
            UpscaleTimeout: the drain ran past ``timeouts.close`` (``operation="close"``);
                the client is closed all the same.
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
            DuplicateTaskUUID: a live task already has ``task.task_uuid``.
        """
        connection = self._require_connection()
        await connection.acquire()
        future: asyncio.Future[UpscaleResult] = connection.loop.create_future()
        key = task.task_uuid

        def finished(_key: str, result: Any, error: UpscaleError | None, _attempts: int) -> None:
            connection.release()
            _settle(future, _key, result, error, _attempts)
            if isinstance(error, ClientClosed):
                # As websockets' terminate_pending_pings: the exception is set; cancel() on a
                # done future changes nothing but keeps asyncio from logging it unretrieved.
                future.cancel()

        def given_up(done: asyncio.Future[UpscaleResult]) -> None:
            if done.cancelled() and connection.cancel(key):
                connection.release()  # the caller gave up: the task is forgotten

        try:
            connection.submit(
                key,
                task.to_json(),
                finished,
                is_async=task.delivery_method == "async",
                timeout=timeout,
                model=task.model,
            )
        except BaseException:
            connection.release()
            raise
        future.add_done_callback(given_up)
        return future

    async def upscale(
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
        """Upscale one image and return the result.

        A task answered with a transient error (see
        :data:`~upscale_stream.policy.RETRYABLE_CODES`) goes again under a new taskUUID, up
        to ``task_retry``; the result's ``task_uuid`` is the final attempt's.

        Args:
            image: A path, bytes, a ``PIL.Image``, an http(s) URL, an image UUID, a data URI or
                bare base64. Local data is checked and encoded once, off the event loop.
            factor: ``upscaleFactor``, 2 or 4 (4 only with SwinIR).
            model: AIR id of the model; default SwinIR (``runware:503@1``).
            timeout: Seconds for this task, retries included (default ``timeouts.task``).
            task_uuid: The first attempt's taskUUID (default: a random one).
            job_id: Make the task part of a job: its taskUUIDs are derived from the job id, the
                input's key and the options (:func:`~upscale_stream.jobs.derive_task_uuid`),
                the same in any process. If an earlier process of the job already sent it,
                the server refuses to run it again and the client recovers that result
                (``getTaskDetails`` / ``getResponse``) instead of paying twice; see
                :mod:`upscale_stream.jobs`.
            job_key: The input's key within the job (default:
                :func:`~upscale_stream.jobs.input_key` of ``image``: the path as given, the
                URL, the image UUID, or a hash of the bytes). Pass e.g. a path relative to
                the job's input folder so that reruns from elsewhere match.
            **options: The other task fields (:class:`~upscale_stream.options.TaskOptions`).

        Raises:
            InvalidTask: the image or an option is invalid (nothing was sent).
            JobMismatch: an earlier run of the job sent other work under this taskUUID.
            APIError: the server failed the task (after the retries a transient error gets).
            InvalidResult: the server's answer is unreadable or has no image.
            UpscaleTimeout: the task took longer than ``timeout``.
            ClientClosed: the client was closed before the task finished.
        """
        template = None if options else self._templates.get((factor, model))
        if template is None:
            template = self._template(factor, model, options)
        if job_id is None and job_key is None:
            job = None
            key = new_task_uuid() if task_uuid is None else _checked_uuid(task_uuid)
        else:
            job = _job_of(job_id, job_key, image, template, task_uuid)
            assert job is not None  # None only when both are None
            key = job.task_uuid(0)
        if type(image) is str and is_uuid(image):  # image_uuid(), in line: once per task
            payload = template.encode_image_uuid(key, image)  # no coroutine, no thread
        else:
            payload = template.encode(key, await input_value(image))
        connection = self._connection
        if connection is None or self._closed:
            connection = self._require_connection()
        if not connection.slots.try_acquire():
            await connection.acquire()
        try:
            # The future is the task's waiter: the connection settles it and gives its slot
            # back when the task ends (nothing else per task).
            if task_uuid is None and job is None and timeout is None:  # handed over in a batch
                future = connection.submit_soon(key, payload, template.kind)
            else:
                future = connection.loop.create_future()
                connection.submit(key, payload, future, template.is_async, timeout, job, model)
        except BaseException:
            connection.release()  # refused: the slot is still ours
            raise
        try:
            return await future  # type: ignore[no-any-return]
        except asyncio.CancelledError:
            connection.cancel(key)  # forgets the task and gives its slot back (if still live)
            raise

    async def build_task(
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
        """Validate the options and prepare the input into an :class:`UpscaleTask` (not sent).

        With ``job_id`` (and optionally ``job_key``), the task's taskUUID is the job's first
        attempt's, as :meth:`upscale` would send it.

        Raises:
            InvalidTask: the image or an option is invalid.
        """
        fields: dict[str, Any] = dict(options)
        if job_id is not None:
            template = self._template(factor, model, options)
            job = _job_of(job_id, job_key, image, template, task_uuid)
            assert job is not None
            fields["task_uuid"] = job.task_uuid(0)
        elif task_uuid is not None:
            fields["task_uuid"] = task_uuid
        return UpscaleTask(
            input_image=str(await input_value(image)), model=model, upscale_factor=factor, **fields
        )

    async def upscale_many(
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
    ) -> AsyncGenerator[Outcome[S], None]:
        """Upscale many images, streaming an :class:`Outcome` per input as tasks finish.

        Inputs are read lazily and at most the in-flight window's worth of them are pending at
        any time (results held back for ``ordered`` output, or not yet consumed, included), so
        memory stays bounded however long the input is. A bad input or a failed task gives an
        outcome with ``error`` set; it never stops the stream. The options are validated once,
        before the first input is read. Transient errors are retried as in :meth:`upscale`;
        each outcome carries its ``attempts`` and the final ``task_uuid``.

        Args:
            images: Any (async) iterable of image sources (see :meth:`upscale`).
            factor: ``upscaleFactor`` for every task.
            model: AIR id for every task.
            ordered: Yield in input order instead of completion order.
            timeout: Seconds per task (default ``timeouts.task``).
            job_id: Run the inputs as one job (see :meth:`upscale`): a rerun with the same job
                id, inputs and options runs nothing that already ran. Inputs of a job need
                distinct keys (the same key twice fails the second with ``DuplicateTaskUUID``).
            key: With ``job_id``, the key of each input (default
                :func:`~upscale_stream.jobs.input_key`), e.g. a path relative to the input
                folder.
            window: At most this many of this stream's inputs pending at once (default: the
                client's whole in-flight window, which still bounds it).
            **options: Task fields for every task, as in :meth:`upscale`.

        Raises:
            InvalidTask: an option or the job id is invalid (raised before any task is sent).
            InvalidLimits: ``window`` is below 1.
            ClientClosed: the client was closed while inputs were still being read.
        """
        if window is not None and (type(window) is not int or window < 1):
            raise InvalidLimits(
                "must be an integer of at least 1", parameter="window", value=window
            )
        connection = self._require_connection()
        template = self._template(factor, model, options)
        job = None
        if job_id is not None:
            job = (check_job_id(job_id), options_digest(template.wire_options))
        elif key is not None:
            raise InvalidTask("key= needs job_id=", parameter="key", value=key)
        stream: Stream[S] = Stream(
            connection, template, ordered=ordered, timeout=timeout, job=job, key=key, window=window
        )
        producer = asyncio.create_task(stream.produce(images))
        try:
            while True:
                outcome = stream.next_outcome()
                if outcome is not None:
                    yield outcome
                elif stream.finished:
                    return
                else:
                    await stream.wait()
        finally:
            producer.cancel()
            await asyncio.gather(producer, return_exceptions=True)
            stream.close()

    def _template(self, factor: int, model: str, options: TaskOptions) -> TaskTemplate:
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

    @property
    def window(self) -> int:
        """The in-flight window now: ``max_in_flight`` until the server rate-limits us, then
        smaller, growing back with successes (AIMD)."""
        return self._connection.window.size if self._connection else self.limits.max_in_flight

    def stats(self) -> Stats:
        """A frozen snapshot of this client's figures (see :class:`~upscale_stream.metrics.Stats`):
        tasks by outcome, resends, frames and bytes, reconnects, the window, latency
        percentiles over the last minute. Cheap enough to call every second."""
        return self._metrics.snapshot()

    def export_metrics(self, meter_provider: Any = None) -> None:
        """Report the same figures to OpenTelemetry from now on (``upscale-stream[otel]``).

        Args:
            meter_provider: An OpenTelemetry ``MeterProvider``; ``None`` for the global one
                (a no-op until an SDK is configured).

        Raises:
            ImportError: ``opentelemetry-api`` is not installed (the message names the extra).
        """
        self._metrics.export_to(meter_provider)

    def _require_connection(self) -> Connection:
        if self._closed:
            raise ClientClosed("the client is closed; create a new one")
        if self._connection is None:
            raise ClientClosed(self._not_connected)
        return self._connection


def _job_of(
    job_id: str | None,
    job_key: str | None,
    image: ImageSource,
    template: TaskTemplate,
    task_uuid: str | None,
) -> JobTask | None:
    """The job task for these arguments, or ``None`` without a job id."""
    if job_id is None:
        if job_key is not None:
            raise InvalidTask("job_key= needs job_id=", parameter="job_key", value=job_key)
        return None
    if task_uuid is not None:
        raise InvalidTask(
            "a task of a job gets its taskUUID from the job; pass task_uuid or job_id, not both",
            parameter="taskUUID",
            value=task_uuid,
        )
    key = job_key if job_key is not None else input_key(image)
    return JobTask(check_job_id(job_id), key, options_digest(template.wire_options))


def _settle(
    future: asyncio.Future[Any], _key: str, result: Any, error: UpscaleError | None, _n: int
) -> None:
    """A task's callback for a caller awaiting ``future``: set its result or its error."""
    if future.done():
        return
    if error is None:
        future.set_result(result)
    else:
        future.set_exception(error)


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
