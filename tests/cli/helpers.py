"""Helpers for the CLI tests: sample images, a recording proxy, an HTTP sink.

The CLI runs in-process through :func:`upscale_stream.cli.main`. Tests that need to see the
wire put :class:`RecordingProxy` (plain websockets, no library code) between the CLI and the
real reference server of the ``upscale_server`` fixture; the CLI then runs in a worker thread
(``await run_cli(...)``) so that the server and the proxy keep running on the test's loop.
"""

from __future__ import annotations

import asyncio
import http.server
import threading
from collections.abc import Coroutine, Sequence
from pathlib import Path
from typing import Any

import orjson
from PIL import Image
from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection, serve

from upscale_stream.cli import main
from upscale_stream.testing import LocalServer


def write_image(
    path: Path,
    size: tuple[int, int] = (16, 12),
    *,
    mode: str = "RGB",
    image_format: str | None = None,
    colour: int = 90,
) -> Path:
    """Write a small image (format from the extension unless given); returns ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fill: Any = colour if mode in ("L",) else (colour, 40, 200, 128)[: len(mode)]
    Image.new(mode, size, fill).save(path, image_format)
    return path


def write_corrupt_png(path: Path) -> Path:
    """A PNG cut short after its header."""
    whole = write_image(path.with_name("whole-" + path.name), (32, 32))
    path.write_bytes(whole.read_bytes()[:60])
    whole.unlink()
    return path


def image_size(path: Path) -> tuple[int, int]:
    """Width and height of an image file."""
    with Image.open(path) as image:
        return image.size


def part_files(folder: Path) -> list[Path]:
    """Temporary files a write could have left behind."""
    return [p for p in folder.rglob("*") if p.name.endswith(".part")]


def manifest_lines(out: Path) -> list[dict[str, Any]]:
    """The manifest's entries."""
    path = out / ".upscale-stream" / "manifest.jsonl"
    if not path.exists():
        return []
    return [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]


def summary_of(out: Path) -> dict[str, Any]:
    """The run's summary.json."""
    loaded: dict[str, Any] = orjson.loads((out / ".upscale-stream" / "summary.json").read_bytes())
    return loaded


async def run_cli(argv: Sequence[str]) -> int:
    """Run the CLI in a worker thread, so the test's loop (server, proxy) keeps running."""
    return await asyncio.to_thread(main, list(argv))


def server_args(server: LocalServer | RecordingProxy, api_key: str) -> list[str]:
    """``--url`` and ``--api-key`` for a server or a proxy in front of it."""
    return ["--url", server.url, "--api-key", api_key]


class RecordingProxy:
    """A WebSocket proxy that forwards both ways and records every frame, decoded.

    Attributes:
        sent: Frames from the client, in order (each a list of task items, or whatever the
            client sent).
        answered: Frames from the server, in order.
        max_outstanding: The most upscale tasks sent and not yet answered at any moment.
    """

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.sent: list[Any] = []
        self.answered: list[Any] = []
        self.max_outstanding = 0
        self._outstanding: set[str] = set()
        self._server: Any = None

    @property
    def url(self) -> str:
        port = self._server.sockets[0].getsockname()[1]
        return f"ws://127.0.0.1:{port}/v1"

    @property
    def tasks(self) -> list[dict[str, Any]]:
        """Every upscale task the client sent."""
        return [item for frame in self.sent for item in _items(frame) if _is_upscale(item)]

    @property
    def auth_frames(self) -> list[dict[str, Any]]:
        """Every authentication item the client sent."""
        return [
            item
            for frame in self.sent
            for item in _items(frame)
            if item.get("taskType") == "authentication"
        ]

    async def __aenter__(self) -> RecordingProxy:
        self._server = await serve(self._relay, "127.0.0.1", 0, max_size=None)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self._server.close()
        await self._server.wait_closed()

    async def _relay(self, client: ServerConnection) -> None:
        async with connect(self.upstream, max_size=None) as upstream:

            async def up() -> None:
                async for message in client:
                    frame = orjson.loads(message)
                    self.sent.append(frame)
                    for item in _items(frame):
                        if _is_upscale(item):
                            self._outstanding.add(item["taskUUID"])
                    self.max_outstanding = max(self.max_outstanding, len(self._outstanding))
                    await upstream.send(message)

            async def down() -> None:
                async for message in upstream:
                    frame = orjson.loads(message)
                    self.answered.append(frame)
                    if isinstance(frame, dict):
                        for key in ("data", "errors"):
                            for item in frame.get(key) or []:
                                if isinstance(item, dict) and item.get("status") != "processing":
                                    self._outstanding.discard(item.get("taskUUID", ""))
                    await client.send(message)

            await pump_until_one_ends(up(), down())


async def pump_until_one_ends(*pumps: Coroutine[Any, Any, None]) -> None:
    """Run a relay's pumps until the first one ends (a side closed), then stop the others."""
    tasks = [asyncio.create_task(pump) for pump in pumps]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _items(frame: Any) -> list[dict[str, Any]]:
    if isinstance(frame, list):
        return [item for item in frame if isinstance(item, dict)]
    return [frame] if isinstance(frame, dict) else []


def _is_upscale(item: dict[str, Any]) -> bool:
    return item.get("taskType") in ("upscale", "imageUpscale")


class HttpSink:
    """A local HTTP server that records the POST and PUT requests it receives.

    Attributes:
        requests: ``(method, path, body)`` of each request, in order.
    """

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, bytes]] = []
        self._changed = threading.Condition()
        sink = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _record(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()
                with sink._changed:
                    sink.requests.append((self.command, self.path, body))
                    sink._changed.notify_all()

            do_POST = _record
            do_PUT = _record

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def wait_for(self, method: str, count: int = 1, timeout: float = 10.0) -> None:
        """Block until ``count`` requests of ``method`` arrived (fail after ``timeout``)."""

        def enough() -> bool:
            return sum(1 for m, _, _ in self.requests if m == method) >= count

        with self._changed:
            if not self._changed.wait_for(enough, timeout):
                raise AssertionError(f"{count} {method} request(s) never arrived")

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
