"""Issue 12, first hour: after ``make demo`` or ``make test`` the README's ``upscale-stream``
lines must work as typed.

A newcomer who followed the README (``make demo``, then ``upscale-stream run photos/ ...``)
got ``bash: upscale-stream: command not found``: the command lives in ``.venv/bin`` and the
README never said so. The README now gives the line that puts it on ``PATH``; this test runs
that line, as written, in a shell whose ``PATH`` does not hold the venv.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TEXT = (ROOT / "README.md").read_text(encoding="utf-8")
BLOCKS = re.findall(r"^```(\w*)\n(.*?)^```$", TEXT, re.M | re.S)
ACTIVATE = re.compile(r"^(?:\.|source) \.venv/bin/activate\b.*$", re.M)


def _activate_line() -> str:
    for _, code in BLOCKS:
        if match := ACTIVATE.search(code):
            return match.group(0).split("#", 1)[0].strip()
    pytest.fail("README.md never says how to put upscale-stream on PATH (. .venv/bin/activate)")


def test_the_readme_says_how_to_get_the_command_before_it_first_uses_it() -> None:
    line = _activate_line()
    first_use = re.search(r"^upscale-stream ", TEXT, re.M)
    assert first_use is not None
    assert TEXT.index(line) < first_use.start(), "the PATH line comes after the first command"


def test_the_readme_activate_line_puts_upscale_stream_on_a_bare_path() -> None:
    line = _activate_line()
    venv = ROOT / ".venv"
    assert (venv / "bin" / "upscale-stream").exists(), f"{venv}: run make venv first"
    bash = shutil.which("bash")
    assert bash is not None
    bare = {"PATH": "/usr/bin:/bin", "HOME": str(ROOT)}  # no venv on it, as in a new shell
    assert (
        subprocess.run(
            [bash, "-c", "command -v upscale-stream"], cwd=ROOT, env=bare, capture_output=True
        ).returncode
        != 0
    ), "upscale-stream is on the bare PATH already: the test would prove nothing"

    result = subprocess.run(
        [bash, "-c", f"{line} && upscale-stream --help"],
        cwd=ROOT,
        env=bare,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: upscale-stream"), result.stdout
