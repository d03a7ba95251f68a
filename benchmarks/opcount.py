"""Bytecodes per task of the client's hot path, per function (and per line): where the Python
work of a task is, counted exactly, without a profiler's own cost in the figures.

    python -m benchmarks.opcount [--mode upscale|many|floor] [--group 50] [--tasks 3000]
        [--lines 40] [--uvloop]

Runs :mod:`benchmarks.inproc`'s workload (the client against its fake socket, in one process)
under ``sys.settrace`` with ``f_trace_opcodes`` on, and counts every bytecode executed while the
measured phase runs. C code (orjson, msgspec, the event loop) is not counted: pair this with
``benchmarks.icount --inproc``, which counts machine instructions, C included. The fake socket's
own bytecodes (``inproc.py``) and the harness caller's (``profile_client.py``) are in the total.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import sys
from types import FrameType
from typing import Any

from . import inproc

Where = tuple[str, int, str]


def count(
    mode: str, group: int, tasks: int
) -> tuple[collections.Counter[Where], collections.Counter[tuple[str, int]]]:
    """One traced run: bytecodes by (file, first line, function) and by (file, line)."""
    by_function: collections.Counter[Where] = collections.Counter()
    by_line: collections.Counter[tuple[str, int]] = collections.Counter()
    on = False

    def local(frame: FrameType, event: str, arg: Any) -> Any:
        if event == "opcode" and on:
            code = frame.f_code
            name = code.co_filename.rsplit("/", 1)[-1]
            by_function[(name, code.co_firstlineno, code.co_name)] += 1
            by_line[(name, frame.f_lineno)] += 1
        return local

    def tracer(frame: FrameType, event: str, arg: Any) -> Any:
        frame.f_trace_opcodes = True
        return local

    measure = inproc._measure

    def switched(sock: inproc.FakeSocket, flag: bool) -> float:
        nonlocal on
        on = flag
        return measure(sock, flag)

    inproc._measure = switched  # type: ignore[assignment]
    sys.settrace(tracer)
    try:
        asyncio.run(inproc.run(mode, tasks, 500, 50, group))
    finally:
        sys.settrace(None)
        inproc._measure = measure
    return by_function, by_line


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mode", choices=("upscale", "many", "floor"), default="upscale")
    parser.add_argument("--group", type=int, default=50, help="results per answer frame")
    parser.add_argument("--tasks", type=int, default=3000)
    parser.add_argument("--top", type=int, default=40, help="functions listed")
    parser.add_argument("--lines", type=int, default=0, help="also the busiest N lines")
    parser.add_argument("--uvloop", action="store_true")
    args = parser.parse_args()
    if not 1 <= args.tasks <= 100_000:
        raise SystemExit("--tasks must be 1..100,000 (tracing is slow)")
    if args.uvloop:
        import uvloop

        uvloop.install()
    by_function, by_line = count(args.mode, args.group, args.tasks)
    total = sum(by_function.values())
    print(f"{args.mode}, group {args.group}: {total / args.tasks:.1f} bytecodes per task")
    for (name, first, function), n in by_function.most_common(args.top):
        print(f"{n / args.tasks:8.2f}  {name}:{first} {function}")
    for (name, line), n in by_line.most_common(args.lines):
        print(f"{n / args.tasks:8.2f}  {name}:{line}")


if __name__ == "__main__":
    main()
