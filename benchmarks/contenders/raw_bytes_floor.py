"""The bytes-path floor: real image files in, result images out, and only the unavoidable work.

Per task: read the input file, base64 it into a data URI, put it in a task (orjson), send the
array; per result: parse the frame (orjson), get the image bytes (base64-decode
``imageBase64Data``, or GET ``imageURL`` over one kept-alive HTTP/1.1 connection with
``http.client``), write them to a file. Nothing else: no validation, no futures, no threads.
W tasks in flight in arrays of B, as ``raw_floor.py``; latency from each task's due time.

Usage: ``python benchmarks/contenders/raw_bytes_floor.py --url ws://127.0.0.1:PORT --tasks N
--window W --batch B --input-dir DIR --out-dir DIR [--output-type base64Data|URL] [--uvloop]``.
Prints one JSON line (``_common``) with ``payload_bytes_in`` / ``payload_bytes_out`` added.

The codec is the stdlib's ``base64`` (what the scenario's floor is defined with). With
``UPSCALE_BENCH_FLOOR_BASE64=pybase64`` in the environment (the harness passes it on) it uses
``pybase64``'s SIMD codec instead, the one our client uses with the ``fast`` extra: a floor
that shows the client's own overhead with the codec's speed taken out.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import os
import time
import uuid
from collections import deque
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson
from _common import API_KEY, FACTOR, MODEL, Meter, run_main
from websockets.asyncio.client import connect

if os.environ.get("UPSCALE_BENCH_FLOOR_BASE64") == "pybase64":
    import pybase64 as base64


class Fetcher:
    """GET over one kept-alive connection per host (what a connection pool amounts to here)."""

    def __init__(self) -> None:
        self.connections: dict[str, http.client.HTTPConnection] = {}

    def get(self, url: str) -> bytes:
        """The body of ``url`` (status 200 expected)."""
        parts = urlsplit(url)
        connection = self.connections.get(parts.netloc)
        if connection is None:
            connection = self.connections[parts.netloc] = http.client.HTTPConnection(parts.netloc)
        connection.request("GET", parts.path or "/")
        response = connection.getresponse()
        body = response.read()
        if response.status != 200:
            raise RuntimeError(f"GET {url}: HTTP {response.status}")
        return body


def add_options(parser: argparse.ArgumentParser) -> None:
    """This contender's own options."""
    parser.add_argument("--input-dir", type=Path, required=True, help="image files to send")
    parser.add_argument("--out-dir", type=Path, required=True, help="where result images go")
    parser.add_argument("--output-type", default="base64Data", help="outputType of every task")


async def run(args: argparse.Namespace) -> dict[str, Any]:
    """Connect, run the tasks, return the report line."""
    files = sorted(p for p in args.input_dir.iterdir() if p.suffix.lower() in (".png", ".jpg"))
    mimes = [b"image/png" if p.suffix.lower() == ".png" else b"image/jpeg" for p in files]
    args.out_dir.mkdir(parents=True, exist_ok=True)
    total, window, batch = args.tasks, args.window, args.batch
    meter = Meter(total)
    pending: dict[str, tuple[float, int]] = {}  # taskUUID -> (due time, input index)
    clock = time.perf_counter
    freed: deque[float] = deque()
    fetcher = Fetcher()
    out_dir = args.out_dir
    bytes_in = bytes_out = 0
    head = (
        b'{"taskType":"upscale","taskUUID":"%%s","model":"%s","upscaleFactor":%d,'
        b'"outputType":"%s","deliveryMethod":"sync","inputs":{"image":"data:'
        % (MODEL.encode(), FACTOR, args.output_type.encode())
    )
    async with connect(args.url, max_size=None, compression=None, proxy=None) as ws:
        await ws.send(orjson.dumps([{"taskType": "authentication", "apiKey": API_KEY}]), text=True)
        orjson.loads(await ws.recv(decode=False))
        meter.start()
        freed.extend([clock()] * window)
        submitted = 0

        async def send_array(count: int) -> None:
            nonlocal submitted, bytes_in
            parts: list[bytes] = []
            for offset in range(count):
                which = (submitted + offset) % len(files)
                raw = files[which].read_bytes()
                bytes_in += len(raw)
                task_uuid = str(uuid.uuid4())
                pending[task_uuid] = (freed.popleft(), which)
                # base64 needs no JSON escaping: the frame is put together around it, one copy.
                parts += (
                    b"," if parts else b"",
                    head % task_uuid.encode(),
                    mimes[which],
                    b";base64,",
                    base64.b64encode(raw),
                    b'"}}',
                )
            submitted += count
            await ws.send(b"".join((b"[", *parts, b"]")), text=True)

        def sendable() -> int:
            room = min(window - len(pending), total - submitted)
            return room if room >= min(batch, total - submitted) and room > 0 else 0

        while (count := sendable()) > 0:
            await send_array(min(count, batch))
        latencies = meter.latencies_s
        while meter.ok + meter.failed < total:
            envelope = orjson.loads(await ws.recv(decode=False))
            for item in envelope.get("data", ()):
                task = pending.pop(item.get("taskUUID"), None)
                if task is None:
                    continue
                encoded = item.get("imageBase64Data")
                if encoded is not None:
                    image = base64.b64decode(encoded)
                else:
                    image = fetcher.get(item["imageURL"])
                with open(out_dir / f"{meter.ok % 64}.out", "wb") as out:
                    out.write(image)
                bytes_out += len(image)
                now = clock()
                latencies.append(now - task[0])
                freed.append(now)
                meter.ok += 1
            for error in envelope.get("errors", ()):
                if pending.pop(error.get("taskUUID"), None) is not None:
                    freed.append(clock())
                    meter.fail(RuntimeError(f"{error.get('code')}: {error.get('message')}"))
            while (count := sendable()) > 0:
                await send_array(min(count, batch))
        meter.stop()
    return meter.report(
        contender="raw_bytes_floor",
        base64=base64.__name__,
        window=window,
        batch=batch,
        payload_bytes_in=bytes_in,
        payload_bytes_out=bytes_out,
    )


if __name__ == "__main__":
    run_main(run, __doc__.split("\n\n")[0], extend=add_options)
