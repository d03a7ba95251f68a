"""The event-loop half of each accepted task's work: inputs, worker jobs, storage, HTTP.

:class:`TaskWork` does what an accepted ``upscale``, ``imageUpload`` or ``mediaStorage`` task
does once :mod:`.handlers` admitted it: resolve its input (a stored image of the same
tenant, this server's own URL, a download or inline text), run the CPU-bound part in a worker
thread (:mod:`.worker`), store the outputs for the task's tenant (:mod:`.image_store`), talk
to ``webhookURL`` and ``uploadEndpoint`` (:mod:`.outbound`) and build the result item.
Failures are :class:`~.worker.TaskFailure`, which the handlers turn into the task's error.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from ..inputs import is_uuid
from ..log import get_logger
from ..models import UpscaleTask
from . import imaging
from .image_store import StoredImage
from .outbound import OutboundError, check_destination, fetch_url, post_webhook, put_upload
from .routes import image_uuid_of
from .sessions import TaskRecord
from .worker import DecodeJob, RenderJob, TaskFailure

if TYPE_CHECKING:
    from .handlers import Host

__all__ = ["TaskWork"]

log = get_logger(__name__)

_EXTENSIONS = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp"}


class TaskWork:
    """The work of accepted tasks, for one server.

    Args:
        host: The server: configuration, image store, worker threads.
    """

    def __init__(self, host: Host) -> None:
        self.host = host

    async def upscale(
        self, task: UpscaleTask, model: str, factor: float, record: TaskRecord, via_inputs: bool
    ) -> dict[str, Any]:
        config = self.host.config
        # webhookURL and uploadEndpoint get the same check, before any work: a destination
        # the server will not reach fails the task with the parameter named. (A webhook used
        # to be accepted and silently never posted, while an uploadEndpoint failed the task
        # after the rendering.) The same check runs again when the socket connects.
        destinations = (("webhookURL", task.webhook_url), ("uploadEndpoint", task.upload_endpoint))
        for parameter, url in destinations:
            if url is not None:
                await self.check_destination(url, parameter)
        source = await self.resolve_input(task.input_image, record.tenant, "inputImage")
        output_type = task.output_type or "URL"
        job = RenderJob(
            stored=source.data,
            inline=source.inline,
            model=model,
            factor=factor,
            settings=task.settings.wire_names() if task.settings else None,
            output_format=task.output_format or "JPG",
            quality=task.output_quality or 95,
            max_pixels=config.max_pixels,
            encode_text=output_type != "URL",
            engine=config.engine,
        )
        done = await self.host.run_in_worker(job.run)
        now = config.clock()
        input_uuid = source.image_uuid
        if input_uuid is None:
            input_uuid = self.store(
                done.input_data, done.input_mime, config.url_ttl, now, record.tenant
            )
        rendered = done.rendered
        ttl = float(task.ttl) if task.ttl is not None else config.url_ttl
        image_uuid = self.store(rendered.data, rendered.mime, ttl, now, record.tenant)
        if task.upload_endpoint is not None:
            await self.put_upload(task.upload_endpoint, rendered.data, rendered.mime)
        result: dict[str, Any] = {
            "taskType": record.task_type,
            "taskUUID": record.task_uuid,
            "imageUUID": image_uuid,
            "inputImageUUID": input_uuid,
        }
        url = self.url(image_uuid, rendered.extension)
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
            result["cost"] = imaging.cost_of(model, rendered.width, rendered.height)
        return result

    async def resolve_input(self, value: str, tenant: str, parameter: str) -> _Source:
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
            own = self.own_image(value)
            if own is not None:
                return await self.resolve_input(own, tenant, parameter)
            return _Source(data=await self.fetch(value, parameter))
        return _Source(inline=value)

    def own_image(self, url: str) -> str | None:
        """The image UUID when ``url`` is one of this server's own image URLs."""
        base = self.host.image_base_url
        if not url.startswith(base + "/"):
            return None
        return image_uuid_of(urlsplit(url).path)

    async def upload(self, value: str, record: TaskRecord, parameter: str) -> dict[str, Any]:
        config = self.host.config
        if urlsplit(value).scheme.lower() in ("http", "https"):
            job = DecodeJob(data=await self.fetch(value, parameter), max_pixels=config.max_pixels)
        else:
            job = DecodeJob(inline=value, max_pixels=config.max_pixels, parameter=parameter)
        try:
            data, mime = await self.host.run_in_worker(job.run)
        except TaskFailure as exc:
            if exc.parameter == "inputImage":
                exc.parameter = parameter
            raise
        image_uuid = self.store(data, mime, config.url_ttl, config.clock(), record.tenant)
        url = self.url(image_uuid, _EXTENSIONS[mime])
        identity = {"taskType": record.task_type, "taskUUID": record.task_uuid}
        if parameter == "media":
            return {**identity, "operation": "upload", "mediaUUID": image_uuid, "mediaURL": url}
        return {**identity, "imageUUID": image_uuid, "imageURL": url}

    async def delete(self, media_uuid: str, record: TaskRecord) -> dict[str, Any]:
        if not self.host.images.delete(media_uuid, record.tenant, self.host.config.clock()):
            raise TaskFailure(
                "mediaNotFound",
                f"no media {media_uuid} is stored for this API key",
                parameter="mediaUUID",
            )
        identity = {"taskType": record.task_type, "taskUUID": record.task_uuid}
        return {**identity, "operation": "delete", "mediaUUID": media_uuid}

    # -- storage and outbound HTTP -----------------------------------------------------------

    def store(self, data: bytes, mime: str, ttl: float, now: float, owner: str) -> str:
        image_uuid = str(uuid.uuid4())
        stored = StoredImage(data, mime, _EXTENSIONS[mime], now + ttl, owner)
        self.host.images.put(image_uuid, stored)
        return image_uuid

    def url(self, image_uuid: str, extension: str) -> str:
        return f"{self.host.image_base_url}/image/{image_uuid}.{extension}"

    async def check_destination(self, url: str, parameter: str) -> None:
        try:
            await asyncio.to_thread(check_destination, url, self.host.config.outbound_policy())
        except OutboundError as exc:
            raise TaskFailure(exc.code, exc.message, parameter=parameter) from None

    async def fetch(self, url: str, parameter: str) -> bytes:
        try:
            return await fetch_url(url, self.host.config.outbound_policy())
        except OutboundError as exc:
            raise TaskFailure(exc.code, exc.message, parameter=parameter) from None

    async def put_upload(self, url: str, data: bytes, mime: str) -> None:
        try:
            await put_upload(url, data, mime, self.host.config.outbound_policy())
        except OutboundError as exc:
            raise TaskFailure(exc.code, exc.message, parameter="uploadEndpoint") from None

    async def post_webhook(self, url: str, payload: Mapping[str, Any]) -> None:
        try:
            await post_webhook(url, payload, self.host.config.outbound_policy())
        except OutboundError as exc:
            # The URL may carry a token in its query: log the host only.
            log.warning("webhook.failed", host=urlsplit(url).hostname, code=exc.code)


@dataclass(frozen=True, slots=True)
class _Source:
    """A resolved input: stored or downloaded bytes, or inline text still to decode."""

    data: bytes | None = None
    inline: str | None = None
    image_uuid: str | None = None
