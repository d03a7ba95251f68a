"""Every example of README.md runs, as written.

Python blocks that define tests run under pytest in a subprocess with a bare configuration (an
empty pytest.ini, so none of ours), in pytest-asyncio's strict mode (its default) and in auto
mode. The other Python blocks run as scripts against a local server, given through
``RUNWARE_API_KEY`` and ``RUNWARE_URL`` as a user would, in a folder holding the files they
name; every image they write must be in the format its file name says. The shell lines run the
CLI (``serve`` excepted: it runs until Ctrl-C on a fixed port; tests/test_readme_serve.py runs
those lines as written).
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from upscale_stream.testing import TEST_API_KEY

README = Path(__file__).resolve().parents[1] / "README.md"
TEXT = README.read_text(encoding="utf-8")
BLOCKS = re.findall(r"^```(\w*)\n(.*?)^```$", TEXT, re.M | re.S)
PYTHON = [code for lang, code in BLOCKS if lang == "python"]
TESTS = [code for code in PYTHON if re.search(r"^(async )?def test_", code, re.M)]
SCRIPTS = [code for code in PYTHON if code not in TESTS]
SUFFIX_FORMAT = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".webp": "WEBP"}
TIMEOUT = 120
PYTEST = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RUNWARE_", "PYTEST_"))}
    env.update(extra)
    return env


def _workdir(tmp_path: Path) -> Path:
    """A folder with the files the examples name: photo.jpg and photos/*.jpg."""
    (tmp_path / "photos").mkdir()
    for i, size in enumerate([(20, 16), (31, 17), (8, 8)]):
        Image.new("RGB", size, (40 * i, 90, 200)).save(tmp_path / "photos" / f"p{i}.jpg")
    Image.new("RGB", (24, 18), "orange").save(tmp_path / "photo.jpg")
    (tmp_path / "upscaled").mkdir()
    return tmp_path


def _check_formats(folder: Path) -> list[Path]:
    written = [
        p
        for p in folder.rglob("*")
        if p.suffix in SUFFIX_FORMAT and p.parent.name != "photos" and p.name != "photo.jpg"
    ]
    for path in written:
        with Image.open(path) as image:
            assert image.format == SUFFIX_FORMAT[path.suffix], f"{path.name} holds {image.format}"
    return written


def test_the_readme_has_examples_of_each_kind():
    assert len(TESTS) >= 2 and len(SCRIPTS) >= 3


@pytest.mark.parametrize("mode", ["strict", "auto"])
@pytest.mark.parametrize("index", range(len(TESTS)))
def test_the_readme_test_examples_pass_under_a_bare_pytest_config(tmp_path, index, mode):
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    (tmp_path / "test_example.py").write_text(TESTS[index])
    result = subprocess.run(
        [*PYTEST, "-o", f"asyncio_mode={mode}", "test_example.py"],
        cwd=tmp_path,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed" in result.stdout


@pytest.mark.parametrize("index", range(len(SCRIPTS)))
def test_the_readme_scripts_run_against_a_local_server(tmp_path, upscale_server_url, index):
    folder = _workdir(tmp_path)
    (folder / "example.py").write_text(SCRIPTS[index])
    result = subprocess.run(
        [sys.executable, "example.py"],
        cwd=folder,
        env=_env(RUNWARE_API_KEY=TEST_API_KEY, RUNWARE_URL=upscale_server_url),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert _check_formats(folder), "the example wrote no image"


def test_the_readme_validation_example_prints_what_it_says():
    from upscale_stream import UpscaleTask
    from upscale_stream.models import CCSR

    [(call, shown)] = re.findall(r"^>>> (.+)\n(.+)$", TEXT, re.M)
    namespace = {
        "UpscaleTask": UpscaleTask,
        "CCSR": CCSR,
        "uuid": "a" * 8 + "-0000-4000-8000-" + "0" * 12,
    }
    with pytest.raises(Exception) as caught:
        eval(call, namespace)
    assert f"{type(caught.value).__name__}: {caught.value}" == shown


def _shell_lines() -> list[str]:
    lines = []
    for lang, code in BLOCKS:
        for line in code.splitlines():
            command = line.split("#", 1)[0].strip()
            if lang == "" and command.startswith("upscale-stream ") and " serve" not in command:
                lines.append(command)
    return lines


@pytest.mark.parametrize("command", _shell_lines())
def test_the_readme_shell_lines_run(tmp_path, command):
    folder = _workdir(tmp_path)
    argv = shlex.split(command)
    result = subprocess.run(
        [sys.executable, "-m", "upscale_stream.cli", *argv[1:]],
        cwd=folder,
        env=_env(),  # no key and no URL: the embedded server, as the README says
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    if argv[1] == "run":
        assert len(_check_formats(folder)) == 3
