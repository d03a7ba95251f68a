"""Result bytes: strict base64 with either decoder, and URLs over kept-alive pooled connections."""

from __future__ import annotations

import base64
import http.server
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from upscale_stream import b64, download
from upscale_stream.errors import UpscaleError
from upscale_stream.results import decode_result

TASK = "fd613011-3872-4f37-b4aa-0d343c051a27"
BODY = bytes(range(256)) * 40


class ImageServer(http.server.ThreadingHTTPServer):
    """Loopback HTTP/1.1 server: /img keeps alive, /close closes, /hop redirects, /big lies."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.connections = 0
        self.requests = 0
        self.lock = threading.Lock()

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: ImageServer

    def setup(self) -> None:
        super().setup()
        with self.server.lock:
            self.server.connections += 1

    def log_message(self, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        with self.server.lock:
            self.server.requests += 1
        if self.path.startswith("/hop"):
            self.send_response(302)
            self.send_header("Location", "/img")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if self.path == "/missing":
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        if self.path == "/chunked":  # no Content-Length: the capped read
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for start in range(0, len(BODY), 4000):
                piece = BODY[start : start + 4000]
                self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            self.wfile.write(b"0\r\n\r\n")
            return
        if self.path == "/short":  # promises more than it sends, then hangs up
            self.send_header("Content-Length", str(len(BODY) + 10))
            self.send_header("Connection", "close")
            self.close_connection = True
            self.end_headers()
            self.wfile.write(BODY)
            return
        if self.path == "/big":
            self.send_header("Content-Length", str(download.MAX_DOWNLOAD_BYTES + 1))
            self.end_headers()
            return
        self.send_header("Content-Length", str(len(BODY)))
        if self.path == "/close":
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(BODY)


@pytest.fixture
def server() -> Iterator[ImageServer]:
    httpd = ImageServer()
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield httpd
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=10)


@pytest.fixture(autouse=True)
def fresh_pool(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Each test starts with no kept connections and no proxy from the environment."""
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(download, "_pool", download._Pool())
    download._proxies.cache_clear()
    yield
    for connection in download._pool.connections.values():
        connection.close()


def result_for(**fields: Any) -> Any:
    return decode_result({"taskUUID": TASK, **fields})


def test_many_downloads_from_one_host_share_one_kept_alive_connection(
    server: ImageServer,
) -> None:
    for _ in range(20):
        assert result_for(imageURL=f"{server.base}/img").read_bytes(timeout=10) == BODY
    assert server.requests == 20
    assert server.connections == 1


def test_a_connection_the_server_closes_is_replaced_for_the_next_download(
    server: ImageServer,
) -> None:
    for _ in range(3):
        assert download.fetch(f"{server.base}/close", timeout=10) == BODY
    assert server.connections == 3
    assert download.fetch(f"{server.base}/img", timeout=10) == BODY


def test_a_kept_connection_that_went_stale_is_retried_once_on_a_fresh_one(
    server: ImageServer,
) -> None:
    assert download.fetch(f"{server.base}/img", timeout=10) == BODY
    kept = next(iter(download._pool.connections.values()))
    assert kept.sock is not None
    kept.sock.close()  # as if the server had timed the idle connection out
    kept.sock = _ClosedSocket()  # type: ignore[assignment]
    assert download.fetch(f"{server.base}/img", timeout=10) == BODY


class _ClosedSocket:
    """A socket whose peer is gone: sending fails the way a reset connection does."""

    def sendall(self, data: bytes) -> None:
        raise ConnectionResetError("peer closed")

    def settimeout(self, value: float) -> None:
        pass

    def close(self) -> None:
        pass


def test_redirects_are_followed(server: ImageServer) -> None:
    assert download.fetch(f"{server.base}/hop", timeout=10) == BODY


def test_a_failed_status_names_the_task_the_url_and_the_status(server: ImageServer) -> None:
    expected = rf"task {TASK}: download of .*/missing failed: HTTP 404"
    with pytest.raises(UpscaleError, match=expected):
        result_for(imageURL=f"{server.base}/missing").read_bytes(timeout=10)


def test_a_body_larger_than_the_cap_is_refused_before_it_is_read(server: ImageServer) -> None:
    with pytest.raises(UpscaleError, match="larger than"):
        download.fetch(f"{server.base}/big", timeout=10)


def test_a_chunked_body_without_content_length_is_read_whole(server: ImageServer) -> None:
    assert download.fetch(f"{server.base}/chunked", timeout=10) == BODY


def test_a_body_shorter_than_its_content_length_fails_the_download(server: ImageServer) -> None:
    with pytest.raises(UpscaleError, match=r"download of .*/short failed"):
        download.fetch(f"{server.base}/short", timeout=10)


def test_a_non_http_url_is_refused() -> None:
    with pytest.raises(UpscaleError, match="refusing to download"):
        result_for(imageURL="file:///etc/passwd").read_bytes()


@pytest.mark.parametrize("fast", [True, False], ids=["pybase64", "binascii"])
@given(st.binary(max_size=300))
def test_base64_and_data_uri_results_decode_to_their_bytes_with_either_codec(
    fast: bool, raw: bytes
) -> None:
    text = base64.b64encode(raw).decode()
    codec = b64._PYBASE64 if fast else None
    if fast:
        assert codec is not None, "the fast extra (pybase64) must be installed for make test"
    original = b64._PYBASE64
    b64._PYBASE64 = codec
    try:
        assert result_for(imageBase64Data=text).read_bytes() == raw
        assert result_for(imageDataURI=f"data:image/png;base64,{text}").read_bytes() == raw
        assert b64.encode(raw) == text.encode()  # the input side's encoder agrees
    finally:
        b64._PYBASE64 = original


@pytest.mark.parametrize("fast", [True, False], ids=["pybase64", "binascii"])
@pytest.mark.parametrize("bad", ["AA=", "A", "AA==AA", "A A=", "AA\n==", "ÄÄ==", "!!!!"])
def test_invalid_base64_fails_the_result_with_either_decoder(fast: bool, bad: str) -> None:
    original = b64._PYBASE64
    if not fast:
        b64._PYBASE64 = None
    try:
        with pytest.raises(UpscaleError, match="not valid base64"):
            result_for(imageBase64Data=bad).read_bytes()
    finally:
        b64._PYBASE64 = original
