"""upscale_many(window=...): one stream's own cap on pending inputs, below the client's window."""

from __future__ import annotations

import asyncio
import base64
import io
from collections.abc import AsyncIterator

import pytest
from PIL import Image

from upscale_stream import UpscaleClient
from upscale_stream.errors import InvalidLimits
from upscale_stream.server import ReferenceServer, ServerConfig

KEY = "window-test-key"


def png_data_uri() -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (4, 3), (10, 200, 30)).save(buffer, "PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


@pytest.fixture
async def server() -> AsyncIterator[ReferenceServer]:
    config = ServerConfig(api_keys=frozenset({KEY}), port=0, allow_private_urls=True)
    async with ReferenceServer(config) as running:
        yield running


async def test_a_stream_window_caps_its_pending_inputs_below_the_clients_window(
    server: ReferenceServer,
) -> None:
    server.faults.result_delay = 0.05  # results come late enough for the window to fill
    image = png_data_uri()
    seen: list[int] = []
    async with UpscaleClient(api_key=KEY, url=server.url, max_in_flight=100) as client:
        connection = client._connection
        assert connection is not None

        async def run() -> None:
            async for outcome in client.upscale_many([image] * 20, window=3):
                assert outcome.ok, outcome.error
                # the outcome's own slot is given back as it is yielded: count it again
                seen.append(connection.slots_used + 1)

        await asyncio.wait_for(run(), 60)
    assert len(seen) == 20
    assert max(seen) == 3  # the cap was reached, and never passed


@pytest.mark.parametrize("window", [0, -1, 2.5, True])
async def test_a_stream_window_below_one_or_not_an_integer_is_refused(
    server: ReferenceServer, window: object
) -> None:
    async with UpscaleClient(api_key=KEY, url=server.url) as client:
        with pytest.raises(InvalidLimits, match="window"):
            async for _ in client.upscale_many([png_data_uri()], window=window):  # type: ignore[arg-type]
                pass
