"""Shared fixtures: a clean environment for every test."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(autouse=True)
def _clean_runware_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test may pick up a real key or URL from the developer's shell."""
    for name in list(os.environ):
        if name.startswith("RUNWARE_"):
            monkeypatch.delenv(name)
