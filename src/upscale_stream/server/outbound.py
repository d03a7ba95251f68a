"""HTTP from the reference server: input downloads, webhook POSTs and ``uploadEndpoint`` PUTs.

Standard library only: each exchange is a blocking ``urllib.request`` call run in
``asyncio.to_thread``. The URLs come from clients, so every request is treated as a possible
server-side request forgery (SSRF):

* only ``http`` and ``https`` URLs, without credentials in them (else ``invalidUrl``);
* the host is resolved and **every** address is checked: private, loopback, link-local,
  multicast, reserved, unspecified and other non-global addresses are refused
  (``forbiddenAddress``), IPv4 and IPv6 alike, including IPv4 addresses embedded in IPv6
  (IPv4-mapped ``::ffff:a.b.c.d``, NAT64 ``64:ff9b::/96``, 6to4, Teredo), unless
  :attr:`OutboundPolicy.allow_private` is set;
* the check runs when the socket connects, and the socket connects to the addresses that were
  checked, so a DNS answer that changes between check and connect (DNS rebinding) cannot slip
  through. :func:`check_destination` runs the same check up front;
* redirects are never followed (a 3xx answer is a failure), environment proxies are ignored and
  no other URL handler (``file:``, ``ftp:``, ``data:``) is installed;
* at most ``max_bytes`` of a download are read (``imageTooLarge``), and every attempt has a
  time limit (:attr:`OutboundPolicy.timeout`).

Logs and error messages show a URL as scheme, host, port and path only: query strings carry
tokens and presigned signatures (see the seed's webhook and ``uploadEndpoint`` examples).
"""

from __future__ import annotations

import asyncio
import functools
import http.client
import ipaddress
import socket
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import SplitResult, urlsplit

import orjson

from upscale_stream.log import get_logger

__all__ = [
    "OutboundError",
    "OutboundPolicy",
    "check_destination",
    "fetch_url",
    "post_webhook",
    "put_upload",
]

_log = get_logger(__name__)

_USER_AGENT: Final = "upscale-stream-reference-server"
_CHUNK: Final = 64 * 1024
_DISCARD_LIMIT: Final = 64 * 1024  # of a webhook or upload answer's body
_RETRY_STATUSES: Final = frozenset({408, 429})  # besides every 5xx
_DEFAULT_PORTS: Final = {"http": 80, "https": 443}
_NAT64: Final = ipaddress.IPv6Network("64:ff9b::/96")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
_AddressInfo = tuple[socket.AddressFamily, socket.SocketKind, int, tuple[Any, ...]]


class OutboundError(Exception):
    """An outbound HTTP exchange was refused or failed.

    Attributes:
        code: ``downloadFailed``, ``uploadFailed``, ``webhookFailed``, ``forbiddenAddress``,
            ``invalidUrl`` or ``imageTooLarge``.
        message: What happened; it names the URL without its query string.
    """

    def __init__(self, code: str, message: str) -> None:
        self.code = code
        self.message = message
        super().__init__(code, message)

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


@dataclass(frozen=True, slots=True)
class OutboundPolicy:
    """Limits and permissions of the server's outbound HTTP.

    Attributes:
        timeout: Seconds allowed for one attempt: connecting and every socket operation time out
            after this, and a download's body must have arrived within it too.
        max_bytes: The largest download accepted, in bytes.
        allow_private: Allow private, loopback and other non-global addresses (local tests and
            development only).
        webhook_retries: Retries after a webhook's first attempt fails with a connection error,
            a timeout, 408, 429 or 5xx; 0 means a single attempt.
        retry_delay: Seconds before the first webhook retry; each next wait doubles.
    """

    timeout: float = 10.0
    max_bytes: int = 32 * 1024 * 1024
    allow_private: bool = False
    webhook_retries: int = 3
    retry_delay: float = 0.5

    def __post_init__(self) -> None:
        if not self.timeout > 0:
            raise ValueError(f"timeout must be positive, not {self.timeout!r}")
        if self.max_bytes < 0:
            raise ValueError(f"max_bytes must not be negative, not {self.max_bytes!r}")
        if self.webhook_retries < 0:
            raise ValueError(f"webhook_retries must not be negative, not {self.webhook_retries!r}")
        if not self.retry_delay >= 0:
            raise ValueError(f"retry_delay must not be negative, not {self.retry_delay!r}")

    def backoff(self, retry: int) -> float:
        """Seconds to wait before webhook retry number ``retry`` (0 for the first retry).

        Returns:
            ``retry_delay * 2 ** retry``.
        """
        return float(self.retry_delay * 2**retry)


# --- destinations ---------------------------------------------------------------------------------


def check_destination(url: str, policy: OutboundPolicy) -> None:
    """Refuse a URL the server must not request; blocking (it resolves the host).

    The same check runs again when a socket connects, so calling this first is optional: it
    lets the server refuse a task before doing any work. From async code, call it in a thread.

    Args:
        url: The URL a client gave (``inputImage``, ``webhookURL`` or ``uploadEndpoint``).
        policy: ``allow_private`` skips the address check (and so the DNS lookup).

    Raises:
        OutboundError: ``invalidUrl`` for a URL that is not plain http(s) or whose host does
            not resolve, ``forbiddenAddress`` when the host has a non-global address.
    """
    parts = _split(url)
    if policy.allow_private:
        return
    host, port = _host_port(parts)
    try:
        infos = _address_infos(host, port)
    except OSError as exc:
        raise OutboundError("invalidUrl", f"cannot resolve the host of {_shown(parts)}") from exc
    _refuse_forbidden(host, infos)


def _split(url: str) -> SplitResult:
    """Parse ``url`` and refuse anything but a plain http(s) URL with a host."""
    if any(ord(char) <= 0x20 or ord(char) == 0x7F for char in url):
        raise OutboundError("invalidUrl", "the URL contains spaces or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise OutboundError("invalidUrl", f"the URL cannot be parsed: {exc}") from None
    if parts.scheme.lower() not in _DEFAULT_PORTS:
        scheme = parts.scheme[:20] or "no scheme"
        raise OutboundError("invalidUrl", f"only http and https URLs are allowed, not {scheme}")
    if not parts.hostname:
        raise OutboundError("invalidUrl", "the URL has no host")
    if parts.username is not None or parts.password is not None:
        raise OutboundError("invalidUrl", "credentials in the URL (user@host) are not supported")
    if port == 0:
        raise OutboundError("invalidUrl", "the URL's port must not be 0")
    return parts


def _host_port(parts: SplitResult) -> tuple[str, int]:
    host = parts.hostname or ""
    return host, parts.port or _DEFAULT_PORTS[parts.scheme.lower()]


def _shown(parts: SplitResult) -> str:
    """The URL as logs and messages may show it: no credentials, query or fragment."""
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme.lower()}://{host}{port}{parts.path}"


def _address_infos(host: str, port: int) -> list[_AddressInfo]:
    """The addresses to connect to; IP literals skip the resolver."""
    try:
        literal = ipaddress.ip_address(host)
    except ValueError:
        pass
    else:
        if literal.version == 4:
            return [(socket.AF_INET, socket.SOCK_STREAM, 0, (host, port))]
        return [(socket.AF_INET6, socket.SOCK_STREAM, 0, (host, port, 0, 0))]
    return [
        (family, kind, proto, sockaddr)
        for family, kind, proto, _, sockaddr in socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM
        )
    ]


def _refuse_forbidden(host: str, infos: list[_AddressInfo]) -> None:
    if not infos:
        raise OutboundError("invalidUrl", f"{host} has no address")
    for info in infos:
        address = ipaddress.ip_address(str(info[3][0]).split("%", 1)[0])
        reason = _forbidden_reason(address)
        if reason is not None:
            shown = host if host == str(address) else f"{host} ({address})"
            raise OutboundError(
                "forbiddenAddress",
                f"{shown} is a {reason} address; the server only connects to public addresses",
            )


def _forbidden_reason(address: IPAddress) -> str | None:
    """Why the server must not connect to ``address``, or ``None`` when it is public."""
    if isinstance(address, ipaddress.IPv6Address):
        # IPv4-mapped and NAT64 addresses are only encodings of their IPv4 address.
        mapped = address.ipv4_mapped
        if mapped is None and address in _NAT64:
            mapped = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if mapped is not None:
            return _forbidden_reason(mapped)
        # 6to4 and Teredo reach their IPv4 address through a relay: both must be public.
        tunnelled = address.sixtofour or (address.teredo[1] if address.teredo else None)
        if tunnelled is not None and (reason := _forbidden_reason(tunnelled)) is not None:
            return f"{reason} (tunnelled)"
    checks = (
        ("unspecified", address.is_unspecified),
        ("loopback", address.is_loopback),
        ("link-local", address.is_link_local),
        ("multicast", address.is_multicast),
        ("reserved", address.is_reserved),
        ("private", address.is_private),
        ("non-global", not address.is_global),
    )
    return next((name for name, applies in checks if applies), None)


# --- the guarded connection -----------------------------------------------------------------------


def _connect(
    address: tuple[str, int],
    timeout: object = None,
    source_address: tuple[str, int] | None = None,
    *,
    allow_private: bool,
) -> socket.socket:
    """``socket.create_connection`` that checks the addresses it connects to."""
    host, port = address
    infos = _address_infos(host, port)
    if not allow_private:
        _refuse_forbidden(host, infos)
    last_error: OSError | None = None
    for family, kind, proto, sockaddr in infos:
        sock = socket.socket(family, kind, proto)
        try:
            if isinstance(timeout, int | float):
                sock.settimeout(timeout)
            if source_address is not None:
                sock.bind(source_address)
            sock.connect(sockaddr)
        except OSError as exc:
            sock.close()
            last_error = exc
        else:
            return sock
    raise last_error or OSError(f"cannot connect to {host}")


class _GuardedHTTPConnection(http.client.HTTPConnection):
    def __init__(self, host: str, *, allow_private: bool, **options: Any) -> None:
        super().__init__(host, **options)
        self._create_connection = functools.partial(_connect, allow_private=allow_private)


class _GuardedHTTPSConnection(http.client.HTTPSConnection):
    def __init__(self, host: str, *, allow_private: bool, **options: Any) -> None:
        super().__init__(host, **options)
        self._create_connection = functools.partial(_connect, allow_private=allow_private)


class _GuardedHTTPHandler(urllib.request.HTTPHandler):
    def __init__(self, *, allow_private: bool) -> None:
        super().__init__()
        self._allow_private = allow_private

    def http_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        factory = functools.partial(_GuardedHTTPConnection, allow_private=self._allow_private)
        return self.do_open(factory, req)


class _GuardedHTTPSHandler(urllib.request.HTTPSHandler):
    def __init__(self, *, allow_private: bool) -> None:
        super().__init__()
        self._allow_private = allow_private
        self._tls = ssl.create_default_context()

    def https_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        factory = functools.partial(_GuardedHTTPSConnection, allow_private=self._allow_private)
        return self.do_open(factory, req, context=self._tls)


@functools.lru_cache(maxsize=2)
def _opener(allow_private: bool) -> urllib.request.OpenerDirector:
    """An opener with our two handlers only.

    No proxy, redirect, cookie, ``file:``, ``ftp:`` or ``data:`` handler, and no error
    processor: every answer, 3xx included, comes back as a response and is never followed.
    """
    opener = urllib.request.OpenerDirector()
    opener.add_handler(_GuardedHTTPHandler(allow_private=allow_private))
    opener.add_handler(_GuardedHTTPSHandler(allow_private=allow_private))
    return opener


def _reason(exc: BaseException) -> str:
    if isinstance(exc, urllib.error.URLError) and not isinstance(exc, urllib.error.HTTPError):
        exc = exc.reason if isinstance(exc.reason, BaseException) else exc
    if isinstance(exc, TimeoutError):
        return "timed out"
    text = str(exc) or type(exc).__name__
    return text[:200]


def _status_problem(status: int) -> str:
    if 300 <= status < 400:
        return f"answered HTTP {status} (redirects are not followed)"
    return f"answered HTTP {status}"


# --- downloads ------------------------------------------------------------------------------------


async def fetch_url(url: str, policy: OutboundPolicy) -> bytes:
    """Download an input image with a GET.

    Args:
        url: An ``inputImage`` URL.
        policy: Timeout, size limit and address permissions.

    Returns:
        The response body (at most ``policy.max_bytes`` bytes).

    Raises:
        OutboundError: ``invalidUrl``, ``forbiddenAddress``, ``imageTooLarge``, or
            ``downloadFailed`` (connection error, timeout, or an answer other than 2xx).
    """
    parts = _split(url)
    return await asyncio.to_thread(_fetch, url, _shown(parts), policy)


def _fetch(url: str, shown: str, policy: OutboundPolicy) -> bytes:
    request = urllib.request.Request(
        url, method="GET", headers={"User-Agent": _USER_AGENT, "Accept": "image/*"}
    )
    deadline = time.monotonic() + policy.timeout
    try:
        with _opener(policy.allow_private).open(request, timeout=policy.timeout) as response:
            status: int = response.status
            if not 200 <= status < 300:
                raise OutboundError("downloadFailed", f"{shown} {_status_problem(status)}")
            body = _read_limited(response, policy.max_bytes, deadline, shown)
    except OutboundError:
        raise
    except (OSError, http.client.HTTPException, ValueError) as exc:
        raise OutboundError(
            "downloadFailed", f"download of {shown} failed: {_reason(exc)}"
        ) from exc
    _log.debug("input downloaded", url=shown, size=len(body))
    return body


def _read_limited(
    response: http.client.HTTPResponse, limit: int, deadline: float, shown: str
) -> bytes:
    declared = response.headers.get("Content-Length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _too_large(shown, f"declares {declared} bytes", limit)
    chunks: list[bytes] = []
    received = 0
    # read1: one socket read per loop, so a server that drips bytes meets the deadline.
    while chunk := response.read1(min(_CHUNK, limit + 1 - received)):
        chunks.append(chunk)
        received += len(chunk)
        if received > limit:
            raise _too_large(shown, "sent more", limit)
        if time.monotonic() > deadline:
            raise TimeoutError("the body did not arrive in time")
    return b"".join(chunks)


def _too_large(shown: str, what: str, limit: int) -> OutboundError:
    return OutboundError("imageTooLarge", f"{shown} {what}; the limit is {limit} bytes")


# --- webhooks and uploads -------------------------------------------------------------------------


async def post_webhook(url: str, payload: Mapping[str, Any], policy: OutboundPolicy) -> int:
    """POST ``payload`` as JSON to a ``webhookURL``, retrying transient failures.

    Connection errors, timeouts, 408, 429 and 5xx answers are retried up to
    ``policy.webhook_retries`` times, waiting :meth:`OutboundPolicy.backoff` seconds before
    each retry. Other answers are final.

    Args:
        url: The task's ``webhookURL``.
        payload: The JSON object to send (the task's response item).
        policy: Timeout, retries and address permissions.

    Returns:
        The number of attempts used (1 when the first one succeeded).

    Raises:
        OutboundError: ``invalidUrl`` or ``forbiddenAddress`` (never retried), or
            ``webhookFailed`` after a final answer or the last attempt.
    """
    parts = _split(url)
    shown = _shown(parts)
    body = orjson.dumps(payload if isinstance(payload, dict) else dict(payload))
    attempts = policy.webhook_retries + 1
    problem = "no attempt"
    for attempt in range(1, attempts + 1):
        try:
            status = await asyncio.to_thread(_send, "POST", url, body, "application/json", policy)
        except (OSError, http.client.HTTPException) as exc:
            problem = f"failed: {_reason(exc)}"
        else:
            if 200 <= status < 300:
                _log.debug("webhook delivered", url=shown, status=status, attempts=attempt)
                return attempt
            problem = _status_problem(status)
            if status < 500 and status not in _RETRY_STATUSES:
                raise OutboundError("webhookFailed", f"webhook {shown} {problem}")
        if attempt < attempts:
            delay = policy.backoff(attempt - 1)
            _log.warning(
                "webhook attempt failed",
                url=shown,
                attempt=attempt,
                problem=problem,
                retry_in=delay,
            )
            await asyncio.sleep(delay)
    raise OutboundError("webhookFailed", f"webhook {shown} {problem} ({attempts} attempt(s))")


async def put_upload(url: str, body: bytes, content_type: str, policy: OutboundPolicy) -> None:
    """PUT the raw output bytes to an ``uploadEndpoint`` (such as a presigned storage URL).

    Args:
        url: The task's ``uploadEndpoint``.
        body: The encoded image, sent as is.
        content_type: Its MIME type, sent as ``Content-Type``.
        policy: Timeout and address permissions.

    Raises:
        OutboundError: ``invalidUrl``, ``forbiddenAddress``, or ``uploadFailed`` (connection
            error, timeout, or an answer other than 2xx).
    """
    parts = _split(url)
    shown = _shown(parts)
    try:
        status = await asyncio.to_thread(_send, "PUT", url, body, content_type, policy)
    except (OSError, http.client.HTTPException) as exc:
        raise OutboundError("uploadFailed", f"upload to {shown} failed: {_reason(exc)}") from exc
    if not 200 <= status < 300:
        raise OutboundError("uploadFailed", f"upload endpoint {shown} {_status_problem(status)}")
    _log.debug("output uploaded", url=shown, status=status, size=len(body))


def _send(method: str, url: str, body: bytes, content_type: str, policy: OutboundPolicy) -> int:
    """One request with a body; returns the status after reading a little of the answer."""
    request = urllib.request.Request(
        url,
        data=body,
        method=method,
        headers={"User-Agent": _USER_AGENT, "Content-Type": content_type},
    )
    with _opener(policy.allow_private).open(request, timeout=policy.timeout) as response:
        response.read(_DISCARD_LIMIT)
        status: int = response.status
    return status
