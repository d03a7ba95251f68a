"""The Pillow engine: today's classical pipelines of :mod:`upscale_stream.server.imaging`.

An adapter only: every call goes to :func:`~upscale_stream.server.imaging.render` or
:func:`~upscale_stream.server.imaging.upscale_image` unchanged, so ``--engine pillow`` gives
the same bytes as the server did before engines existed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from PIL import Image

from .. import imaging

__all__ = ["PillowEngine"]


class PillowEngine:
    """Every model on its Pillow pipeline (see :mod:`upscale_stream.server.imaging`).

    Attributes:
        name: ``"pillow"``.
    """

    name = "pillow"

    def __repr__(self) -> str:
        return "PillowEngine()"

    def serves(self, model: str, factor: float) -> str:
        """Always ``"pillow"``."""
        return "pillow"

    def render(
        self,
        image: Image.Image,
        *,
        model: str,
        factor: float,
        settings: Mapping[str, Any] | None,
        output_format: str,
        quality: int,
        max_pixels: int,
    ) -> imaging.Rendered:
        """Cap, upscale and encode with :func:`~upscale_stream.server.imaging.render`.

        Raises:
            ImagingError: the input or an option cannot be used.
        """
        return imaging.render(
            image,
            model=model,
            factor=factor,
            settings=settings,
            output_format=output_format,
            quality=quality,
            max_pixels=max_pixels,
        )

    def upscale(
        self, image: Image.Image, *, model: str, factor: float, settings: Mapping[str, Any] | None
    ) -> Image.Image:
        """Upscale with :func:`~upscale_stream.server.imaging.upscale_image` (no cap)."""
        return imaging.upscale_image(image, model=model, factor=factor, settings=settings)
