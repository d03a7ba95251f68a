"""Headless Chromium for the page tests: Debian's ``chromium``, driven by Playwright for Python.

No browser is ever downloaded: Playwright launches ``/usr/bin/chromium`` through
``executable_path``. When it is missing, the setup installs Debian's package with apt-get (as
root); where that cannot be done the tests are skipped with the reason printed. Each test gets
a fresh profile under its tmp dir and a browser that talks to nothing but the loopback server.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
_reason: list[str] = []


def _install_chromium() -> str | None:
    """Install Debian's chromium when it is missing; returns why not, or ``None``."""
    if CHROMIUM.exists():
        return None
    if shutil.which("apt-get") is None:
        return "no /usr/bin/chromium and no apt-get to install Debian's chromium package"
    if os.geteuid() != 0:
        return "no /usr/bin/chromium, and installing Debian's chromium package needs root"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (["apt-get", "update", "-q"], ["apt-get", "install", "-y", "-q", "chromium"]):
        done = subprocess.run(
            command, env=env, capture_output=True, text=True, timeout=900, stdin=subprocess.DEVNULL
        )
        if done.returncode != 0:
            return f"{' '.join(command)} failed: {done.stderr.strip()[-300:]}"
    return None if CHROMIUM.exists() else "apt-get installed chromium, but not at /usr/bin"


@pytest.fixture(scope="module")
def playwright_driver() -> Iterator[object]:
    """Playwright, once Chromium is there (skips with the reason otherwise).

    Module-scoped, not session-scoped: the sync API runs an event loop in this thread while it
    lives, and the async tests that come after this folder need the thread free again.
    """
    if not _reason:
        _reason.append(_install_chromium() or "")
    if _reason[0]:
        print(f"browser tests skipped: {_reason[0]}")
        pytest.skip(_reason[0])
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        yield playwright


@pytest.fixture
def browser(playwright_driver, tmp_path: Path) -> Iterator[object]:
    """A Chromium context with a fresh profile (``--user-data-dir`` under the tmp dir)."""
    context = playwright_driver.chromium.launch_persistent_context(
        str(tmp_path / "profile"),
        executable_path=str(CHROMIUM),
        headless=True,
        args=FLAGS,
        accept_downloads=True,
        viewport={"width": 1100, "height": 900},
    )
    context.set_default_timeout(30_000)
    try:
        yield context
    finally:
        context.close()
