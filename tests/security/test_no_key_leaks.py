"""The API key never leaks: logs at every level, reprs, errors, tracebacks, CLI output and files.

Each test does a run that goes through every path where a key could slip out (authentication,
re-authentication after drops, a rejected key, a failed task, a timeout, giving up, an
internal error with a traceback, the sync facade, the CLI) with DEBUG logging on for every
logger, then scans everything it produced for the key, and for its first and last 16
characters (a frame log that shortens a message must not show half a key either).
"""

from __future__ import annotations

import asyncio
import base64
import io
import logging
import secrets
import traceback
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from upscale_stream import (
    Client,
    Retry,
    Timeouts,
    UpscaleClient,
    UpscaleError,
)
from upscale_stream import (
    log as log_module,
)
from upscale_stream.cli import main as cli_main
from upscale_stream.server import ReferenceServer, ServerConfig

KEY = "sk-leakcheck-" + secrets.token_hex(16)
WRONG_KEY = "sk-wrongkey-" + secrets.token_hex(16)
FAST = Retry(initial=0.01, factor=1.5, max_delay=0.05, resume_grace=0.1)


def leaked(text: str) -> list[str]:
    """The key fragments found in ``text``."""
    fragments = {key[:16] for key in (KEY, WRONG_KEY)} | {key[-16:] for key in (KEY, WRONG_KEY)}
    return sorted(fragment for fragment in fragments if fragment in text)


def png_data_uri(size: int) -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), (3, 4, 5)).save(buffer, "PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def rendered(exc: BaseException) -> str:
    """Everything an exception can show: str, repr, and the full chained traceback."""
    return "\n".join([str(exc), repr(exc), *traceback.format_exception(exc)])


@pytest.fixture
def every_log_line(caplog: pytest.LogCaptureFixture) -> Iterator[io.StringIO]:
    """DEBUG for every logger, formatted with tracebacks, into one buffer."""
    caplog.set_level(logging.DEBUG)
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.setLevel(logging.DEBUG)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield buffer
    finally:
        root.removeHandler(handler)


@pytest.fixture
async def server() -> AsyncIterator[ReferenceServer]:
    config = ServerConfig(api_keys=frozenset({KEY}), port=0, allow_private_urls=True)
    async with ReferenceServer(config) as running:
        yield running


async def exercise_every_path(server: ReferenceServer) -> list[str]:
    """Run the client through every path that touches the key; return what it showed."""
    shown: list[str] = []
    errors: list[BaseException] = []
    server.faults.drop_after_tasks = 2  # a drop and a re-authentication with the key
    server.faults.malformed_every = 2
    client = UpscaleClient(api_key=KEY, url=server.url, retry=FAST, seed=1)
    shown += [repr(client), str(client)]
    async with client:
        assert client._connection is not None
        session = client._connection.session
        shown += [repr(client._connection), repr(session), repr(client.limits), repr(FAST)]
        good = [client.upscale(png_data_uri(3 + n)) for n in range(5)]
        bad = client.upscale("data:image/png;base64," + base64.b64encode(b"not png").decode())
        outcomes = await asyncio.gather(*good, bad, return_exceptions=True)
        refused = client.upscale(png_data_uri(2), upload_endpoint="http://127.0.0.1:9/put")
        outcomes += await asyncio.gather(refused, return_exceptions=True)  # an APIError
        server.faults.result_delay = 2.0
        timed_out = client.upscale(png_data_uri(2), timeout=0.2)
        outcomes += await asyncio.gather(timed_out, return_exceptions=True)
        server.faults.result_delay = 0.0
        # Last, as it ends the client (issue 13: a failed core is never fed again).
        real_receive = session.receive_text
        calls = 0

        def buggy_receive(text: Any, now: float) -> None:
            nonlocal calls
            calls += 1
            if calls == 3:  # a bug in the core whose message happens to hold the key
                raise RuntimeError(f"simulated internal error while holding {KEY}")
            real_receive(text, now)

        session.receive_text = buggy_receive  # type: ignore[method-assign]
        doomed = [client.upscale(png_data_uri(3 + n)) for n in range(5)]
        outcomes += await asyncio.gather(*doomed, return_exceptions=True)
        assert client.reconnects >= 1
    for outcome in outcomes:
        if isinstance(outcome, BaseException):
            errors.append(outcome)
        else:
            shown += [repr(outcome), str(outcome)]
    kinds = {type(error).__name__ for error in errors}
    assert {"APIError", "UpscaleTimeout"} <= kinds, kinds  # and the input refused up front

    rejected = UpscaleClient(api_key=WRONG_KEY, url=server.url, retry=FAST)
    with pytest.raises(UpscaleError) as wrong:
        await rejected.connect()
    errors.append(wrong.value)
    shown.append(repr(rejected))

    await server.stop()  # nobody listens any more: the client gives up
    unreachable = UpscaleClient(
        api_key=KEY,
        url=server.url,
        retry=Retry(initial=0.01, max_attempts=1),
        timeouts=Timeouts(connect=1.0),
    )
    with pytest.raises(UpscaleError) as gone:
        await unreachable.connect()
    errors.append(gone.value)
    shown += [rendered(error) for error in errors]
    return shown


@pytest.mark.parametrize("json_logs", [False, True], ids=["key=value logs", "JSON logs"])
async def test_the_key_never_appears_in_logs_reprs_errors_or_tracebacks(
    server: ReferenceServer,
    every_log_line: io.StringIO,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    json_logs: bool,
) -> None:
    monkeypatch.setattr(log_module, "_json_output", json_logs)
    shown = await exercise_every_path(server)
    logs = every_log_line.getvalue()
    assert "simulated internal error" in logs  # the traceback really was logged
    assert "DEBUG upscale_stream.websockets" in logs  # the frame log really was on
    assert "authenticated" in logs and "connection lost" in logs
    records = [
        f"{r.levelname} {r.name} {r.getMessage()} {r.exc_text or ''}" for r in caplog.records
    ]
    assert not leaked(logs), "key in the log"
    assert not leaked("\n".join(records)), "key in a log record"
    assert not [text for text in shown if leaked(text)], "key in a repr, error or traceback"


def test_the_sync_client_shows_no_key(every_log_line: io.StringIO) -> None:
    config = ServerConfig(api_keys=frozenset({KEY}), port=0)
    with ReferenceServer(config).run_in_thread() as url, Client(api_key=KEY, url=url) as client:
        result = client.upscale(png_data_uri(4))
        shown = [repr(client), str(client), repr(result), repr(client.retry)]
    assert not leaked("\n".join(shown) + every_log_line.getvalue())


async def test_the_cli_never_prints_logs_or_writes_the_key(
    server: ReferenceServer,
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
    every_log_line: io.StringIO,
) -> None:
    inputs = tmp_path / "in"
    inputs.mkdir()
    for n in range(3):
        Image.new("RGB", (4 + n, 4), (9, 9, 9)).save(inputs / f"{n}.png")
    (inputs / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    out = tmp_path / "out"
    server.faults.drop_after_tasks = 1
    common = ["run", str(inputs), "--out", str(out), "--url", server.url, "-vv"]
    codes = [
        await asyncio.to_thread(cli_main, [*common, "--api-key", KEY, "--progress-interval", "0"]),
        await asyncio.to_thread(cli_main, [*common, "--api-key", KEY, "--json", "--no-resume"]),
        await asyncio.to_thread(cli_main, [*common, "--api-key", WRONG_KEY, "--no-resume"]),
    ]
    assert codes == [1, 1, 1]  # the broken input, then the rejected key
    captured = capfd.readouterr()
    written = [path for path in out.rglob("*") if path.is_file()]
    assert {path.name for path in written} >= {"summary.json", "manifest.jsonl"}
    assert not leaked(captured.out + captured.err), "key on stdout or stderr"
    assert not leaked(every_log_line.getvalue()), "key in the log"
    for path in written:
        assert not leaked(path.read_bytes().decode("utf-8", "replace")), path
