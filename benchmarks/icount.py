"""Instructions per task of one contender, counted by callgrind: a figure the machine's load
does not move (runs repeat to about 0.5 %), for A/B comparisons on a shared or noisy host.

    python -m benchmarks.icount [--src DIR] [--contender upscale_stream_client.py]
        [--group 50] [--tasks 4000] [--uvloop] [-- extra contender arguments, e.g. --api many]
    python -m benchmarks.icount --inproc upscale|many|floor [--src DIR] [--group 50] ...

Starts ``stub_server.py`` natively on a free loopback port, runs the contender under
``valgrind --tool=callgrind --instr-atstart=no`` with ``UPSCALE_BENCH_ICOUNT=1`` (its meter
switches collection on and off around the measured phase: imports and connect are left out),
and prints the client process's user-space instructions per task. ``--src`` puts another
revision's ``src`` first on the contender's PYTHONPATH (``git archive REV src | tar -x -C DIR``).
With ``--inproc MODE`` it counts :mod:`benchmarks.inproc` instead: the client (or the floor's
loop) against a fake socket in the same process, which repeats closest of all (no second
process whose pace changes how frames batch; the real-socket count can move by a few per cent
with that).
System calls are not counted: pair it with ``strace -f -c``. Needs valgrind (Debian:
``apt-get install valgrind``).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from .profile_client import spawned_stub

HERE = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--src", type=Path, default=HERE.parent / "src", help="the client's src")
    parser.add_argument("--contender", default="upscale_stream_client.py")
    parser.add_argument("--group", type=int, default=50, help="results per stub frame")
    parser.add_argument("--tasks", type=int, default=4000)
    parser.add_argument("--window", type=int, default=500)
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--uvloop", action="store_true")
    parser.add_argument("--inproc", choices=("upscale", "many", "floor"), help="in one process")
    parser.add_argument("extra", nargs="*", help="more contender arguments (after --)")
    args = parser.parse_args()
    if not available():
        raise SystemExit("needs valgrind and callgrind_control (apt-get install valgrind)")
    sizes = ["--tasks", str(args.tasks), "--window", str(args.window), "--batch", str(args.batch)]
    loop = ["--uvloop"] if args.uvloop else []
    if args.inproc:
        script = ["-m", "benchmarks.inproc", "--mode", args.inproc, "--group", str(args.group)]
        count = callgrind([*script, *sizes, "--reps", "1", *loop], args.src, "benchmarks.inproc")
        print(
            f"inproc {args.inproc} group {args.group}: {count / args.tasks:,.0f} "
            f"instructions per task, the fake socket's own work included ({args.src})"
        )
        return
    with spawned_stub(args.group) as url:
        script = [str(HERE / "contenders" / args.contender), "--url", url]
        extra = ["--delivery", "sync", *loop, *args.extra]
        count = callgrind([*script, *sizes, *extra], args.src, "the contender")
    print(
        f"{args.contender} {' '.join(args.extra)} group {args.group}: "
        f"{count / args.tasks:,.0f} instructions per task ({args.src})"
    )


# The shapes RESULTS.md counts: (label, contender, extra arguments, results per frame, uvloop).
# The lean yardstick (contenders/lean_callers.py) is no client: what upscale()'s shape (one
# caller awaiting each task) costs with no library at all, to weigh upscale()'s targets with.
SHAPES: tuple[tuple[str, str, tuple[str, ...], int, bool], ...] = (
    ("raw floor", "raw_floor.py", (), 50, False),
    ("raw floor + uvloop", "raw_floor.py", (), 50, True),
    ("upscale()", "upscale_stream_client.py", ("--api", "upscale"), 50, False),
    ("upscale() + uvloop", "upscale_stream_client.py", ("--api", "upscale"), 50, True),
    ("upscale_many", "upscale_stream_client.py", ("--api", "many"), 50, False),
    ("upscale_many + uvloop", "upscale_stream_client.py", ("--api", "many"), 50, True),
    ("lean per-caller yardstick", "lean_callers.py", (), 50, False),
    ("lean per-caller yardstick + uvloop", "lean_callers.py", (), 50, True),
    ("raw floor + uvloop", "raw_floor.py", (), 1, True),
    ("upscale() + uvloop", "upscale_stream_client.py", ("--api", "upscale"), 1, True),
    ("upscale_many + uvloop", "upscale_stream_client.py", ("--api", "many"), 1, True),
)


def available() -> bool:
    """Whether valgrind and callgrind_control are installed."""
    return shutil.which("valgrind") is not None and shutil.which("callgrind_control") is not None


def count_shapes(tasks: int = 4000, window: int = 500, batch: int = 50) -> list[dict[str, Any]]:
    """Instructions per task over a real socket for every shape of :data:`SHAPES` (one stub per
    frame size, the client under callgrind): the rows of RESULTS.md's instruction table."""
    sizes = ["--tasks", str(tasks), "--window", str(window), "--batch", str(batch)]
    rows: list[dict[str, Any]] = []
    for group in sorted({shape[3] for shape in SHAPES}, reverse=True):
        with spawned_stub(group) as url:
            for label, contender, extra, shape_group, uvloop in SHAPES:
                if shape_group != group:
                    continue
                script = [str(HERE / "contenders" / contender), "--url", url]
                loop = ["--uvloop"] if uvloop else []
                arguments = [*script, *sizes, "--delivery", "sync", *loop, *extra]
                count = callgrind(arguments, HERE.parent / "src", label)
                rows.append(
                    {
                        "label": label,
                        "group": group,
                        "uvloop": uvloop,
                        "instructions_per_task": round(count / tasks),
                    }
                )
    return rows


def callgrind(arguments: list[str], src: Path, what: str) -> int:
    """Run ``python ARGUMENTS`` under callgrind with ``src`` first on its path; return the
    instructions its measured phase collected (it switches collection on and off itself)."""
    command = [
        "valgrind",
        "--tool=callgrind",
        "--instr-atstart=no",
        "--callgrind-out-file=/dev/null",
        sys.executable,
        *arguments,
    ]
    env = dict(
        os.environ,
        UPSCALE_BENCH_ICOUNT="1",
        PYTHONHASHSEED="0",
        PYTHONPATH=os.pathsep.join([str(src.resolve()), str(HERE.parent)]),
    )
    run = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    found = re.search(r"Collected : (\d+)", run.stderr)
    if run.returncode != 0 or found is None:
        raise SystemExit(f"{what} failed (exit {run.returncode}):\n{run.stderr[-2000:]}")
    return int(found[1])


if __name__ == "__main__":
    main()
