"""Frames and items of the Runware WebSocket protocol: builders and readers, no state, no I/O.

Client to server, a frame is always a JSON **array** of task objects (protocol.md section 4).
Server to client, a frame is a JSON **object** with either ``data`` or ``errors`` (never both:
the official SDKs drop the ``data`` of a mixed frame), or the legacy singular ``error``.

The client core (:mod:`upscale_stream.protocol`) and the reference server both build and read
frames here, so the two ends share one definition of the wire format.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import orjson

__all__ = [
    "AUTH",
    "GET_RESPONSE",
    "GET_TASK_DETAILS",
    "PING",
    "PING_FRAME",
    "PONG_FRAME",
    "UPSCALE",
    "auth_item",
    "auth_ok_item",
    "data_frame",
    "encoded_frame",
    "errors_frame",
    "frame_slices",
    "get_response_item",
    "get_task_details_item",
    "join_frame",
]

AUTH = "authentication"
PING = "ping"
UPSCALE = "upscale"
GET_RESPONSE = "getResponse"
GET_TASK_DETAILS = "getTaskDetails"
IMAGE_UPLOAD = "imageUpload"

# Legacy spellings the server still accepts (protocol.md section 10, item 1).
UPSCALE_TASK_TYPES = frozenset({UPSCALE, "imageUpscale"})

PING_FRAME = b'[{"taskType":"ping","ping":true}]'
"""The application heartbeat, exactly as the official SDKs send it (protocol.md section 3)."""

PONG_FRAME = b'{"data":[{"taskType":"ping","pong":true}]}'
"""The pong, alone in its frame: one SDK only looks at ``data[0].pong``."""


def auth_item(api_key: str, session_id: str | None = None) -> dict[str, Any]:
    """The authentication task; with ``session_id`` it asks the server to resume that session."""
    item: dict[str, Any] = {"taskType": AUTH, "apiKey": api_key}
    if session_id is not None:
        item["connectionSessionUUID"] = session_id
    return item


def auth_ok_item(session_id: str) -> dict[str, Any]:
    """The server's success answer to authentication (no ``taskUUID``, protocol.md section 9)."""
    return {"taskType": AUTH, "connectionSessionUUID": session_id}


def get_response_item(task_uuid: str) -> dict[str, Any]:
    """A ``getResponse`` poll for the task ``task_uuid`` (protocol.md section 6)."""
    return {"taskType": GET_RESPONSE, "taskUUID": task_uuid}


def get_task_details_item(task_uuid: str) -> dict[str, Any]:
    """A ``getTaskDetails`` request for the task ``task_uuid`` (protocol.md section 6): its
    reply carries the original ``request`` array and ``response`` envelope."""
    return {"taskType": GET_TASK_DETAILS, "taskUUID": task_uuid}


def frame_slices(
    sizes: Sequence[int], *, max_items: int, max_bytes: int | None, overhead: int = 2
) -> list[slice]:
    """The one frame packer: split encoded items, in order, into frames within both caps.

    Client and server both pack with it (tasks and polls out, answers back). A frame holds at
    most ``max_items`` items and, counting ``overhead`` bytes for its brackets and one comma
    per item, at most ``max_bytes`` bytes; an item larger than that goes alone in its frame.

    Args:
        sizes: The encoded size of each item, in order.
        max_items: Most items per frame (at least 1).
        max_bytes: Most bytes per frame, or ``None`` for no byte cap.
        overhead: Bytes of the frame around its items (``2`` for ``[...]``).

    Returns:
        One slice of ``sizes`` (and so of the items) per frame, covering them all in order.
    """
    slices: list[slice] = []
    start = 0
    total = overhead
    for index, size in enumerate(sizes):
        count = index - start
        if count and (
            count >= max_items or (max_bytes is not None and total + size + 1 > max_bytes)
        ):
            slices.append(slice(start, index))
            start, total = index, overhead
        total += size + 1
    if start < len(sizes):
        slices.append(slice(start, len(sizes)))
    return slices


def join_frame(encoded_items: Sequence[bytes]) -> bytes:
    """Join items that are already JSON-encoded into one array frame, without re-encoding.

    A frame of one task is one copy of it (a one-item join is the item itself), of several two
    (the commas, then the brackets); ``b"[" + ... + b"]"`` made two more, each a fresh buffer
    the size of the frame: megabytes a task with images inline.
    """
    return b"".join((b"[", b",".join(encoded_items), b"]"))


def data_frame(items: Iterable[Mapping[str, Any]]) -> bytes:
    """A server ``{"data": [...]}`` frame."""
    return orjson.dumps({"data": list(items)})


def errors_frame(items: Iterable[Mapping[str, Any]]) -> bytes:
    """A server ``{"errors": [...]}`` frame."""
    return orjson.dumps({"errors": list(items)})


def encoded_frame(key: str, encoded_items: Sequence[bytes]) -> bytes:
    """A server frame (``key`` is ``"data"`` or ``"errors"``) from items already JSON-encoded.

    The reference server encodes each answer once, when it is ready, and joins them here.
    """
    return b"".join((b'{"', key.encode(), b'":[', b",".join(encoded_items), b"]}"))  # not "+"s
