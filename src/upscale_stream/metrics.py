"""Client metrics: a cheap recorder, its frozen :class:`Stats` snapshot, and OpenTelemetry.

The connection calls the recorder's ``task_*``, ``frame_*`` and ``reconnected`` methods on the
hot path; each is O(1) and keeps nothing per task (the core's record holds a task's submit
time, and the events that end the task bring it back): counters are plain ints and latencies
land in a fixed-bucket histogram (log-spaced buckets, from 1 ms to about 20 minutes, 5% apart,
so a percentile is off by at most 2.5%). Percentiles cover a recent window only: the histogram
is a ring of ``slots`` sub-histograms of ``slot_seconds`` each, and a
slot is cleared when the clock comes back to it.

:meth:`Metrics.snapshot` freezes everything into a :class:`Stats` (``client.stats()``), with
the figures that others own (queued, in flight, the window, retries, resends, replays, polls)
read from them at that moment (:class:`Live`), so nothing is counted twice.

OpenTelemetry is optional (``pip install 'upscale-stream[otel]'``). :meth:`Metrics.export_to`
(``client.export_metrics(provider)``) adds instruments from
``opentelemetry-api``, which is a no-op until an SDK ``MeterProvider`` is configured:

========================================  =========  ==========  ================================
instrument                                kind       unit        attributes
========================================  =========  ==========  ================================
``upscale_stream.client.task.duration``   histogram  ``s``       ``upscale.model``,
                                                                 ``upscale.outcome``,
                                                                 ``error.type`` (failures)
``upscale_stream.client.task.submitted``  counter    ``{task}``  ``upscale.model``
``upscale_stream.client.task.completed``  counter    ``{task}``  as the duration
``upscale_stream.client.task.retried``    counter    ``{task}``  ``upscale.reason`` (retried,
                                                                 resent, replayed, fetched)
``upscale_stream.client.frames``          counter    ``{frame}`` ``network.io.direction``
``upscale_stream.client.io``              counter    ``By``      ``network.io.direction``
``upscale_stream.client.reconnects``      counter    ``{reconnect}``
``upscale_stream.client.task.in_flight``  gauge      ``{task}``
``upscale_stream.client.window``          gauge      ``{task}``
========================================  =========  ==========  ================================

Names and units follow OpenTelemetry's naming guidance (a dotted namespace, a ``duration``
histogram in seconds, UCUM units, ``{annotation}`` for counts, ``error.type`` and
``network.io.direction`` from the semantic conventions). Attribute values are only a model's
AIR id, an outcome word and an error code, each checked against a short pattern (anything
else becomes ``other``): never a key, a URL, a query string or image data.
"""

from __future__ import annotations

import bisect
import itertools
import math
import operator
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, NamedTuple

from .errors import UpscaleError

if TYPE_CHECKING:
    from .events import TaskResult

__all__ = [
    "LATENCY_BOUNDS",
    "Latency",
    "LatencyHistogram",
    "Live",
    "Metrics",
    "OpenTelemetryBridge",
    "Stats",
    "error_code",
]

_MIN_LATENCY = 0.001
_RATIO = 1.05
_BUCKETS = 300  # 0.001 * 1.05**300 ~= 2,270 s
_bisect_left = bisect.bisect_left
_groupby = itertools.groupby
_SUBMITTED = operator.attrgetter("submitted")

LATENCY_BOUNDS: tuple[float, ...] = tuple(_MIN_LATENCY * _RATIO**i for i in range(_BUCKETS))
"""Upper bounds (seconds) of the latency buckets; one more bucket holds everything above."""


def bucket(seconds: float) -> int:
    """The latency bucket of ``seconds``: the first bound at or above it (below the first
    bound, 0; above the last, the top one). One C call: the log and ceil it replaced cost 3k
    instructions a task."""
    return _bisect_left(LATENCY_BOUNDS, seconds)


_OTEL_BOUNDS: tuple[float, ...] = (
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75,
    1.0, 2.5, 5.0, 7.5, 10.0, 30.0, 60.0, 120.0, 300.0,
)  # fmt: skip
"""Histogram bucket advice for OpenTelemetry (the HTTP duration buckets, plus minutes)."""

_SAFE_VALUE = re.compile(r"[A-Za-z0-9][A-Za-z0-9:@._-]{0,63}")


def _safe(value: str) -> str:
    """An attribute value we are sure carries nothing secret: an id-like word, else ``other``."""
    return value if _SAFE_VALUE.fullmatch(value) else "other"


@dataclass(frozen=True, slots=True)
class Latency:
    """Submit-to-result latency over the recent window, in seconds.

    Attributes:
        count: Results in the window.
        p50: Median (``None`` when the window is empty), likewise ``p90`` and ``p99``.
        window: Length of the window, in seconds.
    """

    count: int = 0
    p50: float | None = None
    p90: float | None = None
    p99: float | None = None
    window: float = 0.0


@dataclass(frozen=True, slots=True)
class Stats:
    """A frozen snapshot of a client's figures (``client.stats()``).

    Attributes:
        submitted: Tasks handed to the client.
        queued: Tasks waiting for a place in the window or in a frame.
        in_flight: Tasks sent and not yet answered.
        succeeded: Tasks resolved with a result.
        failed: Tasks resolved with an error (the sum of ``failed_by_code``).
        failed_by_code: Failures by error code (the server's code, or ours such as
            ``connectionLost`` and ``timeout``).
        retried: Tasks sent again after a transient error.
        resent: Tasks sent again with the same taskUUID after a dropped connection.
        replayed: Results the server replayed on a resumed session.
        fetched: Tasks answered through ``getResponse``.
        frames_sent: WebSocket messages sent; ``frames_received`` likewise.
        bytes_sent: Bytes of the messages sent (UTF-8); ``bytes_received`` likewise.
        reconnects: Successful reconnects.
        window: The current in-flight window (the most tasks in flight at once).
        latency: Submit-to-result latency percentiles over the recent window.
    """

    submitted: int = 0
    queued: int = 0
    in_flight: int = 0
    succeeded: int = 0
    failed: int = 0
    failed_by_code: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))
    retried: int = 0
    resent: int = 0
    replayed: int = 0
    fetched: int = 0
    frames_sent: int = 0
    frames_received: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0
    reconnects: int = 0
    window: int = 0
    latency: Latency = field(default_factory=Latency)

    def as_dict(self) -> dict[str, Any]:
        """The snapshot as plain JSON-ready values (for ``--json`` and logs)."""
        out: dict[str, Any] = {f.name: getattr(self, f.name) for f in fields(self)}
        out["failed_by_code"] = dict(self.failed_by_code)
        out["latency"] = {f.name: getattr(self.latency, f.name) for f in fields(Latency)}
        return out


class LatencyHistogram:
    """Fixed log-spaced buckets over a sliding window of ``slots * slot_seconds`` seconds.

    Args:
        slot_seconds: Width of one slot of the ring.
        slots: Slots in the ring; the window is their total width.
        clock: Monotonic time source.
    """

    def __init__(
        self,
        *,
        slot_seconds: float = 10.0,
        slots: int = 6,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if slot_seconds <= 0 or slots < 1:
            raise ValueError("slot_seconds must be positive and slots at least 1")
        self.slot_seconds = slot_seconds
        self.slots = slots
        self.clock = clock
        self._counts = [[0] * (_BUCKETS + 1) for _ in range(slots)]
        self._epochs = [-1] * slots
        self._slot = 0
        self._current = self._counts[0]
        self._slot_start = self._slot_end = 0.0  # empty: the first record rotates

    @property
    def window(self) -> float:
        """The length of the window, in seconds."""
        return self.slot_seconds * self.slots

    def record(self, seconds: float, now: float | None = None) -> None:
        """Count one latency (negative values count as zero); ``now`` saves a clock call."""
        self.counts_at(self.clock() if now is None else now)[bucket(seconds)] += 1

    def counts_at(self, now: float) -> list[int]:
        """The counts of the slot that holds ``now`` (by :func:`bucket`), to add to: for a
        caller that counts a batch of latencies at one time."""
        if not self._slot_start <= now < self._slot_end:
            self._rotate(now)
        return self._current

    def _rotate(self, now: float) -> None:
        """Make the slot of ``now`` current, clearing it if it holds an older turn's counts."""
        epoch = int(now // self.slot_seconds)
        slot = epoch % self.slots
        if self._epochs[slot] != epoch:
            counts = self._counts[slot]
            for i in range(len(counts)):
                counts[i] = 0
            self._epochs[slot] = epoch
        self._slot = slot
        self._current = self._counts[slot]
        self._slot_start = epoch * self.slot_seconds
        self._slot_end = self._slot_start + self.slot_seconds

    def summary(self) -> Latency:
        """p50, p90 and p99 over the slots still inside the window."""
        epoch = int(self.clock() // self.slot_seconds)
        live = [
            slot
            for slot in range(self.slots)
            if self._epochs[slot] >= 0 and epoch - self._epochs[slot] < self.slots
        ]
        total = sum(sum(self._counts[slot]) for slot in live)
        if total == 0:
            return Latency(window=self.window)
        merged = [0] * (_BUCKETS + 1)
        for slot in live:
            for i, count in enumerate(self._counts[slot]):
                if count:
                    merged[i] += count
        p50, p90, p99 = (_quantile(merged, total, q) for q in (0.50, 0.90, 0.99))
        return Latency(count=total, p50=p50, p90=p90, p99=p99, window=self.window)


def _quantile(counts: list[int], total: int, q: float) -> float:
    """The value below which a share ``q`` of the counts lie: the middle of its bucket."""
    rank = max(1, math.ceil(q * total))
    seen = 0
    for index, count in enumerate(counts):
        seen += count
        if seen >= rank:
            return _middle(index)
    return _middle(len(counts) - 1)


def _middle(index: int) -> float:
    if index == 0:
        return _MIN_LATENCY
    if index >= _BUCKETS:
        return LATENCY_BOUNDS[-1]
    # Geometric middle of (bound[i-1], bound[i]]: within sqrt(1.05) of any value in it.
    return math.sqrt(LATENCY_BOUNDS[index - 1] * LATENCY_BOUNDS[index])


class Live(NamedTuple):
    """Figures the recorder reads from their owners when asked, instead of counting them.

    The core already counts resends, replays and polls and the shell its retries and window,
    so nothing is counted twice on the hot path.
    """

    queued: int = 0
    in_flight: int = 0
    window: int = 0
    retried: int = 0
    resent: int = 0
    replayed: int = 0
    fetched: int = 0


def error_code(error: BaseException) -> str:
    """The code a failure is counted under: the server's, or ours for local failures."""
    code = getattr(error, "code", None)
    if isinstance(code, str) and code:
        return code
    name = type(error).__name__
    return {
        "UpscaleTimeout": "timeout",
        "ConnectionLost": "connectionLost",
        "ClientClosed": "clientClosed",
    }.get(name, name[:1].lower() + name[1:])


class Metrics:
    """The recorder behind ``client.stats()``: plain counters and a latency histogram.

    One recorder per connection, used from its event loop only (no locks). Every method is
    O(1); it keeps nothing per live task (the submit time comes back with the task's end),
    except its model's name while OpenTelemetry is on.

    Args:
        clock: Monotonic time source of the latency window (the event loop's).
        slot_seconds: Width of one slot of the latency window (see :class:`LatencyHistogram`).
        slots: Slots in the latency window.
    """

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.monotonic,
        slot_seconds: float = 10.0,
        slots: int = 6,
    ) -> None:
        self.submitted = 0
        self.succeeded = 0
        self.failed = 0
        self.failed_by_code: dict[str, int] = {}
        self.frames_sent = 0
        self.frames_received = 0
        self.bytes_sent = 0
        self.bytes_received = 0
        self.reconnects = 0
        self.latency = LatencyHistogram(slot_seconds=slot_seconds, slots=slots, clock=clock)
        self.live: Callable[[], Live] = Live
        """Where :meth:`snapshot` reads the figures others own (set by the connection)."""
        self._models: dict[str, str] = {}  # a task's model, kept only for OpenTelemetry
        self._bridge: OpenTelemetryBridge | None = None

    # -- the hot path --------------------------------------------------------------------------

    def task_submitted(self, key: str, model: str = "") -> None:
        """The task ``key`` was handed to the connection (the core keeps the time: the
        events that end the task bring it back, for the latency)."""
        self.submitted += 1
        if self._bridge is not None:
            self._models[key] = model
            self._bridge.submitted(1, model)

    def tasks_submitted(self, keys: list[str], model: str = "") -> None:
        """:meth:`task_submitted` for a batch of tasks, in one call."""
        if self._bridge is not None:
            for key in keys:
                self.task_submitted(key, model)
            return
        self.submitted += len(keys)

    def task_resolved(
        self, key: str, error: BaseException | None, now: float, submitted: float | None = None
    ) -> None:
        """The task ``key``, submitted at ``submitted`` (``None``: unknown, no latency), ended
        at ``now``: with a result when ``error`` is ``None``."""
        latency = None if submitted is None else now - submitted
        if error is None and self._bridge is None:  # the common case, in one call
            self.succeeded += 1
            if latency is not None:
                self.latency.record(latency, now)
            return
        model = self._models.pop(key, "") if self._models else ""
        if error is None:
            self.task_succeeded(latency, model, now)
        else:
            self.task_failed(error_code(error), latency, model, now)

    def tasks_succeeded(self, results: Sequence[TaskResult], now: float) -> None:
        """The tasks of ``results`` (each with its key and submit time) ended with a result at
        ``now``: :meth:`task_resolved`'s success case for a batch, in one call."""
        if self._bridge is not None:
            for result in results:
                self.task_resolved(result.task_uuid, None, now, result.submitted)
            return
        self.succeeded += len(results)
        histogram = self.latency
        if histogram._slot_start <= now < histogram._slot_end:  # counts_at(), in line
            counts = histogram._current
        else:
            counts = histogram.counts_at(now)
        if len(results) == 1:  # one result a frame
            counts[_bisect_left(LATENCY_BOUNDS, now - results[0].submitted)] += 1
            return
        # bucket() in line, once for each run of equal submit times: tasks submitted in one
        # loop turn (one clock read) and answered in one frame share their latency, and the
        # runs are found in C (groupby), where a Python test a task cost ~0.4k instructions.
        for submitted, run in _groupby(map(_SUBMITTED, results)):
            counts[_bisect_left(LATENCY_BOUNDS, now - submitted)] += len(list(run))

    def task_forgotten(self, key: str) -> None:
        """The caller cancelled the task ``key``: it is neither a success nor a failure."""
        if self._models:
            self._models.pop(key, None)

    def task_succeeded(
        self, latency: float | None, model: str = "", now: float | None = None
    ) -> None:
        """A task resolved with a result ``latency`` seconds after it was submitted."""
        self.succeeded += 1
        if latency is not None:
            self.latency.record(latency, now)
        if self._bridge is not None:
            self._bridge.completed(latency, model, None)

    def task_failed(
        self, code: str, latency: float | None = None, model: str = "", now: float | None = None
    ) -> None:
        """A task resolved with the error ``code`` (``latency`` is ``None`` if unknown)."""
        self.failed += 1
        self.failed_by_code[code] = self.failed_by_code.get(code, 0) + 1
        if latency is not None:
            self.latency.record(latency, now)
        if self._bridge is not None:
            self._bridge.completed(latency, model, code)

    def frame_sent(self, size: int) -> None:
        """One message of ``size`` bytes went out."""
        self.frames_sent += 1
        self.bytes_sent += size
        if self._bridge is not None:
            self._bridge.frame("transmit", size)

    def frame_received(self, size: int) -> None:
        """One message of ``size`` bytes came in."""
        self.frames_received += 1
        self.bytes_received += size
        if self._bridge is not None:
            self._bridge.frame("receive", size)

    def reconnected(self) -> None:
        """The connection came back after a drop."""
        self.reconnects += 1
        if self._bridge is not None:
            self._bridge.reconnected()

    # -- reading -------------------------------------------------------------------------------

    def snapshot(self) -> Stats:
        """Freeze the figures, with those read from their owners (:attr:`live`) now."""
        live = self.live()
        return Stats(
            submitted=self.submitted,
            queued=live.queued,
            in_flight=live.in_flight,
            succeeded=self.succeeded,
            failed=self.failed,
            failed_by_code=MappingProxyType(dict(self.failed_by_code)),
            retried=live.retried,
            resent=live.resent,
            replayed=live.replayed,
            fetched=live.fetched,
            frames_sent=self.frames_sent,
            frames_received=self.frames_received,
            bytes_sent=self.bytes_sent,
            bytes_received=self.bytes_received,
            reconnects=self.reconnects,
            window=live.window,
            latency=self.latency.summary(),
        )

    def export_to(self, meter_provider: Any = None) -> OpenTelemetryBridge:
        """Also report every event to OpenTelemetry, from now on.

        Args:
            meter_provider: An ``opentelemetry.metrics.MeterProvider``; ``None`` uses the
                global one (a no-op until an SDK is configured).

        Returns:
            The bridge (its instruments are public, for tests).

        Raises:
            UpscaleError: ``opentelemetry-api`` is not installed; the message names the extra.
        """
        self._bridge = OpenTelemetryBridge(meter_provider, live=lambda: self.live())
        return self._bridge


class OpenTelemetryBridge:
    """The OpenTelemetry instruments of one client (see the module docstring for the table).

    Args:
        meter_provider: The provider to get the meter from; ``None`` for the global one.
        live: Returns the figures owned elsewhere, read when a reader collects.

    Raises:
        UpscaleError: ``opentelemetry-api`` is not installed (the message names the extra).
    """

    def __init__(self, meter_provider: Any = None, *, live: Callable[[], Live] = Live) -> None:
        try:
            from opentelemetry import metrics as otel_metrics
        except ImportError as exc:
            raise UpscaleError(
                "OpenTelemetry metrics need the otel extra: pip install 'upscale-stream[otel]'"
            ) from exc
        from importlib.metadata import version

        provider = meter_provider or otel_metrics.get_meter_provider()
        meter = provider.get_meter("upscale_stream", version("upscale-stream"))
        observation = otel_metrics.Observation
        self.duration = meter.create_histogram(
            "upscale_stream.client.task.duration",
            unit="s",
            description="Time from submitting a task to its result or error.",
            explicit_bucket_boundaries_advisory=list(_OTEL_BOUNDS),
        )
        self.submitted_counter = meter.create_counter(
            "upscale_stream.client.task.submitted", unit="{task}", description="Tasks submitted."
        )
        self.completed_counter = meter.create_counter(
            "upscale_stream.client.task.completed",
            unit="{task}",
            description="Tasks resolved, by outcome.",
        )
        self.frames_counter = meter.create_counter(
            "upscale_stream.client.frames", unit="{frame}", description="WebSocket messages."
        )
        self.io_counter = meter.create_counter(
            "upscale_stream.client.io", unit="By", description="WebSocket message bytes."
        )
        self.reconnects_counter = meter.create_counter(
            "upscale_stream.client.reconnects",
            unit="{reconnect}",
            description="Successful reconnects.",
        )
        reasons = {
            reason: {"upscale.reason": reason}
            for reason in ("retried", "resent", "replayed", "fetched")
        }

        def again(_options: Any) -> list[Any]:
            figures = live()
            return [
                observation(getattr(figures, reason), attributes)
                for reason, attributes in reasons.items()
            ]

        def in_flight(_options: Any) -> list[Any]:
            return [observation(live().in_flight)]

        def window(_options: Any) -> list[Any]:
            return [observation(live().window)]

        meter.create_observable_counter(
            "upscale_stream.client.task.retried",
            callbacks=[again],
            unit="{task}",
            description="Tasks sent again (retried, resent after a drop), replayed or fetched.",
        )
        meter.create_observable_gauge(
            "upscale_stream.client.task.in_flight",
            callbacks=[in_flight],
            unit="{task}",
            description="Tasks sent and not yet answered.",
        )
        meter.create_observable_gauge(
            "upscale_stream.client.window",
            callbacks=[window],
            unit="{task}",
            description="The in-flight window.",
        )
        self._attributes: dict[tuple[str, str | None], Mapping[str, str]] = {}
        self._models: dict[str, Mapping[str, str]] = {}
        self._directions = {
            direction: {"network.io.direction": direction} for direction in ("transmit", "receive")
        }

    def _outcome(self, model: str, code: str | None) -> Mapping[str, str]:
        # Attribute dicts are built once per (model, code) and reused: no allocation per task.
        key = (model, code)
        found = self._attributes.get(key)
        if found is None:
            found = {"upscale.model": _safe(model) if model else "unknown"}
            if code is None:
                found["upscale.outcome"] = "success"
            else:
                found["upscale.outcome"] = "error"
                found["error.type"] = _safe(code)
            if len(self._attributes) < 1000:
                self._attributes[key] = found
        return found

    def submitted(self, count: int, model: str) -> None:
        attributes = self._models.get(model)
        if attributes is None:
            attributes = {"upscale.model": _safe(model) if model else "unknown"}
            if len(self._models) < 1000:
                self._models[model] = attributes
        self.submitted_counter.add(count, attributes)

    def completed(self, latency: float | None, model: str, code: str | None) -> None:
        attributes = self._outcome(model, code)
        self.completed_counter.add(1, attributes)
        if latency is not None:
            self.duration.record(max(0.0, latency), attributes)

    def frame(self, direction: str, size: int) -> None:
        attributes = self._directions[direction]
        self.frames_counter.add(1, attributes)
        self.io_counter.add(size, attributes)

    def reconnected(self) -> None:
        self.reconnects_counter.add(1)
