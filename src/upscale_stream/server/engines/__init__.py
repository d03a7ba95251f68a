"""Upscaling engines of the reference server: Pillow pipelines, or Real-ESRGAN on the CPU.

``get_engine("pillow")`` is the default; ``get_engine("neural")`` needs the ``sr`` extra
(``pip install 'upscale-stream[sr]'``). :data:`NEURAL_ROUTES` is the table of which model and
factor the neural engine serves with which network; everything else stays on Pillow.
docs/engines.md describes both.

The neural engine's module (:mod:`.neural`) imports numpy and ncnn, so it is imported only
when that engine is asked for.
"""

from .base import SR_EXTRA_HINT, Engine, EngineUnavailable, get_engine
from .pillow import PillowEngine
from .registry import ENGINE_NAMES, NEURAL_ROUTES, Weights, neural_weights

__all__ = [
    "ENGINE_NAMES",
    "NEURAL_ROUTES",
    "SR_EXTRA_HINT",
    "Engine",
    "EngineUnavailable",
    "PillowEngine",
    "Weights",
    "get_engine",
    "neural_weights",
]
