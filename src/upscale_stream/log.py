"""structlog configuration and the redaction processor that keeps API keys out of every log line.

The library itself never puts a key into an event: the auth frame is built in the core and never
logged. :func:`redact_secrets` is the second line of defence: it drops values of key-like fields
and replaces any registered secret found inside any string value. :func:`configure_logging`
installs it first in the chain; users who configure structlog themselves can add it too.
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Mapping, MutableMapping
from typing import Any

import structlog

__all__ = ["REDACTED", "configure_logging", "get_logger", "redact_secrets", "register_secret"]

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


def redact_secrets(
    logger: Any, method_name: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: mask key-like fields and every registered secret in the event."""
    for key in list(event_dict):
        value = event_dict[key]
        if key.lower() in _SECRET_FIELDS:
            event_dict[key] = REDACTED
        elif key == "exc_info" and value:
            event_dict[key] = value  # rendered later; format_exc_info below scrubs the text
        else:
            event_dict[key] = _scrub(value)
    return event_dict


def _scrub_rendered(
    logger: Any, method_name: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    if "exception" in event_dict:
        event_dict["exception"] = _scrub(event_dict["exception"])
    return event_dict


def configure_logging(level: int | str = logging.INFO, *, json: bool = False) -> None:
    """Configure structlog for the CLI, the server and scripts: redaction first, then rendering.

    Args:
        level: Minimum level, as a number or a name such as ``"DEBUG"``.
        json: Render JSON lines instead of the human-readable console format.
    """
    numeric = logging.getLevelName(level.upper()) if isinstance(level, str) else level
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if json
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[
            redact_secrets,
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            _scrub_rendered,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )


def get_logger(name: str) -> Any:
    """A structlog logger named after the module that logs."""
    return structlog.get_logger(name)
