"""Fixtures for the CLI tests: a recording proxy in front of the server, an HTTP sink."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from upscale_stream.testing import LocalServer

from .helpers import HttpSink, RecordingProxy


@pytest.fixture
async def wire(upscale_server: LocalServer) -> AsyncIterator[RecordingProxy]:
    """A recording proxy in front of a fresh reference server."""
    async with RecordingProxy(upscale_server.url) as proxy:
        yield proxy


@pytest.fixture
def http_sink() -> Iterator[HttpSink]:
    """A running :class:`HttpSink`."""
    sink = HttpSink()
    sink.start()
    try:
        yield sink
    finally:
        sink.stop()
