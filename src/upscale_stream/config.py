"""Every default in one place; options resolve as: argument, then environment, then default.

The option groups are frozen dataclasses with explicit fields, so an editor completes them and a
typo is an error. Times are in seconds.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import ClassVar

from .errors import InvalidLimits, InvalidURL, MissingAPIKey

__all__ = [
    "DEFAULT_URL",
    "ENV_API_KEY",
    "ENV_URL",
    "Heartbeat",
    "Limits",
    "Polling",
    "Retry",
    "TaskRetry",
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
        close: Draining in-flight tasks in ``close()``, then closing the socket. When the
            drain runs out of time, the tasks still pending fail with
            :class:`~upscale_stream.errors.ClientClosed` and ``close()`` raises
            :class:`~upscale_stream.errors.UpscaleTimeout` (``operation="close"``).
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

    def __post_init__(self) -> None:
        for name in ("max_in_flight", "max_batch", "max_frame_bytes"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise InvalidLimits("must be an integer of at least 1", parameter=name, value=value)


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """Application-level keepalive (protocol.md section 3).

    Silence is counted per direction. With no task live, a ping goes out once nothing was
    received **or** nothing was sent for ``interval`` seconds (whichever happened longer ago),
    well inside the server's 120 s idle limit. While tasks are live, a ping goes out once
    nothing was *received* for ``busy_interval`` seconds, however much we send: a link that
    swallows our frames is then found within ``busy_interval + pong_timeout`` (19.5 s with
    the defaults; the pong gets 15 s because a loaded link or server may answer late).
    Only the pong answers a ping; other traffic does not clear its deadline.

    Attributes:
        interval: Ping after this much silence while no task is live.
        busy_interval: Ping after this long without receiving anything while tasks are live.
        pong_timeout: A ping unanswered for this long marks the connection dead.
    """

    interval: float = 30.0
    busy_interval: float = 4.5
    pong_timeout: float = 15.0


@dataclass(frozen=True, slots=True)
class Retry:
    """Reconnect policy (exponential backoff with jitter).

    What is retried at all is :func:`upscale_stream.policy.process_exception`: network errors,
    HTTP 429 and 5xx on the upgrade and abnormal closes; a rejected key, HTTP 401/403/404 and
    a bad URL are final. The delays grow with every consecutive failure and start again only
    after a connection proved healthy (it answered a ping or delivered a result at least
    ``healthy_after`` seconds after it authenticated), so a server that accepts the key and
    hangs up at once is retried with growing delays, not four times a second.

    Attributes:
        initial: Upper bound of the random first delay.
        factor: Growth of the delay per failed attempt.
        max_delay: Cap of the delay.
        max_attempts: Consecutive failed connections (a connect that failed, or a
            connection that ended before it proved healthy) before giving up (``None``: never
            give up; tasks still end by their own timeout).
        resume_grace: After resuming a session, how long to wait for replayed results before
            resending unanswered tasks (with the same taskUUID).
        healthy_after: Seconds after authentication from which a pong or a result proves the
            connection healthy (and resets the backoff).
    """

    initial: float = 0.5
    factor: float = 1.8
    max_delay: float = 30.0
    max_attempts: int | None = None
    resume_grace: float = 1.0
    healthy_after: float = 1.0


@dataclass(frozen=True, slots=True)
class TaskRetry:
    """Retry of tasks that the server answered with a transient error.

    Which codes are transient is one table, :data:`upscale_stream.policy.RETRYABLE_CODES`
    (each code with the reason). An error answer means the server did not run that taskUUID,
    so the retry goes under a new taskUUID (random; for a task of a job, the next attempt's
    derived one). A rate-limited task keeps its slot in the in-flight window while it waits.
    Non-retryable errors (validation, auth, content policy) fail at once.

    Attributes:
        max_attempts: Tries per task that end in a transient error, the first included; 1
            never retries anything (see :attr:`NEVER`).
        max_rate_limited: Rate-limit answers one task may get before it fails. They are flow
            control (the window shrinks), so they do not use up ``max_attempts``.
        initial: Delay before the first retry (seconds).
        factor: Growth of the delay per retry.
        max_delay: Cap of the delay.
        jitter: Each delay is drawn uniformly from ``[delay * (1 - jitter), delay]``.
    """

    max_attempts: int = 5
    max_rate_limited: int = 20
    initial: float = 0.2
    factor: float = 2.0
    max_delay: float = 10.0
    jitter: float = 0.5

    NEVER: ClassVar[TaskRetry]
    """Never retry: the first error answer fails the task."""

    def __post_init__(self) -> None:
        if not isinstance(self.max_attempts, int) or self.max_attempts < 1:
            raise InvalidLimits(
                "must be an integer of at least 1 (1: never retry)",
                parameter="max_attempts",
                value=self.max_attempts,
            )
        if not 0.0 <= self.jitter <= 1.0:
            raise InvalidLimits("must be between 0 and 1", parameter="jitter", value=self.jitter)


TaskRetry.NEVER = TaskRetry(max_attempts=1)


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
        MissingAPIKey: neither is set. The message names both.
    """
    key = api_key if api_key is not None else os.environ.get(ENV_API_KEY)
    if not key:
        raise MissingAPIKey(
            f"no API key: pass api_key=... or set the {ENV_API_KEY} environment variable"
        )
    return key


def resolve_url(url: str | None) -> str:
    """The WebSocket URL: the argument, else ``RUNWARE_URL``, else the Runware endpoint.

    Raises:
        InvalidURL: it does not start with ``ws://`` or ``wss://``. A query string is never
            shown in the message (it may carry a key).
    """
    resolved = url or os.environ.get(ENV_URL) or DEFAULT_URL
    if not isinstance(resolved, str) or not resolved.startswith(("ws://", "wss://")):
        shown = resolved.partition("?")[0] if isinstance(resolved, str) else resolved
        raise InvalidURL(f"url={shown!r}: must start with ws:// or wss://")
    return resolved
