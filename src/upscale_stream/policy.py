"""Pure policies of the client: what is retried, when, and how wide the in-flight window is.

Nothing here does I/O, reads a clock or draws randomness of its own: times and random numbers
come in as arguments, decisions go out as return values. The core
(:mod:`upscale_stream.protocol`) asks :func:`task_retry_delay` whether a failed task goes
again; the shell (:mod:`upscale_stream.connection`) owns one :class:`Window` and asks
:func:`process_exception` and :class:`ReconnectBackoff` what to do after a connection failed.

* :data:`RETRYABLE_CODES`: the one table of server error codes that are retried, each with the
  reason (protocol.md section 4). Everything else is final.
* :class:`Window`: AIMD (additive increase, multiplicative decrease, as TCP's congestion
  window): a rate-limit answer halves the window, at most once per round trip; every success
  grows it by ``1/window`` (one slot per window of successes) back up to ``max_in_flight``.
* :func:`process_exception`: websockets' ``process_exception`` rule for reconnects: an
  allow-list of transient failures; everything else is final.
* :class:`ReconnectBackoff`: exponential delays with jitter that start again only after a
  connection proved healthy, and count consecutive failures for ``max_attempts``.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterator, Mapping

from websockets.exceptions import (
    ConnectionClosed,
    InvalidHandshake,
    InvalidStatus,
    InvalidURI,
)

from .config import Retry, TaskRetry
from .errors import (
    AuthenticationError,
    ConfigurationError,
    ConnectionLost,
    UpscaleTimeout,
)

__all__ = [
    "FINAL_HTTP_STATUSES",
    "RATE_LIMIT_CODES",
    "RETRYABLE_CODES",
    "RETRYABLE_HTTP_STATUSES",
    "ReconnectBackoff",
    "Window",
    "backoff",
    "backoff_delay",
    "is_not_found",
    "is_rate_limit",
    "is_retryable_code",
    "process_exception",
    "task_retry_delay",
]

RATE_LIMIT_CODES = frozenset(
    {"rateLimitExceeded", "inferenceRateLimitExceeded", "providerRateLimitExceeded"}
)
"""Codes that say "too many at once": retried, and they shrink the window."""

RETRYABLE_CODES: Mapping[str, str] = {
    "rateLimitExceeded": (
        "the account sent more than it may at once; the task did not run. Retried after a "
        "delay, holding its window slot, and the window shrinks"
    ),
    "inferenceRateLimitExceeded": "as rateLimitExceeded, for inference capacity",
    "providerRateLimitExceeded": "as rateLimitExceeded, at the model's provider",
    "timeoutProvider": (
        "the provider did not answer in time; nothing was delivered, a new try usually works"
    ),
    "internalServerError": "a server fault unrelated to the task's content",
    "serviceUnavailable": "the service is overloaded or restarting (HTTP 503 in spirit)",
    "noAvailableServer": "no inference worker was free; capacity comes back",
    "modelUnavailable": (
        "the model is loading or its workers are busy; it comes back (a model that does not "
        "exist is invalidModel, which is final)"
    ),
    "inferenceError": (
        "the worker failed while running; on Runware this is mostly worker-side (OOM, "
        "preemption). Retried a bounded number of times, since a bad input fails the same "
        "way every time and then ends as this error"
    ),
}
"""The one table of retryable server codes, with the reason for each (protocol.md section 4).

Any other code containing ``Timeout`` (``timeoutProvider``, ``inferenceTimeout``...) is
retried too: a timeout says the work did not finish, not that the request was wrong.

Deliberately final: validation codes (``invalid*``, ``missing*``, ``unsupportedParameter``...;
the same request fails again), authentication and quota (``invalidApiKey``,
``insufficientCredits``: a retry cannot fix them), content policy (``contentPolicyViolation``,
``nsfwContentDetected``: the same image is refused again), ``conflictTaskUUID`` (handled by the
core's recovery, never by a blind retry), not-found codes (``taskFailedOrNotFound``),
``processingFailed`` / ``taskFailed`` / ``downloadFailed`` / ``uploadFailed`` (they name the
task's own input or destination), and ``taskCancelled``.
"""

_TIMEOUT_CODE = re.compile(r"timeout", re.IGNORECASE)


def is_retryable_code(code: str) -> bool:
    """Whether a task answered with ``code`` may go again (see :data:`RETRYABLE_CODES`)."""
    return code in RETRYABLE_CODES or _TIMEOUT_CODE.search(code) is not None


def is_not_found(code: str) -> bool:
    """Whether ``code`` says the server does not know (or no longer has) a taskUUID."""
    return code == "taskFailedOrNotFound" or code.endswith(("NotFound", "Expired"))


def is_rate_limit(code: str) -> bool:
    """Whether ``code`` is a rate-limit answer (it also shrinks the window)."""
    return code in RATE_LIMIT_CODES


def backoff_delay(retry: TaskRetry, retries: int, rng: random.Random) -> float:
    """The delay before retry number ``retries`` (1 for the first), with jitter."""
    delay = min(retry.initial * retry.factor ** (retries - 1), retry.max_delay)
    return delay * (1.0 - retry.jitter * rng.random())


def task_retry_delay(
    retry: TaskRetry, attempts: int, rate_limited: int, code: str, rng: random.Random
) -> float | None:
    """The delay before the next try of a task that failed with ``code``, or ``None`` (final).

    Rate-limit answers are flow control, not failures: they have their own budget
    (``retry.max_rate_limited``) and do not use up ``retry.max_attempts``; their delay stops
    growing after the third. :attr:`TaskRetry.NEVER` retries nothing, not even those.

    Args:
        retry: The task-retry settings.
        attempts: Tries made so far, the failed one included (1 after the first try).
        rate_limited: How many of those tries were answered with a rate-limit code.
        code: The server's error code for the failed try.
        rng: Randomness for the jitter.
    """
    if retry.max_attempts <= 1 or not is_retryable_code(code):
        return None
    if code in RATE_LIMIT_CODES:
        if rate_limited >= retry.max_rate_limited:
            return None
        return backoff_delay(retry, min(rate_limited, 3), rng)
    failures = attempts - rate_limited
    if failures >= retry.max_attempts:
        return None
    return backoff_delay(retry, failures, rng)


class Window:
    """The adaptive in-flight window (AIMD), as numbers only; :class:`Connection` owns one.

    ``limit`` is how many tasks may be live at once. It starts at ``maximum``. A rate-limit
    answer halves it (never below ``minimum``), but only for a task sent after the last
    decrease: answers to tasks that were already on the wire then belong to the same round
    trip, and one round trip shrinks the window once (TCP's recovery point). Every success
    adds ``1/limit``, so the window grows by about one slot per window of successes.

    Args:
        maximum: ``limits.max_in_flight``.
        minimum: The smallest window.
        decrease: The factor applied on a rate-limit answer.
    """

    __slots__ = ("_recovery_point", "decrease", "limit", "maximum", "minimum", "shrinks")

    def __init__(self, maximum: int, *, minimum: int = 1, decrease: float = 0.5) -> None:
        self.maximum = maximum
        self.minimum = min(minimum, maximum)
        self.decrease = decrease
        self.limit = float(maximum)
        self.shrinks = 0
        self._recovery_point = -1

    @property
    def size(self) -> int:
        """The current window in whole slots."""
        return int(self.limit)

    def on_success(self) -> None:
        """A task finished: grow additively toward ``maximum``."""
        limit = self.limit
        if limit < self.maximum:
            limit += 1.0 / limit
            self.limit = limit if limit < self.maximum else float(self.maximum)

    def on_rate_limited(self, sent_seq: int, sent_total: int) -> bool:
        """A task was refused with a rate-limit code; returns whether the window shrank.

        Args:
            sent_seq: The refused task's send sequence number (the core's count of tasks sent
                when it went out).
            sent_total: Tasks sent so far; tasks sent after this decrease start a new round.
        """
        if sent_seq <= self._recovery_point:
            return False  # same round trip as the last decrease
        self._recovery_point = sent_total
        self.limit = max(float(self.minimum), self.limit * self.decrease)
        self.shrinks += 1
        return True


# -- reconnecting --------------------------------------------------------------------------------

RETRYABLE_HTTP_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
"""Handshake statuses that are retried: the server is busy or restarting."""

FINAL_HTTP_STATUSES = frozenset({401, 403, 404})
"""Handshake statuses that are final: a refused key or a wrong URL does not heal."""


def process_exception(exc: BaseException) -> BaseException | None:
    """Decide about one failed connection attempt, as websockets' ``process_exception`` does.

    Returns ``None`` when the failure is transient (reconnect), or the exception to raise
    (give up). The allow-list: network errors (``OSError``, timeouts), HTTP 408, 429 and 5xx
    on the upgrade, handshakes that broke half-way, closes other than a refusal, and our own
    :class:`~upscale_stream.errors.ConnectionLost`. Final: a rejected key
    (:class:`~upscale_stream.errors.AuthenticationError`), HTTP 401/403/404 and every other 4xx,
    a bad URI, a configuration error, and anything unexpected (a bug is not retried).

    The exception may be a translated one: its ``__cause__`` is checked first, so the rule
    sees what really happened.
    """
    cause = exc.__cause__ if isinstance(exc, ConnectionLost | UpscaleTimeout) else None
    if isinstance(exc, AuthenticationError | ConfigurationError | InvalidURI):
        return exc
    seen = cause if cause is not None else exc
    if isinstance(seen, InvalidStatus):
        status = seen.response.status_code
        if status in RETRYABLE_HTTP_STATUSES or 500 <= status < 600:
            return None
        return exc
    if isinstance(seen, InvalidURI):
        return exc
    if isinstance(seen, OSError | TimeoutError | ConnectionClosed | InvalidHandshake):
        return None
    if isinstance(exc, ConnectionLost | UpscaleTimeout):
        return None
    return exc


def backoff(rng: random.Random, retry: Retry) -> Iterator[float]:
    """Reconnect delays: a random first delay, then growing by ``retry.factor`` to a cap.

    Each delay after the first carries +-25 % jitter so that many clients do not reconnect in
    step. The caller restarts the generator after a successful authentication.
    """
    delay = rng.uniform(0, retry.initial)
    yield delay
    delay = max(delay, retry.initial / 2)
    while True:
        delay = min(delay * retry.factor, retry.max_delay)
        yield min(retry.max_delay, delay * rng.uniform(0.75, 1.25))


class ReconnectBackoff:
    """Reconnect delays that reset only after a healthy connection.

    Call :meth:`next_delay` before each attempt and :meth:`healthy` when a connection proved
    itself (a pong or a result at least ``retry.healthy_after`` after it authenticated). A
    connection that authenticates and then drops counts as a failure: the delays keep
    growing and ``max_attempts`` keeps counting.

    Args:
        retry: The reconnect settings.
        rng: Randomness for the jitter.
    """

    __slots__ = ("_delay", "_retry", "_rng", "failures")

    def __init__(self, retry: Retry, rng: random.Random) -> None:
        self._retry = retry
        self._rng = rng
        self._delay: float | None = None
        self.failures = 0

    def healthy(self) -> None:
        """The current connection works: the next failure starts from a short delay again."""
        self._delay = None
        self.failures = 0

    def exhausted(self) -> bool:
        """Whether ``max_attempts`` consecutive failures happened (call after a failure)."""
        limit = self._retry.max_attempts
        return limit is not None and self.failures > limit

    def next_delay(self) -> float:
        """Count one more failure and return the delay before the next attempt.

        A random first delay (up to ``retry.initial``), then growing by ``retry.factor`` to
        ``retry.max_delay`` with +-25 % jitter, so that many clients do not come back in step.
        """
        self.failures += 1
        retry = self._retry
        if self._delay is None:
            self._delay = max(retry.initial / 2, 1e-3)
            return self._rng.uniform(0, retry.initial)
        self._delay = min(self._delay * retry.factor, retry.max_delay)
        return min(retry.max_delay, self._delay * self._rng.uniform(0.75, 1.25))
