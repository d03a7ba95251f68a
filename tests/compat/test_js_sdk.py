"""The official JavaScript SDK, ``@runware/sdk-js`` 1.3.2 from npm, driven by node (issue 10).

The package is installed once under ``.venv-compat/sdk-js-1.3.2`` with ``npm install`` (no
install scripts run) and reused. Each test starts a reference server on 127.0.0.1, runs
``drivers/drive_sdk_js.mjs`` with node, reads the one JSON line it prints and checks both the
SDK's answer and the server's side. Where node or npm is missing the tests are skipped with
the reason printed; a failed install fails them with npm's output.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import random
import shutil
import subprocess
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from upscale_stream.server import ReferenceServer, ServerConfig

pytestmark = pytest.mark.timeout(300)

REPO = Path(__file__).resolve().parents[2]
PREFIX = REPO / ".venv-compat" / "sdk-js-1.3.2"
PACKAGE = "@runware/sdk-js@1.3.2"
ENTRY = PREFIX / "node_modules" / "@runware" / "sdk-js" / "dist" / "index.js"
DRIVER = Path(__file__).parent / "drivers" / "drive_sdk_js.mjs"
KEY = "js-compat-key-0123456789"
WRONG_KEY = "js-compat-WRONG-key-987654"
INPUT_SIZE = (24, 16)
STEP_TIMEOUT_S = 30


def _install() -> Path:
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        missing = " and ".join(name for name, path in (("node", node), ("npm", npm)) if not path)
        reason = f"{missing} not found on PATH: the @runware/sdk-js cases need node and npm"
        print(f"SKIPPED: {reason}")
        pytest.skip(reason)
    if not ENTRY.exists():
        PREFIX.mkdir(parents=True, exist_ok=True)
        (PREFIX / "package.json").write_text('{"name": "compat-sdk-js", "private": true}\n')
        done = subprocess.run(
            [npm, "install", "--no-audit", "--no-fund", "--ignore-scripts", PACKAGE],
            cwd=PREFIX,
            capture_output=True,
            text=True,
            timeout=240,
            check=False,
        )
        if done.returncode != 0 or not ENTRY.exists():
            pytest.fail(f"npm install {PACKAGE} failed:\n{done.stdout}\n{done.stderr}")
    return Path(node)


@pytest.fixture(scope="module")
def node() -> Path:
    """node, with the SDK installed under .venv-compat/."""
    return _install()


@pytest.fixture
async def server() -> AsyncIterator[ReferenceServer]:
    config = ServerConfig(api_keys=frozenset({KEY}), port=0)
    async with ReferenceServer(config) as running:
        yield running


@pytest.fixture
def input_png(tmp_path: Path) -> Path:
    width, height = INPUT_SIZE
    image = Image.frombytes("RGB", INPUT_SIZE, random.Random(7).randbytes(3 * width * height))
    path = tmp_path / "input.png"
    image.save(path, "PNG")
    return path


async def drive(
    node: Path, server: ReferenceServer, image: Path, *options: str, key: str = KEY
) -> dict[str, Any]:
    process = await asyncio.create_subprocess_exec(
        str(node),
        str(DRIVER),
        "--sdk",
        str(ENTRY),
        "--url",
        server.url,
        "--api-key",
        key,
        "--image",
        str(image),
        "--step-timeout",
        str(STEP_TIMEOUT_S),
        *options,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(STEP_TIMEOUT_S * 4):
            stdout, stderr = await process.communicate()
    except TimeoutError:
        process.kill()
        await process.communicate()
        pytest.fail(f"the JS driver {' '.join(options)} hung")
    lines = [line for line in stdout.decode().splitlines() if line.startswith("{")]
    assert lines, f"no report; stderr:\n{stderr.decode(errors='replace')[-2000:]}"
    report: dict[str, Any] = json.loads(lines[-1])
    assert report["version"] == "1.3.2"
    return report


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as response:
        body: bytes = response.read()
    return body


async def output_size(result: dict[str, Any]) -> tuple[int, int]:
    if "imageURL" in result:
        data = await asyncio.to_thread(_get, result["imageURL"])
    elif "imageBase64Data" in result:
        data = base64.b64decode(result["imageBase64Data"])
    else:
        data = base64.b64decode(result["imageDataURI"].partition(",")[2])
    with Image.open(io.BytesIO(data)) as image:
        return image.size


DOUBLE = (INPUT_SIZE[0] * 2, INPUT_SIZE[1] * 2)


@pytest.mark.parametrize("output_type", ["URL", "base64Data", "dataURI"])
async def test_sdk_js_upscales_in_each_output_type(
    node: Path, server: ReferenceServer, input_png: Path, output_type: str
) -> None:
    report = await drive(node, server, input_png, "--output-type", output_type)
    assert report["error"] is None, report["error"]
    (result,) = report["results"]
    key = {"URL": "imageURL", "base64Data": "imageBase64Data", "dataURI": "imageDataURI"}
    assert key[output_type] in result and result["taskType"] == "upscale"
    assert await output_size(result) == DOUBLE
    assert server.executions[result["taskUUID"]] == 1


async def test_sdk_js_uploads_with_image_upload_and_media_storage_then_upscales_each(
    node: Path, server: ReferenceServer, input_png: Path
) -> None:
    report = await drive(node, server, input_png, "--scenario", "upload")
    assert report["error"] is None, report["error"]
    image_upload, media = report["uploads"]
    assert image_upload["imageURL"].endswith(f"{image_upload['imageUUID']}.png")
    assert media["taskType"] == "mediaStorage" and media["mediaURL"].endswith(".png")
    first, second = report["results"]
    assert first["inputImageUUID"] == image_upload["imageUUID"]
    assert second["inputImageUUID"] == media["mediaUUID"]
    for result in (first, second):
        assert await output_size(result) == DOUBLE


async def test_sdk_js_with_a_wrong_key_gets_invalid_api_key_and_runs_nothing(
    node: Path, server: ReferenceServer, input_png: Path
) -> None:
    report = await drive(node, server, input_png, key=WRONG_KEY)
    error = report["error"]
    assert error is not None and error["step"] == "connect", report
    assert (error["code"], error["taskType"]) == ("invalidApiKey", "authentication")
    assert server.counts.authentications == 0 and server.counts.received_total == 0
