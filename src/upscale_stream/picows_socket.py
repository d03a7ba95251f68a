"""An optional WebSocket transport on picows (``pip install 'upscale-stream[fast]'``).

websockets stays the default. picows frames, masks and parses in C and calls back on every
frame instead of waking a coroutine per message; at tens of thousands of small messages a
second that is several microseconds a message less. :class:`PicowsSocket` offers exactly the part
of websockets' ``ClientConnection`` that :mod:`upscale_stream.connection` uses (``recv``,
``send``, ``close``, ``transport``) and ends with websockets' own ``ConnectionClosed``
exceptions, so the connection shell treats both transports alike; :func:`open_picows`
translates picows' handshake errors into this library's errors, as ``Connection._open`` does
for websockets.

picows delivers frames, not messages: continuation frames are joined here, and the joined size
is held to ``max_size`` as websockets would. Pings from the server are answered by picows.
"""

from __future__ import annotations

import asyncio
import ssl as ssl_module
from collections import deque
from typing import Any

from websockets.datastructures import Headers
from websockets.exceptions import (
    ConnectionClosed,
    ConnectionClosedError,
    ConnectionClosedOK,
    InvalidStatus,
)
from websockets.frames import Close, CloseCode
from websockets.http11 import Response

from .errors import (
    AuthenticationError,
    ConnectionLost,
    InvalidURL,
    UpscaleTimeout,
    handshake_refused,
)

__all__ = ["PicowsSocket", "open_picows"]

try:
    import picows
except ImportError as exc:  # pragma: no cover - the fast extra is installed for make test
    raise ImportError(
        "the picows transport needs the fast extra: pip install 'upscale-stream[fast]'"
    ) from exc

_TEXT = picows.WSMsgType.TEXT
_BINARY = picows.WSMsgType.BINARY
_CONTINUATION = picows.WSMsgType.CONTINUATION
_CLOSE = picows.WSMsgType.CLOSE


class PicowsSocket(picows.WSListener):
    """One picows connection, read and written like websockets' ``ClientConnection``."""

    def __init__(self, max_size: int | None, close_timeout: float = 5.0) -> None:
        super().__init__()
        self._max_size = max_size
        self.close_timeout = close_timeout
        self._messages: deque[bytes] = deque()
        self._parts: list[bytes] = []
        self._parts_size = 0
        self._waiter: asyncio.Future[None] | None = None
        self._writable: asyncio.Future[None] | None = None
        self._closed: ConnectionClosed | None = None
        self._rcvd: Close | None = None
        self._sent: Close | None = None
        self._rcvd_first = False
        self._ws: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None  # found once: see _running_loop

    # -- picows callbacks ------------------------------------------------------------------------

    def on_ws_connected(self, transport: Any) -> None:
        self._ws = transport

    def on_ws_frame(self, transport: Any, frame: Any) -> None:
        kind = frame.msg_type
        if kind is _TEXT or kind is _BINARY or kind is _CONTINUATION:
            if frame.fin and not self._parts:
                self._deliver(frame.get_payload_as_bytes())
                return
            self._parts.append(frame.get_payload_as_bytes())
            self._parts_size += frame.payload_size
            if self._max_size is not None and self._parts_size > self._max_size:
                transport.send_close(picows.WSCloseCode.MESSAGE_TOO_BIG, b"message too big")
                transport.disconnect()
                return
            if frame.fin:
                message = b"".join(self._parts)
                self._parts, self._parts_size = [], 0
                self._deliver(message)
        elif kind is _CLOSE:
            code = frame.get_close_code()
            reason = frame.get_close_message() or b""
            self._rcvd = Close(int(code), bytes(reason).decode("utf-8", "replace"))
            self._rcvd_first = self._sent is None
            if self._sent is None:
                self._sent = Close(int(code), "")
                transport.send_close(code)
            transport.disconnect()

    def on_ws_disconnected(self, transport: Any) -> None:
        rcvd, sent = self._rcvd, self._sent
        normal = (CloseCode.NORMAL_CLOSURE, CloseCode.GOING_AWAY)
        # websockets' own rule: rcvd_then_sent is known exactly when both frames exist.
        order = None if rcvd is None or sent is None else self._rcvd_first
        if (rcvd or sent) is not None and all(c is None or c.code in normal for c in (rcvd, sent)):
            self._closed = ConnectionClosedOK(rcvd, sent, order)
        else:
            self._closed = ConnectionClosedError(rcvd, sent, order)
        self._wake()
        writable = self._writable
        if writable is not None and not writable.done():
            writable.set_result(None)

    def pause_writing(self) -> None:
        if self._writable is None:
            self._writable = self._running_loop().create_future()

    def resume_writing(self) -> None:
        writable, self._writable = self._writable, None
        if writable is not None and not writable.done():
            writable.set_result(None)

    def _running_loop(self) -> asyncio.AbstractEventLoop:
        """The loop, looked up once: ``asyncio.get_running_loop()`` makes a ``getpid()``
        system call every time (CPython 3.11), and recv() waits once per frame."""
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        return loop

    def _deliver(self, message: bytes) -> None:
        self._messages.append(message)
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # -- what connection.py uses -----------------------------------------------------------------

    @property
    def transport(self) -> asyncio.Transport:
        """The underlying asyncio transport (``abort()`` drops the connection at once)."""
        underlying: asyncio.Transport = self._ws.underlying_transport
        return underlying

    @property
    def unread(self) -> int:
        """Messages received and not read yet with :meth:`recv`."""
        return len(self._messages)

    async def recv(self, decode: bool | None = None) -> bytes:
        """The next message's payload (``decode`` is accepted and ignored: always bytes).

        Raises:
            ConnectionClosed: the connection is closed and every message was read.
        """
        messages = self._messages
        while not messages:
            if self._closed is not None:
                raise self._closed
            self._waiter = self._running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return messages.popleft()

    async def send(self, message: bytes | str, text: bool = True) -> None:
        """Send one message; waits while the socket's write buffer is over its high mark.

        Raises:
            ConnectionClosed: the connection is closed.
        """
        if self._closed is not None:
            raise self._closed
        payload = message.encode() if isinstance(message, str) else message
        self._ws.send(_TEXT if text else _BINARY, payload)
        if self._writable is not None:
            await self._writable
            if self._closed is not None:
                raise self._closed

    async def close(self) -> None:
        """Send a normal close frame and wait until the connection is down."""
        ws = self._ws
        if ws is None or self._closed is not None:
            return
        if self._sent is None:
            self._sent = Close(CloseCode.NORMAL_CLOSURE, "")
            ws.send_close(picows.WSCloseCode.OK)
        try:  # the server answers with its close frame, then on_ws_frame disconnects
            await asyncio.wait_for(ws.wait_disconnected(), self.close_timeout)
        except TimeoutError:
            ws.disconnect()
            await ws.wait_disconnected()


async def open_picows(
    url: str,
    *,
    open_timeout: float,
    max_size: int | None,
    ssl: ssl_module.SSLContext | None,
    user_agent: str,
) -> PicowsSocket:
    """Connect with picows; the same errors as ``Connection._open`` raises for websockets.

    Raises:
        AuthenticationError: the handshake was refused with HTTP 401 or 403.
        UpscaleTimeout: connecting took longer than ``open_timeout``.
        ConnectionLost: the server could not be reached or refused the handshake.
        InvalidURL: ``url`` is not a WebSocket URL.
    """
    holder: list[PicowsSocket] = []

    def listener() -> PicowsSocket:
        socket = PicowsSocket(max_size)
        holder.append(socket)
        return socket

    try:
        async with asyncio.timeout(open_timeout):
            _, socket = await picows.ws_connect(
                listener,
                url,
                ssl_context=ssl if url.startswith("wss://") else None,
                websocket_handshake_timeout=open_timeout,
                enable_auto_pong=True,
                max_frame_size=max_size or 2**31 - 1,
                extra_headers={"User-Agent": user_agent},
                logger_name="upscale_stream.picows",
            )
    except TimeoutError as exc:
        raise UpscaleTimeout("connect", seconds=open_timeout) from exc
    except picows.WSInvalidURL as exc:
        raise InvalidURL(f"url={url.partition('?')[0]!r} is not a valid WebSocket URL") from exc
    except picows.WSInvalidStatusError as exc:
        status = int(getattr(getattr(exc, "response", None), "status", 0) or 0)
        error = handshake_refused(status)
        if isinstance(error, AuthenticationError):
            raise error from exc
        # The cause is put in websockets' terms, so the reconnect policy (which reads HTTP
        # statuses from websockets' InvalidStatus) decides for both transports alike.
        raise error from InvalidStatus(Response(status, "", Headers(), b""))
    except (OSError, picows.WSError) as exc:
        raise ConnectionLost(f"could not connect to {url}: {exc}") from exc
    assert isinstance(socket, PicowsSocket)
    return socket
