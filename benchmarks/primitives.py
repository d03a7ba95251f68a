"""What the building blocks of a task cost, in instructions: the yardsticks the targets are
weighed with (how much of a per-task budget is spoken for before any code of ours runs).

    python -m benchmarks.primitives [--what wakeup,uuid4,bucket,future] [--n 50000]

Each primitive runs ``--n`` times under ``valgrind --tool=callgrind --instr-atstart=no``, in a
child process that switches counting on and off around the loop itself, and the same loop with
the primitive left out is subtracted; on asyncio's own loop and on uvloop where it matters:

* ``wakeup``: one caller of an awaited call resumed, as ``upscale()`` with one Task per caller
  needs for every result: a future made, its result set, the Task's wake-up scheduled and run,
  the coroutine resumed (500 callers, one result each a round);
* ``future``: ``loop.create_future()`` alone;
* ``uuid4``: ``str(uuid.uuid4())``, the raw floor's taskUUID;
* ``bucket``: ``bisect_left`` over the 300 latency bounds (``metrics.bucket()``).

Prints one line per primitive and loop: instructions per call. Needs valgrind.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import os
import subprocess
import uuid
from collections.abc import Callable
from pathlib import Path

from .icount import available, callgrind

SRC = Path(__file__).resolve().parent.parent / "src"
CALLERS = 500


def _switch(on: bool) -> None:
    if os.environ.get("UPSCALE_BENCH_ICOUNT"):
        subprocess.run(
            ["callgrind_control", "-i", "on" if on else "off", str(os.getpid())],
            check=True,
            capture_output=True,
        )


async def _wakeups(n: int, empty: bool) -> None:
    """``n`` caller wake-ups (or, ``empty``, the same loop with no caller to wake)."""
    loop = asyncio.get_running_loop()
    rounds = max(1, n // CALLERS)
    futures: list[asyncio.Future[None] | None] = [None] * CALLERS

    async def caller(slot: int) -> None:
        for _ in range(rounds):
            future = loop.create_future()
            futures[slot] = future
            await future

    callers = [] if empty else [asyncio.ensure_future(caller(i)) for i in range(CALLERS)]
    await asyncio.sleep(0)
    _switch(True)
    for _ in range(rounds):
        if not empty:
            for future in futures:
                assert future is not None
                future.set_result(None)
        await asyncio.sleep(0)
    _switch(False)
    await asyncio.gather(*callers)


async def _futures(n: int, empty: bool) -> None:
    loop = asyncio.get_running_loop()
    keep: list[object] = []
    make: Callable[[], object] = (lambda: None) if empty else loop.create_future
    _switch(True)
    for _ in range(n):
        keep.append(make())
    _switch(False)


def _plain(n: int, empty: bool, what: str) -> None:
    keep: list[object] = []
    if what == "uuid4":
        make_uuid = uuid.uuid4
        _switch(True)
        for _ in range(n):
            keep.append(None if empty else str(make_uuid()))
        _switch(False)
        return
    from upscale_stream.metrics import LATENCY_BOUNDS

    bisect_left = bisect.bisect_left
    latencies = [0.0005 + 0.05 * (i % 997) / 997 for i in range(n)]
    _switch(True)
    for latency in latencies:
        keep.append(None if empty else bisect_left(LATENCY_BOUNDS, latency))
    _switch(False)


def child(what: str, loop: str, n: int, empty: bool) -> None:
    """Run one primitive ``n`` times (the child process's side)."""
    if loop == "uvloop":
        import uvloop

        uvloop.install()
    if what == "wakeup":
        asyncio.run(_wakeups(n, empty))
    elif what == "future":
        asyncio.run(_futures(n, empty))
    else:
        _plain(n, empty, what)


def _count(what: str, loop: str, n: int, empty: bool) -> int:
    arguments = ["-m", "benchmarks.primitives", "--child", what, "--loop", loop, "--n", str(n)]
    return callgrind([*arguments, *(["--empty"] if empty else [])], SRC, f"{what} on {loop}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--what", default="wakeup,future,uuid4,bucket")
    parser.add_argument("--n", type=int, default=50_000)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--loop", default="asyncio", help=argparse.SUPPRESS)
    parser.add_argument("--empty", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if not 1 <= args.n <= 1_000_000:
        raise SystemExit("--n must be 1..1,000,000")
    if args.child:
        child(args.child, args.loop, args.n, args.empty)
        return
    if not available():
        raise SystemExit("needs valgrind and callgrind_control (apt-get install valgrind)")
    for what in args.what.split(","):
        loops = ("asyncio", "uvloop") if what in ("wakeup", "future") else ("asyncio",)
        for loop in loops:
            calls = args.n if what != "wakeup" else max(1, args.n // CALLERS) * CALLERS
            cost = _count(what, loop, args.n, False) - _count(what, loop, args.n, True)
            where = f" ({loop})" if len(loops) > 1 else ""
            print(f"{what}{where}: {cost / calls:,.0f} instructions per call")


if __name__ == "__main__":
    main()
