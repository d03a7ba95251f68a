"""One run of ``upscale-stream run``: submit every input, write each result as it arrives.

:class:`Job` owns the run's bookkeeping (what was sent, what finished, the tally, the summary,
Ctrl-C, a full disk) and the writing of results; an *engine* feeds it. The local engine here
runs every task through one :class:`~upscale_stream.client.UpscaleClient` on this event loop;
the Ray engine (:mod:`.ray_engine`) runs them on a Ray cluster and hands each finished row to
the same :meth:`Job.finish`.

Every task's taskUUID comes from the job: the client core derives it from the job id, the
input's key (:attr:`Source.job_key`) and the options (``upscale(job_id=..., job_key=...)``), so
a rerun of the same job sends a task that an earlier, killed process already sent under the
same taskUUID: the server does not run it again and the core recovers its result.

A full disk (``ENOSPC``, ``EDQUOT``) stops the run at the first failed write: no new task is
sent, those in flight finish (and their results are recorded as failed writes), and the
summary says so; results are not paid for and then thrown away.
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import signal
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..client import UpscaleClient
from ..errors import InvalidTask, UpscaleError
from ..jobs import derive_task_uuid
from ..log import get_logger
from ..models import UpscaleResult
from .manifest import Entry, ManifestWriter
from .progress import Reporter, Tally
from .sources import Planned
from .summary import Failure, RunSummary, failure_from

__all__ = ["DISK_FULL_ERRNOS", "WRITERS", "Job", "task_uuid_of"]

log = get_logger(__name__)

WRITERS = 16
"""Results being downloaded and written at the same time."""
DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
"""Write errors that stop the whole run: every later write would fail the same way."""


def task_uuid_of(job_id: str, planned: Planned, digest: str, attempt: int = 0) -> str:
    """The taskUUID of ``planned`` in this job, as the core derives it (for reports of tasks
    that failed before the core said which attempt it sent)."""
    return derive_task_uuid(job_id, planned.source.job_key, digest, attempt)


class Job:
    """The state of one run over ``todo``.

    Args:
        args: The parsed command line.
        options: Task options by Python name (``upscale_factor``, ``model``...).
        job_id: The output folder's job id.
        digest: The manifest's options digest.
        task_digest: The options digest that taskUUIDs are derived from.
        todo: The inputs to run, in order.
        out_dir: The output folder.
        tally: The progress counters.
        summary: The run's summary, filled in as tasks finish.
        reporter: Where progress and notes go.
        manifest: The open manifest.
    """

    def __init__(
        self,
        args: argparse.Namespace,
        options: dict[str, Any],
        *,
        job_id: str,
        digest: str,
        task_digest: str,
        todo: list[Planned],
        out_dir: Path,
        tally: Tally,
        summary: RunSummary,
        reporter: Reporter,
        manifest: ManifestWriter,
    ) -> None:
        self.args = args
        self.options = dict(options)
        self.job_id = job_id
        self.digest = digest
        self.task_digest = task_digest
        self.todo = todo
        self.out_dir = out_dir
        self.tally = tally
        self.summary = summary
        self.reporter = reporter
        self.manifest = manifest
        self.pulled = 0
        self.finalized: set[int] = set()
        self.stop_requested = False
        self.cancel_requested = False
        self.interrupts = 0
        self.disk_full = False
        self.on_cancel: Callable[[], None] | None = None
        self._slots = asyncio.Semaphore(WRITERS)
        self._writers: set[asyncio.Task[None]] = set()

    def task_uuid(self, index: int) -> str:
        """The taskUUID of ``todo[index]``."""
        return task_uuid_of(self.job_id, self.todo[index], self.task_digest)

    # -- the end of the run --------------------------------------------------------------------

    async def wait_writers(self) -> None:
        """Wait for every write in progress (cancelled first after a second Ctrl-C)."""
        if self.cancel_requested:
            for writer in self._writers:
                writer.cancel()
        await asyncio.gather(*self._writers, return_exceptions=True)

    def close_summary(self) -> None:
        """Fill in what was left pending or never started."""
        self.summary.pending = [
            self.todo[i].source.key for i in range(self.pulled) if i not in self.finalized
        ]
        self.summary.not_started = len(self.todo) - self.pulled
        self.summary.interrupted = self.interrupts > 0

    # -- outcomes --------------------------------------------------------------------------------

    async def finish(
        self,
        index: int,
        task_uuid: str,
        *,
        fetch: Callable[[], bytes] | None = None,
        cost: float | None = None,
        error: BaseException | Failure | None = None,
    ) -> None:
        """Record one finished task: start writing its output, or record its failure.

        Args:
            index: Its position in ``todo``.
            task_uuid: Its taskUUID.
            fetch: Returns the output bytes (decodes or downloads; runs in a thread).
            cost: The task's cost, when reported.
            error: Why it failed (an exception, or a ready :class:`Failure`).
        """
        planned = self.todo[index]
        if error is not None or fetch is None:
            sent = not isinstance(error, InvalidTask)  # an InvalidTask was never sent
            if isinstance(error, Failure):
                failure = error
            else:
                reason = error or UpscaleError("the task finished without a result")
                failure = failure_from(planned.source.key, reason, task_uuid if sent else None)
            self.fail(index, failure, sent=sent)
            return
        self.tally.writing += 1  # answered: no longer in flight, not done yet
        try:
            await self._slots.acquire()
        except BaseException:
            self.tally.writing -= 1
            raise
        writer = asyncio.create_task(self._write(index, planned, fetch, task_uuid, cost))
        self._writers.add(writer)
        writer.add_done_callback(self._writers.discard)

    async def _write(
        self,
        index: int,
        planned: Planned,
        fetch: Callable[[], bytes],
        task_uuid: str,
        cost: float | None,
    ) -> None:
        entry = Entry(
            input=planned.source.key,
            options=self.digest,
            output=str(planned.output),
            task_uuid=task_uuid,
            cost=cost,
            bytes_in=planned.source.size,
            bytes_out=0,
            finished_at=datetime.now(UTC).isoformat(timespec="seconds"),
        )

        def fetch_and_commit() -> int:
            content = fetch()
            self.manifest.commit(self.out_dir, entry, content)
            return len(content)

        try:
            written = await asyncio.to_thread(fetch_and_commit)
        except (UpscaleError, OSError) as exc:
            self.fail(index, failure_from(planned.source.key, exc, task_uuid), sent=True)
            if isinstance(exc, OSError) and exc.errno in DISK_FULL_ERRNOS:
                self._stop_for_full_disk(exc)
            return
        finally:
            self._slots.release()
            self.tally.writing -= 1
        self.finalized.add(index)
        tally, summary = self.tally, self.summary
        tally.succeeded += 1
        tally.bytes_in += planned.source.size or 0
        tally.bytes_out += written
        summary.succeeded += 1
        summary.bytes_in += planned.source.size or 0
        summary.bytes_out += written
        if cost is not None and summary.cost is not None:
            summary.cost += cost
            tally.cost += cost
        log.info(
            "written", input=planned.source.key, output=str(planned.output), task_uuid=task_uuid
        )
        self.reporter.update()

    def fail(self, index: int, failure: Failure, *, sent: bool) -> None:
        """Record that ``todo[index]`` failed."""
        size = (self.todo[index].source.size or 0) if sent else 0
        self.finalized.add(index)
        self.tally.failed += 1
        self.tally.bytes_in += size
        self.summary.failed += 1
        self.summary.bytes_in += size
        self.summary.failures.append(failure)
        log.info("failed", input=failure.input, code=failure.code, reason=failure.message)
        if self.args.fail_fast and not self.stop_requested:
            self.stop_requested = True
            self.reporter.note(
                f"--fail-fast: {failure.input} failed ({failure.code}); sending no new tasks"
            )
        self.reporter.update()

    def _stop_for_full_disk(self, exc: OSError) -> None:
        if self.disk_full:
            return
        self.disk_full = True
        self.stop_requested = True
        reason = exc.strerror or str(exc)
        self.summary.error = (
            f"cannot write into {self.out_dir}: {reason}: stopped sending new tasks at the "
            "first failed write; free some space and rerun the same command to do the rest"
        )
        in_flight = self.in_flight()
        self.reporter.note(
            f"{reason} writing into {self.out_dir}: sending no new tasks; "
            f"waiting for {in_flight} in flight"
        )

    def in_flight(self) -> int:
        """Tasks sent and not answered: exact for the local engine (the tally), else those
        taken and not finished (answers still being written count too)."""
        if self.args.engine == "ray":
            return self.pulled - len(self.finalized)
        return self.tally.in_flight

    # -- Ctrl-C ----------------------------------------------------------------------------------

    def on_sigint(self) -> None:
        """First Ctrl-C: send nothing new. Second: cancel what is in flight."""
        self.interrupts += 1
        if self.interrupts == 1:
            self.stop_requested = True
            in_flight = self.in_flight()
            if self.args.engine == "ray":  # Ray holds the rows: stop taking them at once
                self.reporter.note(
                    f"interrupted: stopping Ray; the {in_flight} inputs not back yet are listed "
                    "as pending (a rerun recovers those the server ran, without running them)"
                )
                return
            self.reporter.note(
                f"interrupted: sending no new tasks; waiting for {in_flight} in flight "
                "(press Ctrl-C again to cancel them)"
            )
            return
        if not self.cancel_requested:
            self.cancel_requested = True
            self.reporter.note("cancelling the tasks in flight; they will be listed as pending")
            if self.on_cancel is not None:
                self.on_cancel()

    async def tick(self) -> None:
        """Redraw the progress every ``--progress-interval`` (at least once a second)."""
        interval = max(self.args.progress_interval, 1.0)
        while True:
            await asyncio.sleep(interval)
            self.reporter.tick()


async def run_local(job: Job, client: UpscaleClient) -> None:
    """The local engine: every task through ``client``, at most ``--concurrency`` in flight.

    The window is ours: an input is taken from ``todo`` only when it can be sent at once, so
    stopping (Ctrl-C, ``--fail-fast``, a full disk) stops new submissions and ``pulled``
    counts exactly what was sent.
    """
    options = dict(job.options)
    factor = options.pop("upscale_factor")
    model = options.pop("model")
    window = asyncio.Semaphore(job.args.concurrency)
    running: set[asyncio.Task[None]] = set()

    async def one(index: int) -> None:
        source = job.todo[index].source
        try:
            # The core derives the taskUUID from the job (attempt 0, then +1 after an error
            # answer) and recovers a task an earlier process of the job already sent.
            result: UpscaleResult = await client.upscale(
                source.image,
                factor=factor,
                model=model,
                timeout=job.args.timeout,
                job_id=job.job_id,
                job_key=source.job_key,
                **options,
            )
        except UpscaleError as exc:
            window.release()
            job.tally.in_flight -= 1
            await job.finish(
                index, getattr(exc, "task_uuid", None) or job.task_uuid(index), error=exc
            )
            return
        window.release()
        job.tally.in_flight -= 1
        timeout = job.args.timeout or 60.0
        await job.finish(
            index,
            result.task_uuid,
            fetch=lambda: result.read_bytes(timeout=timeout),
            cost=result.cost,
        )

    async def feed() -> None:
        for index in range(len(job.todo)):
            await window.acquire()
            if job.stop_requested:
                window.release()
                break
            job.pulled += 1
            job.tally.in_flight += 1
            task = asyncio.create_task(one(index))
            running.add(task)
            task.add_done_callback(running.discard)
        await asyncio.gather(*running, return_exceptions=True)

    feeder = asyncio.create_task(feed())

    def cancel() -> None:
        feeder.cancel()
        for task in list(running):
            task.cancel()

    job.on_cancel = cancel
    await asyncio.gather(feeder, return_exceptions=True)
    await asyncio.gather(*running, return_exceptions=True)


def install_sigint(loop: asyncio.AbstractEventLoop, callback: Callable[[], None]) -> bool:
    """Route SIGINT to ``callback`` on ``loop``; ``False`` where that is impossible (a thread
    other than the main one, Windows), leaving Ctrl-C to raise KeyboardInterrupt."""
    try:
        loop.add_signal_handler(signal.SIGINT, callback)
    except (ValueError, RuntimeError, NotImplementedError):
        return False
    return True
