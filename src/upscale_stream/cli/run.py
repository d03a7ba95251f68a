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
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import signal
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..client import Outcome, UpscaleClient
from ..config import DEFAULT_URL, ENV_API_KEY, ENV_URL, Limits, Timeouts
from ..download import save_atomic
from ..errors import UpscaleError
from ..log import get_logger, register_secret
from ..models import UpscaleResult
from .errors import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, UsageError
from .manifest import (
    MANIFEST_FILE,
    STATE_DIR,
    SUMMARY_FILE,
    Entry,
    ManifestWriter,
    is_done,
    options_digest,
    read_manifest,
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
from .sources import Planned, discover, plan_outputs
from .streams import Streams
from .summary import Failure, RunSummary, failure_from, render_text, write_summary

__all__ = ["DEFAULT_CONCURRENCY", "Endpoint", "add_arguments", "choose_endpoint", "run_command"]

log = get_logger(__name__)

DEFAULT_CONCURRENCY = 64
"""Tasks in flight by default. Lower than the library's 500: every task in flight holds its
input image in memory, and a real upscale takes seconds, so 64 already keeps the link busy."""
WRITERS = 16
"""Results being downloaded and written at the same time."""
DEFAULT_PROGRESS_INTERVAL = 5.0


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
        help="Ignore the manifest: upscale every input again and start a new manifest.",
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


def run_command(args: argparse.Namespace, streams: Streams) -> int:
    """Run ``upscale-stream run`` with parsed arguments; returns the exit code.

    Raises:
        UsageError: the arguments cannot be run (exit code 2).
    """
    return asyncio.run(execute(args, streams, os.environ))


async def execute(args: argparse.Namespace, streams: Streams, environ: Mapping[str, str]) -> int:
    """The run command as a coroutine (for callers that own an event loop).

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
    out_dir: Path = args.out
    if out_dir.exists() and not out_dir.is_dir():
        raise UsageError(f"--out {out_dir}: exists and is not a folder")
    sources = discover(args.inputs, stdin=streams.stdin, exclude=out_dir)
    planned = plan_outputs(
        sources, extension=extension_for(placeholder.output_format), suffix=args.suffix
    )
    digest = options_digest(placeholder.to_wire())
    state = out_dir / STATE_DIR
    entries = {} if args.no_resume else read_manifest(state / MANIFEST_FILE)
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
        server="embedded" if endpoint.embedded else str(endpoint.url),
        started_at=datetime.now(UTC).isoformat(timespec="seconds"),
        inputs=len(planned),
        skipped=tally.skipped,
        cost=0.0 if options.get("include_cost") else None,
    )
    started = time.monotonic()
    tally.started = started
    with logging_through(reporter, args.verbose):
        if not todo:
            reporter.note(
                f"nothing to do: all {len(planned)} inputs are already done "
                f"(see {state / MANIFEST_FILE}; --no-resume redoes them)"
            )
        else:
            job = _Job(args, options, digest, todo, out_dir, tally, summary, reporter)
            with ManifestWriter(state / MANIFEST_FILE, fresh=args.no_resume) as manifest:
                await job.run(endpoint, manifest)
    summary.wall_seconds = time.monotonic() - started
    summary.exit_code = _exit_code(summary)
    summary_path = write_summary(state / SUMMARY_FILE, summary)
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


class _Job:
    """One streaming run over ``todo``: submit, write as results arrive, handle Ctrl-C."""

    def __init__(
        self,
        args: argparse.Namespace,
        options: dict[str, Any],
        digest: str,
        todo: list[Planned],
        out_dir: Path,
        tally: Tally,
        summary: RunSummary,
        reporter: Reporter,
    ) -> None:
        self.args = args
        self.options = dict(options)
        self.digest = digest
        self.todo = todo
        self.out_dir = out_dir
        self.tally = tally
        self.summary = summary
        self.reporter = reporter
        self.pulled = 0
        self.finalized: set[int] = set()
        self.stop_requested = False
        self.cancel_requested = False
        self.interrupts = 0
        self._slots = asyncio.Semaphore(WRITERS)
        self._window = asyncio.Semaphore(args.concurrency)
        self._writers: set[asyncio.Task[None]] = set()
        self._consumer: asyncio.Task[None] | None = None
        self._manifest: ManifestWriter | None = None

    async def run(self, endpoint: Endpoint, manifest: ManifestWriter) -> None:
        """Connect (starting the embedded server if needed), stream everything, clean up."""
        self._manifest = manifest
        async with contextlib.AsyncExitStack() as stack:
            url, api_key = endpoint.url, endpoint.api_key
            if endpoint.embedded:
                url, api_key = await self._start_embedded(stack, endpoint.reason)
            client = UpscaleClient(
                api_key,
                url=url,
                max_in_flight=self.args.concurrency,
                max_batch=self.args.batch,
                timeouts=Timeouts(task=self.args.timeout),
            )
            try:
                await client.connect()
            except UpscaleError as exc:
                self.summary.error = f"cannot use the server at {url}: {exc}"
                self.summary.not_started = len(self.todo)
                await client.close()
                return
            try:
                await self._stream(client)
            finally:
                await client.close(cancel=self.cancel_requested)
                self.summary.client = client.stats()
        self.summary.pending = [
            self.todo[i].source.key for i in range(self.pulled) if i not in self.finalized
        ]
        self.summary.not_started = len(self.todo) - self.pulled
        self.summary.interrupted = self.interrupts > 0

    async def _start_embedded(
        self, stack: contextlib.AsyncExitStack, reason: str
    ) -> tuple[str, str]:
        from ..server import ReferenceServer, ServerConfig

        api_key = "embedded-" + secrets.token_urlsafe(24)
        register_secret(api_key)
        config = ServerConfig(
            api_keys=frozenset({api_key}),
            port=0,
            allow_private_urls=True,
            task_delay=self.args.server_task_delay,
            status_shows_results=True,  # one key, this run's own: its results are the user's
        )
        server = await stack.enter_async_context(ReferenceServer(config))
        self.reporter.note(
            f"{reason}: using the embedded local server at {server.url} "
            "(real Pillow upscaling, nothing leaves this machine)"
        )
        if self.args.verbose:
            self.reporter.note(f"status page: {server.http_url}/status (live figures)")
        return server.url, api_key

    async def _stream(self, client: UpscaleClient) -> None:
        loop = asyncio.get_running_loop()
        handled = _install_sigint(loop, self._on_sigint)
        ticker = asyncio.create_task(self._tick())
        self.reporter.start()
        try:
            self._consumer = asyncio.create_task(self._consume(client))
            await asyncio.wait({self._consumer})
            if not self._consumer.cancelled() and (exc := self._consumer.exception()):
                raise exc
            if self.cancel_requested:
                for writer in self._writers:
                    writer.cancel()
            await asyncio.gather(*self._writers, return_exceptions=True)
        finally:
            ticker.cancel()
            await asyncio.gather(ticker, return_exceptions=True)
            if handled:
                loop.remove_signal_handler(signal.SIGINT)
            self.reporter.stop()

    async def _consume(self, client: UpscaleClient) -> None:
        options = dict(self.options)
        factor = options.pop("upscale_factor")
        model = options.pop("model")
        stream = client.upscale_many(
            self._feed(),
            factor=factor,
            model=model,
            ordered=False,
            timeout=self.args.timeout,
            **options,
        )
        try:
            async for outcome in stream:
                await self._take(outcome)
        finally:
            await stream.aclose()

    async def _feed(self) -> AsyncIterator[Path | str]:
        # upscale_many reads this lazily. Our own window (the client's size, released when an
        # outcome arrives) makes an input leave here only when it can be sent at once, so
        # stopping here stops new submissions, and `pulled` counts exactly what was sent.
        for planned in self.todo:
            await self._window.acquire()
            if self.stop_requested:
                return
            self.pulled += 1
            self.tally.in_flight += 1
            yield planned.source.image

    async def _take(self, outcome: Outcome[Path | str]) -> None:
        self._window.release()
        self.tally.in_flight -= 1
        planned = self.todo[outcome.index]
        if outcome.error is not None:
            sent = outcome.task_uuid is not None
            self._fail(outcome.index, failure_from(planned.source.key, outcome.error), sent)
            return
        assert outcome.result is not None
        await self._slots.acquire()
        writer = asyncio.create_task(
            self._write(outcome.index, planned, outcome.result, outcome.task_uuid or "")
        )
        self._writers.add(writer)
        writer.add_done_callback(self._writers.discard)

    async def _write(
        self, index: int, planned: Planned, result: UpscaleResult, task_uuid: str
    ) -> None:
        target = self.out_dir / planned.output
        try:
            written = await asyncio.to_thread(_fetch_and_save, result, target, self.args.timeout)
        except (UpscaleError, OSError) as exc:
            self._fail(index, failure_from(planned.source.key, exc, task_uuid), sent=True)
            return
        finally:
            self._slots.release()
        assert self._manifest is not None
        self._manifest.append(
            Entry(
                input=planned.source.key,
                options=self.digest,
                output=str(planned.output),
                task_uuid=task_uuid,
                cost=result.cost,
                bytes_in=planned.source.size,
                bytes_out=written,
                finished_at=datetime.now(UTC).isoformat(timespec="seconds"),
            )
        )
        self.finalized.add(index)
        tally = self.tally
        tally.succeeded += 1
        tally.bytes_in += planned.source.size or 0
        tally.bytes_out += written
        self.summary.succeeded += 1
        self.summary.bytes_in += planned.source.size or 0
        self.summary.bytes_out += written
        if result.cost is not None and self.summary.cost is not None:
            self.summary.cost += result.cost
            tally.cost += result.cost
        log.info("written", input=planned.source.key, output=str(target), task_uuid=task_uuid)
        self.reporter.update()

    def _fail(self, index: int, failure: Failure, sent: bool) -> None:
        size = (self.todo[index].source.size or 0) if sent else 0
        self.finalized.add(index)
        self.tally.failed += 1
        self.tally.bytes_in += size
        self.summary.failed += 1
        self.summary.bytes_in += size
        self.summary.failures.append(failure)
        log.info("failed", input=failure.input, code=failure.code, reason=failure.message)
        if self.args.fail_fast and not self.stop_requested:
            self.stop_requested = True
            self.reporter.note(
                f"--fail-fast: {failure.input} failed ({failure.code}); sending no new tasks"
            )
        self.reporter.update()

    def _on_sigint(self) -> None:
        self.interrupts += 1
        if self.interrupts == 1:
            self.stop_requested = True
            in_flight = self.tally.in_flight  # answered but still being written: not in flight
            self.reporter.note(
                f"interrupted: sending no new tasks; waiting for {in_flight} in flight "
                "(press Ctrl-C again to cancel them)"
            )
            return
        if not self.cancel_requested:
            self.cancel_requested = True
            self.reporter.note("cancelling the tasks in flight; they will be listed as pending")
            if self._consumer is not None:
                self._consumer.cancel()

    async def _tick(self) -> None:
        interval = max(self.args.progress_interval, 1.0)
        while True:
            await asyncio.sleep(interval)
            self.reporter.tick()


def _fetch_and_save(result: UpscaleResult, target: Path, timeout: float | None) -> int:
    """Get the output bytes (decode, or download the URL) and write them atomically."""
    content = result.read_bytes(timeout=timeout or 60.0)
    save_atomic(target, content)
    return len(content)


def _install_sigint(loop: asyncio.AbstractEventLoop, callback: Any) -> bool:
    """Route SIGINT to ``callback`` on ``loop``; ``False`` where that is impossible (a thread
    other than the main one, Windows), leaving Ctrl-C to raise KeyboardInterrupt."""
    try:
        loop.add_signal_handler(signal.SIGINT, callback)
    except (ValueError, RuntimeError, NotImplementedError):
        return False
    return True
