"""Fault injection for the reference server: the misbehaviours a client must survive.

Every knob is off by default and may be changed at any time, from the test that owns the
server (``server.faults.drop_after_tasks = 10``). The server consults the knobs at fixed
points: when a handshake arrives, when the authentication frame arrives, when any later frame
arrives, after each received frame, and when its sender writes results. Randomness comes from
one seeded :class:`random.Random`, so a chaos run can be replayed.

``fired`` counts how often each fault actually fired, so a test can assert that the fault it
set up was the one that hit.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Mapping, MutableSequence
from dataclasses import dataclass, field, fields
from typing import Any, TypeVar

__all__ = ["MALFORMED_FRAMES", "TRANSIENT_CODES", "Faults", "crossings"]

T = TypeVar("T")

MALFORMED_FRAMES: tuple[bytes, ...] = (
    b"this is not JSON {",
    b'[{"taskType":"upscale"}]',
    b'{"data":"not a list"}',
    b'{"data":[42, null]}',
    b"null",
)
"""What ``malformed_every`` sends, in turn: not JSON, an array, a bad ``data``, bad items."""

STRAY_ERROR: Mapping[str, Any] = {
    "code": "internalServerError",
    "message": "stray error injected by the reference server (fault: stray_error_every)",
    "taskType": "upscale",
}
"""What ``stray_error_every`` sends: an error item that names no task."""


TRANSIENT_CODES: tuple[str, ...] = (
    "timeoutProvider",
    "internalServerError",
    "serviceUnavailable",
    "noAvailableServer",
)
"""The codes ``transient_error_*`` answers with by default, in turn (as the issue-13 trial)."""

_TRANSIENT_MEMORY = 1_000_000


def crossings(before: int, after: int, every: int | None) -> int:
    """How many multiples of ``every`` a counter passed going from ``before`` to ``after``."""
    if not every or every < 1:
        return 0
    return after // every - before // every


@dataclass
class Faults:
    """The fault knobs of one server. All off by default; mutate them at runtime.

    Attributes:
        drop_after_tasks: Once a connection has received this many tasks (authentication,
            ping and getResponse do not count), the tasks of the frame that reached the number
            are accepted and run, then the TCP connection is aborted without a close frame,
            before any answer to them is sent (their answers are held for a resume). One-shot:
            reset to ``None`` after firing, unless ``repeat``.
        repeat: Keep ``drop_after_tasks``, ``drop_during_auth``, ``drop_before_frame`` and
            ``drop_on_poll`` armed after they fire.
        close_code: When set (1000, 1001, 1011...), every drop (of every ``drop_*`` knob) is
            a clean close with this code instead of an abort.
        withhold_pongs: Never answer application pings.
        result_delay: Seconds added before each accepted task's final answer (its result or
            its error) is released.
        group_results: Send task answers in frames of exactly this many, waiting up to
            ``group_window`` seconds for a group to fill (0 or 1: no grouping). A group counts
            answers of both kinds; one holding results and errors leaves as two frames.
        group_window: How long a partial group may wait before it is sent anyway.
        shuffle_results: Send the answers that are ready in a random order.
        duplicate_results: Send every frame of task answers twice.
        stray_error_every: After every N final task answers sent on a connection, send an
            ``errors`` frame whose item has no ``taskUUID``.
        malformed_every: After every N final task answers sent on a connection, send a
            malformed text frame (see :data:`MALFORMED_FRAMES`).
        drop_probability: Per received frame (after authentication), the chance of a drop
            (as with ``drop_after_tasks``: the frame's tasks are accepted first).
        refuse_connections: Reject this many next WebSocket handshakes with HTTP 503.
        drop_during_auth: Drop the connection when its authentication frame arrives, without
            answering. One-shot unless ``repeat``.
        drop_before_frame: Drop the connection when the next frame arrives on an authenticated
            socket, before it is decoded or handled: nothing of it is received or run. One-shot
            unless ``repeat``.
        drop_on_poll: Drop the connection when a frame holding a ``getResponse`` arrives,
            right after its items were handled and before any answer to it is written (the
            poll's answer is lost with the socket; the frame's tasks are accepted). One-shot
            unless ``repeat``.
        refuse_status: The HTTP status of a handshake refused by ``refuse_connections``
            (503 by default; 401, 403, 404, 429, 500... to test what a client makes of it).
        close_after_auth: When set (1000, 1008, 4000...), every connection is closed with
            this code right after its authentication was answered with success (the session
            is kept, as after any drop). Stays on until reset.
        transient_error_probability: The chance that an upscale task's first attempt is
            answered at once with a transient error code (it does not run).
        transient_error_every: Answer every N-th such first attempt with a transient error.
        transient_error_codes: The codes used, in turn (default :data:`TRANSIENT_CODES`).
            A *first attempt* is a task whose ``inputImage`` has not drawn a transient error
            before, so a retry of it (under any taskUUID) always goes through.
        rate_limit: Admit at most this many running upscale tasks per connection; a task
            beyond is answered ``rateLimitExceeded`` at once (it does not run).
        seed: Seed of :attr:`rng`; assigning it re-seeds.
    """

    drop_after_tasks: int | None = None
    repeat: bool = False
    close_code: int | None = None
    withhold_pongs: bool = False
    result_delay: float = 0.0
    group_results: int = 0
    group_window: float = 0.25
    shuffle_results: bool = False
    duplicate_results: bool = False
    stray_error_every: int | None = None
    malformed_every: int | None = None
    drop_probability: float = 0.0
    refuse_connections: int = 0
    drop_during_auth: bool = False
    drop_before_frame: bool = False
    drop_on_poll: bool = False
    refuse_status: int = 503
    close_after_auth: int | None = None
    transient_error_probability: float = 0.0
    transient_error_every: int | None = None
    transient_error_codes: tuple[str, ...] = TRANSIENT_CODES
    rate_limit: int | None = None
    seed: int = 0
    rng: random.Random = field(init=False, repr=False, compare=False)
    fired: Counter[str] = field(default_factory=Counter, init=False, repr=False, compare=False)
    _transient_inputs: set[int] = field(default_factory=set, init=False, repr=False, compare=False)
    _first_attempts: int = field(default=0, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)

    def __setattr__(self, name: str, value: Any) -> None:
        super().__setattr__(name, value)
        if name == "seed":
            super().__setattr__("rng", random.Random(value))

    def reset(self) -> None:
        """Turn every fault off again (the seed and the ``fired`` counts are kept)."""
        for spec in fields(self):
            if spec.init and spec.name != "seed":
                setattr(self, spec.name, spec.default)
        self._transient_inputs.clear()
        self._first_attempts = 0

    # -- decisions; each one that returns True has fired -------------------------------------

    def take_refusal(self) -> bool:
        """Whether to refuse the handshake now arriving (uses up one ``refuse_connections``)."""
        if self.refuse_connections <= 0:
            return False
        self.refuse_connections -= 1
        self.fired["refuse_connections"] += 1
        return True

    def take_close_after_auth(self) -> int | None:
        """The close code for a connection whose authentication just succeeded, or ``None``."""
        code = self.close_after_auth
        if code is not None:
            self.fired["close_after_auth"] += 1
        return code

    def task_refusal(self, item: Mapping[str, Any], running: int) -> tuple[str, str] | None:
        """Whether to answer an upscale task at once with an error instead of running it.

        Args:
            item: The task as received.
            running: Upscale tasks running on this connection now.

        Returns:
            ``(code, message)`` of the refusal, or ``None`` to run the task.
        """
        if self.rate_limit is not None and running >= self.rate_limit:
            self.fired["rate_limit"] += 1
            return (
                "rateLimitExceeded",
                f"more than {self.rate_limit} tasks running; retry later (fault: rate_limit)",
            )
        every = self.transient_error_every
        if not (self.transient_error_probability > 0 or (every and every > 0)):
            return None
        marker = hash(str(item.get("inputImage")))
        if marker in self._transient_inputs:
            return None  # a retry of a task that already drew one: let it through
        self._first_attempts += 1
        hit = bool(every and every > 0 and self._first_attempts % every == 0) or (
            self.transient_error_probability > 0
            and self.rng.random() < self.transient_error_probability
        )
        if not hit or not self.transient_error_codes:
            return None
        if len(self._transient_inputs) >= _TRANSIENT_MEMORY:
            self._transient_inputs.clear()
        self._transient_inputs.add(marker)
        codes = self.transient_error_codes
        code = codes[self.fired["transient_error"] % len(codes)]
        self.fired["transient_error"] += 1
        return code, f"transient failure injected by the reference server ({code})"

    def take_auth_drop(self) -> bool:
        """Whether to drop the connection whose authentication frame just arrived."""
        if not self.drop_during_auth:
            return False
        if not self.repeat:
            self.drop_during_auth = False
        self.fired["drop_during_auth"] += 1
        return True

    def take_arrival_drop(self) -> bool:
        """Whether to drop the authenticated connection whose next frame just arrived."""
        if not self.drop_before_frame:
            return False
        if not self.repeat:
            self.drop_before_frame = False
        self.fired["drop_before_frame"] += 1
        return True

    def take_poll_drop(self) -> bool:
        """Whether to drop the connection whose frame with a ``getResponse`` was just handled."""
        if not self.drop_on_poll:
            return False
        if not self.repeat:
            self.drop_on_poll = False
        self.fired["drop_on_poll"] += 1
        return True

    def take_frame_drop(self, received_on_connection: int, tasks_in_frame: int) -> bool:
        """Whether to drop the connection after the frame it just received.

        Args:
            received_on_connection: Tasks received on this connection, this frame included.
            tasks_in_frame: Tasks in this frame.
        """
        threshold = self.drop_after_tasks
        if threshold is not None and tasks_in_frame and received_on_connection >= threshold:
            if not self.repeat:
                self.drop_after_tasks = None
            self.fired["drop_after_tasks"] += 1
            return True
        if self.drop_probability > 0 and self.rng.random() < self.drop_probability:
            self.fired["drop_probability"] += 1
            return True
        return False

    def arrange(self, items: MutableSequence[T]) -> None:
        """Reorder ready answers in place when ``shuffle_results`` is on."""
        if self.shuffle_results and len(items) > 1:
            self.rng.shuffle(items)
            self.fired["shuffle_results"] += 1

    def group_size(self) -> int:
        """The frame size forced by ``group_results`` (0 when off)."""
        return self.group_results if self.group_results > 1 else 0

    def malformed_frame(self) -> bytes:
        """The next malformed frame to send (they are sent in turn)."""
        index = self.fired["malformed_every"] % len(MALFORMED_FRAMES)
        self.fired["malformed_every"] += 1
        return MALFORMED_FRAMES[index]
