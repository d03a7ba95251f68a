"""Fixtures for the engine tests: the process-wide neural engine (the sr extra is required)."""

from __future__ import annotations

import pytest

from upscale_stream.server.engines import Engine, get_engine


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: a test of several seconds (still run by make test)")


@pytest.fixture(scope="session")
def neural() -> Engine:
    """The neural engine; ``make test`` installs the sr extra, so this never skips."""
    return get_engine("neural")
