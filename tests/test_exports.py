"""The package's public names: pinned exactly, documented, typed, and the sync facade's
signatures equal to the async client's."""

from __future__ import annotations

import inspect
import random
import textwrap
from pathlib import Path

import pytest

import upscale_stream
from upscale_stream import Client, UpscaleClient
from upscale_stream.errors import (
    ClientClosed,
    ConfigurationError,
    DownloadError,
    DuplicateTaskUUID,
    EventLoopError,
    InternalError,
    InvalidLimits,
    InvalidResult,
    InvalidTask,
    InvalidURL,
    MissingAPIKey,
    ResultError,
    UpscaleError,
)

PUBLIC = [
    "CCSR",
    "CLARITY",
    "DEFAULT_URL",
    "MODELS",
    "RETRYABLE_CODES",
    "SD_LATENT_UPSCALER",
    "SWINIR",
    "APIError",
    "AuthenticationError",
    "Client",
    "ClientClosed",
    "ClientOptions",
    "ConfigurationError",
    "ConnectionLost",
    "DownloadError",
    "DuplicateTaskUUID",
    "ErrorItem",
    "EventLoopError",
    "Heartbeat",
    "ImageSource",
    "InternalError",
    "InvalidLimits",
    "InvalidResult",
    "InvalidTask",
    "InvalidURL",
    "JobMismatch",
    "Limits",
    "MissingAPIKey",
    "ModelSpec",
    "Outcome",
    "Polling",
    "PreparedInput",
    "ResultError",
    "Retry",
    "TaskOptions",
    "TaskRetry",
    "Timeouts",
    "UpscaleClient",
    "UpscaleError",
    "UpscaleResult",
    "UpscaleSettings",
    "UpscaleTask",
    "UpscaleTimeout",
    "configure_logging",
    "prepare_input",
    "redact_secrets",
]


def test_all_is_exactly_the_pinned_public_api() -> None:
    assert upscale_stream.__all__ == PUBLIC


def test_every_name_in_all_is_importable() -> None:
    for name in upscale_stream.__all__:
        assert hasattr(upscale_stream, name), name


def test_every_public_name_has_a_docstring() -> None:
    undocumented = [
        name
        for name in upscale_stream.__all__
        if callable(getattr(upscale_stream, name)) and not getattr(upscale_stream, name).__doc__
    ]
    assert not undocumented


@pytest.mark.parametrize("name", ["upscale", "upscale_many", "build_task", "submit", "close"])
def test_the_sync_facade_has_the_async_clients_signatures(name: str) -> None:
    sync = inspect.signature(getattr(Client, name))
    async_ = inspect.signature(getattr(UpscaleClient, name))
    assert list(sync.parameters.values()) == list(async_.parameters.values())


def test_the_sync_facade_takes_the_same_options_as_the_async_client() -> None:
    options = upscale_stream.ClientOptions.__annotations__
    own = inspect.signature(UpscaleClient.__init__).parameters
    assert set(options) == set(own) - {"self", "api_key"}


def test_every_error_stays_in_the_tree() -> None:
    for error in (
        ClientClosed,
        ConfigurationError,
        DownloadError,
        DuplicateTaskUUID,
        EventLoopError,
        InternalError,
        InvalidLimits,
        InvalidResult,
        InvalidTask,
        InvalidURL,
        MissingAPIKey,
        ResultError,
    ):
        assert issubclass(error, UpscaleError)
    assert issubclass(DuplicateTaskUUID, InvalidTask) and issubclass(DuplicateTaskUUID, ValueError)
    assert issubclass(EventLoopError, RuntimeError)
    assert issubclass(InvalidResult, ResultError) and issubclass(DownloadError, ResultError)


def test_configuration_errors_name_the_option_and_the_fix() -> None:
    with pytest.raises(MissingAPIKey, match="RUNWARE_API_KEY"):
        UpscaleClient()
    with pytest.raises(InvalidURL, match="ws://"):
        UpscaleClient(api_key="k" * 8, url="http://example.invalid/?apiKey=SECRET")
    with pytest.raises(InvalidLimits, match="max_in_flight=0"):
        UpscaleClient(api_key="k" * 8, max_in_flight=0)


def test_the_secret_in_a_bad_url_never_reaches_the_message() -> None:
    with pytest.raises(InvalidURL) as info:
        UpscaleClient(api_key="k" * 8, url="http://example.invalid/?apiKey=SECRET")
    assert "SECRET" not in str(info.value)


def test_task_uuids_are_unpredictable_from_pythons_random() -> None:
    from upscale_stream.models import new_task_uuid

    random.seed(1)
    first = [new_task_uuid() for _ in range(3)]
    random.seed(1)
    again = [new_task_uuid() for _ in range(3)]
    assert first != again


def test_mypy_rejects_a_typo_in_a_task_option_and_a_bad_factor(tmp_path: Path) -> None:
    from mypy import api

    script = tmp_path / "typo.py"
    script.write_text(
        textwrap.dedent(
            """
            from upscale_stream import Client, UpscaleClient

            async def main(client: UpscaleClient) -> None:
                await client.upscale("x.png", factor=2, output_typ="URL")
                await client.upscale("x.png", factor=3)
                await client.upscale("x.png", factor=4, output_quality=90, output_type="URL")

            def sync(client: Client) -> None:
                client.upscale("x.png", ouput_format="PNG")
            """
        )
    )
    out, _, status = api.run([str(script), "--strict", "--no-incremental", "--cache-dir=/dev/null"])
    assert status == 1
    assert 'Unexpected keyword argument "output_typ"' in out
    assert 'Unexpected keyword argument "ouput_format"' in out
    assert 'Argument "factor"' in out
    assert out.count("error:") == 3, out
