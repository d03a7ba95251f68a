"""Progress of a run: the counters, a rich progress bar, and the plain fallback.

:class:`Tally` holds the counts and computes rates from a ``now`` it is given, so it is pure.
A reporter shows it: :class:`RichReporter` draws a live bar (tasks done of the total, failed,
in flight, tasks/s, bytes out, ETA) laid out to fit 80 columns, the bar taking what is left, when
standard output is a terminal; :class:`PlainReporter` writes one line
every ``interval`` seconds to a stream (standard error) otherwise, and with ``--quiet`` or
``--json``. Both print notes (a line of status) without breaking the bar, and
:func:`logging_through` sends the library's log lines through them too.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol, TextIO

from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TaskID, TextColumn

from ..metrics import Stats

__all__ = [
    "PlainReporter",
    "Reporter",
    "RichReporter",
    "Tally",
    "client_figures",
    "describe",
    "describe_client",
    "format_duration",
    "format_mb",
    "logging_through",
]


@dataclass(slots=True)
class Tally:
    """The counts of one run.

    Attributes:
        total: Inputs to process in this run (those already done are not counted).
        skipped: Inputs skipped because the manifest says they are done.
        succeeded: Outputs written.
        failed: Inputs that failed (rejected, failed by the server, or not written).
        in_flight: Tasks sent and not answered yet (the run keeps it exact: +1 when an input
            is handed to the client, -1 when its outcome arrives).
        writing: Tasks answered whose output is still being fetched or written (so that
            done, in flight and writing add up to what was sent, even when the disk or the
            downloads are slower than the server).
        bytes_in: Input bytes of finished tasks (local files only).
        bytes_out: Output bytes written.
        cost: Sum of the costs the server reported (``--include-cost``).
        started: Monotonic time the run started.
    """

    total: int
    skipped: int = 0
    succeeded: int = 0
    failed: int = 0
    in_flight: int = 0
    writing: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    cost: float = 0.0
    started: float = 0.0

    @property
    def finished(self) -> int:
        """Inputs finished so far, successes and failures."""
        return self.succeeded + self.failed

    def elapsed(self, now: float) -> float:
        """Seconds since the start."""
        return max(0.0, now - self.started)

    def rate(self, now: float) -> float:
        """Finished tasks per second so far (0 before the first one)."""
        elapsed = self.elapsed(now)
        return self.finished / elapsed if elapsed > 0 else 0.0

    def eta(self, now: float) -> float | None:
        """Seconds left at the current rate, or ``None`` before there is a rate."""
        rate = self.rate(now)
        if rate <= 0:
            return None
        return max(0, self.total - self.finished) / rate


def format_mb(count: int) -> str:
    """Bytes in the unit that reads best: ``512 B``, ``48 KB``, ``1.2 MB``, ``3.4 GB``.

    (The name stays from when it always said MB, which printed 48 KB as ``0.0 MB``.)
    """
    if count < 1000:
        return f"{count} B"
    if count < 1_000_000:
        return f"{count / 1000:.0f} KB"
    if count < 1_000_000_000:
        return f"{count / 1_000_000:.1f} MB"
    return f"{count / 1_000_000_000:.1f} GB"


def format_duration(seconds: float | None) -> str:
    """``42s``, ``3m05s``, ``1h02m``; ``-`` when unknown."""
    if seconds is None:
        return "-"
    whole = round(seconds)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    return f"{whole // 3600}h{whole % 3600 // 60:02d}m"


def describe(tally: Tally, now: float) -> str:
    """One plain progress line."""
    return (
        f"progress: {tally.finished}/{tally.total} done ({tally.succeeded} ok, "
        f"{tally.failed} failed), {tally.rate(now):.1f} tasks/s, in {format_mb(tally.bytes_in)}, "
        f"out {format_mb(tally.bytes_out)}, ETA {format_duration(tally.eta(now))}"
    )


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.0f} ms"


def describe_client(stats: Stats) -> str:
    """The client's figures in one line, for the run's summary (``client.stats()``)."""
    latency = stats.latency
    return (
        f"client: {stats.frames_sent} frames out ({format_mb(stats.bytes_sent)}), "
        f"{stats.frames_received} in ({format_mb(stats.bytes_received)}), "
        f"{stats.reconnects} reconnects, {stats.retried} retried, {stats.resent} resent, "
        f"{stats.replayed} replayed, {stats.fetched} fetched; latency p50 {_ms(latency.p50)}, "
        f"p90 {_ms(latency.p90)}, p99 {_ms(latency.p99)}"
    )


def client_figures(stats: Stats) -> dict[str, Any]:
    """The client's figures with the JSON names of ``summary.json`` (camelCase)."""
    latency = stats.latency
    return {
        "submitted": stats.submitted,
        "succeeded": stats.succeeded,
        "failed": stats.failed,
        "failedByCode": dict(stats.failed_by_code),
        "retried": stats.retried,
        "resent": stats.resent,
        "replayed": stats.replayed,
        "fetched": stats.fetched,
        "framesSent": stats.frames_sent,
        "framesReceived": stats.frames_received,
        "bytesSent": stats.bytes_sent,
        "bytesReceived": stats.bytes_received,
        "reconnects": stats.reconnects,
        "window": stats.window,
        "latency": {
            "count": latency.count,
            "p50": latency.p50,
            "p90": latency.p90,
            "p99": latency.p99,
            "windowSeconds": latency.window,
        },
    }


class Reporter(Protocol):
    """What the run command calls while it works."""

    def start(self) -> None:
        """The run begins (``tally.started`` is set)."""

    def update(self) -> None:
        """The tally changed."""

    def tick(self) -> None:
        """Called every few seconds, so a stalled run still shows signs of life."""

    def note(self, text: str) -> None:
        """Show one line of status."""

    def stop(self) -> None:
        """The run is over: show the final state."""


class PlainReporter:
    """Plain progress lines, at most one per ``interval`` seconds, plus a last one at the end.

    Args:
        tally: The counts to show.
        stream: Where lines go (standard error).
        interval: Seconds between lines; 0 writes one after every finished task.
        clock: Monotonic time source.
    """

    def __init__(
        self,
        tally: Tally,
        stream: TextIO,
        *,
        interval: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.tally = tally
        self.stream = stream
        self.interval = interval
        self.clock = clock
        self._last: float | None = None
        self._shown: tuple[int, int] | None = None

    def start(self) -> None:
        self._last = self.clock()

    def update(self) -> None:
        self._maybe_print()

    def tick(self) -> None:
        self._maybe_print()

    def note(self, text: str) -> None:
        print(text, file=self.stream, flush=True)

    def stop(self) -> None:
        if self._shown != (self.tally.succeeded, self.tally.failed):
            self._print(self.clock())

    def _maybe_print(self) -> None:
        now = self.clock()
        if self._last is None or now - self._last >= self.interval:
            self._print(now)

    def _print(self, now: float) -> None:
        self._last = now
        self._shown = (self.tally.succeeded, self.tally.failed)
        print(describe(self.tally, now), file=self.stream, flush=True)


class RichReporter:
    """A live rich progress bar on a terminal, laid out for 80 columns.

    One line: a spinner, the bar, then ``done/total``, failed, in flight, tasks/s, bytes written
    and the ETA as one text of known width. The bar takes whatever width is left, so at 80
    columns the counts and the total are never cut (rich would cut a column with ``…``).

    Args:
        tally: The counts to show.
        console: The rich console to draw on (standard output).
        clock: Monotonic time source.
    """

    def __init__(
        self, tally: Tally, console: Console, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.tally = tally
        self.clock = clock
        self.progress = Progress(
            SpinnerColumn(),
            BarColumn(bar_width=None),
            TextColumn("{task.fields[line]}"),
            console=console,
            refresh_per_second=8,
            expand=True,
        )
        self._task: TaskID | None = None

    def start(self) -> None:
        self._task = self.progress.add_task(
            "upscale", total=max(1, self.tally.total), line=self.line()
        )
        self.progress.start()

    def update(self) -> None:
        if self._task is not None:
            self.progress.update(self._task, completed=self.tally.finished, line=self.line())

    def tick(self) -> None:
        self.update()

    def note(self, text: str) -> None:
        self.progress.console.print(text, markup=False, highlight=False)

    def stop(self) -> None:
        self.update()
        self.progress.stop()

    def line(self) -> str:
        """The text right of the bar (rich markup), for example
        ``48/100 · 2 failed · 64 in flight · 12.5/s · 4.1 MB out · ETA 4s``, with
        ``· 16 writing`` after the tasks in flight while answered outputs are being written.

        Fields are dropped from the right end of the priority list (bytes, then rate, then ETA,
        then writing) when the console is too narrow for them and a bar of :data:`MIN_BAR`
        cells; the count, the total, the failures and the tasks in flight always stay.
        """
        now = self.clock()
        tally = self.tally
        failed = f"[red]{tally.failed} failed[/]" if tally.failed else "0 failed"
        fields = [
            (f"[bold]{tally.finished}/{tally.total}[/]", f"{tally.finished}/{tally.total}"),
            (failed, f"{tally.failed} failed"),
            (f"{tally.in_flight} in flight", f"{tally.in_flight} in flight"),
        ]
        if tally.writing:
            fields.append((f"{tally.writing} writing", ""))
        eta = f"ETA {format_duration(tally.eta(now))}"
        fields += [
            (eta, ""),
            (f"{tally.rate(now):.1f}/s", ""),
            (f"{format_mb(tally.bytes_out)} out", ""),
        ]
        room = self.progress.console.width - _SPINNER - MIN_BAR - 2
        shown: list[str] = []
        used = -len(_SEP)
        for markup, plain in fields:
            width = len(plain or markup) + len(_SEP)
            if shown and len(shown) >= 3 and used + width > room:
                break
            shown.append(markup)
            used += width
        if eta in shown:  # ETA reads last, as on every progress bar
            shown.remove(eta)
            shown.append(eta)
        return _SEP.join(shown)


MIN_BAR = 10
"""The fewest cells the bar keeps; the text gives up fields before the bar goes below it."""
_SPINNER = 2
_SEP = " · "


class _ReporterHandler(logging.Handler):
    """Sends log lines through the reporter, so they print above a progress bar."""

    def __init__(self, reporter: Reporter) -> None:
        super().__init__()
        self.reporter = reporter

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.reporter.note(self.format(record))
        except Exception:
            self.handleError(record)


def _quiet_websockets(record: logging.LogRecord) -> bool:
    """Hide the embedded server's socket chatter (connection open/closed) below -vv."""
    return record.levelno >= logging.WARNING or not record.name.startswith(_WEBSOCKETS_LOGGER)


_WEBSOCKETS_LOGGER = "upscale_stream.server.websockets"


@contextlib.contextmanager
def logging_through(reporter: Reporter, verbosity: int) -> Iterator[None]:
    """Show the library's log lines through ``reporter`` while the ``with`` block runs.

    Args:
        reporter: Where the lines go (above the progress bar, or to standard error).
        verbosity: 0 for warnings only, 1 (``-v``) for one line per task, 2 (``-vv``) for
            everything, the embedded server's socket events included.
    """
    logger = logging.getLogger("upscale_stream")
    level = logging.WARNING if verbosity <= 0 else logging.INFO if verbosity == 1 else logging.DEBUG
    handler = _ReporterHandler(reporter)
    handler.setLevel(level)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    if verbosity < 2:
        handler.addFilter(_quiet_websockets)
    previous = logger.level
    logger.addHandler(handler)
    logger.setLevel(level)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous)
