"""Typed keyword options: the task options and the client options, as ``TypedDict``\\ s.

``upscale``, ``upscale_many``, ``build_task`` (async and sync) take ``**options:
Unpack[TaskOptions]`` and the clients take ``**options: Unpack[ClientOptions]``, so an editor
completes every option and mypy rejects a typo or a wrong type. The values are still checked
at run time by :class:`~upscale_stream.models.UpscaleTask` (an
:class:`~upscale_stream.errors.InvalidTask` names the wire field).
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from typing import Any, Literal, TypedDict

from .config import Heartbeat, Limits, Polling, Retry, TaskRetry, Timeouts
from .models import DeliveryMethod, OutputFormat, OutputType, UpscaleSettings

__all__ = ["ClientOptions", "Factor", "TaskOptions"]

Factor = Literal[2, 4]
"""``upscaleFactor``: 2, or 4 (SwinIR only)."""


class TaskOptions(TypedDict, total=False):
    """The options of an upscale task besides the image, ``factor`` and ``model``.

    Attributes:
        output_type: ``"URL"`` (default), ``"base64Data"`` or ``"dataURI"``.
        output_format: ``"JPG"`` (default), ``"PNG"`` or ``"WEBP"``.
        output_quality: 20 to 99 (default 95).
        webhook_url: Results are also POSTed there.
        delivery_method: ``"sync"`` (default) or ``"async"`` (ACK, then polling).
        upload_endpoint: The output is PUT to this URL.
        ttl: Lifetime of a URL output in seconds (at least 60).
        include_cost: Ask for ``cost`` in the result.
        settings: Model settings (diffusion upscalers), as :class:`UpscaleSettings` or a dict.
    """

    output_type: OutputType
    output_format: OutputFormat
    output_quality: int
    webhook_url: str
    delivery_method: DeliveryMethod
    upload_endpoint: str
    ttl: int
    include_cost: bool
    settings: UpscaleSettings | Mapping[str, Any]


class ClientOptions(TypedDict, total=False):
    """The keyword options of :class:`~upscale_stream.UpscaleClient` and
    :class:`~upscale_stream.Client` (see :class:`~upscale_stream.UpscaleClient` for each)."""

    url: str | None
    max_in_flight: int | None
    max_batch: int | None
    timeouts: Timeouts | None
    limits: Limits | None
    heartbeat: Heartbeat | None
    retry: Retry | None
    task_retry: TaskRetry | None
    polling: Polling | None
    verify_ssl: bool
    ssl_context: ssl.SSLContext | None
    seed: int | None
