"""``upscale-stream demo``: upscale a folder of varied sample images with the CLI, then check them.

Run as ``upscale-stream demo [FOLDER] [--engine pillow|neural]`` (default: ``./demo``,
``pillow``; ``make demo ENGINE=neural`` passes the engine, see docs/engines.md), from a source
checkout or from an installed wheel alike: everything it needs is in the package. It

1. writes sample images to ``FOLDER/samples/`` unless some exist already: several sizes and
   formats (PNG, JPEG, WEBP), a PNG and a WEBP with transparency, a nested sub-folder, a text
   file that is skipped, and ``corrupt.png``, a PNG cut short;
2. runs ``upscale-stream run FOLDER/samples --out FOLDER/out --embedded --format png
   --server-engine ENGINE`` in this process, so the embedded reference server really
   upscales them and the progress bar shows on a terminal;
3. checks that every valid sample has an output exactly twice its size (keeping its
   transparency), and that ``corrupt.png`` is reported as a failure with its reason;
4. prints a table of the checks (the run itself has printed where the outputs and the summary
   are), then how to watch the next run in a browser: the playground and the status page of
   ``upscale-stream serve``.

The exit code is 0 when every check passes, 1 otherwise.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import orjson
from PIL import Image, ImageDraw
from rich.console import Console
from rich.table import Table

from .manifest import STATE_DIR, SUMMARY_FILE
from .streams import Streams

__all__ = ["FACTOR", "SAMPLES", "Sample", "add_arguments", "main", "make_samples"]

FACTOR = 2
CORRUPT = "corrupt.png"
NOTES = "notes.txt"
PLAYGROUND_PORT = 8765
PLAYGROUND_KEY = "demo-key"


@dataclass(frozen=True, slots=True)
class Sample:
    """One generated sample image.

    Attributes:
        name: Path below the samples folder.
        size: Width and height in pixels.
        mode: Pillow mode (``RGBA`` and ``LA`` have transparency).
        format: Pillow format name.
    """

    name: str
    size: tuple[int, int]
    mode: str
    format: str

    @property
    def transparent(self) -> bool:
        """Whether the sample has an alpha channel."""
        return self.mode in ("RGBA", "LA")


SAMPLES: tuple[Sample, ...] = (
    Sample("thumbnail.jpg", (64, 48), "RGB", "JPEG"),
    Sample("landscape.png", (200, 150), "RGB", "PNG"),
    Sample("large.webp", (512, 384), "RGB", "WEBP"),
    Sample("logo-transparent.png", (96, 96), "RGBA", "PNG"),
    Sample("greyscale.png", (100, 140), "L", "PNG"),
    Sample("nested/icon-transparent.webp", (48, 48), "RGBA", "WEBP"),
    Sample("nested/deeper/tile.jpg", (120, 80), "RGB", "JPEG"),
)
"""The valid samples; ``corrupt.png`` and ``notes.txt`` are written next to them."""


def _picture(sample: Sample, seed: int) -> Image.Image:
    """A colourful test picture: gradients, shapes, a frame; transparent corners if RGBA."""
    width, height = sample.size
    red = Image.linear_gradient("L").resize(sample.size)
    green = Image.radial_gradient("L").resize(sample.size)
    blue = Image.linear_gradient("L").rotate(90 + seed * 30).resize(sample.size)
    picture = Image.merge("RGB", (red, green, blue))
    draw = ImageDraw.Draw(picture)
    step = max(4, min(width, height) // 6)
    for i in range(0, max(width, height), step):
        draw.line([(i, 0), (0, i)], fill=(255, 255, 255), width=1)
    draw.ellipse(
        [width // 4, height // 4, 3 * width // 4, 3 * height // 4],
        outline=(20, 20, 20),
        width=max(1, step // 4),
        fill=(40 * seed % 255, 180, 90),
    )
    draw.rectangle([0, 0, width - 1, height - 1], outline=(0, 0, 0))
    if sample.mode == "RGBA":
        alpha = Image.radial_gradient("L").resize(sample.size).point(lambda v: 255 - v)
        picture.putalpha(alpha)
        return picture
    return picture.convert(sample.mode)


def make_samples(folder: Path) -> list[Path]:
    """Write the samples, ``corrupt.png`` and ``notes.txt`` into ``folder``; returns the paths."""
    written: list[Path] = []
    for seed, sample in enumerate(SAMPLES):
        path = folder / sample.name
        path.parent.mkdir(parents=True, exist_ok=True)
        extra = {"lossless": True} if sample.format == "WEBP" and sample.transparent else {}
        _picture(sample, seed).save(path, sample.format, **extra)
        written.append(path)
    complete = folder / "landscape.png"
    corrupt = folder / CORRUPT
    corrupt.write_bytes(complete.read_bytes()[:200])  # the header, then nothing: truncated
    notes = folder / NOTES
    notes.write_text("Not an image: the CLI skips it when it walks the folder.\n")
    return [*written, corrupt, notes]


@dataclass(frozen=True, slots=True)
class Check:
    """The verdict on one sample."""

    sample: str
    input_size: str
    output: str
    output_size: str
    ok: bool
    note: str


def _check_sample(samples: Path, out: Path, sample_path: Path) -> Check:
    relative = sample_path.relative_to(samples)
    output = out / relative.with_suffix(".png")
    with Image.open(sample_path) as source:
        width, height = source.size
        transparent = source.mode in ("RGBA", "LA", "PA") or "transparency" in source.info
    expected = (width * FACTOR, height * FACTOR)
    shown_in = f"{width}x{height}"
    if not output.is_file():
        return Check(str(relative), shown_in, "-", "-", False, "no output")
    with Image.open(output) as result:
        size = result.size
        kept_alpha = result.mode in ("RGBA", "LA", "PA")
    shown_out = f"{size[0]}x{size[1]}"
    if size != expected:
        note = f"expected {expected[0]}x{expected[1]}"
        return Check(str(relative), shown_in, str(output), shown_out, False, note)
    if transparent and not kept_alpha:
        return Check(str(relative), shown_in, str(output), shown_out, False, "lost transparency")
    note = f"{FACTOR}x" + (", transparency kept" if transparent else "")
    return Check(str(relative), shown_in, str(output.relative_to(out)), shown_out, True, note)


def _sample_images(samples: Path) -> list[Path]:
    suffixes = {".png", ".jpg", ".jpeg", ".webp"}
    return sorted(
        p for p in samples.rglob("*") if p.suffix.lower() in suffixes and p.name != CORRUPT
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``demo`` command's arguments to its sub-parser."""
    parser.add_argument(
        "folder",
        nargs="?",
        default="demo",
        metavar="FOLDER",
        help="Where the samples and outputs go (default: ./demo). Existing samples are reused.",
    )
    parser.add_argument(
        "--engine",
        choices=("pillow", "neural"),
        default="pillow",
        help="How the embedded server upscales: pillow (default) or neural (the sr extra).",
    )
    parser.set_defaults(handler=lambda args, streams: demo_command(args, streams))


def demo_command(args: argparse.Namespace, streams: Streams) -> int:
    """The ``demo`` sub-command's handler."""
    return main([str(args.folder), "--engine", args.engine])


def main(argv: Sequence[str] | None = None) -> int:
    """Run the demo; returns 0 when every check passes.

    Args:
        argv: Optionally the demo folder (default: ``./demo``) and ``--engine NAME``.
    """
    from .app import main as cli_main  # the CLI imports this module for its sub-command

    parser = argparse.ArgumentParser(prog="upscale-stream demo")
    parser.add_argument("folder", nargs="?", type=Path, default=Path("demo"))
    parser.add_argument("--engine", choices=("pillow", "neural"), default="pillow")
    arguments = parser.parse_args(sys.argv[1:] if argv is None else argv)
    root, engine = arguments.folder, arguments.engine
    samples, out = root / "samples", root / "out"
    console = Console()
    if not console.is_terminal:  # a log file or a pipe: do not squeeze the table into 80 columns
        console = Console(width=140)
    if not samples.is_dir() or not _sample_images(samples):
        made = make_samples(samples)
        images = len(made) - 1
        console.print(
            f"wrote {len(made)} sample files to {samples}/: {images - 1} images, {CORRUPT} "
            f"(cut short: it must fail) and {NOTES} (not an image: the CLI skips it, "
            f"so the run has {images} inputs)",
            soft_wrap=True,
        )
    else:
        console.print(f"using the samples in {samples}/", soft_wrap=True)
    console.print(
        f"$ upscale-stream run {samples} --out {out} --embedded --format png "
        f"--factor {FACTOR} --no-resume --server-engine {engine}\n",
        soft_wrap=True,
    )
    code = cli_main(
        [
            "run",
            str(samples),
            "--out",
            str(out),
            "--embedded",
            "--format",
            "png",
            "--factor",
            str(FACTOR),
            "--no-resume",
            "--server-engine",
            engine,
        ]
    )
    checks = [_check_sample(samples, out, path) for path in _sample_images(samples)]
    summary_path = out / STATE_DIR / SUMMARY_FILE
    summary = orjson.loads(summary_path.read_bytes()) if summary_path.is_file() else {}
    corrupt_code = next(
        (
            str(failure["code"])
            for failure in summary.get("failures", [])
            if Path(failure["input"]).name == CORRUPT
        ),
        None,
    )

    table = Table(
        title=f"\nchecked: upscaled x{FACTOR} by the embedded reference server ({engine})"
    )
    for column in ("sample", "input", "output", "size", "check"):
        table.add_column(column, overflow="fold")
    for check in checks:
        mark = "[green]ok[/]" if check.ok else "[red]FAILED[/]"
        table.add_row(
            check.sample, check.input_size, check.output, check.output_size, f"{mark} {check.note}"
        )
    if (samples / CORRUPT).is_file():
        verdict = (
            f"[green]ok[/] failed as expected ({corrupt_code})"
            if corrupt_code
            else "[red]NOT reported[/]"
        )
        table.add_row(CORRUPT, "truncated", "-", "-", verdict)
    console.print(table)

    problems = [c for c in checks if not c.ok]
    if (samples / CORRUPT).is_file() and corrupt_code is None:
        console.print(f"[red]{CORRUPT} should have failed with a reason[/]")
        problems.append(Check(CORRUPT, "", "", "", False, "not reported"))
    expected_code = 1 if (samples / CORRUPT).is_file() else 0
    if code != expected_code:
        console.print(f"[red]the CLI exited with {code}, expected {expected_code}[/]")
        problems.append(Check("exit code", "", "", "", False, str(code)))
    if problems:
        console.print(f"[red]demo: {len(problems)} check(s) failed[/]")
        return 1
    console.print(f"[green]demo: all {len(checks)} outputs checked[/]")
    base = f"http://127.0.0.1:{PLAYGROUND_PORT}"
    console.print(
        "\nSee it in a browser: start the local server with\n"
        f"  upscale-stream serve --port {PLAYGROUND_PORT} --api-key {PLAYGROUND_KEY}\n"
        f"then open the playground at {base}/ (enter the key {PLAYGROUND_KEY}, add images, "
        f"Upscale) and the live status page at {base}/status",
        soft_wrap=True,
        highlight=False,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
