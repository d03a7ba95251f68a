"""A seeded, reproducible chaos run: N tasks through one client against a faulty server.

One :class:`~upscale_stream.UpscaleClient` streams ``N`` tiny upscale tasks (a window of 500 in
flight) to an in-process :class:`~upscale_stream.server.ReferenceServer`, while a *conductor*
breaks the server on a seeded schedule. The schedule's clock is the number of tasks resolved,
never the wall clock: fault *k* fires when ``k * spacing`` tasks have resolved, and every fault
waits for its own evidence (the knob fired, the client authenticated again) with a timeout.

Faults (:data:`KINDS`; each kind fires at least once per run, the rest are drawn at random):

* drops: abort before a frame is handled (its tasks never reach the server), after a frame was
  handled (mid-batch: the client's next frames are lost), between result frames, during the
  authentication, during a ``getResponse`` poll, at random per frame;
* clean closes with 1000, 1001 and 1011, right after a frame or at any moment;
* pongs withheld while results are late (the heartbeat must find the dead link), and results
  delayed past the heartbeat deadline on a healthy link (it must survive);
* duplicated, reordered and grouped result frames; stray error items and malformed frames;
* transient error answers (a fifth of first attempts) and a rate limit (a few dozen running
  tasks per connection, ``rateLimitExceeded`` beyond): retried under new taskUUIDs;
* answers held while the session is detached and replayed on resume;
* reconnects refused (HTTP 503) for a while;
* a full restart that forgets every session, held answer and task. A restarting server is
  down: handshakes are refused until its state is gone.

Invariants checked at the end (:func:`check_invariants`), with the server's own counters:

* every submitted task resolves exactly once (one future callback, one terminal event in the
  core), with its own result (a good input) or a typed :class:`~upscale_stream.APIError`
  (a broken input);
* the server received every task under its own taskUUID, and under another one only after it
  answered the earlier one with an error (which never ran); no taskUUID of anybody else;
* every task ran exactly once (counting all its attempts), except tasks unanswered at a full
  restart, which ran at most once more per restart, were resent under the same taskUUID and
  completed;
* afterwards nothing is in flight in the client, its core holds no task, no timer and no
  queued frame, and no asyncio task of the client (or, after it stopped, of the server) is left.

Usage (the ``make chaos`` target)::

    python -m tests.chaos.runner --tasks 200000 --seed 1

The report (faults by kind, reconnects, resends, duplicates avoided, time to recover) is printed
and written as text and JSON; the exit code is 1 when an invariant was broken.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import gc
import io
import logging
import random
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import psutil
from PIL import Image

from upscale_stream import APIError, Heartbeat, Polling, Retry, Timeouts, UpscaleClient
from upscale_stream.models import UpscaleTask
from upscale_stream.protocol import (
    Authenticated,
    Discarded,
    HeartbeatMissed,
    MalformedMessage,
    StrayError,
)
from upscale_stream.server import ReferenceServer, ServerConfig

from .conductor import KINDS, Conductor, CoreSpy, Tracker, fault_schedule

__all__ = [
    "INVARIANTS",
    "KINDS",
    "ChaosReport",
    "ChaosSettings",
    "check_invariants",
    "main",
    "run_chaos",
]

KEY = "chaos-key-SECRET-6f1d2c3b4a5e"
MiB = 1024 * 1024


INVARIANTS: dict[str, str] = {
    "once": "every submitted task resolves exactly once",
    "own": "with its own result (good input) or a typed APIError (broken input)",
    "same_uuid": (
        "no task is ever submitted under a second taskUUID, unless the server answered the"
        " first with an error (and did not run it)"
    ),
    "no_rerun": "no task runs twice when its session could be resumed",
    "restart": "after a full restart, unanswered tasks are resent (same taskUUID) and complete",
    "recovery": "the client recovers from every fault within the event timeout",
    "baseline": "afterwards nothing is in flight and no asyncio task is left",
}
"""The invariants checked after a run, by short name (keys of ``ChaosReport.violations``)."""


@dataclass(frozen=True)
class ChaosSettings:
    """What to run.

    Attributes:
        tasks: How many tasks to submit.
        seed: Seeds the task mix, the fault schedule, the server's fault knobs and the client's
            backoff jitter.
        window: The client's ``max_in_flight``.
        max_batch: The client's ``max_batch``.
        fault_every: Tasks resolved between two faults (default: ``tasks // 50``, kept within
            100..1000).
        async_share: Share of tasks sent with ``deliveryMethod: "async"`` (they are polled).
        bad_share: Share of tasks with a broken input (they must fail with their own error).
        task_timeout: The client's per-task timeout: generous, a timeout is a failure here.
        event_timeout: How long one fault may take to show its effect (re-authentication).
        fire_timeout: How long a fault that acts on the next frame waits for one; if none
            comes, the fault is counted as missed (not a failure).
    """

    tasks: int = 5_000
    seed: int = 1
    window: int = 500
    max_batch: int = 50
    fault_every: int | None = None
    async_share: float = 0.1
    bad_share: float = 0.02
    task_timeout: float = 180.0
    event_timeout: float = 20.0
    fire_timeout: float = 3.0

    @property
    def run_timeout(self) -> float:
        """An upper bound for the whole run; reaching it is a failure, not a wait."""
        return 120.0 + self.tasks * 0.01


@dataclass
class ChaosReport:
    """What a run did and whether every invariant held (``violations`` is empty)."""

    tasks: int
    seed: int
    seconds: float = 0.0
    faults: Counter[str] = field(default_factory=Counter)
    missed: Counter[str] = field(default_factory=Counter)
    server_fired: Counter[str] = field(default_factory=Counter)
    outcomes: Counter[str] = field(default_factory=Counter)
    reconnects: int = 0
    connections_lost: int = 0
    heartbeat_misses: int = 0
    resends_received: int = 0
    retried_after_error: int = 0
    rate_limited: int = 0
    reruns_avoided: int = 0
    answers_discarded: int = 0
    malformed_ignored: int = 0
    stray_errors_ignored: int = 0
    held_replayed: int = 0
    restarts: int = 0
    at_risk_on_restart: int = 0
    rerun_after_restart: int = 0
    recover_p50_ms: float | None = None
    recover_p99_ms: float | None = None
    recover_max_ms: float | None = None
    rss_mib: float = 0.0
    peak_rss_mib: float = 0.0
    notes: list[str] = field(default_factory=list)
    violations: dict[str, list[str]] = field(default_factory=dict)

    def violate(self, invariant: str, detail: str) -> None:
        """Record that ``invariant`` (a key of :data:`INVARIANTS`) was broken."""
        self.violations.setdefault(invariant, []).append(detail)

    def to_json(self) -> bytes:
        """The report as indented JSON."""
        fields = {
            name: dict(value) if isinstance(value, Counter) else value
            for name, value in vars(self).items()
        }
        return orjson.dumps(fields, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS)

    def render(self) -> str:
        """The report as text, for a terminal and for ``docs/reliability.md``."""
        faults = ", ".join(f"{kind} {count}" for kind, count in sorted(self.faults.items()))
        fired = ", ".join(f"{kind} {count}" for kind, count in sorted(self.server_fired.items()))
        missed = ", ".join(f"{kind} {count}" for kind, count in sorted(self.missed.items()))
        outcomes = ", ".join(f"{kind} {count}" for kind, count in sorted(self.outcomes.items()))
        lines = [
            f"chaos run: {self.tasks} tasks, seed {self.seed}, {self.seconds:.1f} s "
            f"({self.tasks / max(self.seconds, 1e-9):.0f} tasks/s)",
            f"  outcomes:             {outcomes}",
            f"  faults injected:      {sum(self.faults.values())} ({faults})",
            f"  server knobs fired:   {fired}",
            f"  faults that found no target: {missed or 'none'}",
            f"  connections lost:     {self.connections_lost} "
            f"(heartbeat misses {self.heartbeat_misses}); reconnects {self.reconnects}",
            f"  resends (same taskUUID, seen by the server): {self.resends_received}",
            f"  retries after error answers: {self.retried_after_error} "
            f"(rate-limited {self.rate_limited})",
            f"  duplicates avoided:   {self.reruns_avoided} re-runs refused by the server "
            f"(conflictTaskUUID), {self.answers_discarded} late or duplicate answers "
            "discarded by the client",
            f"  held and replayed:    {self.held_replayed} answers held for a detached session "
            "and replayed on resume",
            f"  ignored by the client: {self.malformed_ignored} malformed frames or items, "
            f"{self.stray_errors_ignored} stray error items",
            f"  full restarts:        {self.restarts}; tasks unanswered at a restart "
            f"{self.at_risk_on_restart}, run again after it {self.rerun_after_restart}",
            f"  time to recover:      p50 {_ms(self.recover_p50_ms)}, "
            f"p99 {_ms(self.recover_p99_ms)}, max {_ms(self.recover_max_ms)}",
            f"  process RSS:          {self.rss_mib:.0f} MiB at the end, "
            f"peak {self.peak_rss_mib:.0f} MiB (sampled every 1,000 tasks; client and server "
            "in one process)",
        ]
        lines += [f"  note: {note}" for note in self.notes]
        for name, statement in INVARIANTS.items():
            broken = self.violations.get(name)
            lines.append(f"  [{'BROKEN' if broken else 'held'}] {statement}")
            lines += [f"      - {detail}" for detail in (broken or [])[:10]]
        return "\n".join(lines)


def _ms(seconds_ms: float | None) -> str:
    return "n/a" if seconds_ms is None else f"{seconds_ms:.0f} ms"


# -- inputs ------------------------------------------------------------------------------------


def _png_data_uri(width: int, height: int, seed: int) -> str:
    colour = (seed * 37 % 256, seed * 91 % 256, seed * 53 % 256)
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(buffer, "PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def _truncated_png_data_uri() -> str:
    buffer = io.BytesIO()
    Image.effect_noise((16, 16), 60).convert("RGB").save(buffer, "PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()[:60]).decode()


GOOD_INPUTS = tuple(_png_data_uri(4 + n % 4 * 4, 4 + n // 4 * 4, n) for n in range(16))
"""Sixteen PNGs from 4x4 to 16x16: the server's work per task stays tiny."""

BAD_INPUTS = (
    _truncated_png_data_uri(),
    "data:image/png;base64," + base64.b64encode(b"plain text, not an image " * 4).decode(),
)
"""A truncated PNG and text in an image data URI: each task must fail with its own error."""


# -- the run -----------------------------------------------------------------------------------


async def run_chaos(settings: ChaosSettings) -> ChaosReport:
    """Run the chaos scenario once and return its report (``violations`` empty when it held).

    Raises:
        TimeoutError: the whole run took longer than ``settings.run_timeout``.
    """
    report = ChaosReport(tasks=settings.tasks, seed=settings.seed)
    baseline = asyncio.all_tasks()
    config = ServerConfig(
        api_keys=frozenset({KEY}),
        host="127.0.0.1",
        port=0,
        retention=300.0,
        image_store_bytes=32 * MiB,
        workers=2,
        fault_seed=settings.seed,
    )
    server = ReferenceServer(config)
    await server.start()
    try:
        async with asyncio.timeout(settings.run_timeout):
            await _drive(server, settings, report)
    finally:
        await server.stop()
    leftover = [t for t in asyncio.all_tasks() - baseline if not t.done()]
    if leftover:
        report.violate("baseline", f"{len(leftover)} asyncio tasks left after the server stopped")
    report.rss_mib = _rss_mib()
    report.peak_rss_mib = max(report.peak_rss_mib, report.rss_mib)
    return report


async def _drive(server: ReferenceServer, settings: ChaosSettings, report: ChaosReport) -> None:
    client = UpscaleClient(
        api_key=KEY,
        url=server.url,
        max_in_flight=settings.window,
        max_batch=settings.max_batch,
        timeouts=Timeouts(connect=5.0, auth=3.0, task=settings.task_timeout, close=30.0),
        heartbeat=Heartbeat(interval=0.25, pong_timeout=0.5),
        retry=Retry(initial=0.01, factor=1.5, max_delay=0.1, resume_grace=0.2),
        polling=Polling(initial=0.05, factor=1.5, max_delay=0.2),
        seed=settings.seed,
    )
    before_client = asyncio.all_tasks()
    await client.connect()
    try:
        await _play(client, server, settings, report, before_client)
    except BaseException:
        await client.close(cancel=True)
        raise


async def _play(
    client: UpscaleClient,
    server: ReferenceServer,
    settings: ChaosSettings,
    report: ChaosReport,
    before_client: set[asyncio.Task[Any]],
) -> None:
    loop = asyncio.get_running_loop()
    rng = random.Random(settings.seed)
    connection = client._connection
    assert connection is not None
    session = connection.session  # the pure core, observed by CoreSpy
    spy = CoreSpy(session, loop.time)
    tracker = Tracker(spy.aliases)
    conductor = Conductor(server, tracker, settings, report)
    schedule = fault_schedule(settings, rng)

    async def submit_all() -> None:
        for index in range(settings.tasks):
            await conductor.admit(index)
            draw = rng.random()
            ok = draw >= settings.bad_share
            task = UpscaleTask(
                input_image=rng.choice(GOOD_INPUTS if ok else BAD_INPUTS),
                delivery_method="async" if draw > 1 - settings.async_share else "sync",
            )
            tracker.track(task.task_uuid, await client.submit(task), ok)
            if index % 1000 == 0:
                report.peak_rss_mib = max(report.peak_rss_mib, _rss_mib())

    started = loop.time()
    conducting = asyncio.create_task(conductor.run(schedule), name="chaos-conductor")
    try:
        await submit_all()
        await tracker.wait_resolved(settings.tasks, settings.task_timeout)
        await conducting
    except TimeoutError as exc:
        report.violate("once", f"the run stalled: {exc}")
    finally:
        conducting.cancel()
        await asyncio.gather(conducting, return_exceptions=True)
        server.faults.reset()
    report.seconds = loop.time() - started

    live = {"tasks in flight": client.in_flight, "live tasks in the core": session.live_count}
    await client.close(cancel=bool(report.violations))
    gc.collect()
    core_left = {
        **live,
        "in flight after close": client.in_flight,
        "core deadlines left": 0 if session.next_deadline() is None else 1,
        "core output left": int(session.wants_write),
        "core task records alive": sum(1 for o in gc.get_objects() if _is_core_task(o)),
        "client asyncio tasks": sum(
            1 for t in asyncio.all_tasks() - before_client if _is_client_task(t) and not t.done()
        ),
    }
    report.reconnects = client.reconnects
    report.connections_lost = spy.losses
    report.heartbeat_misses = spy.kinds[HeartbeatMissed.__name__]
    report.answers_discarded = spy.kinds[Discarded.__name__]
    report.malformed_ignored = spy.kinds[MalformedMessage.__name__]
    report.stray_errors_ignored = spy.kinds[StrayError.__name__]
    report.held_replayed = server.counts.replayed
    report.retried_after_error = spy.kinds["TaskRetrying"]
    report.rate_limited = spy.rate_limited
    report.server_fired = Counter(server.faults.fired)
    times = sorted(spy.recover_times)
    if times:
        report.recover_p50_ms = 1000 * _percentile(times, 0.50)
        report.recover_p99_ms = 1000 * _percentile(times, 0.99)
        report.recover_max_ms = 1000 * times[-1]
    if report.connections_lost and not spy.kinds[Authenticated.__name__]:
        report.notes.append("the core spy saw no authentication: instrumentation is broken")
    check_invariants(
        server, tracker, spy.terminal, conductor.at_risk, core_left, report, spy.retried_from
    )


def check_invariants(
    server: ReferenceServer,
    tracker: Tracker,
    terminal_events: Counter[str],
    at_risk: Counter[str],
    core_left: dict[str, int],
    report: ChaosReport,
    retried_from: set[str] | None = None,
) -> None:
    """Check the :data:`INVARIANTS` with the server's own counters; record what broke.

    Tasks unanswered when the server restarted (``at_risk``) may have run once more per
    restart; everything else must have run exactly once, all its attempts counted. A task
    may have reached the server under further taskUUIDs (``tracker.aliases``) only after an
    error answer for the earlier one (``retried_from``), and such an answered attempt must
    not have run.
    """
    submitted = set(tracker.expect_ok)
    received, executions = server.received, server.executions
    good = {u for u in submitted if tracker.expect_ok[u]}
    aliases = tracker.aliases
    retried_from = retried_from or set()
    attempts: dict[str, list[str]] = {u: [u] for u in submitted}
    for alias, owner in aliases.items():
        attempts.setdefault(owner, [owner]).append(alias)
    runs = Counter({u: sum(executions[a] for a in attempts[u]) for u in submitted})

    def check(invariant: str, what: str, bad: set[str] | list[str]) -> None:
        if bad:
            report.violate(invariant, f"{len(bad)} tasks {what}, e.g. {sorted(bad)[:2]}")

    if len(submitted) != report.tasks:
        report.violate("once", f"{len(submitted)} distinct tasks tracked, not {report.tasks}")
    check(
        "once",
        "did not resolve exactly once",
        [u for u in submitted if tracker.resolutions[u] != 1],
    )
    check(
        "once",
        "had other than one terminal event in the core",
        [u for u in submitted if terminal_events[u] != 1],
    )
    failed_good = {u for u in good if tracker.outcome.get(u) != "ok"}
    check("own", "with a good input did not get their own result", failed_good - set(at_risk))
    check(
        "own",
        "with a broken input did not fail with an APIError",
        [
            u
            for u in submitted - good
            if not str(tracker.outcome.get(u)).startswith(f"{APIError.__name__}:")
        ],
    )
    lost = failed_good & set(at_risk)
    if lost:
        codes = Counter(tracker.outcome.get(u) for u in lost)
        check("restart", f"unanswered at a restart did not complete ({dict(codes)})", lost)
    check("same_uuid", "never reached the server", [u for u in submitted if received[u] < 1])
    strangers = set(received) - submitted - set(aliases)
    if strangers:
        report.violate("same_uuid", f"the server received {len(strangers)} unknown taskUUIDs")
    check(
        "same_uuid",
        "got a new taskUUID although the server had not answered the old one with an error",
        [u for u in submitted for a in attempts[u][:-1] if a not in retried_from],
    )
    check(
        "same_uuid",
        "ran under a taskUUID the server had answered with an error",
        [a for a in retried_from if executions[a] > 0 and a in received],
    )
    check(
        "no_rerun",
        "ran more than once without a restart",
        [u for u in submitted if runs[u] > 1 and u not in at_risk],
    )
    check(
        "restart",
        "ran more often than one run per restart allows",
        [u for u in submitted if runs[u] > 1 + at_risk[u]],
    )
    for name, value in core_left.items():
        if value:
            report.violate("baseline", f"after the run: {name} = {value} (expected 0)")
    report.outcomes = Counter(
        "ok" if tracker.outcome.get(u) == "ok" else str(tracker.outcome.get(u)) for u in submitted
    )
    report.resends_received = sum(received[u] - 1 for u in submitted if received[u] > 1)
    report.reruns_avoided = sum(max(0, received[u] - max(executions[u], 1)) for u in good)
    report.at_risk_on_restart = len(at_risk)
    report.rerun_after_restart = sum(1 for u in at_risk if runs[u] > 1)


def _is_client_task(task: asyncio.Task[Any]) -> bool:
    code = getattr(task.get_coro(), "cr_code", None)
    filename = getattr(code, "co_filename", "")
    return "upscale_stream" in filename and "server" not in filename


def _is_core_task(obj: object) -> bool:
    kind = type(obj)
    return kind.__name__ == "TaskRecord" and kind.__module__ == "upscale_stream.records"


def _percentile(ordered: list[float], share: float) -> float:
    index = min(len(ordered) - 1, max(0, round(share * (len(ordered) - 1))))
    return ordered[index]


def _rss_mib() -> float:
    """Resident memory of this process (client and server together), in MiB."""
    return float(psutil.Process().memory_info().rss) / MiB


# -- command line ------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m tests.chaos.runner``: run, print and save the report; 1 if it failed."""
    parser = argparse.ArgumentParser(prog="python -m tests.chaos.runner", description=__doc__)
    parser.add_argument("--tasks", type=int, default=ChaosSettings.tasks)
    parser.add_argument("--seed", type=int, default=ChaosSettings.seed)
    parser.add_argument("--window", type=int, default=ChaosSettings.window)
    parser.add_argument("--fault-every", type=int, default=None)
    parser.add_argument(
        "--out", type=Path, default=None, help="folder for report.txt, report.json, chaos.log"
    )
    args = parser.parse_args(argv)
    out = args.out or Path(tempfile.mkdtemp(prefix="upscale-chaos-"))
    out.mkdir(parents=True, exist_ok=True)
    settings = ChaosSettings(
        tasks=args.tasks, seed=args.seed, window=args.window, fault_every=args.fault_every
    )
    handler = logging.FileHandler(out / "chaos.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s %(message)s"))
    package = logging.getLogger("upscale_stream")
    package.addHandler(handler)
    package.setLevel(logging.INFO)
    package.propagate = False  # the log goes to the file; the terminal gets the report
    started = time.monotonic()
    try:
        report = asyncio.run(run_chaos(settings))
    finally:
        package.removeHandler(handler)
        handler.close()
    text = report.render()
    (out / "report.txt").write_text(text + "\n")
    (out / "report.json").write_bytes(report.to_json())
    print(text)
    print(f"(wall {time.monotonic() - started:.1f} s; report and log in {out})")
    return 1 if report.violations else 0


if __name__ == "__main__":
    sys.exit(main())
