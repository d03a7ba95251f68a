"""Ray Data: upscale the images of a dataset on a pool of async actors (extra ``ray``).

::

    import os, ray
    from upscale_stream.integrations.ray import upscale_dataset

    os.environ["RUNWARE_API_KEY"] = "..."       # before ray.init(): the actors inherit it
    ray.init()
    ds = ray.data.read_binary_files("s3://bucket/photos/", include_paths=True)
    out = upscale_dataset(ds, column="bytes", key_column="path", job_id="photos-2025-01",
                          factor=2, output_type="base64Data")
    out.write_parquet("s3://bucket/big/")      # image_bytes as returned, not re-encoded

How it runs: ``ds.map_batches`` with an *async callable class* on
``ray.data.ActorPoolStrategy(size=actors, max_concurrent_calls_per_actor=k)``. Each actor opens
one :class:`~upscale_stream.client.UpscaleClient` in its first ``__call__`` (Ray runs async
UDFs on the actor's own event-loop thread, not the thread ``__init__`` ran on) and keeps it for
its life; every batch is submitted at once through the client's window. Actors are I/O-bound
and ask for a fraction of a CPU (``num_cpus=0.25``): a pool of whole-CPU actors on a small
machine starves the read tasks and hangs (ray-project/ray#44687).

Job ids: every row's taskUUID is ``derive_task_uuid(job_id, key, options_digest)``
(:mod:`upscale_stream.jobs`), with ``key`` the row's ``key_column`` when given, else a digest
of the image itself (bytes, pixels) or its URL, path or image UUID. Ray retries a failed block
by running the whole block again, and the same ``job_id`` can be run again after a crash: the
rows already sent go out under the same taskUUIDs, and the server does not run them twice.

The API key reaches the actors **only through the environment they inherit**: set
``RUNWARE_API_KEY`` before ``ray.init()`` (on a cluster, before ``ray start`` on every node).
It is never a task argument, a constructor argument or a ``runtime_env`` value, all of which
Ray shows in its dashboard and logs. ``url`` is passed to the actors, so it must not carry a
key; leave it ``None`` to use each node's ``RUNWARE_URL``.

A failed task is a row with ``error_code`` and ``error_message`` set, never a failed job.
Ray is imported only when :func:`upscale_dataset` is called.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

from ..config import ENV_API_KEY, Timeouts
from ..errors import APIError, InvalidTask, UpscaleError
from ..jobs import check_job_id, derive_task_uuid, input_key, new_job_id, options_digest
from ..models import SWINIR, TaskTemplate, UpscaleTask
from ..options import Factor

if TYPE_CHECKING:
    import numpy as np
    import ray.data

    from ..client import UpscaleClient

__all__ = [
    "DEFAULT_ACTORS",
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_CONCURRENT_BATCHES",
    "DEFAULT_NUM_CPUS",
    "RESULT_COLUMNS",
    "task_digest",
    "upscale_dataset",
]

DEFAULT_ACTORS = 2
"""Actors in the pool (each holds one WebSocket)."""
DEFAULT_BATCH_SIZE = 64
"""Rows per batch; a batch is submitted at once."""
DEFAULT_CONCURRENT_BATCHES = 4
"""Batches one actor works on at the same time (``max_concurrent_calls_per_actor``); 4 is
also Ray Data's own cap for an async UDF. The window of each actor's client is
``batch_size * concurrent_batches``, so it stays full while a batch is being handed over."""
DEFAULT_NUM_CPUS = 0.25
"""CPU per actor: the work is waiting on the network, not computing."""
RESULT_COLUMNS = ("task_uuid", "image_uuid", "cost", "error_code", "error_message")
"""Columns every output row gets, plus ``image_url`` (URL output) or ``image_bytes``."""

_INLINE_OUTPUTS = frozenset({"base64Data", "dataURI"})


def task_digest(factor: int = 2, model: str = SWINIR, **task_options: Any) -> str:
    """The options digest that taskUUIDs are derived from, validating the options.

    It is the digest the client core takes for ``job_id=`` (of ``TaskTemplate.wire_options``),
    so the taskUUIDs reported here are the ones the core sends; the CLI uses it too, and a job
    can move between ``--engine local`` and ``--engine ray``.

    Raises:
        InvalidTask: an option is invalid.
    """
    if factor not in (2, 4):  # let the model say it, with its own message
        UpscaleTask(input_image="-", upscale_factor=factor, model=model, **task_options)
    template = TaskTemplate(model=model, upscale_factor=cast(Factor, factor), **task_options)
    return options_digest(template.wire_options)


@dataclass(frozen=True, slots=True)
class _Spec:
    """What every actor needs, handed over as a constructor argument (never the key)."""

    column: str
    key_column: str | None
    job_id: str
    digest: str
    url: str | None
    window: int
    timeout: float | None
    factor: int
    model: str
    task_options: Mapping[str, Any] = field(default_factory=dict)

    @property
    def inline(self) -> bool:
        return self.task_options.get("output_type") in _INLINE_OUTPUTS


def upscale_dataset(
    ds: ray.data.Dataset,
    *,
    column: str = "image",
    job_id: str | None = None,
    key_column: str | None = None,
    url: str | None = None,
    actors: int = DEFAULT_ACTORS,
    batch_size: int = DEFAULT_BATCH_SIZE,
    concurrent_batches: int = DEFAULT_CONCURRENT_BATCHES,
    num_cpus: float = DEFAULT_NUM_CPUS,
    timeout: float | None = None,
    factor: int = 2,
    model: str = SWINIR,
    **task_options: Any,
) -> ray.data.Dataset:
    """Upscale the image in ``column`` of every row of ``ds`` (lazily, like any Ray transform).

    Args:
        ds: The dataset. ``column`` may hold encoded bytes (``read_binary_files``), decoded
            images as arrays (``read_images``), file paths, http(s) URLs or image UUIDs.
        column: The column with the images.
        job_id: The job's id (:func:`upscale_stream.jobs.check_job_id`); default a new one.
            Running the same job again sends nothing new for rows that already ran.
        key_column: A column that identifies each input (``path`` from
            ``read_binary_files(include_paths=True)``); default: the image itself (a digest of
            its bytes or pixels, or its URL or UUID).
        url: The WebSocket endpoint for every actor; default each actor's ``RUNWARE_URL``,
            else the Runware API. It is visible to Ray, so it must not carry a key.
        actors: Actors in the pool, each with one connection.
        batch_size: Rows per batch.
        concurrent_batches: Batches in flight per actor.
        num_cpus: CPUs reserved per actor (a fraction: the actors wait on the network).
        timeout: Seconds per task (default: the client's).
        factor: ``upscaleFactor``.
        model: AIR id of the model.
        **task_options: Other task fields by Python name (``output_type``, ``output_format``,
            ``include_cost``...). With ``output_type="base64Data"`` or ``"dataURI"`` the output
            bytes land in ``image_bytes``; otherwise the row gets ``image_url``.

    Returns:
        The dataset of the input rows plus ``task_uuid``, ``image_uuid``, ``image_url`` or
        ``image_bytes``, ``cost`` (NaN when not reported), ``error_code`` and
        ``error_message`` (``None`` when the task succeeded).

    Raises:
        UpscaleError: ``upscale-stream[ray]`` is not installed.
        InvalidTask: an option or a pool parameter is invalid (nothing ran).
    """
    ray_data = _import_ray_data()
    for name, value in (
        ("actors", actors),
        ("batch_size", batch_size),
        ("concurrent_batches", concurrent_batches),
    ):
        if not isinstance(value, int) or value < 1:
            raise InvalidTask("must be a whole number of at least 1", parameter=name, value=value)
    if not num_cpus > 0:
        raise InvalidTask("must be greater than 0", parameter="num_cpus", value=num_cpus)
    if url is not None and "?" in url:
        raise InvalidTask(
            "must not carry a query (Ray shows constructor arguments); set RUNWARE_URL on "
            "the nodes instead",
            parameter="url",
            value=url.partition("?")[0] + "?...",
        )
    spec = _Spec(
        column=column,
        key_column=key_column,
        job_id=check_job_id(job_id) if job_id is not None else new_job_id(),
        digest=task_digest(factor, model, **task_options),
        url=url,
        window=batch_size * concurrent_batches,
        timeout=timeout,
        factor=factor,
        model=model,
        task_options=dict(task_options),
    )
    return ds.map_batches(
        _Upscaler,
        fn_constructor_args=(spec,),
        compute=ray_data.ActorPoolStrategy(
            size=actors, max_concurrent_calls_per_actor=concurrent_batches
        ),
        batch_size=batch_size,
        batch_format="numpy",
        num_cpus=num_cpus,
    )


def _import_ray_data() -> Any:
    try:
        import ray.data
    except ImportError as exc:
        raise UpscaleError(
            "upscale_dataset needs Ray Data: pip install 'upscale-stream[ray]'"
        ) from exc
    return ray.data


@dataclass(slots=True)
class _Row:
    task_uuid: str | None
    image_uuid: str | None = None
    image_url: str | None = None
    image_bytes: bytes | None = None
    cost: float = math.nan
    error_code: str | None = None
    error_message: str | None = None


class _Upscaler:
    """The actor's callable: one client per actor, opened in the first call, kept for life."""

    def __init__(self, spec: _Spec) -> None:
        self._spec = spec
        self._client: UpscaleClient | None = None
        self._opening: asyncio.Lock | None = None

    async def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import numpy as np

        client = await self._open()
        spec = self._spec
        images = batch[spec.column]
        keys = batch[spec.key_column] if spec.key_column is not None else None
        rows = await asyncio.gather(
            *(
                self._one(client, images[i], None if keys is None else keys[i])
                for i in range(len(images))
            )
        )
        out = dict(batch)
        out["task_uuid"] = np.array([row.task_uuid for row in rows], dtype=object)
        out["image_uuid"] = np.array([row.image_uuid for row in rows], dtype=object)
        if spec.inline:
            out["image_bytes"] = np.array([row.image_bytes for row in rows], dtype=object)
        else:
            out["image_url"] = np.array([row.image_url for row in rows], dtype=object)
        out["cost"] = np.array([row.cost for row in rows], dtype=np.float64)
        out["error_code"] = np.array([row.error_code for row in rows], dtype=object)
        out["error_message"] = np.array([row.error_message for row in rows], dtype=object)
        return out

    async def _open(self) -> UpscaleClient:
        # On the actor's event-loop thread: every call of this actor runs on this loop, so the
        # lock and the client belong to it.
        if self._client is not None:
            return self._client
        if self._opening is None:
            self._opening = asyncio.Lock()
        async with self._opening:
            if self._client is None:
                from ..client import UpscaleClient

                spec = self._spec
                try:
                    client = UpscaleClient(
                        url=spec.url,
                        max_in_flight=spec.window,
                        timeouts=Timeouts()
                        if spec.timeout is None
                        else Timeouts(task=spec.timeout),
                    )
                except UpscaleError as exc:
                    raise UpscaleError(
                        f"{exc}: on Ray, set {ENV_API_KEY} in the environment before ray.init() "
                        "(on a cluster: before `ray start` on every node); it is never passed "
                        "as an argument"
                    ) from None
                await client.connect()
                self._client = client
        assert self._client is not None
        return self._client

    async def _one(self, client: UpscaleClient, value: Any, key: Any) -> _Row:
        spec = self._spec
        try:
            source = _as_source(value)
            job_key = str(key) if key is not None else input_key(source)
            first_uuid = derive_task_uuid(spec.job_id, job_key, spec.digest)
        except UpscaleError as exc:
            return _Row(None, error_code=_code_of(exc), error_message=str(exc))
        try:
            # The core derives the same taskUUID from the job (then +1 per error answer) and
            # recovers a task that an earlier run of the job, or of this block, already sent.
            result = await client.upscale(
                source,
                factor=cast(Factor, spec.factor),
                model=spec.model,
                timeout=spec.timeout,
                job_id=spec.job_id,
                job_key=job_key,
                **spec.task_options,
            )
            row = _Row(result.task_uuid, image_uuid=result.image_uuid)
            if spec.inline:
                row.image_bytes = await asyncio.to_thread(result.read_bytes)
            else:
                row.image_url = result.url
        except UpscaleError as exc:
            # An InvalidTask never left this process: it has no taskUUID on the server.
            sent = None if isinstance(exc, InvalidTask) else first_uuid
            task_uuid = getattr(exc, "task_uuid", None) or sent
            return _Row(task_uuid, error_code=_code_of(exc), error_message=str(exc))
        if result.cost is not None:
            row.cost = float(result.cost)
        return row


def _as_source(value: Any) -> Any:
    """The row's image as the client takes it: bytes, a ``PIL.Image``, or text."""
    if isinstance(value, bytes | bytearray | memoryview | str):
        return bytes(value) if isinstance(value, bytearray | memoryview) else value
    shape = getattr(value, "shape", None)
    if shape is not None and len(shape) in (2, 3):  # a decoded image from read_images
        from PIL import Image

        return Image.fromarray(value)
    if shape is not None and len(shape) == 0:  # a numpy scalar (np.bytes_, np.str_)
        return _as_source(value.item())
    raise InvalidTask(
        "expected bytes, an image array, a path, a URL or an image UUID",
        parameter="inputImage",
        value=type(value).__name__,
    )


def _code_of(exc: UpscaleError) -> str:
    if isinstance(exc, APIError | InvalidTask):
        return exc.code
    return type(exc).__name__
