"""The client core's general receive path: every frame that is not a plain array of results.

:class:`ReceiveRules` is a mixin of :class:`~upscale_stream.protocol.ClientSession` (it keeps
one state machine; this module only keeps its reading half apart, as
:mod:`upscale_stream.recovery` keeps its recovery half). ``ClientSession.receive_text`` reads
the usual frame, ``{"data": [...]}`` of finished sync results of live tasks, itself, typed in
one C call; anything else comes here from where the usual reading stopped:

* a frame parsed as JSON: ``errors`` items, ``data`` items, the legacy ``{"error": ...}``
  shapes, and a malformed frame reported as :class:`~upscale_stream.events.MalformedMessage`;
* a data item of a live task (matched by its current attempt's taskUUID): a result, a failure,
  an ACK of an async task (polling starts), a progress item;
* a data item of no live task: the authentication reply (a new session or a resumed one), a
  pong, a late answer (:class:`~upscale_stream.events.Discarded`);
* an error item: a rejected key, a ``conflictTaskUUID`` explained by a resend or a job, a
  failed poll, a task error for :mod:`upscale_stream.recovery` to retry or fail.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson

from . import wire
from .config import Polling, Retry
from .errors import AUTH_ERROR_CODES, APIError, AuthenticationError, InvalidResult, UpscaleError
from .events import (
    Authenticated,
    AuthRejected,
    Discarded,
    MalformedMessage,
    Pong,
    StrayError,
    TaskAccepted,
    TaskResult,
)
from .models import ErrorItem
from .records import Phase, TaskRecord, TaskState
from .recovery import POLL_TYPES, CoreState, task_error
from .results import decode_result

__all__ = ["ReceiveRules"]


class ReceiveRules(CoreState):
    """The general receive path of the core; mixed into ``ClientSession``, which owns the
    state."""

    # More of ClientSession's state (declared here for the type checker).
    phase: Phase
    session_id: str | None
    fetched_count: int
    replayed_count: int
    _auth_deadline: float | None
    _replay_deadline: float | None
    _last_received: float
    _ping_sent_at: float | None

    if TYPE_CHECKING:  # ClientSession's and RecoveryRules' (no stubs: they would shadow them)

        @property
        def retry(self) -> Retry: ...

        @property
        def polling(self) -> Polling: ...

        def _requeue_awaiting(self) -> None: ...

        def _schedule_poll(self, task: TaskRecord, when: float) -> None: ...

        def _forget(self, task: TaskRecord) -> None: ...

        def _fail(self, task: TaskRecord, error: UpscaleError) -> None: ...

        def _receive_details(self, task: TaskRecord, item: dict[str, Any], now: float) -> None: ...

        def _retry_or_fail(
            self, task: TaskRecord, error: APIError, now: float, *, known_failed: bool = False
        ) -> None: ...

        def _recover(self, task: TaskRecord, now: float, *, details: bool) -> None: ...

        def _poll_failed(self, task: TaskRecord, error: APIError, now: float) -> None: ...

    def _receive_json(self, text: str | bytes, now: float, start: int) -> None:
        """Read a frame as JSON, its ``data`` items from ``start`` on (the general path)."""
        try:
            message = orjson.loads(text)
        except orjson.JSONDecodeError:
            self._events.append(MalformedMessage("not JSON", _sample(text)))
            return
        if start:  # decode_plain_frame read it: a {"data": [...]} frame and nothing else
            for item in message["data"][start:]:
                self._receive_item(item, now)
            return
        if not isinstance(message, dict):
            self._events.append(MalformedMessage("not a JSON object", _sample(text)))
            return
        handled = False
        errors = message.get("errors")
        if isinstance(errors, list):
            handled = True
            for item in errors:
                self._receive_error(item, now)
        elif "error" in message:
            handled = True
            self._receive_legacy_error(message)
        data = message.get("data")
        if isinstance(data, list):
            handled = True
            for item in data:
                self._receive_item(item, now)
        if not handled:
            self._events.append(MalformedMessage("no data or errors array", _sample(text)))

    def _lookup(self, task_uuid: Any) -> TaskRecord | None:
        """The live task whose *current* taskUUID this is (a stale attempt's is not)."""
        if not isinstance(task_uuid, str):
            return None
        task = self._tasks.get(task_uuid)
        if task is not None:
            return task if task.uuid is task_uuid or task.uuid == task_uuid else None
        return self._renamed.get(task_uuid) if self._renamed else None

    def _authenticated(self, session_id: str) -> None:
        resumed = session_id == self.session_id
        if self.session_id is not None and not resumed:
            # A new session: the server may have lost everything (a restart), polled tasks
            # included. Resend those too, under the same taskUUID; a server that still knows
            # one answers conflictTaskUUID and polling resumes (protocol.md section 2).
            for task in self._tasks.values():
                if task.state is TaskState.ACKNOWLEDGED or task.state is TaskState.RECOVERING:
                    if task.poll_at:
                        self._polls.discard(task.key, task.poll_at)
                        task.poll_at = 0.0
                    task.state = TaskState.AWAITING_REPLAY
        self.session_id = session_id
        self.phase = Phase.OPEN
        self._auth_deadline = None
        self.deadline_version += 1  # the heartbeat's deadline begins: it may be the earlier
        self._events.append(Authenticated(session_id, resumed))
        if any(t.state is TaskState.AWAITING_REPLAY for t in self._tasks.values()):
            if resumed:
                self._replay_deadline = self._last_received + self.retry.resume_grace
            else:
                self._requeue_awaiting()
        for task in self._tasks.values():  # go on polling right away on the new socket
            if task.poll_at:
                self._schedule_poll(task, self._last_received)

    def _receive_item(self, item: Any, now: float) -> None:
        if type(item) is not dict:
            self._events.append(MalformedMessage("data item is not an object", _sample(item)))
            return
        task_uuid = item.get("taskUUID")
        task = self._tasks.get(task_uuid) if type(task_uuid) is str else None
        if task is not None:
            if task.uuid is not task_uuid and task.uuid != task_uuid:
                task = None  # an answer to an earlier attempt of a retried task
        elif self._renamed:
            task = self._lookup(task_uuid)
        if task is None:
            self._receive_session_item(item, task_uuid, now)
            return
        if task.details and item.get("taskType") == wire.GET_TASK_DETAILS:
            self._receive_details(task, item, now)
            return
        status = item.get("status")
        if status == "error":
            # The server's record of this taskUUID says it failed: known not delivered, so a
            # retry may take a new taskUUID even if this one was sent twice.
            nested = item.get("error")
            error = ErrorItem.from_wire(nested if isinstance(nested, dict) else {})
            self._retry_or_fail(task, task_error(error, task.uuid), now, known_failed=True)
        elif (
            item.get("imageURL")
            or item.get("imageBase64Data")
            or item.get("imageDataURI")
            or item.get("mediaURL")
        ):  # a finished output (protocol.md section 5.3); checked once per task
            if task.state is not _IN_FLIGHT:
                self._count_late_result(task)
            try:
                result = decode_result(item)
            except Exception as exc:  # a result we cannot read fails its task only
                message = f"task {task.key}: unreadable result: {exc}"
                self._fail(task, InvalidResult(message, task_uuid=task.key))
            else:
                self._forget(task)
                self._events.append(TaskResult(task.key, result, task.submitted))
        elif status == "success":
            # "success" with no image is not a result: the caller would only find out at
            # save() time. It fails its task now.
            self._fail(
                task,
                InvalidResult(
                    f"task {task.uuid}: the server said success but sent no image "
                    "(no imageURL, imageBase64Data, imageDataURI or mediaURL)",
                    task_uuid=task.uuid,
                ),
            )
        elif task.state is TaskState.IN_FLIGHT and task.is_async:
            self._on_wire -= 1
            task.state = TaskState.ACKNOWLEDGED
            task.poll_delay = self.polling.initial
            self._schedule_poll(task, now + self.polling.initial)
            self._events.append(TaskAccepted(task.key))
        # Otherwise a progress item (status processing) or an ACK for a sync task: the
        # scheduled poll, or the server's push, will bring the result.

    def _count_late_result(self, task: TaskRecord) -> None:
        """For ``client.stats()``: a result that came by polling, or as a resumed replay."""
        state = task.state
        if state is TaskState.ACKNOWLEDGED or state is TaskState.RECOVERING:
            self.fetched_count += 1
        elif state is TaskState.AWAITING_REPLAY:
            self.replayed_count += 1

    def _receive_session_item(self, item: dict[str, Any], task_uuid: Any, now: float) -> None:
        task_type = item.get("taskType")
        if task_type == wire.PING and item.get("pong"):
            # Only a pong answers a ping: other traffic moves the idle deadline, but the pong
            # keeps its own (aiohttp's rule), so a server that stopped answering is found.
            sent, self._ping_sent_at = self._ping_sent_at, None
            self._events.append(Pong(now - sent if sent is not None else 0.0))
        elif task_type == wire.AUTH or (
            task_uuid is None and isinstance(item.get("connectionSessionUUID"), str)
        ):
            session_id = item.get("connectionSessionUUID")
            if self.phase is Phase.AUTHENTICATING and isinstance(session_id, str) and session_id:
                self._authenticated(session_id)
        elif isinstance(task_uuid, str):
            self._events.append(Discarded(task_uuid, "no live task with this taskUUID"))
        else:
            self._events.append(MalformedMessage("data item without taskUUID", _sample(item)))

    def _receive_error(self, raw: Any, now: float) -> None:
        if not isinstance(raw, dict):
            self._events.append(MalformedMessage("error item is not an object", _sample(raw)))
            return
        error = ErrorItem.from_wire(raw)
        task = self._lookup(error.task_uuid) if error.task_uuid else None
        if task is None:
            if error.task_uuid is None and (
                error.code in AUTH_ERROR_CODES or error.task_type == wire.AUTH
            ):
                self._reject(error)
            elif error.task_uuid is not None:
                self._events.append(Discarded(error.task_uuid, f"late error {error.code}"))
            else:
                self._events.append(StrayError(error))
            return
        if error.code == "conflictTaskUUID" and (task.resent or task.job is not None):
            # The server already has this task (protocol.md section 2): fetch, never rerun.
            # Resent by us: getResponse, as before. Sent once, with a job id: an earlier
            # process of the same job sent it; a sync task's result is only in
            # getTaskDetails (section 6), which also echoes what was sent, to be checked.
            self._recover(task, now, details=not task.resent and not task.is_async)
            return
        if error.task_type in POLL_TYPES and (
            task.state is TaskState.RECOVERING or task.state is TaskState.ACKNOWLEDGED
        ):
            self._poll_failed(task, task_error(error, task.uuid), now)
            return
        self._retry_or_fail(task, task_error(error, task.uuid), now)

    def _receive_legacy_error(self, message: dict[str, Any]) -> None:
        # {"error": true, "errorId": 19, "errorMessage": ...} (older docs), or a singular
        # {"error": {...}} object; both only matter for authentication (protocol.md section 2).
        body = message.get("error")
        raw = body if isinstance(body, dict) else message
        error = ErrorItem.from_wire(raw)
        if message.get("errorId") == 19 and error.code == "unknownError":
            error = error.model_copy(update={"code": "invalidApiKey"})
        if self.phase is Phase.AUTHENTICATING or error.code in AUTH_ERROR_CODES:
            self._reject(error)
        else:
            task = self._lookup(error.task_uuid) if error.task_uuid else None
            if task is not None:
                self._fail(task, task_error(error, task.uuid))
            else:
                self._events.append(StrayError(error))

    def _reject(self, error: ErrorItem) -> None:
        self._auth_deadline = None
        code = error.code if error.code != "unknownError" else "authenticationFailed"
        self._events.append(
            AuthRejected(
                AuthenticationError(
                    code,
                    error.message or "the server rejected the API key",
                    parameter="apiKey",
                    task_type=wire.AUTH,
                )
            )
        )


# Module constant: an enum attribute lookup costs ~90 ns.
_IN_FLIGHT = TaskState.IN_FLIGHT


def _sample(value: Any, limit: int = 120) -> str:
    text = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
    return text[:limit]
