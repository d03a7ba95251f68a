"""``make demo`` (``upscale-stream demo``): samples, the run, its checks, and its messages."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson
import pytest
from PIL import Image

from upscale_stream.cli import demo, main


def test_the_demo_makes_samples_upscales_them_and_checks_every_output(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "demo"

    assert main(["demo", str(root)]) == 0

    out = capsys.readouterr().out
    samples, outputs = root / "samples", root / "out"
    for sample in demo.SAMPLES:
        with Image.open(samples / sample.name) as image:
            width, height = image.size
        output = outputs / Path(sample.name).with_suffix(".png")
        with Image.open(output) as image:
            assert image.size == (width * demo.FACTOR, height * demo.FACTOR)
            assert (image.mode == "RGBA") == sample.transparent, sample.name
        assert Path(sample.name).name in out
    summary = orjson.loads((outputs / ".upscale-stream" / "summary.json").read_bytes())
    [failure] = summary["failures"]
    assert Path(failure["input"]).name == "corrupt.png"
    assert failure["code"] == "corruptImage"
    assert "failed as expected (corruptImage)" in out
    assert "demo: all 7 outputs checked" in out


def test_the_demo_says_what_it_wrote_what_is_skipped_and_prints_each_thing_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "demo"

    assert main(["demo", str(root)]) == 0

    out = capsys.readouterr().out
    # 9 files, of which notes.txt is no image: the run's "8 inputs" must not come as a surprise
    assert "wrote 9 sample files" in out and "notes.txt (not an image" in out
    assert "so the run has 8 inputs" in out and "done: 8 inputs" in out
    for once in ("summary: ", "outputs: ", "corrupt.png: corruptImage"):
        assert out.count(once) == 1, once
    assert "0.0 MB" not in out and " KB" in out
    # It ends by saying how to watch a run in a browser.
    tail = out.rstrip().splitlines()[-3:]
    assert "upscale-stream serve --port 8765 --api-key demo-key" in tail[1]
    assert "http://127.0.0.1:8765/" in tail[2] and "http://127.0.0.1:8765/status" in tail[2]


def test_the_demo_is_a_sub_command_that_needs_no_source_checkout(tmp_path: Path) -> None:
    # From a folder far from the checkout, through the installed entry point only.
    result = subprocess.run(
        [sys.executable, "-m", "upscale_stream.cli", "demo", "here"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stderr + result.stdout
    assert "demo: all 7 outputs checked" in result.stdout
    assert len(list((tmp_path / "here" / "out").rglob("*.png"))) == 7


def test_the_samples_vary_in_size_format_and_transparency(tmp_path: Path) -> None:
    demo.make_samples(tmp_path)
    formats, sizes, transparent = set(), set(), 0
    for sample in demo.SAMPLES:
        with Image.open(tmp_path / sample.name) as image:
            formats.add(image.format)
            sizes.add(image.size)
            transparent += image.mode == "RGBA"
    assert formats == {"PNG", "JPEG", "WEBP"}
    assert len(sizes) == len(demo.SAMPLES) and transparent == 2
    assert any("/" in sample.name for sample in demo.SAMPLES)
    with pytest.raises(OSError), Image.open(tmp_path / "corrupt.png") as image:
        image.load()


def test_an_output_of_the_wrong_size_fails_the_check(tmp_path: Path) -> None:
    samples, out = tmp_path / "samples", tmp_path / "out"
    samples.mkdir()
    out.mkdir()
    Image.new("RGB", (10, 10)).save(samples / "a.png")
    Image.new("RGB", (15, 20)).save(out / "a.png")
    check = demo._check_sample(samples, out, samples / "a.png")
    assert not check.ok and check.note == "expected 20x20"


def test_make_clean_removes_what_the_demo_and_the_tests_leave_behind() -> None:
    root = Path(__file__).resolve().parents[2]
    result = subprocess.run(
        ["make", "-n", "clean"], cwd=root, capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stderr
    removed = result.stdout.split()
    for left_behind in (".venv", ".venv-compat", ".hypothesis", "demo", ".pytest_cache"):
        assert left_behind in removed, left_behind
    readme = (root / "README.md").read_text()
    assert ".venv-compat/" in readme  # the 80 MB folder is explained where people look
