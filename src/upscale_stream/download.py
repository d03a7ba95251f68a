"""Getting an output image's bytes: decode base64 / data URI, or download the URL; atomic saves.

Both paths move megabytes per result, so each byte is touched as few times as possible:

* base64 is decoded straight from the ``str`` the JSON parser produced, in one pass
  (:func:`upscale_stream.b64.decode`: ``pybase64``'s SIMD decoder with the ``fast`` extra,
  else ``binascii.a2b_base64(strict_mode=True)``; no ASCII re-encoding copy and no separate
  validation pass, which ``base64.b64decode(validate=True)`` makes).
* URLs are fetched over kept-alive HTTP/1.1 connections, one small pool per thread (each
  connection serves one request at a time, and ``asave`` runs in worker threads), so a stream
  of results from one host costs one TCP (and TLS) handshake per thread, not one per image.
  A body of known length is read in one piece (``read()``, one buffer); only a body without
  ``Content-Length`` is read through a capped ``read(n)``, which allocates the cap and copies.
  Redirects are followed (at most 5); a proxy configured in the environment (read once per
  process) sends the request through urllib instead.
"""

from __future__ import annotations

import functools
import http.client
import os
import ssl
import tempfile
import threading
import urllib.request
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urljoin, urlsplit

from . import b64
from .errors import DownloadError, InvalidResult

if TYPE_CHECKING:
    from .results import UpscaleResult

__all__ = ["b64decode", "fetch", "result_bytes", "save_atomic"]

MAX_DOWNLOAD_BYTES = 512 * 1024 * 1024
MAX_REDIRECTS = 5
CONNECTIONS_PER_THREAD = 8
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
# A kept-alive connection the server has closed fails on reuse with one of these; the GET is
# idempotent, so it is sent once more on a fresh connection.
_STALE = (http.client.RemoteDisconnected, http.client.BadStatusLine, ConnectionError)


b64decode = b64.decode
"""Decode strict base64 with the fastest codec present (:func:`upscale_stream.b64.decode`)."""


def result_bytes(result: UpscaleResult, *, timeout: float = 60.0) -> bytes:
    """Return the image bytes a result carries or points to (blocking).

    Raises:
        InvalidResult: the result has no image.
        DownloadError: its data is not valid base64, or the download failed.
    """
    task = result.task_uuid
    try:
        if result.image_base64_data is not None:
            return b64decode(result.image_base64_data)
        if result.image_data_uri is not None:
            uri = result.image_data_uri
            start = uri.find(";base64,")
            if start < 0:
                raise DownloadError(
                    f"task {task}: imageDataURI is not base64-encoded", task_uuid=task
                )
            return b64decode(uri[start + 8 :])
    except ValueError as exc:  # binascii.Error, or non-ASCII text
        raise DownloadError(f"task {task}: image data is not valid base64", task_uuid=task) from exc
    url = result.url
    if url is None:
        raise InvalidResult(f"task {task}: the result carries no image", task_uuid=task)
    if not url.lower().startswith(("http://", "https://")):
        raise DownloadError(
            f"task {task}: refusing to download {url!r} (not http or https)", task_uuid=task
        )
    try:
        return fetch(url, timeout=timeout)
    except DownloadError as exc:
        raise DownloadError(f"task {task}: {exc}", task_uuid=task) from exc


class _Pool(threading.local):
    """This thread's kept-alive connections, by (scheme, host:port), least recently used first."""

    def __init__(self) -> None:
        self.connections: OrderedDict[tuple[str, str], http.client.HTTPConnection] = OrderedDict()


_pool = _Pool()
_tls: ssl.SSLContext | None = None


def _connection(scheme: str, netloc: str, timeout: float) -> http.client.HTTPConnection:
    global _tls
    key = (scheme, netloc)
    connection = _pool.connections.pop(key, None)
    if connection is None:
        if scheme == "https":
            if _tls is None:
                _tls = ssl.create_default_context()
            connection = http.client.HTTPSConnection(netloc, timeout=timeout, context=_tls)
        else:
            connection = http.client.HTTPConnection(netloc, timeout=timeout)
    elif connection.timeout != timeout:
        if connection.sock is not None:
            connection.sock.settimeout(timeout)
        connection.timeout = timeout
    return connection


def _keep(scheme: str, netloc: str, connection: http.client.HTTPConnection) -> None:
    connections = _pool.connections
    connections[(scheme, netloc)] = connection
    while len(connections) > CONNECTIONS_PER_THREAD:
        _, oldest = connections.popitem(last=False)
        oldest.close()


@functools.cache
def _proxies() -> dict[str, str]:
    """The proxy settings of the environment, read once (scanning os.environ took ~1 ms)."""
    return urllib.request.getproxies()


def fetch(url: str, *, timeout: float = 60.0) -> bytes:
    """GET ``url`` (http or https) over this thread's kept-alive connections; the body.

    Raises:
        DownloadError: the request failed, the final status is not 200, there were more than
            5 redirects, or the body is larger than 512 MiB.
    """
    for _ in range(MAX_REDIRECTS + 1):
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in ("http", "https") or not parts.netloc:
            raise DownloadError(f"refusing to download {url!r}")
        if _proxies().get(scheme) and not urllib.request.proxy_bypass(parts.hostname or ""):
            return _fetch_via_urllib(url, timeout)
        target = parts.path or "/"
        if parts.query:
            target += "?" + parts.query
        status, location, body = _get(scheme, parts.netloc, target, url, timeout)
        if status in _REDIRECTS and location:
            url = urljoin(url, location)
            continue
        if status != 200:
            raise DownloadError(f"download of {url} failed: HTTP {status}")
        return body
    raise DownloadError(f"download of {url} failed: more than {MAX_REDIRECTS} redirects")


def _get(
    scheme: str, netloc: str, target: str, url: str, timeout: float
) -> tuple[int, str | None, bytes]:
    """One GET, retried once on a fresh connection if a reused one turns out to be closed."""
    for attempt in (1, 2):
        connection = _connection(scheme, netloc, timeout)
        reused = connection.sock is not None
        try:
            connection.request("GET", target, headers={"Accept": "image/*"})
            response = connection.getresponse()
            length = response.length  # Content-Length, None when absent or chunked
            if length is not None and length > MAX_DOWNLOAD_BYTES:
                connection.close()
                raise DownloadError(f"{url} is larger than {MAX_DOWNLOAD_BYTES} B")
            # With a known length, read() takes the body in one buffer; read(n) would allocate
            # n bytes and copy the body out of them.
            body = response.read() if length is not None else response.read(MAX_DOWNLOAD_BYTES + 1)
        except _STALE as exc:
            connection.close()
            if reused and attempt == 1:
                continue
            raise DownloadError(f"download of {url} failed: {exc}") from exc
        except (OSError, http.client.HTTPException) as exc:
            connection.close()
            raise DownloadError(f"download of {url} failed: {exc}") from exc
        if len(body) > MAX_DOWNLOAD_BYTES:
            connection.close()
            raise DownloadError(f"{url} is larger than {MAX_DOWNLOAD_BYTES} B")
        if response.will_close:
            connection.close()
        else:
            _keep(scheme, netloc, connection)
        return response.status, response.getheader("Location"), body
    raise AssertionError("unreachable")  # pragma: no cover


def _fetch_via_urllib(url: str, timeout: float) -> bytes:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            body: bytes = response.read(MAX_DOWNLOAD_BYTES + 1)
    except OSError as exc:
        raise DownloadError(f"download of {url} failed: {exc}") from exc
    if len(body) > MAX_DOWNLOAD_BYTES:
        raise DownloadError(f"{url} is larger than {MAX_DOWNLOAD_BYTES} B")
    return body


def save_atomic(path: str | os.PathLike[str], content: bytes) -> Path:
    """Write ``content`` to ``path`` through a temporary file in the same folder and a rename.

    A reader never sees a half-written file, and an interrupted write leaves no partial file.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(content)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target
