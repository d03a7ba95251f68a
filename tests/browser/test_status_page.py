"""The status page (``GET /status``) in headless Chromium, opened during a real CLI run."""

from __future__ import annotations

import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import orjson
import pytest

from upscale_stream.cli.demo import Sample, _picture

# The first test may install Debian's chromium (apt-get): minutes, not the usual 120 s.
pytestmark = pytest.mark.timeout(900)

IMAGES = 24
# The embedded server's every task takes this long, so the run lasts several seconds at a
# window of 2: long enough to open the page while it runs, whatever the machine's load.
TASK_DELAY = 0.6

# Read every figure the page shows and the document it drew them from, in one evaluation.
READ_PAGE = """() => {
  const figures = {};
  for (const el of document.querySelectorAll('[data-figure]')) {
    figures[el.dataset.figure] = el.textContent;
  }
  const keys = [...document.querySelectorAll('#keys tr')].map(
    (tr) => [...tr.children].map((td) => td.textContent));
  const thumbs = [...document.querySelectorAll('#outputs img')].map(
    (img) => [img.getAttribute('src'), img.naturalWidth]);
  return {figures, keys, thumbs, doc: window.lastStatus,
          bars: Number(document.querySelector('#chart').dataset.total)};
}"""


def _pick(doc: dict, path: str) -> object:
    for part in path.split("."):
        doc = doc[part]
    return doc


def _start_run(tmp_path: Path) -> subprocess.Popen[str]:
    source = tmp_path / "in"
    source.mkdir()
    for i in range(IMAGES):
        _picture(Sample(f"{i}.png", (40 + i, 30), "RGB", "PNG"), i).save(source / f"{i}.png")
    command = [
        sys.executable, "-m", "upscale_stream.cli", "run", str(source),
        "--out", str(tmp_path / "out"), "--embedded", "--verbose", "--concurrency", "2",
        "--server-task-delay", str(TASK_DELAY), "--progress-interval", "1",
    ]  # fmt: skip
    return subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
        text=True,
    )  # fmt: skip


def _status_url(process: subprocess.Popen[str]) -> str:
    assert process.stderr is not None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = process.stderr.readline()
        if not line:
            break
        if match := re.search(r"status page: (http://127\.0\.0\.1:\d+/status)", line):
            return match[1]
    raise AssertionError("run --verbose printed no status page URL")


def test_the_status_page_shows_the_figures_of_status_json_during_a_run(browser, tmp_path):
    process = _start_run(tmp_path)
    try:
        url = _status_url(process)
        page = browser.new_page()
        page.goto(url + "?every=0.5")
        # Live: it refreshes itself; wait for a few refreshes and some finished tasks.
        # Read the page in the same evaluation that sees its thumbnails loaded: an image
        # loads after the DOM update that adds it (slower on a loaded machine), and the
        # next refresh may add another.
        shown = page.wait_for_function(
            "() => Number(document.body.dataset.updates) >= 3 &&"
            " window.lastStatus.tasks.succeeded >= 3 && window.lastStatus.latest_outputs.length"
            " && [...document.querySelectorAll('#outputs img')].every("
            " (img) => img.complete && img.naturalWidth > 0)"
            f" && ({READ_PAGE})()"
        ).json_value()
        with urllib.request.urlopen(url + ".json", timeout=10) as response:
            fetched = orjson.loads(response.read())
        shot = tmp_path / "status.png"
        page.screenshot(path=str(shot), full_page=True)
        print(f"status page screenshot: {shot}")
    finally:
        out, err = process.communicate(timeout=120)
    assert process.returncode == 0, out + err

    doc = shown["doc"]
    # Every figure on the page is the one of the document it last fetched...
    for path, text in shown["figures"].items():
        assert text == str(_pick(doc, path)), path
    assert shown["bars"] == sum(doc["throughput"]["counts"])
    assert [row[0] for row in shown["keys"]] == [k["fingerprint"] for k in doc["keys"]]
    assert [src for src, _ in shown["thumbs"]] == [o["url"] for o in doc["latest_outputs"]]
    assert all(width > 0 for _, width in shown["thumbs"])  # the thumbnails really loaded
    # ...and that document is /status.json: the same server, a moment earlier.
    assert doc["connections"] == fetched["connections"] == {"open": 1, "authenticated": 1}
    assert [k["fingerprint"] for k in doc["keys"]] == [k["fingerprint"] for k in fetched["keys"]]
    assert 3 <= doc["tasks"]["succeeded"] <= fetched["tasks"]["succeeded"] <= IMAGES
    assert doc["tasks"]["in_flight"] <= 2
    assert doc["results_shown"] is True
    assert "embedded-" not in str(doc)  # the run's key never shows, only its fingerprint
