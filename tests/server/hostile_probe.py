"""The hostile inputs of issue 10, sent from outside; prints the figures of docs/reliability.md.

Run by hand (not a test; tests/server/test_floods.py asserts the bounds)::

    .venv/bin/python -m tests.server.hostile_probe

For each input: what the sender got back (frames, bytes), how long another client waited for
its pong meanwhile, and how much this process's RSS grew (the server runs in it).
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Awaitable, Callable

import orjson
from websockets.asyncio.client import ClientConnection, connect

from upscale_stream.server import ReferenceServer, ServerConfig

KEY = "hostile-probe-key-0123456789"
MiB = 1024 * 1024
PING = orjson.dumps([{"taskType": "ping", "ping": True}]).decode()


def rss() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * 4096 / MiB


async def authenticated(url: str) -> ClientConnection:
    ws = await connect(url, max_size=None)
    await ws.send(orjson.dumps([{"taskType": "authentication", "apiKey": KEY}]).decode())
    await ws.recv()
    return ws


async def drain(ws: ClientConnection, quiet: float = 0.5) -> tuple[int, int]:
    frames = size = 0
    while True:
        try:
            async with asyncio.timeout(quiet):
                message = await ws.recv()
        except (TimeoutError, Exception):
            return frames, size
        frames += 1
        size += len(message)


async def measure(
    url: str, name: str, send: Callable[[ClientConnection], Awaitable[None]], auth: bool
) -> None:
    gc.collect()
    before = rss()
    bystander = await authenticated(url)
    sender = await authenticated(url) if auth else await connect(url, max_size=None)
    await send(sender)
    started = time.perf_counter()
    await bystander.send(PING)
    await bystander.recv()
    pong = time.perf_counter() - started
    frames, size = await drain(sender)
    grown = rss() - before
    print(
        f"{name:<48} answer {frames:>3} frame(s) {size:>9} B  "
        f"pong {pong * 1000:6.1f} ms  RSS +{grown:6.1f} MiB",
        flush=True,
    )
    await sender.close()
    await bystander.close()


def text(payload: str) -> Callable[[ClientConnection], Awaitable[None]]:
    async def send(ws: ClientConnection) -> None:
        await ws.send(payload)

    return send


async def main() -> None:
    config = ServerConfig(api_keys=frozenset({KEY}), port=0)  # message limit 16 MiB
    async with ReferenceServer(config) as server:
        url = server.url
        zeros = "[" + "0," * 1_048_575 + "0]"
        cases = [
            ("2 MiB of zeros, unauthenticated", zeros, False),
            ("2 MiB of zeros, authenticated", zeros, True),
            ("1,048,576 nulls, authenticated", "[" + "null," * 1_048_575 + "null]", True),
            (
                "200,000 tasks without taskUUID",
                "[" + '{"taskType":"upscale"},' * 200_000 + "{}]",
                True,
            ),
            ("10,000 pings in one frame", "[" + ",".join([PING[1:-1]] * 10_000) + "]", True),
            ("18 MiB frame of {} (over the 16 MiB limit)", "[" + "{}," * (6 * MiB) + "{}]", True),
            ("invalid JSON", "this is not JSON", True),
            ("[]", "[]", True),
        ]
        for name, payload, auth in cases:
            await measure(url, name, text(payload), auth)
        huge = orjson.dumps([{"taskType": "upscale", "taskUUID": "x" * (3 * MiB)}]).decode()
        await measure(url, "a 3 MiB taskUUID", text(huge), True)

        async def binary(ws: ClientConnection) -> None:
            await ws.send(PING.encode())

        await measure(url, "a binary frame", binary, True)
        # Wrong keys as fast as one client can: how many are checked, how many log lines.
        started = time.perf_counter()
        codes: dict[str, int] = {}
        for attempt in range(200):
            async with connect(url) as ws:
                await ws.send(
                    orjson.dumps([{"taskType": "authentication", "apiKey": f"k{attempt}"}]).decode()
                )
                code = orjson.loads(await ws.recv())["errors"][0]["code"]
                codes[code] = codes.get(code, 0) + 1
        elapsed = time.perf_counter() - started
        print(f"200 wrong keys from one address in {elapsed:.1f} s: {codes}")
        longest = max(map(len, server.received), default=0)
        print(f"counters hold {len(server.received)} taskUUIDs, the longest of {longest} chars")


if __name__ == "__main__":
    asyncio.run(main())
