"""README.md's ``upscale-stream serve`` lines run, as written, on the port they name.

Each ``upscale-stream serve ... --port N ...`` line of README.md's plain code blocks starts the
venv's ``upscale-stream`` as a subprocess, exactly as written (parsed out of README.md, so
this test breaks when the README changes). The test waits for ``GET /health`` on
127.0.0.1:N (bounded), checks that the process listens on loopback only (its own sockets,
read from ``/proc``), runs a real upscale through it with the library, then presses Ctrl-C
and expects a clean exit. A busy port fails with a message that says so; it never skips.
"""

from __future__ import annotations

import argparse
import io
import ipaddress
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from PIL import Image

from upscale_stream import Client
from upscale_stream.cli.serve import add_arguments, server_config_from_args
from upscale_stream.server import ServerConfig

README = Path(__file__).resolve().parents[1] / "README.md"
TEXT = README.read_text(encoding="utf-8")
BLOCKS = re.findall(r"^```(\w*)\n(.*?)^```$", TEXT, re.M | re.S)
CLI = Path(sys.executable).with_name("upscale-stream")
WAIT = 30.0
"""Longest wait for the server to be ready, the port to be free, or the process to end."""
LISTEN = "0A"
"""The TCP state LISTEN in /proc/net/tcp."""


def serve_lines() -> list[str]:
    """The ``upscale-stream serve`` commands of README.md's plain code blocks, comments cut."""
    lines = []
    for lang, code in BLOCKS:
        for line in code.splitlines():
            command = line.split("#", 1)[0].strip()
            if lang == "" and command.startswith("upscale-stream serve "):
                lines.append(command)
    return lines


def test_the_readme_shows_serve_with_accept_any_key_on_port_8765() -> None:
    assert "upscale-stream serve --port 8765 --accept-any-key" in serve_lines()


def _port_of(argv: list[str]) -> int:
    assert "--port" in argv, f"{shlex.join(argv)}: the test needs the line to name its port"
    return int(argv[argv.index("--port") + 1])


def _wait_until_free(port: int) -> None:
    """Wait (bounded) until 127.0.0.1:port can be bound; fail clearly if it stays busy."""
    deadline = time.monotonic() + WAIT
    while True:
        with socket.socket() as probe:
            # As asyncio's server does: a port whose last connections sit in TIME_WAIT is free.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(("127.0.0.1", port))
                return
            except OSError as exc:
                if time.monotonic() > deadline:
                    pytest.fail(
                        f"port {port} on 127.0.0.1 has been busy for {WAIT:.0f} s ({exc}): "
                        "README's serve line cannot be run as written; stop what holds the "
                        f"port (`ss -ltnp 'sport = :{port}'`) and run this test again"
                    )
        time.sleep(0.2)  # bounded poll of a port someone else holds; no event to wait on


def _wait_for_health(process: subprocess.Popen[str], port: int) -> None:
    """Poll ``GET /health`` until it answers ``ok`` (bounded), or the process ends."""
    deadline = time.monotonic() + WAIT
    while True:
        if process.poll() is not None:
            out, err = process.communicate()
            pytest.fail(
                f"serve exited with {process.returncode} before it was ready:\n{out}\n{err}"
            )
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as answer:
                if answer.read() == b"ok\n":
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        if time.monotonic() > deadline:
            process.kill()
            out, err = process.communicate()
            pytest.fail(f"serve was not ready on port {port} after {WAIT:.0f} s:\n{out}\n{err}")
        time.sleep(0.05)  # bounded readiness poll, as the brief asks: no fixed sleep


def _listening_addresses(pid: int) -> set[tuple[str, int]]:
    """The (address, port) of every TCP socket process ``pid`` listens on, from /proc."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    found = set()
    for table, size in (("tcp", 4), ("tcp6", 16)):
        path = Path(f"/proc/{pid}/net/{table}")
        if not path.exists():
            continue
        for row in path.read_text().splitlines()[1:]:
            fields = row.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state != LISTEN or inode not in inodes:
                continue
            address_hex, port_hex = local.split(":")
            raw = bytes.fromhex(address_hex)
            # The kernel prints each 32-bit word in host (little-endian) order.
            ordered = b"".join(raw[i : i + 4][::-1] for i in range(0, size, 4))
            found.add((str(ipaddress.ip_address(ordered)), int(port_hex, 16)))
    return found


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _upscale_through(port: int, api_key: str) -> tuple[int, int]:
    picture = io.BytesIO()
    Image.new("RGB", (12, 10), "teal").save(picture, "PNG")
    with Client(api_key=api_key, url=f"ws://127.0.0.1:{port}/v1") as client:
        result = client.upscale(picture.getvalue(), factor=2)
        with Image.open(io.BytesIO(result.read_bytes())) as image:
            return image.size


def test_serve_binds_loopback_unless_told_otherwise() -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    config, _ = server_config_from_args(parser.parse_args(["--accept-any-key"]), {})
    assert config.host == "127.0.0.1"
    assert ServerConfig(accept_any_key=True).host == "127.0.0.1"


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("line", serve_lines())
def test_the_readme_serve_line_serves_on_loopback_upscales_and_stops_cleanly_on_ctrl_c(
    line: str, tmp_path: Path
) -> None:
    argv = shlex.split(line)
    port = _port_of(argv)
    api_key = argv[argv.index("--api-key") + 1] if "--api-key" in argv else "any-key-at-all"
    assert CLI.exists(), f"{CLI}: run the tests with the venv's python (make test)"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RUNWARE_", "UPSCALE_"))}
    _wait_until_free(port)

    process = subprocess.Popen(
        [str(CLI), *argv[1:]],
        cwd=tmp_path,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # Ctrl-C as on a terminal: a shell's background job (make test under nohup, CI)
        # would pass SIGINT on as ignored, and the server would never see it.
        preexec_fn=_default_sigint,
    )
    try:
        _wait_for_health(process, port)
        listening = _listening_addresses(process.pid)
        size = _upscale_through(port, api_key)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)  # Ctrl-C, as the server's banner says
        try:
            out, err = process.communicate(timeout=WAIT)
        except subprocess.TimeoutExpired:
            process.kill()
            out, err = process.communicate()
            pytest.fail(f"serve did not stop within {WAIT:.0f} s of Ctrl-C:\n{out}\n{err}")

    assert listening == {("127.0.0.1", port)}, f"{line!r} listens on {listening}"
    assert size == (24, 20)
    assert process.returncode == 0, f"exit {process.returncode}:\n{out}\n{err}"
    assert "Traceback" not in err, err
    assert f"serving ws://127.0.0.1:{port}/v1" in out
    assert "press Ctrl-C to stop" in out
    if "--accept-any-key" in argv:
        assert "WARNING: --accept-any-key: EVERY API key is accepted" in err
