"""``upscale-stream serve``: flags for every server setting, keys, and a real served run."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import re
import signal
import sys
from pathlib import Path

import pytest

from upscale_stream.cli import main
from upscale_stream.cli.errors import UsageError
from upscale_stream.cli.serve import (
    ENV_SERVER_KEYS,
    FLAG_OF_FIELD,
    add_arguments,
    parse_size,
    server_config_from_args,
)
from upscale_stream.server import ServerConfig

from .helpers import image_size, run_cli, write_image


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(list(argv))


def test_every_server_setting_but_the_clock_has_a_flag() -> None:
    fields = {spec.name for spec in dataclasses.fields(ServerConfig)}
    assert set(FLAG_OF_FIELD) == fields - {"clock"}


def test_the_help_shows_every_flag_with_the_servers_own_default(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["serve", "--help"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    for flag in FLAG_OF_FIELD.values():
        assert flag in out, flag
    for text in (
        "--port PORT TCP port; 0 picks a free one. Default: 8765.",
        "--max-size SIZE",
        "Default: 64MiB.",
        "Default: 120.",
        "--log-level {debug,info,warning,error}",
        "--json-logs",
        ENV_SERVER_KEYS,
    ):
        assert text in out, text


def test_without_flags_the_config_is_the_servers_default_with_a_generated_key() -> None:
    config, generated = server_config_from_args(parse(), {})
    assert generated is not None and config.api_keys == frozenset({generated})
    reference = ServerConfig(api_keys=frozenset({generated}))
    assert config == reference


def test_flags_set_their_fields() -> None:
    config, generated = server_config_from_args(
        parse(
            "--host", "0.0.0.0", "--port", "0", "--api-key", "k1", "--api-key", "k2",
            "--hold-time", "5", "--retention", "30", "--idle-timeout", "9",
            "--max-size", "2MiB", "--task-delay", "0.25", "--workers", "2",
            "--allow-private-urls", "--compression", "--max-frame-bytes", "900KiB",
            "--image-store-bytes", "1GB", "--public-url", "https://img.example",
        ),
        {},
    )  # fmt: skip
    assert generated is None
    assert config.api_keys == frozenset({"k1", "k2"})
    assert (config.host, config.port, config.hold_time, config.retention) == ("0.0.0.0", 0, 5, 30)
    assert (config.idle_timeout, config.max_size, config.task_delay) == (9, 2 * 1024**2, 0.25)
    assert (config.workers, config.allow_private_urls, config.compression) == (2, True, True)
    assert (config.max_frame_bytes, config.image_store_bytes) == (900 * 1024, 10**9)
    assert config.public_url == "https://img.example"


def test_keys_come_from_the_environment_when_no_flag_gives_one() -> None:
    config, generated = server_config_from_args(parse(), {ENV_SERVER_KEYS: "a-key, b-key,"})
    assert generated is None and config.api_keys == frozenset({"a-key", "b-key"})
    config, _ = server_config_from_args(parse("--api-key", "c"), {ENV_SERVER_KEYS: "a-key"})
    assert config.api_keys == frozenset({"c"})


def test_accept_any_key_needs_no_key() -> None:
    config, generated = server_config_from_args(parse("--accept-any-key"), {})
    assert config.accept_any_key and generated is None and not config.api_keys


def test_a_value_the_server_refuses_is_a_usage_error_naming_the_flag() -> None:
    with pytest.raises(UsageError, match=r"^--workers: workers must be at least 1"):
        server_config_from_args(parse("--workers", "0"), {})


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("1048576", 1048576),
        ("900KiB", 921600),
        ("64MiB", 64 * 1024**2),
        ("1gb", 10**9),
        ("2 MB", 2 * 10**6),
    ],
)
def test_sizes_take_binary_and_decimal_units(text: str, size: int) -> None:
    assert parse_size(text) == size


def test_a_bad_size_says_what_a_size_looks_like(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--max-fetch-bytes", "lots"]) == 2
    assert "error: --max-fetch-bytes: expected a size such as 900KiB" in capsys.readouterr().err


async def _serve(*argv: str) -> tuple[asyncio.subprocess.Process, str, str]:
    """Start ``upscale-stream serve`` and read its URL from the first lines of its output."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "upscale_stream.cli", "serve", "--port", "0", *argv,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert process.stdout is not None
    lines: list[str] = []
    async with asyncio.timeout(30):
        while not lines or "Ctrl-C" not in lines[-1]:
            line = (await process.stdout.readline()).decode()
            assert line, "serve ended before it was ready"
            lines.append(line)
    url = re.search(r"serving (ws://\S+)", lines[0])
    assert url is not None
    return process, url.group(1), "".join(lines)


async def test_serve_runs_a_server_the_cli_can_use_and_stops_cleanly_on_ctrl_c(
    tmp_path: Path,
) -> None:
    process, url, banner = await _serve("--api-key", "serve-test-key-1")
    assert "generated" not in banner
    http = url.replace("ws://", "http://").removesuffix("/v1")
    assert f"playground: {http}/  status: {http}/status" in banner
    write_image(tmp_path / "a.png", (7, 5))
    out = tmp_path / "out"

    argv = [
        "run",
        str(tmp_path / "a.png"),
        "--out",
        str(out),
        "--url",
        url,
        "--api-key",
        "serve-test-key-1",
    ]
    code = await run_cli(argv)
    process.send_signal(signal.SIGINT)
    async with asyncio.timeout(30):
        await process.communicate()

    assert code == 0
    assert image_size(out / "a.jpg") == (14, 10)
    assert process.returncode == 0


async def test_serve_without_keys_prints_a_generated_one_and_sigterm_stops_it() -> None:
    process, url, banner = await _serve()
    match = re.search(r"generated the key (\S+)", banner)
    assert match is not None and url.startswith("ws://127.0.0.1:")
    process.terminate()
    async with asyncio.timeout(30):
        await process.communicate()
    assert process.returncode == 0


async def test_accept_any_key_warns_loudly() -> None:
    process, _, _ = await _serve("--accept-any-key", "--log-level", "warning")
    process.send_signal(signal.SIGINT)
    async with asyncio.timeout(30):
        _, stderr = await process.communicate()
    assert "WARNING: --accept-any-key: EVERY API key is accepted" in stderr.decode()
