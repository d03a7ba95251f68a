"""The raw floor: the simplest client that keeps W tasks in flight in arrays of B.

websockets and orjson and nothing else: no validation, no futures, no logging, no retries. It is
the yardstick every other contender is divided by, so it stays as plain as the protocol allows:

* authenticate, then send arrays of B tasks until W are in flight;
* on every received frame, count the results by ``taskUUID`` and, as soon as B slots are free
  (or fewer, for the tail of the run), send the next array.

With ``--rate R`` arrays go out on a schedule instead (task i not before i/R s), still capped at
W in flight. A task's latency runs from its **due time** to the moment the frame carrying its
result has been parsed, as for every contender: with ``--rate`` task i is due at i/R s; flat out,
a task is due when its window slot opened (the run's start for the first W, else the moment the
result that freed its slot was parsed). Waiting for a full array therefore counts against the
floor, as it would against any client.

Usage: ``python benchmarks/contenders/raw_floor.py --url ws://127.0.0.1:PORT --tasks N
--window W --batch B [--input FILE] [--rate R] [--uvloop]``. Prints one JSON line (``_common``).
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid
from collections import deque
from typing import Any

import orjson
from _common import API_KEY, FACTOR, MODEL, Meter, input_image, run_main
from websockets.asyncio.client import connect


async def run(args: argparse.Namespace) -> dict[str, Any]:
    """Connect, run the tasks, return the report line."""
    if args.delivery != "sync":
        raise SystemExit("the raw floor only does sync delivery")
    image = input_image(args.input)
    total, window, batch, rate = args.tasks, args.window, args.batch, args.rate
    meter = Meter(total)
    sent_at: dict[str, float] = {}  # taskUUID -> due time
    clock = time.perf_counter
    freed: deque[float] = deque()  # flat out: when each open window slot became free
    async with connect(args.url, max_size=None, compression=None, proxy=None) as ws:
        await ws.send(orjson.dumps([{"taskType": "authentication", "apiKey": API_KEY}]), text=True)
        orjson.loads(await ws.recv(decode=False))
        meter.start()
        t0 = clock()
        freed.extend([t0] * window)
        submitted = 0

        async def send_array(count: int) -> None:
            nonlocal submitted
            tasks = [
                {
                    "taskType": "upscale",
                    "taskUUID": str(uuid.uuid4()),
                    "model": MODEL,
                    "upscaleFactor": FACTOR,
                    "inputs": {"image": image},
                    "deliveryMethod": "sync",
                }
                for _ in range(count)
            ]
            if rate > 0:
                for offset, task in enumerate(tasks):
                    sent_at[task["taskUUID"]] = t0 + (submitted + offset) / rate
            else:
                for task in tasks:
                    sent_at[task["taskUUID"]] = freed.popleft()
            submitted += count
            await ws.send(orjson.dumps(tasks), text=True)

        def sendable() -> int:
            """How many tasks may go out now: a full array, the tail, or none."""
            room = min(window - len(sent_at), total - submitted)
            if rate > 0:
                room = min(room, int((clock() - t0) * rate) + 1 - submitted)
            return room if room >= min(batch, total - submitted) and room > 0 else 0

        async def pace() -> None:
            """With --rate, send arrays as they fall due even while no result arrives."""
            while submitted < total:
                count = sendable()
                if count:
                    await send_array(min(count, batch))
                else:
                    await asyncio.sleep(batch / rate / 4)

        pacer = asyncio.create_task(pace()) if rate > 0 else None
        if pacer is None:
            while (count := sendable()) > 0:
                await send_array(min(count, batch))
        latencies = meter.latencies_s
        while meter.ok + meter.failed < total:
            envelope = orjson.loads(await ws.recv(decode=False))
            now = clock()
            for item in envelope.get("data", ()):
                due = sent_at.pop(item.get("taskUUID"), None)
                if due is not None:
                    latencies.append(now - due)
                    freed.append(now)
                    meter.ok += 1
            for error in envelope.get("errors", ()):
                if sent_at.pop(error.get("taskUUID"), None) is not None:
                    freed.append(now)
                    meter.fail(RuntimeError(f"{error.get('code')}: {error.get('message')}"))
            if pacer is None:
                while (count := sendable()) > 0:
                    await send_array(min(count, batch))
        meter.stop()
        if pacer is not None:
            await pacer
    return meter.report(contender="raw_floor", window=window, batch=batch)


if __name__ == "__main__":
    run_main(run, __doc__.split("\n\n")[0])
