"""The reader steps aside during a burst of buffered frames, so callers refill the window.

A socket that already holds many frames hands them out without ever suspending the reader, so
without a yield the callers whose results arrived first could not run, submit their next task
or let the writer send it, until the whole burst was read: with a 2,000-task window and 200 ms
of latency that cost a sixth of the throughput (benchmarks/PROFILE.md, session 18).
"""

from __future__ import annotations

import asyncio
import collections
from typing import Any

import orjson
import pytest

from upscale_stream import UpscaleClient
from upscale_stream import connection as connection_module

IMAGE = "11111111-2222-4333-8444-555555555555"
SESSION = orjson.dumps(
    {"data": [{"taskType": "authentication", "connectionSessionUUID": IMAGE.replace("1", "a")}]}
)
BURST = 200


class _Transport:
    def abort(self) -> None:
        pass

    def is_closing(self) -> bool:
        return False


class HeldAnswers:
    """A socket that keeps the answers to task frames until :meth:`release`, then holds them
    all at once (one result per frame), as a kernel buffer does after a pause."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.all_held = asyncio.Event()  # every expected task was sent and its answer held
        self.inbox: collections.deque[bytes] = collections.deque()
        self.held: list[bytes] = []
        self.waiter: asyncio.Future[None] | None = None
        self.transport = _Transport()
        self.taken = 0  # frames the reader has taken so far
        self.unread = 0

    async def send(self, frame: bytes | str, text: bool = True) -> None:
        for item in orjson.loads(frame):
            if item["taskType"] == "authentication":
                self._deliver([SESSION])
            elif item["taskType"] == "upscale":
                key = item["taskUUID"]
                answer = {"taskType": "upscale", "taskUUID": key, "imageURL": f"http://x/{key}"}
                self.held.append(orjson.dumps({"data": [answer]}))
                if len(self.held) == self.expected:
                    self.all_held.set()

    def release(self) -> None:
        held, self.held = self.held, []
        self._deliver(held)

    def _deliver(self, frames: list[bytes]) -> None:
        self.inbox.extend(frames)
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    async def recv(self, decode: bool | None = False) -> bytes:
        while not self.inbox:
            self.waiter = asyncio.get_running_loop().create_future()
            await self.waiter
        self.taken += 1
        return self.inbox.popleft()

    async def close(self) -> None:
        pass


async def test_callers_run_before_a_burst_of_buffered_results_is_read_to_the_end(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sock = HeldAnswers(BURST)

    async def fake_open(self: Any) -> HeldAnswers:
        return sock

    monkeypatch.setattr(connection_module.Connection, "_open", fake_open)
    async with UpscaleClient(
        api_key="fairness-key", url="ws://127.0.0.1:1", max_in_flight=BURST, max_batch=50
    ) as client:
        await client.connect()
        seen_at: list[int] = []  # frames the reader had taken when each caller got its result

        async def caller() -> None:
            await client.upscale(IMAGE)
            seen_at.append(sock.taken)

        callers = [asyncio.ensure_future(caller()) for _ in range(BURST)]
        await asyncio.wait_for(sock.all_held.wait(), timeout=30)
        taken_before = sock.taken
        sock.release()
        await asyncio.wait_for(asyncio.gather(*callers), timeout=30)
    first = min(seen_at) - taken_before
    assert len(seen_at) == BURST
    assert first <= 50, f"the first caller ran only after the reader took {first} frames"
