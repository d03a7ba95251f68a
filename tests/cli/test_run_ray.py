"""``upscale-stream run --engine ray`` as a user runs it: a fresh process, no cluster set up.

The CLI starts Ray itself (loopback only, every core) and the embedded server, puts the
embedded key in its environment before ``ray.init()`` so the actors inherit it, and stops
Ray at the end. A separate process: the session's own Ray (tests/integrations) is not used.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from .helpers import image_size, summary_of, write_image


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.timeout(240)
def test_engine_ray_works_on_one_machine_with_no_cluster_set_up(tmp_path: Path) -> None:
    for i in range(3):
        write_image(tmp_path / "in" / f"a{i}.png", (9, 7), colour=i * 30)
    out = tmp_path / "out"

    command = [sys.executable, "-m", "upscale_stream.cli", "run", str(tmp_path / "in")]
    command += ["--out", str(out), "--engine", "ray", "--quiet"]
    finished = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=200,
        stdin=subprocess.DEVNULL,
    )

    assert finished.returncode == 0, finished.stderr[-3000:]
    assert [image_size(out / f"a{i}.jpg") for i in range(3)] == [(18, 14)] * 3
    summary = summary_of(out)
    assert (summary["engine"], summary["server"], summary["succeeded"]) == ("ray", "embedded", 3)
    assert "embedded-" not in finished.stdout + finished.stderr  # the embedded key is secret
