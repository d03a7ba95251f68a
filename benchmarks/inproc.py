"""The client's hot path in one process, against a fake socket: a figure no other process moves.

    python -m benchmarks.inproc [--mode upscale|many|floor] [--group 50] [--tasks 30000]
        [--window 500] [--batch 50] [--uvloop] [--reps 3]

The client (or, with ``--mode floor``, the raw floor's loop: websockets' place taken by the same
fake) talks to :class:`FakeSocket`, which answers every task frame at once, ``--group`` results
to a frame, in the same process. Its own CPU is timed and subtracted from the per-task figure.
There is no kernel, no second process and no scheduling between them, so a run repeats closely;
under ``valgrind --tool=callgrind --instr-atstart=no`` with ``UPSCALE_BENCH_ICOUNT=1`` the
measured phase switches instruction counting on and off itself (``benchmarks.icount --inproc``
does that), and the count repeats to about 0.5 %. What it leaves out: websockets' framing and
the socket system calls, which every contender pays alike (``benchmarks.icount`` without
``--inproc`` counts the real socket).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import subprocess
import sys
import time
import uuid
from typing import Any

import orjson

from .profile_client import IMAGE, drive

_AUTH_OK = (
    b'{"data":[{"taskType":"authentication",'
    b'"connectionSessionUUID":"aaaaaaaa-2222-4333-8444-555555555555"}]}'
)
_PONG = b'{"data":[{"taskType":"ping","pong":true}]}'


class _Transport:
    def abort(self) -> None:
        """Nothing to abort: there is no socket."""

    def is_closing(self) -> bool:
        return False


class FakeSocket:
    """Stands in for the client's socket: every task is answered as soon as it is sent."""

    def __init__(self, group: int) -> None:
        self.group = group
        self.inbox: collections.deque[bytes] = collections.deque()
        self.waiter: asyncio.Future[None] | None = None
        self.transport = _Transport()
        self.own_cpu = 0.0  # the fake's own CPU seconds, subtracted from the client's
        self.frames_out = 0
        self.frames_in = 0

    async def send(self, frame: bytes | str, text: bool = True) -> None:
        """Take one frame from the client and queue its answers."""
        started = time.process_time()
        self.frames_out += 1
        answers = []
        for item in orjson.loads(frame):
            kind = item.get("taskType")
            if kind == "authentication":
                self.inbox.append(_AUTH_OK)
            elif kind == "ping":
                self.inbox.append(_PONG)
            else:
                key = item["taskUUID"].encode()
                answers.append(
                    b'{"taskType":"upscale","taskUUID":"%s","imageUUID":"%s","inputImageUUID":"'
                    b'%s","imageURL":"http://127.0.0.1:1/r/%s.png"}'
                    % (key, key, IMAGE.encode(), key)
                )
        for start in range(0, len(answers), self.group):
            self.inbox.append(b'{"data":[' + b",".join(answers[start : start + self.group]) + b"]}")
        waiter = self.waiter
        if waiter is not None and not waiter.done() and self.inbox:
            waiter.set_result(None)
        self.own_cpu += time.process_time() - started

    async def recv(self, decode: bool | None = False) -> bytes:
        """The next queued answer frame (waits for one)."""
        while not self.inbox:
            self.waiter = asyncio.get_running_loop().create_future()
            await self.waiter
        self.frames_in += 1
        return self.inbox.popleft()

    async def close(self) -> None:
        """Nothing to close."""


def _measure(sock: FakeSocket, on: bool) -> float:
    """Switch the measured phase on or off; returns the process CPU minus the fake's, so far."""
    if os.environ.get("UPSCALE_BENCH_ICOUNT"):
        subprocess.run(
            ["callgrind_control", "-i", "on" if on else "off", str(os.getpid())],
            check=True,
            capture_output=True,
        )
    return time.process_time() - sock.own_cpu


async def _client_run(mode: str, sock: FakeSocket, tasks: int, window: int, batch: int) -> float:
    from upscale_stream import UpscaleClient
    from upscale_stream import connection as connection_module

    async def fake_open(self: Any) -> FakeSocket:
        return sock

    connection_module.Connection._open = fake_open  # type: ignore[method-assign,assignment]
    async with UpscaleClient(
        api_key="bench-key", url="ws://127.0.0.1:1", max_in_flight=window, max_batch=batch
    ) as client:
        await client.upscale(IMAGE)  # connects and authenticates, outside the measured phase
        start = _measure(sock, True)
        await drive(client, mode, tasks, window)
        return _measure(sock, False) - start


async def _floor_run(sock: FakeSocket, tasks: int, window: int, batch: int) -> float:
    """``contenders/raw_floor.py``'s loop, flat out, on the fake socket."""
    await sock.send(orjson.dumps([{"taskType": "authentication", "apiKey": "k"}]))
    orjson.loads(await sock.recv())
    start = _measure(sock, True)
    sent_at: dict[str, float] = {}
    submitted = done = 0
    clock = time.perf_counter
    latencies: list[float] = []

    async def send_array(count: int) -> None:
        nonlocal submitted
        array = [
            {
                "taskType": "upscale",
                "taskUUID": str(uuid.uuid4()),
                "model": "runware:503@1",
                "upscaleFactor": 2,
                "inputs": {"image": IMAGE},
                "deliveryMethod": "sync",
            }
            for _ in range(count)
        ]
        for task in array:
            sent_at[str(task["taskUUID"])] = clock()
        submitted += count
        await sock.send(orjson.dumps(array), text=True)

    def sendable() -> int:
        room = min(window - len(sent_at), tasks - submitted)
        return room if room >= min(batch, tasks - submitted) and room > 0 else 0

    while (count := sendable()) > 0:
        await send_array(min(count, batch))
    while done < tasks:
        envelope = orjson.loads(await sock.recv())
        now = clock()
        for item in envelope.get("data", ()):
            due = sent_at.pop(item.get("taskUUID"), None)
            if due is not None:
                latencies.append(now - due)
                done += 1
        while (count := sendable()) > 0:
            await send_array(min(count, batch))
    return _measure(sock, False) - start


async def run(mode: str, tasks: int, window: int, batch: int, group: int) -> tuple[float, float]:
    """One run: (client CPU us per task, the fake's frames out per task)."""
    sock = FakeSocket(group)
    if mode == "floor":
        cpu = await _floor_run(sock, tasks, window, batch)
    else:
        cpu = await _client_run(mode, sock, tasks, window, batch)
    return cpu / tasks * 1e6, sock.frames_out / tasks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mode", choices=("upscale", "many", "floor"), default="upscale")
    parser.add_argument("--tasks", type=int, default=30_000)
    parser.add_argument("--window", type=int, default=500)
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--group", type=int, default=50, help="results per answer frame")
    parser.add_argument("--uvloop", action="store_true")
    parser.add_argument("--reps", type=int, default=3, help="runs; the best is reported")
    args = parser.parse_args()
    if args.tasks < 1 or args.tasks > 1_000_000:
        raise SystemExit("--tasks must be 1..1,000,000")
    if args.uvloop:
        import uvloop

        uvloop.install()
    runs = [
        asyncio.run(run(args.mode, args.tasks, args.window, args.batch, args.group))
        for _ in range(args.reps)
    ]
    best = min(cpu for cpu, _ in runs)
    print(
        f"{args.mode} group {args.group}{' uvloop' if args.uvloop else ''}: best {best:.2f} us "
        f"per task (runs {', '.join(f'{cpu:.2f}' for cpu, _ in runs)}; the fake's own CPU "
        f"subtracted), frames out per task {runs[0][1]:.3f}",
        file=sys.stdout,
    )


if __name__ == "__main__":
    main()
