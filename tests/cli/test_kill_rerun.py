"""The CLI's job state and data safety: kills, reruns, permissions, keys, a full disk.

A *job* is the output folder: its id is in ``DIR/.upscale-stream/job.json`` and every task's
taskUUID is derived from it, so the server (which counts executions per taskUUID) can tell a
rerun's task from a new one. What a user pays for is what the server executes.
"""

from __future__ import annotations

import asyncio
import errno
import os
import random
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from upscale_stream.cli import main
from upscale_stream.cli import manifest as manifest_module
from upscale_stream.cli.manifest import part_path
from upscale_stream.testing import TEST_API_KEY, LocalServer

from .helpers import manifest_lines, part_files, run_cli, server_args, summary_of, write_image

STATE = ".upscale-stream"


def images(folder: Path, count: int) -> list[Path]:
    return [write_image(folder / f"img-{i:02d}.png", (6, 4), colour=i * 5) for i in range(count)]


def run_argv(upscale_server: LocalServer, source: Path, out: Path, *extra: str) -> list[str]:
    """``upscale-stream run SOURCE --out OUT`` against the test's server, plus ``extra``."""
    return [
        "run",
        str(source),
        "--out",
        str(out),
        *extra,
        *server_args(upscale_server, TEST_API_KEY),
    ]


def job_id_of(out: Path) -> str:
    value: str = orjson.loads((out / STATE / "job.json").read_bytes())["jobId"]
    return value


@pytest.fixture
def umask_022() -> Iterator[None]:
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


# -- usage errors come before anything starts -------------------------------------------------


@pytest.mark.parametrize("kind", ["missing", "empty"])
def test_a_missing_or_empty_input_folder_is_a_usage_error_before_anything_starts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], kind: str
) -> None:
    source = tmp_path / "photos"
    if kind == "empty":
        source.mkdir()
    out = tmp_path / "x"

    assert main(["run", str(source), "--out", str(out)]) == 2

    err = capsys.readouterr().err
    assert "upscale-stream run: error: INPUT" in err and str(source) in err
    assert "embedded" not in err  # no server was started
    assert not out.exists()  # and no folder was created


# -- the job id -------------------------------------------------------------------------------


async def test_a_rerun_into_the_same_folder_is_the_same_job_and_new_job_starts_another(
    upscale_server: LocalServer, tmp_path: Path
) -> None:
    server = upscale_server.server
    images(tmp_path / "in", 3)
    out = tmp_path / "out"
    argv = run_argv(upscale_server, tmp_path / "in", out)

    assert await run_cli(argv) == 0
    first_job = job_id_of(out)
    first_uuids = {line["taskUUID"] for line in manifest_lines(out)}
    assert first_uuids == set(server.executions)
    assert summary_of(out)["jobId"] == first_job

    (out / STATE / "manifest.jsonl").unlink()  # forget what was done, keep the job
    await run_cli(argv)
    assert job_id_of(out) == first_job
    assert server.counts.received_total == 6  # sent again under the same taskUUIDs...
    assert sorted(server.executions.values()) == [1, 1, 1]  # ...and none ran twice

    assert await run_cli([*argv, "--new-job", "--no-resume"]) == 0
    assert job_id_of(out) != first_job
    assert len(server.executions) == 6  # a new job: new taskUUIDs, run afresh
    assert first_uuids.isdisjoint(line["taskUUID"] for line in manifest_lines(out))


async def test_a_damaged_job_file_is_a_usage_error_that_names_it_and_the_way_out(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_image(tmp_path / "a.png")
    (tmp_path / "out" / STATE).mkdir(parents=True)
    (tmp_path / "out" / STATE / "job.json").write_text("{not json")

    assert await run_cli(["run", str(tmp_path / "a.png"), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "job.json: not a job file of upscale-stream; remove it or pass --new-job" in err


# -- kills ------------------------------------------------------------------------------------


async def _start_cli(*argv: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "upscale_stream.cli",
        *argv,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )


@pytest.mark.slow
async def test_sigkilled_runs_rerun_write_every_output_once_and_run_no_input_twice(
    upscale_server: LocalServer, tmp_path: Path
) -> None:
    server = upscale_server.server
    server.faults.result_delay = 0.05
    count = 40
    images(tmp_path / "in", count)
    out = tmp_path / "out"
    argv = ["run", str(tmp_path / "in"), "--out", str(out), "--concurrency", "6"]
    argv += ["--quiet", *server_args(upscale_server, TEST_API_KEY)]
    rng = random.Random(15)

    for _ in range(3):  # kill at a random point, three times
        process = await _start_cli(*argv)
        target = server.counts.received_total + rng.randint(3, 10)
        await server.wait_received(target, timeout=60)
        process.send_signal(signal.SIGKILL)
        async with asyncio.timeout(30):
            await process.wait()
    server.faults.result_delay = 0
    await run_cli(argv)

    assert max(server.executions.values()) == 1  # no input ran twice: nothing paid twice
    assert part_files(out) == []
    outputs = sorted(p.name for p in out.glob("*.jpg"))
    assert outputs == [f"img-{i:02d}.jpg" for i in range(count)]
    written = [line["output"] for line in manifest_lines(out)]
    assert sorted(written) == outputs  # every output written exactly once
    # The tasks in flight at each kill were recovered (getTaskDetails), not run again.
    assert summary_of(out)["exitCode"] == 0


async def test_a_kill_between_the_manifest_line_and_the_rename_is_finished_without_resending(
    upscale_server: LocalServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server = upscale_server.server
    images(tmp_path / "in", 3)
    out = tmp_path / "out"
    argv = run_argv(upscale_server, tmp_path / "in", out)
    assert await run_cli(argv) == 0
    # What a kill after the manifest line and before the rename leaves: the line, and the
    # complete bytes in the part file.
    [line] = [line for line in manifest_lines(out) if line["output"] == "img-01.jpg"]
    content = (out / "img-01.jpg").read_bytes()
    part = out / part_path(Path("img-01.jpg"), line["taskUUID"])  # type: ignore[arg-type]
    (out / "img-01.jpg").rename(part)

    assert await run_cli(argv) == 0

    assert (out / "img-01.jpg").read_bytes() == content
    assert server.counts.received_total == 3  # nothing was sent again
    assert summary_of(out)["recovered"] == 1
    assert part_files(out) == []
    assert "recovered 1 outputs a killed run had paid for" in capsys.readouterr().err


async def test_part_files_a_killed_run_left_are_removed_and_a_damaged_one_is_not_used(
    upscale_server: LocalServer, tmp_path: Path
) -> None:
    images(tmp_path / "in", 2)
    out = tmp_path / "out"
    argv = run_argv(upscale_server, tmp_path / "in", out)
    assert await run_cli(argv) == 0
    [line] = [line for line in manifest_lines(out) if line["output"] == "img-00.jpg"]
    (out / "img-00.jpg").unlink()
    damaged = out / part_path(Path("img-00.jpg"), line["taskUUID"])  # type: ignore[arg-type]
    damaged.write_bytes(b"half an image")  # a kill before the line: bytes not all there
    (out / ".img-07.jpg.0f8fad5b-d9cb-469f-a165-70867728950e.part").write_bytes(b"x")
    (out / STATE / ".summary.json.123.456.part").write_bytes(b"{")

    await run_cli(argv)

    assert part_files(out) == []
    assert not (out / "img-00.jpg").exists() or summary_of(out)["recovered"] == 0


# -- permissions and secrets ------------------------------------------------------------------


async def test_outputs_and_state_files_get_the_usual_permissions(
    upscale_server: LocalServer, tmp_path: Path, umask_022: None
) -> None:
    images(tmp_path / "in", 2)
    out = tmp_path / "out"
    argv = run_argv(upscale_server, tmp_path / "in", out)

    assert await run_cli(argv) == 0

    files = [*out.glob("*.jpg"), *(out / STATE).iterdir()]
    assert len(files) == 5  # 2 outputs, job.json, manifest.jsonl, summary.json
    assert {path.name: oct(path.stat().st_mode & 0o777) for path in files} == {
        path.name: "0o644" for path in files
    }


async def test_a_key_inside_runware_url_reaches_no_file_and_no_output(
    upscale_server: LocalServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    secret = "url-secret-3b9f1c7d2e"
    monkeypatch.setenv("RUNWARE_URL", f"{upscale_server.url}?apiKey={secret}")
    monkeypatch.setenv("RUNWARE_API_KEY", TEST_API_KEY)
    images(tmp_path / "in", 2)
    out = tmp_path / "out"

    assert await run_cli(["run", str(tmp_path / "in"), "--out", str(out), "-vv"]) == 0

    assert summary_of(out)["server"] == f"{upscale_server.url}?apiKey=***"
    for path in out.rglob("*"):
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path
    captured = capsys.readouterr()
    assert secret not in captured.out + captured.err


# -- a full disk ------------------------------------------------------------------------------


async def test_a_full_disk_stops_new_tasks_at_the_first_failed_write_and_ends_with_a_summary(
    upscale_server: LocalServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    server = upscale_server.server
    server.faults.result_delay = 0.02
    images(tmp_path / "in", 30)
    out = tmp_path / "out"
    real_write = manifest_module._write_new_file
    room = {"files": 4}  # job.json and 3 outputs fit, then the disk is full

    def write_until_full(path: Path, content: bytes) -> None:
        if room["files"] <= 0:
            real_write(path, content[: len(content) // 2])  # some bytes land, then ENOSPC
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        room["files"] -= 1
        real_write(path, content)

    monkeypatch.setattr(manifest_module, "_write_new_file", write_until_full)
    argv = ["run", str(tmp_path / "in"), "--out", str(out), "--concurrency", "2", "--json"]

    code = await run_cli([*argv, *server_args(upscale_server, TEST_API_KEY)])

    assert code == 1
    captured = capsys.readouterr()
    summary = orjson.loads(captured.out)  # printed even though summary.json could not be
    assert "No space left on device" in summary["error"]
    assert "stopped sending new tasks at the first failed write" in summary["error"]
    assert summary["succeeded"] == 3
    assert summary["notStarted"] >= 30 - 3 - 1 - 2  # at most the window was still in flight
    assert server.counts.received_total == 30 - summary["notStarted"]
    assert {f["code"] for f in summary["failures"]} == {"writeFailed"}
    assert "cannot write" in captured.err and "summary.json" in captured.err
    assert "Traceback" not in captured.err
    assert part_files(out) == []
    assert len(manifest_lines(out)) == 3


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 64 KiB tmpfs (root only: elsewhere the patched-writer test above covers ENOSPC)."""
    mount_point = tmp_path / "small-disk"
    mount_point.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root; the patched-writer ENOSPC test still runs")
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k,mode=0755", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", str(mount_point)], check=False)


async def test_on_a_really_full_disk_the_run_stops_submitting_and_prints_its_summary(
    upscale_server: LocalServer,
    tmp_path: Path,
    small_disk: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    server = upscale_server.server
    server.faults.result_delay = 0.02
    for i in range(40):
        write_image(tmp_path / "in" / f"img-{i:02d}.png", (64, 48), colour=i * 5)
    out = small_disk / "out"
    argv = ["run", str(tmp_path / "in"), "--out", str(out), "--concurrency", "2", "--json"]
    argv += ["--format", "png"]  # noisy-free PNGs of 128x96: several KiB each

    code = await run_cli([*argv, *server_args(upscale_server, TEST_API_KEY)])

    assert code == 1
    captured = capsys.readouterr()
    summary = orjson.loads(captured.out)
    assert "No space left on device" in summary["error"]
    assert 0 < summary["succeeded"] < 40
    assert summary["notStarted"] > 0  # it stopped paying for results it could not keep
    assert server.counts.received_total == 40 - summary["notStarted"]
    assert "Traceback" not in captured.err
    assert part_files(out) == []
    assert len(manifest_lines(out)) <= summary["succeeded"]
