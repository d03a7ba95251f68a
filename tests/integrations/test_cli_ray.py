"""``upscale-stream run --engine ray`` in-process, on the session's loopback-only Ray.

Ray is already running here, so the engine reuses it (and the actors already hold the test
key, inherited at ``ray.init``). The same folder is the same job on either engine.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

# tests/ is the import root (it has no __init__.py): the CLI tests' helpers are `cli.helpers`.
from cli.helpers import (
    image_size,
    manifest_lines,
    part_files,
    run_cli,
    server_args,
    summary_of,
    write_image,
)
from upscale_stream.cli.job import task_uuid_of
from upscale_stream.cli.sources import discover, plan_outputs
from upscale_stream.integrations.ray import task_digest
from upscale_stream.jobs import options_digest
from upscale_stream.models import UpscaleTask
from upscale_stream.testing import TEST_API_KEY, LocalServer

pytestmark = [
    pytest.mark.ray,
    pytest.mark.timeout(180),
    pytest.mark.filterwarnings(r"ignore::DeprecationWarning:ray(\..*)?"),
]


def test_both_engines_derive_the_same_task_uuid_for_the_same_input_and_options(
    tmp_path: Path,
) -> None:
    import io

    write_image(tmp_path / "a.png")
    [planned] = plan_outputs(
        discover([str(tmp_path / "a.png")], stdin=io.StringIO()), extension="png"
    )
    options = {"output_format": "PNG", "output_quality": 80}
    wire = UpscaleTask(input_image="placeholder", **options).to_wire()
    cli_digest = options_digest(
        {k: v for k, v in wire.items() if k not in ("taskType", "taskUUID", "inputImage")}
    )

    assert task_digest(**options) == cli_digest
    assert task_digest(**options) != task_digest(output_format="PNG", output_quality=81)
    assert task_uuid_of("job-1", planned, cli_digest) == task_uuid_of(
        "job-1", planned, task_digest(**options)
    )


async def test_run_engine_ray_writes_every_output_and_the_same_manifest_and_summary(
    ray_session: Any, upscale_server: LocalServer, tmp_path: Path
) -> None:
    source, out = tmp_path / "in", tmp_path / "out"
    for i in range(6):
        write_image(source / f"p{i}.png", (7, 5), colour=i * 9)
    write_image(source / "sub" / "q.png", (3, 3))
    argv = ["run", str(source), "--out", str(out), "--engine", "ray"]

    code = await run_cli([*argv, *server_args(upscale_server, TEST_API_KEY)])

    assert code == 0
    assert "RUNWARE_API_KEY" not in os.environ  # only ray.init saw it, then it was taken out
    assert [image_size(out / f"p{i}.jpg") for i in range(6)] == [(14, 10)] * 6
    assert image_size(out / "sub" / "q.jpg") == (6, 6)
    summary = summary_of(out)
    assert (summary["engine"], summary["succeeded"], summary["failed"]) == ("ray", 7, 0)
    assert {line["taskUUID"] for line in manifest_lines(out)} == set(
        upscale_server.server.executions
    )
    assert part_files(out) == []


async def test_a_job_started_on_the_local_engine_and_rerun_on_ray_runs_nothing_twice(
    ray_session: Any, upscale_server: LocalServer, tmp_path: Path
) -> None:
    server = upscale_server.server
    source, out = tmp_path / "in", tmp_path / "out"
    for i in range(4):
        write_image(source / f"p{i}.png", (5, 5), colour=i * 20)
    argv = ["run", str(source), "--out", str(out), *server_args(upscale_server, TEST_API_KEY)]
    assert await run_cli(argv) == 0
    (out / ".upscale-stream" / "manifest.jsonl").unlink()  # as if killed before recording

    await run_cli([*argv, "--engine", "ray"])

    assert server.counts.received_total == 8  # the same taskUUIDs went out again
    assert sorted(server.executions.values()) == [1, 1, 1, 1]  # and nothing ran twice
