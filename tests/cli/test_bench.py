"""``upscale-stream bench``: finding the checkout and passing arguments to the harness."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import pytest

import upscale_stream
from upscale_stream.cli import main
from upscale_stream.cli.bench import bench_command, find_checkout, harness_command
from upscale_stream.cli.streams import Streams

REPO = Path(__file__).resolve().parents[2]


def test_the_checkout_is_found_from_the_package_of_an_editable_install() -> None:
    package = Path(upscale_stream.__file__).resolve().parent
    assert find_checkout([package]) == REPO
    assert find_checkout([REPO / "benchmarks" / "contenders"]) == REPO


def test_no_checkout_is_found_outside_one(tmp_path: Path) -> None:
    assert find_checkout([tmp_path]) is None


def test_arguments_pass_through_unchanged_after_an_optional_double_dash() -> None:
    assert harness_command(["--quick", "--only", "zero-g1"]) == [
        sys.executable, "-m", "benchmarks.harness", "--quick", "--only", "zero-g1",
    ]  # fmt: skip
    assert harness_command(["--", "--help"])[3:] == ["--help"]


def test_outside_a_checkout_bench_explains_where_the_harness_lives(tmp_path: Path) -> None:
    streams = Streams(io.StringIO(), io.StringIO(), io.StringIO())
    assert bench_command(["--quick"], streams, starts=[tmp_path]) == 2
    message = streams.stderr.getvalue()
    assert "benchmarks/ of a source checkout" in message
    assert "Clone the repository" in message


def test_bench_runs_the_real_harness_with_its_own_options(
    capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)  # found from the package's location, not the current folder
    assert main(["bench", "--list"]) == 0
    captured = capfd.readouterr()
    assert "zero-g1" in captured.out and "us-tuned" in captured.out
    assert f"in {REPO}" in captured.err


def test_bench_help_is_ours_and_points_at_the_harness_help(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["bench", "--help"]) == 0
    out = capsys.readouterr().out
    assert "upscale-stream bench -- --help" in out and "source checkout" in out
