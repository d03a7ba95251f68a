"""Benchmark of the reference server's engines: speed, and quality on a round trip.

Usage (from the repository root, with the ``sr`` extra installed)::

    python -m benchmarks.sr_bench                  # 256 and 1024, x2 and x4; about 3 minutes
    python -m benchmarks.sr_bench --quick          # one run per cell; about 1 minute
    python -m benchmarks.sr_bench --x4plus         # also CCSR x2 (the slow network), at 256
    python -m benchmarks.sr_bench --json out.json  # every figure, machine-readable
    python -m benchmarks.sr_bench --crop docs/engines-crop.png   # the README's before/after

Speed: each engine renders a textured image (``engines.quality.textured_image``) with SwinIR
(``runware:503@1``, the model the neural engine serves at x2 and x4) to JPG q95, through the
same ``render`` call the server makes, including the 4096 cap and the encoding. It reports the
median seconds per image over the runs (at least ``--repeat`` runs, more for fast cells while
they add up to under 3 s) and its inverse, images per second, for one image at a time: the
neural engine's tile pool already uses every core for one image.

Quality: a few textured 256x256 images are reduced 2 and 4 times (antialiased BICUBIC), then
upscaled back by plain LANCZOS, by the Pillow engine's SwinIR pipeline and by the neural
engine; each is compared with the original: PSNR (dB), SSIM, and the mean gradient magnitude
(edge energy, no reference; the original's is shown). GAN upscalers aim to look sharp rather
than to match pixels, so their PSNR is often no better than a smooth filter's: the figures are
reported as they come.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw

from upscale_stream.models import CCSR, SWINIR
from upscale_stream.server.engines import Engine, get_engine
from upscale_stream.server.engines.neural import NeuralEngine
from upscale_stream.server.engines.quality import (
    mean_gradient,
    psnr,
    round_trip_source,
    ssim,
    textured_image,
)

ENGINES = ("pillow", "neural")
MIN_CELL_SECONDS = 3.0


def time_render(
    engine: Engine, image: Image.Image, model: str, factor: int, repeat: int, min_seconds: float
) -> dict[str, Any]:
    """Median seconds per image of ``engine.render`` (after one warm-up run)."""
    _render(engine, image, model, factor)  # loads the network, fills caches
    runs: list[float] = []
    while len(runs) < repeat or (sum(runs) < min_seconds and len(runs) < 50):
        start = time.perf_counter()
        _render(engine, image, model, factor)
        runs.append(time.perf_counter() - start)
    median = statistics.median(runs)
    return {"s_per_image": median, "images_per_s": 1 / median, "runs": len(runs)}


def _render(engine: Engine, image: Image.Image, model: str, factor: int) -> Any:
    return engine.render(
        image,
        model=model,
        factor=factor,
        settings=None,
        output_format="JPG",
        quality=95,
        max_pixels=40_000_000,
    )


def speed(
    sizes: list[int], factors: list[int], repeat: int, min_seconds: float, x4plus: bool
) -> list[dict[str, Any]]:
    """One record per (engine, size, factor), SwinIR; CCSR x2 at the smallest size if asked."""
    cells = [(SWINIR, size, factor) for size in sizes for factor in factors]
    if x4plus:
        cells.append((CCSR, min(sizes), 2))
    records = []
    for model, size, factor in cells:
        image = textured_image(size, size, seed=size)
        for name in ENGINES:
            engine = get_engine(name)
            record = {
                "engine": name,
                "model": model,
                "served_by": engine.serves(model, factor),
                "size": size,
                "factor": factor,
                **time_render(
                    engine, image, model, factor, repeat if model == SWINIR else 1, min_seconds
                ),
            }
            records.append(record)
            print(
                f"  {name:6} {model} {size}x{size} x{factor}: {record['s_per_image']:.3f} s/image",
                file=sys.stderr,
                flush=True,
            )
    return records


def quality(seeds: list[int], factors: list[int]) -> list[dict[str, Any]]:
    """PSNR, SSIM and edge energy of each method on a 256x256 round trip, mean over seeds."""
    methods: dict[str, Callable[[Image.Image, int], Image.Image]] = {
        "LANCZOS": lambda source, factor: source.resize(
            (source.width * factor, source.height * factor), Image.Resampling.LANCZOS
        ),
        "pillow engine": lambda source, factor: get_engine("pillow").upscale(
            source, model=SWINIR, factor=factor, settings=None
        ),
        "neural engine": lambda source, factor: get_engine("neural").upscale(
            source, model=SWINIR, factor=factor, settings=None
        ),
    }
    records = []
    for factor in factors:
        originals = [textured_image(256, 256, seed=seed) for seed in seeds]
        for method, run in methods.items():
            scores = []
            for original in originals:
                out = run(round_trip_source(original, factor), factor)
                scores.append((psnr(original, out), ssim(original, out), mean_gradient(out)))
            records.append(
                {
                    "method": method,
                    "factor": factor,
                    "psnr_db": statistics.fmean(s[0] for s in scores),
                    "ssim": statistics.fmean(s[1] for s in scores),
                    "mean_gradient": statistics.fmean(s[2] for s in scores),
                    "original_mean_gradient": statistics.fmean(map(mean_gradient, originals)),
                    "images": len(originals),
                }
            )
    return records


def write_crop(path: Path, factor: int = 2) -> None:
    """A before/after crop: the reduced input, LANCZOS and the neural engine, and the original."""
    original = textured_image(256, 256, seed=11)
    source = round_trip_source(original, factor)
    panels = {
        f"input ({source.width}x{source.height})": source.resize(
            original.size, Image.Resampling.NEAREST
        ),
        f"LANCZOS x{factor}": source.resize(original.size, Image.Resampling.LANCZOS),
        f"neural x{factor}": get_engine("neural").upscale(
            source, model=SWINIR, factor=factor, settings=None
        ),
        "original": original,
    }
    box = (64, 64, 192, 192)
    zoom = 2
    side = (box[2] - box[0]) * zoom
    sheet = Image.new("RGB", (len(panels) * (side + 8) - 8, side + 20), "white")
    draw = ImageDraw.Draw(sheet)
    for index, (label, image) in enumerate(panels.items()):
        crop = image.crop(box).resize((side, side), Image.Resampling.NEAREST)
        sheet.paste(crop, (index * (side + 8), 20))
        draw.text((index * (side + 8) + 2, 4), label, fill="black")
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)
    print(f"wrote {path}", file=sys.stderr)


def _neural_workers() -> int:
    """The neural engine's tile workers (it is the one engine with a pool)."""
    engine = get_engine("neural")
    assert isinstance(engine, NeuralEngine)
    return engine.workers


def markdown(speed_records: list[dict[str, Any]], quality_records: list[dict[str, Any]]) -> str:
    """The two tables, for benchmarks/RESULTS.md."""
    lines = [
        f"Machine: {os.cpu_count()} cores; neural engine: {_neural_workers()} "
        "tile workers (one ncnn thread each).",
        "",
        "| engine | model | served by | input | factor | s/image | images/s |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in speed_records:
        lines.append(
            f"| {r['engine']} | {r['model']} | {r['served_by']} | {r['size']}x{r['size']} | "
            f"x{r['factor']} | {r['s_per_image']:.3f} | {r['images_per_s']:.2f} |"
        )
    lines += [
        "",
        "Round trip (256x256 textured images reduced, then upscaled back; mean of "
        f"{quality_records[0]['images'] if quality_records else 0} images):",
        "",
        "| method | factor | PSNR (dB) | SSIM | mean gradient (original) |",
        "|---|---|---|---|---|",
    ]
    for q in quality_records:
        lines.append(
            f"| {q['method']} | x{q['factor']} | {q['psnr_db']:.2f} | {q['ssim']:.3f} | "
            f"{q['mean_gradient']:.2f} ({q['original_mean_gradient']:.2f}) |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.sr_bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="one timed run per cell")
    parser.add_argument("--sizes", default="256,1024", help="input sides (default 256,1024)")
    parser.add_argument("--factors", default="2,4", help="upscale factors (default 2,4)")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs per cell, at least")
    parser.add_argument("--seeds", type=int, default=3, help="images in the quality test")
    parser.add_argument("--x4plus", action="store_true", help="also time CCSR x2 (x4plus)")
    parser.add_argument("--no-quality", action="store_true", help="skip the round-trip test")
    parser.add_argument("--json", type=Path, help="write every record to this file")
    parser.add_argument(
        "--markdown", type=Path, help="write the tables here (RESULTS.md includes them)"
    )
    parser.add_argument("--crop", type=Path, help="write the before/after crop (PNG) here")
    args = parser.parse_args(argv)
    sizes = [int(value) for value in args.sizes.split(",")]
    factors = [int(value) for value in args.factors.split(",")]
    repeat = 1 if args.quick else max(1, args.repeat)
    min_seconds = 0.0 if args.quick else MIN_CELL_SECONDS
    speed_records = speed(sizes, factors, repeat, min_seconds, args.x4plus)
    quality_records = [] if args.no_quality else quality(list(range(args.seeds)), factors)
    tables = markdown(speed_records, quality_records)
    print(tables)
    if args.markdown is not None:
        args.markdown.write_text(tables + "\n")
    if args.json is not None:
        args.json.write_text(json.dumps({"speed": speed_records, "quality": quality_records}))
    if args.crop is not None:
        write_crop(args.crop)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
