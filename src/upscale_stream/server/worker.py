"""The CPU-bound half of each task, run in the reference server's worker threads.

A job is a frozen dataclass holding plain values, whose ``run()`` the task handlers
(:mod:`.handlers`) pass to ``run_in_worker``: base64 decoding, Pillow decoding and rendering (with
:mod:`.imaging`) and base64 encoding of the output never run on the event loop.
Failures are :class:`TaskFailure`, which becomes the task's error item.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import InvalidTask
from ..inputs import decode_inline, sniff_mime
from . import imaging
from .engines import get_engine

__all__ = ["DecodeJob", "RenderJob", "RenderOutput", "TaskFailure", "inline_bytes"]


class TaskFailure(Exception):
    """A task that was accepted failed while running; it becomes an error item.

    Attributes:
        code: Runware-style error code.
        message: What went wrong.
        parameter: The request field at fault, if any.
    """

    def __init__(self, code: str, message: str, *, parameter: str | None = None) -> None:
        self.code = code
        self.message = message
        self.parameter = parameter
        super().__init__(code, message)


@dataclass(frozen=True, slots=True)
class RenderOutput:
    """What a :class:`RenderJob` hands back to the event loop."""

    input_data: bytes
    input_mime: str
    rendered: imaging.Rendered
    text: str | None


@dataclass(frozen=True, slots=True)
class RenderJob:
    """Everything one upscale does in a worker thread: decode, render, base64 if needed."""

    stored: bytes | None
    inline: str | None
    model: str
    factor: float
    settings: Mapping[str, Any] | None
    output_format: str
    quality: int
    max_pixels: int
    encode_text: bool
    engine: str = "pillow"

    def run(self) -> RenderOutput:
        """Decode, render and encode; raises :class:`TaskFailure` for unusable input."""
        raw = self.stored if self.stored is not None else inline_bytes(self.inline or "")
        try:
            image = imaging.decode_image(raw, max_pixels=self.max_pixels)
            rendered = get_engine(self.engine).render(
                image,
                model=self.model,
                factor=self.factor,
                settings=self.settings,
                output_format=self.output_format,
                quality=self.quality,
                max_pixels=self.max_pixels,
            )
        except imaging.ImagingError as exc:
            raise TaskFailure(exc.code, exc.message, parameter=exc.parameter) from None
        text = base64.b64encode(rendered.data).decode("ascii") if self.encode_text else None
        return RenderOutput(raw, sniff_mime(raw[:12]) or "image/png", rendered, text)


@dataclass(frozen=True, slots=True)
class DecodeJob:
    """An upload's worker-thread part: bytes from the text, then a full decode as a check."""

    data: bytes | None = None
    inline: str | None = None
    max_pixels: int = 40_000_000
    parameter: str = "image"

    def run(self) -> tuple[bytes, str]:
        """The image bytes and their MIME type; raises :class:`TaskFailure` if unusable."""
        raw = (
            self.data if self.data is not None else inline_bytes(self.inline or "", self.parameter)
        )
        try:
            imaging.decode_image(raw, max_pixels=self.max_pixels).close()
        except imaging.ImagingError as exc:
            raise TaskFailure(exc.code, exc.message, parameter=exc.parameter) from None
        return raw, sniff_mime(raw[:12]) or "image/png"


def inline_bytes(value: str, parameter: str = "inputImage") -> bytes:
    """The bytes of an inline image (data URI or bare base64), by the one shared decoder.

    :func:`upscale_stream.inputs.decode_inline` is the rule the client checks inputs with
    too; a refusal becomes a :class:`TaskFailure` naming ``parameter``.
    """
    try:
        return decode_inline(value, parameter=parameter)[0]
    except InvalidTask as exc:
        raise TaskFailure(exc.code, _message(exc), parameter=parameter) from None


def _message(exc: InvalidTask) -> str:
    return f"{exc.parameter}: {exc.reason}"
