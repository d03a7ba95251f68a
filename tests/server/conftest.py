"""Fixtures for the reference-server tests: a server on port 0 and a raw wire client.

The client here is deliberately dumb (websockets + orjson, no library code), so the tests check
the server's wire behaviour directly.
"""

from __future__ import annotations

import asyncio
import base64
import io
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest
from PIL import Image
from websockets.asyncio.client import ClientConnection, connect

from upscale_stream.server import ReferenceServer, ServerConfig

KEY = "test-key-server-0123456789"


def png_bytes(
    width: int = 8, height: int = 8, colour: tuple[int, int, int] = (200, 30, 30)
) -> bytes:
    """A small PNG file."""
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(buffer, "PNG")
    return buffer.getvalue()


def png_data_uri(width: int = 8, height: int = 8) -> str:
    """A small PNG as a data URI."""
    return "data:image/png;base64," + base64.b64encode(png_bytes(width, height)).decode()


def new_uuid() -> str:
    return str(uuid.uuid4())


def upscale(**fields: Any) -> dict[str, Any]:
    """An upscale task item with a fresh taskUUID and an 8x8 PNG input, overridable."""
    item: dict[str, Any] = {
        "taskType": "upscale",
        "taskUUID": new_uuid(),
        "inputImage": png_data_uri(),
        "upscaleFactor": 2,
    }
    item.update(fields)
    return item


def decode_image(item: dict[str, Any]) -> Image.Image:
    """The output image of a base64Data or dataURI result item."""
    text = item.get("imageBase64Data") or item["imageDataURI"].partition(",")[2]
    return Image.open(io.BytesIO(base64.b64decode(text)))


class FakeClock:
    """A monotonic clock the test advances by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def is_final(item: dict[str, Any]) -> bool:
    """A data item that finishes a task (result or polled status), not an ACK."""
    return any(key in item for key in ("imageUUID", "status"))


@dataclass
class WireClient:
    """A raw client: sends arrays, receives envelopes, remembers every frame it received."""

    ws: ClientConnection
    frames: list[Any] = field(default_factory=list)
    session_id: str | None = None

    async def send(self, items: Iterable[dict[str, Any]] | Any) -> None:
        payload = list(items) if isinstance(items, list | tuple) else items
        await self.ws.send(orjson.dumps(payload).decode())

    async def send_text(self, text: str) -> None:
        await self.ws.send(text)

    async def recv_raw(self, timeout: float = 10.0) -> str | bytes:
        async with asyncio.timeout(timeout):
            return await self.ws.recv()

    async def recv(self, timeout: float = 10.0) -> dict[str, Any]:
        frame = orjson.loads(await self.recv_raw(timeout))
        self.frames.append(frame)
        assert isinstance(frame, dict), frame
        assert not ("data" in frame and "errors" in frame), frame
        return frame

    async def authenticate(self, key: str = KEY, session_id: str | None = None) -> dict[str, Any]:
        item: dict[str, Any] = {"taskType": "authentication", "apiKey": key}
        if session_id is not None:
            item["connectionSessionUUID"] = session_id
        await self.send([item])
        frame = await self.recv()
        answer = frame["data"][0]
        assert answer["taskType"] == "authentication"
        assert "taskUUID" not in answer
        self.session_id = answer["connectionSessionUUID"]
        return answer

    async def collect(
        self, task_uuids: Iterable[str], timeout: float = 20.0
    ) -> dict[str, dict[str, Any]]:
        """Receive frames until every task has a final answer; returns the answers by UUID.

        An answer is a result item (with ``imageUUID``) or an error item. ACKs are skipped.
        """
        wanted = set(task_uuids)
        answers: dict[str, dict[str, Any]] = {}
        async with asyncio.timeout(timeout):
            while not wanted <= answers.keys():
                frame = await self.recv(timeout)
                for key in ("data", "errors"):
                    for item in frame.get(key, []):
                        task_uuid = item.get("taskUUID")
                        if task_uuid in wanted and (key == "errors" or is_final(item)):
                            assert task_uuid not in answers, f"answered twice: {item}"
                            answers[task_uuid] = item
        return answers


ClientFactory = Callable[..., AbstractAsyncContextManager[WireClient]]


@pytest.fixture
async def servers() -> AsyncIterator[Callable[..., Awaitable[ReferenceServer]]]:
    """Start servers with config overrides; every one is stopped at teardown."""
    started: list[ReferenceServer] = []

    async def factory(**overrides: Any) -> ReferenceServer:
        fields: dict[str, Any] = {"api_keys": frozenset({KEY}), "port": 0}
        fields.update(overrides)
        server = ReferenceServer(ServerConfig(**fields))
        await server.start()
        started.append(server)
        return server

    yield factory
    for server in started:
        await server.stop()


@pytest.fixture
async def server(servers: Callable[..., Awaitable[ReferenceServer]]) -> ReferenceServer:
    """A server with default settings (one key, port 0)."""
    return await servers()


@pytest.fixture
def client_for() -> ClientFactory:
    """Open raw clients: ``async with client_for(server) as client``."""

    @asynccontextmanager
    async def opened(server: ReferenceServer, **options: Any) -> AsyncIterator[WireClient]:
        async with connect(server.url, max_size=None, **options) as ws:
            yield WireClient(ws)

    return opened


@pytest.fixture
async def client(server: ReferenceServer, client_for: ClientFactory) -> AsyncIterator[WireClient]:
    """An authenticated raw client of ``server``."""
    async with client_for(server) as wire:
        await wire.authenticate()
        yield wire
