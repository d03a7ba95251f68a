"""Profile upscale_stream's hot path against the benchmark stub (one process, one command).

    python -m benchmarks.profile_client --mode many --group 50 --tasks 20000 [--profile] [--uvloop]

Starts ``stub_server.py`` on a free loopback port, runs ``--tasks`` tasks through
``upscale_many`` (``--mode many``) or through ``upscale()`` from ``--window`` worker coroutines
(``--mode upscale``), prints tasks/s and the client's CPU per task, and with ``--profile`` the
top functions by own time (cProfile inflates small calls; use it to rank, not to measure).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import pstats
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

IMAGE = "11111111-2222-4333-8444-555555555555"


async def run(url: str, mode: str, tasks: int, window: int, batch: int) -> str:
    from upscale_stream import UpscaleClient

    async with UpscaleClient(
        api_key="bench-key", url=url, max_in_flight=window, max_batch=batch
    ) as client:
        await client.upscale(IMAGE)
        start, cpu = time.perf_counter(), time.process_time()
        await drive(client, mode, tasks, window)
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    return f"{mode}: {tasks / wall:,.0f} tasks/s, {cpu / tasks * 1e6:.1f} us CPU/task"


async def drive(client: Any, mode: str, tasks: int, window: int) -> None:
    """The profiled workload: one ``upscale_many`` over ``tasks`` image UUIDs, or ``window``
    callers of ``upscale()`` taking the ``tasks`` in turn (also :mod:`benchmarks.inproc`'s)."""
    if mode == "many":
        async for _ in client.upscale_many([IMAGE] * tasks):
            pass
        return
    todo = iter(range(tasks))

    async def worker() -> None:
        for _ in todo:
            await client.upscale(IMAGE)

    await asyncio.gather(*(worker() for _ in range(window)))


@contextlib.contextmanager
def spawned_stub(group: int) -> Iterator[str]:
    """Run ``stub_server.py`` (``group`` results per frame) on a free loopback port; yield its
    URL, and stop it at the end."""
    with tempfile.TemporaryDirectory() as tmp:
        ready = Path(tmp) / "port"
        stub = subprocess.Popen(
            [
                sys.executable,
                str(Path(__file__).with_name("stub_server.py")),
                "--port",
                "0",
                "--group",
                str(group),
                "--ready-file",
                str(ready),
            ],
            stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 10
            while not ready.exists() or not ready.read_text().strip():
                if time.monotonic() > deadline or stub.poll() is not None:
                    raise SystemExit("the stub server did not start")
                time.sleep(0.05)  # polling a file another process writes
            yield f"ws://127.0.0.1:{ready.read_text().strip()}"
        finally:
            stub.terminate()
            stub.wait(timeout=10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mode", choices=("many", "upscale"), default="many")
    parser.add_argument("--tasks", type=int, default=20_000)
    parser.add_argument("--window", type=int, default=500)
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--group", type=int, default=50, help="results per stub frame")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--uvloop", action="store_true")
    args = parser.parse_args()
    with spawned_stub(args.group) as url:
        if args.uvloop:
            import uvloop

            uvloop.install()
        job = run(url, args.mode, args.tasks, args.window, args.batch)
        if args.profile:
            profiler = cProfile.Profile()
            print(profiler.runcall(asyncio.run, job))
            pstats.Stats(profiler).sort_stats("tottime").print_stats(25)
        else:
            print(asyncio.run(job))


if __name__ == "__main__":
    main()
