"""The reference server's pages: the playground (``GET /``) and the status page (``GET /status``).

The HTML, JavaScript and CSS beside this module are package data, served as they are: no build
step, no external asset (a ``Content-Security-Policy`` header says so to the browser). Besides
the files, :func:`page_response` answers two documents made on the spot:

* ``GET /status.json``: the status figures (:mod:`..status`, documented there);
* ``GET /pages/models.json``: the model table the playground applies (the same
  :data:`upscale_stream.models.MODELS` the client checks tasks against).
"""

from __future__ import annotations

import functools
import http
from importlib import resources
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import orjson

from ...models import MODELS
from ..routes import plain_response

if TYPE_CHECKING:
    from websockets.http11 import Response

    from ..app import ReferenceServer

__all__ = ["FILES", "page_response"]

_HTML = "text/html; charset=utf-8"
FILES: dict[str, tuple[str, str]] = {
    "/": ("playground.html", _HTML),
    "/playground": ("playground.html", _HTML),
    "/status": ("status.html", _HTML),
    "/pages/pages.css": ("pages.css", "text/css; charset=utf-8"),
    "/pages/playground.js": ("playground.js", "text/javascript; charset=utf-8"),
    "/pages/status.js": ("status.js", "text/javascript; charset=utf-8"),
}
"""Request path -> (file beside this module, Content-Type). Nothing else is read from disk."""

# Our own files only; the playground may talk to any WebSocket URL the user types (the real
# API included) and shows results as data: URIs.
_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "connect-src 'self' ws: wss:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


@functools.cache
def _read(name: str) -> bytes:
    return resources.files(__name__).joinpath(name).read_bytes()


@functools.cache
def _models_json() -> bytes:
    table = {
        air: {"name": spec.name, "factors": sorted(spec.factors), "settings": sorted(spec.settings)}
        for air, spec in MODELS.items()
    }
    return orjson.dumps(table)


def page_response(target: str, server: ReferenceServer) -> Response | None:
    """Answer a GET for a page, its assets, or ``/status.json``; ``None`` for other paths.

    Args:
        target: The request target (path and query string; the query is ignored).
        server: The running server (its status figures).
    """
    path = urlsplit(target).path
    if path == "/status.json":
        body = orjson.dumps(server.status.snapshot(server))
        return plain_response(http.HTTPStatus.OK, body, "application/json")
    if path == "/pages/models.json":
        return plain_response(http.HTTPStatus.OK, _models_json(), "application/json")
    found = FILES.get(path)
    if found is None:
        return None
    name, content_type = found
    response = plain_response(http.HTTPStatus.OK, _read(name), content_type, cache="no-cache")
    response.headers["Content-Security-Policy"] = _CSP
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response
