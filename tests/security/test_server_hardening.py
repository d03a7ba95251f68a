"""The reference server's hardening, one named test per promise of issue 7.

* the API key is compared in constant time (``hmac.compare_digest``, every key, no early exit);
* an unauthenticated socket can do nothing but authenticate, and is closed after a short
  ``auth_timeout``;
* per-connection limits: tasks per frame, tasks in flight, bytes per frame;
* the image route refuses path traversal and answers 404/410 for unknown and expired ids;
* outbound HTTP (input URLs, webhook POSTs, ``uploadEndpoint`` PUTs) only goes to http(s),
  never to private, loopback or link-local addresses unless explicitly allowed, and has a size
  limit and a timeout.

Everything runs on 127.0.0.1; the local HTTP server used as a target records every request, so
"refused" means that no request arrived at all.
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import http.server
import io
import threading
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Any

import orjson
import pytest
from PIL import Image
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from upscale_stream.server import ReferenceServer, ServerConfig

KEY = "hardening-key-SECRET-0123456789"
OTHER_KEYS = ("other-key-one-0123456789", "other-key-two-0123456789")
PING = {"taskType": "ping", "ping": True}
PONG = {"data": [{"taskType": "ping", "pong": True}]}
Servers = Callable[..., Awaitable[ReferenceServer]]


def png(size: int = 8) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), (1, 2, 3)).save(buffer, "PNG")
    return buffer.getvalue()


BIG_PNG = io.BytesIO()
Image.effect_noise((128, 128), 90).save(BIG_PNG, "PNG")  # noise does not compress: ~16 KB


def upscale(**fields: Any) -> dict[str, Any]:
    item: dict[str, Any] = {
        "taskType": "upscale",
        "taskUUID": str(uuid.uuid4()),
        "inputImage": "data:image/png;base64," + base64.b64encode(png()).decode(),
        "upscaleFactor": 2,
    }
    item.update(fields)
    return item


@pytest.fixture
async def servers() -> AsyncIterator[Servers]:
    """Start reference servers with config overrides; all are stopped at teardown."""
    started: list[ReferenceServer] = []

    async def start(**overrides: Any) -> ReferenceServer:
        fields: dict[str, Any] = {"api_keys": frozenset({KEY}), "port": 0} | overrides
        server = ReferenceServer(ServerConfig(**fields))
        await server.start()
        started.append(server)
        return server

    yield start
    for server in started:
        await server.stop()


async def send(ws: ClientConnection, items: list[Any]) -> None:
    await ws.send(orjson.dumps(items).decode())


async def recv(ws: ClientConnection, timeout: float = 10.0) -> dict[str, Any]:
    async with asyncio.timeout(timeout):
        frame: dict[str, Any] = orjson.loads(await ws.recv())
    return frame


@asynccontextmanager
async def authenticated(server: ReferenceServer) -> AsyncIterator[ClientConnection]:
    async with connect(server.url, max_size=None) as ws:
        await send(ws, [{"taskType": "authentication", "apiKey": KEY}])
        assert "connectionSessionUUID" in (await recv(ws))["data"][0]
        yield ws


async def answers(ws: ClientConnection, uuids: set[str]) -> dict[str, dict[str, Any]]:
    """Final answers (results or errors) of the given tasks, skipping everything else."""
    found: dict[str, dict[str, Any]] = {}
    while not uuids <= found.keys():
        frame = await recv(ws, timeout=20)
        for key in ("data", "errors"):
            for item in frame.get(key, []):
                if item.get("taskUUID") in uuids and (key == "errors" or "imageUUID" in item):
                    found[item["taskUUID"]] = item
    return found


# -- authentication ------------------------------------------------------------------------------


async def test_keys_are_compared_in_constant_time_against_every_key(
    servers: Servers, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = await servers(api_keys=frozenset({KEY, *OTHER_KEYS}))
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def recording(a: Any, b: Any) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", recording)
    async with authenticated(server):
        pass
    assert len(calls) == 3  # no early exit once the right key matched
    assert {known for _, known in calls} == {k.encode() for k in (KEY, *OTHER_KEYS)}
    calls.clear()
    async with connect(server.url) as ws:
        await send(ws, [{"taskType": "authentication", "apiKey": "nearly-" + KEY}])
        assert (await recv(ws))["errors"][0]["code"] == "invalidApiKey"
    assert len(calls) == 3 and all(offered == b"nearly-" + KEY.encode() for offered, _ in calls)


@pytest.mark.parametrize(
    "item",
    [
        pytest.param(upscale(), id="upscale"),
        pytest.param(upscale(deliveryMethod="async"), id="async upscale"),
        pytest.param({"taskType": "getResponse", "taskUUID": str(uuid.uuid4())}, id="poll"),
        pytest.param(
            {"taskType": "imageUpload", "taskUUID": str(uuid.uuid4()), "image": "x"}, id="upload"
        ),
        pytest.param(PING, id="ping"),
    ],
)
async def test_an_unauthenticated_socket_can_do_nothing_but_authenticate(
    servers: Servers, item: dict[str, Any]
) -> None:
    server = await servers()
    async with connect(server.url) as ws:
        await send(ws, [item, item])
        refused = await recv(ws)
        # One error for the whole frame, however many items it holds (issue 10, flood).
        assert [e["code"] for e in refused["errors"]] == ["authenticationRequired"]
        assert "data" not in refused
    assert server.counts.executions_total == 0 and server.counts.received_total == 0
    assert not server.registry.sessions and not server.registry.tasks


async def test_an_unauthenticated_socket_is_closed_after_the_auth_timeout(
    servers: Servers,
) -> None:
    server = await servers(auth_timeout=0.3)
    async with connect(server.url) as ws:
        with pytest.raises(ConnectionClosed):
            await recv(ws, timeout=5)  # silence: the server closes it
        assert ws.close_code == 1008


async def test_a_socket_sending_only_garbage_is_still_closed_after_the_auth_timeout(
    servers: Servers,
) -> None:
    server = await servers(auth_timeout=0.3)
    async with connect(server.url) as ws:
        with pytest.raises(ConnectionClosed):
            for _ in range(10_000):  # bounded; the timeout ends it long before
                await ws.send("not json")
                await recv(ws, timeout=5)
        assert ws.close_code == 1008


async def test_a_rejected_key_cannot_run_tasks_on_the_same_socket(servers: Servers) -> None:
    server = await servers(auth_timeout=1.0)
    async with connect(server.url) as ws:
        await send(ws, [{"taskType": "authentication", "apiKey": "wrong"}, upscale()])
        assert (await recv(ws))["errors"][0]["code"] == "invalidApiKey"
        await send(ws, [upscale()])
        assert (await recv(ws))["errors"][0]["code"] == "authenticationRequired"
    assert server.counts.executions_total == 0


# -- per-connection limits -----------------------------------------------------------------------


async def test_tasks_per_frame_are_limited_per_connection(servers: Servers) -> None:
    server = await servers(max_tasks_per_frame=3)
    tasks = [upscale() for _ in range(5)]
    async with authenticated(server) as ws:
        await send(ws, tasks)
        found = await answers(ws, {t["taskUUID"] for t in tasks})
    assert [found[t["taskUUID"]].get("code") for t in tasks] == [None] * 3 + ["tooManyTasks"] * 2


async def test_tasks_in_flight_are_limited_per_connection_not_per_server(
    servers: Servers,
) -> None:
    server = await servers(max_in_flight=2)
    server.faults.result_delay = 0.5
    first, second = [upscale() for _ in range(3)], [upscale() for _ in range(2)]
    async with authenticated(server) as one, authenticated(server) as two:
        await send(one, first)
        await send(two, second)  # another connection has its own budget
        found_one = await answers(one, {t["taskUUID"] for t in first})
        found_two = await answers(two, {t["taskUUID"] for t in second})
    assert [found_one[t["taskUUID"]].get("code") for t in first] == [None, None, "tooManyTasks"]
    assert all("imageURL" in found_two[t["taskUUID"]] for t in second)


async def test_bytes_per_frame_are_limited_and_the_frame_is_never_buffered(
    servers: Servers,
) -> None:
    server = await servers(max_size=64 * 1024)
    async with authenticated(server) as ws:
        await send(ws, [upscale(inputImage="A" * 200_000)])
        with pytest.raises(ConnectionClosed):
            await recv(ws)
        assert ws.close_code == 1009
    assert server.counts.received_total == 0


# -- the image route -----------------------------------------------------------------------------


async def raw_get(server: ReferenceServer, target: str) -> tuple[int, bytes]:
    """Send a GET with ``target`` byte for byte (no client-side normalisation)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        request = f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
        writer.write(request.encode("latin-1"))
        await writer.drain()
        async with asyncio.timeout(10):
            response = await reader.read()
    finally:
        writer.close()
        await writer.wait_closed()
    head, _, body = response.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


TRAVERSALS = [
    "/image/../../etc/passwd",
    "/image/..%2f..%2fetc%2fpasswd",
    "/image/%2e%2e/%2e%2e/etc/passwd",
    "/image/%252e%252e%252fetc%252fpasswd",
    "/image/....//....//etc/passwd",
    "/image/..\\..\\etc\\passwd",
    "/image/00000000-0000-4000-8000-000000000000.png/../../../etc/passwd",
    "/image/00000000-0000-4000-8000-000000000000.png%00.txt",
    "/image//etc/passwd",
    "/image/%2fetc%2fpasswd",
    "/image/file:%2f%2f%2fetc%2fpasswd",
]


@pytest.mark.parametrize("target", TRAVERSALS)
async def test_the_image_route_refuses_path_traversal(servers: Servers, target: str) -> None:
    server = await servers()
    status, body = await raw_get(server, target)
    assert status in (400, 404), (status, body[:80])
    assert b"root:" not in body


async def test_the_image_route_answers_404_for_unknown_ids_and_410_once_expired(
    servers: Servers,
) -> None:
    now = [1000.0]
    server = await servers(clock=lambda: now[0])
    async with authenticated(server) as ws:
        task = upscale(outputFormat="PNG", ttl=60)
        await send(ws, [task])
        url = (await answers(ws, {task["taskUUID"]}))[task["taskUUID"]]["imageURL"]
    path = url.removeprefix(server.http_url)
    assert (await raw_get(server, path))[0] == 200
    assert (await raw_get(server, path.replace(".png", ".jpg")))[0] == 404  # wrong extension
    assert (await raw_get(server, f"/image/{uuid.uuid4()}.png"))[0] == 404  # unknown id
    assert (await raw_get(server, "/image/not-a-uuid.png"))[0] == 404
    now[0] += 61
    assert (await raw_get(server, path))[0] == 410  # expired


# -- outbound HTTP -------------------------------------------------------------------------------


class Target:
    """A local HTTP server that records every request: a PNG, a big PNG, a redirect, a stall."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str]] = []
        self.release = threading.Event()
        target = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _answer(self) -> None:
                target.requests.append((self.command, self.path))
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                if self.path == "/stall":
                    target.release.wait(10)  # until the test ends; the server times out first
                    return
                if self.path == "/redirect":
                    self.send_response(302)
                    self.send_header("Location", "http://127.0.0.1:1/elsewhere.png")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                body = BIG_PNG.getvalue() if self.path == "/big.png" else png(4)
                self.send_response(200)
                self.send_header("Content-Type", "image/png")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_PUT = _answer

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.http = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.http.daemon_threads = True
        self.thread = threading.Thread(
            target=self.http.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http.server_address[1]}"


@pytest.fixture
def target() -> Iterator[Target]:
    running = Target()
    running.thread.start()
    try:
        yield running
    finally:
        running.release.set()
        running.http.shutdown()
        running.http.server_close()
        running.thread.join(timeout=5)


async def run_one(server: ReferenceServer, task: dict[str, Any]) -> dict[str, Any]:
    async with authenticated(server) as ws:
        await send(ws, [task])
        return (await answers(ws, {task["taskUUID"]}))[task["taskUUID"]]


@pytest.mark.parametrize(
    "host",
    [
        "127.0.0.1",
        "localhost",
        "[::1]",
        "[::ffff:127.0.0.1]",
        "169.254.169.254",
        "10.0.0.1",
        "192.168.1.1",
        "172.16.0.1",
        "0.0.0.0",
        "[fe80::1]",
    ],
)
async def test_an_input_url_to_a_private_address_is_refused(
    servers: Servers, target: Target, host: str
) -> None:
    server = await servers(allow_private_urls=False)
    port = target.http.server_address[1]
    answer = await run_one(server, upscale(inputImage=f"http://{host}:{port}/a.png"))
    assert answer["code"] == "forbiddenAddress", answer
    assert answer["parameter"] == "inputImage"
    assert target.requests == []


async def test_an_upload_endpoint_on_loopback_is_refused_and_fails_the_task(
    servers: Servers, target: Target
) -> None:
    server = await servers(allow_private_urls=False)
    answer = await run_one(server, upscale(uploadEndpoint=f"{target.url}/put"))
    assert answer["code"] == "forbiddenAddress" and answer["parameter"] == "uploadEndpoint"
    assert target.requests == []


async def test_a_webhook_on_loopback_is_refused_and_fails_the_task_like_an_upload_endpoint(
    servers: Servers, target: Target
) -> None:
    # issue 10: the pair is consistent. A loopback webhookURL used to be accepted, the task
    # run, and the POST silently skipped (only logged); now it fails the task up front.
    server = await servers(allow_private_urls=False)
    task = upscale(webhookURL=f"{target.url}/hook?token=SECRET")
    answer = await run_one(server, task)
    assert answer["code"] == "forbiddenAddress" and answer["parameter"] == "webhookURL"
    assert "SECRET" not in answer["message"]
    assert server.executions[task["taskUUID"]] == 1 and target.requests == []


@pytest.mark.parametrize(
    ("field", "value", "code"),
    [
        ("inputImage", "file:///etc/passwd", "invalidInputImage"),
        ("inputImage", "ftp://127.0.0.1/a.png", "invalidInputImage"),
        ("inputImage", "gopher://127.0.0.1:70/x", "invalidInputImage"),
        ("webhookURL", "file:///etc/passwd", "invalidWebhookURL"),
        ("uploadEndpoint", "ftp://127.0.0.1/out.png", "invalidUploadEndpoint"),
    ],
)
async def test_outbound_urls_other_than_http_are_refused(
    servers: Servers, field: str, value: str, code: str
) -> None:
    server = await servers(allow_private_urls=True)  # even where loopback is allowed
    answer = await run_one(server, upscale(**{field: value}))
    assert answer["code"] == code, answer


async def test_loopback_works_only_when_allowed_explicitly(
    servers: Servers, target: Target
) -> None:
    server = await servers(allow_private_urls=True)
    task = upscale(
        inputImage=f"{target.url}/a.png",
        uploadEndpoint=f"{target.url}/put",
        webhookURL=f"{target.url}/hook",
    )
    assert "imageURL" in await run_one(server, task)
    assert ("GET", "/a.png") in target.requests and ("PUT", "/put") in target.requests


async def test_an_input_download_over_the_size_limit_is_refused(
    servers: Servers, target: Target
) -> None:
    server = await servers(allow_private_urls=True, max_fetch_bytes=1024)
    answer = await run_one(server, upscale(inputImage=f"{target.url}/big.png"))
    assert answer["code"] == "imageTooLarge", answer


async def test_an_input_download_that_stalls_times_out(servers: Servers, target: Target) -> None:
    server = await servers(allow_private_urls=True, fetch_timeout=0.3)
    answer = await run_one(server, upscale(inputImage=f"{target.url}/stall"))
    assert answer["code"] == "downloadFailed" and "timed out" in answer["message"], answer


async def test_redirects_are_not_followed(servers: Servers, target: Target) -> None:
    server = await servers(allow_private_urls=True)
    answer = await run_one(server, upscale(inputImage=f"{target.url}/redirect"))
    assert answer["code"] == "downloadFailed" and "302" in answer["message"], answer
    assert target.requests == [("GET", "/redirect")]
