"""``upscale-stream run`` end to end, against the real reference server.

Flags are checked on the wire through a recording proxy; resume and Ctrl-C are checked by
killing a real ``upscale-stream`` process half-way and counting what the server received.
"""

from __future__ import annotations

import asyncio
import functools
import http.server
import io
import re
import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from upscale_stream.cli import main
from upscale_stream.cli.run import choose_endpoint, display_url
from upscale_stream.config import DEFAULT_URL
from upscale_stream.models import CCSR, CLARITY, SD_LATENT_UPSCALER, SWINIR
from upscale_stream.testing import TEST_API_KEY, LocalServer

from .helpers import (
    HttpSink,
    RecordingProxy,
    image_size,
    manifest_lines,
    part_files,
    run_cli,
    server_args,
    summary_of,
    write_corrupt_png,
    write_image,
)

ABSENT = object()
EMBEDDED_LINE = re.compile(
    r"No RUNWARE_API_KEY: using the embedded local server at ws://127\.0\.0\.1:\d+/v1 "
    r"\(real Pillow upscaling, nothing leaves this machine\)"
)


def images(folder: Path, count: int, size: tuple[int, int] = (12, 8)) -> list[Path]:
    return [write_image(folder / f"img-{i:02d}.png", size, colour=i * 7) for i in range(count)]


@pytest.fixture
def static_site(tmp_path: Path) -> Iterator[str]:
    """An HTTP server for the files of ``tmp_path/site``."""
    (tmp_path / "site").mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

    handler = functools.partial(Quiet, directory=str(tmp_path / "site"))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


# -- the embedded default ------------------------------------------------------------------


def test_with_no_url_and_no_key_the_embedded_server_upscales_for_real_and_says_so_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "in"
    write_image(source / "a.png", (20, 10))
    write_image(source / "sub" / "b.webp", (8, 6), image_format="WEBP")
    out = tmp_path / "out"

    assert main(["run", str(source), "--out", str(out)]) == 0

    assert image_size(out / "a.jpg") == (40, 20)
    assert image_size(out / "sub" / "b.jpg") == (16, 12)
    err = capsys.readouterr().err
    announced = [line for line in err.splitlines() if "embedded" in line]
    assert len(announced) == 1
    assert EMBEDDED_LINE.fullmatch(announced[0])


async def test_with_runware_api_key_set_the_cli_uses_that_server_not_the_embedded_one(
    wire: RecordingProxy,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("RUNWARE_API_KEY", TEST_API_KEY)
    monkeypatch.setenv("RUNWARE_URL", wire.url)
    write_image(tmp_path / "a.png")

    assert await run_cli(["run", str(tmp_path / "a.png"), "--out", str(tmp_path / "out")]) == 0

    assert len(wire.tasks) == 1
    assert wire.auth_frames[0]["apiKey"] == TEST_API_KEY
    assert "embedded" not in capsys.readouterr().err


def test_the_server_is_chosen_from_flags_then_environment_then_embedded() -> None:
    none: dict[str, str] = {}
    assert choose_endpoint(url=None, api_key=None, embedded=False, environ=none).embedded
    real = choose_endpoint(
        url=None, api_key=None, embedded=False, environ={"RUNWARE_API_KEY": "k1"}
    )
    assert (real.url, real.api_key) == (DEFAULT_URL, "k1")
    flagged = choose_endpoint(
        url="ws://h/v1", api_key="k2", embedded=False, environ={"RUNWARE_API_KEY": "k1"}
    )
    assert (flagged.url, flagged.api_key) == ("ws://h/v1", "k2")
    forced = choose_endpoint(
        url=None, api_key=None, embedded=True, environ={"RUNWARE_API_KEY": "k"}
    )
    assert forced.embedded and forced.reason == "--embedded"


# -- every flag on the wire ----------------------------------------------------------------

WIRE_CASES: list[tuple[list[str], dict[str, Any]]] = [
    (
        [],
        {
            "taskType": "upscale",
            "model": SWINIR,
            "upscaleFactor": 2,
            "deliveryMethod": "sync",
            "outputType": ABSENT,
            "outputFormat": ABSENT,
            "outputQuality": ABSENT,
            "includeCost": ABSENT,
            "ttl": ABSENT,
            "settings": ABSENT,
        },
    ),
    (["--factor", "4"], {"upscaleFactor": 4}),
    (["--model", "clarity"], {"model": CLARITY}),
    (["--model", "ccsr"], {"model": CCSR}),
    (["--model", "sd-latent"], {"model": SD_LATENT_UPSCALER}),
    (["--model", "runware:503@1", "--factor", "4"], {"model": SWINIR, "upscaleFactor": 4}),
    (["--format", "png"], {"outputFormat": "PNG"}),
    (["--format", "webp"], {"outputFormat": "WEBP"}),
    (["--quality", "42"], {"outputQuality": 42}),
    (["--output-type", "base64Data"], {"outputType": "base64Data"}),
    (["--output-type", "datauri"], {"outputType": "dataURI"}),
    (["--output-type", "URL", "--ttl", "120"], {"outputType": "URL", "ttl": 120}),
    (["--delivery", "async"], {"deliveryMethod": "async"}),
    (["--include-cost"], {"includeCost": True}),
    (
        ["--model", "clarity", "--setting", "steps=12", "--setting", "strength=0.4"],
        {"settings": {"steps": 12, "strength": 0.4}},
    ),
    (
        ["--model", "sd-latent", "--setting", "clipSkip=1", "--setting", "positivePrompt=sharp"],
        {"settings": {"clipSkip": 1, "positivePrompt": "sharp"}},
    ),
]


@pytest.mark.parametrize(("flags", "expected"), WIRE_CASES, ids=lambda v: " ".join(v) or "none")
async def test_each_task_flag_is_on_the_wire_and_the_result_is_written(
    wire: RecordingProxy, tmp_path: Path, flags: list[str], expected: dict[str, Any]
) -> None:
    write_image(tmp_path / "in" / "a.png", (10, 6))
    out = tmp_path / "out"

    code = await run_cli(
        ["run", str(tmp_path / "in"), "--out", str(out), *server_args(wire, TEST_API_KEY), *flags]
    )

    assert code == 0
    [task] = wire.tasks
    for field, value in expected.items():
        assert task.get(field, ABSENT) == value, field
    [output] = [p for p in out.iterdir() if p.is_file()]
    extension = {"PNG": ".png", "WEBP": ".webp"}.get(task.get("outputFormat", ""), ".jpg")
    assert output.suffix == extension
    factor = task["upscaleFactor"]
    assert image_size(output) == (10 * factor, 6 * factor)


async def test_include_cost_records_each_cost_and_the_summary_adds_them_up(
    wire: RecordingProxy, tmp_path: Path
) -> None:
    images(tmp_path / "in", 3, size=(300, 200))  # costs are per megapixel of output
    out = tmp_path / "out"

    argv = ["run", str(tmp_path / "in"), "--out", str(out), "--include-cost"]
    code = await run_cli([*argv, *server_args(wire, TEST_API_KEY)])

    assert code == 0
    costs = [line["cost"] for line in manifest_lines(out)]
    assert len(costs) == 3 and all(cost > 0 for cost in costs)
    assert summary_of(out)["cost"] == pytest.approx(sum(costs))


async def test_webhook_url_and_upload_endpoint_are_sent_and_the_server_calls_both(
    wire: RecordingProxy, http_sink: HttpSink, tmp_path: Path
) -> None:
    write_image(tmp_path / "a.png")
    out = tmp_path / "out"
    hook, upload = f"{http_sink.url}/hook?token=t1", f"{http_sink.url}/upload/a.jpg"

    argv = ["run", str(tmp_path / "a.png"), "--out", str(out)]
    argv += ["--webhook-url", hook, "--upload-endpoint", upload]
    code = await run_cli([*argv, *server_args(wire, TEST_API_KEY)])

    assert code == 0
    [task] = wire.tasks
    assert (task["webhookURL"], task["uploadEndpoint"]) == (hook, upload)
    await asyncio.to_thread(http_sink.wait_for, "POST")
    await asyncio.to_thread(http_sink.wait_for, "PUT")
    [put] = [r for r in http_sink.requests if r[0] == "PUT"]
    assert put[1] == "/upload/a.jpg" and put[2] == (out / "a.jpg").read_bytes()
    [post] = [r for r in http_sink.requests if r[0] == "POST"]
    assert post[1] == "/hook?token=t1" and task["taskUUID"].encode() in post[2]


async def test_batch_caps_tasks_per_frame_and_concurrency_caps_tasks_in_flight(
    upscale_server: LocalServer, wire: RecordingProxy, tmp_path: Path, static_site: str
) -> None:
    # URL inputs need no preparation in a thread, so several tasks are ready in the same
    # event-loop turn and the client may pack them into one frame.
    upscale_server.server.faults.result_delay = 0.05
    for i in range(12):
        write_image(tmp_path / "site" / f"u{i:02d}.png", colour=i * 9)
    listing = tmp_path / "urls.txt"
    listing.write_text("".join(f"{static_site}/u{i:02d}.png\n" for i in range(12)))

    argv = ["run", f"@{listing}", "--out", str(tmp_path / "out"), "--batch", "2"]
    argv += ["--concurrency", "5"]
    code = await run_cli([*argv, *server_args(wire, TEST_API_KEY)])

    assert code == 0
    per_frame = [
        sum(1 for item in frame if item.get("taskType") == "upscale")
        for frame in wire.sent
        if isinstance(frame, list)
    ]
    assert sum(per_frame) == 12
    assert max(per_frame) == 2
    assert wire.max_outstanding == 5
    assert len(list((tmp_path / "out").glob("u*.jpg"))) == 12


async def test_a_task_slower_than_timeout_fails_with_that_reason(
    upscale_server: LocalServer, tmp_path: Path
) -> None:
    upscale_server.server.faults.result_delay = 30
    write_image(tmp_path / "a.png")
    out = tmp_path / "out"

    argv = ["run", str(tmp_path / "a.png"), "--out", str(out), "--timeout", "0.3"]
    code = await run_cli([*argv, *server_args(upscale_server, TEST_API_KEY)])

    assert code == 1
    [failure] = summary_of(out)["failures"]
    assert failure["code"] == "timeout"
    assert "timed out after 0.3 s" in failure["message"]


async def test_the_api_key_is_sent_but_never_printed_logged_or_written(
    wire: RecordingProxy, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_image(tmp_path / "a.png")
    write_corrupt_png(tmp_path / "b.png")
    out = tmp_path / "out"

    argv = ["run", str(tmp_path), "--out", str(out), "-vv", "--progress-interval", "0"]
    code = await run_cli([*argv, *server_args(wire, TEST_API_KEY)])

    assert code == 1
    assert wire.auth_frames[0]["apiKey"] == TEST_API_KEY
    captured = capsys.readouterr()
    assert "written" in captured.err  # -vv really logged
    assert TEST_API_KEY not in captured.out + captured.err
    written = [p for p in out.rglob("*") if p.is_file()]
    assert {p.name for p in written} >= {"manifest.jsonl", "summary.json", "a.jpg"}
    for path in written:
        assert TEST_API_KEY.encode() not in path.read_bytes(), path


async def test_a_rejected_key_stops_the_run_with_exit_code_1_and_says_why(
    upscale_server: LocalServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_image(tmp_path / "a.png")
    out = tmp_path / "out"

    argv = ["run", str(tmp_path / "a.png"), "--out", str(out)]
    code = await run_cli([*argv, *server_args(upscale_server, "wrong-key-123456")])

    assert code == 1
    assert "cannot use the server at" in summary_of(out)["error"]
    assert "error: cannot use the server" in capsys.readouterr().out
    assert "wrong-key-123456" not in (out / ".upscale-stream" / "summary.json").read_text()


# -- failures --------------------------------------------------------------------------------


async def test_bad_inputs_fail_alone_with_the_reason_and_the_exit_code_is_1(
    upscale_server: LocalServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "in"
    write_image(source / "good.png", (10, 10))
    write_corrupt_png(source / "corrupt.png")
    unknown_uuid = "0f8fad5b-d9cb-469f-a165-70867728950e"
    out = tmp_path / "out"

    argv = ["run", str(source), unknown_uuid, "--out", str(out)]
    code = await run_cli([*argv, *server_args(upscale_server, TEST_API_KEY)])

    assert code == 1
    assert image_size(out / "good.jpg") == (20, 20)
    failures = {Path(f["input"]).name: f for f in summary_of(out)["failures"]}
    assert failures["corrupt.png"]["code"] == "corruptImage"
    assert failures["corrupt.png"]["taskUUID"] is None  # rejected before it was sent
    by_server = failures[unknown_uuid]
    assert by_server["code"] == "invalidInputImage"
    assert "no image" in by_server["message"] and by_server["taskUUID"]
    text = capsys.readouterr().out
    assert "done: 3 inputs: 1 succeeded, 2 failed" in text
    assert f"{unknown_uuid}: invalidInputImage: {by_server['message']}" in text


async def test_fail_fast_sends_no_new_task_after_the_first_failure(
    upscale_server: LocalServer, tmp_path: Path
) -> None:
    write_corrupt_png(tmp_path / "in" / "0-corrupt.png")
    images(tmp_path / "in", 5)
    out = tmp_path / "out"

    argv = ["run", str(tmp_path / "in"), "--out", str(out), "--fail-fast", "--concurrency", "1"]
    code = await run_cli([*argv, *server_args(upscale_server, TEST_API_KEY)])

    assert code == 1
    assert upscale_server.server.counts.received_total == 0
    summary = summary_of(out)
    assert (summary["failed"], summary["notStarted"]) == (1, 5)


async def test_a_write_that_fails_fails_that_input_only_and_leaves_no_partial_file(
    upscale_server: LocalServer, tmp_path: Path
) -> None:
    images(tmp_path / "in", 3)
    out = tmp_path / "out"
    (out / "img-01.jpg").mkdir(parents=True)  # the rename onto a folder must fail

    code = await run_cli(
        ["run", str(tmp_path / "in"), "--out", str(out), *server_args(upscale_server, TEST_API_KEY)]
    )

    assert code == 1
    [failure] = summary_of(out)["failures"]
    assert failure["code"] == "writeFailed" and "img-01.jpg" in failure["message"]
    assert sorted(line["output"] for line in manifest_lines(out)) == ["img-00.jpg", "img-02.jpg"]
    assert part_files(out) == []


# -- output ----------------------------------------------------------------------------------


def test_without_a_terminal_progress_is_plain_lines_and_the_summary_goes_to_stdout(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    images(tmp_path / "in", 3)
    out = tmp_path / "out"

    assert main(["run", str(tmp_path / "in"), "--out", str(out), "--progress-interval", "0"]) == 0

    captured = capsys.readouterr()
    assert "\x1b[" not in captured.out + captured.err
    assert re.search(r"^progress: 3/3 done \(3 ok, 0 failed\), [\d.]+ tasks/s", captured.err, re.M)
    assert captured.out.splitlines()[0] == "done: 3 inputs: 3 succeeded, 0 failed"
    assert f"summary: {out / '.upscale-stream' / 'summary.json'}" in captured.out


def test_quiet_gives_plain_progress_and_a_short_summary(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    images(tmp_path / "in", 2)

    code = main(["run", str(tmp_path / "in"), "--out", str(tmp_path / "out"), "--quiet"])

    captured = capsys.readouterr()
    assert code == 0
    assert captured.out == "done: 2 inputs: 2 succeeded, 0 failed\n"
    assert "progress: 2/2 done" in captured.err


def test_json_prints_the_summary_json_and_nothing_else_on_stdout(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    images(tmp_path / "in", 2)
    out = tmp_path / "out"

    assert main(["run", str(tmp_path / "in"), "--out", str(out), "--json"]) == 0

    printed = orjson.loads(capsys.readouterr().out)
    assert printed == summary_of(out)
    assert printed["succeeded"] == 2 and printed["exitCode"] == 0
    assert printed["tasksPerSecond"] > 0 and printed["wallSeconds"] > 0
    client = printed["client"]  # client.stats() at the end of the run
    assert (client["submitted"], client["succeeded"], client["failed"]) == (2, 2, 0)
    assert client["framesSent"] >= 2 and client["latency"]["count"] == 2
    assert printed["bytesOut"] == sum(line["bytesOut"] for line in manifest_lines(out))


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_on_a_terminal_a_rich_progress_bar_is_drawn(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stdout", terminal)
    images(tmp_path / "in", 2)

    assert main(["run", str(tmp_path / "in"), "--out", str(tmp_path / "out")]) == 0

    drawn = terminal.getvalue()
    assert "\x1b[" in drawn
    for part in ("2/2", "0 failed", "in flight", "/s", "ETA"):
        assert part in drawn


def test_inputs_can_come_from_stdin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    a, b = images(tmp_path / "in", 2)
    monkeypatch.setattr(sys, "stdin", io.StringIO(f"{a}\n\n{b}\n"))

    assert main(["run", "-", "--out", str(tmp_path / "out")]) == 0

    assert sorted(p.name for p in (tmp_path / "out").glob("*.jpg")) == ["img-00.jpg", "img-01.jpg"]


def test_a_list_file_mixes_files_and_urls_and_url_outputs_are_named_after_the_url(
    tmp_path: Path, static_site: str
) -> None:
    write_image(tmp_path / "site" / "remote cat.png", (9, 9))
    local = write_image(tmp_path / "local.webp", (5, 5), image_format="WEBP")
    listing = tmp_path / "inputs.txt"
    listing.write_text(f"# inputs\n{local}\n{static_site}/remote%20cat.png\n")
    out = tmp_path / "out"

    assert main(["run", f"@{listing}", "--out", str(out), "--format", "png"]) == 0

    assert image_size(out / "local.png") == (10, 10)
    assert image_size(out / "remote_cat.png") == (18, 18)


# -- resume ----------------------------------------------------------------------------------


async def test_a_rerun_sends_only_new_changed_or_lost_inputs(
    upscale_server: LocalServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    received = upscale_server.server.counts
    source, out = tmp_path / "in", tmp_path / "out"
    images(source, 3)
    argv = ["run", str(source), "--out", str(out), *server_args(upscale_server, TEST_API_KEY)]

    assert await run_cli(argv) == 0
    assert received.received_total == 3

    write_image(source / "new-1.png")
    write_image(source / "new-2.png")
    assert await run_cli(argv) == 0
    assert received.received_total == 5
    assert (summary_of(out)["skipped"], summary_of(out)["succeeded"]) == (3, 2)

    capsys.readouterr()
    assert await run_cli(argv) == 0
    assert received.received_total == 5
    assert "nothing to do: all 5 inputs are already done" in capsys.readouterr().err

    (out / "img-01.jpg").unlink()
    assert await run_cli(argv) == 0
    assert received.received_total == 6

    assert await run_cli([*argv, "--format", "png"]) == 0
    assert received.received_total == 11
    assert len(list(out.glob("*.png"))) == 5

    assert await run_cli([*argv, "--no-resume"]) == 0
    assert received.received_total == 16
    assert len(manifest_lines(out)) == 5  # a fresh manifest


async def _start_cli(*argv: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "upscale_stream.cli",
        *argv,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def _read_until(stream: asyncio.StreamReader | None, pattern: str) -> re.Match[str]:
    assert stream is not None
    async with asyncio.timeout(30):
        while True:
            line = (await stream.readline()).decode()
            if not line:
                raise AssertionError(f"the CLI ended before printing {pattern!r}")
            if match := re.search(pattern, line):
                return match


async def test_ctrl_c_finishes_in_flight_tasks_and_the_rerun_sends_only_the_rest(
    upscale_server: LocalServer, tmp_path: Path
) -> None:
    server = upscale_server.server
    server.faults.result_delay = 0.1
    source, out = tmp_path / "in", tmp_path / "out"
    images(source, 12)
    argv = ["run", str(source), "--out", str(out), "--concurrency", "2"]
    argv += ["--progress-interval", "0", *server_args(upscale_server, TEST_API_KEY)]

    process = await _start_cli(*argv)
    await _read_until(process.stderr, r"progress: ([3-9]|1[01])/12 done")
    process.send_signal(signal.SIGINT)
    async with asyncio.timeout(30):
        stdout, stderr = await process.communicate()

    assert process.returncode == 130
    assert "interrupted: sending no new tasks" in stderr.decode()
    done = len(manifest_lines(out))
    assert 3 <= done < 12
    assert server.counts.received_total == done  # every task sent was finished and recorded
    summary = summary_of(out)
    assert summary["interrupted"] and summary["pending"] == 0
    assert (summary["succeeded"], summary["notStarted"]) == (done, 12 - done)
    assert stdout.decode().startswith(f"interrupted: 12 inputs: {done} succeeded")
    assert part_files(out) == []

    server.faults.result_delay = 0
    assert await run_cli(argv) == 0
    assert server.counts.received_total == 12
    assert len(manifest_lines(out)) == 12
    assert len(list(out.glob("*.jpg"))) == 12


async def test_a_second_ctrl_c_cancels_in_flight_tasks_and_lists_them_as_pending(
    upscale_server: LocalServer, tmp_path: Path
) -> None:
    server = upscale_server.server
    server.faults.result_delay = 60
    source, out = tmp_path / "in", tmp_path / "out"
    paths = images(source, 6)

    process = await _start_cli(
        "run", str(source), "--out", str(out), "--concurrency", "3",
        *server_args(upscale_server, TEST_API_KEY),
    )  # fmt: skip
    await server.wait_received(3, timeout=30)
    process.send_signal(signal.SIGINT)
    await _read_until(process.stderr, r"waiting for 3 in flight")
    process.send_signal(signal.SIGINT)
    async with asyncio.timeout(30):
        _, stderr = await process.communicate()

    assert process.returncode == 130
    assert "cancelling the tasks in flight" in stderr.decode()
    summary = summary_of(out)
    assert summary["interrupted"]
    assert sorted(summary["pendingInputs"]) == [str(p.absolute()) for p in paths[:3]]
    assert (summary["succeeded"], summary["pending"], summary["notStarted"]) == (0, 3, 3)
    assert server.counts.received_total == 3
    assert manifest_lines(out) == []
    assert [p.name for p in out.iterdir()] == [".upscale-stream"]
    assert part_files(out) == []


def test_outputs_keep_transparency_when_the_format_can_hold_it(tmp_path: Path) -> None:
    write_image(tmp_path / "alpha.png", (6, 6), mode="RGBA")

    assert (
        main(["run", str(tmp_path / "alpha.png"), "--out", str(tmp_path / "o"), "--format", "png"])
        == 0
    )

    with Image.open(tmp_path / "o" / "alpha.png") as image:
        assert image.mode == "RGBA" and image.size == (12, 12)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("wss://ws-api.runware.ai/v1?apiKey=sk-123", "wss://ws-api.runware.ai/v1?apiKey=***"),
        ("ws://user:pw@127.0.0.1:8765/v1?a=1&b=2", "ws://127.0.0.1:8765/v1?a=***&b=***"),
        ("ws://127.0.0.1:8765/v1", "ws://127.0.0.1:8765/v1"),
    ],
)
def test_a_url_is_shown_without_its_password_or_query_values(url: str, shown: str) -> None:
    assert display_url(url) == shown


def test_ray_address_without_engine_ray_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_image(tmp_path / "a.png")
    code = main(
        ["run", str(tmp_path / "a.png"), "--out", str(tmp_path / "o"), "--ray-address", "auto"]
    )
    assert code == 2
    assert "--ray-address auto: only with --engine ray" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


@given(
    st.lists(
        st.tuples(
            st.text(
                alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_",
                min_size=1,
                max_size=8,
            ),
            st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-._~", min_size=4, max_size=24),
        ),
        min_size=1,
        max_size=4,
    )
)
def test_no_query_value_of_a_url_survives_display(pairs: list[tuple[str, str]]) -> None:
    query = "&".join(f"{name}={value}" for name, value in pairs)
    shown = display_url(f"wss://ws-api.runware.ai/v1?{query}")
    assert shown.startswith("wss://ws-api.runware.ai/v1?")
    for _, value in pairs:
        assert f"={value}" not in shown
