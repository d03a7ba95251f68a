"""The figures of the status page (``GET /status``) and of ``GET /status.json``.

:class:`StatusBoard` is told of two events by the server (an error item sent, a task finished)
and keeps O(1) bookkeeping for each: counters by key fingerprint and by error code, a ring of
finished tasks per 5-second bucket over the last 5 minutes, and the last few output image ids.
:meth:`StatusBoard.snapshot` reads the rest (connections, sessions, tasks in flight, the fault
knobs) from the server's state when a page asks.

Key isolation: a key is never shown, only a fingerprint: an HMAC, under a random salt made at
start, of the key's tenant id (:mod:`.sessions`; itself an HMAC of the key under another
secret), so it cannot be checked against a guess from outside. No result of any key
(output image ids or URLs) is shown unless the server was started with
``ServerConfig.status_shows_results`` (``serve --status-show-results``; the embedded server of
``upscale-stream run`` sets it, since it serves one key, its own).

``/status.json`` (every count is an integer, every time in seconds)::

    {
      "uptime": 12.5,                      # seconds since the server started
      "connections": {"open": 2, "authenticated": 1},
      "sessions": {"total": 1, "attached": 1, "held_answers": 0},
      "keys": [                            # one entry per key fingerprint seen
        {"fingerprint": "key-1a2b3c4d", "connections": 1, "sessions": 1,
         "in_flight": 3, "succeeded": 40, "failed": 1}
      ],
      "tasks": {"received": 44, "executed": 43, "in_flight": 3,
                "succeeded": 40, "failed": 1, "replayed": 0},
      "errors_by_code": {"invalidUpscaleFactor": 1},   # every error item sent, by code
      "throughput": {"bucket": 5.0, "counts": [0, 0, ..., 12, 28],  # tasks finished per
                     "last_minute": 0.67},                          # bucket, oldest first;
                                                                    # tasks/s over 60 s
      "faults": {"result_delay": 0.2},      # the knobs not at their default
      "results_shown": false,
      "latest_outputs": []                  # newest first, when results_shown:
                                            # [{"url": "/image/<uuid>.png"}]
    }
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import secrets
from collections import Counter, deque
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .app import ReferenceServer
    from .sessions import TaskRecord

__all__ = ["BUCKETS", "BUCKET_SECONDS", "StatusBoard", "fingerprint"]

BUCKET_SECONDS = 5.0
"""Width of one bar of the throughput chart."""
BUCKETS = 60
"""Bars in the chart: 60 of 5 s, the last 5 minutes."""
LATEST_OUTPUTS = 8
"""Thumbnails kept for the page."""
_UNKNOWN = "unknown"
_MAX_CODES = 200  # error codes are client-influenced strings: cap how many distinct ones we keep
_MAX_KEYS = 10_000  # with accept_any_key, every key is a tenant


def fingerprint(tenant: str, salt: bytes) -> str:
    """A short, salted fingerprint of a key's tenant id (``key-`` and 8 hex digits)."""
    digest = hmac.new(salt, tenant.encode("utf-8", "replace"), hashlib.sha256).hexdigest()
    return f"key-{digest[:8]}"


@dataclasses.dataclass(slots=True)
class _KeyFigures:
    succeeded: int = 0
    failed: int = 0


class StatusBoard:
    """The server's running figures for the status page.

    Args:
        clock: The server's monotonic clock (``ServerConfig.clock``).
        salt: The fingerprint salt (random unless a test fixes it).
    """

    def __init__(self, clock: Callable[[], float], *, salt: bytes | None = None) -> None:
        self.clock = clock
        self.salt = salt if salt is not None else secrets.token_bytes(16)
        self.started = clock()
        self._marks: dict[str, str] = {}  # tenant id -> fingerprint
        self.by_key: dict[str, _KeyFigures] = {}
        self.errors_by_code: Counter[str] = Counter()
        self.succeeded = 0
        self.failed = 0
        self._counts = [0] * BUCKETS
        self._epochs = [-1] * BUCKETS
        self.latest: deque[str] = deque(maxlen=LATEST_OUTPUTS)  # image UUIDs, newest last

    # -- events (each O(1)) --------------------------------------------------------------------

    def mark(self, tenant: str) -> str:
        """The fingerprint shown for a tenant (computed once per tenant)."""
        found = self._marks.get(tenant)
        if found is None:
            found = fingerprint(tenant, self.salt)
            if len(self._marks) < _MAX_KEYS:
                self._marks[tenant] = found
        return found

    def error_sent(self, item: Mapping[str, Any]) -> None:
        """An error item was queued for a client (a refusal, or a task's final error)."""
        code = item.get("code")
        code = code if isinstance(code, str) and code else _UNKNOWN
        if code not in self.errors_by_code and len(self.errors_by_code) >= _MAX_CODES:
            code = "other"
        self.errors_by_code[code] += 1

    def finished(self, record: TaskRecord, answer: Mapping[str, Any], *, failed: bool) -> None:
        """A registered task finished with ``answer`` (its result, or its error item)."""
        now = self.clock()
        epoch = int(now // BUCKET_SECONDS)
        slot = epoch % BUCKETS
        if self._epochs[slot] != epoch:
            self._epochs[slot] = epoch
            self._counts[slot] = 0
        self._counts[slot] += 1
        mark = self.mark(record.tenant)
        figures = self.by_key.get(mark)
        if figures is None and len(self.by_key) < _MAX_KEYS:
            figures = self.by_key[mark] = _KeyFigures()
        if failed:
            self.failed += 1
            self.error_sent(answer)
            if figures is not None:
                figures.failed += 1
            return
        self.succeeded += 1
        if figures is not None:
            figures.succeeded += 1
        image_uuid = answer.get("imageUUID")
        if isinstance(image_uuid, str):
            self.latest.append(image_uuid)

    # -- reading -------------------------------------------------------------------------------

    def throughput(self) -> list[int]:
        """Tasks finished per bucket over the last ``BUCKETS`` buckets, oldest first."""
        epoch = int(self.clock() // BUCKET_SECONDS)
        counts = []
        for past in range(epoch - BUCKETS + 1, epoch + 1):
            slot = past % BUCKETS
            counts.append(self._counts[slot] if self._epochs[slot] == past else 0)
        return counts

    def snapshot(self, server: ReferenceServer) -> dict[str, Any]:
        """The ``/status.json`` document (see the module docstring)."""
        now = self.clock()
        connections = list(server._connections)
        sessions = list(server.registry.sessions.values())
        keys: dict[str, dict[str, int]] = {
            mark: {
                "connections": 0,
                "sessions": 0,
                "in_flight": 0,
                "succeeded": figures.succeeded,
                "failed": figures.failed,
            }
            for mark, figures in self.by_key.items()
        }
        authenticated = 0
        in_flight = 0
        for conn in connections:
            in_flight += conn.in_flight
            if conn.tenant is None:
                continue
            authenticated += 1
            figures = keys.setdefault(self.mark(conn.tenant), _empty())
            figures["connections"] += 1
            figures["in_flight"] += conn.in_flight
        for session in sessions:
            keys.setdefault(self.mark(session.tenant), _empty())["sessions"] += 1
        counts = self.throughput()
        last_minute = sum(counts[-int(60 / BUCKET_SECONDS) :]) / 60.0
        shown = server.config.status_shows_results
        outputs: list[dict[str, str]] = []
        if shown:
            for image_uuid in reversed(self.latest):
                image = server.images.get(image_uuid, now)
                if image is not None:
                    outputs.append({"url": f"/image/{image_uuid}.{image.extension}"})
        return {
            "uptime": round(now - self.started, 3),
            "connections": {"open": len(connections), "authenticated": authenticated},
            "sessions": {
                "total": len(sessions),
                "attached": sum(1 for s in sessions if s.attached),
                "held_answers": sum(len(s.outbox) for s in sessions if not s.attached),
            },
            "keys": [{"fingerprint": mark, **figures} for mark, figures in sorted(keys.items())],
            "tasks": {
                "received": server.counts.received_total,
                "executed": server.counts.executions_total,
                "in_flight": in_flight,
                "succeeded": self.succeeded,
                "failed": self.failed,
                "replayed": server.counts.replayed,
            },
            "errors_by_code": dict(sorted(self.errors_by_code.items())),
            "throughput": {
                "bucket": BUCKET_SECONDS,
                "counts": counts,
                "last_minute": round(last_minute, 3),
            },
            "faults": _faults_in_force(server.faults),
            "results_shown": shown,
            "latest_outputs": outputs,
        }


def _empty() -> dict[str, int]:
    return {"connections": 0, "sessions": 0, "in_flight": 0, "succeeded": 0, "failed": 0}


def _faults_in_force(faults: Any) -> dict[str, Any]:
    """The fault knobs that differ from their defaults (JSON values only)."""
    in_force: dict[str, Any] = {}
    for spec in dataclasses.fields(faults):
        if not spec.init or spec.name == "seed":
            continue
        value = getattr(faults, spec.name)
        if value != spec.default and isinstance(value, bool | int | float | str):
            in_force[spec.name] = value
    return in_force
