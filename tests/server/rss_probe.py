"""Where the reference server's memory goes under load: live data versus the allocator.

Run it by hand (it is not a test; the figures go into docs/reliability.md)::

    .venv/bin/python -m tests.server.rss_probe --tasks 20000
    .venv/bin/python -m tests.server.rss_probe --held --tasks 10000

With ``--held`` it measures instead a server in a child process (``ServerProcess``, used by
``test_rss_socket.py`` too) whose clients drop their sockets without reading, so that their
sessions hold the answers, in several variants (see :func:`held_answers_report`).

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
import os
import subprocess
import sys
import time
import tracemalloc
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

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


def upscale_tasks(uri: str, count: int) -> list[dict[str, Any]]:
    """``count`` sync x2 upscales of ``uri``, each with a fresh taskUUID."""
    return [
        {
            "taskType": "upscale",
            "taskUUID": str(uuid.uuid4()),
            "inputImage": uri,
            "upscaleFactor": 2,
            "deliveryMethod": "sync",
        }
        for _ in range(count)
    ]


async def client(url: str, count: int, batch: int, uri: str) -> None:
    async with connect(url, max_size=None) as ws:
        await ws.send(orjson.dumps([{"taskType": "authentication", "apiKey": KEY}]).decode())
        await ws.recv()
        sent = 0
        while sent < count:
            size = min(batch, count - sent)
            tasks = upscale_tasks(uri, size)
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


# -- held answers over a real socket, in a server child process ------------------------------

ROOT = Path(__file__).resolve().parents[2]


def vm_rss(pid: int) -> int:
    """Resident set size of process ``pid`` in bytes (``VmRSS`` of ``/proc/<pid>/status``)."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS line for process {pid}")


def _child(options: dict[str, Any]) -> None:
    """The server child: start a server, print its URL, obey stdin lines until EOF.

    ``options``: ``encoder`` (``"compact"``, or ``"orjson"`` to hold answers in
    ``orjson.dumps`` bytes as before ``compact_json``), ``trim`` (False: the sweep's
    ``malloc_trim`` does nothing), ``config`` (``ServerConfig`` fields) and, for
    diagnostics, ``tombstones`` (how many expired image UUIDs the image store remembers).
    Commands, one a line, each answered with one JSON line: ``advance SECONDS`` moves the
    server's clock on; ``figures`` tells what the server holds; ``trim`` calls
    ``malloc_trim(0)``; with ``PYTHONTRACEMALLOC`` set, ``mark`` takes a snapshot and
    ``top N`` lists what grew since; ``mallocstats`` writes pymalloc's arena statistics to
    the child's stderr.
    """
    from upscale_stream.server import app as app_module
    from upscale_stream.server import sessions

    if "tombstones" in options:  # diagnostics: how many expired image UUIDs are remembered
        from upscale_stream.server import image_store

        image_store._MAX_TOMBSTONES = int(options["tombstones"])  # type: ignore[misc]
    if options.get("encoder") == "orjson":
        sessions.compact_json = orjson.dumps  # type: ignore[assignment]
    trims = [0]
    real_trim = app_module.trim_heap

    def counted_trim() -> bool:
        trimmed = real_trim() if options.get("trim", True) else False
        trims[0] += 1
        return trimmed

    app_module.trim_heap = counted_trim
    offset = [0.0]
    marks: list[tracemalloc.Snapshot] = []
    config = ServerConfig(
        api_keys=frozenset({KEY}),
        port=0,
        clock=lambda: time.monotonic() + offset[0],
        **options.get("config", {}),
    )

    def figures(server: ReferenceServer) -> dict[str, Any]:
        sessions_now = list(server.registry.sessions.values())
        gc.collect()
        return {
            "python": tracemalloc.get_traced_memory()[0] if tracemalloc.is_tracing() else 0,
            "records": len(server.registry.tasks),
            "images": len(server.images),
            "sessions": len(sessions_now),
            "held": sum(len(s.outbox) for s in sessions_now if not s.attached),
            "held_bytes": sum(
                len(o.body) for s in sessions_now if not s.attached for o in s.outbox
            ),
            "running": sum(s.running for s in sessions_now),
            "trims": trims[0],
        }

    async def run() -> None:
        async with ReferenceServer(config) as server:
            print(orjson.dumps({"url": server.url}).decode(), flush=True)
            loop = asyncio.get_running_loop()
            while line := await loop.run_in_executor(None, sys.stdin.readline):
                command, _, argument = line.strip().partition(" ")
                if command == "advance":
                    offset[0] += float(argument)
                    print("{}", flush=True)
                elif command == "figures":
                    print(orjson.dumps(figures(server)).decode(), flush=True)
                elif command == "mark":
                    gc.collect()
                    marks[:] = [tracemalloc.take_snapshot()]
                    print("{}", flush=True)
                elif command == "top":  # what grew since "mark", with PYTHONTRACEMALLOC=1
                    gc.collect()
                    now = tracemalloc.take_snapshot()
                    stats = (
                        now.compare_to(marks[0], "lineno") if marks else now.statistics("lineno")
                    )
                    top = [str(stat) for stat in stats[: int(argument)]]
                    print(orjson.dumps(top).decode(), flush=True)
                elif command == "mallocstats":  # pymalloc's arenas, on the child's stderr
                    gc.collect()
                    sys._debugmallocstats()
                    print("{}", flush=True)
                elif command == "trim":
                    print(orjson.dumps({"trimmed": real_trim()}).decode(), flush=True)

    asyncio.run(run())


class ServerProcess:
    """A reference server in a child process, so that its RSS is the server's alone.

    Args:
        encoder: ``"compact"`` (the server as it is) or ``"orjson"`` (held answers kept in
            ``orjson.dumps`` bytes, the pre-issue-10 encoding).
        trim: False makes the sweep's ``malloc_trim`` a no-op.
        env: Extra environment of the child (for example ``MALLOC_ARENA_MAX``).
        config: ``ServerConfig`` fields (JSON values).
    """

    def __init__(
        self,
        *,
        encoder: str = "compact",
        trim: bool = True,
        env: dict[str, str] | None = None,
        tombstones: int | None = None,
        **config: Any,
    ) -> None:
        options: dict[str, Any] = {"encoder": encoder, "trim": trim, "config": config}
        if tombstones is not None:
            options["tombstones"] = tombstones
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.server.rss_probe", "--child", orjson.dumps(options)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
            env={**os.environ, **(env or {})},
        )
        self.url = str(self._answer()["url"])

    def _answer(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"the server child exited ({self.process.wait(10)})")
        answer: dict[str, Any] = orjson.loads(line)
        return answer

    def _command(self, line: str) -> dict[str, Any]:
        assert self.process.stdin is not None
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()
        return self._answer()

    @property
    def rss(self) -> int:
        """The child's resident set size, in bytes."""
        return vm_rss(self.process.pid)

    def figures(self) -> dict[str, Any]:
        """Records, images, sessions, held answers, running sync tasks and trims so far."""
        return self._command("figures")

    def advance(self, seconds: float) -> None:
        """Move the server's clock on by ``seconds`` (its sweep then expires what is due)."""
        self._command(f"advance {seconds}")

    def wait_for(self, done: Callable[[dict[str, Any]], bool], timeout: float) -> dict[str, Any]:
        """Poll :meth:`figures` until ``done`` holds; raises TimeoutError after ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            figures = self.figures()
            if done(figures):
                return figures
            if time.monotonic() > deadline:
                raise TimeoutError(f"the server did not get there in {timeout} s: {figures}")
            time.sleep(0.05)  # polling a child process's state, not standing in for an event

    def trim(self) -> None:
        """Call ``malloc_trim(0)`` in the server now."""
        self._command("trim")

    def stop(self) -> None:
        """End the child (EOF on its stdin), killing it if it does not exit in 10 s."""
        if self.process.stdin is not None:
            self.process.stdin.close()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)
        if self.process.stdout is not None:
            self.process.stdout.close()

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


async def send_and_drop(url: str, count: int, batch: int, uri: str) -> str:
    """Authenticate, send ``count`` sync upscales, then drop the socket without reading them.

    A ping after the last frame makes sure the server has registered every task (it answers
    frames in order); then the TCP connection is aborted, with no closing handshake, so the
    session is detached and holds its answers. Returns the session id.
    """
    async with connect(url, max_size=None) as ws:
        await ws.send(orjson.dumps([{"taskType": "authentication", "apiKey": KEY}]).decode())
        session_id = str(orjson.loads(await ws.recv())["data"][0]["connectionSessionUUID"])
        for start in range(0, count, batch):
            tasks = upscale_tasks(uri, min(batch, count - start))
            await ws.send(orjson.dumps(tasks).decode())
        await ws.send(orjson.dumps([{"taskType": "ping", "ping": True}]).decode())
        async with asyncio.timeout(60):
            while "pong" not in str(await ws.recv()):
                pass  # answers that arrive before the pong are not held; the caller counts
        ws.transport.abort()
    return session_id


HELD_CONFIG: dict[str, Any] = {
    # long enough that nothing expires in real time during a load: the clock jumps instead
    "hold_time": 3_600.0,
    "retention": 3_600.0,
    "url_ttl": 3_600.0,
    "sweep_interval": 0.05,
    "task_delay": 0.3,  # answers come after the pong, so the client reads (almost) none
    "workers": 2,
}
EXPIRED = 10_000.0
"""Seconds the clock jumps to expire every held answer, record and image of a run."""


def held_answers_run(
    count: int,
    *,
    encoder: str = "compact",
    trim_in_sweep: bool = True,
    env: dict[str, str] | None = None,
    per_socket: int = 500,
    batch: int = 500,
    reload: bool = False,
    tombstones: int | None = None,
    config: dict[str, Any] | None = None,
) -> dict[str, float]:
    """One run: RSS of a server child at each stage of holding ``count`` dropped answers.

    A warm-up of 200 tasks goes through the same steps first, so the baseline includes the
    worker threads, imports and first allocations. Then ``count`` sync upscales are sent and
    the socket dropped (:func:`send_and_drop`), ``per_socket`` tasks a socket, each socket
    once the previous one's tasks finished (so what runs at once, and its transient memory,
    stays the same whatever ``count`` is); once every task has finished their answers are
    held (``peak``); then the clock jumps past ``hold_time``, ``retention`` and
    ``url_ttl`` and the sweep forgets everything (``expired``: after the sweep's own trim,
    or before any trim when ``trim_in_sweep`` is False; ``trimmed``: after a
    ``malloc_trim(0)`` called then; ``again``: with ``reload``, after the same load once
    more, whose answers are then held).

    Returns:
        RSS in bytes (``baseline``, ``peak``, ``expired``, ``trimmed``, ``again`` or 0),
        ``held`` (answers held at the peak) and ``held_bytes`` (their encoded size).
    """
    uri = png_uri()
    fields = dict(HELD_CONFIG, max_in_flight=max(per_socket, 200), **(config or {}))
    with ServerProcess(
        encoder=encoder, trim=trim_in_sweep, env=env, tombstones=tombstones, **fields
    ) as server:

        def forget_all(trim: bool) -> None:
            """Expire everything; wait until the sweep forgot it (and trimmed, if ``trim``)."""
            trims = server.figures()["trims"] + (1 if trim else 0)
            server.advance(EXPIRED)
            server.wait_for(
                lambda f: f["records"] == f["images"] == f["sessions"] == 0 and f["trims"] >= trims,
                timeout=60,
            )

        asyncio.run(send_and_drop(server.url, 200, 200, uri))
        server.wait_for(lambda f: f["running"] == 0, timeout=60)
        forget_all(trim=False)  # 200 records and 400 images: under the trim threshold
        baseline = server.rss

        def load() -> dict[str, Any]:
            for start in range(0, count, per_socket):
                size = min(per_socket, count - start)
                asyncio.run(send_and_drop(server.url, size, batch, uri))
                done = server.wait_for(lambda f: f["running"] == 0, timeout=120)
            return done

        held = load()
        peak = server.rss
        forget_all(trim=True)  # the sweep trims once it freed 1,000 (no-op: trim_in_sweep off)
        expired = server.rss
        server.trim()
        trimmed = server.rss
        again = 0
        if reload:
            load()
            again = server.rss
    return {
        "baseline": baseline,
        "peak": peak,
        "expired": expired,
        "trimmed": trimmed,
        "held": held["held"],
        "held_bytes": held["held_bytes"],
        "again": again,
    }


def held_answers_report(count: int) -> None:
    """Print the variants table of docs/reliability.md section 7 (held answers, one socket)."""
    variants: list[tuple[str, dict[str, Any]]] = [
        ("compact_json, sweep trims", {}),
        ("compact_json, no trim in sweep", {"trim_in_sweep": False}),
        ("compact_json, MALLOC_ARENA_MAX=2", {"env": {"MALLOC_ARENA_MAX": "2"}}),
        ("compact_json, PYTHONMALLOC=malloc", {"env": {"PYTHONMALLOC": "malloc"}}),
        (
            "compact_json, no UUID counters/tombstones",
            {"tombstones": 0, "config": {"max_counted_uuids": 1}},
        ),
        ("orjson.dumps (pre-fix), sweep trims", {"encoder": "orjson"}),
    ]
    print(f"{count} held answers; RSS in MiB: baseline / peak / after expiry / after trim")
    print("(no trim in sweep: 'after expiry' is before any trim, 'after trim' right after one)")
    for name, options in variants:
        run = held_answers_run(count, **options)
        per_answer = (run["peak"] - run["baseline"]) / max(run["held"], 1)
        print(
            f"{name:<38} {run['baseline'] / MiB:6.1f} / {run['peak'] / MiB:6.1f} / "
            f"{run['expired'] / MiB:6.1f} / {run['trimmed'] / MiB:6.1f}   "
            f"held {run['held']:.0f} ({run['held_bytes'] / max(run['held'], 1):.0f} B each), "
            f"{per_answer:.0f} B RSS per held answer",
            flush=True,
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=20_000)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--no-trace", action="store_true", help="skip tracemalloc (faster)")
    parser.add_argument(
        "--held",
        action="store_true",
        help="held answers of a dropped socket, server in a child process, per variant",
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.child is not None:
        _child(orjson.loads(options.child))
    elif options.held:
        held_answers_report(options.tasks)
    else:
        asyncio.run(main(options.tasks, options.clients, not options.no_trace))
