"""structlog configuration and the redaction processor that keeps API keys out of every log line.

The library itself never puts a key into an event: the auth frame is built in the core and never
logged. :func:`redact_secrets` is the second line of defence: it drops values of key-like fields
and replaces any registered secret found inside any string value. :func:`configure_logging`
installs it first in the chain; users who configure structlog themselves can add it too.
"""

from __future__ import annotations

import logging
import re
import sys
import threading
from collections.abc import Mapping, MutableMapping
from typing import Any

import structlog

__all__ = [
    "REDACTED",
    "Throttle",
    "configure_logging",
    "get_logger",
    "redact_secrets",
    "register_secret",
    "scrub_exception",
]

REDACTED = "***"
_SECRET_FIELDS = frozenset({"apikey", "api_key", "authorization", "token", "password", "secret"})
_secrets: set[str] = set()
_lock = threading.Lock()


def register_secret(value: str) -> None:
    """Remember ``value`` so that :func:`redact_secrets` masks it wherever it appears."""
    if len(value) >= 4:
        with _lock:
            _secrets.add(value)


def _scrub(value: Any) -> Any:
    if isinstance(value, str):
        for secret in _secrets:
            if secret in value:
                value = value.replace(secret, REDACTED)
        return value
    if isinstance(value, Mapping):
        return {
            k: REDACTED if str(k).lower() in _SECRET_FIELDS else _scrub(v) for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return type(value)(_scrub(v) for v in value)
    if isinstance(value, BaseException):
        return _scrub(repr(value))
    return value


def scrub_exception(exc: BaseException) -> BaseException:
    """Mask every registered secret in the messages of ``exc`` and its whole chain, in place.

    For exceptions the client hands to callers with a foreign cause attached (an internal
    error): a bug's message must not carry the key to the caller. Returns ``exc``.
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        with _lock:
            secrets = list(_secrets)
        if secrets:
            current.args = tuple(
                _scrub(arg) if isinstance(arg, str) else arg for arg in current.args
            )
        current = current.__cause__ or current.__context__
    return exc


def redact_secrets(
    logger: Any, method_name: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: mask key-like fields and every registered secret in the event."""
    for key in list(event_dict):
        value = event_dict[key]
        if key.lower() in _SECRET_FIELDS:
            event_dict[key] = REDACTED
        elif key == "exc_info":
            continue  # rendered later by format_exc_info; _scrub_rendered scrubs the text
        else:
            event_dict[key] = _scrub(value)
    return event_dict


_API_KEY_FIELD = re.compile(r"(apiKey\W{1,6})[^\s,}\]]*", re.IGNORECASE)


class RedactingFilter(logging.Filter):
    """A stdlib logging filter for loggers we do not control (websockets' frame logs).

    It rewrites the formatted message: every registered secret is masked, and so is whatever
    follows an ``apiKey`` field, even when the frame log shortened the key in the middle.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        scrubbed = _API_KEY_FIELD.sub(r"\1" + REDACTED, _scrub(message))
        if scrubbed != message:
            record.msg, record.args = scrubbed, ()
        return True


def websockets_logger() -> logging.Logger:
    """The logger handed to websockets, with :class:`RedactingFilter` installed once."""
    logger = logging.getLogger("upscale_stream.websockets")
    if not any(isinstance(f, RedactingFilter) for f in logger.filters):
        logger.addFilter(RedactingFilter())
    return logger


def _scrub_rendered(
    logger: Any, method_name: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    if "exception" in event_dict:
        event_dict["exception"] = _scrub(event_dict["exception"])
    return event_dict


_json_output = False


def _render(logger: Any, method_name: str, event_dict: MutableMapping[str, Any]) -> str:
    if _json_output:
        return structlog.processors.JSONRenderer()(logger, method_name, event_dict)  # type: ignore[return-value]
    event = event_dict.pop("event", "")
    fields = " ".join(f"{key}={value!r}" for key, value in event_dict.items())
    return f"{event} {fields}" if fields else str(event)


_PROCESSORS: list[Any] = [
    structlog.stdlib.filter_by_level,
    redact_secrets,
    structlog.contextvars.merge_contextvars,
    structlog.processors.format_exc_info,
    _scrub_rendered,
    _render,
]


class _BoundLogger(structlog.stdlib.BoundLogger):
    """``exception()`` logs at ERROR through our processors only: the stdlib must not print its
    own, unscrubbed traceback next to ours."""

    def exception(self, event: str | None = None, *args: Any, **kw: Any) -> Any:
        kw.setdefault("exc_info", True)
        return self._proxy_to_logger("error", event, *args, **kw)


class Throttle:
    """Rate-limits repeated log lines of one kind and summarises what it held back.

    The first line of a kind goes out; further ones within ``interval`` seconds are only
    counted. The next line after the interval carries ``suppressed=N`` (how many were held
    back), and :meth:`flush` reports what is left (call it on close). A garbage stream then
    costs a few lines per minute, not one per frame.

    Args:
        interval: Seconds between two lines of the same kind.
    """

    __slots__ = ("_interval", "_kinds")

    def __init__(self, interval: float = 10.0) -> None:
        self._interval = interval
        self._kinds: dict[str, list[float]] = {}  # kind -> [last logged at, held back]

    def allow(self, kind: str, now: float) -> int | None:
        """Whether to log a line of ``kind`` now: ``None`` (hold it back), or how many lines
        of that kind were held back since the last one (log it, with that count)."""
        state = self._kinds.get(kind)
        if state is None:
            self._kinds[kind] = [now, 0.0]
            return 0
        if now - state[0] >= self._interval:
            held = int(state[1])
            state[0], state[1] = now, 0.0
            return held
        state[1] += 1
        return None

    def flush(self) -> dict[str, int]:
        """Counts held back and never reported, by kind; then forget them."""
        held = {kind: int(state[1]) for kind, state in self._kinds.items() if state[1]}
        self._kinds.clear()
        return held


def get_logger(name: str) -> Any:
    """A structlog logger for module ``name``, writing through the stdlib logger of that name.

    The library never configures logging on import: lines go wherever the application's
    ``logging`` setup sends them (nowhere below WARNING by default). Redaction runs first in the
    chain, whatever the application configured.
    """
    return structlog.wrap_logger(
        logging.getLogger(name),
        processors=_PROCESSORS,
        wrapper_class=_BoundLogger,
    )


def configure_logging(level: int | str = logging.INFO, *, json: bool = False) -> None:
    """Send upscale-stream's log lines to stderr (for the CLI, the server and scripts).

    Args:
        level: Minimum level, as a number or a name such as ``"DEBUG"``.
        json: Render JSON objects instead of ``event key=value`` lines.
    """
    global _json_output
    _json_output = json
    numeric = logging.getLevelName(level.upper()) if isinstance(level, str) else level
    logger = logging.getLogger("upscale_stream")
    logger.setLevel(numeric)
    if not any(getattr(h, "_upscale_stream", False) for h in logger.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(
            logging.Formatter("%(message)s" if json else "%(asctime)s %(levelname)-7s %(message)s")
        )
        handler._upscale_stream = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
