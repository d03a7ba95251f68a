"""The end-of-run summary: failure reasons, the JSON file, and the text."""

from __future__ import annotations

import errno
from pathlib import Path

import orjson
import pytest

from upscale_stream.cli.summary import Failure, RunSummary, failure_from, render_text, write_summary
from upscale_stream.errors import (
    APIError,
    ClientClosed,
    ConnectionLost,
    InvalidTask,
    UpscaleError,
    UpscaleTimeout,
)

TASK = "6a1f0e3c-3a52-4a5e-9d35-0c8e1c3b2a10"


@pytest.mark.parametrize(
    ("error", "code", "message"),
    [
        (
            APIError("invalidInputImage", "cannot decode", task_uuid=TASK),
            "invalidInputImage",
            "cannot decode",
        ),
        (
            InvalidTask(
                "the PNG data is corrupt",
                parameter="inputImage",
                value="a.png",
                code="corruptImage",
            ),
            "corruptImage",
            "inputImage='a.png': the PNG data is corrupt",
        ),
        (
            UpscaleTimeout("task", seconds=2.0, task_uuid=TASK),
            "timeout",
            f"task timed out after 2 s [task {TASK}]",
        ),
        (ConnectionLost("gave up"), "connectionLost", "gave up"),
        (ClientClosed("cancelled"), "cancelled", "cancelled"),
        (
            IsADirectoryError(errno.EISDIR, "Is a directory", "/out/a.jpg"),
            "writeFailed",
            "cannot write /out/a.jpg: Is a directory",
        ),
        (UpscaleError("download failed"), "error", "download failed"),
    ],
)
def test_each_kind_of_error_becomes_a_code_and_a_message(
    error: BaseException, code: str, message: str
) -> None:
    failure = failure_from("/in/a.png", error, TASK)
    assert (failure.input, failure.code, failure.message) == ("/in/a.png", code, message)
    assert failure.task_uuid == TASK


def summary(**fields: object) -> RunSummary:
    base = RunSummary(out_dir="out", server="embedded", started_at="2025-01-01T00:00:00+00:00")
    for name, value in fields.items():
        setattr(base, name, value)
    return base


def test_the_json_has_totals_throughput_and_every_failure() -> None:
    failures = [Failure("/in/bad.png", "corruptImage", "truncated", None)]
    body = summary(
        inputs=5, skipped=1, succeeded=3, failed=1, wall_seconds=2.0, failures=failures
    ).to_dict()
    assert body["inputs"] == 5 and body["skipped"] == 1
    assert body["succeeded"] == 3 and body["failed"] == 1
    assert body["tasksPerSecond"] == 2.0
    assert body["failures"] == [
        {"input": "/in/bad.png", "code": "corruptImage", "message": "truncated", "taskUUID": None}
    ]
    assert "cost" not in body


def test_the_cost_appears_only_when_it_was_requested() -> None:
    assert summary(cost=0.0123).to_dict()["cost"] == 0.0123
    assert "cost $0.0123" in render_text(summary(cost=0.0123), summary_path=None)
    assert "cost" not in render_text(summary(), summary_path=None)


def test_the_text_lists_failures_with_code_and_message_and_points_at_the_files(
    tmp_path: Path,
) -> None:
    text = render_text(
        summary(
            inputs=2,
            succeeded=1,
            failed=1,
            failures=[Failure("/in/bad.png", "corruptImage", "the PNG data is truncated")],
        ),
        summary_path=tmp_path / "summary.json",
    )
    assert text.splitlines()[0] == "done: 2 inputs: 1 succeeded, 1 failed"
    assert "  /in/bad.png: corruptImage: the PNG data is truncated" in text
    assert f"summary: {tmp_path / 'summary.json'}" in text
    assert "outputs: out" in text


def test_an_interrupted_run_says_so_and_lists_what_is_pending() -> None:
    text = render_text(
        summary(inputs=4, succeeded=1, interrupted=True, pending=["/in/b.png"], not_started=2),
        summary_path=None,
        quiet=True,
    )
    assert text.splitlines()[0] == (
        "interrupted: 4 inputs: 1 succeeded, 0 failed, 1 pending, 2 not started"
    )
    assert "  /in/b.png" in text
    assert "wall time" not in text


def test_the_summary_file_is_written_atomically_as_json(tmp_path: Path) -> None:
    path = write_summary(tmp_path / "state" / "summary.json", summary(succeeded=2))
    assert orjson.loads(path.read_bytes())["succeeded"] == 2
    assert [p.name for p in path.parent.iterdir()] == ["summary.json"]


def test_the_client_figures_appear_in_the_json_and_the_text() -> None:
    from upscale_stream.metrics import Live, Metrics

    metrics = Metrics(clock=lambda: 1.0)
    metrics.live = lambda: Live(window=64)
    metrics.task_submitted("a")
    metrics.task_submitted("b")
    metrics.task_resolved("a", None, 0.62, 0.5)
    metrics.task_resolved("b", UpscaleTimeout("task", seconds=0.5), 1.0, 0.5)
    metrics.frame_sent(1500)
    metrics.frame_received(800)
    metrics.reconnected()
    done = summary(client=metrics.snapshot())
    client = done.to_dict()["client"]
    assert client["framesSent"] == 1 and client["bytesReceived"] == 800
    assert client["reconnects"] == 1 and client["failedByCode"] == {"timeout": 1}
    assert client["latency"]["count"] == 2 and client["window"] == 64
    text = render_text(done, summary_path=None)
    assert "client: 1 frames out (2 KB), 1 in (800 B), 1 reconnects" in text
    assert "latency p50 " in text and " ms, p99 " in text
    assert "client" not in summary().to_dict()


def test_the_summary_names_the_job_the_engine_and_what_was_recovered() -> None:
    summary = RunSummary(
        out_dir="out", server="embedded", started_at="t", job_id="j-1", engine="ray", recovered=2
    )
    body = summary.to_dict()
    assert (body["jobId"], body["engine"], body["recovered"]) == ("j-1", "ray", 2)
