"""Tests for upscale_stream.server.outbound against a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import collections
import dataclasses
import http.server
import logging
import socket
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from upscale_stream.server.outbound import (
    OutboundError,
    OutboundPolicy,
    check_destination,
    fetch_url,
    post_webhook,
    put_upload,
)

IMAGE = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4
BIG = b"x" * 2048
LOCAL = OutboundPolicy(timeout=5.0, allow_private=True, retry_delay=0.0)
PUBLIC_ONLY = dataclasses.replace(LOCAL, allow_private=False)


@dataclasses.dataclass(frozen=True)
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def route(self) -> str:
        """The path without its query string."""
        return self.path.split("?", 1)[0]


class RecordingServer(http.server.ThreadingHTTPServer):
    """Answers fixed routes, records every request, and plays scripted statuses per path."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), RecordingHandler)
        self.requests: list[Recorded] = []
        self.scripts: dict[str, collections.deque[int]] = {}
        self.release = threading.Event()  # lets a hanging handler finish at teardown
        self.lock = threading.Lock()

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def script(self, route: str, *statuses: int) -> None:
        self.scripts[route] = collections.deque(statuses)

    def next_status(self, route: str, default: int) -> int:
        with self.lock:
            queue = self.scripts.get(route)
            return queue.popleft() if queue else default

    def paths(self) -> list[str]:
        with self.lock:
            return [request.path for request in self.requests]

    def handle_error(self, request: Any, client_address: Any) -> None:
        # The size-limit tests hang up mid-body on purpose: no traceback for that broken pipe.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class RecordingHandler(http.server.BaseHTTPRequestHandler):
    server: RecordingServer

    def log_message(self, format: str, *args: object) -> None:
        pass  # keep test output clean

    def record(self) -> Recorded:
        length = int(self.headers.get("Content-Length") or 0)
        request = Recorded(
            self.command, self.path, dict(self.headers.items()), self.rfile.read(length)
        )
        with self.server.lock:
            self.server.requests.append(request)
        return request

    def answer(
        self, status: int, body: bytes = b"", *, length: bool = True, **headers: str
    ) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name.replace("_", "-"), value)
        if length:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        route = self.record().route
        if route == "/image":
            self.answer(200, IMAGE, Content_Type="image/png")
        elif route == "/big":
            self.answer(200, BIG)
        elif route == "/big-stream":
            self.answer(200, BIG, length=False)  # HTTP/1.0: the body ends when we close
        elif route == "/redirect":
            self.answer(302, Location=f"{self.server.base}/image")
        elif route == "/drip":
            self.answer(200, length=False, Content_Length=str(len(IMAGE)))
            # One byte per 20 ms (about 20 s in all), until the client hangs up or teardown.
            for byte in IMAGE:
                if self.server.release.wait(0.02):
                    break
                try:
                    self.wfile.write(bytes([byte]))
                    self.wfile.flush()
                except OSError:
                    break
        elif route == "/hang":
            self.server.release.wait(10)
            self.answer(200, IMAGE)
        else:
            self.answer(404, b"not found")

    def do_POST(self) -> None:
        request = self.record()
        self.answer(self.server.next_status(request.route, 200), b'{"ok": true}')

    def do_PUT(self) -> None:
        request = self.record()
        self.answer(self.server.next_status(request.route, 201))


@pytest.fixture
def server() -> Iterator[RecordingServer]:
    instance = RecordingServer()
    # A short poll interval only makes shutdown() return sooner; nothing waits on it.
    thread = threading.Thread(target=instance.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    try:
        yield instance
    finally:
        instance.release.set()
        instance.shutdown()
        instance.server_close()
        thread.join(timeout=10)


def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (it was just bound and released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


# --- downloads ------------------------------------------------------------------------------------


async def test_fetch_url_returns_the_body_when_private_addresses_are_allowed(
    server: RecordingServer,
) -> None:
    body = await fetch_url(f"{server.base}/image", LOCAL)

    assert body == IMAGE
    assert server.paths() == ["/image"]


async def test_fetch_url_refuses_loopback_when_private_addresses_are_not_allowed(
    server: RecordingServer,
) -> None:
    with pytest.raises(OutboundError) as caught:
        await fetch_url(f"{server.base}/image", PUBLIC_ONLY)

    assert caught.value.code == "forbiddenAddress"
    assert "loopback" in caught.value.message
    assert server.paths() == []


@pytest.mark.parametrize(
    "url", ["file:///etc/passwd", "ftp://127.0.0.1/image.png", "data:image/png;base64,iVBO"]
)
async def test_fetch_url_refuses_other_schemes_as_invalid_url(url: str) -> None:
    with pytest.raises(OutboundError) as caught:
        await fetch_url(url, LOCAL)

    assert caught.value.code == "invalidUrl"


@pytest.mark.parametrize("path", ["/big", "/big-stream"])
async def test_fetch_url_refuses_a_body_over_max_bytes(server: RecordingServer, path: str) -> None:
    policy = dataclasses.replace(LOCAL, max_bytes=len(BIG) - 1)

    with pytest.raises(OutboundError) as caught:
        await fetch_url(f"{server.base}{path}", policy)

    assert caught.value.code == "imageTooLarge"


@pytest.mark.parametrize("path", ["/big", "/big-stream"])
async def test_fetch_url_accepts_a_body_of_exactly_max_bytes(
    server: RecordingServer, path: str
) -> None:
    policy = dataclasses.replace(LOCAL, max_bytes=len(BIG))

    assert await fetch_url(f"{server.base}{path}", policy) == BIG


async def test_fetch_url_does_not_follow_redirects(server: RecordingServer) -> None:
    with pytest.raises(OutboundError) as caught:
        await fetch_url(f"{server.base}/redirect", LOCAL)

    assert caught.value.code == "downloadFailed"
    assert "302" in caught.value.message
    assert server.paths() == ["/redirect"]


async def test_fetch_url_reports_a_404_as_download_failed(server: RecordingServer) -> None:
    with pytest.raises(OutboundError) as caught:
        await fetch_url(f"{server.base}/missing.png", LOCAL)

    assert caught.value.code == "downloadFailed"
    assert "404" in caught.value.message


async def test_fetch_url_reports_a_refused_connection_as_download_failed() -> None:
    with pytest.raises(OutboundError) as caught:
        await fetch_url(f"http://127.0.0.1:{closed_port()}/image", LOCAL)

    assert caught.value.code == "downloadFailed"


async def test_fetch_url_times_out_when_the_server_does_not_answer(
    server: RecordingServer,
) -> None:
    policy = dataclasses.replace(LOCAL, timeout=0.2)

    with pytest.raises(OutboundError) as caught:
        await fetch_url(f"{server.base}/hang", policy)

    assert caught.value.code == "downloadFailed"
    assert "timed out" in caught.value.message


async def test_fetch_url_times_out_when_the_body_only_drips_in(server: RecordingServer) -> None:
    policy = dataclasses.replace(LOCAL, timeout=0.3)
    started = time.monotonic()

    with pytest.raises(OutboundError) as caught:
        await fetch_url(f"{server.base}/drip", policy)

    assert caught.value.code == "downloadFailed"
    assert "timed out" in caught.value.message
    assert time.monotonic() - started < 5, "the whole-body deadline did not apply"


# --- webhooks -------------------------------------------------------------------------------------


async def test_webhook_post_body_is_the_json_payload(server: RecordingServer) -> None:
    payload = {"data": [{"taskType": "upscale", "taskUUID": "abc", "cost": 0.0012}]}

    attempts = await post_webhook(f"{server.base}/hook?token=t0k3n", payload, LOCAL)

    assert attempts == 1
    [request] = server.requests
    assert request.method == "POST"
    assert request.path == "/hook?token=t0k3n"
    assert request.headers["Content-Type"] == "application/json"
    assert orjson.loads(request.body) == payload


async def test_webhook_retries_after_a_500_then_succeeds(server: RecordingServer) -> None:
    server.script("/hook", 500, 200)

    attempts = await post_webhook(f"{server.base}/hook", {"n": 1}, LOCAL)

    assert attempts == 2
    assert server.paths() == ["/hook", "/hook"]
    assert [orjson.loads(r.body) for r in server.requests] == [{"n": 1}, {"n": 1}]


@pytest.mark.parametrize("status", [503, 429, 408])
async def test_webhook_gives_up_after_the_last_retry(server: RecordingServer, status: int) -> None:
    server.script("/hook", *[status] * 5)
    policy = dataclasses.replace(LOCAL, webhook_retries=2)

    with pytest.raises(OutboundError) as caught:
        await post_webhook(f"{server.base}/hook", {"n": 1}, policy)

    assert caught.value.code == "webhookFailed"
    assert str(status) in caught.value.message
    assert len(server.requests) == 3


async def test_webhook_does_not_retry_a_client_error(server: RecordingServer) -> None:
    server.script("/hook", 400, 200)

    with pytest.raises(OutboundError) as caught:
        await post_webhook(f"{server.base}/hook", {"n": 1}, LOCAL)

    assert caught.value.code == "webhookFailed"
    assert len(server.requests) == 1


async def test_webhook_retries_a_refused_connection_then_fails() -> None:
    policy = dataclasses.replace(LOCAL, webhook_retries=1)

    with pytest.raises(OutboundError) as caught:
        await post_webhook(f"http://127.0.0.1:{closed_port()}/hook", {"n": 1}, policy)

    assert caught.value.code == "webhookFailed"
    assert "2 attempt(s)" in caught.value.message


async def test_webhook_to_loopback_is_refused_without_any_attempt(
    server: RecordingServer,
) -> None:
    with pytest.raises(OutboundError) as caught:
        await post_webhook(f"{server.base}/hook", {"n": 1}, PUBLIC_ONLY)

    assert caught.value.code == "forbiddenAddress"
    assert server.requests == []


def test_backoff_doubles_the_retry_delay() -> None:
    policy = OutboundPolicy(retry_delay=0.5)

    assert [policy.backoff(retry) for retry in range(4)] == [0.5, 1.0, 2.0, 4.0]


# --- uploads --------------------------------------------------------------------------------------


async def test_put_upload_sends_the_raw_bytes_with_the_content_type(
    server: RecordingServer,
) -> None:
    await put_upload(f"{server.base}/bucket/out.png?X-Amz-Signature=abc", IMAGE, "image/png", LOCAL)

    [request] = server.requests
    assert request.method == "PUT"
    assert request.body == IMAGE
    assert request.headers["Content-Type"] == "image/png"
    assert request.headers["Content-Length"] == str(len(IMAGE))


async def test_put_upload_reports_a_non_2xx_answer_as_upload_failed(
    server: RecordingServer,
) -> None:
    server.script("/bucket/out.jpg", 403)

    with pytest.raises(OutboundError) as caught:
        await put_upload(f"{server.base}/bucket/out.jpg", IMAGE, "image/jpeg", LOCAL)

    assert caught.value.code == "uploadFailed"
    assert "403" in caught.value.message


async def test_put_upload_to_loopback_is_refused(server: RecordingServer) -> None:
    with pytest.raises(OutboundError) as caught:
        await put_upload(f"{server.base}/bucket/out.jpg", IMAGE, "image/jpeg", PUBLIC_ONLY)

    assert caught.value.code == "forbiddenAddress"
    assert server.requests == []


# --- destination checks ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://127.0.0.1:8080/", "loopback"),
        ("http://[::1]/hook", "loopback"),
        ("http://10.1.2.3/image.png", "private"),
        ("http://172.16.0.1/", "private"),
        ("http://192.168.1.20/", "private"),
        ("http://169.254.169.254/latest/meta-data/", "link-local"),
        ("http://[fe80::1]/", "link-local"),
        ("http://[fc00::1]/", "private"),
        ("http://[::ffff:127.0.0.1]/", "loopback"),
        ("http://[::ffff:10.0.0.1]/", "private"),
        ("http://[64:ff9b::7f00:1]/", "loopback"),
        ("http://[2002:7f00:1::]/", "loopback (tunnelled)"),
        ("http://0.0.0.0/", "unspecified"),
        ("http://[::]/", "unspecified"),
        ("http://224.0.0.1/", "multicast"),
        ("http://[ff02::1]/", "multicast"),
        ("http://240.0.0.1/", "reserved"),
        ("http://100.64.0.1/", "non-global"),
    ],
)
def test_check_destination_refuses_non_public_addresses(url: str, reason: str) -> None:
    with pytest.raises(OutboundError) as caught:
        check_destination(url, PUBLIC_ONLY)

    assert caught.value.code == "forbiddenAddress"
    assert f"a {reason} address" in caught.value.message


def test_check_destination_refuses_a_numeric_host_that_resolves_to_loopback() -> None:
    with pytest.raises(OutboundError) as caught:
        check_destination("http://2130706433/", PUBLIC_ONLY)  # 127.0.0.1 as one number

    assert caught.value.code == "forbiddenAddress"


@pytest.mark.parametrize(
    "url",
    [
        "http://8.8.8.8/image.png",
        "https://1.1.1.1:8443/hook?token=x",
        "http://[2606:4700:4700::1111]/",
        "http://[::ffff:8.8.8.8]/",
    ],
)
def test_check_destination_accepts_public_addresses(url: str) -> None:
    check_destination(url, PUBLIC_ONLY)


def test_check_destination_accepts_private_addresses_when_allowed() -> None:
    check_destination("http://10.0.0.1/", LOCAL)
    check_destination("http://[::1]/", LOCAL)


@pytest.mark.parametrize(
    "url",
    [
        "file:///etc/passwd",
        "gopher://8.8.8.8/",
        "javascript:alert(1)",
        "8.8.8.8/image.png",
        "http://",
        "http:///path-only",
        "http://user:secret@8.8.8.8/",
        "http://8.8.8.8:99999/",
        "http://8.8.8.8:0/",
        "http://8.8.8.8/a b",
        "http://8.8.8.8/\r\nX-Injected: 1",
    ],
)
def test_check_destination_refuses_malformed_and_non_http_urls(url: str) -> None:
    with pytest.raises(OutboundError) as caught:
        check_destination(url, LOCAL)

    assert caught.value.code == "invalidUrl"
    assert "secret" not in str(caught.value)


# --- no secrets in logs and messages --------------------------------------------------------------


async def test_query_strings_appear_in_no_log_line_and_no_error(
    server: RecordingServer, caplog: pytest.LogCaptureFixture
) -> None:
    server.script("/hook", 500, 500)
    policy = dataclasses.replace(LOCAL, webhook_retries=1)
    caplog.set_level(logging.DEBUG, logger="upscale_stream.server.outbound")

    await fetch_url(f"{server.base}/image?token=s3cret-a", LOCAL)
    with pytest.raises(OutboundError) as caught:
        await post_webhook(f"{server.base}/hook?apiKey=s3cret-b", {"n": 1}, policy)

    lines = [record.getMessage() for record in caplog.records]
    assert any("input downloaded" in line for line in lines)
    assert any("webhook attempt failed" in line for line in lines)
    assert not any("s3cret" in line for line in lines)
    assert "s3cret" not in str(caught.value)
    assert f"{server.base}/hook" in str(caught.value)


def test_outbound_error_shows_its_code_and_message() -> None:
    error = OutboundError("uploadFailed", "upload endpoint answered HTTP 403")

    assert str(error) == "uploadFailed: upload endpoint answered HTTP 403"
    assert (error.code, error.message) == ("uploadFailed", "upload endpoint answered HTTP 403")


@pytest.mark.parametrize(
    "options",
    [{"timeout": 0}, {"max_bytes": -1}, {"webhook_retries": -1}, {"retry_delay": -0.1}],
)
def test_policy_refuses_impossible_limits(options: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        OutboundPolicy(**options)  # type: ignore[arg-type]
