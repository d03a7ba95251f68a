"""``upscale-stream serve`` as a user runs it: the installed entry point, in a subprocess.

Issue 4: "``upscale-stream serve --help`` documents every flag; the server logs start-up, auth
failures (without the key) and errors with structlog." The flags' parsing is tested with the
CLI (``tests/cli/test_serve.py``); here the console script itself runs, on port 0, with JSON
logs, and a raw client makes it log a rejected key, invalid and failed tasks and a failed
webhook. Neither key, nor the webhook's token, may appear anywhere in its output.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import io
import json
import re
import signal
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from PIL import Image
from websockets.asyncio.client import connect

from upscale_stream.cli.serve import FLAG_OF_FIELD
from upscale_stream.server import ServerConfig

ENTRY_POINT = Path(sys.executable).with_name("upscale-stream")
KEY = "serve-cli-key-0123456789"
WRONG_KEY = "serve-cli-WRONG-key-424242"
TOKEN = "hook-token-SECRET-777"
GIF_1PX = "R0lGODlhAQABAIAAAAAAAP///ywAAAAAAQABAAACAUwAOw=="


@pytest.fixture
def entry_point() -> Path:
    if not ENTRY_POINT.exists():
        pytest.fail(f"{ENTRY_POINT} is missing: install the package (make venv)", pytrace=False)
    return ENTRY_POINT


async def test_serve_help_documents_every_flag_of_the_server_config(entry_point):
    process = await asyncio.create_subprocess_exec(
        str(entry_point),
        "serve",
        "--help",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(60):
        stdout, _ = await process.communicate()

    assert process.returncode == 0
    text = " ".join(stdout.decode().split())
    configurable = {spec.name for spec in dataclasses.fields(ServerConfig)} - {"clock"}
    assert set(FLAG_OF_FIELD) == configurable  # clock is injectable from Python only
    for name, flag in FLAG_OF_FIELD.items():
        # Each flag is listed with a sentence of help, not only in the usage line.
        assert re.search(rf"{re.escape(flag)}( [A-Z]+)? [A-Z]", text), f"{flag} ({name})"
    for flag in ("--log-level", "--json-logs"):
        assert flag in text


@dataclasses.dataclass
class Served:
    """A running ``upscale-stream serve`` and the log lines it wrote so far."""

    process: asyncio.subprocess.Process
    url: str
    logs: list[dict[str, Any]]
    raw_stderr: list[str]
    changed: asyncio.Event

    async def wait_for_event(self, event: str, timeout: float = 20) -> dict[str, Any]:
        async with asyncio.timeout(timeout):
            while True:
                for line in self.logs:
                    if line.get("event") == event:
                        return line
                self.changed.clear()
                await self.changed.wait()


@contextlib.asynccontextmanager
async def serve(entry_point: Path, *flags: str) -> AsyncIterator[Served]:
    process = await asyncio.create_subprocess_exec(
        str(entry_point),
        "serve",
        "--port",
        "0",
        "--json-logs",
        *flags,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None and process.stderr is not None
    served = Served(process, "", [], [], asyncio.Event())

    async def read_stderr(stream: asyncio.StreamReader) -> None:
        while line := (await stream.readline()).decode():
            served.raw_stderr.append(line)
            with contextlib.suppress(ValueError):
                record = json.loads(line)
                if isinstance(record, dict):  # websockets' own lines are plain text
                    served.logs.append(record)
            served.changed.set()

    reader = asyncio.create_task(read_stderr(process.stderr))
    try:
        async with asyncio.timeout(30):
            while not served.url:
                line = (await process.stdout.readline()).decode()
                assert line, "serve ended before printing its URL:\n" + "".join(served.raw_stderr)
                if match := re.search(r"serving (ws://\S+)", line):
                    served.url = match.group(1)
        yield served
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGINT)
        async with asyncio.timeout(30):
            await process.wait()
            await reader
        await process.communicate()


@contextlib.asynccontextmanager
async def webhook_refuser() -> AsyncIterator[str]:
    """An HTTP endpoint answering every request with 404: a webhook that fails for good."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        headers = (await reader.readuntil(b"\r\n\r\n")).decode()
        length = re.search(r"(?i)content-length:\s*(\d+)", headers)
        await reader.readexactly(int(length.group(1)) if length else 0)
        writer.write(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        await writer.drain()
        writer.close()
        await writer.wait_closed()

    listener = await asyncio.start_server(handle, "127.0.0.1", 0)
    async with listener:
        yield f"http://127.0.0.1:{listener.sockets[0].getsockname()[1]}"


def small_png() -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (6, 4), (10, 200, 30)).save(buffer, "PNG")
    return base64.b64encode(buffer.getvalue()).decode()


async def test_serve_logs_start_up_auth_failures_and_task_errors_without_secrets(entry_point):
    async with (
        webhook_refuser() as hook_base,
        serve(
            entry_point, "--api-key", KEY, "--allow-private-urls", "--webhook-retries", "0"
        ) as served,
    ):
        started = await served.wait_for_event("server.started")
        assert served.url == f"ws://127.0.0.1:{started['port']}/v1"

        async with connect(served.url) as ws:
            await ws.send(
                orjson.dumps([{"taskType": "authentication", "apiKey": WRONG_KEY}]), text=True
            )
            rejected = orjson.loads(await ws.recv())
        assert rejected["errors"][0]["code"] == "invalidApiKey"

        invalid, failed, hooked = (str(uuid.uuid4()) for _ in range(3))
        tasks = [
            {"taskUUID": invalid, "inputImage": small_png(), "outputQuality": 100},
            {"taskUUID": failed, "inputImage": f"data:image/gif;base64,{GIF_1PX}"},
            {
                "taskUUID": hooked,
                "inputImage": small_png(),
                "webhookURL": f"{hook_base}/hook?token={TOKEN}",
            },
        ]
        async with connect(served.url) as ws:
            await ws.send(orjson.dumps([{"taskType": "authentication", "apiKey": KEY}]), text=True)
            await ws.recv()
            await ws.send(
                orjson.dumps([{"taskType": "upscale", "upscaleFactor": 2, **t} for t in tasks]),
                text=True,
            )
            answered: set[str] = set()
            async with asyncio.timeout(20):
                while len(answered) < 3:
                    frame = orjson.loads(await ws.recv())
                    answered |= {item["taskUUID"] for items in frame.values() for item in items}

        auth = await served.wait_for_event("auth.rejected")
        task_invalid = await served.wait_for_event("task.invalid")
        task_failed = await served.wait_for_event("task.failed")
        webhook = await served.wait_for_event("webhook.failed")

    assert served.process.returncode == 0
    assert any(line.get("event") == "server.stopped" for line in served.logs)
    assert auth["reason"] == "invalid key"
    assert (task_invalid["task_uuid"], task_invalid["code"]) == (invalid, "invalidOutputQuality")
    assert (task_failed["task_uuid"], task_failed["code"]) == (failed, "unsupportedImageFormat")
    assert (webhook["host"], webhook["code"]) == ("127.0.0.1", "webhookFailed")
    everything = "".join(served.raw_stderr)
    for secret in (KEY, WRONG_KEY, TOKEN):
        assert secret not in everything


@pytest.mark.parametrize(
    ("where", "expected"),
    [
        pytest.param(["--port", "70000"], "must be from 0 to 65535", id="port over 65535"),
        pytest.param(["--port", "abc"], "--port", id="port not a number"),
        pytest.param(
            ["--host", "no-such-host.invalid", "--port", "0"], "cannot listen", id="unknown host"
        ),
        pytest.param(["--port", "IN_USE"], "cannot listen", id="port in use"),
    ],
)
async def test_serve_where_it_cannot_listen_is_a_clean_usage_error(entry_point, where, expected):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        arguments = [port if arg == "IN_USE" else arg for arg in where]
        process = await asyncio.create_subprocess_exec(
            str(entry_point),
            "serve",
            "--api-key",
            KEY,
            *arguments,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        async with asyncio.timeout(60):
            stdout, stderr = await process.communicate()
    text = stderr.decode()
    assert process.returncode == 2, text
    assert expected in text and "Traceback" not in text, text
    assert KEY not in text + stdout.decode()
