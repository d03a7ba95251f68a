"""A pytest plugin for users' own test suites: a local Runware-compatible server on a free port.

Installed with the package (entry point ``pytest11``), so the fixtures below are available in any
test suite that has upscale-stream installed:

* ``upscale_server``: an async fixture (a :class:`LocalServer`) for async tests. It is declared
  with ``pytest_asyncio.fixture``, so it works in pytest-asyncio's default *strict* mode (mark
  the test ``@pytest.mark.asyncio``) and in *auto* mode alike::

      @pytest.mark.asyncio
      async def test_my_pipeline(upscale_server):
          async with UpscaleClient(api_key=upscale_server.api_key, url=upscale_server.url) as c:
              result = await c.upscale(image_bytes, factor=2)

* ``upscale_server_url``: a plain fixture (the ``ws://`` URL of a server in a background thread,
  one per test session) for synchronous tests and code with its own event loop, such as the
  blocking ``Client``; the key is :data:`TEST_API_KEY`.

The server really upscales with Pillow, so results can be opened and checked. Its fault-injection
knobs (``upscale_server.server.faults``) let users test their own retry handling.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from .server import ReferenceServer

if TYPE_CHECKING:
    _async_fixture = pytest.fixture
else:
    try:  # pytest-asyncio is the users' choice, not our dependency: load without it too
        from pytest_asyncio import fixture as _async_fixture
    except ImportError:  # pragma: no cover - the dev extra installs it
        _async_fixture = pytest.fixture

__all__ = ["TEST_API_KEY", "LocalServer", "upscale_server", "upscale_server_url"]

TEST_API_KEY = "test-key-0123456789"
"""The key the fixtures' servers accept."""


@dataclass(frozen=True)
class LocalServer:
    """A running reference server, as handed to tests.

    Attributes:
        url: The WebSocket URL (``ws://127.0.0.1:PORT/v1``).
        http_url: Where URL outputs are served.
        api_key: The key the server accepts.
        server: The server object itself (fault knobs, execution counts).
    """

    url: str
    http_url: str
    api_key: str
    server: ReferenceServer


def _config(**overrides: Any) -> Any:
    from .server import ServerConfig

    fields: dict[str, Any] = {
        "api_keys": frozenset({TEST_API_KEY}),
        "allow_private_urls": True,
        "port": 0,
    }
    fields.update(overrides)
    return ServerConfig(**fields)


@_async_fixture
async def upscale_server() -> AsyncIterator[LocalServer]:
    """A reference server on 127.0.0.1 and a free port, started in the test's event loop.

    Works in pytest-asyncio's strict mode (the default: mark the test
    ``@pytest.mark.asyncio``) and in auto mode.
    """
    from .server import ReferenceServer

    async with ReferenceServer(_config()) as server:
        yield LocalServer(server.url, server.http_url, TEST_API_KEY, server)


@pytest.fixture(scope="session")
def upscale_server_url() -> Iterator[str]:
    """The URL of a reference server running in a background thread for the whole session.

    Use it from synchronous tests or from code with its own event loop. The API key is
    ``upscale_stream.testing.TEST_API_KEY``.
    """
    from .server import ReferenceServer

    with ReferenceServer(_config()).run_in_thread() as url:
        yield url
