"""``upscale-stream run --engine ray``: the same job, its tasks run by Ray Data actors.

Every input becomes a row (its path, URL or UUID, and its job key); :func:`upscale_dataset`
runs the rows on a pool of actors, each with its own connection, and this process writes each
finished row exactly as the local engine does (:meth:`Job.finish`): same manifest, same
taskUUIDs (a job can be started on one engine and rerun on the other), same summary.

Without ``--ray-address`` Ray is started here, on loopback only, with every core of this
machine, and stopped at the end: no cluster needs to be set up. The API key is put in this
process's environment for ``ray.init()``, so the node and its actors inherit it (and taken out
again right after); it is never an argument. With ``--ray-address`` the cluster's nodes must
already have ``RUNWARE_API_KEY`` in their environment (set before ``ray start``), and file
inputs must be readable on every node.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import threading
from collections.abc import Callable
from typing import Any

from ..config import ENV_API_KEY
from ..models import UpscaleResult
from .job import Job
from .summary import Failure

__all__ = ["LOCAL_RAY_ENV", "run_on_ray"]

LOCAL_RAY_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0"}
"""Set before Ray starts here: Ray 2.60 then listens on 127.0.0.1 only (the flag is read when
``ray`` is first imported, so it is also patched in if ``ray`` was imported already)."""

_END = object()


async def run_on_ray(job: Job, *, url: str, api_key: str, address: str | None) -> None:
    """Run every task of ``job`` on Ray and hand each finished row to :meth:`Job.finish`.

    Raises:
        UpscaleError: ``upscale-stream[ray]`` is not installed.
    """
    from ..integrations.ray import DEFAULT_ACTORS, _import_ray_data, upscale_dataset

    # The node Ray starts here (and so every actor it spawns) inherits this environment at
    # ray.init(); the driver's own copy is put back right after, so nothing else sees it.
    environment = {ENV_API_KEY: api_key, **(LOCAL_RAY_ENV if address is None else {})}
    saved = {name: os.environ.get(name) for name in environment}
    os.environ.update(environment)
    try:
        ray_data = _import_ray_data()
        import ray

        # On this thread (the main one, for the CLI): Ray installs its SIGTERM clean-up only
        # there. Nothing needs the loop meanwhile: no task has been sent yet.
        started_here = _start_ray(ray, address)
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    try:
        context = ray_data.DataContext.get_current()
        context.enable_progress_bars = False
        options = dict(job.options)
        factor = options.pop("upscale_factor")
        model = options.pop("model")
        rows = [
            {"image": str(planned.source.key), "key": planned.source.job_key, "index": index}
            for index, planned in enumerate(job.todo)
        ]
        concurrent = 4
        batch_size = max(1, min(64, job.args.concurrency // concurrent))
        batches = -(-len(rows) // batch_size)
        dataset = upscale_dataset(
            ray_data.from_items(rows),
            column="image",
            job_id=job.job_id,
            key_column="key",
            url=url,
            actors=max(1, min(DEFAULT_ACTORS, batches)),  # no idle actor for a short job
            batch_size=batch_size,
            concurrent_batches=concurrent,
            timeout=job.args.timeout,
            factor=factor,
            model=model,
            **options,
        )
        job.pulled = len(job.todo)
        await _consume(job, dataset)
    finally:
        if started_here:
            ray.shutdown()


def _start_ray(ray: Any, address: str | None) -> bool:
    for name in ("ray", "ray.data"):  # their INFO lines would break the progress display
        logging.getLogger(name).setLevel(logging.WARNING)
    if ray.is_initialized():
        return False
    if address is not None:
        ray.init(address=address, log_to_driver=False, configure_logging=False)
        return True
    from ray._private import ray_constants

    ray_constants.ENABLE_RAY_CLUSTER = False  # loopback only, even if ray was imported early
    ray.init(
        include_dashboard=False,
        _node_ip_address="127.0.0.1",
        log_to_driver=False,
        configure_logging=False,
    )
    return True


async def _consume(job: Job, dataset: Any) -> None:
    """Iterate the dataset in a thread; finish each row on this loop as it arrives."""
    loop = asyncio.get_running_loop()
    arrived: asyncio.Queue[Any] = asyncio.Queue()
    stop = threading.Event()

    def iterate() -> None:
        try:
            for batch in dataset.iter_batches(batch_size=None, batch_format="numpy"):
                for row in _rows(batch):
                    loop.call_soon_threadsafe(arrived.put_nowait, row)
                if stop.is_set():
                    break
        except BaseException as exc:  # handed to the loop, raised there
            loop.call_soon_threadsafe(arrived.put_nowait, exc)
        finally:
            loop.call_soon_threadsafe(arrived.put_nowait, _END)

    job.on_cancel = stop.set
    reader = asyncio.create_task(asyncio.to_thread(iterate))
    try:
        while (row := await arrived.get()) is not _END:
            if isinstance(row, BaseException):
                raise row
            await _finish_row(job, row)
            if job.stop_requested:
                stop.set()
    finally:
        stop.set()
        await asyncio.gather(reader, return_exceptions=True)


async def _finish_row(job: Job, row: dict[str, Any]) -> None:
    index = int(row["index"])
    task_uuid = str(row["task_uuid"])
    code = row.get("error_code")
    if not _missing(code):
        planned = job.todo[index]
        failure = Failure(planned.source.key, str(code), str(row["error_message"]), task_uuid)
        await job.finish(index, task_uuid, error=failure)
        return
    reported = row.get("cost")
    cost = None if reported is None or _missing(reported) else float(reported)
    fetch: Callable[[], bytes]
    if not _missing(row.get("image_bytes")):
        content = bytes(row["image_bytes"])
        fetch = lambda: content  # noqa: E731
    else:
        result = UpscaleResult.model_validate(
            {"taskType": "upscale", "taskUUID": task_uuid, "imageURL": row.get("image_url")}
        )
        timeout = job.args.timeout or 60.0
        fetch = lambda: result.read_bytes(timeout=timeout)  # noqa: E731
    await job.finish(index, task_uuid, fetch=fetch, cost=cost)


def _missing(value: Any) -> bool:
    # A column that is None in every row of a block comes back from Arrow as NaN in numpy.
    return value is None or (isinstance(value, float) and math.isnan(value))


def _rows(batch: dict[str, Any]) -> list[dict[str, Any]]:
    names = list(batch)
    count = len(batch[names[0]]) if names else 0
    return [{name: _plain(batch[name][i]) for name in names} for i in range(count)]


def _plain(value: Any) -> Any:
    item = getattr(value, "item", None)
    return item() if callable(item) and getattr(value, "shape", None) == () else value
