"""The playground (``GET /``) in headless Chromium: the seed's Upscale panel, end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from upscale_stream.cli.demo import Sample, _picture
from upscale_stream.models import CCSR
from upscale_stream.testing import TEST_API_KEY

# The first test may install Debian's chromium (apt-get): minutes, not the usual 120 s.
pytestmark = pytest.mark.timeout(900)

SIZES = {"sunset.png": (96, 64), "tile.jpg": (48, 48), "portrait.webp": (60, 90)}
FORMATS = {".png": "PNG", ".jpg": "JPEG", ".webp": "WEBP"}


def _images(folder: Path) -> list[Path]:
    paths = []
    for name, size in SIZES.items():
        path = folder / name
        _picture(Sample(name, size, "RGB", FORMATS[path.suffix]), len(paths)).save(
            path, FORMATS[path.suffix]
        )
        paths.append(path)
    return paths


def _http(ws_url: str) -> str:
    return ws_url.replace("ws://", "http://").removesuffix("/v1")


def _done(page, count: int) -> None:
    page.wait_for_function(
        "n => document.querySelectorAll('.row[data-state=done]').length === n", arg=count
    )


def test_the_playground_upscales_three_images_in_one_message_and_downloads_them(
    browser, upscale_server_url, tmp_path
):
    page = browser.new_page()
    sent: list[str] = []
    page.on("websocket", lambda ws: ws.on("framesent", lambda frame: sent.append(frame)))
    page.goto(_http(upscale_server_url) + "/")
    page.fill("#api-key", TEST_API_KEY)
    page.set_input_files("#files", [str(p) for p in _images(tmp_path)])
    page.select_option("#factor", "2")
    page.select_option("#format", "PNG")
    page.click("#upscale")
    _done(page, 3)

    for name, (width, height) in SIZES.items():
        row = page.locator(f".row[data-name='{name}']")
        assert row.get_attribute("data-width") == str(width * 2)
        assert row.get_attribute("data-height") == str(height * 2)
        assert f"result {width * 2}\u00d7{height * 2}" in row.inner_text()
        assert row.locator(".timing").inner_text().endswith(" ms")
    # The wire: one authentication frame, then all three images in ONE message array.
    frames = [json.loads(frame if isinstance(frame, str) else frame.decode()) for frame in sent]
    upscales = [f for f in frames if f and f[0].get("taskType") == "upscale"]
    assert frames[0][0]["taskType"] == "authentication"
    assert len(upscales) == 1 and len(upscales[0]) == 3
    assert len({task["taskUUID"] for task in upscales[0]}) == 3

    downloads = []
    page.on("download", lambda download: downloads.append(download))
    page.click("#download-all")
    while len(downloads) < 3:
        page.wait_for_event("download")
    saved = []
    for download in downloads:
        target = tmp_path / "downloads" / download.suggested_filename
        target.parent.mkdir(exist_ok=True)
        download.save_as(target)
        saved.append(target)
    assert sorted(p.name for p in saved) == ["portrait@x2.png", "sunset@x2.png", "tile@x2.png"]
    for path in saved:
        with Image.open(path) as image:
            source = SIZES[next(n for n in SIZES if n.startswith(path.name.split("@")[0]))]
            assert image.format == "PNG" and image.size == (source[0] * 2, source[1] * 2)

    # A bad choice: CCSR at x4. The page says the client's rule, sends it anyway, and the
    # server's error shows on that image only.
    extra = tmp_path / "extra.png"
    Image.new("RGB", (12, 12), "orange").save(extra)
    page.set_input_files("#files", [str(extra)])
    page.select_option("#model", CCSR)
    page.select_option("#factor", "4")
    assert "only SwinIR (runware:503@1) supports 4" in page.inner_text("#rule")
    page.click("#upscale")
    bad = page.locator(".row[data-name='extra.png']")
    page.wait_for_function(
        "() => document.querySelector(\".row[data-name='extra.png']\").dataset.state === 'error'"
    )
    assert "invalidUpscaleFactor" in bad.locator(".status").inner_text()
    assert page.locator(".row[data-state=done]").count() == 3  # the others are untouched
    assert len([f for f in map(json.loads, sent[-1:]) if f[0]["taskType"] == "upscale"]) == 1

    shot = tmp_path / "playground.png"
    page.screenshot(path=str(shot), full_page=True)
    print(f"playground screenshot: {shot}")
    assert shot.stat().st_size > 10_000


def test_remove_all_and_cancel_leave_a_clean_page_and_the_key_is_never_stored(
    browser, upscale_server_url, tmp_path
):
    page = browser.new_page()
    page.goto(_http(upscale_server_url) + "/")
    page.fill("#api-key", TEST_API_KEY)
    page.set_input_files("#files", [str(p) for p in _images(tmp_path)])
    page.wait_for_function("() => document.querySelectorAll('.row[data-state=ready]').length === 3")
    page.click("#cancel")
    page.click("#remove-all")
    assert page.locator(".row").count() == 0
    stored = page.evaluate(
        "() => JSON.stringify([Object.entries(localStorage), Object.entries(sessionStorage),"
        " document.cookie])"
    )
    assert TEST_API_KEY not in stored
    page.click("#upscale")
    assert "add images first" in page.inner_text("#state")


def test_a_wrong_key_is_reported_and_nothing_is_sent(browser, upscale_server_url, tmp_path):
    page = browser.new_page()
    page.goto(_http(upscale_server_url) + "/")
    page.fill("#api-key", "not-the-key")
    page.set_input_files("#files", [str(_images(tmp_path)[0])])
    page.wait_for_function("() => document.querySelector('.row').dataset.state === 'ready'")
    page.click("#upscale")
    page.wait_for_function(
        "() => document.querySelector('#state').textContent.includes('invalidApiKey')"
    )
    assert page.locator(".row").get_attribute("data-state") == "ready"


def test_images_dropped_on_the_drop_zone_are_added_and_idle_sockets_are_pinged(
    browser, upscale_server_url, tmp_path
):
    page = browser.new_page()
    page.goto(_http(upscale_server_url) + "/?ping=0.5")  # ping after 0.5 s of silence
    page.fill("#api-key", TEST_API_KEY)
    # What a drag from the file manager delivers: a drop event whose DataTransfer holds files.
    page.evaluate(
        """async () => {
          const canvas = document.createElement('canvas');
          canvas.width = 20; canvas.height = 10;
          const blob = await new Promise((done) => canvas.toBlob(done, 'image/png'));
          const transfer = new DataTransfer();
          transfer.items.add(new File([blob], 'dropped.png', {type: 'image/png'}));
          transfer.items.add(new File(['not an image'], 'notes.txt', {type: 'text/plain'}));
          const zone = document.querySelector('#drop');
          zone.dispatchEvent(new DragEvent('drop', {dataTransfer: transfer, bubbles: true}));
        }"""
    )
    page.wait_for_function("() => document.querySelector('.row')?.dataset.state === 'ready'")
    assert page.locator(".row").count() == 1  # the text file is refused, and said so
    assert "1 file(s) skipped" in page.inner_text("#state")
    with page.expect_websocket() as opened:
        page.click("#upscale")
    socket = opened.value
    _done(page, 1)
    assert page.locator(".row").get_attribute("data-width") == "40"
    # Idle now: pings go out every 0.5 s of silence (each pong moves the deadline again).
    ping = socket.wait_for_event("framesent", predicate=lambda frame: '"ping"' in str(frame))
    assert json.loads(ping if isinstance(ping, str) else ping.decode()) == [
        {"taskType": "ping", "ping": True}
    ]
