"""Where the reference server's memory goes under load: live data versus the allocator.

Run it by hand (it is not a test; the figures go into docs/reliability.md)::

    .venv/bin/python -m tests.server.rss_probe --tasks 20000

It starts a server in this process, runs ``--tasks`` upscales of a tiny PNG from several
raw clients (frames of 500 tasks), and prints at each stage the RSS of the process, the
bytes Python objects hold (tracemalloc), the server's own counts (registry records, stored
images and their bytes), then the same after the clients left, after the records expired,
and after ``malloc_trim(0)``. The difference between RSS and tracemalloc is memory the
allocator holds but Python does not use.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import ctypes
import gc
import io
import time
import tracemalloc
import uuid

import orjson
from PIL import Image
from websockets.asyncio.client import connect

from upscale_stream.server import ReferenceServer, ServerConfig

KEY = "rss-probe-key-0123456789"
MiB = 1024 * 1024


def rss() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * 4096 / MiB


def png_uri() -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (10, 20, 30)).save(buffer, "PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def report(stage: str, server: ReferenceServer) -> None:
    gc.collect()
    traced = tracemalloc.get_traced_memory()[0] / MiB if tracemalloc.is_tracing() else 0.0
    # server.store is the pre-issue-10 name, so the probe also runs on the old tree.
    registry = getattr(server, "registry", None) or server.store
    records = len(registry.tasks)
    images = len(server.images)
    print(
        f"{stage:<28} rss {rss():7.1f} MiB  python {traced:7.1f} MiB  "
        f"records {records:7d}  images {images:7d} ({server.images.bytes_used / MiB:6.1f} MiB)",
        flush=True,
    )


async def client(url: str, count: int, batch: int, uri: str) -> None:
    async with connect(url, max_size=None) as ws:
        await ws.send(orjson.dumps([{"taskType": "authentication", "apiKey": KEY}]).decode())
        await ws.recv()
        sent = 0
        while sent < count:
            size = min(batch, count - sent)
            tasks = [
                {
                    "taskType": "upscale",
                    "taskUUID": str(uuid.uuid4()),
                    "inputImage": uri,
                    "upscaleFactor": 2,
                    "deliveryMethod": "sync",
                }
                for _ in range(size)
            ]
            await ws.send(orjson.dumps(tasks).decode())
            wanted = {t["taskUUID"] for t in tasks}
            while wanted:
                frame = orjson.loads(await ws.recv())
                for items in frame.values():
                    for item in items:
                        wanted.discard(item.get("taskUUID"))
            sent += size


async def main(tasks: int, clients: int, trace: bool) -> None:
    if trace:
        tracemalloc.start()
    clock_offset = [0.0]
    config = ServerConfig(
        api_keys=frozenset({KEY}),
        port=0,
        workers=2,
        clock=lambda: time.monotonic() + clock_offset[0],
    )
    async with ReferenceServer(config) as server:
        report("started", server)
        uri = png_uri()
        started = time.perf_counter()
        await asyncio.gather(
            *(client(server.url, tasks // clients, 500, uri) for _ in range(clients))
        )
        print(f"{tasks} tasks in {time.perf_counter() - started:.1f} s")
        report("after load (clients gone)", server)
        clock_offset[0] = config.retention + config.url_ttl + 1  # records and images expire
        (getattr(server, "registry", None) or server.store).expire(config.clock())
        server.images.expire(config.clock())
        report("after expiry", server)
        libc = ctypes.CDLL("libc.so.6")
        libc.malloc_trim(0)
        report("after malloc_trim(0)", server)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=20_000)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--no-trace", action="store_true", help="skip tracemalloc (faster)")
    options = parser.parse_args()
    asyncio.run(main(options.tasks, options.clients, not options.no_trace))
