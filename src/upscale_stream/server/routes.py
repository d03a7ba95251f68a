"""Plain HTTP on the WebSocket port: output images by URL, and a health check.

websockets hands every request to ``process_request`` before the handshake; :func:`http_response`
answers the ones that are not WebSocket upgrades and lets the others through:

* ``GET /image/<imageUUID>.<ext>`` -> the image bytes with their ``Content-Type``; 404 when the
  UUID is unknown or the extension does not match, 410 once the image's ``ttl`` has passed.
  Nothing but that exact shape is looked up, so no path can escape the store.
* ``GET /health`` -> ``ok``.
* Anything else -> ``None``: websockets goes on, and answers 426 to a non-upgrade request.
"""

from __future__ import annotations

import email.utils
import http
import math
import re
from urllib.parse import urlsplit

from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from .image_store import ImageStore, Lookup

__all__ = ["http_response", "image_uuid_of", "is_upgrade", "plain_response"]

_IMAGE_PATH = re.compile(
    r"/image/(?P<uuid>[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12})\.(?P<ext>[a-z]{3,4})"
)


def image_uuid_of(path: str) -> str | None:
    """The image UUID named by an image path (``/image/<uuid>.<ext>``), else ``None``."""
    match = _IMAGE_PATH.fullmatch(path)
    return match["uuid"].lower() if match else None


def is_upgrade(request: Request) -> bool:
    """Whether the request asks for a WebSocket (as opposed to a plain HTTP GET)."""
    return request.headers.get("Upgrade", "").lower() == "websocket"


def plain_response(
    status: http.HTTPStatus,
    body: bytes,
    content_type: str = "text/plain; charset=utf-8",
    *,
    cache: str = "no-store",
) -> Response:
    """An HTTP response that closes the connection after ``body``."""
    headers = Headers(
        [
            ("Date", email.utils.formatdate(usegmt=True)),
            ("Connection", "close"),
            ("Content-Length", str(len(body))),
            ("Content-Type", content_type),
            ("Cache-Control", cache),
        ]
    )
    return Response(status.value, status.phrase, headers, body)


def http_response(request: Request, images: ImageStore, now: float) -> Response | None:
    """Answer a non-WebSocket request, or return ``None`` to go on with the handshake.

    Args:
        request: The parsed HTTP request (websockets only parses GET).
        images: The server's image store.
        now: The current time on the server's clock (for image expiry).
    """
    if is_upgrade(request):
        return None
    path = urlsplit(request.path).path
    if path == "/health":
        return plain_response(http.HTTPStatus.OK, b"ok\n")
    if not path.startswith("/image/"):
        return None
    match = _IMAGE_PATH.fullmatch(path)
    if match is None:
        return plain_response(http.HTTPStatus.NOT_FOUND, b"no such image\n")
    found, image = images.lookup(match["uuid"].lower(), now)
    if found is Lookup.EXPIRED:
        return plain_response(http.HTTPStatus.GONE, b"this image has expired (ttl)\n")
    if image is None or image.extension != match["ext"]:
        return plain_response(http.HTTPStatus.NOT_FOUND, b"no such image\n")
    max_age = max(0, math.floor(image.expires_at - now))
    return plain_response(
        http.HTTPStatus.OK, image.data, image.mime, cache=f"private, max-age={max_age}"
    )
