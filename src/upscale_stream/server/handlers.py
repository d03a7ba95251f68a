"""What the reference server does with each item of a frame, and the work of each task.

:class:`TaskHandlers` is called by the socket shell (:mod:`.client_socket`) with the decoded items
of one frame. It never blocks: the immediate replies to a frame (pongs, async ACKs, validation,
conflict and limit errors, ``getResponse`` answers) are queued on the socket the frame came on,
and the work of ``upscale`` and ``imageUpload`` is spawned as asyncio tasks whose CPU-bound parts
run in the server's worker threads. A task's final answer (its result, or the error it failed
with) goes to its session through :meth:`.SessionRegistry.finish`, so it is held for a resume if
the socket is gone (see :mod:`.sessions`).

Task types (protocol.md sections 2, 3, 5 and 6):

* ``authentication``: :meth:`TaskHandlers.authenticate`, called by the shell for the first frame.
* ``ping``: a pong in a frame of its own, at once.
* ``upscale`` / ``imageUpscale``: normalised (``inputs.image`` -> ``inputImage``, pass-through
  fields dropped, ``2.0`` -> ``2``), validated with :class:`~upscale_stream.models.UpscaleTask`,
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
from urllib.parse import urlsplit

import orjson

from ..errors import InvalidTask
from ..inputs import is_uuid
from ..log import get_logger
from ..models import ErrorItem, UpscaleTask
from ..wire import AUTH, GET_RESPONSE, IMAGE_UPLOAD, PING, UPSCALE, UPSCALE_TASK_TYPES
from . import imaging
from .config import ServerConfig
from .faults import Faults
from .image_store import ImageStore, StoredImage
from .outbound import OutboundError, fetch_url, post_webhook, put_upload
from .routes import image_uuid_of
from .sessions import Kind, Session, SessionRegistry, TaskCounts, TaskRecord
from .status import StatusBoard
from .worker import DecodeJob, RenderJob, TaskFailure

__all__ = [
    "PASS_THROUGH_FIELDS",
    "Host",
    "KeyAccepted",
    "KeyRejected",
    "Peer",
    "TaskHandlers",
    "error_item",
    "normalise_upscale",
]

T = TypeVar("T")

GET_TASK_DETAILS = "getTaskDetails"
MEDIA_STORAGE = "mediaStorage"

log = get_logger(__name__)

PASS_THROUGH_FIELDS = frozenset(
    {"routing", "providerSettings", "safety", "targetMegapixels", "numberResults"}
)
"""Upscale fields the real API accepts that our model does not know; dropped, not rejected."""

_EXTENSIONS = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp"}


def error_item(
    code: str,
    message: str,
    *,
    parameter: str | None = None,
    task_type: object = None,
    task_uuid: object = None,
) -> dict[str, Any]:
    """An ``errors`` item; ``taskType`` and ``taskUUID`` are included when they are strings."""
    return ErrorItem(
        code=code,
        message=message,
        parameter=parameter,
        task_type=task_type if isinstance(task_type, str) else None,
        task_uuid=task_uuid if isinstance(task_uuid, str) else None,
    ).to_wire()


class Peer(Protocol):
    """What the handlers need from the connection a frame arrived on."""

    session_id: str | None
    tenant: str | None
    in_flight: int

    def reply(self, kind: Kind, item: Mapping[str, Any]) -> None:
        """Queue an immediate reply on this socket (lost, not held, if the socket drops)."""

    def pong(self) -> None:
        """Queue a pong, sent alone in its frame ahead of everything else."""


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


def normalise_upscale(item: Mapping[str, Any]) -> dict[str, Any]:
    """Turn a received upscale item into fields :meth:`UpscaleTask.from_wire` accepts.

    ``imageUpscale`` becomes ``upscale``, ``inputs.image`` becomes ``inputImage``, the
    :data:`PASS_THROUGH_FIELDS` are dropped and a whole float ``upscaleFactor`` becomes an int.

    Raises:
        InvalidTask: ``inputs`` is not an object.
    """
    fields = {key: value for key, value in item.items() if key not in PASS_THROUGH_FIELDS}
    fields["taskType"] = UPSCALE
    inputs = fields.pop("inputs", None)
    if inputs is not None:
        if not isinstance(inputs, dict):
            raise InvalidTask(
                'must be an object like {"image": ...}',
                parameter="inputs",
                value=inputs,
                code="invalidInputs",
            )
        if "inputImage" not in fields and "image" in inputs:
            fields["inputImage"] = inputs["image"]
    factor = fields.get("upscaleFactor")
    if isinstance(factor, float) and factor.is_integer():
        fields["upscaleFactor"] = int(factor)
    return fields


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

        Returns:
            How many tasks the frame held (authentication, ping and getResponse do not count).
        """
        counted = 0
        limit = self.host.config.max_tasks_per_frame
        for item in items:
            if not isinstance(item, dict):
                peer.reply("errors", error_item("invalidRequest", _NOT_AN_OBJECT))
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
            task_uuid = item.get("taskUUID")
            self.host.counts.count_received(task_uuid)
            if counted > limit:
                message = f"a frame may hold at most {limit} tasks; send the rest in another"
                peer.reply("errors", _task_error(item, "tooManyTasks", message))
            elif task_type in UPSCALE_TASK_TYPES:
                self._submit_upscale(peer, item, now)
            elif task_type == IMAGE_UPLOAD:
                self._submit_upload(peer, item, now)
            elif task_type == MEDIA_STORAGE:
                self._submit_media(peer, item, now)
            else:
                message = f"taskType {str(task_type)[:60]!r} is not supported by this server"
                error = _task_error(item, "unsupportedTaskType", message, parameter="taskType")
                peer.reply("errors", error)
        return counted

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
        task_uuid = item.get("taskUUID")
        if not isinstance(task_uuid, str):
            error = error_item(
                "missingTaskUUID",
                "getResponse needs the taskUUID of the task to look up",
                parameter="taskUUID",
                task_type=GET_RESPONSE,
            )
            peer.reply("errors", error)
            return
        self.host.counts.polls[task_uuid] += 1
        record = self.host.registry.lookup(task_uuid, now, tenant=peer.tenant or "")
        if record is None:
            retention = self.host.config.retention
            message = f"no task {task_uuid} is known here (or it finished over {retention:g} s ago)"
            error = error_item(
                "taskFailedOrNotFound",
                message,
                parameter="taskUUID",
                task_type=GET_RESPONSE,
                task_uuid=task_uuid,
            )
            peer.reply("errors", error)
            return
        peer.reply("data", record.poll_reply())

    def _get_task_details(self, peer: Peer, item: Mapping[str, Any], now: float) -> None:
        task_uuid = item.get("taskUUID")
        if not isinstance(task_uuid, str):
            error = error_item(
                "missingTaskUUID",
                "getTaskDetails needs the taskUUID of the task to look up",
                parameter="taskUUID",
                task_type=GET_TASK_DETAILS,
            )
            peer.reply("errors", error)
            return
        record = self.host.registry.lookup(task_uuid, now, tenant=peer.tenant or "")
        if record is None:
            retention = self.host.config.retention
            message = f"no task {task_uuid} is known here (or it finished over {retention:g} s ago)"
            error = error_item(
                "taskFailedOrNotFound",
                message,
                parameter="taskUUID",
                task_type=GET_TASK_DETAILS,
                task_uuid=task_uuid,
            )
            peer.reply("errors", error)
            return
        peer.reply("data", record.details_reply(GET_TASK_DETAILS))

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
        if not isinstance(task_uuid, str):
            peer.reply("errors", _missing_uuid(item))
            return
        try:
            task = UpscaleTask.from_wire(normalise_upscale(item))
        except InvalidTask as exc:
            error = _task_error(item, exc.code, str(exc), parameter=exc.parameter)
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
        self._start(peer, record, task.webhook_url, lambda: self._upscale(task, record, via_inputs))

    async def _upscale(
        self, task: UpscaleTask, record: TaskRecord, via_inputs: bool
    ) -> dict[str, Any]:
        config = self.host.config
        source = await self._resolve_input(task.input_image, record.tenant, "inputImage")
        output_type = task.output_type or "URL"
        job = RenderJob(
            stored=source.data,
            inline=source.inline,
            model=task.model,
            factor=task.upscale_factor,
            settings=task.settings.wire_names() if task.settings else None,
            output_format=task.output_format or "JPG",
            quality=task.output_quality or 95,
            max_pixels=config.max_pixels,
            encode_text=output_type != "URL",
        )
        done = await self.host.run_in_worker(job.run)
        now = config.clock()
        input_uuid = source.image_uuid
        if input_uuid is None:
            input_uuid = self._store(
                done.input_data, done.input_mime, config.url_ttl, now, record.tenant
            )
        rendered = done.rendered
        ttl = float(task.ttl) if task.ttl is not None else config.url_ttl
        image_uuid = self._store(rendered.data, rendered.mime, ttl, now, record.tenant)
        if task.upload_endpoint is not None:
            await self._put_upload(task.upload_endpoint, rendered.data, rendered.mime)
        result: dict[str, Any] = {
            "taskType": record.task_type,
            "taskUUID": record.task_uuid,
            "imageUUID": image_uuid,
            "inputImageUUID": input_uuid,
        }
        url = self._url(image_uuid, rendered.extension)
        if output_type == "URL":
            result["imageURL"] = url
        elif output_type == "base64Data":
            result["imageBase64Data"] = done.text
        else:
            result["imageDataURI"] = f"data:{rendered.mime};base64,{done.text}"
        if via_inputs:
            # protocol.md section 5.3: the JS SDK documents mediaUUID/mediaURL for requests
            # that use inputs.image, the Python SDKs and the docs imageUUID/imageURL. Both are
            # sent, naming the same image, so every client finds the spelling it reads.
            result["mediaUUID"] = image_uuid
            if output_type == "URL":
                result["mediaURL"] = url
        if task.include_cost:
            result["cost"] = imaging.cost_of(task.model, rendered.width, rendered.height)
        return result

    async def _resolve_input(self, value: str, tenant: str, parameter: str) -> _Source:
        if is_uuid(value):
            image_uuid = value.lower()
            stored = self.host.images.owned(image_uuid, tenant, self.host.config.clock())
            if stored is None:
                # The same answer whether the image never existed, expired or belongs to
                # another API key: nothing tells one key about another's images.
                raise TaskFailure(
                    "invalidInputImage",
                    f"no image {value} is stored for this API key (uploads and results expire)",
                    parameter=parameter,
                )
            return _Source(data=stored.data, image_uuid=image_uuid)
        if urlsplit(value).scheme.lower() in ("http", "https"):
            own = self._own_image(value)
            if own is not None:
                return await self._resolve_input(own, tenant, parameter)
            return _Source(data=await self._fetch(value, parameter))
        return _Source(inline=value)

    def _own_image(self, url: str) -> str | None:
        """The image UUID when ``url`` is one of this server's own image URLs."""
        base = self.host.image_base_url
        if not url.startswith(base + "/"):
            return None
        return image_uuid_of(urlsplit(url).path)

    # -- imageUpload and mediaStorage --------------------------------------------------------

    def _submit_upload(self, peer: Peer, item: Mapping[str, Any], now: float) -> None:
        task_uuid = item.get("taskUUID")
        if not isinstance(task_uuid, str):
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
            self._start(peer, record, None, lambda: self._upload(image, record, "image"))

    def _submit_media(self, peer: Peer, item: Mapping[str, Any], now: float) -> None:
        task_uuid = item.get("taskUUID")
        if not isinstance(task_uuid, str):
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
                self._start(peer, upload, None, lambda: self._upload(media, upload, "media"))
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
                self._start(peer, delete, None, lambda: self._delete(media_uuid.lower(), delete))
            return
        message = f"operation must be 'upload' or 'delete', not {_shown(operation)}"
        peer.reply("errors", _task_error(item, "invalidOperation", message, parameter="operation"))

    async def _upload(self, value: str, record: TaskRecord, parameter: str) -> dict[str, Any]:
        config = self.host.config
        if urlsplit(value).scheme.lower() in ("http", "https"):
            job = DecodeJob(data=await self._fetch(value, parameter), max_pixels=config.max_pixels)
        else:
            job = DecodeJob(inline=value, max_pixels=config.max_pixels)
        try:
            data, mime = await self.host.run_in_worker(job.run)
        except TaskFailure as exc:
            if exc.parameter == "inputImage":
                exc.parameter = parameter
            raise
        image_uuid = self._store(data, mime, config.url_ttl, config.clock(), record.tenant)
        url = self._url(image_uuid, _EXTENSIONS[mime])
        identity = {"taskType": record.task_type, "taskUUID": record.task_uuid}
        if parameter == "media":
            return {**identity, "operation": "upload", "mediaUUID": image_uuid, "mediaURL": url}
        return {**identity, "imageUUID": image_uuid, "imageURL": url}

    async def _delete(self, media_uuid: str, record: TaskRecord) -> dict[str, Any]:
        if not self.host.images.delete(media_uuid, record.tenant, self.host.config.clock()):
            raise TaskFailure(
                "mediaNotFound",
                f"no media {media_uuid} is stored for this API key",
                parameter="mediaUUID",
            )
        identity = {"taskType": record.task_type, "taskUUID": record.task_uuid}
        return {**identity, "operation": "delete", "mediaUUID": media_uuid}

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
        if webhook_url is not None:
            envelope = {"errors" if failed else "data": [answer]}
            host.spawn(self._post_webhook(webhook_url, envelope))

    # -- storage and outbound HTTP -----------------------------------------------------------

    def _store(self, data: bytes, mime: str, ttl: float, now: float, owner: str) -> str:
        image_uuid = str(uuid.uuid4())
        stored = StoredImage(data, mime, _EXTENSIONS[mime], now + ttl, owner)
        self.host.images.put(image_uuid, stored)
        return image_uuid

    def _url(self, image_uuid: str, extension: str) -> str:
        return f"{self.host.image_base_url}/image/{image_uuid}.{extension}"

    async def _fetch(self, url: str, parameter: str) -> bytes:
        try:
            return await fetch_url(url, self.host.config.outbound_policy())
        except OutboundError as exc:
            raise TaskFailure(exc.code, exc.message, parameter=parameter) from None

    async def _put_upload(self, url: str, data: bytes, mime: str) -> None:
        try:
            await put_upload(url, data, mime, self.host.config.outbound_policy())
        except OutboundError as exc:
            raise TaskFailure(exc.code, exc.message, parameter="uploadEndpoint") from None

    async def _post_webhook(self, url: str, payload: Mapping[str, Any]) -> None:
        try:
            await post_webhook(url, payload, self.host.config.outbound_policy())
        except OutboundError as exc:
            # The URL may carry a token in its query: log the host only.
            log.warning("webhook.failed", host=urlsplit(url).hostname, code=exc.code)


_NOT_AN_OBJECT = "each task must be a JSON object"


_LONG_STRING = 4096
"""Request strings longer than this (inline images) are not kept for ``getTaskDetails``."""


def _request_of(item: Mapping[str, Any]) -> bytes:
    """The task object as received, JSON-encoded, for ``getTaskDetails``.

    Kept as sent, except that a string value longer than :data:`_LONG_STRING` characters (an
    inline image, typically megabytes) is replaced by a short marker naming its length: a
    record lives for ``retention`` seconds, and holding every inline input that long would let
    one client pin gigabytes. The image itself is kept in the store (``inputImageUUID``).
    """
    return orjson.dumps(_elide(item))


def _elide(value: Any) -> Any:
    if isinstance(value, str) and len(value) > _LONG_STRING:
        return f"<{len(value)} characters not kept>"
    if isinstance(value, dict):
        return {key: _elide(inner) for key, inner in value.items()}
    if isinstance(value, list):
        return [_elide(inner) for inner in value]
    return value


def _shown(value: object) -> str:
    """A value as it would appear in JSON, shortened: error messages quote the wire, not Python."""
    try:
        text = orjson.dumps(value).decode()
    except TypeError:
        text = type(value).__name__
    return text if len(text) <= 60 else text[:57] + "..."


def _identity(record: TaskRecord) -> dict[str, Any]:
    return {"taskType": record.task_type, "taskUUID": record.task_uuid}


def _task_error(
    item: Mapping[str, Any], code: str, message: str, *, parameter: str | None = None
) -> dict[str, Any]:
    return error_item(
        code,
        message,
        parameter=parameter,
        task_type=item.get("taskType"),
        task_uuid=item.get("taskUUID"),
    )


def _missing_uuid(item: Mapping[str, Any]) -> dict[str, Any]:
    present = "taskUUID" in item
    code = "invalidTaskUUID" if present else "missingTaskUUID"
    return _task_error(item, code, "taskUUID must be a UUID v4 string", parameter="taskUUID")


@dataclass(frozen=True, slots=True)
class _Source:
    """A resolved input: stored or downloaded bytes, or inline text still to decode."""

    data: bytes | None = None
    inline: str | None = None
    image_uuid: str | None = None
