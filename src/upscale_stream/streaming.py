"""The machinery behind ``UpscaleClient.upscale_many``: a bounded producer and a consumer.

The producer reads inputs lazily, prepares them (off the loop when that costs real work),
encodes each task from one validated :class:`~upscale_stream.models.TaskTemplate`, and hands it
to the connection with a plain callback: no future, no scheduled callback and no asyncio task
per item. Finished items land in a deque; the consumer yields them.

Memory is bounded by the connection's in-flight window (the same one ``upscale()`` uses): a
slot is taken before an input is read and given back only when its outcome is *yielded*, so
results held back for ``ordered`` output, or waiting for a slow consumer, count against the
window too.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Iterator
from typing import Any, Generic, TypeVar

import msgspec

from .connection import Connection
from .errors import DuplicateTaskUUID, UpscaleError
from .inputs import EncodedImage, ImageSource, is_uuid, needs_thread, wire_value
from .jobs import JobTask, input_key
from .models import TaskTemplate, UpscaleResult, new_task_uuid

__all__ = ["Outcome", "Stream"]

S = TypeVar("S", bound=ImageSource)
_END: Any = object()  # the end of a plain iterable of inputs
_BATCH = 64  # image UUIDs submitted per connection call at most


class Outcome(msgspec.Struct, Generic[S]):
    """One finished item of :meth:`UpscaleClient.upscale_many`.

    Read it, do not change it. It is a msgspec Struct (slotted; compares, prints and pickles
    like a dataclass) because one is built per task: its ``__init__`` is one C call, where a
    dataclass's ran Python bytecode (and a frozen one's ``object.__setattr__`` per field).

    Attributes:
        index: Position of the input in the iterable (0-based).
        source: The input as given.
        task_uuid: The final attempt's taskUUID (``None`` if the input was rejected before
            sending).
        result: The result, when the task succeeded.
        error: Why it failed, otherwise.
        attempts: Tries the task took (more than 1 after transient errors; 0 if it was
            never sent).
    """

    index: int
    source: S
    task_uuid: str | None
    result: UpscaleResult | None = None
    error: UpscaleError | None = None
    attempts: int = 1

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


def image_uuid(image: object) -> str | None:
    """``image`` itself when it is an image UUID (the bulk-job case: nothing to read, encode
    or check beyond the UUID form), else ``None``. The test of that fast path (Stream.produce
    has it in line, once per input)."""
    if type(image) is str and is_uuid(image):
        return image
    return None


async def input_value(image: ImageSource) -> str | EncodedImage:
    """The ``inputImage`` value for ``image``: checked and encoded, off the loop when costly
    (local data as an :class:`~upscale_stream.inputs.EncodedImage`: ``str()`` of it is the
    data URI).

    Raises:
        InvalidTask: the image is unusable.
    """
    if (ready := image_uuid(image)) is not None:
        return ready  # one UUID check per task, not one here and one below
    if needs_thread(image):
        value = await asyncio.to_thread(input_value_now, image)
    else:
        value = input_value_now(image)
    if isinstance(value, UpscaleError):
        raise value
    return value


def input_value_now(image: ImageSource) -> str | EncodedImage | UpscaleError:
    """Prepare ``image`` in the calling thread; the error is returned, not raised.

    An image UUID (the common case in bulk jobs that upload first) takes a fast path.
    """
    if (ready := image_uuid(image)) is not None:
        return ready
    try:
        return wire_value(image)
    except UpscaleError as exc:
        return exc


async def _aiter(items: Iterable[S] | AsyncIterable[S]) -> AsyncIterator[S]:
    if isinstance(items, AsyncIterable):
        async for item in items:
            yield item
    else:
        for item in items:
            yield item


class Stream(Generic[S]):
    """One ``upscale_many`` run: call :meth:`produce` in a task; take outcomes with
    :meth:`next_outcome` and, while none is ready and the stream is not :attr:`finished`,
    :meth:`wait` (no async generator per outcome in between)."""

    def __init__(
        self,
        connection: Connection,
        template: TaskTemplate,
        *,
        ordered: bool,
        timeout: float | None,
        job: tuple[str, str] | None = None,
        key: Callable[[S], str] | None = None,
        window: int | None = None,
    ) -> None:
        self._connection = connection
        self._window = window  # this stream's own cap on pending inputs (None: the client's)
        self._room: asyncio.Future[None] | None = None
        self._job = job  # (job id, options digest)
        self._key = key
        self._template = template
        self._is_async = template.is_async
        self._model = str(template.options.get("model", ""))
        self._ordered = ordered
        self._timeout = timeout
        self._loop = asyncio.get_running_loop()
        self._pending: dict[str, tuple[int, S]] = {}
        self._ready: deque[Outcome[S]] = deque()
        self._wake: asyncio.Future[None] | None = None
        self._total: int | None = None
        self._error: BaseException | None = None
        self._slots = 0  # window slots taken and not yet given back
        self._on_finished = self._finished  # bound once, not once per task
        self._held: dict[int, Outcome[S]] = {}  # ordered: outcomes ahead of their turn
        self._next_index = 0
        self._yielded = 0
        self._preparing: set[asyncio.Task[None]] = set()

    async def produce(self, images: Iterable[S] | AsyncIterable[S]) -> None:
        """Submit every input; then record how many there were.

        Inputs that need real work (files, bytes, PIL images) are prepared in worker threads,
        several at once (the window bounds how many), so files are read and encoded in
        parallel; cheap inputs (UUIDs, URLs) are submitted as they come. The producer never
        holds an input back while it waits for the next one, so a lazy source that waits on
        our outcomes cannot deadlock it.
        """
        count = 0
        preparing: set[asyncio.Task[None]] = set()
        self._preparing = preparing
        connection = self._connection
        try_acquire = connection.slots.try_acquire  # in line below: once per input
        window = self._window
        has_job = self._job is not None
        # Image UUIDs (no job) are submitted in batches of up to _BATCH: one connection call,
        # one metrics call and one writer wake-up for the batch. A batch goes out before the
        # producer awaits anything, so no input it has read waits on the next one.
        batch: list[tuple[int, S, str]] = []
        add = batch.append
        # A plain iterable is read without an async generator around it (once per input).
        source: Iterator[S] | None = None if isinstance(images, AsyncIterable) else iter(images)
        later: AsyncIterator[S] | None = None if source is not None else _aiter(images)
        try:
            while True:
                if source is not None:
                    image = next(source, _END)
                    if image is _END:
                        break
                else:
                    assert later is not None
                    if batch:
                        self._submit_batch(batch)
                    try:
                        image = await anext(later)
                    except StopAsyncIteration:
                        break
                if window is not None and self._slots >= window:
                    if batch:
                        self._submit_batch(batch)
                    while self._slots >= window:
                        self._room = self._loop.create_future()
                        await self._room  # an outcome was yielded: one of our slots is free
                if not (connection.usable and try_acquire()):  # stop at once when closed
                    if batch:
                        self._submit_batch(batch)
                    await connection.acquire()  # (raises why the connection takes no tasks)
                self._slots += 1
                # image_uuid() in line; `ready` narrows to str where `image` stays an S.
                if not has_job and type(ready := image) is str and is_uuid(ready):
                    add((count, image, ready))  # an image UUID: nothing to prepare
                    if len(batch) >= _BATCH:
                        self._submit_batch(batch)
                elif needs_thread(image):
                    job = asyncio.create_task(self._prepare_and_submit(count, image))
                    preparing.add(job)
                    job.add_done_callback(preparing.discard)
                else:
                    self._submit(count, image, *self._prepare(image))
                count += 1
            if batch:
                self._submit_batch(batch)
            if preparing:
                await asyncio.gather(*preparing)
        except asyncio.CancelledError:
            raise  # the consumer went away: close() gives back every slot, batch included
        except BaseException as exc:  # the input iterable itself failed
            if batch:
                self._submit_batch(batch)  # the inputs read before it still run
            self._error = exc
        self._total = count
        self._wakeup()

    async def _prepare_and_submit(self, index: int, image: S) -> None:
        prepared = await asyncio.to_thread(self._prepare, image)
        self._submit(index, image, *prepared)

    def _prepare(self, image: S) -> tuple[str | EncodedImage | UpscaleError, JobTask | None]:
        """The input value, and the job task when there is a job (its key hashes the bytes
        of inline inputs, so it is computed where the input is prepared)."""
        value = input_value_now(image)
        if self._job is None or isinstance(value, UpscaleError):
            return value, None
        try:
            key = self._key(image) if self._key is not None else input_key(image)
        except UpscaleError as exc:
            return exc, None
        except Exception as exc:  # the caller's key function failed: that input's error
            return UpscaleError(f"key() failed for this input: {exc!r}"), None
        job_id, digest = self._job
        return value, JobTask(job_id, key, digest)

    def _submit(
        self, index: int, image: S, value: str | EncodedImage | UpscaleError, job: JobTask | None
    ) -> None:
        if isinstance(value, UpscaleError):
            self._ready.append(Outcome(index, image, None, error=value, attempts=0))
            self._wakeup()
            return
        task_uuid = new_task_uuid() if job is None else job.task_uuid(0)
        if task_uuid in self._pending:  # two inputs of a job with the same key
            self._ready.append(
                Outcome(index, image, task_uuid, error=DuplicateTaskUUID(task_uuid), attempts=0)
            )
            self._wakeup()
            return
        self._pending[task_uuid] = (index, image)
        try:
            self._connection.submit(
                task_uuid,
                self._template.encode(task_uuid, value),
                self._on_finished,
                self._is_async,
                self._timeout,
                job,
                self._model,
            )
        except UpscaleError as exc:
            del self._pending[task_uuid]
            self._ready.append(Outcome(index, image, task_uuid, error=exc, attempts=0))
            self._wakeup()

    def _submit_batch(self, batch: list[tuple[int, S, str]]) -> None:
        """Submit ``(index, image, image UUID)`` entries (no job) in one connection call, and
        empty ``batch``."""
        pending = self._pending
        encode = self._template.encode_image_uuid
        keys: list[str] = []
        payloads: list[bytes] = []
        ready = self._ready
        for index, image, value in batch:
            task_uuid = new_task_uuid()
            if task_uuid in pending:  # never seen from a CSPRNG; never lose an outcome to it
                twice = DuplicateTaskUUID(task_uuid)
                ready.append(Outcome(index, image, task_uuid, error=twice, attempts=0))
                continue
            pending[task_uuid] = (index, image)
            keys.append(task_uuid)
            payloads.append(encode(task_uuid, value))
        batch.clear()
        try:
            refused = self._connection.submit_many(
                keys, payloads, self._on_finished, self._is_async, self._timeout, self._model
            )
        except UpscaleError as exc:  # the client closed, or the core failed: every one of them
            refused = [(task_uuid, exc) for task_uuid in keys]
        for task_uuid, error in refused:
            index, image = pending.pop(task_uuid)
            ready.append(Outcome(index, image, task_uuid, error=error, attempts=0))
        if ready:
            self._wakeup()  # an outcome of this batch may be ready already

    def _finished(
        self, task_uuid: str, result: Any, error: UpscaleError | None, attempts: int
    ) -> None:
        entry = self._pending.pop(task_uuid, None)
        if entry is None:
            return  # closed meanwhile
        index, source = entry
        if attempts > 1:  # retried: name the final attempt's taskUUID
            final = result.task_uuid if result is not None else getattr(error, "task_uuid", None)
            task_uuid = final or task_uuid
        self._ready.append(Outcome(index, source, task_uuid, result, error, attempts))
        if self._wake is not None:
            self._wakeup()

    def _wakeup(self) -> None:
        """Wake the consumer (once: the other outcomes of a frame find no waiter to wake)."""
        wake = self._wake
        if wake is not None:
            self._wake = None
            if not wake.done():  # a consumer cancelled meanwhile
                wake.set_result(None)

    def next_outcome(self) -> Outcome[S] | None:
        """The next outcome to yield (completion order, or input order when ``ordered``), or
        ``None`` when none is ready yet; its window slot is given back as it is taken.

        Raises:
            BaseException: the input iterable's own error, once every outcome before it is out.
        """
        ready = self._ready
        if not self._ordered:
            if ready:
                self._yielded += 1
                self._give_back()
                return ready.popleft()
        else:
            held = self._held
            while ready:
                outcome = ready.popleft()
                held[outcome.index] = outcome
            if self._next_index in held:
                in_order = held.pop(self._next_index)
                self._next_index += 1
                self._yielded += 1
                self._give_back()
                return in_order
        if self._error is not None and self.finished:  # the inputs read before it are out
            raise self._error
        return None

    @property
    def finished(self) -> bool:
        """Whether every input was read and every outcome taken."""
        return self._total is not None and self._yielded >= self._total

    async def wait(self) -> None:
        """Wait until an outcome is ready, the inputs end, or the input iterable fails."""
        self._wake = self._loop.create_future()
        try:
            await self._wake
        finally:
            self._wake = None

    def _give_back(self) -> None:
        self._slots -= 1
        self._connection.release()
        room = self._room
        if room is not None and not room.done():
            room.set_result(None)

    def close(self) -> None:
        """The consumer stopped: cancel unfinished tasks and give back every slot."""
        for job in list(self._preparing):
            job.cancel()
        for task_uuid in list(self._pending):
            self._connection.cancel(task_uuid)
        self._pending.clear()
        self._ready.clear()
        while self._slots:
            self._give_back()
