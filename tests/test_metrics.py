"""The metrics recorder, its snapshot, and the OpenTelemetry bridge (SDK in-memory reader)."""

from __future__ import annotations

import asyncio
import dataclasses
import math
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from upscale_stream.errors import APIError, ClientClosed, ConnectionLost, UpscaleTimeout
from upscale_stream.events import TaskResult
from upscale_stream.metrics import (
    LATENCY_BOUNDS,
    LatencyHistogram,
    Live,
    Metrics,
    Stats,
    error_code,
)
from upscale_stream.results import decode_result

RESULT = decode_result({"taskType": "upscale", "taskUUID": "k", "imageURL": "http://127.0.0.1/a"})


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_fresh_recorder_snapshots_to_zeros_and_no_percentiles():
    stats = Metrics().snapshot()
    assert stats == Stats(latency=stats.latency)
    assert stats.latency.count == 0
    assert stats.latency.p50 is None


def test_the_snapshot_is_frozen_and_does_not_move_with_the_recorder():
    metrics = Metrics()
    metrics.task_failed("invalidModel")
    stats = metrics.snapshot()
    metrics.task_failed("invalidModel")
    metrics.task_succeeded(0.1)
    assert stats.failed == 1
    assert stats.failed_by_code == {"invalidModel": 1}
    with pytest.raises(dataclasses.FrozenInstanceError):
        stats.failed = 5  # type: ignore[misc]
    with pytest.raises(TypeError):
        stats.failed_by_code["x"] = 1  # type: ignore[index]


def test_every_counter_lands_in_its_own_field():
    metrics = Metrics(clock=lambda: 10.5)
    metrics.live = lambda: Live(
        queued=9, in_flight=8, window=64, retried=2, resent=3, replayed=4, fetched=6
    )
    for key in "abcde":
        metrics.task_submitted(key)
    metrics.task_resolved("a", None, 10.2, 10.0)
    metrics.task_resolved("b", UpscaleTimeout("task", seconds=1), 10.5, 10.0)
    metrics.task_resolved("c", APIError("invalidApiKey", "no"), 10.3, 10.0)
    metrics.task_forgotten("d")
    metrics.frame_sent(100)
    metrics.frame_sent(50)
    metrics.frame_received(7)
    metrics.reconnected()
    stats = metrics.snapshot()
    assert stats.as_dict() == {
        "submitted": 5,
        "queued": 9,
        "in_flight": 8,
        "succeeded": 1,
        "failed": 2,
        "failed_by_code": {"timeout": 1, "invalidApiKey": 1},
        "retried": 2,
        "resent": 3,
        "replayed": 4,
        "fetched": 6,
        "frames_sent": 2,
        "frames_received": 1,
        "bytes_sent": 150,
        "bytes_received": 7,
        "reconnects": 1,
        "window": 64,
        "latency": {
            "count": 3,
            "p50": stats.latency.p50,
            "p90": stats.latency.p90,
            "p99": stats.latency.p99,
            "window": 60.0,
        },
    }
    assert stats.latency.p50 == pytest.approx(0.3, rel=0.03)
    assert stats.latency.p99 == pytest.approx(0.5, rel=0.03)
    assert metrics._models == {}  # nothing kept per task (the core holds the submit time)


def test_a_failure_is_counted_under_the_servers_code_or_a_local_one():
    assert error_code(APIError("rateLimitExceeded", "slow down")) == "rateLimitExceeded"
    assert error_code(UpscaleTimeout("task", seconds=1)) == "timeout"
    assert error_code(ConnectionLost("gone")) == "connectionLost"
    assert error_code(ClientClosed("closed")) == "clientClosed"
    assert error_code(ValueError("x")) == "valueError"


def test_percentiles_of_a_known_spread_are_within_the_bucket_error():
    histogram = LatencyHistogram(clock=FakeClock())
    for millis in range(1, 1001):  # 1 ms .. 1 s, uniform
        histogram.record(millis / 1000)
    summary = histogram.summary()
    assert summary.count == 1000
    assert summary.p50 == pytest.approx(0.5, rel=0.03)
    assert summary.p90 == pytest.approx(0.9, rel=0.03)
    assert summary.p99 == pytest.approx(0.99, rel=0.03)


@settings(max_examples=200, deadline=None)
@given(st.floats(min_value=0.0011, max_value=LATENCY_BOUNDS[-1] * 0.99))
def test_one_latency_comes_back_as_every_percentile_within_two_and_a_half_percent(seconds):
    histogram = LatencyHistogram(clock=FakeClock())
    histogram.record(seconds)
    summary = histogram.summary()
    assert summary.p50 == summary.p99
    assert summary.p50 is not None
    assert math.isclose(summary.p50, seconds, rel_tol=0.026)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from([0.0, 0.0004, 0.001, 0.00105, 0.0021, 0.5, 3.0]), max_size=60))
def test_a_batch_of_results_counts_each_latency_in_its_own_bucket(offsets):
    """tasks_succeeded reuses the bucket of a latency equal to the one before it: runs of
    equal latencies and changes between them land exactly as one record() a task would."""
    clock = FakeClock()
    batch, single = Metrics(clock=clock), LatencyHistogram(clock=clock)
    results = []
    for i, offset in enumerate(offsets):
        batch.task_submitted(f"k{i}")
        results.append(TaskResult(f"k{i}", RESULT, clock.now - offset))
        single.record(offset, clock.now)
    batch.tasks_succeeded(results, clock.now)
    assert batch.succeeded == len(results)
    assert batch.latency.counts_at(clock.now) == single.counts_at(clock.now)


def test_latencies_outside_the_buckets_are_clamped_not_lost():
    histogram = LatencyHistogram(clock=FakeClock())
    histogram.record(-1.0)
    histogram.record(1e9)
    summary = histogram.summary()
    assert summary.count == 2
    assert summary.p50 == pytest.approx(0.001)
    assert summary.p99 == LATENCY_BOUNDS[-1]


def test_old_latencies_leave_the_window():
    clock = FakeClock()
    histogram = LatencyHistogram(slot_seconds=10, slots=6, clock=clock)
    histogram.record(5.0)
    clock.now += 30
    histogram.record(0.01)
    assert histogram.summary().count == 2
    clock.now += 40  # the 5 s sample is now 70 s old, the 10 ms one 40 s
    summary = histogram.summary()
    assert summary.count == 1
    assert summary.p99 == pytest.approx(0.01, rel=0.03)
    clock.now += 600
    assert histogram.summary().count == 0


def test_a_slot_reused_after_a_full_turn_starts_empty():
    clock = FakeClock()
    histogram = LatencyHistogram(slot_seconds=1, slots=2, clock=clock)
    histogram.record(1.0)
    clock.now += 2  # same slot index, next turn of the ring
    histogram.record(0.002)
    summary = histogram.summary()
    assert summary.count == 1
    assert summary.p50 == pytest.approx(0.002, rel=0.03)


def test_a_bad_window_is_refused():
    with pytest.raises(ValueError, match="slot_seconds"):
        LatencyHistogram(slot_seconds=0)


# -- OpenTelemetry ---------------------------------------------------------------------------


def _collect(reader: InMemoryMetricReader) -> dict[str, list]:
    data = reader.get_metrics_data()
    found: dict[str, list] = {}
    for resource_metrics in data.resource_metrics:
        for scope in resource_metrics.scope_metrics:
            for metric in scope.metrics:
                found[metric.name] = [metric, list(metric.data.data_points)]
    return found


@pytest.fixture
def otel():
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    yield provider, reader
    provider.shutdown()


def test_opentelemetry_gets_counters_and_a_duration_histogram_in_seconds(otel):
    provider, reader = otel
    metrics = Metrics()
    metrics.live = lambda: Live(in_flight=3, window=64, resent=1, fetched=2)
    metrics.export_to(provider)
    metrics.task_submitted("a", "runware:503@1")
    metrics.task_submitted("b", "runware:501@1")
    metrics.task_resolved("a", None, 0.25, 0.0)
    metrics.task_resolved("b", APIError("invalidUpscaleFactor", "x2 only"), 0.05, 0.0)
    metrics.frame_sent(120)
    metrics.frame_received(80)
    metrics.reconnected()
    found = _collect(reader)

    metric, points = found["upscale_stream.client.task.duration"]
    assert metric.unit == "s"
    by_outcome = {p.attributes["upscale.outcome"]: p for p in points}
    assert by_outcome["success"].sum == pytest.approx(0.25)
    assert dict(by_outcome["error"].attributes) == {
        "upscale.model": "runware:501@1",
        "upscale.outcome": "error",
        "error.type": "invalidUpscaleFactor",
    }
    assert 0.25 in by_outcome["success"].explicit_bounds

    metric, points = found["upscale_stream.client.task.submitted"]
    assert metric.unit == "{task}"
    assert sorted((p.value, p.attributes["upscale.model"]) for p in points) == [
        (1, "runware:501@1"),
        (1, "runware:503@1"),
    ]
    metric, points = found["upscale_stream.client.io"]
    assert metric.unit == "By"
    assert {p.attributes["network.io.direction"]: p.value for p in points} == {
        "transmit": 120,
        "receive": 80,
    }
    again = {
        p.attributes["upscale.reason"]: p.value
        for p in found["upscale_stream.client.task.retried"][1]
    }
    assert again == {"retried": 0, "resent": 1, "replayed": 0, "fetched": 2}
    assert found["upscale_stream.client.reconnects"][1][0].value == 1
    assert found["upscale_stream.client.task.in_flight"][1][0].value == 3
    assert found["upscale_stream.client.window"][1][0].value == 64


def test_no_attribute_can_carry_a_key_a_url_or_image_data(otel):
    provider, reader = otel
    metrics = Metrics()
    metrics.export_to(provider)
    secret = "sk-live-0123456789abcdef"
    bad_values = [
        f"https://example.test/img.png?apiKey={secret}",
        "data:image/png;base64,iVBORw0KGgo=",
        "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk" + secret,
        f"bad code with {secret}",
    ]
    for value in bad_values:
        metrics.task_submitted(value, value)
        metrics.task_failed(value, 0.1, value)
    for _metric, points in _collect(reader).values():
        for point in points:
            for name, attribute in point.attributes.items():
                assert secret not in attribute
                assert "://" not in attribute and "base64" not in attribute
                if name in ("upscale.model", "error.type"):
                    assert attribute == "other", attribute


def test_without_the_otel_extra_the_error_names_it(monkeypatch):
    from upscale_stream.errors import UpscaleError

    monkeypatch.setitem(sys.modules, "opentelemetry", None)  # import fails as if not installed
    with pytest.raises(UpscaleError, match=r"pip install 'upscale-stream\[otel\]'"):
        Metrics().export_to()


def test_without_an_sdk_the_bridge_is_a_harmless_no_op():
    metrics = Metrics()
    metrics.export_to()  # the global provider: a no-op one unless an app configured an SDK
    metrics.task_submitted("a", "runware:503@1")
    metrics.task_resolved("a", None, 0.1, 0.0)
    metrics.frame_sent(10)
    assert metrics.snapshot().succeeded == 1


# -- client.stats() against the reference server ----------------------------------------------


def _png() -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (6, 4), "teal").save(buffer, "PNG")
    return buffer.getvalue()


async def test_client_stats_count_tasks_frames_bytes_and_latency(upscale_server):
    from upscale_stream import UpscaleClient

    async with UpscaleClient(api_key=upscale_server.api_key, url=upscale_server.url) as client:
        assert client.stats().submitted == 0
        outcomes = [o async for o in client.upscale_many([_png()] * 5, factor=2)]
        await client.upscale(_png(), factor=2, delivery_method="async")
        stats = client.stats()
    assert all(o.ok for o in outcomes)
    assert (stats.submitted, stats.succeeded, stats.failed) == (6, 6, 0)
    assert stats.in_flight == 0 and stats.queued == 0
    assert stats.fetched == 1  # the async task's result came through getResponse
    assert stats.latency.count == 6 and stats.latency.p50 is not None
    assert 0 < stats.latency.p50 <= stats.latency.p99 < 30
    assert stats.frames_sent >= 3 and stats.frames_received >= 3  # auth, tasks, polls
    assert stats.bytes_sent > 5 * len(_png()) and stats.bytes_received > 0
    assert stats.window == client.limits.max_in_flight
    assert client.stats() == stats  # after close it still reads the last figures


async def test_client_stats_count_a_reconnect_and_the_replayed_results(upscale_server):
    from upscale_stream import UpscaleClient

    server = upscale_server.server
    server.faults.drop_after_tasks = 3  # accepted and run, then the socket is cut
    async with UpscaleClient(api_key=upscale_server.api_key, url=upscale_server.url) as client:
        outcomes = [o async for o in client.upscale_many([_png()] * 3, factor=2)]
        stats = client.stats()
    assert all(o.ok for o in outcomes)
    assert stats.reconnects == 1
    assert (stats.replayed, stats.resent) == (3, 0)  # the held answers, replayed on resume
    assert stats.succeeded == 3 and stats.failed == 0


async def test_client_stats_count_the_tasks_resent_after_a_server_restart(upscale_server):
    from upscale_stream import UpscaleClient

    server = upscale_server.server
    server.faults.result_delay = 0.5  # still running when the server forgets everything
    async with UpscaleClient(api_key=upscale_server.api_key, url=upscale_server.url) as client:
        running = [asyncio.ensure_future(client.upscale(_png(), factor=2)) for _ in range(2)]
        await server.wait_executions(2)
        server.faults.result_delay = 0
        await server.restart()  # a new session: nothing is replayed, both go again
        await asyncio.gather(*running)
        stats = client.stats()
    assert stats.reconnects == 1
    assert (stats.resent, stats.replayed) == (2, 0)
    assert stats.succeeded == 2


async def test_a_failed_task_is_counted_under_the_servers_code(upscale_server):
    from upscale_stream import UpscaleClient
    from upscale_stream.errors import UpscaleError

    async with UpscaleClient(api_key=upscale_server.api_key, url=upscale_server.url) as client:
        with pytest.raises(UpscaleError):
            await client.upscale(b"not an image at all, but long enough" * 3, factor=2)
        stats = client.stats()
    # Refused before sending (InvalidTask) or by the server: either way nothing succeeded.
    assert stats.succeeded == 0


async def test_the_client_reports_to_opentelemetry_once_asked(upscale_server, otel):
    from upscale_stream import UpscaleClient

    provider, reader = otel
    async with UpscaleClient(api_key=upscale_server.api_key, url=upscale_server.url) as client:
        client.export_metrics(provider)
        await client.upscale(_png(), factor=2, model="runware:503@1")
    found = _collect(reader)
    [point] = found["upscale_stream.client.task.duration"][1]
    assert dict(point.attributes) == {
        "upscale.model": "runware:503@1",
        "upscale.outcome": "success",
    }
    assert point.count == 1
    assert found["upscale_stream.client.task.in_flight"][1][0].value == 0


async def test_client_stats_count_the_retries_of_transient_errors(upscale_server):
    from upscale_stream import UpscaleClient

    server = upscale_server.server
    server.faults.transient_error_every = 1  # every first attempt gets a transient error
    async with UpscaleClient(api_key=upscale_server.api_key, url=upscale_server.url) as client:
        images = [_png_of(i) for i in range(3)]  # distinct inputs: one first attempt each
        outcomes = [o async for o in client.upscale_many(images, factor=2)]
        stats = client.stats()
    assert all(o.ok for o in outcomes)
    assert stats.retried == 3 and stats.succeeded == 3 and stats.failed == 0


def _png_of(seed: int) -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (5 + seed, 4), (seed * 40, 90, 200)).save(buffer, "PNG")
    return buffer.getvalue()
