"""``make demo`` (``python -m upscale_stream.demo``): samples, the run, and its checks."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from PIL import Image

from upscale_stream import demo


def test_the_demo_makes_samples_upscales_them_and_checks_every_output(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "demo"

    assert demo.main([str(root)]) == 0

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
    assert "corrupt.png failed with: corruptImage:" in out
    assert "failed as expected" in out
    assert f"summary: {(outputs / '.upscale-stream' / 'summary.json').resolve()}" in out
    assert "demo: all 7 outputs checked" in out


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
