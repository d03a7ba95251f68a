"""What both SDK drivers share: the loopback-only network guard, input encoding, bounded steps.

The drivers run as scripts inside the SDK virtual environments, so this module sits next to them
and is imported by name (a script's own folder is on ``sys.path``).
"""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import json
import sys
import time
from collections.abc import Awaitable, Callable
from importlib import metadata
from pathlib import Path
from typing import Any

__all__ = [
    "StepTimeout",
    "bounded",
    "describe_error",
    "encoded_image",
    "guard_network",
    "run_and_report",
]

_LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain"})


def is_loopback(host: object) -> bool:
    """Whether a socket address host (str, bytes or None) stays on this machine."""
    if host is None:
        return True
    text = host.decode() if isinstance(host, bytes) else str(host)
    if text.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(text.split("%", 1)[0]).is_loopback
    except ValueError:
        return False


def guard_network(blocked: list[str]) -> None:
    """Refuse every connection and DNS lookup that leaves the machine; record the attempt."""

    def hook(event: str, args: tuple[Any, ...]) -> None:
        if event == "socket.connect":
            address = args[1]
            host = address[0] if isinstance(address, tuple) else None
        elif event == "socket.getaddrinfo":
            host = args[0]
        else:
            return
        if not is_loopback(host):
            blocked.append(f"{event} {host!r}")
            raise PermissionError(f"network access outside loopback is blocked: {host!r}")

    sys.addaudithook(hook)


def encoded_image(path: Path, form: str) -> str:
    """The image file as bare base64 (``form == "base64"``) or as a data URI."""
    encoded = base64.b64encode(path.read_bytes()).decode("ascii")
    if form == "base64":
        return encoded
    mime = {".png": "image/png", ".jpg": "image/jpeg", ".webp": "image/webp"}[path.suffix]
    return f"data:{mime};base64,{encoded}"


def describe_error(exc: BaseException, step: str) -> dict[str, Any]:
    """The JSON form of an exception raised by a step."""
    code = getattr(exc, "code", None)
    error_data = getattr(exc, "error_data", None)  # runware's RunwareAPIError keeps the item here
    if code is None and isinstance(error_data, dict):
        code = error_data.get("code")
    return {
        "type": type(exc).__name__,
        "message": str(exc)[:500],
        "code": None if code is None else str(code),
        "parameter": getattr(exc, "parameter", None),
        "task_uuid": getattr(exc, "task_uuid", None),
        "step": step,
    }


class StepTimeout(Exception):
    """A step of the scenario did not finish in time: the SDK hung."""


async def bounded(step: str, awaitable: Any, timeout: float) -> Any:
    """Await ``awaitable``; raise :class:`StepTimeout` if it takes longer than ``timeout``."""
    deadline = asyncio.timeout(timeout)
    try:
        async with deadline:
            return await awaitable
    except TimeoutError:
        if deadline.expired():
            raise StepTimeout(f"{step} did not finish within {timeout:g} s") from None
        raise  # the SDK's own timeout error: report it as such


def run_and_report(
    sdk: str, scenario: Callable[[Any, dict[str, Any]], Awaitable[None]], args: Any
) -> int:
    """Run ``scenario`` with the network guarded, then print the one-line JSON report."""
    report: dict[str, Any] = {
        "sdk": sdk,
        "version": metadata.version(sdk),
        "connected": False,
        "session_id": None,
        "results": [],
        "error": None,
        "blocked": [],
    }
    guard_network(report["blocked"])
    started = time.perf_counter()
    asyncio.run(scenario(args, report))
    report["elapsed_s"] = round(time.perf_counter() - started, 3)
    print(json.dumps(report), flush=True)
    return 0
