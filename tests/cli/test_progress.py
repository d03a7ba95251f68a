"""Progress: the tally's rates, the plain lines, and the rich bar."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from upscale_stream.cli.progress import (
    PlainReporter,
    RichReporter,
    Tally,
    describe,
    format_duration,
    format_mb,
)


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_rate_and_eta_come_from_the_finished_tasks_and_the_elapsed_time() -> None:
    tally = Tally(total=10, started=100.0)
    assert tally.rate(100.0) == 0.0
    assert tally.eta(105.0) is None
    tally.succeeded, tally.failed = 3, 1
    assert tally.rate(102.0) == 2.0
    assert tally.eta(102.0) == 3.0


def test_durations_and_sizes_read_like_a_person_would_write_them() -> None:
    assert [format_duration(s) for s in (None, 4.4, 65, 3725)] == ["-", "4s", "1m05s", "1h02m"]
    assert format_mb(1_250_000) == "1.2 MB"


def test_a_plain_line_shows_done_failed_rate_megabytes_and_eta() -> None:
    tally = Tally(total=40, succeeded=11, failed=1, bytes_in=1_200_000, bytes_out=4_500_000)
    tally.started = 96.0
    assert describe(tally, 100.0) == (
        "progress: 12/40 done (11 ok, 1 failed), 3.0 tasks/s, in 1.2 MB, out 4.5 MB, ETA 9s"
    )


def test_plain_lines_come_at_most_once_per_interval_and_once_more_at_the_end() -> None:
    clock = FakeClock()
    stream = io.StringIO()
    tally = Tally(total=5, started=clock.now)
    reporter = PlainReporter(tally, stream, interval=5.0, clock=clock)
    reporter.start()
    printed = []
    for _ in range(4):
        tally.succeeded += 1
        clock.now += 2.0
        reporter.update()
        printed.append(stream.getvalue().count("\n"))
    assert printed == [0, 0, 1, 1]  # at 2, 4, 6 and 8 s: only 6 s is 5 s after the start
    tally.succeeded += 1
    reporter.stop()
    lines = stream.getvalue().splitlines()
    assert lines[-1].startswith("progress: 5/5 done")
    assert len(lines) == 2


def test_interval_zero_writes_a_line_per_update_and_no_duplicate_at_the_end() -> None:
    stream = io.StringIO()
    tally = Tally(total=2)
    reporter = PlainReporter(tally, stream, interval=0)
    reporter.start()
    for _ in range(2):
        tally.succeeded += 1
        reporter.update()
    reporter.note("a note")
    reporter.stop()
    assert [line.split(" done")[0] for line in stream.getvalue().splitlines()] == [
        "progress: 1/2",
        "progress: 2/2",
        "a note",
    ]


def test_the_rich_bar_shows_counts_rate_bytes_and_eta_on_a_terminal() -> None:
    stream = io.StringIO()
    console = Console(file=stream, force_terminal=True, width=160)
    tally = Tally(total=4, started=0.0)
    reporter = RichReporter(tally, console, clock=lambda: 2.0)
    reporter.start()
    tally.succeeded, tally.failed, tally.in_flight, tally.bytes_out = 2, 1, 1, 3_000_000
    reporter.update()
    reporter.note("embedded server at ws://127.0.0.1:1/v1")
    reporter.stop()
    text = stream.getvalue()
    for part in (
        "3/4",
        "1 failed",
        "1 in flight",
        "1.5/s",
        "3.0 MB out",
        "ETA 1s",
        "ws://127.0.0.1",
    ):
        assert part in text
    assert "\x1b[" in text


def _last_frame(stream: io.StringIO) -> str:
    return stream.getvalue().split("\r")[-1]


@pytest.mark.parametrize("total", [100, 48_000, 1_000_000, 10_000_000])
def test_at_80_columns_the_count_the_total_and_the_in_flight_figure_are_never_cut(total) -> None:
    stream = io.StringIO()
    console = Console(file=stream, force_terminal=True, width=80, color_system=None)
    done = total * 48 // 100
    tally = Tally(total=total, started=0.0, succeeded=done, failed=1234, in_flight=64)
    tally.bytes_out = 123_456_789_000
    reporter = RichReporter(tally, console, clock=lambda: 3600.0)
    reporter.start()
    reporter.stop()
    frame = _last_frame(stream)
    assert "…" not in frame
    assert f"{done + 1234}/{total}" in frame
    assert "1234 failed" in frame and "64 in flight" in frame
    assert "━" in frame  # the bar keeps its place
    visible = frame.replace("\x1b[2K", "").split("\n")[0]
    assert len(visible) <= 80


def test_byte_counts_use_the_unit_that_reads_best() -> None:
    assert [format_mb(n) for n in (512, 48_000, 1_250_000, 3_400_000_000)] == [
        "512 B",
        "48 KB",
        "1.2 MB",
        "3.4 GB",
    ]
