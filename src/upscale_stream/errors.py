"""The exception tree of upscale-stream.

Everything the library raises on purpose derives from :class:`UpscaleError`::

    UpscaleError
    ├── APIError                 the server refused or failed one task (code, message, ...)
    │   └── AuthenticationError  the API key was rejected (never retried)
    ├── InvalidTask (ValueError) bad input caught before anything was sent
    │   └── DuplicateTaskUUID    a live task already has this taskUUID
    ├── ConfigurationError (ValueError)
    │   ├── MissingAPIKey        neither ``api_key=`` nor ``RUNWARE_API_KEY``
    │   ├── InvalidURL           not a ws:// or wss:// URL the client can use
    │   └── InvalidLimits        a window, batch or frame limit below 1
    ├── ResultError              a task's answer is unusable
    │   ├── InvalidResult        unreadable, or "success" without an image
    │   └── DownloadError        the image could not be decoded or downloaded
    ├── JobMismatch              an earlier run of the job sent other work under this taskUUID
    ├── ConnectionLost           the link failed for good; carries the task UUIDs never sent
    ├── InternalError            the client core failed; the client closed itself (a bug)
    ├── UpscaleTimeout (TimeoutError)
    │                            a task, the connect, the authentication or the close drain
    │                            took too long
    ├── ClientClosed (RuntimeError)
    │                            the client was used after ``close()``, or closed while a call
    │                            was pending
    └── EventLoopError (RuntimeError)
                                 the sync ``Client`` was called from its own event loop

Context is keyword-only and ``__str__`` is built from the fields. No exception ever carries
the API key: the key is not an attribute of any of them, and messages are built from
server-provided fields that we never fill with it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

__all__ = [
    "APIError",
    "AuthenticationError",
    "ClientClosed",
    "ConfigurationError",
    "ConnectionLost",
    "DownloadError",
    "DuplicateTaskUUID",
    "EventLoopError",
    "InternalError",
    "InvalidLimits",
    "InvalidResult",
    "InvalidTask",
    "InvalidURL",
    "JobMismatch",
    "MissingAPIKey",
    "ResultError",
    "UpscaleError",
    "UpscaleTimeout",
]


class UpscaleError(Exception):
    """Base class of every error raised by upscale-stream."""


class APIError(UpscaleError):
    """The server answered a task with an error item.

    Attributes:
        code: Runware's short error code, for example ``invalidUpscaleFactor``.
        message: The human-readable message from the server.
        parameter: The request field the error is about, when the server named one.
        task_uuid: The task the error belongs to, when known.
        task_type: The task type echoed by the server, when known.
        documentation: A documentation URL, when the server sent one.
    """

    def __init__(
        self,
        code: str,
        message: str,
        *,
        parameter: str | None = None,
        task_uuid: str | None = None,
        task_type: str | None = None,
        documentation: str | None = None,
    ) -> None:
        self.code = code
        self.message = message
        self.parameter = parameter
        self.task_uuid = task_uuid
        self.task_type = task_type
        self.documentation = documentation
        super().__init__(code, message)

    def __str__(self) -> str:
        text = f"{self.code}: {self.message}"
        if self.parameter:
            text += f" (parameter {self.parameter})"
        if self.task_uuid:
            text += f" [task {self.task_uuid}]"
        return text

    def __reduce__(self) -> tuple[Any, ...]:
        return (
            _rebuild_api_error,
            (
                type(self),
                self.code,
                self.message,
                self.parameter,
                self.task_uuid,
                self.task_type,
                self.documentation,
            ),
        )


def _rebuild_api_error(cls: type[APIError], *fields: Any) -> APIError:
    code, message, parameter, task_uuid, task_type, documentation = fields
    return cls(
        code,
        message,
        parameter=parameter,
        task_uuid=task_uuid,
        task_type=task_type,
        documentation=documentation,
    )


class AuthenticationError(APIError):
    """The server rejected the API key. Check ``api_key`` or ``RUNWARE_API_KEY``.

    This error is final: the client never retries a rejected key.
    """


class InvalidTask(UpscaleError, ValueError):
    """A task was rejected before sending because a field has a value the API refuses.

    Attributes:
        parameter: The wire name of the field, such as ``outputQuality`` or ``settings.strength``.
        value: The offending value (shortened when it is long, such as image data).
        code: The Runware-style error code the server would use, such as ``invalidOutputQuality``.
        reason: What is wrong and what is allowed.
    """

    def __init__(self, reason: str, *, parameter: str, value: Any = None, code: str = "") -> None:
        self.parameter = parameter
        self.value = value
        self.code = code or _invalid_code(parameter)
        self.reason = reason
        super().__init__(reason)

    def __str__(self) -> str:
        return f"{self.parameter}={_short_repr(self.value)}: {self.reason}"

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_invalid, (self.reason, self.parameter, self.value, self.code))


def _rebuild_invalid(reason: str, parameter: str, value: Any, code: str) -> InvalidTask:
    return InvalidTask(reason, parameter=parameter, value=value, code=code)


class ConnectionLost(UpscaleError):
    """The connection failed and the client gave up reconnecting, or was told not to retry.

    Attributes:
        reason: What happened last.
        unsent_task_uuids: Tasks that never left this process; they are safe to submit again.
    """

    def __init__(self, reason: str, *, unsent_task_uuids: Iterable[str] = ()) -> None:
        self.reason = reason
        self.unsent_task_uuids = tuple(unsent_task_uuids)
        super().__init__(reason)

    def __str__(self) -> str:
        if self.unsent_task_uuids:
            return f"{self.reason} ({len(self.unsent_task_uuids)} task(s) were never sent)"
        return self.reason


class UpscaleTimeout(UpscaleError, TimeoutError):
    """An operation did not finish within its configured time.

    Attributes:
        operation: ``"task"``, ``"connect"``, ``"authentication"`` or ``"close"``.
        seconds: The limit that was exceeded.
        task_uuid: The task that timed out, for task timeouts.
    """

    def __init__(self, operation: str, *, seconds: float, task_uuid: str | None = None) -> None:
        self.operation = operation
        self.seconds = seconds
        self.task_uuid = task_uuid
        super().__init__(operation, seconds)

    def __str__(self) -> str:
        text = f"{self.operation} timed out after {self.seconds:g} s"
        if self.task_uuid:
            text += f" [task {self.task_uuid}]"
        return text

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_timeout, (self.operation, self.seconds, self.task_uuid))


def handshake_refused(status: int) -> AuthenticationError | ConnectionLost:
    """The error for a WebSocket upgrade the server answered with HTTP ``status``: the one
    wording for both transports. 401/403 mean the key; anything else is a refused connection."""
    if status in (401, 403):
        return AuthenticationError(
            "unauthorized",
            f"the server refused the handshake with HTTP {status}; check api_key or "
            "RUNWARE_API_KEY",
            parameter="apiKey",
        )
    hint = "; check the URL" if status == 404 else ""
    return ConnectionLost(f"handshake refused with HTTP {status}{hint}")


def _rebuild_timeout(operation: str, seconds: float, task_uuid: str | None) -> UpscaleTimeout:
    return UpscaleTimeout(operation, seconds=seconds, task_uuid=task_uuid)


class ClientClosed(UpscaleError, RuntimeError):
    """The client was used after ``close()``, or closed while this call was pending.

    A call that was pending when ``close(cancel=True)`` ran, or when the close drain timed
    out, raises this (never ``asyncio.CancelledError``: its caller did not cancel it).
    Create a new client instead.
    """


class EventLoopError(UpscaleError, RuntimeError):
    """The blocking :class:`~upscale_stream.Client` was called from its own event-loop thread
    (for example from a callback running on it). Call it from another thread, or use
    :class:`~upscale_stream.UpscaleClient` with ``await`` there."""


class DuplicateTaskUUID(InvalidTask):
    """A task was submitted with the taskUUID of a task that is still live.

    Give every task its own taskUUID (leave ``task_uuid`` unset to get a random one).
    """

    def __init__(self, task_uuid: str) -> None:
        super().__init__(
            "a live task already has this taskUUID; give every task its own",
            parameter="taskUUID",
            value=task_uuid,
            code="conflictTaskUUID",
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (DuplicateTaskUUID, (self.value,))


class ConfigurationError(UpscaleError, ValueError):
    """A client option is unusable; the message names the option and the value."""


class MissingAPIKey(ConfigurationError):
    """No API key: pass ``api_key=...`` or set ``RUNWARE_API_KEY``."""


class InvalidURL(ConfigurationError):
    """The endpoint is not a ``ws://`` or ``wss://`` URL the client can connect to."""


class InvalidLimits(ConfigurationError):
    """A limit of the client (window, batch, frame size, retries) is out of range.

    Attributes:
        parameter: The option, such as ``max_in_flight``.
        value: The value given.
    """

    def __init__(self, reason: str, *, parameter: str, value: Any) -> None:
        self.parameter = parameter
        self.value = value
        self.reason = reason
        super().__init__(f"{parameter}={value!r}: {reason}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_limits, (self.reason, self.parameter, self.value))


def _rebuild_limits(reason: str, parameter: str, value: Any) -> InvalidLimits:
    return InvalidLimits(reason, parameter=parameter, value=value)


class ResultError(UpscaleError):
    """A task's answer cannot be used. ``task_uuid`` names the task."""

    def __init__(self, message: str, *, task_uuid: str | None = None) -> None:
        self.task_uuid = task_uuid
        super().__init__(message)

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (str(self),), {"task_uuid": self.task_uuid})


class InvalidResult(ResultError):
    """The server's result item is unreadable, or says ``success`` and carries no image.

    The task failed (it is not a success whose error surfaces later at ``save()``).
    """


class DownloadError(ResultError):
    """The output image could not be decoded (bad base64) or downloaded from its URL."""


class JobMismatch(UpscaleError):
    """An earlier run of the same job sent a *different* task under this taskUUID.

    The server's copy (``getTaskDetails``) has another ``inputImage`` or other options than
    this task: the job id was reused for other work, or the input key does not identify the
    input. The task fails instead of delivering someone else's result. Use a new job id
    (or keys that really identify each input).

    Attributes:
        task_uuid: The taskUUID both runs used.
        field: The first wire field that differs.
    """

    def __init__(self, message: str, *, task_uuid: str, field: str) -> None:
        self.task_uuid = task_uuid
        self.field = field
        super().__init__(message)

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_mismatch, (str(self), self.task_uuid, self.field))


def _rebuild_mismatch(message: str, task_uuid: str, field: str) -> JobMismatch:
    return JobMismatch(message, task_uuid=task_uuid, field=field)


class InternalError(UpscaleError):
    """An unexpected exception inside the client's core: the client closed itself.

    Every pending call fails with this one error, whose ``__cause__`` is the original
    exception; the client never goes on (or reconnects) with a half-updated core. This is a
    bug in upscale-stream: please report it with the traceback.
    """


AUTH_ERROR_CODES = frozenset(
    {
        "invalidApiKey",
        "missingApiKey",
        "authenticationFailed",
        "unauthorized",
        "forbidden",
        "tokenExpired",
        "accountSuspended",
        "authFailed",
    }
)
"""Server codes that mean the key itself is refused (protocol.md section 2)."""


def _invalid_code(parameter: str) -> str:
    """``outputQuality`` -> ``invalidOutputQuality``; ``settings.seed`` -> ``invalidSeed``."""
    leaf = parameter.rsplit(".", 1)[-1] or "Request"
    return "invalid" + leaf[:1].upper() + leaf[1:]


def _short_repr(value: Any, limit: int = 80) -> str:
    text = repr(value)
    if len(text) > limit:
        return f"{text[: limit - 20]}...<{len(text)} chars>"
    return text
