"""Figures of merit for upscalers, and the textured test image they are measured on.

Used by the engine tests and ``benchmarks/sr_bench.py``; needs numpy (the ``sr`` extra).
All figures work on the luma (ITU-R BT.601) of 8-bit RGB images of the same size.

* :func:`psnr`: peak signal-to-noise ratio in dB against a reference (higher is closer).
* :func:`ssim`: structural similarity, mean over 8x8 windows (Wang et al. 2004 constants).
* :func:`mean_gradient`: mean magnitude of the luma gradient, a measure of edge energy
  (higher is sharper). It needs no reference.

GAN upscalers such as Real-ESRGAN are trained to look sharp, not to match pixels: they often
score a lower PSNR than a smooth resampling filter while scoring a higher edge energy.
"""

from __future__ import annotations

import random

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageDraw, ImageFilter

__all__ = ["luma", "mean_gradient", "psnr", "round_trip_source", "ssim", "textured_image"]

Floats = npt.NDArray[np.float64]


def luma(image: Image.Image) -> Floats:
    """The image's luma as float64 in 0-255 (alpha, if any, is dropped)."""
    return np.asarray(image.convert("RGB").convert("L"), dtype=np.float64)


def psnr(reference: Image.Image, candidate: Image.Image) -> float:
    """PSNR of ``candidate`` against ``reference`` in dB (``inf`` when identical).

    Raises:
        ValueError: the sizes differ.
    """
    error = _mse(luma(reference), luma(candidate))
    return float("inf") if error == 0 else float(10 * np.log10(255.0**2 / error))


def ssim(reference: Image.Image, candidate: Image.Image, *, window: int = 8) -> float:
    """Mean SSIM of ``candidate`` against ``reference`` over ``window``-pixel blocks, 0 to 1.

    Raises:
        ValueError: the sizes differ or are smaller than ``window``.
    """
    a, b = luma(reference), luma(candidate)
    if a.shape != b.shape:
        raise ValueError(f"sizes differ: {a.shape} and {b.shape}")
    rows, cols = a.shape[0] // window, a.shape[1] // window
    if not rows or not cols:
        raise ValueError(f"the images must be at least {window}x{window}")
    blocks_a = _blocks(a, rows, cols, window)
    blocks_b = _blocks(b, rows, cols, window)
    mean_a, mean_b = blocks_a.mean(axis=2), blocks_b.mean(axis=2)
    var_a, var_b = blocks_a.var(axis=2), blocks_b.var(axis=2)
    cov = ((blocks_a - mean_a[..., None]) * (blocks_b - mean_b[..., None])).mean(axis=2)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    score = ((2 * mean_a * mean_b + c1) * (2 * cov + c2)) / (
        (mean_a**2 + mean_b**2 + c1) * (var_a + var_b + c2)
    )
    return float(score.mean())


def mean_gradient(image: Image.Image) -> float:
    """Mean magnitude of the luma's central-difference gradient: the image's edge energy."""
    values = luma(image)
    dy, dx = np.gradient(values)
    return float(np.hypot(dx, dy).mean())


def textured_image(width: int, height: int, *, seed: int = 0) -> Image.Image:
    """A deterministic RGB test image with what upscalers are judged on.

    Sharp-edged shapes in many colours, thin lines, a fine stripe pattern and mild noise on a
    smooth gradient: edges to keep, texture to restore, flat areas to leave alone.

    Args:
        width: Width in pixels.
        height: Height in pixels.
        seed: Selects the layout; the same seed gives the same image.

    Returns:
        A new RGB image.
    """
    rng = random.Random(seed)
    x = np.linspace(0, 1, width)[None, :, None]
    y = np.linspace(0, 1, height)[:, None, None]
    base = 60 + 120 * x * np.array([1.0, 0.6, 0.2]) + 60 * y * np.array([0.2, 0.5, 1.0])
    image = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(image)
    for _ in range(max(4, width * height // 1500)):
        x0, y0 = rng.randrange(width), rng.randrange(height)
        x1 = min(width, x0 + rng.randint(4, max(5, width // 4)))
        y1 = min(height, y0 + rng.randint(4, max(5, height // 4)))
        colour = (rng.randrange(256), rng.randrange(256), rng.randrange(256))
        if rng.random() < 0.5:
            draw.rectangle((x0, y0, x1, y1), fill=colour)
        else:
            draw.ellipse((x0, y0, x1, y1), fill=colour, outline=(0, 0, 0))
    for _ in range(max(2, (width + height) // 40)):
        points = [(rng.randrange(width), rng.randrange(height)) for _ in range(2)]
        draw.line(points, fill=(250, 250, 250), width=1)
    stripes = Image.new("L", (max(1, width // 3), max(1, height // 3)))
    stripes.putdata(
        [255 * ((i % stripes.width) // 2 % 2) for i in range(stripes.width * stripes.height)]
    )
    image.paste((20, 20, 20), (0, 0), stripes)
    noise = np.random.default_rng(seed).normal(0, 4, (height, width, 3))
    pixels = np.asarray(image.filter(ImageFilter.SMOOTH_MORE), dtype=np.float64) + noise
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")


def round_trip_source(original: Image.Image, factor: int) -> Image.Image:
    """``original`` reduced ``factor`` times with an antialiased BICUBIC filter.

    Upscaling the result by ``factor`` and comparing it with ``original`` is the
    downscale-then-upscale test of the issue.
    """
    size = (original.width // factor, original.height // factor)
    return original.resize(size, Image.Resampling.BICUBIC, reducing_gap=None)


def _mse(a: Floats, b: Floats) -> float:
    if a.shape != b.shape:
        raise ValueError(f"sizes differ: {a.shape} and {b.shape}")
    return float(np.mean((a - b) ** 2))


def _blocks(values: Floats, rows: int, cols: int, window: int) -> Floats:
    cut = values[: rows * window, : cols * window]
    return cut.reshape(rows, window, cols, window).transpose(0, 2, 1, 3).reshape(rows, cols, -1)
