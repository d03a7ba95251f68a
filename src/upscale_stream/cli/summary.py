"""The end of a run: failures with their reasons, totals, the summary file and its text.

:class:`RunSummary` is written to ``DIR/.upscale-stream/summary.json`` (atomically) and printed:
as text, or as the same JSON on standard output with ``--json``. It never holds the API key:
it is built from counts, paths, the server URL and the server's error codes and messages.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from ..errors import (
    APIError,
    ClientClosed,
    ConnectionLost,
    InvalidTask,
    UpscaleError,
    UpscaleTimeout,
)
from ..metrics import Stats
from .manifest import write_file_atomic
from .progress import client_figures, describe_client, format_duration, format_mb

__all__ = ["Failure", "RunSummary", "failure_from", "render_text", "write_summary"]

SHOWN_FAILURES = 50
"""Failures listed in the text summary; the JSON file always has all of them."""


@dataclass(frozen=True, slots=True)
class Failure:
    """One input that failed, and why.

    Attributes:
        input: The source's key (absolute path, URL or UUID).
        code: The server's error code (``invalidInputImage``...), the client's code for an
            input rejected before sending (``corruptImage``...), or ``timeout``,
            ``connectionLost``, ``cancelled``, ``writeFailed``.
        message: The server's message, or what went wrong.
        task_uuid: The task's UUID, when it was sent.
    """

    input: str
    code: str
    message: str
    task_uuid: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The failure with JSON names."""
        return {
            "input": self.input,
            "code": self.code,
            "message": self.message,
            "taskUUID": self.task_uuid,
        }


def failure_from(key: str, error: BaseException, task_uuid: str | None = None) -> Failure:
    """Describe why ``key`` failed, from the error of its outcome or of writing its output."""
    if isinstance(error, APIError):
        return Failure(key, error.code, error.message, task_uuid or error.task_uuid)
    if isinstance(error, InvalidTask):
        return Failure(key, error.code, str(error), task_uuid)
    if isinstance(error, UpscaleTimeout):
        return Failure(key, "timeout", str(error), task_uuid or error.task_uuid)
    if isinstance(error, ConnectionLost):
        return Failure(key, "connectionLost", str(error), task_uuid)
    if isinstance(error, ClientClosed):
        return Failure(key, "cancelled", str(error), task_uuid)
    if isinstance(error, OSError):
        reason = error.strerror or str(error)
        where = f" {error.filename}" if error.filename else ""
        return Failure(key, "writeFailed", f"cannot write{where}: {reason}", task_uuid)
    if isinstance(error, UpscaleError):
        return Failure(key, "error", str(error), task_uuid)
    return Failure(key, "error", repr(error), task_uuid)


@dataclass(slots=True)
class RunSummary:
    """Everything a run did.

    Attributes:
        out_dir: The output folder.
        server: ``embedded`` or the WebSocket URL that was used.
        started_at: Start time, ISO 8601 UTC.
        wall_seconds: Duration of the run.
        inputs: Inputs found.
        skipped: Inputs already done according to the manifest.
        succeeded: Outputs written in this run.
        failed: Inputs that failed in this run.
        pending: Inputs in flight when the run was cancelled (a second Ctrl-C).
        not_started: Inputs never sent because the run stopped early.
        interrupted: Whether Ctrl-C stopped the run.
        bytes_in: Bytes of the inputs sent (local files).
        bytes_out: Bytes of the outputs written.
        cost: Total cost in USD when ``--include-cost`` was given, else ``None``.
        failures: Every failure, in the order they happened.
        error: A failure of the whole run (the server refused the key, could not connect).
        exit_code: The process exit code.
        job_id: The job id the taskUUIDs were derived from (not a secret).
        engine: ``local`` or ``ray``.
        recovered: Outputs a killed run had written but not renamed, put in place at the start.
        client: The client's figures at the end (``client.stats()``), once it connected.
    """

    out_dir: str
    server: str
    started_at: str
    wall_seconds: float = 0.0
    inputs: int = 0
    skipped: int = 0
    succeeded: int = 0
    failed: int = 0
    pending: list[str] = field(default_factory=list)
    not_started: int = 0
    interrupted: bool = False
    bytes_in: int = 0
    bytes_out: int = 0
    cost: float | None = None
    failures: list[Failure] = field(default_factory=list)
    error: str | None = None
    exit_code: int = 0
    job_id: str = ""
    engine: str = "local"
    recovered: int = 0
    client: Stats | None = None

    @property
    def tasks_per_second(self) -> float:
        """Finished tasks (succeeded and failed) per second of wall time."""
        finished = self.succeeded + self.failed
        return finished / self.wall_seconds if self.wall_seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        """The summary with JSON names (the content of ``summary.json``)."""
        body: dict[str, Any] = {
            "outDir": self.out_dir,
            "server": self.server,
            "jobId": self.job_id,
            "engine": self.engine,
            "startedAt": self.started_at,
            "wallSeconds": round(self.wall_seconds, 3),
            "inputs": self.inputs,
            "skipped": self.skipped,
            "recovered": self.recovered,
            "succeeded": self.succeeded,
            "failed": self.failed,
            "pending": len(self.pending),
            "notStarted": self.not_started,
            "interrupted": self.interrupted,
            "tasksPerSecond": round(self.tasks_per_second, 3),
            "bytesIn": self.bytes_in,
            "bytesOut": self.bytes_out,
            "failures": [failure.to_dict() for failure in self.failures],
            "pendingInputs": self.pending,
            "exitCode": self.exit_code,
        }
        if self.cost is not None:
            body["cost"] = round(self.cost, 6)
        if self.error is not None:
            body["error"] = self.error
        if self.client is not None:
            body["client"] = client_figures(self.client)
        return body

    def to_json(self) -> bytes:
        """:meth:`to_dict` as indented JSON with a final newline."""
        return orjson.dumps(self.to_dict(), option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE)


def write_summary(path: Path, summary: RunSummary) -> Path:
    """Write ``summary.json`` atomically (mode 0644 under umask 022); returns its path.

    Raises:
        OSError: it could not be written (a full disk).
    """
    return write_file_atomic(path, summary.to_json())


def render_text(summary: RunSummary, *, summary_path: Path | None, quiet: bool = False) -> str:
    """The summary for people: totals, then the failures with their reasons.

    Args:
        summary: The run's summary.
        summary_path: Where ``summary.json`` was written, to point at it.
        quiet: Leave out the timing line and the paths.
    """
    parts = [f"{summary.succeeded} succeeded", f"{summary.failed} failed"]
    if summary.skipped:
        parts.append(f"{summary.skipped} already done")
    if summary.pending:
        parts.append(f"{len(summary.pending)} pending")
    if summary.not_started:
        parts.append(f"{summary.not_started} not started")
    head = "interrupted" if summary.interrupted else "done"
    lines = [f"{head}: {summary.inputs} inputs: {', '.join(parts)}"]
    if summary.error:
        lines.append(f"error: {summary.error}")
    if not quiet:
        timing = (
            f"wall time {format_duration(summary.wall_seconds)} "
            f"({summary.wall_seconds:.2f} s), {summary.tasks_per_second:.1f} tasks/s, "
            f"in {format_mb(summary.bytes_in)}, out {format_mb(summary.bytes_out)}"
        )
        if summary.cost is not None:
            timing += f", cost ${summary.cost:.4f}"
        lines.append(timing)
        if summary.client is not None:
            lines.append(describe_client(summary.client))
        lines.append(f"outputs: {summary.out_dir}")
        if summary_path is not None:
            lines.append(f"summary: {summary_path}")
    elif summary.cost is not None:
        lines.append(f"cost ${summary.cost:.4f}")
    if summary.failures:
        lines.append("failures:")
        for failure in summary.failures[:SHOWN_FAILURES]:
            lines.append(f"  {failure.input}: {failure.code}: {failure.message}")
        if len(summary.failures) > SHOWN_FAILURES:
            hidden = len(summary.failures) - SHOWN_FAILURES
            lines.append(f"  ... and {hidden} more (see the summary file)")
    if summary.pending:
        lines.append("pending (cancelled in flight; a rerun sends them again):")
        lines.extend(f"  {key}" for key in summary.pending[:SHOWN_FAILURES])
    return "\n".join(lines)
