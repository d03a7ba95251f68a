"""A stub Runware WebSocket server for benchmarks: correct protocol, no image work.

Run it as its own process so the client under test has a core to itself::

    python benchmarks/stub_server.py --port 0 --latency-ms 0 --group 1 --result-bytes 0 \\
        --ready-file /tmp/stub.port [--stats-file /tmp/stub.jsonl]

What it speaks (``docs``: ``/work/shared/reference/protocol.md`` sections 2, 3, 4, 6 and 9):

* ``authentication`` -> ``{"data":[{"taskType":"authentication","connectionSessionUUID":...}]}``
  in a frame of its own, echoing a given ``connectionSessionUUID`` (resume, section 2).
* ``ping`` -> ``{"data":[{"taskType":"ping","pong":true}]}`` at once, in its own frame (section 3).
* ``upscale`` / ``imageUpscale`` (input in ``inputImage`` or ``inputs.image``, never looked at):
  with ``deliveryMethod`` ``"sync"`` (the default) the result item becomes due at receive time +
  ``--latency-ms``; with ``"async"`` an ACK item goes out at once and the result waits for a
  ``getResponse`` (section 6), answered with ``status:"success"`` or, before it is due,
  ``status:"processing"``.
* Result items carry ``taskType`` (echoed), ``taskUUID``, ``imageUUID``, ``inputImageUUID`` and an
  ``imageURL``; ``--result-bytes`` pads the URL's query so each item is about that many bytes.
* The bytes path: with ``--result-file IMG``, every result carries that image, as
  ``imageBase64Data`` (``--result-as base64Data``, MB-sized frames) or as an ``imageURL`` served
  by the stub's own keep-alive HTTP/1.1 server on another loopback port (``--result-as URL``).
* ``data`` and ``errors`` never share a frame (section 4); every error item names its task.

Scheduling: because the latency is one constant, results fall due in the order their tasks
arrived, so each connection keeps a FIFO of ``(due_time, encoded_item)`` and a single flusher
coroutine sleeps until the head is due, then sends everything due in frames of up to ``--group``
items. It never waits for a group to fill. There is no task or timer per result.

Accounting: on each connection's close a JSON line goes to ``--stats-file`` (tasks, frames and
bytes each way, the stub's own CPU time during the connection), so a harness that runs one client
at a time can tell what each client cost the server. SIGTERM or SIGINT closes every connection
and exits with status 0 after printing the total task count to stderr.

Result items are pre-encoded byte strings and the UUIDs the stub invents are counters under a
random prefix: the stub must stay much faster than any client it measures.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import os
import signal
import sys
import time
import uuid
from collections import deque
from pathlib import Path
from typing import Any

import orjson
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

UPSCALE_TYPES = frozenset({"upscale", "imageUpscale"})
PONG_FRAME = b'{"data":[{"taskType":"ping","pong":true}]}'


class StubConfig:
    """The knobs of one stub server run."""

    __slots__ = ("group", "latency_s", "result_bytes", "stats_file")

    def __init__(
        self, *, latency_s: float, group: int, result_bytes: int, stats_file: Path | None
    ) -> None:
        if group < 1:
            raise ValueError("group must be at least 1")
        self.latency_s = latency_s
        self.group = group
        self.result_bytes = result_bytes
        self.stats_file = stats_file


class ResultFactory:
    """Encodes result items as JSON bytes with UUID-shaped ids made from a counter."""

    def __init__(
        self,
        result_bytes: int,
        *,
        image_base64: bytes | None = None,
        http_base: bytes | None = None,
    ) -> None:
        prefix = str(uuid.uuid4())[:24]  # "xxxxxxxx-xxxx-4xxx-yxxx-": the last 12 digits count
        self._prefix = prefix.encode()
        self._counter = 0
        self._result_bytes = result_bytes
        self._image_base64 = image_base64
        self._http_base = http_base

    def item(self, task_type: bytes, task_uuid: bytes) -> bytes:
        """Return one result item; ``task_type`` and ``task_uuid`` are JSON-encoded strings."""
        self._counter += 2
        image = b"%s%012x" % (self._prefix, self._counter)
        source = b"%s%012x" % (self._prefix, self._counter + 1)
        head = b'{"taskType":%s,"taskUUID":%s,"imageUUID":"%s","inputImageUUID":"%s"' % (
            task_type,
            task_uuid,
            image,
            source,
        )
        if self._image_base64 is not None:
            return b"".join((head, b',"imageBase64Data":"', self._image_base64, b'"}'))
        if self._http_base is not None:
            return b'%s,"imageURL":"%s/r/%s.png"}' % (head, self._http_base, image)
        url = b"https://im.example.invalid/%s.jpg" % image
        short = len(head) + len(url) + 15  # ,"imageURL":"" and }
        if self._result_bytes > short + 5:
            url += b"?pad=" + b"x" * (self._result_bytes - short - 5)
        return b'%s,"imageURL":"%s"}' % (head, url)


class StubConnection:
    """One client connection: a reader that answers at once, and the flusher of due results."""

    def __init__(
        self,
        ws: ServerConnection,
        config: StubConfig,
        results: ResultFactory,
        totals: dict[str, int],
    ) -> None:
        self.ws = ws
        self.config = config
        self.results = results
        self.totals = totals
        self.due: deque[tuple[float, bytes]] = deque()
        self.wake = asyncio.Event()
        # taskUUID -> (due time, JSON-encoded taskType, encoded result item), for async delivery
        self.parked: dict[str, tuple[float, bytes, bytes]] = {}
        self.tasks = 0
        self.frames_in = 0
        self.bytes_in = 0
        self.frames_out = 0
        self.bytes_out = 0
        self.results_sent = 0

    async def run(self) -> None:
        """Serve the connection until the client goes away."""
        opened = time.monotonic()
        cpu_opened = time.process_time()
        flusher = asyncio.create_task(self._flush_due())
        try:
            await self._read()
        except ConnectionClosed:
            pass
        finally:
            flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionClosed):
                await flusher
            self._write_stats(time.monotonic() - opened, time.process_time() - cpu_opened)

    async def _send(self, frame: bytes) -> None:
        self.frames_out += 1
        self.bytes_out += len(frame)
        await self.ws.send(frame, text=True)

    async def _send_many(self, frames: list[bytes]) -> None:
        """Send several text frames with one write and one drain.

        ``send_context()`` is what ``send()`` itself uses (it checks the state, then writes and
        drains on exit). Framing a burst inside one context and writing the bytes with a single
        ``transport.write`` saves websockets' per-message overhead and a syscall per frame, which
        matters with one item per frame.
        """
        self.frames_out += len(frames)
        self.bytes_out += sum(map(len, frames))
        ws = self.ws
        async with ws.send_context():
            for frame in frames:
                ws.protocol.send_text(frame)
            ws.transport.write(b"".join(ws.protocol.data_to_send()))

    async def _read(self) -> None:
        loop = asyncio.get_running_loop()
        latency = self.config.latency_s
        make_item = self.results.item
        due = self.due
        while True:
            raw = await self.ws.recv(decode=False)
            now = loop.time()
            self.frames_in += 1
            self.bytes_in += len(raw)
            try:
                tasks = orjson.loads(raw)
            except orjson.JSONDecodeError:
                await self._send_errors([_error("invalidJSON", "frame is not JSON", None, None)])
                continue
            if isinstance(tasks, dict):
                tasks = [tasks]
            if not isinstance(tasks, list):
                await self._send_errors([_error("invalidJSON", "expected an array", None, None)])
                continue
            queued = False
            replies: list[bytes] = []
            errors: list[dict[str, Any]] = []
            for task in tasks:
                if not isinstance(task, dict):
                    errors.append(_error("invalidTask", "task is not an object", None, None))
                    continue
                task_type = task.get("taskType")
                task_uuid = task.get("taskUUID")
                if task_type in UPSCALE_TYPES:
                    if not isinstance(task_uuid, str):
                        errors.append(_error("missingTaskUUID", "no taskUUID", task_type, None))
                        continue
                    self.tasks += 1
                    encoded_type = orjson.dumps(task_type)
                    encoded_uuid = orjson.dumps(task_uuid)
                    item = make_item(encoded_type, encoded_uuid)
                    if task.get("deliveryMethod") == "async":
                        self.parked[task_uuid] = (now + latency, encoded_type, item)
                        replies.append(
                            b'{"taskType":%s,"taskUUID":%s}' % (encoded_type, encoded_uuid)
                        )
                    else:
                        due.append((now + latency, item))
                        queued = True
                elif task_type == "getResponse":
                    self._poll(task_uuid, now, replies, errors)
                elif task_type == "ping":
                    await self._send(PONG_FRAME)
                elif task_type == "authentication":
                    await self._authenticate(task)
                else:
                    errors.append(
                        _error(
                            "unsupportedTaskType", "the stub does not do this", task_type, task_uuid
                        )
                    )
            if queued:
                self.wake.set()
            if replies:
                await self._send(b'{"data":[%s]}' % b",".join(replies))
            if errors:
                await self._send_errors(errors)

    def _poll(self, task_uuid: Any, now: float, replies: list[bytes], errors: list[Any]) -> None:
        parked = self.parked.get(task_uuid) if isinstance(task_uuid, str) else None
        if parked is None:
            errors.append(_error("taskFailedOrNotFound", "unknown task", "getResponse", task_uuid))
            return
        due_at, encoded_type, item = parked
        if now < due_at:
            replies.append(
                b'{"taskType":%s,"taskUUID":%s,"status":"processing"}'
                % (encoded_type, orjson.dumps(task_uuid))
            )
            return
        del self.parked[task_uuid]
        self.results_sent += 1
        replies.append(item[:-1] + b',"status":"success"}')

    async def _authenticate(self, task: dict[str, Any]) -> None:
        session = task.get("connectionSessionUUID")
        if not isinstance(session, str) or not session:
            session = str(uuid.uuid4())
        await self._send(
            orjson.dumps(
                {"data": [{"taskType": "authentication", "connectionSessionUUID": session}]}
            )
        )

    async def _send_errors(self, errors: list[dict[str, Any]]) -> None:
        await self._send(orjson.dumps({"errors": errors}))

    async def _flush_due(self) -> None:
        loop = asyncio.get_running_loop()
        due = self.due
        group = self.config.group
        while True:
            if not due:
                self.wake.clear()
                await self.wake.wait()
                continue
            wait = due[0][0] - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            now = loop.time()
            items: list[bytes] = []
            while due and due[0][0] <= now:
                items.append(due.popleft()[1])
            if not items:  # woke a hair early (uvloop timers have 1 ms resolution)
                await asyncio.sleep(0)
                continue
            self.results_sent += len(items)
            await self._send_many(
                [
                    b'{"data":[%s]}' % b",".join(items[start : start + group])
                    for start in range(0, len(items), group)
                ]
            )

    def _write_stats(self, wall_s: float, cpu_s: float) -> None:
        self.totals["tasks"] += self.tasks
        self.totals["connections"] += 1
        if self.config.stats_file is None:
            return
        record = {
            "tasks": self.tasks,
            "results_sent": self.results_sent,
            "frames_in": self.frames_in,
            "frames_out": self.frames_out,
            "bytes_in": self.bytes_in,
            "bytes_out": self.bytes_out,
            "wall_s": round(wall_s, 6),
            "stub_cpu_s": round(cpu_s, 6),
            "parked_left": len(self.parked),
            "due_left": len(self.due),
        }
        with open(self.config.stats_file, "ab") as out:
            out.write(orjson.dumps(record) + b"\n")


def _error(code: str, message: str, task_type: Any, task_uuid: Any) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message, "taskType": task_type}
    if task_uuid is not None:
        error["taskUUID"] = task_uuid
    return error


async def serve_image_http(host: str, body: bytes) -> asyncio.Server:
    """A keep-alive HTTP/1.1 server that answers every GET with ``body`` (an image/png)."""
    head = b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nContent-Length: %d\r\n\r\n" % len(body)

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                request = await reader.readuntil(b"\r\n\r\n")
                if not request.startswith(b"GET "):
                    writer.write(b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n")
                    break
                writer.write(head)
                writer.write(body)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()

    return await asyncio.start_server(answer, host, 0)


def write_atomically(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so that a reader sees either nothing or all of it."""
    partial = path.with_name(path.name + ".partial")
    partial.write_text(text)
    os.replace(partial, path)


async def serve_until_stopped(args: argparse.Namespace) -> int:
    """Run the stub until SIGTERM or SIGINT; return the process exit status."""
    config = StubConfig(
        latency_s=args.latency_ms / 1000.0,
        group=args.group,
        result_bytes=args.result_bytes,
        stats_file=args.stats_file,
    )
    image_server: asyncio.Server | None = None
    image_base64 = http_base = None
    if args.result_file is not None:
        body = args.result_file.read_bytes()
        if args.result_as == "base64Data":
            image_base64 = base64.b64encode(body)
        else:
            image_server = await serve_image_http(args.host, body)
            http_port = next(iter(image_server.sockets)).getsockname()[1]
            http_base = f"http://{args.host}:{http_port}".encode()
    results = ResultFactory(args.result_bytes, image_base64=image_base64, http_base=http_base)
    totals = {"tasks": 0, "connections": 0}

    async def handler(ws: ServerConnection) -> None:
        await StubConnection(ws, config, results, totals).run()

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    async with serve(
        handler,
        args.host,
        args.port,
        max_size=None,
        compression=None,
        ping_interval=None,  # a busy client must not be dropped for a late pong
        write_limit=args.write_limit,
    ) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        if args.ready_file is not None:
            write_atomically(args.ready_file, f"{port}\n")
        print(f"stub listening on ws://{args.host}:{port}", file=sys.stderr, flush=True)
        await stop.wait()
    if image_server is not None:
        image_server.close()
    print(
        f"stub stopped: {totals['tasks']} tasks over {totals['connections']} connections",
        file=sys.stderr,
        flush=True,
    )
    return 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the stub's command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--latency-ms", type=float, default=0.0, help="time each task takes")
    parser.add_argument("--group", type=int, default=1, help="most result items per frame")
    parser.add_argument("--result-bytes", type=int, default=0, help="pad each item to this size")
    parser.add_argument("--ready-file", type=Path, help="the port is written here once listening")
    parser.add_argument("--stats-file", type=Path, help="one JSON line per closed connection")
    parser.add_argument("--result-file", type=Path, help="bytes path: the image of every result")
    parser.add_argument(
        "--result-as", choices=("base64Data", "URL"), default="base64Data", help="result's form"
    )
    parser.add_argument("--write-limit", type=int, default=256 * 1024, help="send buffer bytes")
    parser.add_argument("--no-uvloop", action="store_true", help="use the default asyncio loop")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Entry point: parse arguments, pick the event loop, serve."""
    args = parse_args(argv)
    if not args.no_uvloop:
        try:
            import uvloop
        except ImportError:
            pass
        else:
            code: int = uvloop.run(serve_until_stopped(args))
            return code
    return asyncio.run(serve_until_stopped(args))


if __name__ == "__main__":
    sys.exit(main())
