"""One client socket of the reference server: its reader, its sender and its deadlines.

The **reader** receives a message, decodes it, hands the items to the task handlers and goes
straight back to ``recv``: it never waits for task work, so a ping is answered while thousands of
tasks run (protocol.md section 9, rule 2). Before authentication it only accepts the
``authentication`` task and gives up after ``auth_timeout``; a rejected key gets its ``errors``
item and leaves the socket open but unauthenticated (until that timeout, or the third rejected
key). After authentication, the socket is closed when the client has been silent for
``idle_timeout`` (section 3).

A message larger than ``config.max_message_bytes`` (but within the transport's ``max_size``) is
not handled: every item it holds gets a ``frameTooLarge`` error item (one item without
``taskUUID`` when it is not a JSON array) and the socket goes on. Above ``max_size`` websockets
itself closes the connection with 1009, from the frame header, before the server sees anything.

The **sender** is the only writer of answers. It wakes when something was queued, then writes
pongs first (each alone in its frame), then the socket's own replies, then the outbox of the
session the socket carries, packed many items per frame (capped in items and bytes) and never
mixing ``data`` with ``errors`` (section 4). Everything queued during one event-loop turn leaves
together. Answers of a frame whose ``send`` fails go back to the session's outbox (see
:mod:`.sessions`). The fault knobs that shape output (grouping, shuffling, duplicates, stray
errors, malformed frames) act here.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
import re
from collections import deque
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import orjson
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from ..log import get_logger
from ..wire import (
    AUTH,
    GET_RESPONSE,
    PONG_FRAME,
    auth_ok_item,
    data_frame,
    encoded_frame,
    errors_frame,
    frame_slices,
)
from .faults import STRAY_ERROR, crossings
from .handlers import KeyRejected, error_item
from .refusals import SCOPED_REFUSALS, FrameRefusals, bounded_uuid, frame_notice, scoped_error
from .sessions import Kind, Outgoing, Session, compact_json

if TYPE_CHECKING:
    from .app import ReferenceServer

__all__ = ["ClientSocket", "pack_frames"]

log = get_logger(__name__)

AUTH_TIMEOUT_CODE = 1008
IDLE_CLOSE_CODE = 1000
MAX_AUTH_ATTEMPTS = 3
"""Rejected keys a socket may offer before it is closed (with 1008)."""
_TASK_UUID = re.compile(
    r'"taskUUID"\s*:\s*"([0-9A-Fa-f]{8}-(?:[0-9A-Fa-f]{4}-){3}[0-9A-Fa-f]{12})"'
)
_TASK_TYPE = re.compile(r'"taskType"\s*:\s*"([A-Za-z]{1,40})"')
_SCAN_CHARS = 64 * 1024
PRE_AUTH_LIMIT = 1024 * 1024
"""The largest message an unauthenticated socket may send; bigger ones are not parsed."""


def pack_frames(
    items: Sequence[Outgoing], *, max_items: int, max_bytes: int | None
) -> list[list[Outgoing]]:
    """Split answers into frames: runs of one kind, each packed by :func:`wire.frame_slices`.

    The order is kept, ``data`` and ``errors`` never share a frame (protocol.md section 4),
    and a single item larger than ``max_bytes`` gets a frame of its own.
    """
    frames: list[list[Outgoing]] = []
    start = 0
    for index in range(1, len(items) + 1):
        if index < len(items) and items[index].kind == items[start].kind:
            continue
        run = items[start:index]
        sizes = [len(item.body) for item in run]
        overhead = len(run[0].kind) + 6  # {"data":[...]}
        for part in frame_slices(
            sizes, max_items=max_items, max_bytes=max_bytes, overhead=overhead
        ):
            frames.append(list(run[part]))
        start = index
    return frames


def _encode(frame: Sequence[Outgoing]) -> bytes:
    return encoded_frame(frame[0].kind, [item.body for item in frame])


def _encoded(kind: Kind, item: Mapping[str, Any]) -> Outgoing:
    return Outgoing(kind, compact_json(item), 0.0)


def _utf8_size(text: str) -> int:
    """The size of ``text`` in UTF-8, without encoding it when the answer is plain."""
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))


def _json_type(value: object) -> str:
    if isinstance(value, dict):
        return "object"
    if isinstance(value, str):
        return "string"
    if isinstance(value, bool):
        return "boolean"
    if value is None:
        return "null"
    return "number"


class ClientSocket:
    """One accepted WebSocket: implements the ``Peer`` the task handlers reply to.

    Args:
        server: The server that accepted it.
        ws: The websockets connection.
    """

    def __init__(self, server: ReferenceServer, ws: ServerConnection) -> None:
        self.server = server
        self.ws = ws
        self.session_id: str | None = None
        """The session this socket authenticated into (kept even if another socket takes it)."""
        self.session: Session | None = None
        """The session whose outbox this socket drains; ``None`` when not (or no longer) its."""
        self.tenant: str | None = None
        """The tenant of the API key this socket authenticated with (see :mod:`.sessions`)."""
        self.in_flight = 0
        self.received_tasks = 0
        self.dropped = False
        self._auth_attempts = 0
        self._refusals: FrameRefusals | None = None
        self._pongs = 0
        self._replies: deque[Outgoing] = deque()
        self._wake = asyncio.Event()
        self._closing = False
        self._answers_sent = 0

    # -- Peer --------------------------------------------------------------------------------

    def reply(self, kind: Kind, item: Mapping[str, Any]) -> None:
        """Queue an answer for this socket only (it is not held if the socket drops).

        An ``errors`` item that names no task (no usable ``taskUUID``) is not sent as one: the
        ``runware-sdk`` and TypeScript clients fail *every* pending task on such an item
        (protocol.md section 4). After authentication it is folded into the frame's one
        notice instead (:class:`FrameRefusals`); authentication errors keep their shape.
        """
        if kind == "errors":
            self.server.status.error_sent(item)
        if (
            kind == "errors"
            and self._refusals is not None
            and item.get("taskType") != AUTH
            and bounded_uuid(item.get("taskUUID")) is None
        ):
            self._refusals.add(item)
            return
        self._replies.append(_encoded(kind, item))
        self._wake.set()

    def pong(self) -> None:
        """Queue a pong; it goes out before anything else, alone in its frame.

        Pings are indistinguishable, so one frame's pings get one pong together: a frame of
        a million pings costs one frame of output, not a million.
        """
        if self._refusals is not None:
            if self._refusals.ponged:
                return
            self._refusals.ponged = True
        self._pongs += 1
        self._wake.set()

    def refuse_unrouted(self, count: int, error: Mapping[str, Any]) -> None:
        """Count ``count`` refused items of the current frame in its notice, unanswered."""
        if self._refusals is None or count <= 0:
            return
        self._refusals.add(error)
        self._refusals.count += count - 1

    def wake(self) -> None:
        """The session's outbox has answers: let the sender run."""
        self._wake.set()

    # -- lifecycle ---------------------------------------------------------------------------

    async def run(self) -> None:
        """Serve the socket until it closes, then detach its session."""
        sender = asyncio.create_task(self._send_loop())
        try:
            await self._read_loop()
        finally:
            self._closing = True
            self.server.detach(self)
            self._wake.set()
            try:
                async with asyncio.timeout(self.server.config.close_timeout + 1):
                    await sender
            except TimeoutError:
                sender.cancel()
                await asyncio.gather(sender, return_exceptions=True)

    async def drop(self, code: int | None) -> None:
        """End the socket now: abort the TCP connection, or close cleanly with ``code``.

        The session is detached first, so nothing more is sent on this socket and every answer
        still queued stays held for a resume.
        """
        if self.dropped:
            return
        if code is None:
            self.abort()
        else:
            self.dropped = True
            self.server.detach(self)
            with contextlib.suppress(Exception):
                await self.ws.close(code, "dropped by the reference server (fault injection)")

    def abort(self) -> None:
        """End the socket at once, without a close frame; no further frame of it is handled."""
        if self.dropped:
            return
        self.dropped = True
        self.server.detach(self)
        self.ws.transport.abort()

    # -- reader ------------------------------------------------------------------------------

    async def _read_loop(self) -> None:
        loop = asyncio.get_running_loop()
        config = self.server.config
        opened = last = loop.time()
        while not self.dropped:
            authenticated = self.session_id is not None
            # Before authentication the clock runs from the handshake; after, from the last
            # message (protocol.md section 3: idle sockets are closed).
            since, limit = (
                (last, config.idle_timeout) if authenticated else (opened, config.auth_timeout)
            )
            deadline = since + limit
            try:
                async with asyncio.timeout_at(deadline):
                    # Text frames come as str, binary frames as bytes (which are refused).
                    message = await self.ws.recv()
            except TimeoutError:
                reason = "idle timeout" if authenticated else "authentication timeout"
                log.info("connection.timeout", reason=reason, session=self.session_id)
                code = IDLE_CLOSE_CODE if authenticated else AUTH_TIMEOUT_CODE
                self.server.detach(self)
                await self.ws.close(code, reason)
                return
            except ConnectionClosed:
                return
            if self.dropped:
                return
            last = loop.time()
            if authenticated and self.server.faults.take_arrival_drop():
                log.info("fault.drop_before_frame", session=self.session_id)
                await self.drop(self.server.faults.close_code)
                return
            await self._on_message(message)

    async def _on_message(self, message: bytes | str) -> None:
        """Handle one message; the work it causes is bounded before any item is looked at.

        A binary frame, a frame too large, invalid JSON, a frame that is not an array, an
        empty array, and (before authentication) any frame that does not start with the
        ``authentication`` task each get exactly one answer, whatever their content.
        """
        if isinstance(message, bytes):
            self._refuse_frame(
                "unsupportedFrame",
                "binary WebSocket frames are not read: send the JSON array as a text frame",
            )
            return
        config = self.server.config
        size = _utf8_size(message)
        authenticated = self.session_id is not None
        if size > config.message_limit or (not authenticated and size > PRE_AUTH_LIMIT):
            self._refuse_oversized(message, size, authenticated)
            return
        try:
            items = orjson.loads(message)
        except orjson.JSONDecodeError as exc:
            self._refuse_frame(
                "invalidJSON",
                f"the frame is not valid JSON ({exc.msg} at character {exc.pos}); "
                "send a JSON array of task objects",
            )
            return
        if not isinstance(items, list):
            self._refuse_frame(
                "invalidRequest",
                f"a frame must be a JSON array of task objects, not a JSON {_json_type(items)}",
            )
            return
        if not items:
            self._refuse_frame("emptyRequest", "the frame is an empty JSON array: it holds no task")
            return
        server = self.server
        if not authenticated:
            first = items[0]
            if not (isinstance(first, dict) and first.get("taskType") == AUTH):
                self._refuse_unauthenticated(
                    first=first if isinstance(first, dict) else None, count=len(items)
                )
                return
            if not await self._authenticate(first) or self.dropped:
                return
            items = items[1:]
        self._refusals = FrameRefusals()
        try:
            counted = server.handlers.dispatch(self, items, config.clock())
        finally:
            refusals, self._refusals = self._refusals, None
        if refusals.count:
            self._replies.append(_encoded("data", refusals.notice()))
            self._wake.set()
        self.received_tasks += counted
        server.notify_progress()
        faults = server.faults
        # The replies to this frame are only queued: a drop now loses them with the socket.
        if any(_is_poll(item) for item in items) and faults.take_poll_drop():
            log.info("fault.drop_on_poll", session=self.session_id)
            await self.drop(faults.close_code)
        elif faults.take_frame_drop(self.received_tasks, counted):
            log.info("fault.drop", session=self.session_id, after_tasks=self.received_tasks)
            await self.drop(faults.close_code)

    def _refuse_frame(self, code: str, message: str) -> None:
        """Answer a frame that names no task with one notice (see :func:`frame_notice`)."""
        if self.session_id is None:
            # Before authentication no task can be pending on this socket, and every SDK
            # treats an ``errors`` item of taskType authentication as "authenticate first".
            self.reply("errors", error_item(code, message, task_type=AUTH))
            return
        self._replies.append(_encoded("data", frame_notice(code, message)))
        self._wake.set()

    def _refuse_oversized(self, message: str, size: int, authenticated: bool) -> None:
        """Answer a message over the size limit without running any of it.

        Before authentication it is not even parsed (one error). After, one notice for the
        frame, plus a scoped ``frameTooLarge`` error for each of its first
        :data:`SCOPED_REFUSALS` tasks, so their senders do not wait for them.
        """
        limit = self.server.config.message_limit if authenticated else PRE_AUTH_LIMIT
        text = (
            f"the message is {size} bytes, over this server's limit of {limit} bytes "
            "(max_message_bytes); nothing in it was run: send its tasks in smaller messages"
        )
        log.warning("connection.message_too_large", session=self.session_id, size=size, limit=limit)
        if not authenticated:
            self._refuse_unauthenticated(f"{text}; and authenticate first")
            return
        # Not parsed: a message over the limit could hold millions of tiny objects. The tasks
        # it names are found by a bounded scan for their taskUUIDs instead.
        task_type = _TASK_TYPE.search(message, 0, _SCAN_CHARS)
        kind = {"taskType": task_type[1] if task_type else "upscale"}
        for match in itertools.islice(_TASK_UUID.finditer(message), SCOPED_REFUSALS):
            item = {**kind, "taskUUID": match[1]}
            self.reply("errors", scoped_error(item, "frameTooLarge", text))
        self._refuse_frame("frameTooLarge", text)

    def _refuse_unauthenticated(
        self, why: str | None = None, *, first: Mapping[str, Any] | None = None, count: int = 0
    ) -> None:
        """One ``authenticationRequired`` error for the whole frame, whatever it holds.

        It names the frame's first task when there is one (a raw client learns which frame it
        was); no item is looked at beyond the first.
        """
        message = why or (
            'authenticate first: send [{"taskType":"authentication","apiKey":"..."}]; '
            f"nothing in this frame ({count} item{'' if count == 1 else 's'}) was run"
        )
        named = first or {}
        # The first item's own taskType, never "authentication": runware 0.5.24 pings right
        # after a rejected key, and an error of taskType authentication for that ping would
        # replace the key's rejection as the error it reports (official-sdks.md W6).
        error = error_item(
            "authenticationRequired",
            message,
            task_type=named.get("taskType") if first is not None else AUTH,
            task_uuid=named.get("taskUUID"),
        )
        self.reply("errors", error)

    async def _authenticate(self, item: Mapping[str, Any]) -> bool:
        """Answer the authentication item; returns whether the socket may go on."""
        server = self.server
        if server.faults.take_auth_drop():
            log.info("fault.drop_during_auth")
            await self.drop(server.faults.close_code)
            return False
        now = server.config.clock()
        address = _peer(self.ws)
        guard = server.auth_guard
        if (wait := guard.blocked(address, now)) > 0:
            # Throttled: the key is not even checked (see :mod:`.auth_guard`).
            verdict = guard.failed(address, now)
            if verdict.log:
                log.warning("auth.throttled", peer=address, unlogged=verdict.unlogged)
            message = (
                "too many failed authentications from this address; "
                f"try again in {math.ceil(wait)} s"
            )
            error = error_item("rateLimitExceeded", message, parameter="apiKey", task_type=AUTH)
            with contextlib.suppress(ConnectionClosed):
                await self.ws.send(errors_frame([error]), text=True)
                await self.ws.close(AUTH_TIMEOUT_CODE, "too many failed authentications")
            return False
        outcome = server.handlers.authenticate(item, now)
        if isinstance(outcome, KeyRejected):
            self._auth_attempts += 1
            verdict = guard.failed(address, now)
            # Never log the key, not even a prefix: only why it was refused and by whom. At
            # most one line per address per log interval, with the count of the others.
            if verdict.log:
                log.warning(
                    "auth.rejected",
                    reason=outcome.reason,
                    peer=address,
                    attempt=self._auth_attempts,
                    unlogged=verdict.unlogged,
                )
            # The socket stays open, unauthenticated, until auth_timeout (counted from the
            # handshake) or MAX_AUTH_ATTEMPTS. Closing at once breaks ``runware`` 0.5.24: it
            # takes the close for a drop and reconnects in the background while its caller
            # reconnects too, and depending on which wins the call hangs for minutes instead
            # of raising the key error (official-sdks.md W1, W6).
            with contextlib.suppress(ConnectionClosed):
                await self.ws.send(errors_frame([outcome.error]), text=True)
                if self._auth_attempts >= MAX_AUTH_ATTEMPTS:
                    await self.ws.close(AUTH_TIMEOUT_CODE, "too many rejected API keys")
            return False
        session = outcome.session
        try:
            await self.ws.send(data_frame([auth_ok_item(session.session_id)]), text=True)
        except ConnectionClosed:
            server.release(session)
            return False
        self.session_id = session.session_id
        self.tenant = outcome.tenant
        if outcome.resumed:
            server.counts.replayed += len(session.outbox)
        server.attach(self, session)
        log.info(
            "auth.ok",
            session=session.session_id,
            resumed=outcome.resumed,
            held=len(session.outbox),
        )
        server.notify_progress()
        code = server.faults.take_close_after_auth()  # fault injection: accept, then hang up
        if code is not None:
            await self.drop(code)
            return False
        return True

    # -- sender ------------------------------------------------------------------------------

    async def _send_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            if self._closing:
                return
            try:
                await self._flush()
            except ConnectionClosed:
                return

    async def _send_replies(self) -> None:
        """Pongs, then this socket's own replies (getResponse answers, request errors)."""
        while self._pongs:
            self._pongs -= 1
            await self.ws.send(PONG_FRAME, text=True)
        if self._replies:
            replies = list(self._replies)
            self._replies.clear()
            config = self.server.config
            frames = pack_frames(
                replies, max_items=config.max_frame_items, max_bytes=config.max_frame_bytes
            )
            for frame in frames:
                await self.ws.send(_encode(frame), text=True)

    async def _flush(self) -> None:
        await self._send_replies()
        session = self.session
        if session is None or not session.outbox:
            return
        faults = self.server.faults
        group = faults.group_size()
        if group:
            complete = await self._wait_for_group(session, group)
            if self.session is not session:
                return
            count = len(session.outbox)
            if complete:
                count -= count % group
            answers = [session.outbox.popleft() for _ in range(count)]
            if session.outbox:
                self._wake.set()  # a partial group is left: wait for it on the next turn
            faults.arrange(answers)
            frames = pack_frames(answers, max_items=group, max_bytes=None)
        else:
            answers = session.take()
            faults.arrange(answers)
            config = self.server.config
            frames = pack_frames(
                answers, max_items=config.max_frame_items, max_bytes=config.max_frame_bytes
            )
        await self._send_answers(session, frames)

    async def _wait_for_group(self, session: Session, group: int) -> bool:
        """Wait until ``group`` answers are queued or the window passes; True if they are."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.server.faults.group_window
        while len(session.outbox) < group:
            if self._closing or self.session is not session or loop.time() >= deadline:
                return False
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout_at(deadline):
                    await self._wake.wait()
            await self._send_replies()
        return True

    async def _send_answers(self, session: Session, frames: list[list[Outgoing]]) -> None:
        faults = self.server.faults
        for index, frame in enumerate(frames):
            encoded = _encode(frame)
            try:
                await self.ws.send(encoded, text=True)
            except ConnectionClosed:
                session.give_back(item for rest in frames[index:] for item in rest)
                raise
            if faults.duplicate_results:
                faults.fired["duplicate_results"] += 1
                await self.ws.send(encoded, text=True)
            before = self._answers_sent
            self._answers_sent += len(frame)
            for _ in range(crossings(before, self._answers_sent, faults.stray_error_every)):
                faults.fired["stray_error_every"] += 1
                await self.ws.send(errors_frame([STRAY_ERROR]), text=True)
            for _ in range(crossings(before, self._answers_sent, faults.malformed_every)):
                await self.ws.send(faults.malformed_frame(), text=True)


def _is_poll(item: object) -> bool:
    return isinstance(item, dict) and item.get("taskType") == GET_RESPONSE


def _peer(ws: ServerConnection) -> str:
    address = ws.remote_address
    return str(address[0]) if isinstance(address, tuple) and address else "?"
