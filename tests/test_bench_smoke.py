"""Smoke tests of the benchmark harness in ``benchmarks/``: tiny N, loopback only, no timing.

They keep the harness working as the client changes: the stub server speaks the protocol, each
contender finishes every task and prints its one JSON line, and the harness writes a report even
when a contender fails. The official SDK contenders are left out (installing them needs the
package index).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from benchmarks.harness import CONTENDER_DIR, REPO_ROOT, StubServer, contender_env
from benchmarks.scenarios import CONTENDERS, Scenario
from websockets.sync.client import connect

REPORT_KEYS = {
    "tasks",
    "ok",
    "failed",
    "wall_s",
    "cpu_s",
    "lat_p50_ms",
    "lat_p99_ms",
    "peak_rss_mib",
}
TASKS = 200
PROCESS_TIMEOUT_S = 60


def upscale_stream_client_importable() -> bool:
    """Whether our client can be imported by the test interpreter (else its tests skip)."""
    module = pytest.importorskip("upscale_stream")
    if not hasattr(module, "UpscaleClient"):
        pytest.skip("upscale_stream has no UpscaleClient yet")
    return True


@pytest.fixture
def stub(tmp_path: Path) -> Iterator[StubServer]:
    """A stub server on 127.0.0.1 with a little latency and 7 results per frame."""
    scenario = Scenario("smoke", "smoke test", tasks=TASKS, latency_ms=5.0, group=7)
    with StubServer(scenario, tmp_path) as server:
        yield server


def run_contender(script: str, url: str, *options: str, key: str = "floor") -> dict[str, Any]:
    """Run one contender script to completion and return its parsed report line."""
    command = [
        sys.executable,
        str(CONTENDER_DIR / script),
        "--url", url,
        "--tasks", str(TASKS),
        "--window", "64",
        "--batch", "16",
        *options,
    ]  # fmt: skip
    proc = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=PROCESS_TIMEOUT_S,
        env=contender_env(CONTENDERS[key]),
        cwd=REPO_ROOT,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1, proc.stdout
    line = json.loads(lines[0])
    assert isinstance(line, dict)
    return line


def assert_complete(line: dict[str, Any]) -> None:
    """The report line has the common shape and every task succeeded."""
    assert line.keys() >= REPORT_KEYS
    assert line["tasks"] == TASKS
    assert line["ok"] == TASKS
    assert line["failed"] == 0
    for key in ("wall_s", "cpu_s", "peak_rss_mib"):
        assert isinstance(line[key], float | int)


def test_raw_floor_completes_every_task_against_the_stub(stub: StubServer) -> None:
    start = stub.stats_lines()
    line = run_contender("raw_floor.py", stub.url)
    assert_complete(line)
    assert line["lat_p99_ms"] is not None
    stats = stub.stats_since(start)
    assert stats["tasks"] == TASKS
    assert stats["results_sent"] == TASKS


def test_the_lean_per_caller_yardstick_completes_every_task_against_the_stub(
    stub: StubServer,
) -> None:
    start = stub.stats_lines()
    line = run_contender("lean_callers.py", stub.url)
    assert_complete(line)
    assert line["lat_p99_ms"] is not None
    stats = stub.stats_since(start)
    assert stats["tasks"] == TASKS  # each task sent once, none left behind by its caller
    assert stats["results_sent"] == TASKS


def test_raw_floor_completes_a_paced_run_with_a_data_uri_input(
    stub: StubServer, tmp_path: Path
) -> None:
    from benchmarks.noise_png import write_noise_png

    png = write_noise_png(tmp_path / "in.png", size=16)
    line = run_contender("raw_floor.py", stub.url, "--input", str(png), "--rate", "5000")
    assert_complete(line)


def test_stub_speaks_auth_ping_sync_async_and_get_response(stub: StubServer) -> None:
    def exchange(ws: Any, tasks: list[dict[str, Any]]) -> dict[str, Any]:
        ws.send(json.dumps(tasks))
        reply = json.loads(ws.recv(timeout=10))
        assert isinstance(reply, dict)
        return reply

    session = "0f0f0f0f-1111-4222-8333-444444444444"
    with connect(stub.url, open_timeout=10, proxy=None) as ws:
        auth = exchange(
            ws, [{"taskType": "authentication", "apiKey": "k", "connectionSessionUUID": session}]
        )
        assert auth == {"data": [{"taskType": "authentication", "connectionSessionUUID": session}]}
        assert exchange(ws, [{"taskType": "ping", "ping": True}]) == {
            "data": [{"taskType": "ping", "pong": True}]
        }
        legacy = exchange(
            ws, [{"taskType": "imageUpscale", "taskUUID": "t-sync", "inputImage": "x"}]
        )
        [item] = legacy["data"]
        assert item["taskType"] == "imageUpscale"
        assert item["taskUUID"] == "t-sync"
        assert item["imageURL"].startswith("https://")
        assert {"imageUUID", "inputImageUUID"} <= item.keys()
        async_task = {
            "taskType": "upscale",
            "taskUUID": "t-async",
            "inputs": {"image": "x"},
            "deliveryMethod": "async",
        }
        ack = exchange(ws, [async_task])
        assert ack == {"data": [{"taskType": "upscale", "taskUUID": "t-async"}]}
        polled: dict[str, Any] = {}
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # due 5 ms after receipt: poll as a client would
            polled = exchange(ws, [{"taskType": "getResponse", "taskUUID": "t-async"}])
            if polled["data"][0]["status"] == "success":
                break
            assert polled["data"][0] == {
                "taskType": "upscale",
                "taskUUID": "t-async",
                "status": "processing",
            }
        [done] = polled["data"]
        assert done["status"] == "success"
        assert done["taskUUID"] == "t-async"
        assert "imageURL" in done
        unknown = exchange(ws, [{"taskType": "getResponse", "taskUUID": "t-async"}])
        assert set(unknown) == {"errors"}
        assert unknown["errors"][0]["taskUUID"] == "t-async"


def test_upscale_stream_contender_completes_every_task(stub: StubServer) -> None:
    upscale_stream_client_importable()
    assert_complete(run_contender("upscale_stream_client.py", stub.url, "--uvloop", key="us-tuned"))
    assert_complete(run_contender("upscale_stream_client.py", stub.url, "--defaults"))
    soak = run_contender(
        "upscale_stream_client.py", stub.url, "--soak", "--rss-interval", "0.05", key="us-soak"
    )
    assert_complete(soak)
    assert len(soak["rss_samples"]) >= 2
    assert isinstance(soak["rss_growth_mib"], float | int)


def test_harness_writes_a_report_even_when_a_contender_fails(tmp_path: Path) -> None:
    out = tmp_path / "out"
    command = [
        sys.executable, "-m", "benchmarks.harness",
        "--tasks", "100",
        "--only", "zero-g50,datauri,halfload,soak",
        "--contenders", "floor,us-tuned,us-soak",
        "--repeat", "1",
        "--timeout", "60",
        "--no-chart",
        "--out-dir", str(out),
    ]  # fmt: skip
    proc = subprocess.run(
        command, capture_output=True, text=True, timeout=240, cwd=REPO_ROOT, check=False
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    report = (out / "RESULTS.md").read_text()
    assert "## zero-g50" in report
    assert "## soak" in report
    by_key = {(r["scenario"], r["contender"]): r for r in results["records"]}
    for scenario in ("zero-g50", "datauri", "halfload", "soak"):
        assert by_key[(scenario, "floor")]["status"] == "ok", by_key[(scenario, "floor")]
        assert by_key[(scenario, "floor")]["report"]["ok"] == 100
    ours = [by_key[("zero-g50", "us-tuned")], by_key[("soak", "us-soak")]]
    try:
        upscale_stream_client_importable()
    except pytest.skip.Exception:
        # before the client exists its rows must say why they failed, not crash the harness
        assert all(r["status"] == "failed" and r.get("stderr_tail") for r in ours)
    else:
        assert all(r["status"] == "ok" for r in ours), [r.get("stderr_tail") for r in ours]


@pytest.mark.parametrize("result_as", ["base64Data", "URL"])
def test_bytes_path_contenders_move_every_image_end_to_end(tmp_path: Path, result_as: str) -> None:
    from benchmarks.noise_png import write_bytes_inputs

    upscale_stream_client_importable()
    inputs = tmp_path / "inputs"
    write_bytes_inputs(inputs, count=4)
    scenario = Scenario("bytes", "smoke", tasks=TASKS, bytes_path=result_as, result_image_px=64)  # type: ignore[arg-type]
    with StubServer(scenario, tmp_path) as server:
        for script, key in (
            ("raw_bytes_floor.py", "bytes-floor"),
            ("upscale_stream_client.py", "us-bytes"),
        ):
            out = tmp_path / f"out-{key}"
            options = [
                "--input-dir",
                str(inputs),
                "--out-dir",
                str(out),
                "--output-type",
                result_as,
            ]
            if key == "us-bytes":
                options += ["--api", "many"]
            line = run_contender(script, server.url, *options, key=key)
            assert_complete(line)
            written = sorted(out.iterdir())
            assert written and written[0].read_bytes().startswith(b"\x89PNG")
            assert line["payload_bytes_out"] == TASKS * written[0].stat().st_size
            assert line["payload_bytes_in"] > TASKS * 90_000


def test_upscale_many_contender_reports_latency_from_due_times_when_paced(
    stub: StubServer,
) -> None:
    upscale_stream_client_importable()
    line = run_contender(
        "upscale_stream_client.py", stub.url, "--api", "many", "--rate", "4000", key="us-many"
    )
    assert_complete(line)
    assert line["wall_s"] >= (TASKS - 1) / 4000
    assert line["lat_p50_ms"] >= 5.0  # the stub's latency, counted from each due time


def test_the_report_shows_each_instruction_count_against_its_own_floor() -> None:
    from benchmarks.report import instruction_lines

    def row(label: str, group: int, uvloop: bool, count: int) -> dict[str, Any]:
        return {"label": label, "group": group, "uvloop": uvloop, "instructions_per_task": count}

    rows = [
        row("raw floor + uvloop", 50, True, 40000),
        row("upscale() + uvloop", 50, True, 50000),
        row("raw floor + uvloop", 1, True, 80000),
        row("upscale() + uvloop", 1, True, 96000),
        row("upscale()", 50, False, 60000),
    ]
    lines = instruction_lines({"instructions": rows})
    assert "## Instructions per task (callgrind)" in lines
    assert "| upscale() + uvloop | 50 | 50,000 | 1.25x |" in lines
    assert "| upscale() + uvloop | 1 | 96,000 | 1.20x |" in lines
    assert "| upscale() | 50 | 60,000 | - |" in lines  # no asyncio floor counted: no ratio
    assert instruction_lines({}) == []
