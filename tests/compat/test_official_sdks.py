"""The official Runware Python SDKs against the reference server (issue 4, conformance).

``runware`` 0.5.24 and ``runware-sdk`` 1.8.0 each live in their own virtual environment under
``.venv-compat/`` (``benchmarks.compat.ensure_venv``: built on first use from PyPI, then reused).
Each test starts a reference server on 127.0.0.1, runs one driver script from ``drivers/`` with
that environment's interpreter, parses the JSON line it prints, and checks both sides: what
the SDK returned, what the server saw (``received``, ``executions``, polls, authentications) and
the output image itself (fetched from the server's HTTP route, or decoded from base64), whose
size must be the input's times the factor.

The drivers block every connection that leaves the machine (an audit hook), so the SDKs are
proven to need nothing but the server under test. When the environments cannot be built
(no package index), the tests fail with pip's message; they never skip.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import os
import random
import urllib.request
import uuid
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from benchmarks.compat import SdkPackage, ensure_venv
from PIL import Image

from upscale_stream.server import ReferenceServer, ServerConfig

# Building an environment from PyPI (first run only) happens in a fixture, inside a test's time.
pytestmark = pytest.mark.timeout(300)

DRIVERS = Path(__file__).parent / "drivers"
KEY = "compat-key-0123456789"
WRONG_KEY = "compat-WRONG-key-9876543210"
DRIVER_TIMEOUT_S = 120.0
STEP_TIMEOUT_S = 30.0
INPUT_SIZE = (24, 16)  # not square: a swapped width and height would show
PIL_FORMAT = {None: "JPEG", "JPG": "JPEG", "PNG": "PNG", "WEBP": "WEBP"}
_PROXY_VARIABLES = ("http_proxy", "https_proxy", "all_proxy", "ws_proxy", "wss_proxy")


# -- environments, server, input ---------------------------------------------------------------


def _interpreter(package: SdkPackage) -> Path:
    try:
        return ensure_venv(package)
    except RuntimeError as exc:
        pytest.fail(
            f"could not build the {package} environment under .venv-compat/ (it needs the "
            f"package index, PyPI):\n{exc}",
            pytrace=False,
        )


@pytest.fixture(scope="session")
def runware_python() -> Path:
    """The interpreter of the ``runware`` 0.5.24 environment."""
    return _interpreter("runware")


@pytest.fixture(scope="session")
def runware_sdk_python() -> Path:
    """The interpreter of the ``runware-sdk`` 1.8.0 environment."""
    return _interpreter("runware-sdk")


@pytest.fixture
async def server() -> AsyncIterator[ReferenceServer]:
    """A reference server on 127.0.0.1 and a free port, accepting only :data:`KEY`."""
    config = ServerConfig(api_keys=frozenset({KEY}), port=0)
    async with ReferenceServer(config) as running:
        yield running


@pytest.fixture
def input_png(tmp_path: Path) -> Path:
    """A noisy 24x16 PNG file (noise, so that no encoder can cheat on it)."""
    width, height = INPUT_SIZE
    image = Image.frombytes("RGB", INPUT_SIZE, random.Random(4).randbytes(3 * width * height))
    path = tmp_path / "input.png"
    image.save(path, "PNG")
    return path


# -- running a driver --------------------------------------------------------------------------


def driver_environment(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """Our environment without proxies (loopback must go direct) plus ``extra``.

    ``RUNWARE_*`` variables are already cleared by the autouse fixture; the SDK knobs a test
    needs are set here, for the subprocess only.
    """
    environment = {
        name: value
        for name, value in os.environ.items()
        if name.lower() not in _PROXY_VARIABLES and not name.startswith("RUNWARE_")
    }
    environment["NO_PROXY"] = environment["no_proxy"] = "127.0.0.1,localhost,::1"
    environment["PYTHONUNBUFFERED"] = "1"
    environment.update(extra or {})
    return environment


async def run_driver(
    python: Path,
    script: str,
    server: ReferenceServer,
    *options: str,
    key: str = KEY,
    environment: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Run a driver to completion and return its report; fail clearly if it hangs or breaks."""
    process = await asyncio.create_subprocess_exec(
        str(python),
        str(DRIVERS / script),
        "--url",
        server.url,
        "--api-key",
        key,
        "--step-timeout",
        str(STEP_TIMEOUT_S),
        *options,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=driver_environment(environment),
    )
    try:
        async with asyncio.timeout(DRIVER_TIMEOUT_S):
            stdout, stderr = await process.communicate()
    except TimeoutError:
        process.kill()
        await process.communicate()
        pytest.fail(f"{script} {' '.join(options)} hung for {DRIVER_TIMEOUT_S:g} s")
    lines = [line for line in stdout.decode().splitlines() if line.startswith("{")]
    tail = "\n".join(stderr.decode(errors="replace").splitlines()[-20:])
    assert process.returncode == 0 and lines, (
        f"{script} exited with {process.returncode} without a report; stderr:\n{tail}"
    )
    report: dict[str, Any] = json.loads(lines[-1])
    assert report["blocked"] == [], f"the SDK tried to leave the machine: {report['blocked']}"
    return report


def single_result(report: Mapping[str, Any]) -> dict[str, Any]:
    """The one result of a report that must have succeeded."""
    assert report["error"] is None, f"the SDK failed: {report['error']}"
    assert len(report["results"]) == 1, report["results"]
    result: dict[str, Any] = report["results"][0]
    return result


# -- checking outputs --------------------------------------------------------------------------


def _http_get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as response:
        body: bytes = response.read()
    return body


async def output_bytes(server: ReferenceServer, result: Mapping[str, Any]) -> bytes:
    """The output image's bytes: downloaded from the server for URL output, else decoded."""
    if "imageURL" in result:
        url = result["imageURL"]
        assert url.startswith(server.http_url + "/image/"), url
        return await asyncio.to_thread(_http_get, url)
    if "imageBase64Data" in result:
        return base64.b64decode(result["imageBase64Data"], validate=True)
    header, _, payload = result["imageDataURI"].partition(",")
    assert header.startswith("data:image/") and header.endswith(";base64"), header
    return base64.b64decode(payload, validate=True)


async def assert_upscaled(
    server: ReferenceServer,
    result: Mapping[str, Any],
    *,
    factor: int = 2,
    output_format: str | None = None,
) -> None:
    """The result's image is the input times ``factor``, in ``output_format`` (default JPG)."""
    with Image.open(io.BytesIO(await output_bytes(server, result))) as image:
        assert image.size == (INPUT_SIZE[0] * factor, INPUT_SIZE[1] * factor)
        assert image.format == PIL_FORMAT[output_format]


def output_type_key(output_type: str | None) -> str:
    """The result field that carries the image for an ``outputType``."""
    return {
        None: "imageURL",
        "URL": "imageURL",
        "base64Data": "imageBase64Data",
        "dataURI": "imageDataURI",
    }[output_type]


def assert_ran_once(server: ReferenceServer, task_uuid: str, *, tasks: int = 1) -> None:
    """The server received and ran this task exactly once, and ``tasks`` tasks in all."""
    assert server.received[task_uuid] == 1
    assert server.executions[task_uuid] == 1
    assert server.counts.received_total == tasks
    assert server.counts.executions_total == tasks


OUTPUTS = [
    pytest.param(None, None, "datauri", id="defaults-URL-JPG"),
    pytest.param("URL", "PNG", "base64", id="URL-PNG"),
    pytest.param("base64Data", "WEBP", "datauri", id="base64Data-WEBP"),
    pytest.param("dataURI", "JPG", "base64", id="dataURI-JPG"),
]


# -- runware 0.5.24 ----------------------------------------------------------------------------


@pytest.mark.parametrize(("output_type", "output_format", "input_form"), OUTPUTS)
async def test_runware_sync_upscale_returns_every_output_type_at_twice_the_size(
    runware_python, server, input_png, output_type, output_format, input_form
):
    options = ["--image", str(input_png), "--input-form", input_form]
    if output_type:
        options += ["--output-type", output_type, "--output-format", output_format]
    report = await run_driver(runware_python, "drive_runware.py", server, *options)

    result = single_result(report)
    assert report["connected"] and report["session_id"]
    assert result["taskType"] == "imageUpscale"  # the legacy name PYL sends, echoed back
    assert output_type_key(output_type) in result
    await assert_upscaled(server, result, output_format=output_format)
    assert_ran_once(server, result["taskUUID"])
    assert server.counts.authentications == 1


async def test_runware_uploads_a_local_file_with_image_upload_then_upscales_its_uuid(
    runware_python, server, input_png
):
    report = await run_driver(
        runware_python,
        "drive_runware.py",
        server,
        "--image",
        str(input_png),
        "--input-form",
        "path",
        "--include-cost",
    )

    result = single_result(report)
    await assert_upscaled(server, result)
    assert isinstance(result["cost"], float) and result["cost"] > 0
    # The upscale named the uploaded image by UUID; the server stored the file's exact bytes.
    uploaded = server.images.get(result["inputImageUUID"], server.config.clock())
    assert uploaded is not None and uploaded.data == input_png.read_bytes()
    assert server.counts.received_total == server.counts.executions_total == 2
    assert server.received[result["taskUUID"]] == 1
    assert server.executions[result["taskUUID"]] == 1


async def test_runware_async_upscale_returns_the_ack_then_get_response_fetches_the_result(
    runware_python, server, input_png
):
    # PYL waits out a poll's whole timeout when the reply says "processing" (official-sdks.md
    # W10): its import-time knobs are shortened here, for the subprocess only.
    knobs = {
        "RUNWARE_VIDEO_INITIAL_TIMEOUT": "1000",
        "RUNWARE_VIDEO_POLLING_DELAY": "100",
        "RUNWARE_IMAGE_POLLING_DELAY": "100",
    }
    report = await run_driver(
        runware_python,
        "drive_runware.py",
        server,
        "--image",
        str(input_png),
        "--delivery",
        "async",
        environment=knobs,
    )

    result = single_result(report)
    assert report["async_ack"] == {"taskType": "imageUpscale", "taskUUID": result["taskUUID"]}
    assert result["status"] == "success"
    assert server.counts.polls[result["taskUUID"]] >= 1
    await assert_upscaled(server, result)
    assert_ran_once(server, result["taskUUID"])


async def test_runware_with_a_wrong_key_raises_after_connect_and_never_runs_a_task(
    runware_python, server, input_png, caplog
):
    caplog.set_level("INFO", logger="upscale_stream")
    report = await run_driver(
        runware_python, "drive_runware.py", server, "--image", str(input_png), key=WRONG_KEY
    )

    # official-sdks.md W6: connect() returns, then the call raises the rejection.
    assert report["connected"] and report["session_id"] is None
    error = report["error"]
    assert error is not None and error["step"] == "imageUpscale"
    assert error["type"] == "ConnectionError", error
    assert "Invalid API key" in error["message"]
    assert report["results"] == []
    assert server.counts.authentications == 0
    assert server.counts.executions_total == 0
    assert_auth_failures_logged_without_the_key(caplog)


def assert_auth_failures_logged_without_the_key(caplog: pytest.LogCaptureFixture) -> None:
    server_log = "\n".join(
        record.getMessage()
        for record in caplog.records
        if record.name.startswith("upscale_stream.server")
    )
    assert "auth.rejected" in server_log
    assert WRONG_KEY not in server_log and KEY not in server_log


# -- runware-sdk 1.8.0 -------------------------------------------------------------------------


@pytest.mark.parametrize(("output_type", "output_format", "input_form"), OUTPUTS)
async def test_runware_sdk_sync_upscale_returns_every_output_type_at_twice_the_size(
    runware_sdk_python, server, input_png, output_type, output_format, input_form
):
    task_uuid = str(uuid.uuid4())
    options = [
        "--image",
        str(input_png),
        "--input-form",
        input_form,
        "--delivery",
        "sync",
        "--task-uuid",
        task_uuid,
    ]
    if output_type:
        options += ["--output-type", output_type, "--output-format", output_format]
    report = await run_driver(runware_sdk_python, "drive_runware_sdk.py", server, *options)

    result = single_result(report)
    assert report["connected"] and report["session_id"]
    assert result["taskType"] == "upscale" and result["taskUUID"] == task_uuid
    assert output_type_key(output_type) in result
    await assert_upscaled(server, result, output_format=output_format)
    assert_ran_once(server, task_uuid)
    assert server.counts.polls[task_uuid] == 0  # pushed, never polled


async def test_runware_sdk_async_upscale_is_acked_then_polled_with_get_response(
    runware_sdk_python, server, input_png
):
    task_uuid = str(uuid.uuid4())
    report = await run_driver(
        runware_sdk_python,
        "drive_runware_sdk.py",
        server,
        "--image",
        str(input_png),
        "--delivery",
        "async",
        "--task-uuid",
        task_uuid,
        "--factor",
        "4",
        "--include-cost",
    )

    result = single_result(report)
    assert result["status"] == "success" and result["taskUUID"] == task_uuid
    assert server.counts.polls[task_uuid] >= 1
    assert isinstance(result["cost"], float)
    await assert_upscaled(server, result, factor=4)
    assert_ran_once(server, task_uuid)


async def test_runware_sdk_with_a_wrong_key_raises_an_auth_error_at_connect(
    runware_sdk_python, server, input_png, caplog
):
    caplog.set_level("INFO", logger="upscale_stream")
    report = await run_driver(
        runware_sdk_python,
        "drive_runware_sdk.py",
        server,
        "--image",
        str(input_png),
        key=WRONG_KEY,
    )

    error = report["error"]
    assert error is not None and error["step"] == "connect"
    assert error["type"] == "RunwareError" and error["code"] == "auth", error
    assert "Invalid API key" in error["message"]
    assert not report["connected"]
    assert server.counts.authentications == 0
    assert server.counts.received_total == 0
    assert_auth_failures_logged_without_the_key(caplog)


async def test_runware_sdk_keeps_its_other_tasks_when_a_frame_level_error_arrives(
    runware_sdk_python, input_png
):
    # issue 10: an errors item without taskUUID made runware-sdk fail every pending task (3
    # pending tasks failed at 0.5 s). The server now reports frame-level problems in one
    # data item that names no task, which the SDK skips.
    config = ServerConfig(api_keys=frozenset({KEY}), port=0, task_delay=1.5)
    async with ReferenceServer(config) as server:
        report = await run_driver(
            runware_sdk_python,
            "drive_runware_sdk.py",
            server,
            "--image",
            str(input_png),
            "--scenario",
            "stray",
            "--tasks",
            "3",
            "--stray-after",
            "0.5",
        )
        assert report["error"] is None, report["error"]
        assert len(report["results"]) == 3
        for result in report["results"]:
            await assert_upscaled(server, result)
        assert server.counts.executions_total == 3


async def test_runware_sdk_uploads_with_media_storage_then_upscales_the_media_uuid(
    runware_sdk_python, server, input_png
):
    report = await run_driver(
        runware_sdk_python,
        "drive_runware_sdk.py",
        server,
        "--image",
        str(input_png),
        "--scenario",
        "media",
        "--delivery",
        "sync",
    )

    result = single_result(report)
    (stored,) = report["media"]
    assert stored["operation"] == "upload" and stored["taskType"] == "mediaStorage"
    assert stored["mediaURL"].endswith(f"/image/{stored['mediaUUID']}.png")
    assert result["inputImageUUID"] == stored["mediaUUID"]
    assert result["mediaUUID"] == result["imageUUID"]  # inputs.image: both spellings
    await assert_upscaled(server, result)
