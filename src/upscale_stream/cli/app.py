"""The ``upscale-stream`` command line: the parser, its sub-commands and :func:`main`.

Each sub-command lives in its own module, which adds its arguments and provides its handler:
:mod:`.run` (the main job), :mod:`.serve` (the reference server) and :mod:`.demo` (sample
images through the embedded server, checked). The benchmark harness is not a sub-command: it
lives in ``benchmarks/`` of a source checkout (``make bench``), not in the package. Exit codes:
0 all succeeded, 1 some inputs failed or the server could not be used, 2 usage error, 130
interrupted.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version
from typing import NoReturn

from . import demo, run, serve
from .errors import EXIT_INTERRUPTED, EXIT_USAGE, UsageError
from .streams import Streams

__all__ = ["build_parser", "main", "print_usage_error"]

PROG = "upscale-stream"

_DESCRIPTION = """\
Upscale images through the Runware upscale WebSocket API: many tasks in flight on one
connection, results written as they arrive, resumable.

With neither --url nor an API key (--api-key or RUNWARE_API_KEY), 'run' starts the local
reference server in the same process: it really upscales (with Pillow) and nothing leaves
this machine."""

_RUN_EPILOG = """\
examples:
  upscale-stream run photos/ --out big/                      # a folder, recursively
  upscale-stream run a.png b.jpg --out big/ --factor 4 --format webp --quality 90
  upscale-stream run @urls.txt --out big/ --model clarity --setting steps=20
  find . -name '*.png' | upscale-stream run - --out big/ --json
  RUNWARE_API_KEY=... upscale-stream run photos/ --out big/  # the real API

Rerunning the same command skips what the manifest (DIR/.upscale-stream/manifest.jsonl)
records as done with the same options. Ctrl-C once: no new tasks, those in flight finish.
Twice: those in flight are cancelled and listed as pending.

exit codes: 0 all succeeded, 1 some failed, 2 usage error, 130 interrupted."""

_SERVE_EPILOG = """\
examples:
  upscale-stream serve --port 8765 --api-key my-dev-key
  UPSCALE_STREAM_SERVER_KEYS=key1,key2 upscale-stream serve --host 0.0.0.0
  upscale-stream serve --accept-any-key --task-delay 0.5     # slow, for client tests

Then: upscale-stream run photos/ --out big/ --url ws://127.0.0.1:8765/v1 --api-key my-dev-key"""

_DEMO_EPILOG = """\
examples:
  upscale-stream demo              # samples into ./demo, upscaled and checked
  upscale-stream demo /tmp/try     # elsewhere"""


def _version() -> str:
    try:
        return version("upscale-stream")
    except PackageNotFoundError:  # running from a source tree that is not installed
        return "unknown"


class _Parser(argparse.ArgumentParser):
    """argparse with our one style of usage error: one line naming the flag, then a hint.

    argparse prints its whole usage block before some errors and not others; every usage
    error (argparse's and :class:`UsageError`) now reads ``upscale-stream run: error: --quality:
    expected an integer from 20 to 99, got 'abc'`` followed by where the help is. Sub-parsers
    inherit the class (``add_subparsers`` uses ``type(parser)``).
    """

    def error(self, message: str) -> NoReturn:
        if message.startswith("argument "):  # "argument --quality: ..." -> "--quality: ..."
            message = message.removeprefix("argument ")
        print_usage_error(self.prog, message)
        raise SystemExit(EXIT_USAGE)


def print_usage_error(prog: str, message: str) -> None:
    """Print a usage error in the CLI's one style (to standard error)."""
    print(f"{prog}: error: {message}\n(see '{prog} --help')", file=sys.stderr)


def build_parser() -> argparse.ArgumentParser:
    """The full parser: the program and its ``run``, ``serve`` and ``demo`` sub-commands."""
    formatter = argparse.RawDescriptionHelpFormatter
    parser = _Parser(prog=PROG, description=_DESCRIPTION, formatter_class=formatter)
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    run.add_arguments(
        commands.add_parser(
            "run",
            help="upscale files, folders, URLs or a list of them into a folder",
            description="Upscale every INPUT into DIR, streaming, resumable.",
            epilog=_RUN_EPILOG,
            formatter_class=formatter,
        )
    )
    serve.add_arguments(
        commands.add_parser(
            "serve",
            help="run the local reference server (a Runware-compatible upscale API)",
            description=(
                "Run the reference server in the foreground until Ctrl-C: the Runware upscale\n"
                "WebSocket API on ws://HOST:PORT/v1, output images over HTTP on the same port."
            ),
            epilog=_SERVE_EPILOG,
            formatter_class=formatter,
        )
    )
    demo.add_arguments(
        commands.add_parser(
            "demo",
            help="upscale generated sample images on the embedded server and check them",
            description=(
                "Write varied sample images (sizes, formats, transparency, one corrupt file),\n"
                "upscale them with 'run --embedded', and check every output's size."
            ),
            epilog=_DEMO_EPILOG,
            formatter_class=formatter,
        )
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``upscale-stream`` command; returns the exit code.

    Args:
        argv: The arguments after the program name (default: ``sys.argv[1:]``).
    """
    arguments = list(sys.argv[1:] if argv is None else argv)
    streams = Streams.system()
    parser = build_parser()
    try:
        args, unknown = parser.parse_known_args(arguments)
    except SystemExit as exc:  # --help, --version, or a usage error already printed
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    if unknown:  # named by the sub-command they were given to, as every other usage error
        where = f"{PROG} {args.command}" if args.command else PROG
        print_usage_error(where, f"unrecognized arguments: {' '.join(unknown)}")
        return EXIT_USAGE
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        code: int = args.handler(args, streams)
    except UsageError as exc:
        print_usage_error(f"{PROG} {args.command}", str(exc))
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    return code
