"""Issue 12, first hour: ``upscale-stream run`` counts the tasks in flight exactly.

A newcomer saw the Ctrl-C note read "waiting for 65 in flight" (then 68) with a window of 64,
and the progress bar's in-flight figure did not follow the run. The count must be the tasks
sent to the server and not answered yet: neither answers still being written to disk, nor 0
while the server holds tasks.

The test runs the real CLI (in this process, on the main thread, so that its Ctrl-C handler
is installed as on a terminal) against the real reference server on 127.0.0.1. Between them a
small WebSocket proxy holds the server's task answers until the test releases them, so the
test decides exactly how many tasks are in flight; and writing an output waits on an event,
as on a slow disk, so that answered tasks are still being written when Ctrl-C arrives.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import re
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from PIL import Image
from rich.console import Console
from rich.text import Text
from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection, serve

from upscale_stream import UpscaleResult
from upscale_stream.cli import main
from upscale_stream.cli.progress import MIN_BAR, RichReporter, Tally
from upscale_stream.server import ReferenceServer, ServerConfig
from upscale_stream.testing import TEST_API_KEY

from .helpers import _items, pump_until_one_ends

WAIT = 30.0
"""Longest wait for any one step; a step that takes longer fails the test."""
IN_FLIGHT = re.compile(r"(\d+) in flight")


class _Terminal(io.StringIO):
    """Standard output that says it is a terminal, so the run draws its rich progress bar."""

    def isatty(self) -> bool:
        return True


class AnswerGate:
    """A WebSocket proxy that forwards everything at once except the final answers of
    upscale tasks, which it holds until :meth:`release` lets them through.

    Answers leave one per frame (the client accepts that), so releasing ``n`` releases
    exactly ``n`` tasks. Pongs and every other frame are never held, so the connection stays
    healthy while answers wait. Runs on its own event loop thread; the counters are read
    from the test's thread.
    """

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.sent: set[str] = set()
        self.answered: set[str] = set()
        self.url = ""
        self._budget = 0
        self._held: list[tuple[asyncio.Queue[bytes | None], bytes, str]] = []
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def outstanding(self) -> int:
        """Upscale tasks the client sent whose answers it has not been given."""
        return len(self.sent - self.answered)

    def release(self, count: int) -> None:
        """Let ``count`` more task answers through (from any thread)."""
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._add_budget, count)

    def _add_budget(self, count: int) -> None:
        self._budget += count
        while self._budget > 0 and self._held:
            self._budget -= 1
            queue, frame, task_uuid = self._held.pop(0)
            self.answered.add(task_uuid)
            queue.put_nowait(frame)

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._server = await serve(self._relay, "127.0.0.1", 0, max_size=None)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"ws://127.0.0.1:{port}/v1"

    async def stop(self) -> None:
        self._server.close()
        await self._server.wait_closed()

    async def _relay(self, client: ServerConnection) -> None:
        outbox: asyncio.Queue[bytes | None] = asyncio.Queue()
        async with connect(self.upstream, max_size=None) as upstream:

            async def up() -> None:
                async for message in client:
                    for item in _items(orjson.loads(message)):
                        if _is_upscale(item):
                            self.sent.add(item["taskUUID"])
                    await upstream.send(message)

            async def down() -> None:
                async for message in upstream:
                    frame = orjson.loads(message)
                    if not isinstance(frame, dict):
                        outbox.put_nowait(orjson.dumps(frame))
                        continue
                    for key in ("data", "errors"):
                        for item in frame.get(key) or []:
                            single = orjson.dumps({key: [item]})
                            if _is_final_answer(item):
                                self._held.append((outbox, single, item["taskUUID"]))
                            else:
                                outbox.put_nowait(single)
                    self._add_budget(0)

            async def deliver() -> None:
                while (frame := await outbox.get()) is not None:
                    await client.send(frame.decode())

            await pump_until_one_ends(up(), down(), deliver())


def _is_upscale(item: dict[str, Any]) -> bool:
    return item.get("taskType") in ("upscale", "imageUpscale") and "taskUUID" in item


def _is_final_answer(item: Any) -> bool:
    return (
        isinstance(item, dict)
        and _is_upscale(item)
        and item.get("status") not in ("processing", "pending")
    )


@pytest.fixture
def gate() -> Iterator[AnswerGate]:
    """The reference server on 127.0.0.1:0 and an :class:`AnswerGate` in front of it, both
    on one event loop in a background thread (the CLI needs the main thread)."""
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    done: asyncio.Future[None] | None = None
    holder: list[AnswerGate | BaseException] = []

    async def serve_both() -> None:
        nonlocal done
        config = ServerConfig(api_keys=frozenset({TEST_API_KEY}), port=0)
        try:
            async with ReferenceServer(config) as server:
                proxy = AnswerGate(server.url)
                await proxy.start()
                done = loop.create_future()
                holder.append(proxy)
                ready.set()
                try:
                    await done
                finally:
                    proxy.release(10_000)
                    await proxy.stop()
        except BaseException as exc:
            holder.append(exc)
            ready.set()
            raise

    thread = threading.Thread(target=loop.run_until_complete, args=(serve_both(),), daemon=True)
    thread.start()
    assert ready.wait(WAIT), "the reference server and the proxy did not start"
    proxy = holder[0]
    if isinstance(proxy, BaseException):
        raise proxy
    try:
        yield proxy
    finally:
        loop.call_soon_threadsafe(lambda: done is not None and done.set_result(None))
        thread.join(WAIT)
        loop.close()


def _wait_for(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {WAIT:.0f} s waiting for {what}")
        time.sleep(0.01)  # polling a condition that is checked, not a stand-in for one


def _figures_on_the_bar(drawn: str) -> list[int]:
    return [int(figure) for figure in IN_FLIGHT.findall(drawn)]


def test_the_bar_and_the_ctrl_c_note_count_exactly_the_tasks_the_server_has_not_answered(
    gate: AnswerGate, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source, out = tmp_path / "in", tmp_path / "out"
    source.mkdir()
    for i in range(8):
        Image.new("RGB", (12, 8), (i * 20, 40, 200)).save(source / f"img-{i}.png")
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stdout", terminal)
    monkeypatch.setenv("COLUMNS", "100")

    # Writing an output waits until the test lets it: a slow disk, as in the report.
    writes_may_finish = threading.Event()
    writing: list[str] = []
    read_bytes = UpscaleResult.read_bytes

    def slow_read_bytes(self: UpscaleResult, **kwargs: Any) -> bytes:
        writing.append(self.task_uuid)
        assert writes_may_finish.wait(WAIT), "the test never let the writes finish"
        return read_bytes(self, **kwargs)

    monkeypatch.setattr(UpscaleResult, "read_bytes", slow_read_bytes)

    seen: dict[str, Any] = {}
    errors: list[BaseException] = []

    def drive() -> None:
        try:
            # 1. Three tasks sent, none answered: the bar must say 3, not 0.
            _wait_for(lambda: len(gate.sent) == 3, "the first 3 tasks (the window)")
            # (A wrong figure is reported at the end, with the Ctrl-C note's, so go on.)
            with contextlib.suppress(AssertionError):
                _wait_for(lambda: 3 in _figures_on_the_bar(terminal.getvalue()), "'3 in flight'")
            seen["bar"] = _figures_on_the_bar(terminal.getvalue())
            # 2. Two answers let through; their writes hang; two new tasks take their place.
            gate.release(2)
            _wait_for(lambda: len(writing) == 2, "the 2 answered tasks to be writing")
            _wait_for(lambda: len(gate.sent) == 5, "2 new tasks in the freed window slots")
            seen["outstanding"] = gate.outstanding
            # The two answered ones are neither in flight nor done: the bar says so.
            with contextlib.suppress(AssertionError):
                _wait_for(lambda: "2 writing" in terminal.getvalue(), "'2 writing'")
            seen["writing"] = "2 writing" in terminal.getvalue()
            # 3. Ctrl-C now: 3 tasks are in flight, 2 answered ones are being written.
            os.kill(os.getpid(), signal.SIGINT)
            _wait_for(lambda: "interrupted:" in terminal.getvalue(), "the Ctrl-C note")
        except BaseException as exc:
            errors.append(exc)
        finally:
            writes_may_finish.set()
            gate.release(10_000)

    driver = threading.Thread(target=drive, daemon=True)
    driver.start()
    argv = ["run", str(source), "--out", str(out), "--concurrency", "3", "--batch", "1"]
    argv += ["--progress-interval", "0", "--url", gate.url, "--api-key", TEST_API_KEY]
    code = main(argv)
    driver.join(WAIT)

    drawn = terminal.getvalue()
    note = re.search(r"interrupted: sending no new tasks; waiting for (\d+) in flight", drawn)
    assert not errors, errors
    assert note is not None, f"no Ctrl-C note in: {drawn[-2000:]!r}"
    assert seen["outstanding"] == 3  # the proxy's own count: what the note must say
    wrong = []
    if 3 not in seen["bar"]:
        wrong.append(f"with 3 tasks held by the server the bar showed {sorted(set(seen['bar']))}")
    if int(note.group(1)) != 3:
        wrong.append(
            f"the Ctrl-C note said {note.group(1)} in flight with 3 unanswered "
            "(and 2 answered, still being written)"
        )
    if not seen["writing"]:
        wrong.append("with 2 answered outputs held in writing the bar never said '2 writing'")
    assert not wrong, "; ".join(wrong)
    assert code == 130
    assert len(gate.sent) == 5  # nothing new was sent after Ctrl-C
    assert max(_figures_on_the_bar(drawn)) <= 3  # never more than the window
    last_frame = drawn.split("\r")[-1]
    assert "5/8" in last_frame and "writing" not in last_frame  # all written: no field


@pytest.mark.parametrize("total", [100, 48_000, 10_000_000])
def test_at_80_columns_the_writing_figure_gives_way_before_the_count_or_the_in_flight_one(
    total: int,
) -> None:
    stream = io.StringIO()
    console = Console(file=stream, force_terminal=True, width=80, color_system=None)
    done = total * 48 // 100
    tally = Tally(total=total, started=0.0, succeeded=done - 12, failed=12, in_flight=64)
    tally.writing, tally.bytes_out = 16, 123_456_789
    reporter = RichReporter(tally, console, clock=lambda: 3600.0)

    text = Text.from_markup(reporter.line()).plain

    assert text.startswith(f"{done}/{total} · 12 failed · 64 in flight")
    assert len(text) <= 80 - 2 - MIN_BAR - 2  # the spinner, the bar and the gaps keep theirs
    if total < 1_000_000:  # room for the writing figure and the ETA, which reads last
        assert " · 64 in flight · 16 writing · " in text
        assert re.search(r" · ETA \S+$", text), text
