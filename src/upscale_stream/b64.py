"""Base64 with the fastest codec present: the one place that chooses it.

Image bytes cross base64 twice per task (the input's data URI, a ``base64Data`` result), at
megabytes per image, so the codec is most of the bytes path's CPU. With the ``fast`` extra,
``pybase64``'s SIMD codec does it (on our machine type about 6x the stdlib's speed encoding and
40x decoding); without it, ``binascii``, which is correct, only slower. Decoding is strict
(standard alphabet, correct padding, no whitespace) with either.
"""

from __future__ import annotations

import binascii
from typing import Any

__all__ = ["decode", "encode"]


def _load_fast() -> Any:
    try:
        import pybase64
    except ImportError:  # the fast extra is optional: the stdlib codec is correct, just slower
        return None
    return pybase64


_PYBASE64 = _load_fast()


def encode(raw: bytes) -> bytes:
    """Standard base64 of ``raw``, with padding and without line breaks."""
    if _PYBASE64 is not None:
        encoded: bytes = _PYBASE64.b64encode(raw)
        return encoded
    return binascii.b2a_base64(raw, newline=False)


def decode(text: str | bytes) -> bytes:
    """Decode strict base64 (no whitespace, correct padding), straight from a ``str`` too.

    Raises:
        ValueError: ``text`` is not valid base64 (``binascii.Error`` is a ``ValueError``).
    """
    if _PYBASE64 is not None:
        decoded: bytes = _PYBASE64.b64decode(text, validate=True)
        return decoded
    return binascii.a2b_base64(text, strict_mode=True)
