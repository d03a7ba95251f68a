"""The pure policies: the retryable-code table, task retry delays, the AIMD window, reconnects."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosedError, InvalidStatus, InvalidURI
from websockets.http11 import Response

from upscale_stream import Retry, TaskRetry
from upscale_stream.errors import (
    AuthenticationError,
    ConnectionLost,
    InvalidURL,
    MissingAPIKey,
    UpscaleTimeout,
)
from upscale_stream.policy import (
    RETRYABLE_CODES,
    ReconnectBackoff,
    Window,
    is_retryable_code,
    process_exception,
    task_retry_delay,
)


def invalid_status(status: int) -> InvalidStatus:
    return InvalidStatus(Response(status, "refused", Headers()))


def translated(cause: BaseException) -> ConnectionLost:
    """What the shell raises for a failed connect: ConnectionLost from the real cause."""
    error = ConnectionLost(f"could not connect: {cause}")
    error.__cause__ = cause
    return error


# -- the table ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "code",
    [
        "timeoutProvider",
        "internalServerError",
        "serviceUnavailable",
        "noAvailableServer",
        "modelUnavailable",
        "inferenceError",
        "rateLimitExceeded",
        "inferenceRateLimitExceeded",
        "providerRateLimitExceeded",
        "inferenceTimeout",  # any *Timeout* code
    ],
)
def test_transient_codes_are_retryable(code: str) -> None:
    assert is_retryable_code(code)


@pytest.mark.parametrize(
    "code",
    [
        "invalidUpscaleFactor",
        "missingInputImage",
        "invalidApiKey",
        "insufficientCredits",
        "contentPolicyViolation",
        "nsfwContentDetected",
        "conflictTaskUUID",
        "taskFailedOrNotFound",
        "processingFailed",
        "unknownError",
    ],
)
def test_validation_auth_policy_and_unknown_codes_are_final(code: str) -> None:
    assert not is_retryable_code(code)


def test_every_code_of_the_table_says_why_it_is_retried() -> None:
    assert all(len(reason) > 20 for reason in RETRYABLE_CODES.values())


# -- task retry delays ---------------------------------------------------------------------------


def test_delays_grow_with_jitter_and_end_after_max_attempts() -> None:
    retry = TaskRetry(max_attempts=4, initial=0.1, factor=2.0, max_delay=0.3, jitter=0.5)
    rng = random.Random(1)
    delays = [task_retry_delay(retry, n, 0, "timeoutProvider", rng) for n in (1, 2, 3, 4)]
    first, second, third, last = delays
    assert first is not None and 0.05 <= first <= 0.1
    assert second is not None and 0.1 <= second <= 0.2
    assert third is not None and 0.15 <= third <= 0.3  # capped
    assert last is None


def test_never_retries_nothing_not_even_a_rate_limit() -> None:
    rng = random.Random(1)
    assert task_retry_delay(TaskRetry.NEVER, 1, 0, "timeoutProvider", rng) is None
    assert task_retry_delay(TaskRetry.NEVER, 1, 1, "rateLimitExceeded", rng) is None


def test_rate_limit_answers_have_their_own_budget() -> None:
    retry = TaskRetry(max_attempts=2, max_rate_limited=5)
    rng = random.Random(1)
    # Four rate-limit answers do not use up the two attempts kept for real failures.
    assert task_retry_delay(retry, 5, 4, "rateLimitExceeded", rng) is not None
    assert task_retry_delay(retry, 6, 5, "rateLimitExceeded", rng) is None
    assert task_retry_delay(retry, 6, 5, "timeoutProvider", rng) is not None
    assert task_retry_delay(retry, 7, 5, "timeoutProvider", rng) is None


def test_a_task_retry_group_with_no_attempts_is_refused() -> None:
    from upscale_stream import InvalidLimits

    with pytest.raises(InvalidLimits, match="max_attempts"):
        TaskRetry(max_attempts=0)


# -- the window ----------------------------------------------------------------------------------


def test_window_halves_once_per_round_trip_and_grows_back_additively() -> None:
    window = Window(100)
    assert window.size == 100
    assert window.on_rate_limited(sent_seq=40, sent_total=100)
    assert window.size == 50
    # More refusals of tasks sent before the decrease: the same round trip.
    assert not window.on_rate_limited(sent_seq=99, sent_total=120)
    assert not window.on_rate_limited(sent_seq=100, sent_total=130)
    assert window.size == 50
    # A task sent after the decrease and refused again: a new round, a new decrease.
    assert window.on_rate_limited(sent_seq=101, sent_total=140)
    assert window.size == 25
    for _ in range(26):  # one window of successes adds about one slot
        window.on_success()
    assert window.size == 26
    for _ in range(10_000):
        window.on_success()
    assert window.size == 100  # never above the maximum


@settings(deadline=None)  # a loaded shared box must not fail a test about bounds
@given(st.lists(st.tuples(st.booleans(), st.integers(0, 1000)), max_size=300))
def test_window_stays_between_its_bounds(steps: list[tuple[bool, int]]) -> None:
    window = Window(64, minimum=1)
    for sent, (limited, seq) in enumerate(steps, start=1):
        if limited:
            window.on_rate_limited(min(seq, sent), sent)
        else:
            window.on_success()
        assert 1 <= window.size <= 64


# -- reconnects -----------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504, 599])
def test_busy_or_failing_servers_are_retried(status: int) -> None:
    assert process_exception(translated(invalid_status(status))) is None


@pytest.mark.parametrize("status", [400, 401, 403, 404, 410])
def test_refusals_and_wrong_urls_are_final(status: int) -> None:
    error = translated(invalid_status(status))
    assert process_exception(error) is error


def test_network_errors_timeouts_and_abnormal_closes_are_retried() -> None:
    assert process_exception(translated(ConnectionRefusedError())) is None
    assert process_exception(translated(OSError("unreachable"))) is None
    timeout = UpscaleTimeout("connect", seconds=1)
    timeout.__cause__ = TimeoutError()
    assert process_exception(timeout) is None
    assert process_exception(translated(ConnectionClosedError(None, None))) is None


def test_a_rejected_key_a_bad_url_and_configuration_errors_are_final() -> None:
    for error in (
        AuthenticationError("invalidApiKey", "no"),
        InvalidURL("url='x'"),
        MissingAPIKey("no key"),
        InvalidURI("ws://", "bad"),
    ):
        assert process_exception(error) is error


def test_an_unexpected_exception_is_never_retried() -> None:
    bug = RuntimeError("a bug")
    assert process_exception(bug) is bug


def test_backoff_grows_until_a_healthy_connection_resets_it() -> None:
    backoff = ReconnectBackoff(Retry(initial=0.1, factor=2.0, max_delay=10.0), random.Random(3))
    delays = [backoff.next_delay() for _ in range(6)]
    assert delays[0] <= 0.1
    assert delays[-1] > 0.5  # about 0.05 * 2**5, +-25 %
    assert backoff.failures == 6
    backoff.healthy()
    assert backoff.failures == 0
    assert backoff.next_delay() <= 0.1


def test_max_attempts_counts_consecutive_failures() -> None:
    backoff = ReconnectBackoff(Retry(max_attempts=2), random.Random(3))
    backoff.next_delay()
    backoff.next_delay()
    assert not backoff.exhausted()
    backoff.next_delay()
    assert backoff.exhausted()
    backoff.healthy()
    backoff.next_delay()
    assert not backoff.exhausted()
