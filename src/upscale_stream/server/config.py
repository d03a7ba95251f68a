"""Every knob of the reference server in one frozen dataclass, with its default.

Times are in seconds. Expiry of held results, finished tasks and stored images is measured with
``clock`` (``time.monotonic`` by default), so a test can pass its own clock and advance it
instead of waiting: the server checks those deadlines whenever it touches the state, and a
background sweep (every ``sweep_interval`` real seconds) frees memory in between. Socket
timeouts (``auth_timeout``, ``idle_timeout``) run on the event loop's own clock.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from .engines.registry import ENGINE_NAMES
from .outbound import OutboundPolicy

__all__ = ["ServerConfig"]

MiB = 1024 * 1024

DEFAULT_MAX_MESSAGE_BYTES = 16 * MiB
"""What ``ServerConfig.max_message_bytes`` stands for when it is ``None`` (and ``max_size`` is
larger): the application limit, below the transport's 64 MiB."""


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """Configuration of a :class:`~upscale_stream.server.ReferenceServer`.

    Attributes:
        api_keys: The accepted API keys (compared in constant time).
        accept_any_key: Development mode: any non-empty key is accepted (a WARNING is logged).
        host: Interface to bind.
        port: TCP port to bind; 0 picks a free one (read it back from ``server.url``).
        public_url: Base of the ``imageURL`` values (``http://host:port`` when ``None``).
        hold_time: How long results for a session without a socket are held for a resume
            (protocol.md section 2: 120 s).
        retention: How long a finished task stays known, for ``getResponse`` and for
            ``conflictTaskUUID`` de-duplication.
        idle_timeout: Close a socket that sent nothing for this long (protocol.md section 3).
        auth_timeout: Close a socket that has not authenticated after this long.
        close_timeout: How long a clean close waits for the client's close frame.
        max_size: Largest incoming message the transport reads (``None``: no limit);
            websockets closes the connection with 1009 above it, from the frame header,
            without reading the message, so there is nothing to answer.
        max_message_bytes: Largest message the server handles. A bigger one (but within
            ``max_size``) is answered with a ``frameTooLarge`` error item per item it holds,
            and nothing in it runs; the connection stays open. ``None``: 16 MiB, or
            ``max_size`` when that is smaller. Must not exceed ``max_size``.
        compression: Negotiate permessage-deflate (off: images do not compress).
        task_delay: Simulated latency added to every upscale and upload (asyncio sleep).
        workers: Threads for the image work.
        engine: What upscales: ``"pillow"`` (classical pipelines) or ``"neural"``
            (Real-ESRGAN on the CPU for the pairs in ``engines.NEURAL_ROUTES``; needs
            ``pip install 'upscale-stream[sr]'``). See docs/engines.md.
        allow_private_urls: Let URL inputs and webhooks reach private and loopback addresses.
        fetch_timeout: Timeout of each outbound HTTP request (URL inputs, webhooks, uploads).
        max_fetch_bytes: Largest URL input downloaded.
        webhook_retries: Retries of a webhook POST after its first attempt (connection errors,
            timeouts, 408, 429 and 5xx answers only).
        url_ttl: Lifetime of an output image (and its URL) when the task sets no ``ttl``.
        image_store_bytes: Memory cap of the image store; least recently used images go first.
        max_pixels: Largest input image, in pixels.
        max_tasks_per_frame: Tasks beyond this many in one frame get a ``tooManyTasks`` error.
        max_in_flight: Running tasks allowed per connection; the excess gets ``tooManyTasks``.
        max_frame_items: Most items the server puts in one outgoing frame.
        max_frame_bytes: Most bytes the server puts in one outgoing frame (a bigger item still
            goes, alone). Under the 1 MiB that ``runware-sdk`` accepts by default.
        auth_failure_burst: Failed authentications a client address may have before it is
            throttled (its next attempts get ``rateLimitExceeded`` unchecked).
        auth_failures_per_minute: Failed authentications a minute an address regains.
        max_counted_uuids: Most distinct taskUUIDs each test counter (``received``,
            ``executions``, ``polls``) remembers; the oldest are forgotten first.
        sweep_interval: Real seconds between background expiry sweeps.
        fault_seed: Seed of the fault-injection random generator.
        status_shows_results: Let ``/status`` and ``/status.json`` show the latest output
            images, of every key. Off: they show figures only (and key fingerprints), never a
            result, since anyone who can reach the port can read them.
        clock: Monotonic time source for expiry (holds, retention, image TTL).
    """

    api_keys: frozenset[str] = frozenset()
    accept_any_key: bool = False
    host: str = "127.0.0.1"
    port: int = 8765
    public_url: str | None = None
    hold_time: float = 120.0
    retention: float = 600.0
    idle_timeout: float = 120.0
    auth_timeout: float = 10.0
    close_timeout: float = 5.0
    max_size: int | None = 64 * MiB
    max_message_bytes: int | None = None
    compression: bool = False
    task_delay: float = 0.0
    workers: int = 4
    engine: str = "pillow"
    allow_private_urls: bool = False
    fetch_timeout: float = 10.0
    max_fetch_bytes: int = 32 * MiB
    webhook_retries: int = 3
    url_ttl: float = 3600.0
    image_store_bytes: int = 512 * MiB
    max_pixels: int = 40_000_000
    max_tasks_per_frame: int = 10_000
    max_in_flight: int = 5_000
    max_frame_items: int = 500
    max_frame_bytes: int = 900 * 1024
    auth_failure_burst: int = 10
    auth_failures_per_minute: float = 10.0
    max_counted_uuids: int = 250_000
    sweep_interval: float = 1.0
    fault_seed: int = 0
    status_shows_results: bool = False
    clock: Callable[[], float] = field(default=time.monotonic, repr=False, compare=False)

    def __post_init__(self) -> None:
        keys: Iterable[str] = self.api_keys
        if isinstance(keys, str):
            raise TypeError("api_keys must be a collection of keys, not one string")
        object.__setattr__(self, "api_keys", frozenset(keys))
        if not self.accept_any_key and not self.api_keys:
            raise ValueError("give api_keys=... or set accept_any_key=True (development only)")
        if any(not key for key in self.api_keys):
            raise ValueError("api_keys must not contain an empty key")
        for name in (
            "workers",
            "max_tasks_per_frame",
            "max_in_flight",
            "max_frame_items",
            "auth_failure_burst",
            "max_counted_uuids",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        if self.engine not in ENGINE_NAMES:
            raise ValueError(
                f"engine must be one of {', '.join(ENGINE_NAMES)}, not {self.engine!r}"
            )
        limit, transport = self.max_message_bytes, self.max_size
        if limit is not None:
            if limit < 1:
                raise ValueError("max_message_bytes must be at least 1")
            if transport is not None and limit > transport:
                raise ValueError(
                    f"max_message_bytes ({limit}) must not exceed max_size ({transport}): "
                    "websockets closes the connection above max_size before the server sees it"
                )

    @property
    def message_limit(self) -> int:
        """The largest message the server handles: ``max_message_bytes`` or its default."""
        if self.max_message_bytes is not None:
            return self.max_message_bytes
        if self.max_size is not None:
            return min(DEFAULT_MAX_MESSAGE_BYTES, self.max_size)
        return DEFAULT_MAX_MESSAGE_BYTES

    def outbound_policy(self) -> OutboundPolicy:
        """The policy for URL inputs, webhooks and upload endpoints."""
        return OutboundPolicy(
            timeout=self.fetch_timeout,
            max_bytes=self.max_fetch_bytes,
            allow_private=self.allow_private_urls,
            webhook_retries=self.webhook_retries,
        )
