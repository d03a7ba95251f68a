"""What the reference server does with each item of a frame: validate, admit, start, answer.

:class:`TaskHandlers` is called by the socket shell (:mod:`.client_socket`) with the decoded items
of one frame. It never blocks: the immediate replies to a frame (pongs, async ACKs, validation,
conflict and limit errors, ``getResponse`` answers) are queued on the socket the frame came on,
and the work of accepted tasks (:mod:`.task_work`) is spawned as asyncio tasks whose CPU-bound
parts run in the server's worker threads (:mod:`.worker`). A task's final answer (its result,
or the error it failed with) goes to its session through :meth:`.SessionRegistry.finish`, so it
is held for a resume if the socket is gone (see :mod:`.sessions`).

Task types (protocol.md sections 2, 3, 5 and 6):

* ``authentication``: :meth:`TaskHandlers.authenticate`, called by the shell for the first frame.
* ``ping``: a pong in a frame of its own, at once.
* ``upscale`` / ``imageUpscale``: normalised (``inputs.image`` -> ``inputImage``, pass-through
  fields dropped, ``2.0`` -> ``2``), model and factor checked by the registry
  (:mod:`.upscalers`), the rest validated with :class:`~upscale_stream.models.UpscaleTask`,
  de-duplicated by ``taskUUID``, then run. Input: a stored image UUID, an http(s) URL (this
  server's own image URLs are read from the store, not fetched), a data URI or bare base64.
  The answer echoes the request's ``taskType``.
* ``imageUpload``: stores the ``image`` (data URI, base64 or URL) and answers its UUID and URL.
* ``mediaStorage``: ``operation: "upload"`` stores ``media`` like ``imageUpload`` and answers
  ``mediaUUID``/``mediaURL``; ``operation: "delete"`` forgets ``mediaUUID``. Uploaded media are
  images here (PNG, JPEG, WEBP), usable as upscale inputs by UUID or URL.
* ``getResponse``: the task's state from the registry (see :meth:`.TaskRecord.poll_reply`).
* ``getTaskDetails``: the task's request as sent and the envelope that answered it
  (:meth:`.TaskRecord.details_reply`), for any task the registry still holds.

Everything a task leaves behind (its registry record, its stored images) belongs to the tenant
of the API key that sent it (see :mod:`.sessions`): polls, details, conflicts, inputs by UUID
or own URL and deletes only ever see the caller's own.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import os
import traceback
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import orjson

from ..errors import InvalidTask
from ..inputs import is_uuid
from ..log import get_logger
from ..models import UpscaleTask
from ..wire import AUTH, GET_RESPONSE, IMAGE_UPLOAD, PING, UPSCALE_TASK_TYPES
from .config import ServerConfig
from .faults import Faults
from .image_store import ImageStore
from .refusals import SCOPED_REFUSALS, bounded_uuid, error_item, scoped_error
from .sessions import Kind, Session, SessionRegistry, TaskCounts, TaskRecord, compact_json
from .status import StatusBoard
from .task_work import TaskWork
from .upscalers import check_upscale, normalise_upscale
from .worker import TaskFailure

__all__ = [
    "Host",
    "KeyAccepted",
    "KeyRejected",
    "Peer",
    "TaskHandlers",
    "error_item",
]

T = TypeVar("T")

GET_TASK_DETAILS = "getTaskDetails"
MEDIA_STORAGE = "mediaStorage"

log = get_logger(__name__)


class Peer(Protocol):
    """What the handlers need from the connection a frame arrived on."""

    session_id: str | None
    tenant: str | None
    in_flight: int

    def reply(self, kind: Kind, item: Mapping[str, Any]) -> None:
        """Queue an immediate reply on this socket (lost, not held, if the socket drops)."""

    def pong(self) -> None:
        """Queue a pong, sent alone in its frame ahead of everything else."""

    def refuse_unrouted(self, count: int, error: Mapping[str, Any]) -> None:
        """Count ``count`` refused items that get no answer of their own (the frame notice)."""


class Host(Protocol):
    """What the handlers need from the server."""

    config: ServerConfig
    faults: Faults
    registry: SessionRegistry
    images: ImageStore
    counts: TaskCounts
    status: StatusBoard

    @property
    def image_base_url(self) -> str:
        """Base of ``imageURL`` values, for example ``http://127.0.0.1:8765``."""

    async def run_in_worker(self, job: Callable[[], T]) -> T:
        """Run CPU-bound ``job`` in a worker thread."""

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run ``coro`` as a tracked background task."""

    def wake_session(self, session_id: str) -> None:
        """Tell the socket carrying this session (if any) that its outbox has answers."""

    def notify_progress(self) -> None:
        """Re-check the tests' wait conditions."""


@dataclass(frozen=True, slots=True)
class KeyAccepted:
    """The key was accepted. Then send the auth answer and attach ``session`` to the socket."""

    session: Session
    resumed: bool
    tenant: str


@dataclass(frozen=True, slots=True)
class KeyRejected:
    """The key was refused. Then send ``error`` in an ``errors`` frame and close the socket."""

    error: dict[str, Any]
    reason: str


class TaskHandlers:
    """Handles authentication and the items of every frame for one server.

    Args:
        host: The server: configuration, state, worker threads and task spawning.
    """

    def __init__(self, host: Host) -> None:
        self.host = host
        self._keys = tuple(key.encode() for key in host.config.api_keys)
        # Tenants are keyed digests of the API keys: stable for this process, never the key,
        # and not reversible without this secret (which never leaves memory).
        self._tenant_secret = os.urandom(32)
        self.work = TaskWork(host)

    def tenant_of(self, key: str) -> str:
        """The opaque tenant id of an API key (the owner of its sessions, tasks and images)."""
        return hmac.new(self._tenant_secret, key.encode(), hashlib.sha256).hexdigest()[:32]

    # -- authentication (protocol.md section 2) ----------------------------------------------

    def authenticate(self, item: Mapping[str, Any], now: float) -> KeyAccepted | KeyRejected:
        """Check the key of an ``authentication`` item and open or resume its session."""
        key = item.get("apiKey")
        if not isinstance(key, str) or not key:
            error = error_item(
                "missingApiKey", "apiKey is required", parameter="apiKey", task_type=AUTH
            )
            return KeyRejected(error, "missing key")
        if not self._key_accepted(key):
            error = error_item(
                "invalidApiKey", "Invalid API key", parameter="apiKey", task_type=AUTH
            )
            return KeyRejected(error, "invalid key")
        requested = item.get("connectionSessionUUID")
        tenant = self.tenant_of(key)
        session, resumed = self.host.registry.authenticate(
            requested if isinstance(requested, str) and requested else None,
            now,
            str(uuid.uuid4()),
            tenant,
        )
        self.host.counts.authentications += 1
        return KeyAccepted(session, resumed, tenant)

    def _key_accepted(self, key: str) -> bool:
        if self.host.config.accept_any_key:
            return True
        offered = key.encode()
        accepted = False
        for known in self._keys:  # no early exit: the time does not tell which key matched
            accepted |= hmac.compare_digest(offered, known)
        return accepted

    # -- one frame ---------------------------------------------------------------------------

    def dispatch(self, peer: Peer, items: list[Any], now: float) -> int:
        """Handle the items of one frame from an authenticated socket.

        At most ``max_tasks_per_frame`` items (of any kind) are handled; of the rest, the
        first :data:`~.refusals.SCOPED_REFUSALS` tasks get a scoped ``tooManyTasks`` error and
        the others are only counted in the frame's notice, so the work and the output one
        frame can cause are bounded whatever it holds.

        Returns:
            How many tasks the frame held (authentication, ping and polls do not count).
        """
        counted = 0
        limit = self.host.config.max_tasks_per_frame
        for index, item in enumerate(items):
            if index >= limit:
                counted += self._refuse_excess(peer, items, index, limit)
                break
            if not isinstance(item, dict):
                error = error_item(
                    "invalidRequest",
                    f"item {index} of the frame is a JSON {_json_type(item)}; "
                    "each task must be a JSON object",
                )
                peer.reply("errors", error)
                continue
            task_type = item.get("taskType")
            if task_type == PING:
                self._ping(peer)
                continue
            if task_type == GET_RESPONSE:
                self._get_response(peer, item, now)
                continue
            if task_type == GET_TASK_DETAILS:
                self._get_task_details(peer, item, now)
                continue
            if task_type == AUTH:
                self._already_authenticated(peer, item)
                continue
            counted += 1
            self.host.counts.count_received(bounded_uuid(item.get("taskUUID")))
            if task_type in UPSCALE_TASK_TYPES:
                self._submit_upscale(peer, item, now)
            elif task_type == IMAGE_UPLOAD:
                self._submit_upload(peer, item, now)
            elif task_type == MEDIA_STORAGE:
                self._submit_media(peer, item, now)
            elif task_type is None:
                message = f"taskType is required; supported: {_SUPPORTED}"
                peer.reply("errors", _task_error(item, "missingTaskType", message, "taskType"))
            else:
                message = f"taskType {_shown(task_type)} is not supported; supported: {_SUPPORTED}"
                error = _task_error(item, "unsupportedTaskType", message, "taskType")
                peer.reply("errors", error)
        return counted

    def _refuse_excess(self, peer: Peer, items: list[Any], start: int, limit: int) -> int:
        """Refuse ``items[start:]`` (over the per-frame limit); returns how many were tasks."""
        message = (
            f"a frame may hold at most {limit} items and this one holds {len(items)}; "
            "nothing past that was run: send the rest in another frame"
        )
        scoped = 0
        for item in items[start : start + SCOPED_REFUSALS]:
            if isinstance(item, dict) and bounded_uuid(item.get("taskUUID")) is not None:
                self.host.counts.count_received(item["taskUUID"])
                peer.reply("errors", _task_error(item, "tooManyTasks", message))
                scoped += 1
        peer.refuse_unrouted(len(items) - start - scoped, error_item("tooManyTasks", message))
        return scoped

    def _ping(self, peer: Peer) -> None:
        if self.host.faults.withhold_pongs:
            self.host.faults.fired["withhold_pongs"] += 1
            return
        peer.pong()

    def _already_authenticated(self, peer: Peer, item: Mapping[str, Any]) -> None:
        """A second ``authentication`` on an authenticated socket.

        The same key is answered with the socket's session (a no-op). Any other key, wrong or
        valid, is refused: the socket stays bound to the key it authenticated with, so a
        second key can neither be probed here nor take the socket over.
        """
        if peer.session_id is None:
            return
        key = item.get("apiKey")
        same = isinstance(key, str) and bool(key) and self._key_accepted(key)
        if same and isinstance(key, str) and self.tenant_of(key) == peer.tenant:
            peer.reply("data", {"taskType": AUTH, "connectionSessionUUID": peer.session_id})
            return
        if same:
            code, message = (
                "alreadyAuthenticated",
                "this connection is already authenticated with another API key; "
                "open a new connection to use this one",
            )
        else:
            code, message = "invalidApiKey", "Invalid API key"
        peer.reply("errors", error_item(code, message, parameter="apiKey", task_type=AUTH))

    def _get_response(self, peer: Peer, item: Mapping[str, Any], now: float) -> None:
        record = self._look_up(peer, item, now, GET_RESPONSE)
        if record is not None:
            peer.reply("data", record.poll_reply())

    def _get_task_details(self, peer: Peer, item: Mapping[str, Any], now: float) -> None:
        record = self._look_up(peer, item, now, GET_TASK_DETAILS)
        if record is not None:
            peer.reply("data", record.details_reply(GET_TASK_DETAILS))

    def _look_up(
        self, peer: Peer, item: Mapping[str, Any], now: float, task_type: str
    ) -> TaskRecord | None:
        """The peer's record named by a getResponse / getTaskDetails item, or ``None`` after
        answering the error (another key's record is "not found", as a missing one is)."""
        task_uuid = item.get("taskUUID")
        if bounded_uuid(task_uuid) is None or not isinstance(task_uuid, str):
            error = error_item(
                "missingTaskUUID",
                f"{task_type} needs the taskUUID of the task to look up",
                parameter="taskUUID",
                task_type=task_type,
            )
            peer.reply("errors", error)
            return None
        if task_type == GET_RESPONSE:
            self.host.counts.count_poll(task_uuid)
        record = self.host.registry.lookup(task_uuid, now, tenant=peer.tenant or "")
        if record is None:
            retention = self.host.config.retention
            message = f"no task {task_uuid} is known here (or it finished over {retention:g} s ago)"
            error = error_item(
                "taskFailedOrNotFound",
                message,
                parameter="taskUUID",
                task_type=task_type,
                task_uuid=task_uuid,
            )
            peer.reply("errors", error)
        return record

    def _admit(
        self, peer: Peer, item: Mapping[str, Any], task_uuid: str, delivery: str, now: float
    ) -> TaskRecord | None:
        """Apply the in-flight limit and de-duplication; answers the refusal itself."""
        task_type = str(item["taskType"])
        limit = self.host.config.max_in_flight
        if peer.in_flight >= limit:
            message = f"more than {limit} tasks in flight on this connection; wait for results"
            peer.reply("errors", _task_error(item, "tooManyTasks", message))
            return None
        session_id = peer.session_id or ""
        record = self.host.registry.register(
            task_uuid, task_type, session_id, delivery, now, request=_request_of(item)
        )
        if record is None:
            message = f"taskUUID {task_uuid} was already received; use a new UUID for a new task"
            error = _task_error(item, "conflictTaskUUID", message, parameter="taskUUID")
            peer.reply("errors", error)
        return record

    # -- upscale -----------------------------------------------------------------------------

    def _submit_upscale(self, peer: Peer, item: Mapping[str, Any], now: float) -> None:
        task_uuid = item.get("taskUUID")
        if bounded_uuid(task_uuid) is None or not isinstance(task_uuid, str):
            peer.reply("errors", _missing_uuid(item))
            return
        try:
            fields = normalise_upscale(item)
            model, factor = check_upscale(fields)
            # The registry decided the model and the factor (Clarity takes fractions, which
            # the client's model, bound to the seed's 2 | 4, does not); the rest of the task
            # is validated by the client's model, so client and server share those rules.
            task = UpscaleTask.from_wire({**fields, "upscaleFactor": 2})
        except InvalidTask as exc:
            error = _task_error(item, exc.code, _wire_message(exc), parameter=exc.parameter)
            log.info("task.invalid", task_uuid=task_uuid, code=exc.code, parameter=exc.parameter)
            peer.reply("errors", error)
            return
        refusal = self.host.faults.task_refusal(item, peer.in_flight)  # fault injection
        if refusal is not None:
            peer.reply("errors", _task_error(item, *refusal))
            return
        record = self._admit(peer, item, task_uuid, task.delivery_method, now)
        if record is None:
            return
        if task.delivery_method == "async":
            ack = {"taskType": record.task_type, "taskUUID": task_uuid}
            peer.reply("data", ack)
        via_inputs = isinstance(item.get("inputs"), dict) and "inputImage" not in item
        self._start(
            peer,
            record,
            task.webhook_url,
            lambda: self.work.upscale(task, model.air, factor, record, via_inputs),
        )

    # -- imageUpload and mediaStorage --------------------------------------------------------

    def _submit_upload(self, peer: Peer, item: Mapping[str, Any], now: float) -> None:
        task_uuid = item.get("taskUUID")
        if bounded_uuid(task_uuid) is None or not isinstance(task_uuid, str):
            peer.reply("errors", _missing_uuid(item))
            return
        image = item.get("image")
        if not isinstance(image, str) or not image:
            message = "image is required: a data URI, base64 text or an http(s) URL"
            error = _task_error(item, "missingImage", message, parameter="image")
            peer.reply("errors", error)
            return
        record = self._admit(peer, item, task_uuid, "sync", now)
        if record is not None:
            self._start(peer, record, None, lambda: self.work.upload(image, record, "image"))

    def _submit_media(self, peer: Peer, item: Mapping[str, Any], now: float) -> None:
        task_uuid = item.get("taskUUID")
        if bounded_uuid(task_uuid) is None or not isinstance(task_uuid, str):
            peer.reply("errors", _missing_uuid(item))
            return
        operation = item.get("operation")
        if operation == "upload":
            media = item.get("media")
            if not isinstance(media, str) or not media:
                message = "media is required for operation upload: a data URI, base64 or a URL"
                peer.reply("errors", _task_error(item, "missingMedia", message, parameter="media"))
                return
            upload = self._admit(peer, item, task_uuid, "sync", now)
            if upload is not None:
                self._start(peer, upload, None, lambda: self.work.upload(media, upload, "media"))
            return
        if operation == "delete":
            media_uuid = item.get("mediaUUID")
            if not isinstance(media_uuid, str) or not is_uuid(media_uuid):
                message = "mediaUUID is required for operation delete: the UUID of an upload"
                error = _task_error(item, "missingMediaUUID", message, parameter="mediaUUID")
                peer.reply("errors", error)
                return
            delete = self._admit(peer, item, task_uuid, "sync", now)
            if delete is not None:
                self._start(
                    peer, delete, None, lambda: self.work.delete(media_uuid.lower(), delete)
                )
            return
        message = f"operation must be 'upload' or 'delete', not {_shown(operation)}"
        peer.reply("errors", _task_error(item, "invalidOperation", message, parameter="operation"))

    # -- running a task ----------------------------------------------------------------------

    def _start(
        self,
        peer: Peer,
        record: TaskRecord,
        webhook_url: str | None,
        work: Callable[[], Awaitable[dict[str, Any]]],
    ) -> None:
        peer.in_flight += 1
        self.host.spawn(self._run(peer, record, webhook_url, work))

    async def _run(
        self,
        peer: Peer,
        record: TaskRecord,
        webhook_url: str | None,
        work: Callable[[], Awaitable[dict[str, Any]]],
    ) -> None:
        host = self.host
        try:
            host.counts.count_execution(record.task_uuid)
            host.notify_progress()
            if host.config.task_delay > 0:
                await asyncio.sleep(host.config.task_delay)
            failed = False
            try:
                answer = await work()
            except TaskFailure as exc:
                failed = True
                answer = _task_error(
                    _identity(record), exc.code, exc.message, parameter=exc.parameter
                )
                log.info(
                    "task.failed",
                    task_uuid=record.task_uuid,
                    code=exc.code,
                    parameter=exc.parameter,
                )
            except Exception as exc:
                failed = True
                answer = _task_error(
                    _identity(record), "internalServerError", "the server failed this task"
                )
                log.error(
                    "task.crashed",
                    task_uuid=record.task_uuid,
                    error=repr(exc),
                    traceback="".join(traceback.format_exception(exc)),
                )
            if host.faults.result_delay > 0:
                await asyncio.sleep(host.faults.result_delay)
        finally:
            peer.in_flight -= 1
        session = host.registry.finish(record, answer, failed=failed, now=host.config.clock())
        host.status.finished(record, answer, failed=failed)
        if session is not None:
            host.wake_session(session.session_id)
        host.notify_progress()
        if webhook_url is not None and answer.get("parameter") != "webhookURL":
            envelope = {"errors" if failed else "data": [answer]}
            host.spawn(self.work.post_webhook(webhook_url, envelope))


_SUPPORTED = ", ".join(
    ("upscale", "imageUpscale", IMAGE_UPLOAD, MEDIA_STORAGE, GET_RESPONSE, GET_TASK_DETAILS, PING)
)


_LONG_STRING = 4096
"""Request strings longer than this (inline images) are not kept for ``getTaskDetails``."""


def _request_of(item: Mapping[str, Any]) -> bytes:
    """The task object as received, JSON-encoded, for ``getTaskDetails``.

    Kept as sent, except that a string value longer than :data:`_LONG_STRING` characters (an
    inline image, typically megabytes) is replaced by a short marker naming its length: a
    record lives for ``retention`` seconds, and holding every inline input that long would let
    one client pin gigabytes. The image itself is kept in the store (``inputImageUUID``).
    """
    return compact_json(_elide(item))


def _elide(value: Any) -> Any:
    if isinstance(value, str) and len(value) > _LONG_STRING:
        return f"<{len(value)} characters not kept>"
    if isinstance(value, dict):
        return {key: _elide(inner) for key, inner in value.items()}
    if isinstance(value, list):
        return [_elide(inner) for inner in value]
    return value


def _wire_message(exc: InvalidTask) -> str:
    """The message of a validation error, quoting values as JSON (not Python reprs)."""
    if exc.value is None and exc.code.startswith("missing"):
        return f"{exc.parameter} is required"
    return f"{exc.parameter} {_shown(exc.value)}: {exc.reason}"


def _shown(value: object) -> str:
    """A value as it would appear in JSON, shortened: error messages quote the wire, not Python."""
    try:
        text = orjson.dumps(value).decode()
    except TypeError:
        text = type(value).__name__
    return text if len(text) <= 60 else text[:57] + "..."


def _identity(record: TaskRecord) -> dict[str, Any]:
    return {"taskType": record.task_type, "taskUUID": record.task_uuid}


_task_error = scoped_error


def _json_type(value: object) -> str:
    """The JSON name of a decoded value's type, for messages that quote the wire."""
    if isinstance(value, dict):
        return "object"
    if isinstance(value, list):
        return "array"
    if isinstance(value, str):
        return "string"
    if isinstance(value, bool):
        return "boolean"
    return "null" if value is None else "number"


def _missing_uuid(item: Mapping[str, Any]) -> dict[str, Any]:
    present = "taskUUID" in item
    code = "invalidTaskUUID" if present else "missingTaskUUID"
    return _task_error(item, code, "taskUUID must be a UUID v4 string", parameter="taskUUID")
