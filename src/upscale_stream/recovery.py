"""The client core's rules for tasks that failed or that an earlier run already sent.

:class:`RecoveryRules` is a mixin of :class:`~upscale_stream.protocol.ClientSession` (it keeps
one state machine; this module only keeps its recovery half readable). It decides, with the
pure policies of :mod:`upscale_stream.policy`:

* an error answer: retry (after a delay, under the next attempt's taskUUID when the server
  proved the old one did not run and the task belongs to no job; else under the same) or
  fail;
* a ``conflictTaskUUID`` that the core can explain (a resend, or a task of a job that an
  earlier process sent): recover the result with ``getResponse`` or ``getTaskDetails``;
* a ``getTaskDetails`` reply: check the echoed request against ours (a difference is a
  :class:`~upscale_stream.errors.JobMismatch`), then deliver the echoed response;
* a poll answered "not found" for a task of a job: go on under the next attempt's taskUUID.

Why none of this can run a task twice is written down in docs/jobs.md and in the docstring of
:mod:`upscale_stream.protocol`.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Any

import orjson

from . import wire
from .errors import APIError, InvalidResult, JobMismatch, UpscaleError
from .events import Event, TaskRetrying
from .jobs import attempt_task_uuid
from .models import ErrorItem
from .policy import is_not_found, is_rate_limit, is_retryable_code, task_retry_delay
from .records import Schedule, SessionSettings, TaskRecord, TaskState

__all__ = ["POLL_TYPES", "CoreState", "RecoveryRules", "first_difference", "task_error"]


class CoreState:
    """The state ``ClientSession`` owns that its mixins (:class:`RecoveryRules`,
    :class:`~upscale_stream.receiving.ReceiveRules`) share: declared for the type checker,
    set by ``ClientSession.__init__``."""

    _settings: SessionSettings
    deadline_version: int
    _tasks: dict[str, TaskRecord]
    _renamed: dict[str, TaskRecord]
    _queue: deque[TaskRecord]
    _polls: Schedule
    _retries: Schedule
    _events: list[Event]
    _on_wire: int


class RecoveryRules(CoreState):
    """The recovery half of the core; mixed into ``ClientSession``, which owns the state."""

    if TYPE_CHECKING:  # ClientSession's and ReceiveRules' (no stubs: they would shadow them)

        def _fail(self, task: TaskRecord, error: UpscaleError) -> None: ...

        def _schedule_poll(self, task: TaskRecord, when: float) -> None: ...

        def _receive_item(self, item: Any, now: float) -> None: ...

    def _recover(self, task: TaskRecord, now: float, *, details: bool) -> None:
        if task.state is TaskState.IN_FLIGHT:
            self._on_wire -= 1
        task.state = TaskState.RECOVERING
        task.details = details
        task.poll_delay = 0.0
        self._schedule_poll(task, now)

    def _poll_failed(self, task: TaskRecord, error: APIError, now: float) -> None:
        """A ``getResponse`` / ``getTaskDetails`` poll was answered with an error.

        The error is about the poll, not the task: it never gives the task a new taskUUID,
        except "not found" for a task of a job (the server forgot that attempt; the next
        attempt's taskUUID is either unknown, or known and recovered the same way).
        """
        if is_not_found(error.code) and task.job is not None:
            self._stop_polling(task)
            old = task.uuid
            self._rename(task, attempt_task_uuid(task.job, task.attempts, self._settings.new_uuid))
            task.attempts += 1
            task.state = TaskState.QUEUED
            self._queue.append(task)
            self._events.append(
                TaskRetrying(
                    task.key, old, task.uuid, task.attempts, 0.0, error, False, task.sent_seq
                )
            )
        elif not is_retryable_code(error.code):
            self._fail(task, error)
        # else: a transient refusal of the poll; the next poll is already scheduled

    def _receive_details(self, task: TaskRecord, item: dict[str, Any], now: float) -> None:
        """The ``getTaskDetails`` reply for a task of a job that an earlier process sent."""
        request = item.get("request")
        echoed = request[0] if isinstance(request, list) and request else None
        if not isinstance(echoed, dict):
            self._fail(task, InvalidResult(f"task {task.uuid}: getTaskDetails sent no request"))
            return
        field = first_difference(orjson.loads(task.payload), echoed)
        if field is not None:
            message = (
                f"task {task.uuid}: an earlier run of this job sent other work under this "
                f"taskUUID ({field} differs); use a new job id or keys that identify each input"
            )
            self._fail(task, JobMismatch(message, task_uuid=task.uuid, field=field))
            return
        response = item.get("response")
        if not isinstance(response, dict):
            return  # still running: the next poll is scheduled already
        data, errors = response.get("data"), response.get("errors")
        if isinstance(data, list) and data and isinstance(data[0], dict):
            self._stop_polling(task)
            if data[0].get("taskUUID") != task.uuid:
                self._fail(
                    task,
                    InvalidResult(
                        f"task {task.uuid}: getTaskDetails echoed an answer for another taskUUID"
                    ),
                )
                return
            self._receive_item(data[0], now)  # the original answer, as if it came now
        elif isinstance(errors, list) and errors and isinstance(errors[0], dict):
            self._stop_polling(task)
            error = task_error(ErrorItem.from_wire(errors[0]), task.uuid)
            self._retry_or_fail(task, error, now, known_failed=True)
        else:
            self._fail(task, InvalidResult(f"task {task.uuid}: getTaskDetails sent no answer"))

    def _stop_polling(self, task: TaskRecord) -> None:
        if task.poll_at:
            self._polls.discard(task.key, task.poll_at)
            task.poll_at = 0.0
        task.details = False

    def _rename(self, task: TaskRecord, new: str) -> None:
        """Give a task its next attempt's taskUUID (the key stays)."""
        old = task.uuid
        if old is not task.key:
            self._renamed.pop(old, None)
        task.payload = task.payload.replace(old.encode(), new.encode(), 1)
        task.uuid = new
        task.resent = False
        self._renamed[new] = task

    def _retry_or_fail(
        self, task: TaskRecord, error: APIError, now: float, *, known_failed: bool = False
    ) -> None:
        """A task answered with an error: retry it under its next taskUUID, or fail it.

        Rate-limit answers are flow control, not failures: they have their own budget
        (``task_retry.max_rate_limited``) and do not use up ``max_attempts``.
        ``known_failed``: the server's record of the taskUUID says it failed (a polled
        status, an echoed response), so a new taskUUID is safe even after a resend.
        """
        rate_limited = is_rate_limit(error.code)
        if rate_limited:
            task.rate_limited += 1
        delay = task_retry_delay(
            self._settings.task_retry,
            task.attempts,
            task.rate_limited,
            error.code,
            self._settings.rng,
        )
        if delay is None:
            self._fail(task, error)
            return
        if task.deadline is not None and now + delay >= task.deadline:
            self._fail(task, error)  # the retry could not finish in time anyway
            return
        old = task.uuid
        if (task.resent or task.job is not None) and not known_failed:
            # This taskUUID went out more than once: the error may answer the resend while
            # the first send runs (or ran). Only the same taskUUID is safe then; a server
            # that has it answers conflictTaskUUID and the core recovers the result.
            # A job task keeps its taskUUID too: a server that refused it (rate limit,
            # transient error) may keep no record of the refusal, so a later process of the
            # job, starting again from attempt 0, would run the input a second time if this
            # one had moved on to attempt 1. The next attempt's taskUUID is used only once
            # the server's own record says this one failed (``known_failed``).
            new = old
            task.resent = True  # a conflict on it now means "the server has it": recover
        else:
            new = attempt_task_uuid(task.job, task.attempts, self._settings.new_uuid)
            if new in self._tasks or new in self._renamed:
                self._fail(task, error)  # cannot happen with random or derived UUIDs
                return
        if task.state is TaskState.IN_FLIGHT:
            self._on_wire -= 1
        self._stop_polling(task)
        if new is not old:
            self._rename(task, new)
        task.attempts += 1
        task.state = TaskState.RETRY_WAIT
        task.retry_at = now + delay
        self._retries.add(task.key, task.retry_at)
        self.deadline_version += 1
        self._events.append(
            TaskRetrying(
                task.key,
                old,
                new,
                task.attempts,
                delay,
                error,
                rate_limited,
                task.sent_seq,
            )
        )


POLL_TYPES = frozenset({wire.GET_RESPONSE, wire.GET_TASK_DETAILS})
_MISSING = object()


def first_difference(ours: dict[str, Any], echoed: dict[str, Any]) -> str | None:
    """The first wire field (besides taskUUID) where the echoed request differs from ours.

    A server may elide long strings in what it keeps (the reference server keeps
    ``"<N characters not kept>"`` for an inline image): such a marker matches a string of
    that length, the most that can be checked then.
    """
    for key in sorted(ours.keys() | echoed.keys()):
        if key == "taskUUID":
            continue
        mine, theirs = ours.get(key, _MISSING), echoed.get(key, _MISSING)
        if mine == theirs:
            continue
        if isinstance(mine, str) and theirs == f"<{len(mine)} characters not kept>":
            continue
        return key
    return None


def task_error(error: ErrorItem, task_uuid: str) -> APIError:
    """The exception for an error item about ``task_uuid`` (auth codes become
    :class:`~upscale_stream.errors.AuthenticationError`)."""
    from .errors import AUTH_ERROR_CODES, AuthenticationError

    exc = error.to_exception()
    if exc.task_uuid is None:
        exc.task_uuid = task_uuid
    if exc.code in AUTH_ERROR_CODES:
        return AuthenticationError(
            exc.code,
            exc.message,
            parameter=exc.parameter,
            task_uuid=exc.task_uuid,
            task_type=exc.task_type,
            documentation=exc.documentation,
        )
    return exc
