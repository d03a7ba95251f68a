"""The package's public names: everything in __all__ exists, and nothing private leaks in."""

from __future__ import annotations

import upscale_stream


def test_every_name_in_all_is_importable() -> None:
    for name in upscale_stream.__all__:
        assert hasattr(upscale_stream, name), name


def test_all_lists_the_public_api_and_no_private_name() -> None:
    assert {"UpscaleClient", "Client", "UpscaleTask", "UpscaleResult", "APIError"} <= set(
        upscale_stream.__all__
    )
    assert not [name for name in upscale_stream.__all__ if name.startswith("_")]
    assert len(upscale_stream.__all__) == len(set(upscale_stream.__all__))


def test_every_public_name_has_a_docstring() -> None:
    undocumented = [
        name
        for name in upscale_stream.__all__
        if callable(getattr(upscale_stream, name)) and not getattr(upscale_stream, name).__doc__
    ]
    assert not undocumented
