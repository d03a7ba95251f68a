"""``upscale-stream serve``: run the reference server in the foreground.

Every field of :class:`~upscale_stream.server.ServerConfig` that makes sense on a command line
has a flag (only ``clock`` has none), with the dataclass's default shown in the help. Accepted
keys come from ``--api-key`` (repeatable), else ``UPSCALE_STREAM_SERVER_KEYS``
(comma-separated); with neither, a random key is generated and printed once at start, since the
server must accept some key. ``--accept-any-key`` is for development only and says so loudly.
Ctrl-C or SIGTERM stops the server cleanly (exit code 0).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import os
import re
import secrets
import signal
from collections.abc import Callable, Mapping
from typing import Any

from ..log import configure_logging
from .errors import EXIT_OK, UsageError
from .options import parse_number
from .streams import Streams

__all__ = [
    "ENV_SERVER_KEYS",
    "FLAG_OF_FIELD",
    "add_arguments",
    "check_engine",
    "parse_size",
    "serve_command",
    "server_config_from_args",
]

ENV_SERVER_KEYS = "UPSCALE_STREAM_SERVER_KEYS"

_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMG]i?B|B)?\s*$", re.IGNORECASE)
_UNITS = {
    "b": 1,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
}


def parse_size(text: str) -> int:
    """A size in bytes: ``1048576``, ``900KiB``, ``64MiB``, ``1GB`` (units in any case)."""
    match = _SIZE_RE.match(text)
    if match is None:
        raise argparse.ArgumentTypeError(
            f"expected a size such as 900KiB, 64MiB or 1048576 (bytes), got {text!r}"
        )
    number, unit = match.groups()
    return int(float(number) * _UNITS[(unit or "b").lower()])


def _size_or_none(text: str) -> int | None:
    return None if text.strip().lower() in ("none", "unlimited") else parse_size(text)


def _seconds(text: str) -> float:
    value = parse_number(text, float, "a number of seconds")
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative, got {text}")
    return value


def _port(text: str) -> int:
    value = parse_number(text, int, "a port number")
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(
            f"must be from 0 to 65535 (0 picks a free one), got {value}"
        )
    return value


def _rate(text: str) -> float:
    value = parse_number(text, float, "a number")
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative, got {text}")
    return value


def _count(text: str) -> int:
    value = parse_number(text, int, "a whole number")
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative, got {value}")
    return value


@dataclasses.dataclass(frozen=True, slots=True)
class _Flag:
    field: str
    flag: str
    kind: Callable[[str], Any] | None
    metavar: str | None
    help: str


def _default_text(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "off"
    if isinstance(value, int) and value >= 1024 and value % 1024 == 0:
        for unit, size in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
            if value % size == 0:
                return f"{value // size}{unit}"
    return f"{value:g}" if isinstance(value, float) else str(value)


_FLAGS: tuple[_Flag, ...] = (
    _Flag("host", "--host", None, "HOST", "Interface to bind; 0.0.0.0 for every interface."),
    _Flag("port", "--port", _port, "PORT", "TCP port; 0 picks a free one."),
    _Flag(
        "public_url",
        "--public-url",
        None,
        "URL",
        "Base of the imageURL values, for a server behind a proxy; none means http://HOST:PORT.",
    ),
    _Flag(
        "hold_time",
        "--hold-time",
        _seconds,
        "SECONDS",
        "How long answers for a disconnected session are held for its resume.",
    ),
    _Flag(
        "retention",
        "--retention",
        _seconds,
        "SECONDS",
        "How long a finished task stays known (getResponse, taskUUID de-duplication).",
    ),
    _Flag(
        "idle_timeout",
        "--idle-timeout",
        _seconds,
        "SECONDS",
        "Close a socket that sent nothing for this long.",
    ),
    _Flag(
        "auth_timeout",
        "--auth-timeout",
        _seconds,
        "SECONDS",
        "Close a socket that has not authenticated after this long.",
    ),
    _Flag(
        "close_timeout",
        "--close-timeout",
        _seconds,
        "SECONDS",
        "How long a clean close waits for the client's close frame.",
    ),
    _Flag(
        "max_size",
        "--max-size",
        _size_or_none,
        "SIZE",
        "Largest incoming message (900KiB, 64MiB, bytes, or none); bigger ones close "
        "the socket with 1009.",
    ),
    _Flag(
        "max_message_bytes",
        "--max-message-bytes",
        _size_or_none,
        "SIZE",
        "Largest message handled (at most --max-size; none: 16MiB, or --max-size if smaller); "
        "bigger ones get frameTooLarge error items and the socket stays open.",
    ),
    _Flag(
        "compression",
        "--compression",
        None,
        None,
        "Negotiate permessage-deflate (images do not compress, so it only costs CPU).",
    ),
    _Flag(
        "task_delay",
        "--task-delay",
        _seconds,
        "SECONDS",
        "Simulated latency added to every upscale and upload.",
    ),
    _Flag("workers", "--workers", _count, "N", "Threads doing the image work."),
    _Flag(
        "engine",
        "--engine",
        None,
        "NAME",
        "What upscales: pillow (classical filters) or neural (Real-ESRGAN on the CPU for "
        "SwinIR x2/x4 and CCSR; needs pip install 'upscale-stream[sr]'). See docs/engines.md.",
    ),
    _Flag(
        "allow_private_urls",
        "--allow-private-urls",
        None,
        None,
        "Let URL inputs, webhooks and upload endpoints reach private and loopback addresses.",
    ),
    _Flag(
        "fetch_timeout",
        "--fetch-timeout",
        _seconds,
        "SECONDS",
        "Timeout of each outbound HTTP request (URL inputs, webhooks, uploads).",
    ),
    _Flag(
        "max_fetch_bytes",
        "--max-fetch-bytes",
        parse_size,
        "SIZE",
        "Largest URL input downloaded.",
    ),
    _Flag("webhook_retries", "--webhook-retries", _count, "N", "Attempts per webhook POST."),
    _Flag(
        "url_ttl",
        "--url-ttl",
        _seconds,
        "SECONDS",
        "Lifetime of an output image and its URL when the task sets no ttl.",
    ),
    _Flag(
        "image_store_bytes",
        "--image-store-bytes",
        parse_size,
        "SIZE",
        "Memory cap of the image store; the least recently used images go first.",
    ),
    _Flag("max_pixels", "--max-pixels", _count, "N", "Largest input image, in pixels."),
    _Flag(
        "max_tasks_per_frame",
        "--max-tasks-per-frame",
        _count,
        "N",
        "Tasks beyond this many in one frame get a tooManyTasks error.",
    ),
    _Flag(
        "max_in_flight",
        "--max-in-flight",
        _count,
        "N",
        "Running tasks allowed per connection; the excess gets tooManyTasks.",
    ),
    _Flag(
        "max_frame_items",
        "--max-frame-items",
        _count,
        "N",
        "Most answers the server puts in one outgoing frame.",
    ),
    _Flag(
        "max_frame_bytes",
        "--max-frame-bytes",
        parse_size,
        "SIZE",
        "Most bytes the server puts in one outgoing frame (a bigger answer still goes, alone).",
    ),
    _Flag(
        "sweep_interval",
        "--sweep-interval",
        _seconds,
        "SECONDS",
        "Seconds between background sweeps that free expired sessions and images.",
    ),
    _Flag(
        "auth_failure_burst",
        "--auth-failure-burst",
        _count,
        "N",
        "Failed authentications one client address may have before it is throttled.",
    ),
    _Flag(
        "auth_failures_per_minute",
        "--auth-failures-per-minute",
        _rate,
        "N",
        "Failed authentications a minute a throttled address regains.",
    ),
    _Flag(
        "max_counted_uuids",
        "--max-counted-uuids",
        _count,
        "N",
        "Distinct taskUUIDs each test counter remembers (the oldest go first).",
    ),
    _Flag("fault_seed", "--fault-seed", _count, "N", "Seed of the fault-injection generator."),
    _Flag(
        "status_shows_results",
        "--status-show-results",
        None,
        None,
        "Show the latest output images of every key on /status (off: figures only).",
    ),
)

FLAG_OF_FIELD: Mapping[str, str] = {
    "api_keys": "--api-key",
    "accept_any_key": "--accept-any-key",
    **{spec.field: spec.flag for spec in _FLAGS},
}
"""The flag of every :class:`ServerConfig` field that has one (all but ``clock``)."""


def _config_defaults() -> dict[str, Any]:
    from ..server import ServerConfig

    return {
        spec.name: spec.default
        for spec in dataclasses.fields(ServerConfig)
        if spec.default is not dataclasses.MISSING
    }


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``serve`` command's arguments to its sub-parser."""
    defaults = _config_defaults()
    keys = parser.add_argument_group("authentication")
    keys.add_argument(
        "--api-key",
        dest="api_keys",
        action="append",
        metavar="KEY",
        help=(
            f"An API key the server accepts (repeatable). Default: ${ENV_SERVER_KEYS} "
            "(comma-separated), else a random key printed once at start."
        ),
    )
    keys.add_argument(
        "--accept-any-key",
        action="store_true",
        help="DEVELOPMENT ONLY: accept any non-empty key (a warning is printed). "
        "Never expose such a server.",
    )
    server = parser.add_argument_group("server")
    for spec in _FLAGS:
        default = defaults[spec.field]
        text = f"{spec.help} Default: {_default_text(default)}."
        if spec.kind is None and isinstance(default, bool):
            server.add_argument(spec.flag, dest=spec.field, action="store_true", help=text)
        else:
            server.add_argument(
                spec.flag,
                dest=spec.field,
                type=spec.kind or str,
                default=default,
                metavar=spec.metavar,
                help=text,
            )
    logs = parser.add_argument_group("logging")
    logs.add_argument(
        "--log-level",
        type=str.lower,
        choices=("debug", "info", "warning", "error"),
        default="info",
        help="Log level: debug, info, warning or error. Default: info.",
    )
    logs.add_argument(
        "--json-logs", action="store_true", help="Log JSON objects instead of text lines."
    )
    parser.set_defaults(handler=serve_command)


def server_config_from_args(
    args: argparse.Namespace, environ: Mapping[str, str]
) -> tuple[Any, str | None]:
    """Build the :class:`ServerConfig` the flags ask for.

    Returns:
        The configuration, and the generated key when none was given (else ``None``).

    Raises:
        UsageError: a value the server refuses; the message names the flag.
    """
    from ..server import ServerConfig

    keys = list(args.api_keys or [])
    if not keys and environ.get(ENV_SERVER_KEYS):
        keys = [key.strip() for key in environ[ENV_SERVER_KEYS].split(",") if key.strip()]
    generated = None
    if not keys and not args.accept_any_key:
        generated = "local-" + secrets.token_urlsafe(24)
        keys = [generated]
    if any(not key for key in keys):
        raise UsageError("--api-key: a key must not be empty")
    fields = {spec.field: getattr(args, spec.field) for spec in _FLAGS}
    try:
        config = ServerConfig(
            api_keys=frozenset(keys), accept_any_key=args.accept_any_key, **fields
        )
    except ValueError as exc:
        message = str(exc)
        flag = next((f for name, f in FLAG_OF_FIELD.items() if message.startswith(name)), None)
        raise UsageError(f"{flag}: {message}" if flag else message) from None
    check_engine(config.engine, "--engine")
    return config, generated


def check_engine(name: str, flag: str) -> None:
    """Load the engine now, so a missing extra is a usage error, not a failed first task.

    Raises:
        UsageError: the engine cannot run here; the message names ``flag`` and the extra.
    """
    from ..server.engines import EngineUnavailable, get_engine

    try:
        get_engine(name)
    except EngineUnavailable as exc:
        raise UsageError(f"{flag} {name}: {exc}") from None


def serve_command(args: argparse.Namespace, streams: Streams) -> int:
    """Run the server until Ctrl-C or SIGTERM; returns the exit code.

    Raises:
        UsageError: the flags describe a configuration the server refuses.
    """
    config, generated = server_config_from_args(args, os.environ)
    configure_logging(args.log_level.upper(), json=args.json_logs)
    if config.accept_any_key:
        print(
            "WARNING: --accept-any-key: EVERY API key is accepted. Development only; never "
            "expose this server.",
            file=streams.stderr,
            flush=True,
        )
    with contextlib.suppress(KeyboardInterrupt, asyncio.CancelledError):
        asyncio.run(_serve(config, generated, streams))
    return EXIT_OK


async def _serve(config: Any, generated: str | None, streams: Streams) -> None:
    from ..server import ReferenceServer

    current = asyncio.current_task()
    assert current is not None
    loop = asyncio.get_running_loop()
    with contextlib.suppress(ValueError, RuntimeError, NotImplementedError):
        loop.add_signal_handler(signal.SIGTERM, current.cancel)
    server = ReferenceServer(config)
    try:
        await server.start()
    except OSError as exc:
        # A port in use, an address not on this machine, a host name that does not resolve:
        # the command line is at fault, so the same clean usage error (exit 2) as --port abc.
        reason = exc.strerror or str(exc) or type(exc).__name__
        raise UsageError(
            f"--host {config.host} --port {config.port}: cannot listen there ({reason}); "
            "pick a free port (0 picks one) and an address of this machine"
        ) from None
    try:
        print(f"serving {server.url} (output images at {server.http_url})", file=streams.stdout)
        print(
            f"playground: {server.http_url}/  status: {server.http_url}/status", file=streams.stdout
        )
        if generated is not None:
            print(
                f"no --api-key or ${ENV_SERVER_KEYS}: generated the key {generated} "
                "for this run (clients pass it as --api-key or RUNWARE_API_KEY)",
                file=streams.stdout,
            )
        print("press Ctrl-C to stop", file=streams.stdout, flush=True)
        await asyncio.Future()
    finally:
        await server.stop()
