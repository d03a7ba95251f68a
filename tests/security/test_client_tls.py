"""``wss://`` verifies certificates by default; turning that off is explicit and logged loudly.

The handshake tests use a self-signed certificate made with the ``openssl`` command for
127.0.0.1 and a tiny TLS WebSocket server that accepts any key; they are skipped where
``openssl`` is not installed. The default-settings tests need nothing.
"""

from __future__ import annotations

import logging
import shlex
import shutil
import ssl
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from websockets.asyncio.server import ServerConnection, serve

from upscale_stream import ConnectionLost, Retry, Timeouts, UpscaleClient, UpscaleError

KEY = "tls-key-SECRET-0123456789"
OFF = "TLS certificate verification is OFF"


def test_wss_verifies_the_certificate_and_the_host_name_by_default() -> None:
    client = UpscaleClient(api_key=KEY, url="wss://ws-api.runware.ai/v1")
    assert client._ssl.verify_mode is ssl.CERT_REQUIRED
    assert client._ssl.check_hostname is True


def test_only_an_explicit_option_turns_verification_off() -> None:
    client = UpscaleClient(api_key=KEY, url="wss://ws-api.runware.ai/v1", verify_ssl=False)
    assert client._ssl.verify_mode is ssl.CERT_NONE


async def test_turning_verification_off_is_logged_as_a_warning_on_connect(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING)
    client = UpscaleClient(
        api_key=KEY,
        url="wss://127.0.0.1:9/v1",  # nothing listens: the warning comes before connecting
        verify_ssl=False,
        timeouts=Timeouts(connect=1.0),
        retry=Retry(max_attempts=1),
    )
    with pytest.raises(UpscaleError):
        await client.connect()
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and OFF in r.getMessage()]
    assert len(warnings) == 1


# -- real handshakes ------------------------------------------------------------------------------

needs_openssl = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1, and its key."""
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    command = shlex.split(
        "openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=127.0.0.1 "
        "-addext subjectAltName=IP:127.0.0.1"
    )
    subprocess.run(
        [*command, "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return cert, key


@pytest.fixture
async def tls_url(certificate: tuple[Path, Path]) -> AsyncIterator[str]:
    """A TLS WebSocket server that accepts any key and answers nothing else."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*certificate)

    async def accept(ws: ServerConnection) -> None:
        await ws.recv()
        item = {"taskType": "authentication", "connectionSessionUUID": "tls-session"}
        await ws.send(orjson.dumps({"data": [item]}).decode())
        await ws.wait_closed()

    async with serve(accept, "127.0.0.1", 0, ssl=context) as server:
        yield f"wss://127.0.0.1:{next(iter(server.sockets)).getsockname()[1]}/v1"


def client_for(url: str, **options: Any) -> UpscaleClient:
    return UpscaleClient(
        api_key=KEY, url=url, retry=Retry(max_attempts=1), timeouts=Timeouts(connect=5), **options
    )


@needs_openssl
async def test_a_self_signed_certificate_is_refused_by_default(tls_url: str) -> None:
    with pytest.raises(ConnectionLost) as info:
        await client_for(tls_url).connect()
    assert "CERTIFICATE_VERIFY_FAILED" in str(info.value)


@needs_openssl
async def test_verify_ssl_false_connects_and_says_so(
    tls_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    client = client_for(tls_url, verify_ssl=False)
    await client.connect()
    assert client.session_id == "tls-session"
    await client.close()
    assert any(OFF in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)


@needs_openssl
async def test_a_context_that_trusts_the_certificate_connects_without_a_warning(
    tls_url: str, certificate: tuple[Path, Path], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    context = ssl.create_default_context(cafile=str(certificate[0]))
    client = client_for(tls_url, ssl_context=context)
    await client.connect()
    assert client.session_id == "tls-session"
    await client.close()
    assert not any(OFF in r.getMessage() for r in caplog.records)
