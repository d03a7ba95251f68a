"""The status figures (/status.json), the pages' routes, and the key isolation of both."""

from __future__ import annotations

import asyncio
import base64
import io
import re
import urllib.error
import urllib.request
import uuid

import orjson
import pytest
import websockets
from PIL import Image

from upscale_stream import UpscaleClient
from upscale_stream.models import CCSR, SWINIR
from upscale_stream.server import ReferenceServer, ServerConfig
from upscale_stream.server.pages import FILES
from upscale_stream.server.status import BUCKETS, fingerprint

KEY_A = "key-a-0123456789-secret"
KEY_B = "key-b-9876543210-secret"


def _png(size=(8, 6)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, "purple").save(buffer, "PNG")
    return buffer.getvalue()


async def _get(url: str) -> tuple[int, dict[str, str], bytes]:
    def fetch() -> tuple[int, dict[str, str], bytes]:
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                return response.status, dict(response.headers), response.read()
        except urllib.error.HTTPError as error:
            return error.code, dict(error.headers), error.read()

    return await asyncio.to_thread(fetch)


async def _status(server: ReferenceServer) -> dict:
    status, headers, body = await _get(server.http_url + "/status.json")
    assert status == 200 and headers["Content-Type"] == "application/json"
    return orjson.loads(body)


def _config(**overrides) -> ServerConfig:
    return ServerConfig(api_keys=frozenset({KEY_A, KEY_B}), port=0, **overrides)


async def _bad_task(url: str, key: str) -> dict:
    """Send CCSR at x4 on a raw socket (our client refuses it before sending)."""
    async with websockets.connect(url) as ws:
        await ws.send(orjson.dumps([{"taskType": "authentication", "apiKey": key}]).decode())
        await ws.recv()
        task = {
            "taskType": "upscale",
            "taskUUID": str(uuid.uuid4()),
            "inputImage": "data:image/png;base64," + base64.b64encode(_png()).decode(),
            "model": CCSR,
            "upscaleFactor": 4,
        }
        await ws.send(orjson.dumps([task]).decode())
        return orjson.loads(await ws.recv())


async def test_status_json_counts_connections_keys_tasks_errors_and_throughput():
    async with (
        ReferenceServer(_config()) as server,
        UpscaleClient(api_key=KEY_A, url=server.url) as client,
    ):
        for _ in range(3):
            await client.upscale(_png(), factor=2, model=SWINIR)
        answer = await _bad_task(server.url, KEY_B)
        assert answer["errors"][0]["code"] == "invalidUpscaleFactor"
        server.faults.result_delay = 0.25
        doc = await _status(server)

    assert doc["connections"] == {"open": 1, "authenticated": 1}
    assert doc["sessions"]["total"] == 2 and doc["sessions"]["attached"] == 1
    assert doc["tasks"]["succeeded"] == 3 and doc["tasks"]["failed"] == 0
    assert doc["tasks"]["received"] == 4 and doc["tasks"]["executed"] == 3
    assert doc["errors_by_code"] == {"invalidUpscaleFactor": 1}
    assert len(doc["throughput"]["counts"]) == BUCKETS
    assert sum(doc["throughput"]["counts"]) == 3
    assert doc["faults"] == {"result_delay": 0.25}
    by_key = {entry["fingerprint"]: entry for entry in doc["keys"]}
    a, b = (server.status.mark(server.handlers.tenant_of(key)) for key in (KEY_A, KEY_B))
    assert by_key[a]["succeeded"] == 3 and by_key[a]["connections"] == 1
    assert by_key[b]["succeeded"] == 0 and by_key[b]["connections"] == 0
    assert by_key[b]["sessions"] == 1


async def test_tasks_in_flight_show_while_they_run():
    async with (
        ReferenceServer(_config(task_delay=30)) as server,
        UpscaleClient(api_key=KEY_A, url=server.url) as client,
    ):
        running = [asyncio.ensure_future(client.upscale(_png(), factor=2)) for _ in range(2)]
        await server.wait_executions(2)
        doc = await _status(server)
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)
    assert doc["tasks"]["in_flight"] == 2
    assert [entry["in_flight"] for entry in doc["keys"]] == [2]


async def test_no_key_and_no_result_is_shown_unless_the_server_allows_results():
    async with ReferenceServer(_config()) as server:
        async with UpscaleClient(api_key=KEY_A, url=server.url) as client:
            result = await client.upscale(_png(), factor=2)
        _, _, body = await _get(server.http_url + "/status.json")
        _, _, page = await _get(server.http_url + "/status")
    for text in (body, page):
        assert KEY_A.encode() not in text and KEY_A[:8].encode() not in text
        assert result.image_uuid is not None and result.image_uuid.encode() not in text
    doc = orjson.loads(body)
    assert doc["results_shown"] is False and doc["latest_outputs"] == []


async def test_with_results_allowed_the_latest_outputs_link_to_their_images():
    async with ReferenceServer(_config(status_shows_results=True)) as server:
        async with UpscaleClient(api_key=KEY_A, url=server.url) as client:
            first = await client.upscale(_png(), factor=2, output_format="PNG")
            second = await client.upscale(_png(), factor=2, output_format="WEBP")
        doc = await _status(server)
        [newest, older] = doc["latest_outputs"]
        status, headers, _ = await _get(server.http_url + newest["url"])
    assert doc["results_shown"] is True
    assert newest["url"] == f"/image/{second.image_uuid}.webp"
    assert older["url"] == f"/image/{first.image_uuid}.png"
    assert status == 200 and headers["Content-Type"] == "image/webp"


@pytest.mark.parametrize("path", sorted(FILES))
async def test_every_page_file_is_served_with_its_type_and_a_strict_content_policy(path):
    async with ReferenceServer(_config()) as server:
        status, headers, body = await _get(server.http_url + path + "?x=1")
    assert status == 200 and body
    assert headers["Content-Type"] == FILES[path][1]
    assert "default-src 'none'" in headers["Content-Security-Policy"]
    # no external asset: every src, href, url() and fetch() names a path of our own
    text = body.decode()
    assert not re.search(
        r"""(src|href)=["'](?!/|data:,)|url\((?!/)|@import|fetch\(["'](?!/)""", text
    )


async def test_the_model_table_of_the_playground_is_the_clients():
    from upscale_stream.models import MODELS

    async with ReferenceServer(_config()) as server:
        _, _, body = await _get(server.http_url + "/pages/models.json")
    table = orjson.loads(body)
    assert set(table) == set(MODELS)
    assert table[CCSR]["factors"] == [2] and table[SWINIR]["factors"] == [2, 4]


async def test_other_paths_still_fall_through_to_the_image_routes_and_426():
    async with ReferenceServer(_config()) as server:
        health = await _get(server.http_url + "/health")
        missing = await _get(server.http_url + "/pages/../config.py")
    assert health[0] == 200
    assert missing[0] == 426


def test_a_fingerprint_is_short_salted_and_never_the_key():
    salt_one, salt_two = b"1" * 16, b"2" * 16
    mark = fingerprint(KEY_A, salt_one)
    assert mark.startswith("key-") and len(mark) == 12
    assert KEY_A not in mark
    assert mark == fingerprint(KEY_A, salt_one) != fingerprint(KEY_A, salt_two)
    assert fingerprint(KEY_B, salt_one) != mark
