"""The in-flight window's slots: one owner (the :class:`~upscale_stream.connection.Connection`).

:class:`InFlightWindow` is a counter and a FIFO of waiters around the AIMD limit of
:class:`~upscale_stream.policy.Window`: no ``asyncio.Semaphore``, no future for a caller who
finds room (the common case), and the limit may shrink below the slots in use (a rate limit):
then nobody gets a slot until enough are given back. ``upscale()``, ``submit()`` and
``upscale_many()`` all take their slots here.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque

from .errors import UpscaleError
from .policy import Window

__all__ = ["InFlightWindow"]


class InFlightWindow:
    """Slots of the in-flight window.

    Args:
        aimd: The adaptive limit (its ``limit`` is read at every grant).
        loop: The event loop the waiters' futures belong to.
    """

    __slots__ = ("_loop", "_waiters", "aimd", "used")

    def __init__(self, aimd: Window, loop: asyncio.AbstractEventLoop) -> None:
        self.aimd = aimd
        self.used = 0
        """Slots taken and not yet given back."""
        self._loop = loop
        self._waiters: deque[asyncio.Future[None]] = deque()

    @property
    def waiting(self) -> int:
        """Callers waiting for a slot."""
        return len(self._waiters)

    def try_acquire(self) -> bool:
        """Take one slot if one is free now and nobody waits (no coroutine, no future).

        Returns:
            Whether a slot was taken; if not, call :meth:`acquire`.
        """
        if self.used < self.aimd.limit and not self._waiters:
            self.used += 1
            return True
        return False

    async def acquire(self) -> None:
        """Take one slot, waiting in FIFO order while the window is full.

        Raises:
            UpscaleError: the error given to :meth:`fail_waiters` while waiting.
        """
        if self.used < self.aimd.limit and not self._waiters:
            self.used += 1
            return
        waiter: asyncio.Future[None] = self._loop.create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                self.release()  # granted as we were cancelled: give it back
            else:
                with contextlib.suppress(ValueError):
                    self._waiters.remove(waiter)
            raise

    def release(self, count: int = 1) -> None:
        """Give back ``count`` slots (one by default)."""
        self.used -= count
        if self._waiters:
            self.grant()

    def grant(self) -> None:
        """Hand free slots to waiters, oldest first (call after the limit grew)."""
        waiters = self._waiters
        limit = self.aimd.limit
        while waiters and self.used < limit:
            waiter = waiters.popleft()
            if not waiter.done():
                self.used += 1
                waiter.set_result(None)

    def fail_waiters(self, error: UpscaleError) -> None:
        """End every wait with ``error`` (the connection closed or gave up)."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_exception(error)
