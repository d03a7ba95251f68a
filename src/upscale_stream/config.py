"""Every default in one place; options resolve as: argument, then environment, then default.

The option groups are frozen dataclasses with explicit fields, so an editor completes them and a
typo is an error. Times are in seconds.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from .errors import UpscaleError

__all__ = [
    "DEFAULT_URL",
    "ENV_API_KEY",
    "ENV_URL",
    "Heartbeat",
    "Limits",
    "Polling",
    "Retry",
    "Timeouts",
    "resolve_api_key",
    "resolve_url",
]

DEFAULT_URL = "wss://ws-api.runware.ai/v1"
ENV_API_KEY = "RUNWARE_API_KEY"
ENV_URL = "RUNWARE_URL"


@dataclass(frozen=True, slots=True)
class Timeouts:
    """How long to wait for each step.

    Attributes:
        connect: Opening the WebSocket (TCP, TLS and the HTTP upgrade).
        auth: From sending the authentication frame to the server's answer.
        task: From ``submit()`` to the task's result, reconnects included. ``None`` waits forever.
        close: Draining in-flight tasks in ``close()``, then closing the socket.
    """

    connect: float = 15.0
    auth: float = 15.0
    task: float | None = 300.0
    close: float = 60.0


@dataclass(frozen=True, slots=True)
class Limits:
    """Flow control and frame sizes.

    Attributes:
        max_in_flight: Tasks submitted but not finished; ``submit()`` waits for room beyond it.
        max_batch: Most tasks packed into one outgoing frame.
        max_frame_bytes: Most bytes packed into one outgoing frame (a single larger task still
            goes, alone).
        max_message_size: Largest incoming frame accepted (``None`` for no limit). The official
            SDK's 1 MiB default breaks on base64 results; ours is generous.
        compression: Negotiate permessage-deflate. Off by default: it costs CPU on both ends and
            image data does not compress.
    """

    max_in_flight: int = 500
    max_batch: int = 50
    max_frame_bytes: int = 8 * 1024 * 1024
    max_message_size: int | None = 256 * 1024 * 1024
    compression: bool = False


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """Application-level keepalive (protocol.md section 3).

    Attributes:
        interval: Send a ping after this much silence from the server. Well inside the
            server's 120 s idle limit.
        pong_timeout: A ping unanswered for this long marks the connection dead.
    """

    interval: float = 30.0
    pong_timeout: float = 20.0


@dataclass(frozen=True, slots=True)
class Retry:
    """Reconnect policy (exponential backoff with jitter).

    Attributes:
        initial: Upper bound of the random first delay.
        factor: Growth of the delay per failed attempt.
        max_delay: Cap of the delay.
        max_attempts: Consecutive failed attempts before giving up (``None``: never give up;
            tasks still end by their own timeout).
        resume_grace: After resuming a session, how long to wait for replayed results before
            resending unanswered tasks (with the same taskUUID).
    """

    initial: float = 0.5
    factor: float = 1.8
    max_delay: float = 30.0
    max_attempts: int | None = None
    resume_grace: float = 1.0


@dataclass(frozen=True, slots=True)
class Polling:
    """``getResponse`` polling for ``deliveryMethod: "async"`` tasks.

    Attributes:
        initial: Delay before a task's first poll.
        factor: Growth of the delay per poll.
        max_delay: Cap of the delay.
    """

    initial: float = 0.5
    factor: float = 1.5
    max_delay: float = 5.0


def resolve_api_key(api_key: str | None) -> str:
    """The API key: the argument, else ``RUNWARE_API_KEY``.

    Raises:
        UpscaleError: neither is set. The message names both.
    """
    key = api_key if api_key is not None else os.environ.get(ENV_API_KEY)
    if not key:
        raise UpscaleError(
            f"no API key: pass api_key=... or set the {ENV_API_KEY} environment variable"
        )
    return key


def resolve_url(url: str | None) -> str:
    """The WebSocket URL: the argument, else ``RUNWARE_URL``, else the Runware endpoint."""
    resolved = url or os.environ.get(ENV_URL) or DEFAULT_URL
    if not resolved.startswith(("ws://", "wss://")):
        raise UpscaleError(f"url={resolved!r}: must start with ws:// or wss://")
    return resolved
