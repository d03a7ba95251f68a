"""Sessions, held answers and the task registry of the reference server: its pure core.

Nothing here awaits, touches a socket or reads a clock: time comes in as ``now`` and new
session ids come in as arguments. The socket shell (:mod:`.app`) and the task handlers
(:mod:`.handlers`) drive it.

Theory of operation
===================

**Sessions** (protocol.md section 2). A successful authentication opens a session, named by a
``connectionSessionUUID``. A session is *attached* while a socket carries it and *detached*
when that socket is gone. Authenticating with the id of a session the store still knows
re-attaches it (the same id is echoed); an id the store does not know (never issued, forgotten,
or lost in a restart) gets a brand-new session with a new id, which is how a client learns that
nothing was resumed.

**Task lifecycle**::

    received --invalid--> error item (never registered, no de-duplication)
             --register--> RUNNING --finish--> SUCCEEDED | FAILED --retention--> forgotten
                 |
                 +--taskUUID already registered--> conflictTaskUUID (not executed again)

**Tenants.** Every session and every task belongs to the *tenant* of the API key that made it:
an opaque id derived from the key (never the key itself). Nothing crosses tenants: a session is
resumed only by its own tenant (another tenant offering its id gets a new session, exactly as
for an unknown id), and the task registry is keyed by ``(tenant, taskUUID)``. So session ids
and taskUUIDs are not secrets: knowing one gives another key nothing, not even the fact that it
exists (a ``taskUUID`` another tenant uses is simply free for this one).

The registry is keyed by ``taskUUID`` across all sessions of a tenant (protocol.md section 2,
last bullet): a known ``taskUUID`` is refused while it runs and for ``retention`` seconds after
it finished. ``getResponse`` and ``getTaskDetails`` (section 6) read the registry, so they work
for sync and async tasks alike and from any session of the same tenant.

**Answers**. The final answer of a sync task (its result, or the error item it failed with) goes
into its session's *outbox*, encoded once. The shell's sender drains the outbox of the session
its socket carries. While a session is detached its outbox is the *hold buffer* of section 2:
each answer is kept for ``hold_time`` seconds, counted from when it was queued or when the
socket went away, whichever is later, and the whole buffer is sent when the session is resumed.
An answer counts as delivered once a ``send`` of its frame succeeded; answers of a frame whose
``send`` failed are given back, in order, to the front of the outbox, so each answer is
delivered exactly once if the session is resumed in time. Answers of async tasks are never
pushed: they wait in the registry for ``getResponse`` (section 6).

Immediate replies to a frame (async ACKs, validation, conflict and limit errors, ``getResponse``
answers, pongs) are not held: they belong to the socket the frame came on, and are lost with it.
A client that resends such a task after a resume gets the same refusal again, or
``conflictTaskUUID`` for an accepted one, which ``runware-sdk`` takes as the ACK of an async
task. (Replaying a held ACK before that conflict makes ``runware-sdk`` fail the task: it then
sees the conflict as a terminal error.)

A detached session with no running sync task and an empty hold buffer is forgotten
``hold_time`` seconds after its socket went away.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Literal

import orjson

__all__ = [
    "Kind",
    "Outgoing",
    "Session",
    "SessionRegistry",
    "TaskCounts",
    "TaskRecord",
    "TaskStatus",
    "compact_json",
]

Kind = Literal["data", "errors"]
"""The envelope key an item travels under (protocol.md section 4: never both in one frame)."""


def compact_json(item: Any) -> bytes:
    """``item`` JSON-encoded into a bytes object of exactly its size.

    ``orjson.dumps`` writes into a 4 KiB buffer and shrinks it in place, so every small
    ``bytes`` it returns keeps its 4 KiB allocation for as long as it lives (measured: 100,000
    encoded 200-byte answers hold 390 MiB). Answers that wait in an outbox or a record are
    copied into a right-sized object (24 MiB for the same 100,000).
    """
    return bytes(memoryview(orjson.dumps(item)))


class TaskStatus(Enum):
    """Where a registered task is in its lifecycle (the value is the ``status`` on the wire)."""

    RUNNING = "processing"
    SUCCEEDED = "success"
    FAILED = "error"


@dataclass(slots=True)
class TaskRecord:
    """One registered task.

    Attributes:
        task_uuid: The client's ``taskUUID``.
        task_type: The ``taskType`` the client sent (echoed in every answer).
        session_id: The session that submitted it.
        tenant: The tenant (API key) that owns it.
        delivery: ``"sync"`` (answer pushed) or ``"async"`` (answer polled).
        received_at: When it was registered.
        status: Its lifecycle status (the wire ``status`` of a poll reply).
        finished_at: When it finished, or ``None`` while running.
        answer_json: The result item (success) or the error item (failure), once finished,
            JSON-encoded: a record lives for ``retention`` seconds, and an encoded item takes
            a third of the memory of its dict. Read and set it as :attr:`answer`.
        request: The task object as received, JSON-encoded (``getTaskDetails``).
    """

    task_uuid: str
    task_type: str
    session_id: str
    delivery: str
    received_at: float
    status: TaskStatus = TaskStatus.RUNNING
    finished_at: float | None = None
    answer_json: bytes | None = None
    tenant: str = ""
    request: bytes = b"{}"

    @property
    def answer(self) -> dict[str, Any] | None:
        """The result or error item, decoded; ``None`` while the task runs."""
        return None if self.answer_json is None else dict(orjson.loads(self.answer_json))

    @answer.setter
    def answer(self, item: Mapping[str, Any] | None) -> None:
        self.answer_json = None if item is None else compact_json(item)

    def poll_reply(self) -> dict[str, Any]:
        """The ``data`` item answering a ``getResponse`` for this task (protocol.md section 6).

        Running: ``status: "processing"``. Succeeded: the full result with ``status:
        "success"``. Failed: ``status: "error"`` with the error nested under ``error``.
        """
        base: dict[str, Any] = {"taskType": self.task_type, "taskUUID": self.task_uuid}
        answer = self.answer
        if self.status is TaskStatus.SUCCEEDED and answer is not None:
            return {**answer, "status": TaskStatus.SUCCEEDED.value}
        if self.status is TaskStatus.FAILED and answer is not None:
            nested = {key: answer[key] for key in ("code", "message", "parameter") if key in answer}
            return {**base, "status": TaskStatus.FAILED.value, "error": nested}
        return {**base, "status": TaskStatus.RUNNING.value}

    def details_reply(self, task_type: str) -> dict[str, Any]:
        """The ``data`` item answering a ``getTaskDetails`` for this task (protocol.md section 6).

        ``request`` is the array of task objects as sent (this task's object only), and
        ``response`` the envelope that answered it (``data`` on success, ``errors`` on
        failure); a running task has no ``response`` yet. ``status`` is the same as a
        ``getResponse`` reply's.
        """
        reply: dict[str, Any] = {
            "taskType": task_type,
            "taskUUID": self.task_uuid,
            "status": self.status.value,
            "request": [orjson.loads(self.request)],
        }
        answer = self.answer
        if answer is not None and self.status is not TaskStatus.RUNNING:
            key = "errors" if self.status is TaskStatus.FAILED else "data"
            reply["response"] = {key: [answer]}
        return reply


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One answer waiting in a session's outbox.

    Attributes:
        kind: ``"data"`` or ``"errors"``.
        body: The item, JSON-encoded.
        queued_at: When it was queued.
    """

    kind: Kind
    body: bytes
    queued_at: float


class Session:
    """One client session: its id, whether a socket carries it, and its outbox.

    Args:
        session_id: The ``connectionSessionUUID``.
    """

    __slots__ = ("attached", "detached_at", "outbox", "running", "session_id", "tenant")

    def __init__(self, session_id: str, tenant: str = "") -> None:
        self.session_id = session_id
        self.tenant = tenant
        self.attached = True
        self.detached_at: float | None = None
        self.running = 0
        self.outbox: deque[Outgoing] = deque()

    def push(self, kind: Kind, item: Mapping[str, Any], now: float) -> None:
        """Queue one answer; then wake the sender of the socket that carries this session."""
        self.outbox.append(Outgoing(kind, compact_json(item), now))

    def take(self) -> list[Outgoing]:
        """Everything queued, oldest first; the caller must send it or :meth:`give_back` it."""
        items = list(self.outbox)
        self.outbox.clear()
        return items

    def give_back(self, items: Iterable[Outgoing]) -> None:
        """Put answers whose send failed back at the front, in their order."""
        self.outbox.extendleft(reversed(list(items)))

    def expire_held(self, now: float, hold_time: float) -> int:
        """Drop held answers older than ``hold_time`` (only while detached); returns how many."""
        if self.attached or self.detached_at is None:
            return 0
        detached_at = self.detached_at
        kept = [o for o in self.outbox if now - max(o.queued_at, detached_at) < hold_time]
        dropped = len(self.outbox) - len(kept)
        if dropped:
            self.outbox = deque(kept)
        return dropped


@dataclass
class TaskCounts:
    """Instrumentation for tests; survives :meth:`SessionRegistry.clear` (a simulated restart).

    The counters by ``taskUUID`` are bounded: only strings of at most
    :data:`~.refusals.MAX_TASK_UUID_CHARS` characters are counted (the shell passes ``None``
    for the others), and each counter forgets its oldest key beyond ``max_keys`` distinct ones,
    so a long-running shared server does not keep every taskUUID it ever saw.

    Attributes:
        received: Tasks received, by ``taskUUID`` (authentication, ping and getResponse are
            not tasks here).
        executions: Executions started, by ``taskUUID``: the task was accepted and its work
            (input resolution, then the image pipeline) began.
        polls: ``getResponse`` polls received, by the ``taskUUID`` they ask about.
        received_total: All tasks received, with or without a ``taskUUID``.
        executions_total: All executions started.
        authentications: Successful authentications.
        replayed: Answers waiting in a session's outbox (held while it had no socket) when a
            socket resumed it; they are sent on that socket next.
    """

    received: Counter[str] = field(default_factory=Counter)
    executions: Counter[str] = field(default_factory=Counter)
    polls: Counter[str] = field(default_factory=Counter)
    received_total: int = 0
    executions_total: int = 0
    authentications: int = 0
    replayed: int = 0
    max_keys: int = 250_000

    def count_received(self, task_uuid: object) -> None:
        """Count one received task."""
        self.received_total += 1
        if isinstance(task_uuid, str):
            self._bump(self.received, task_uuid)

    def count_execution(self, task_uuid: str) -> None:
        """Count one execution that started."""
        self.executions_total += 1
        self._bump(self.executions, task_uuid)

    def count_poll(self, task_uuid: str) -> None:
        """Count one ``getResponse`` poll."""
        self._bump(self.polls, task_uuid)

    def _bump(self, counter: Counter[str], key: str) -> None:
        counter[key] += 1
        if len(counter) > self.max_keys:
            del counter[next(iter(counter))]  # the oldest key: dicts keep insertion order


class SessionRegistry:
    """All sessions and registered tasks of one server.

    Args:
        hold_time: Seconds an answer is held for a detached session.
        retention: Seconds a finished task stays registered.
    """

    def __init__(self, *, hold_time: float, retention: float) -> None:
        self.hold_time = hold_time
        self.retention = retention
        self.sessions: dict[str, Session] = {}
        self._tasks: dict[tuple[str, str], TaskRecord] = {}
        self._finished: deque[tuple[float, tuple[str, str]]] = deque()

    @property
    def tasks(self) -> dict[str, TaskRecord]:
        """Every registered task by ``taskUUID``, all tenants together (a copy, for tests)."""
        return {task_uuid: record for (_, task_uuid), record in self._tasks.items()}

    # -- sessions ----------------------------------------------------------------------------

    def authenticate(
        self, requested: str | None, now: float, new_id: str, tenant: str = ""
    ) -> tuple[Session, bool]:
        """Open or resume a session for a socket that just authenticated.

        Args:
            requested: The ``connectionSessionUUID`` the client sent, if any.
            now: The current time.
            new_id: The id to give a new session.
            tenant: The tenant of the key that authenticated; only its own sessions resume.

        Returns:
            The session, now attached, and whether it was resumed. Then send the auth answer
            and drain the session's outbox (the held answers) on the socket.
        """
        if requested is not None:
            self._expire_session(requested, now)
            session = self.sessions.get(requested)
            if session is not None and session.tenant == tenant:
                session.attached = True
                session.detached_at = None
                return session, True
        session = Session(new_id, tenant)
        self.sessions[new_id] = session
        return session, False

    def detach(self, session_id: str, now: float) -> None:
        """The socket carrying this session is gone: start holding its answers."""
        session = self.sessions.get(session_id)
        if session is not None and session.attached:
            session.attached = False
            session.detached_at = now

    # -- tasks -------------------------------------------------------------------------------

    def register(
        self,
        task_uuid: str,
        task_type: str,
        session_id: str,
        delivery: str,
        now: float,
        *,
        request: bytes = b"{}",
    ) -> TaskRecord | None:
        """Register a task that is about to run, for the tenant of ``session_id``.

        Args:
            task_uuid: The client's ``taskUUID``.
            task_type: The ``taskType`` it sent.
            session_id: The session that submitted it (its tenant owns the task).
            delivery: ``"sync"`` or ``"async"``.
            now: The current time.
            request: The task object as received, JSON-encoded, for ``getTaskDetails``.

        Returns:
            The new record, or ``None`` when the tenant already has this ``taskUUID`` (running,
            or finished less than ``retention`` ago): answer ``conflictTaskUUID``, do not run it.
        """
        session = self.sessions.get(session_id)
        tenant = session.tenant if session is not None else ""
        if self.lookup(task_uuid, now, tenant=tenant) is not None:
            return None
        record = TaskRecord(
            task_uuid, task_type, session_id, delivery, now, tenant=tenant, request=request
        )
        self._tasks[tenant, task_uuid] = record
        if delivery == "sync" and session is not None:
            session.running += 1
        return record

    def finish(
        self, record: TaskRecord, answer: Mapping[str, Any], *, failed: bool, now: float
    ) -> Session | None:
        """Record a task's result (or its error item) and route it.

        Returns:
            The session the answer was queued for (sync tasks whose session is known), whose
            socket's sender must be woken; ``None`` otherwise.
        """
        key = (record.tenant, record.task_uuid)
        if self._tasks.get(key) is not record:
            return None  # forgotten meanwhile (a restart)
        record.status = TaskStatus.FAILED if failed else TaskStatus.SUCCEEDED
        record.finished_at = now
        record.answer = answer
        self._finished.append((now, key))
        if record.delivery != "sync":
            return None
        session = self.sessions.get(record.session_id)
        if session is None:
            return None
        session.running = max(0, session.running - 1)
        # The outbox shares the record's encoded bytes: one copy of each answer in memory.
        session.outbox.append(
            Outgoing("errors" if failed else "data", record.answer_json or b"{}", now)
        )
        return session

    def lookup(self, task_uuid: str, now: float, *, tenant: str = "") -> TaskRecord | None:
        """The tenant's record of a task, unless unknown or finished over ``retention`` ago."""
        key = (tenant, task_uuid)
        record = self._tasks.get(key)
        if record is None:
            return None
        if record.finished_at is not None and now - record.finished_at >= self.retention:
            del self._tasks[key]
            return None
        return record

    # -- housekeeping ------------------------------------------------------------------------

    def expire(self, now: float) -> int:
        """Forget expired tasks, held answers and sessions; returns how many tasks went.

        Call it now and then.
        """
        forgotten = 0
        while self._finished and now - self._finished[0][0] >= self.retention:
            finished_at, key = self._finished.popleft()
            record = self._tasks.get(key)
            if record is not None and record.finished_at == finished_at:
                del self._tasks[key]
                forgotten += 1
        sessions_before = len(self.sessions)
        for session_id in [s for s, session in self.sessions.items() if not session.attached]:
            self._expire_session(session_id, now)
        # A dict keeps the table of its largest size after its entries are deleted: once most
        # entries went, copy it into a right-sized one (the table of 100,000 tasks is 5 MiB).
        if forgotten and len(self._tasks) < forgotten:
            self._tasks = dict(self._tasks)
        if len(self.sessions) < sessions_before // 2:
            self.sessions = dict(self.sessions)
        return forgotten

    def clear(self) -> None:
        """Forget every session, held answer and task (a simulated restart)."""
        self.sessions.clear()
        self._tasks.clear()
        self._finished.clear()

    def _expire_session(self, session_id: str, now: float) -> None:
        session = self.sessions.get(session_id)
        if session is None or session.attached or session.detached_at is None:
            return
        session.expire_held(now, self.hold_time)
        if (
            not session.outbox
            and not session.running
            and now - session.detached_at >= self.hold_time
        ):
            del self.sessions[session_id]
