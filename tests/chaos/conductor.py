"""The chaos run's moving parts: the fault schedule, the conductor and the instruments.

:class:`Conductor` injects one fault at a time (:data:`KINDS`), each at a point of progress
counted in resolved tasks, and waits for its evidence with a timeout; it never sleeps.
:class:`Tracker` counts how each task's future ended and :class:`CoreSpy` watches the client's
pure core without changing it. Every fault is one of the server's own knobs
(:class:`~upscale_stream.server.Faults`) or one of its methods (drop, restart).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from upscale_stream.protocol import (
    Authenticated,
    ClientSession,
    TaskFailed,
    TaskResult,
    TaskRetrying,
)
from upscale_stream.server import ReferenceServer

if TYPE_CHECKING:
    from .runner import ChaosReport, ChaosSettings

__all__ = ["KINDS", "Conductor", "CoreSpy", "Tracker", "fault_schedule"]

log = logging.getLogger("upscale_stream.chaos")

KINDS: tuple[str, ...] = (
    "abort_before_frame",
    "abort_after_frame",
    "close_1000_after_frame",
    "close_1001_after_frame",
    "close_1011_after_frame",
    "abort_between_results",
    "close_1000",
    "close_1001",
    "close_1011",
    "drop_during_auth",
    "drop_during_poll",
    "random_drops",
    "withhold_pongs",
    "slow_results",
    "duplicate_and_reorder",
    "stray_and_malformed",
    "transient_errors",
    "rate_limit",
    "held_replay",
    "refuse_reconnect",
    "restart",
)
"""Every fault the conductor injects; each fires at least once in a run that has room."""


# -- instruments -------------------------------------------------------------------------------


class Tracker:
    """Counts how each task's future resolved, and lets the conductor wait on progress.

    ``aliases`` maps the taskUUID of every retry attempt to the task's first taskUUID (filled
    by :class:`CoreSpy`): a retried task's result carries its final attempt's taskUUID.
    """

    def __init__(self, aliases: dict[str, str] | None = None) -> None:
        self.aliases: dict[str, str] = {} if aliases is None else aliases
        self.expect_ok: dict[str, bool] = {}
        self.resolutions: Counter[str] = Counter()
        self.outcome: dict[str, str] = {}
        self.unresolved: set[str] = set()
        self.resolved = 0
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []

    def track(self, task_uuid: str, future: asyncio.Future[Any], ok: bool) -> None:
        """Watch a submitted task's future; ``ok`` says whether its input is a good one."""
        self.expect_ok[task_uuid] = ok
        self.unresolved.add(task_uuid)
        future.add_done_callback(functools.partial(self._done, task_uuid))

    def _done(self, task_uuid: str, future: asyncio.Future[Any]) -> None:
        self.resolutions[task_uuid] += 1
        self.unresolved.discard(task_uuid)
        if future.cancelled():
            outcome = "cancelled"
        elif (error := future.exception()) is not None:
            outcome = f"{type(error).__name__}:{getattr(error, 'code', '')}"
        elif self._owner(getattr(future.result(), "task_uuid", None)) != task_uuid:
            outcome = "someone else's result"
        else:
            outcome = "ok"
        self.outcome[task_uuid] = outcome
        self.resolved += 1
        for entry in [w for w in self._waiters if w[0] <= self.resolved]:
            self._waiters.remove(entry)
            if not entry[1].done():
                entry[1].set_result(None)

    def _owner(self, task_uuid: str | None) -> str | None:
        return self.aliases.get(task_uuid, task_uuid) if task_uuid is not None else None

    async def wait_resolved(self, count: int, timeout: float) -> None:
        """Wait until ``count`` tasks in total have resolved.

        Raises:
            TimeoutError: not within ``timeout`` seconds (the message says how far it got).
        """
        if self.resolved >= count:
            return
        future = asyncio.get_running_loop().create_future()
        entry = (count, future)
        self._waiters.append(entry)
        try:
            async with asyncio.timeout(timeout):
                await future
        except TimeoutError:
            raise TimeoutError(
                f"only {self.resolved} of {count} tasks resolved after {timeout:g} s"
            ) from None
        finally:
            if entry in self._waiters:
                self._waiters.remove(entry)


class CoreSpy:
    """Observes the client's pure core (``events_received``, ``connection_lost``), changing
    nothing: terminal events per task, discarded answers, retries under a new taskUUID (after
    an error answer), and the time from each lost socket to the next authentication."""

    def __init__(self, session: ClientSession, clock: Callable[[], float]) -> None:
        self.terminal: Counter[str] = Counter()
        self.aliases: dict[str, str] = {}  # a retry's taskUUID -> the task's first taskUUID
        self.retried_from: set[str] = set()  # taskUUIDs the server answered with an error
        self.rate_limited = 0
        self.kinds: Counter[str] = Counter()
        self.recover_times: list[float] = []
        self.losses = 0
        self._clock = clock
        self._lost_at: float | None = None
        events_received = session.events_received
        connection_lost = session.connection_lost

        def spy_events() -> list[Any]:
            events = events_received()
            for event in events:
                kind = type(event)
                if isinstance(event, TaskResult | TaskFailed):
                    self.terminal[event.task_uuid] += 1
                elif isinstance(event, TaskRetrying):
                    self.kinds[kind.__name__] += 1
                    if event.new_uuid != event.old_uuid:  # a resent task keeps its UUID
                        self.aliases[event.new_uuid] = event.task_uuid
                        self.retried_from.add(event.old_uuid)
                    self.rate_limited += event.rate_limited
                else:
                    self.kinds[kind.__name__] += 1
                    if kind is Authenticated and self._lost_at is not None:
                        self.recover_times.append(self._clock() - self._lost_at)
                        self._lost_at = None
            return events

        def spy_connection_lost(now: float) -> Any:
            self.losses += 1
            if self._lost_at is None:
                self._lost_at = self._clock()
            return connection_lost(now)

        session.events_received = spy_events  # type: ignore[method-assign]
        session.connection_lost = spy_connection_lost  # type: ignore[method-assign]


# -- the conductor -----------------------------------------------------------------------------


def fault_schedule(settings: ChaosSettings, rng: random.Random) -> list[tuple[int, str]]:
    """``(tasks resolved, fault kind)`` pairs: every kind once, in a seeded order, then more."""
    last = settings.tasks - 2 * settings.window
    if last <= 0:
        return []
    spacing = settings.fault_every or min(1000, max(100, settings.tasks // 50))
    count = max(len(KINDS), last // spacing)
    kinds = list(KINDS)
    rng.shuffle(kinds)
    kinds += [rng.choice(KINDS) for _ in range(count - len(KINDS))]
    return [(round(last * (n + 1) / (count + 1)), kind) for n, kind in enumerate(kinds)]


class Conductor:
    """Runs the fault schedule; each fault resets every knob when it is done."""

    def __init__(
        self,
        server: ReferenceServer,
        tracker: Tracker,
        settings: ChaosSettings,
        report: ChaosReport,
    ) -> None:
        self.server = server
        self.faults = server.faults
        self.tracker = tracker
        self.settings = settings
        self.report = report
        self.rng = random.Random(f"conductor-{settings.seed}")
        self.at_risk: Counter[str] = Counter()
        self._allowed = 0
        self._admitted = 0
        self._gate_moved = asyncio.Event()

    async def admit(self, index: int) -> None:
        """Wait until the task with this 0-based index may be submitted.

        The gate keeps the submitter about one window past the fault being injected, so the
        run cannot end before its schedule has been played, however long a fault takes.
        """
        while index >= self._allowed:
            self._gate_moved.clear()
            await self._gate_moved.wait()
        self._admitted = index + 1

    def _open_gate(self, up_to: int) -> None:
        up_to = min(up_to, self.settings.tasks)
        if up_to > self._allowed:
            self._allowed = up_to
            self._gate_moved.set()

    async def run(self, schedule: list[tuple[int, str]]) -> None:
        """Inject each fault once ``threshold`` tasks have resolved; then open the gate fully."""
        settings = self.settings
        try:
            for threshold, kind in schedule:
                self._open_gate(threshold + settings.window)
                try:
                    await self.tracker.wait_resolved(threshold, settings.task_timeout)
                except TimeoutError as exc:
                    self.report.violate("recovery", f"stalled before fault {kind}: {exc}")
                    return
                # A few new frames of tasks for the faults that act on the next one.
                self._open_gate(self._admitted + 2 * settings.max_batch)
                log.info(
                    "fault %s at %d resolved (gate %d, authentications %d)",
                    kind,
                    self.tracker.resolved,
                    self._allowed,
                    self._auths,
                )
                try:
                    await getattr(self, kind)()
                except TimeoutError as exc:
                    self.report.violate("recovery", f"fault {kind}: {exc}")
                finally:
                    self.faults.reset()
        finally:
            self._open_gate(settings.tasks)

    # -- helpers -------------------------------------------------------------------------------

    @property
    def _auths(self) -> int:
        return self.server.counts.authentications

    async def _recovered(self, before: int) -> None:
        """Wait for the client's next successful authentication after ``before`` of them."""
        await self.server.wait_authenticated(before + 1, timeout=self.settings.event_timeout)

    async def _knob_fired(self, knob: str, before: int) -> bool:
        try:
            await self.server.wait_until(
                lambda: self.faults.fired[knob] > before,
                timeout=self.settings.fire_timeout,
                what=f"fault {knob} to fire",
            )
        except TimeoutError:
            return False
        return True

    async def _more_resolved(self, count: int) -> None:
        """Wait for ``count`` more tasks to resolve (fewer if the gate does not let them in)."""
        target = min(self.tracker.resolved + count, self._allowed)
        await self.tracker.wait_resolved(target, self.settings.event_timeout)

    def _count(self, kind: str, fired: bool) -> None:
        (self.report.faults if fired else self.report.missed)[kind] += 1

    # -- drops -----------------------------------------------------------------------------------

    async def abort_before_frame(self) -> None:
        before, fired_before = self._auths, self.faults.fired["drop_before_frame"]
        self.faults.drop_before_frame = True
        fired = await self._knob_fired("drop_before_frame", fired_before)
        self._count("abort_before_frame", fired)
        if fired:
            await self._recovered(before)

    async def _drop_after_frame(self, kind: str, code: int | None) -> None:
        before, fired_before = self._auths, self.faults.fired["drop_after_tasks"]
        self.faults.close_code = code
        self.faults.drop_after_tasks = 1
        fired = await self._knob_fired("drop_after_tasks", fired_before)
        self._count(kind, fired)
        if fired:
            await self._recovered(before)

    async def abort_after_frame(self) -> None:
        await self._drop_after_frame("abort_after_frame", None)

    async def close_1000_after_frame(self) -> None:
        await self._drop_after_frame("close_1000_after_frame", 1000)

    async def close_1001_after_frame(self) -> None:
        await self._drop_after_frame("close_1001_after_frame", 1001)

    async def close_1011_after_frame(self) -> None:
        await self._drop_after_frame("close_1011_after_frame", 1011)

    async def abort_between_results(self) -> None:
        await self._more_resolved(self.rng.randint(1, 50))
        before = self._auths
        await self.server.drop_connections(None)
        self._count("abort_between_results", True)
        await self._recovered(before)

    async def _close_now(self, code: int) -> None:
        before = self._auths
        await self.server.drop_connections(code)
        self._count(f"close_{code}", True)
        await self._recovered(before)

    async def close_1000(self) -> None:
        await self._close_now(1000)

    async def close_1001(self) -> None:
        await self._close_now(1001)

    async def close_1011(self) -> None:
        await self._close_now(1011)

    async def drop_during_auth(self) -> None:
        before, fired_before = self._auths, self.faults.fired["drop_during_auth"]
        self.faults.drop_during_auth = True
        await self.server.drop_connections(None)
        fired = await self._knob_fired("drop_during_auth", fired_before)
        self._count("drop_during_auth", fired)
        await self._recovered(before)

    async def drop_during_poll(self) -> None:
        before, fired_before = self._auths, self.faults.fired["drop_on_poll"]
        self.faults.drop_on_poll = True
        fired = await self._knob_fired("drop_on_poll", fired_before)
        self._count("drop_during_poll", fired)
        if fired:
            await self._recovered(before)

    async def random_drops(self) -> None:
        before = self.faults.fired["drop_probability"]
        self.faults.drop_probability = 0.1
        with contextlib.suppress(TimeoutError):
            await self.server.wait_until(
                lambda: self.faults.fired["drop_probability"] >= before + 2,
                timeout=self.settings.fire_timeout,
            )
        self.faults.drop_probability = 0.0
        self._count("random_drops", self.faults.fired["drop_probability"] > before)
        await self._more_resolved(self.settings.max_batch)  # results flow again

    # -- slow, silent and noisy servers ------------------------------------------------------------

    async def withhold_pongs(self) -> None:
        before, withheld_before = self._auths, self.faults.fired["withhold_pongs"]
        self.faults.withhold_pongs = True
        self.faults.result_delay = 1.2  # past interval + pong_timeout: the link goes quiet
        await self._recovered(before)
        self._count("withhold_pongs", self.faults.fired["withhold_pongs"] > withheld_before)

    async def slow_results(self) -> None:
        self.faults.result_delay = 0.8  # past the heartbeat interval; pongs still answered
        self._count("slow_results", True)
        await self._more_resolved(self.settings.window // 2)

    async def duplicate_and_reorder(self) -> None:
        self.faults.duplicate_results = True
        self.faults.shuffle_results = True
        self.faults.group_results = self.rng.randint(3, 25)
        self.faults.group_window = 0.05
        self._count("duplicate_and_reorder", True)
        await self._more_resolved(self.settings.window // 2)

    async def transient_errors(self) -> None:
        # A fifth of first attempts answered timeoutProvider/internalServerError/...: each
        # is retried under a new taskUUID and must still get its own result.
        before = self.faults.fired["transient_error"]
        self.faults.transient_error_probability = 0.2
        fired = await self._knob_fired("transient_error", before)
        self._count("transient_errors", fired)
        await self._more_resolved(self.settings.window // 2)

    async def rate_limit(self) -> None:
        # Admit a few dozen running tasks per connection and refuse the rest: the window
        # shrinks, refused tasks keep their slot and go again.
        before = self.faults.fired["rate_limit"]
        self.faults.rate_limit = self.rng.randint(20, 80)
        fired = await self._knob_fired("rate_limit", before)
        self._count("rate_limit", fired)
        await self._more_resolved(self.settings.window)

    async def stray_and_malformed(self) -> None:
        self.faults.stray_error_every = self.rng.randint(3, 30)
        self.faults.malformed_every = self.rng.randint(3, 30)
        self._count("stray_and_malformed", True)
        await self._more_resolved(self.settings.window // 2)

    # -- holding, refusing, restarting -----------------------------------------------------------

    async def held_replay(self) -> None:
        # The session stays detached while reconnects are refused, so answers finishing
        # meanwhile are held by the server and replayed when the client resumes.
        before, fired_before = self._auths, self.faults.fired["drop_after_tasks"]
        self.faults.refuse_connections = 3
        self.faults.drop_after_tasks = 1
        fired = await self._knob_fired("drop_after_tasks", fired_before)
        self._count("held_replay", fired)
        if fired:
            await self._recovered(before)

    async def refuse_reconnect(self) -> None:
        before, refused_before = self._auths, self.faults.fired["refuse_connections"]
        self.faults.refuse_connections = self.rng.randint(2, 6)
        await self.server.drop_connections(None)
        await self._recovered(before)
        self._count("refuse_reconnect", self.faults.fired["refuse_connections"] > refused_before)

    async def restart(self) -> None:
        before = self._auths
        unanswered = set(self.tracker.unresolved)
        await self.server.restart()  # refuses handshakes (503) until it is done
        unanswered |= self.tracker.unresolved
        self.at_risk.update(unanswered)
        self.report.restarts += 1
        self._count("restart", True)
        await self._recovered(before)
