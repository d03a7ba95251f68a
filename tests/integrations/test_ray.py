"""``upscale_dataset`` on a real (loopback-only) Ray against the real reference server.

The server runs on the test's event loop; Ray pulls the dataset in a worker thread
(``asyncio.to_thread``), so the test can inject faults, restart the server and kill an actor
while the job runs. The server counts executions per taskUUID: that is what a user pays for.
"""

from __future__ import annotations

import asyncio
import io
import os
import signal
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from PIL import Image

from upscale_stream.config import ENV_API_KEY
from upscale_stream.errors import InvalidTask, UpscaleError
from upscale_stream.integrations.ray import task_digest, upscale_dataset
from upscale_stream.jobs import derive_task_uuid, input_key
from upscale_stream.models import CCSR
from upscale_stream.server import ReferenceServer
from upscale_stream.testing import _config

from .conftest import non_loopback_listeners

pytestmark = [
    pytest.mark.ray,
    pytest.mark.timeout(180),
    # Ray's own modules warn about Ray's own deprecated settings; ours must not warn.
    pytest.mark.filterwarnings(r"ignore::DeprecationWarning:ray(\..*)?"),
]

INLINE = {"output_type": "base64Data"}


def png(index: int, size: tuple[int, int] = (8, 6)) -> bytes:
    """A small PNG, different for every ``index`` (so each has its own input key)."""
    image = Image.new("RGB", size, (index % 256, index // 256 % 256, 77))
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def download(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as response:
        body: bytes = response.read()
    return body


def size_of(content: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(content)) as image:
        return image.size


@pytest.fixture
async def server() -> AsyncIterator[ReferenceServer]:
    async with ReferenceServer(_config(hold_time=30.0)) as running:
        yield running


async def collect(dataset: Any) -> list[dict[str, Any]]:
    """Run the dataset to the end in a worker thread (the server keeps serving)."""
    rows: list[dict[str, Any]] = await asyncio.to_thread(dataset.take_all)
    return rows


def test_ray_listens_on_loopback_only(ray_session: Any) -> None:
    assert ray_session.is_initialized()
    assert non_loopback_listeners() == []


async def test_300_rows_through_drops_and_a_restart_are_all_right_and_run_once_each(
    ray_session: Any, server: ReferenceServer
) -> None:
    assert ENV_API_KEY not in os.environ  # the actors have it only by inheritance
    server.faults.drop_after_tasks = 45
    server.faults.repeat = True
    server.faults.result_delay = 0.01
    inputs = [png(i) for i in range(300)]
    dataset = upscale_dataset(
        ray_session.data.from_items(
            [{"image": content, "n": i} for i, content in enumerate(inputs)]
        ),
        url=server.url,
        job_id="faults-1",
        batch_size=25,
        **INLINE,
    )
    running = asyncio.create_task(collect(dataset))
    await server.wait_executions(150, timeout=120)
    assert non_loopback_listeners() == []  # the actors too, now that they are up
    forgotten = set(server.executions)  # the restart forgets every task run so far
    await server.restart()
    server.faults.drop_after_tasks = None
    rows = await running

    assert server.faults.fired["drop_after_tasks"] >= 1
    assert len(rows) == 300
    digest = task_digest(**INLINE)
    for row in rows:
        assert row["error_code"] is None, row["error_message"]
        assert size_of(row["image_bytes"]) == (16, 12)
        content = inputs[row["n"]]
        assert row["task_uuid"] == derive_task_uuid("faults-1", input_key(content), digest)
    assert {row["task_uuid"] for row in rows} == set(server.executions)
    ran_twice = {uuid for uuid, count in server.executions.items() if count > 1}
    assert ran_twice <= forgotten  # only what the server forgot ran again
    assert max(server.executions.values()) <= 2


async def test_the_same_job_run_again_runs_nothing_and_gives_every_row_again(
    ray_session: Any, server: ReferenceServer
) -> None:
    items = [{"image": png(i, (6, 6))} for i in range(24)]
    first = await collect(
        upscale_dataset(
            ray_session.data.from_items(items), url=server.url, job_id="again", actors=1, **INLINE
        )
    )
    assert all(row["error_code"] is None for row in first)
    assert server.counts.executions_total == 24

    again = await collect(
        upscale_dataset(
            ray_session.data.from_items(items), url=server.url, job_id="again", actors=1, **INLINE
        )
    )

    assert server.counts.executions_total == 24  # nothing ran, nothing was paid twice
    assert sorted(r["task_uuid"] for r in again) == sorted(r["task_uuid"] for r in first)
    # The core recovers the earlier results (getTaskDetails) instead of running them again.
    assert [r["error_code"] for r in again] == [None] * 24
    assert all(size_of(r["image_bytes"]) == (12, 12) for r in again)


async def test_a_corrupt_image_is_an_error_row_and_the_others_succeed(
    ray_session: Any, server: ReferenceServer
) -> None:
    items: list[dict[str, Any]] = [{"image": png(i)} for i in range(5)]
    items.insert(2, {"image": png(99)[:40]})  # a PNG cut short

    rows = await collect(
        upscale_dataset(ray_session.data.from_items(items), url=server.url, actors=1)
    )

    codes = [row["error_code"] for row in rows]
    assert codes.count(None) == 5
    [bad] = [row for row in rows if row["error_code"] is not None]
    assert bad["error_code"] == "corruptImage" and bad["error_message"]
    assert server.counts.received_total == 5  # the corrupt one was never sent
    assert all(row["image_url"].startswith("http://127.0.0.1:") for row in rows if row is not bad)


async def test_read_binary_files_read_images_paths_and_uuids_are_all_inputs(
    ray_session: Any, server: ReferenceServer, tmp_path: Path
) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(3):
        (folder / f"p{i}.png").write_bytes(png(i, (5, 4)))
    data = ray_session.data

    by_bytes = await collect(
        upscale_dataset(
            data.read_binary_files(str(folder), include_paths=True),
            column="bytes",
            key_column="path",
            url=server.url,
            job_id="kinds",
            actors=1,
            **INLINE,
        )
    )
    by_pixels = await collect(
        upscale_dataset(data.read_images(str(folder)), url=server.url, actors=1)
    )
    # Paths and image UUIDs (of the outputs just stored on the server) are both text.
    texts = [{"image": str(p)} for p in sorted(folder.iterdir())]
    texts += [{"image": row["image_uuid"]} for row in by_bytes]
    by_text = await collect(upscale_dataset(data.from_items(texts), url=server.url, actors=1))

    assert [size_of(r["image_bytes"]) for r in by_bytes] == [(10, 8)] * 3
    digest = task_digest(**INLINE)
    assert {r["task_uuid"] for r in by_bytes} == {
        derive_task_uuid("kinds", r["path"], digest) for r in by_bytes
    }
    assert [r["error_code"] for r in by_pixels + by_text] == [None] * 9
    assert all(r["image_url"] for r in by_pixels + by_text)
    sizes = {}
    for row in by_text:  # off the loop: the server answering the download runs on it
        sizes[row["image"]] = size_of(await asyncio.to_thread(download, row["image_url"]))
    assert sorted(sizes.values()) == [(10, 8)] * 3 + [(20, 16)] * 3  # 2x the input, 4x the PNG


def _processes_connected_to(port: int) -> list[psutil.Process]:
    """Ray's processes with a socket to ``port`` (the actors that are talking to the server)."""
    found = []
    for process in psutil.Process().children(recursive=True):
        try:
            connections = process.net_connections(kind="inet")
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        if any(conn.raddr and conn.raddr.port == port for conn in connections):
            found.append(process)
    return found


async def test_an_actor_killed_mid_block_is_retried_and_no_task_runs_twice(
    ray_session: Any, server: ReferenceServer
) -> None:
    server.faults.result_delay = 1.0  # the block is still waiting on its results at the kill
    items = [{"image": png(i, (4, 4))} for i in range(16)]
    dataset = upscale_dataset(
        ray_session.data.from_items(items),
        url=server.url,
        job_id="killed",
        actors=1,
        batch_size=16,
        concurrent_batches=1,
        **INLINE,
    )
    running = asyncio.create_task(collect(dataset))
    await server.wait_executions(16, timeout=60)
    [actor] = _processes_connected_to(server.port)  # the pool's one actor
    assert "_Upscaler" in " ".join(actor.cmdline())
    actor.send_signal(signal.SIGKILL)
    server.faults.result_delay = 0.0
    rows = await running

    assert len(rows) == 16
    assert server.counts.received_total > 16  # the block really was sent again
    assert sorted(server.executions.values()) == [1] * 16  # but nothing ran twice
    # The re-sent rows were refused by the server and recovered by the core: every row right.
    assert [r["error_code"] for r in rows] == [None] * 16


def test_bad_pool_parameters_and_options_fail_before_anything_runs(ray_session: Any) -> None:
    dataset = ray_session.data.from_items([{"image": b"x"}])
    with pytest.raises(InvalidTask, match="actors"):
        upscale_dataset(dataset, actors=0)
    with pytest.raises(InvalidTask, match="url"):
        upscale_dataset(dataset, url="ws://127.0.0.1:1/v1?apiKey=secret-in-the-url")
    with pytest.raises(InvalidTask):
        upscale_dataset(dataset, factor=4, model=CCSR)  # CCSR has no 4x
    with pytest.raises(InvalidTask, match="job_id"):
        upscale_dataset(dataset, job_id="")


def test_without_ray_the_error_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "ray", None)
    monkeypatch.setitem(sys.modules, "ray.data", None)
    with pytest.raises(UpscaleError, match=r"pip install 'upscale-stream\[ray\]'"):
        upscale_dataset(object())  # type: ignore[arg-type]


def test_importing_the_package_the_integration_and_the_cli_does_not_import_ray() -> None:
    import subprocess
    import sys

    code = (
        "import sys, upscale_stream, upscale_stream.integrations.ray, upscale_stream.cli.run\n"
        "loaded = sorted(m for m in sys.modules if m == 'ray' or m.startswith('ray.'))\n"
        "assert not loaded, loaded\n"
    )
    finished = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert finished.returncode == 0, finished.stderr
