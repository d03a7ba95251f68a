"""What every benchmark contender shares: its command line, its meter and its one-line report.

A contender is a script run as its own process::

    python benchmarks/contenders/NAME.py --url ws://127.0.0.1:PORT --tasks N --window W --batch B
        [--delivery sync|async] [--input FILE] [--rate R] [--uvloop]

It connects, runs N upscale tasks with at most W in flight, and prints exactly one JSON line on
stdout (see ``Meter.report``). Everything else goes to stderr.

This module is imported by contenders that run in the official SDKs' virtual environments too,
so it uses the standard library only.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import gc
import json
import mimetypes
import os
import resource
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any


def _count_instructions(on: bool) -> None:
    """Under ``benchmarks/icount.py`` (callgrind): count instructions only while measured."""
    if os.environ.get("UPSCALE_BENCH_ICOUNT"):
        switch = "on" if on else "off"
        subprocess.run(
            ["callgrind_control", "-i", switch, str(os.getpid())], check=True, capture_output=True
        )


API_KEY = "bench-key"
MODEL = "runware:503@1"  # an AIR id: runware-sdk skips its registry fetch (protocol.md section 9)
FACTOR = 2
#: The input used when no --input file is given: an image UUID, which no client fetches.
IMAGE_UUID = "11111111-2222-4333-8444-555555555555"


def parse_args(
    description: str,
    argv: list[str] | None = None,
    extend: Callable[[argparse.ArgumentParser], None] | None = None,
) -> argparse.Namespace:
    """Parse the command line every contender accepts, plus what ``extend`` adds."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--url", required=True, help="ws://127.0.0.1:PORT of the stub server")
    parser.add_argument("--tasks", type=int, required=True, help="tasks to run")
    parser.add_argument("--window", type=int, default=500, help="most tasks in flight")
    parser.add_argument("--batch", type=int, default=50, help="most tasks per frame")
    parser.add_argument("--delivery", choices=("sync", "async"), default="sync")
    parser.add_argument("--input", type=Path, help="image file sent as a data URI in every task")
    parser.add_argument("--rate", type=float, default=0.0, help="tasks/s to offer; 0 = flat out")
    parser.add_argument("--uvloop", action="store_true", help="run on uvloop if it is installed")
    if extend is not None:
        extend(parser)
    return parser.parse_args(argv)


def input_image(path: Path | None) -> str:
    """Return the ``image`` value of every task: a data URI of ``path``, or a fixed image UUID."""
    if path is None:
        return IMAGE_UUID
    mime = mimetypes.guess_type(path.name)[0] or "image/png"
    return f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode('ascii')}"


def percentile(sorted_values: list[float], fraction: float) -> float | None:
    """Nearest-rank percentile of an ascending list (``None`` when it is empty)."""
    if not sorted_values:
        return None
    rank = max(1, min(len(sorted_values), round(fraction * len(sorted_values) + 0.5)))
    return sorted_values[rank - 1]


def peak_rss_mib() -> float:
    """The process's peak resident set size so far, in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _cpu_s() -> tuple[float, float]:
    """User + system CPU seconds of this process so far, and the system part."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime, usage.ru_stime


class Meter:
    """Wall and CPU time of the measured run, and per-task latencies.

    Call ``start()`` right before the first task is submitted (after imports, connection and any
    warm-up), ``stop()`` right after the last result, then ``report()``.
    """

    def __init__(self, tasks: int) -> None:
        self.tasks = tasks
        self.ok = 0
        self.failed = 0
        self.latencies_s: list[float] = []
        self.first_error: str | None = None
        self._wall0 = self._cpu0 = self._sys0 = 0.0
        self.wall_s = self.cpu_s = self.sys_s = 0.0

    pay_gc_debt = True

    def start(self) -> None:
        """Take the snapshot that the run is measured from.

        Pays the process's start-up debt to the cyclic GC first, for every contender alike:
        the imports leave generation 2 at its threshold with no full collection ever run, so
        the first one (30-60 ms over the ~45k import-time objects on this host) would
        otherwise land inside the measured run of whichever contender allocates most, once
        per process (``benchmarks.gc_probe``). A long-running service pays it once at start.
        ``pay_gc_debt = False`` (the probe's own meter) leaves it where it falls.
        """
        if self.pay_gc_debt:
            gc.collect()
        _count_instructions(True)
        self._cpu0, self._sys0 = _cpu_s()
        self._wall0 = time.perf_counter()

    def stop(self) -> None:
        """Take the closing snapshot."""
        _count_instructions(False)
        self.wall_s = time.perf_counter() - self._wall0
        cpu, system = _cpu_s()
        self.cpu_s, self.sys_s = cpu - self._cpu0, system - self._sys0

    def fail(self, exc: BaseException) -> None:
        """Count one failed task, remembering the first error for the report."""
        self.failed += 1
        if self.first_error is None:
            self.first_error = f"{type(exc).__name__}: {exc}"[:300]

    def report(self, **extra: Any) -> dict[str, Any]:
        """Build the report line; ``extra`` keys are added (for example ``mode`` or RSS samples)."""
        latencies = sorted(self.latencies_s)
        p50 = percentile(latencies, 0.50)
        p99 = percentile(latencies, 0.99)
        line: dict[str, Any] = {
            "tasks": self.tasks,
            "ok": self.ok,
            "failed": self.failed,
            "wall_s": round(self.wall_s, 6),
            "cpu_s": round(self.cpu_s, 6),
            "sys_s": round(self.sys_s, 6),  # the kernel's part of cpu_s
            "lat_p50_ms": None if p50 is None else round(p50 * 1000, 4),
            "lat_p99_ms": None if p99 is None else round(p99 * 1000, 4),
            "peak_rss_mib": round(peak_rss_mib(), 2),
        }
        if self.first_error is not None:
            line["first_error"] = self.first_error
        line.update(extra)
        return line


def emit(line: dict[str, Any]) -> None:
    """Print the one JSON report line on stdout."""
    sys.stdout.write(json.dumps(line) + "\n")
    sys.stdout.flush()


async def run_pool(
    meter: Meter,
    workers: int,
    rate: float,
    call: Callable[[], Awaitable[Any]],
) -> None:
    """Run ``meter.tasks`` calls of ``call`` on a fixed pool of worker coroutines.

    Each worker takes the next task number from a shared counter, so at most ``workers`` calls
    are open at once and no coroutine is created per task. With ``rate`` > 0, task ``i`` falls
    due ``i / rate`` seconds into the run (an offered load); a client that cannot keep up runs
    late, and its lateness counts. A task's latency runs from its **due time** to its return:
    ``t0 + i / rate`` with ``rate``; flat out, the moment a worker was free to take it (its
    window slot opened), which is when it is called.
    """
    loop = asyncio.get_running_loop()
    clock = time.perf_counter
    latencies = meter.latencies_s
    total = meter.tasks
    next_task = 0
    t0 = loop.time()
    c0 = clock()

    async def worker() -> None:
        nonlocal next_task
        while next_task < total:
            index = next_task
            next_task += 1
            if rate > 0:
                due = c0 + index / rate
                delay = t0 + index / rate - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
            else:
                due = clock()
            try:
                await call()
            except Exception as exc:  # a failed task is counted, never fatal to the run
                meter.fail(exc)
                continue
            latencies.append(clock() - due)
            meter.ok += 1

    await asyncio.gather(*(worker() for _ in range(max(1, min(workers, total)))))


def run_main(
    main: Callable[[argparse.Namespace], Coroutine[Any, Any, dict[str, Any]]],
    description: str,
    extend: Callable[[argparse.ArgumentParser], None] | None = None,
) -> None:
    """Parse arguments, run ``main`` on the chosen loop and print its report line.

    ``extend`` may add a contender's own options to the common command line. An exception that
    escapes ``main`` ends the process with status 1 and a message on stderr, so the harness
    reports the contender as failed.
    """
    args = parse_args(description, extend=extend)
    runner: Callable[[Coroutine[Any, Any, dict[str, Any]]], dict[str, Any]] = asyncio.run
    loop_name = "asyncio"
    if args.uvloop:
        try:
            import uvloop  # type: ignore[import-not-found, unused-ignore]
        except ImportError:
            print("uvloop requested but not installed; using asyncio", file=sys.stderr)
        else:
            runner = uvloop.run
            loop_name = "uvloop"
    try:
        line = runner(main(args))
    except KeyboardInterrupt:
        raise
    except BaseException as exc:
        print(f"contender failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        raise SystemExit(1) from exc
    line.setdefault("loop", loop_name)
    emit(line)
