"""The picows transport: it reads, writes, fails and closes as websockets' connection does."""

from __future__ import annotations

import asyncio
import base64
import io
import socket
from collections.abc import AsyncIterator

import orjson
import pytest
import websockets
from PIL import Image
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed, ConnectionClosedError, ConnectionClosedOK

from upscale_stream import UpscaleClient
from upscale_stream.config import Retry
from upscale_stream.errors import AuthenticationError, ConnectionLost, InvalidURL
from upscale_stream.picows_socket import PicowsSocket, open_picows
from upscale_stream.server import ReferenceServer, ServerConfig

KEY = "picows-test-key"
IMAGE = "fd613011-3872-4f37-b4aa-0d343c051a27"
TIMEOUT = 10.0


def png_data_uri() -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (4, 3), (10, 200, 30)).save(buffer, "PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


async def connect(url: str, max_size: int | None = 1 << 20) -> PicowsSocket:
    return await open_picows(
        url, open_timeout=TIMEOUT, max_size=max_size, ssl=None, user_agent="upscale-stream/test"
    )


@pytest.fixture
async def server() -> AsyncIterator[ReferenceServer]:
    config = ServerConfig(api_keys=frozenset({KEY}), port=0, allow_private_urls=True)
    async with ReferenceServer(config) as running:
        yield running


async def test_auth_and_a_task_round_trip_through_the_reference_server(
    server: ReferenceServer,
) -> None:
    ws = await connect(server.url)
    try:
        await ws.send(orjson.dumps([{"taskType": "authentication", "apiKey": KEY}]), text=True)
        auth = orjson.loads(await asyncio.wait_for(ws.recv(decode=False), TIMEOUT))
        assert auth["data"][0]["taskType"] == "authentication"
        assert ws.transport is not None
    finally:
        await asyncio.wait_for(ws.close(), TIMEOUT)
    with pytest.raises(ConnectionClosedOK):
        await ws.recv()
    with pytest.raises(ConnectionClosed):
        await ws.send(b"[]")
    assert ws.unread == 0


async def serve_with(handler: object) -> tuple[websockets.asyncio.server.Server, str]:
    running = await websockets.serve(handler, "127.0.0.1", 0)  # type: ignore[arg-type]
    port = next(iter(running.sockets)).getsockname()[1]
    return running, f"ws://127.0.0.1:{port}"


async def test_a_server_close_code_ends_recv_with_connection_closed_carrying_it() -> None:
    async def close_with_4000(ws: ServerConnection) -> None:
        await ws.send("last words")
        await ws.close(4000, "go away")

    running, url = await serve_with(close_with_4000)
    async with running:
        ws = await connect(url)
        assert await asyncio.wait_for(ws.recv(), TIMEOUT) == b"last words"
        with pytest.raises(ConnectionClosedError) as info:
            await asyncio.wait_for(ws.recv(), TIMEOUT)
    assert info.value.rcvd is not None
    assert (info.value.rcvd.code, info.value.rcvd.reason) == (4000, "go away")


async def test_fragmented_messages_are_joined_and_held_to_max_size() -> None:
    async def fragments(ws: ServerConnection) -> None:
        await ws.send(["ab", "cd", "ef"])
        await ws.send(["x" * 600, "y" * 600])  # 1,200 bytes: over the client's 1,000
        await ws.wait_closed()

    running, url = await serve_with(fragments)
    async with running:
        ws = await connect(url, max_size=1_000)
        assert await asyncio.wait_for(ws.recv(), TIMEOUT) == b"abcdef"
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), TIMEOUT)


async def test_a_refused_handshake_is_an_authentication_error_for_401() -> None:
    def refuse(connection: ServerConnection, request: object) -> object:
        return connection.respond(401, "no\n")

    running = await websockets.serve(lambda ws: None, "127.0.0.1", 0, process_request=refuse)
    port = next(iter(running.sockets)).getsockname()[1]
    async with running:
        with pytest.raises(AuthenticationError, match="HTTP 401"):
            await connect(f"ws://127.0.0.1:{port}")


async def test_unreachable_servers_and_bad_urls_raise_the_library_errors() -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(ConnectionLost):
        await connect(f"ws://127.0.0.1:{port}")
    with pytest.raises(InvalidURL, match="not a valid WebSocket URL"):
        await connect("http//nowhere")


async def test_the_client_over_picows_finishes_every_task_across_a_dropped_connection(
    server: ReferenceServer,
) -> None:
    server.faults.drop_after_tasks = 120
    retry = Retry(initial=0.01, max_delay=0.05)
    async with UpscaleClient(
        api_key=KEY, url=server.url, transport="picows", retry=retry, seed=1
    ) as client:
        image = png_data_uri()
        results = await asyncio.wait_for(
            asyncio.gather(*(client.upscale(image) for _ in range(300))), 60
        )
        assert client._connection is not None and client._connection.reconnects >= 1
    assert len({result.task_uuid for result in results}) == 300
