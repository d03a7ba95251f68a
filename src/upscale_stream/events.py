"""The events of the client core, as data (h11's style), and the plan after a drop.

:meth:`upscale_stream.protocol.ClientSession.events_received` returns these; the shell
(:mod:`upscale_stream.connection`) consumes them with ``match``. They are slotted dataclasses
and carry no behaviour; treat them as read-only. The two made once per task on the hot path
(:class:`TaskResult`, :class:`TaskFailed`) are msgspec Structs instead: their ``__init__`` is
one C call (a dataclass's runs Python bytecode, a frozen one's twice as much, per task). They
compare, print and ``match`` like the dataclasses.
"""

from __future__ import annotations

from dataclasses import dataclass

import msgspec

from .errors import APIError, AuthenticationError, UpscaleError
from .models import ErrorItem
from .results import UpscaleResult

__all__ = [
    "AuthRejected",
    "AuthTimedOut",
    "Authenticated",
    "Discarded",
    "Event",
    "HeartbeatMissed",
    "MalformedMessage",
    "Pong",
    "ResendPlan",
    "StrayError",
    "TaskAccepted",
    "TaskFailed",
    "TaskResult",
    "TaskRetrying",
]


@dataclass(frozen=True, slots=True)
class Authenticated:
    """The server accepted the key. ``resumed`` is true when it kept our earlier session."""

    session_id: str
    resumed: bool


@dataclass(frozen=True, slots=True)
class AuthRejected:
    """The server refused the key. Final: the shell must not reconnect."""

    error: AuthenticationError


@dataclass(frozen=True, slots=True)
class AuthTimedOut:
    """No answer to the authentication frame in time. The shell should drop and reconnect."""

    seconds: float


class TaskResult(msgspec.Struct, gc=False):
    """A task finished with ``result``, the server's result item, decoded by the core.

    ``task_uuid`` is the task's key (its first taskUUID); ``result.task_uuid`` is the final
    attempt's. An item the core cannot decode fails its task (:class:`TaskFailed` with
    :class:`~upscale_stream.errors.InvalidResult`) instead. Tries before this one were
    announced by :class:`TaskRetrying` (kept out of this event: it is made once per task on
    the hot path).
    """

    task_uuid: str
    result: UpscaleResult
    submitted: float  # the submit time the core was given: the latency's start


class TaskFailed(msgspec.Struct):
    """A task failed for good (server error item, or its timeout), after ``attempts`` tries."""

    task_uuid: str
    error: UpscaleError
    attempts: int = 1
    submitted: float | None = None  # the submit time the core was given


@dataclass(frozen=True, slots=True)
class TaskRetrying:
    """The server answered a task with a transient error; it goes again after ``delay``.

    Attributes:
        task_uuid: The task's key (its first taskUUID).
        old_uuid: The taskUUID the server answered (known not to have run).
        new_uuid: The taskUUID of the next attempt.
        attempt: The number of the next try (2 for the first retry).
        delay: Seconds until it is queued again.
        error: The server's answer.
        rate_limited: The answer was a rate-limit code (the window should shrink).
        sent_seq: The answered attempt's send sequence number (see
            :attr:`ClientSession.tasks_sent`), for the window's once-per-round-trip rule.
    """

    task_uuid: str
    old_uuid: str
    new_uuid: str
    attempt: int
    delay: float
    error: APIError
    rate_limited: bool
    sent_seq: int


@dataclass(frozen=True, slots=True)
class TaskAccepted:
    """The server acknowledged an async task; the core polls for its result."""

    task_uuid: str


@dataclass(frozen=True, slots=True)
class Pong:
    """The server answered our ping after ``rtt`` seconds."""

    rtt: float


@dataclass(frozen=True, slots=True)
class HeartbeatMissed:
    """A ping went unanswered for ``seconds``: the link is dead. The shell must drop it."""

    seconds: float


@dataclass(frozen=True, slots=True)
class StrayError:
    """An error item that names no task we can fail; logged, never broadcast to tasks."""

    error: ErrorItem


@dataclass(frozen=True, slots=True)
class Discarded:
    """An item that matched no live task (late, duplicate or unknown taskUUID)."""

    task_uuid: str
    reason: str


@dataclass(frozen=True, slots=True)
class MalformedMessage:
    """A frame that is not a JSON object with ``data``/``errors``; ignored."""

    reason: str
    sample: str


Event = (
    Authenticated
    | AuthRejected
    | AuthTimedOut
    | TaskResult
    | TaskFailed
    | TaskAccepted
    | TaskRetrying
    | Pong
    | HeartbeatMissed
    | StrayError
    | Discarded
    | MalformedMessage
)
"""Everything :meth:`ClientSession.events_received` can return."""


@dataclass(frozen=True, slots=True)
class ResendPlan:
    """What happens to the tasks after a drop (returned by :meth:`ClientSession.connection_lost`).

    Attributes:
        session_id: The session to resume, or ``None`` if none was ever granted.
        awaiting_replay: Sent but unanswered; kept, waiting for a replay or a resend with the
            same taskUUID.
        polling: Async or recovering tasks that go on polling ``getResponse`` after reconnect.
        unsent: Never left this process; they go out after reconnect.
    """

    session_id: str | None
    awaiting_replay: tuple[str, ...]
    polling: tuple[str, ...]
    unsent: tuple[str, ...]
