"""The leanest per-caller client: W callers, each awaiting its own task, as ``upscale()`` does.

The raw floor has no callers: one loop counts results by taskUUID. An application that calls
``await client.upscale(image)`` from W coroutines pays, for every task, a future, its result
and one caller resumed, whatever library it uses. This contender is that shape and nothing
else: a taskUUID from a pool-and-counter, the task as one f-string, one future per task in a
dict, one writer task that sends what the callers queued in arrays of up to B a wake-up (the same
batch as every contender), one reader
that decodes each frame with msgspec and sets the futures. No validation, no metrics, no
timeouts, no window beyond the W callers, no retries. It is a yardstick, not a client: what the
per-caller shape costs by itself, to weigh ``upscale()``'s targets with.

Usage: ``python benchmarks/contenders/lean_callers.py --url ws://127.0.0.1:PORT --tasks N
--window W --batch B [--input FILE] [--uvloop]``. Prints one JSON line (``_common``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from typing import Any

import msgspec
from _common import API_KEY, FACTOR, MODEL, Meter, input_image, run_main
from websockets.asyncio.client import connect


class _Item(msgspec.Struct):
    taskUUID: str  # the wire's names
    imageURL: str | None = None


class _Frame(msgspec.Struct):
    data: list[_Item] = []


async def run(args: argparse.Namespace) -> dict[str, Any]:
    """Connect, run the tasks from ``--window`` callers, return the report line."""
    if args.delivery != "sync" or args.rate > 0:
        raise SystemExit("lean_callers only runs flat out with sync delivery")
    image = input_image(args.input)
    total, window, batch = args.tasks, args.window, args.batch
    meter = Meter(total)
    loop = asyncio.get_running_loop()
    decode = msgspec.json.Decoder(_Frame).decode
    prefix = os.urandom(8).hex()
    waiters: dict[str, asyncio.Future[_Item]] = {}
    queue: list[bytes] = []
    wake = asyncio.Event()
    count = 0
    clock = time.perf_counter
    latencies = meter.latencies_s
    async with connect(args.url, max_size=None, compression=None, proxy=None) as ws:
        await ws.send(f'[{{"taskType":"authentication","apiKey":"{API_KEY}"}}]', text=True)
        await ws.recv(decode=False)

        async def upscale() -> _Item:
            nonlocal count
            count += 1
            key = f"{prefix[:8]}-{prefix[8:12]}-4{prefix[13:16]}-8000-{count:012x}"
            future = loop.create_future()
            waiters[key] = future
            queue.append(
                f'{{"taskType":"upscale","taskUUID":"{key}","model":"{MODEL}",'
                f'"upscaleFactor":{FACTOR},"inputs":{{"image":"{image}"}},'
                f'"deliveryMethod":"sync"}}'.encode()
            )
            wake.set()
            return await future

        async def writer() -> None:
            nonlocal queue
            while True:
                await wake.wait()
                wake.clear()
                frame, queue = queue, []
                for start in range(0, len(frame), batch):  # at most --batch tasks a frame
                    await ws.send(b"[" + b",".join(frame[start : start + batch]) + b"]", text=True)

        async def reader() -> None:
            pop = waiters.pop
            while True:
                message = await ws.recv(decode=False)
                for item in decode(message).data:
                    future = pop(item.taskUUID, None)
                    if future is not None:
                        future.set_result(item)

        todo = iter(range(total))

        async def caller() -> None:
            for _ in todo:
                due = clock()
                await upscale()
                latencies.append(clock() - due)
                meter.ok += 1

        tasks = [asyncio.create_task(writer()), asyncio.create_task(reader())]
        meter.start()
        await asyncio.gather(*(caller() for _ in range(window)))
        meter.stop()
        for task in tasks:
            task.cancel()
    return meter.report(contender="lean_callers", window=window, batch=args.batch)


if __name__ == "__main__":
    run_main(run, __doc__.split("\n\n")[0])
