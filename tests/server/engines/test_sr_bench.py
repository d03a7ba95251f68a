"""Smoke test of benchmarks/sr_bench.py: tiny sizes, one run, no timing asserted."""

from __future__ import annotations

import json

from benchmarks import sr_bench


def test_the_benchmark_writes_speed_and_quality_records_for_both_engines(tmp_path, capsys):
    out = tmp_path / "sr.json"
    crop = tmp_path / "crop.png"
    argv = ["--quick", "--sizes", "24", "--factors", "2", "--seeds", "1", "--json", str(out)]
    assert sr_bench.main([*argv, "--crop", str(crop)]) == 0
    report = json.loads(out.read_text())
    assert {(r["engine"], r["served_by"]) for r in report["speed"]} == {
        ("pillow", "pillow"),
        ("neural", "realesr-animevideov3-x2"),
    }
    assert all(r["s_per_image"] > 0 for r in report["speed"])
    methods = {q["method"]: q for q in report["quality"]}
    assert set(methods) == {"LANCZOS", "pillow engine", "neural engine"}
    assert all(0 < q["ssim"] <= 1 and q["psnr_db"] > 10 for q in methods.values())
    assert crop.stat().st_size > 0
    assert "| neural | runware:503@1 | realesr-animevideov3-x2 | 24x24 | x2 |" in (
        capsys.readouterr().out
    )
