"""``upscale-stream bench``: run the benchmark harness of a source checkout.

The harness (``benchmarks/`` at the repository root) is not part of the installed package: it
starts stub servers and the official SDKs in their own virtual environments. This command finds
the checkout (from the current folder upwards, then from this package's own location, which is
inside the checkout for an editable install) and runs ``python -m benchmarks.harness`` there
with every argument passed through unchanged. Outside a checkout it says so and exits with 2.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

from .errors import EXIT_USAGE
from .streams import Streams

__all__ = ["add_arguments", "bench_command", "find_checkout", "harness_command"]

HARNESS = Path("benchmarks") / "harness.py"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``bench`` command's arguments to its sub-parser (for the help text)."""
    parser.add_argument(
        "harness_args",
        nargs=argparse.REMAINDER,
        metavar="HARNESS_ARG",
        help=(
            "Passed unchanged to python -m benchmarks.harness: --quick (about a minute), "
            "--only SCENARIOS, --contenders NAMES, --list, --repeat N... "
            "Run 'upscale-stream bench -- --help' for the harness's own help."
        ),
    )
    parser.set_defaults(handler=lambda args, streams: bench_command(args.harness_args, streams))


def find_checkout(starts: Iterable[Path]) -> Path | None:
    """The first folder, at or above one of ``starts``, holding ``benchmarks/harness.py`` and
    ``pyproject.toml``; ``None`` when there is none."""
    for start in starts:
        for folder in (start, *start.parents):
            if (folder / HARNESS).is_file() and (folder / "pyproject.toml").is_file():
                return folder
    return None


def harness_command(arguments: Sequence[str]) -> list[str]:
    """The command line that runs the harness with ``arguments`` (a leading ``--`` dropped)."""
    passed = list(arguments[1:] if arguments[:1] == ["--"] else arguments)
    return [sys.executable, "-m", "benchmarks.harness", *passed]


def bench_command(
    arguments: Sequence[str], streams: Streams, *, starts: Iterable[Path] | None = None
) -> int:
    """Run the harness in the checkout; returns its exit code (2 outside a checkout).

    Args:
        arguments: Passed to the harness (a leading ``--`` is dropped).
        streams: Where our own messages go; the harness writes to the real terminal.
        starts: Where to look for the checkout (default: the current folder, then this
            package's folder).
    """
    if starts is None:
        starts = [Path.cwd().resolve(), Path(__file__).resolve().parent]
    root = find_checkout(starts)
    if root is None:
        print(
            "upscale-stream bench: error: the benchmark harness is not installed with the "
            "package; it lives in benchmarks/ of a source checkout. Clone the repository and "
            "run 'upscale-stream bench' (or 'make bench') from inside it.",
            file=streams.stderr,
        )
        return EXIT_USAGE
    command = harness_command(arguments)
    print(f"running {' '.join(command[1:])} in {root}", file=streams.stderr, flush=True)
    streams.stdout.flush()
    return subprocess.call(command, cwd=root)
