"""Tests for upscale_stream.server.imaging: decoding, the 4096 cap, pipelines, encoding, prices."""

from __future__ import annotations

import io
import pickle
import random
import struct
import zlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from upscale_stream.models import CCSR, CLARITY, SD_LATENT_UPSCALER, SWINIR
from upscale_stream.server.imaging import (
    DEFAULT_PRICE,
    MAX_OUTPUT_SIDE,
    PRICES,
    ImagingError,
    Rendered,
    cost_of,
    decode_image,
    encode_output,
    fit_within_cap,
    render,
    upscale_image,
)

UNKNOWN_MODEL = "civitai:12345@678"
ALL_MODELS = [SWINIR, CLARITY, CCSR, SD_LATENT_UPSCALER, UNKNOWN_MODEL]
SETTINGS = {
    SWINIR: None,
    CLARITY: {"strength": 0.5, "seed": 42},
    CCSR: {"controlNetWeight": 0.8, "seed": 7},
    SD_LATENT_UPSCALER: {"CFGScale": 9, "seed": 3},
    UNKNOWN_MODEL: None,
}


def noisy_image(size: tuple[int, int] = (32, 32), mode: str = "RGB") -> Image.Image:
    """A deterministic noise image, so that compressed files are not trivially small."""
    bands = len(Image.new(mode, (1, 1)).getbands())
    noise = random.Random(f"{size}{mode}").randbytes(size[0] * size[1] * bands)
    return Image.frombytes(mode, size, noise)


def half_transparent(size: tuple[int, int] = (32, 32)) -> Image.Image:
    """Red on the right half, fully transparent black on the left half."""
    image = Image.new("RGBA", size, (0, 0, 0, 0))
    image.paste((220, 30, 30, 255), (size[0] // 2, 0, size[0], size[1]))
    return image


def encode(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def open_output(rendered: Rendered) -> Image.Image:
    image = Image.open(io.BytesIO(rendered.data))
    image.load()
    return image


def png_with_header(width: int, height: int) -> bytes:
    """A tiny PNG whose IHDR claims ``width`` x ``height`` (the pixel data is one short row)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body) & 0xFFFFFFFF
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 16))
        + chunk(b"IEND", b"")
    )


@pytest.fixture(scope="module")
def noisy_png() -> bytes:
    return encode(noisy_image(), "PNG")


# --- sizes and determinism ------------------------------------------------------------------------


@pytest.mark.parametrize("model", ALL_MODELS)
def test_each_model_multiplies_the_size_by_the_factor(model: str, noisy_png: bytes) -> None:
    rendered = render(noisy_png, model=model, factor=2, settings=SETTINGS[model])

    assert (rendered.width, rendered.height) == (64, 64)
    assert (rendered.input_width, rendered.input_height) == (32, 32)
    assert open_output(rendered).size == (64, 64)


def test_swinir_upscales_a_non_square_image_four_times() -> None:
    rendered = render(encode(noisy_image((24, 10)), "PNG"), model=SWINIR, factor=4, settings=None)

    assert open_output(rendered).size == (96, 40)


@pytest.mark.parametrize("model", ALL_MODELS)
def test_each_model_gives_the_same_bytes_for_the_same_input_and_settings(
    model: str, noisy_png: bytes
) -> None:
    first = render(noisy_png, model=model, factor=2, settings=SETTINGS[model])
    second = render(noisy_png, model=model, factor=2, settings=SETTINGS[model])

    assert first.data == second.data


def test_models_differ_from_each_other(noisy_png: bytes) -> None:
    outputs = {
        render(noisy_png, model=model, factor=2, settings=None, output_format="PNG").data
        for model in ALL_MODELS
    }

    assert len(outputs) == len(ALL_MODELS)


def test_clarity_strength_changes_the_output(noisy_png: bytes) -> None:
    soft = render(noisy_png, model=CLARITY, factor=2, settings={"strength": 0.0})
    sharp = render(noisy_png, model=CLARITY, factor=2, settings={"strength": 1.0})

    assert soft.data != sharp.data


def test_clarity_seed_chooses_the_grain(noisy_png: bytes) -> None:
    def with_seed(seed: int) -> bytes:
        return render(noisy_png, model=CLARITY, factor=2, settings={"seed": seed}).data

    assert with_seed(1) == with_seed(1)
    assert with_seed(1) != with_seed(2)


def test_ccsr_weight_and_latent_cfg_scale_change_the_output(noisy_png: bytes) -> None:
    def run(model: str, options: dict[str, float]) -> bytes:
        return render(noisy_png, model=model, factor=2, settings=options).data

    assert run(CCSR, {"controlNetWeight": 0.0}) != run(CCSR, {"controlNetWeight": 1.0})
    assert run(SD_LATENT_UPSCALER, {"CFGScale": 0}) != run(SD_LATENT_UPSCALER, {"CFGScale": 20})


def test_a_setting_that_is_not_a_number_is_refused(noisy_png: bytes) -> None:
    with pytest.raises(ImagingError) as caught:
        render(noisy_png, model=CLARITY, factor=2, settings={"strength": "high"})

    assert caught.value.code == "invalidStrength"
    assert caught.value.parameter == "settings.strength"


# --- the 4096 cap ---------------------------------------------------------------------------------


def test_fit_within_cap_reduces_2048_to_1024_before_a_factor_of_four() -> None:
    image = Image.new("RGB", (2048, 2048), (10, 120, 200))

    assert fit_within_cap(image, 4).size == (1024, 1024)
    assert fit_within_cap(image, 2) is image


def test_fit_within_cap_keeps_the_aspect_ratio() -> None:
    reduced = fit_within_cap(Image.new("RGB", (3000, 1500)), 2)

    assert reduced.size == (2048, 1024)


def test_a_2048_square_at_factor_four_renders_4096_square() -> None:
    solid = encode(Image.new("RGB", (2048, 2048), (10, 120, 200)), "PNG")

    rendered = render(solid, model=SWINIR, factor=4, settings=None)

    assert (rendered.width, rendered.height) == (MAX_OUTPUT_SIDE, MAX_OUTPUT_SIDE)
    assert (rendered.input_width, rendered.input_height) == (2048, 2048)
    assert open_output(rendered).size == (4096, 4096)


# --- alpha and output formats ---------------------------------------------------------------------


@pytest.mark.parametrize("model", ALL_MODELS)
@pytest.mark.parametrize("output_format", ["PNG", "WEBP"])
def test_png_and_webp_outputs_keep_the_alpha_channel(model: str, output_format: str) -> None:
    source = encode(half_transparent(), "PNG")

    output = open_output(
        render(source, model=model, factor=2, settings=SETTINGS[model], output_format=output_format)
    )

    assert output.mode == "RGBA"
    alpha = output.getchannel("A")
    assert alpha.getpixel((4, 32)) == 0
    assert alpha.getpixel((60, 32)) == 255


@pytest.mark.parametrize("model", ALL_MODELS)
def test_jpg_output_flattens_alpha_onto_white(model: str) -> None:
    source = encode(half_transparent(), "PNG")

    output = open_output(render(source, model=model, factor=2, settings=SETTINGS[model]))

    assert output.mode == "RGB"
    assert all(channel >= 245 for channel in output.getpixel((4, 32)))  # type: ignore[union-attr]
    red, green, blue = output.getpixel((60, 32))  # type: ignore[misc]
    assert red > 180 and green < 80 and blue < 80


def test_a_palette_image_with_transparency_keeps_it() -> None:
    palette = half_transparent().convert("P")
    palette.info["transparency"] = palette.getpixel((0, 0))

    output = open_output(
        render(encode(palette, "PNG"), model=SWINIR, factor=2, settings=None, output_format="PNG")
    )

    assert output.mode == "RGBA"
    assert output.getchannel("A").getpixel((4, 4)) == 0


def test_a_16_bit_greyscale_image_is_scaled_not_clipped() -> None:
    grey = Image.new("I;16", (8, 8), 32768)

    output = upscale_image(grey, model=UNKNOWN_MODEL, factor=2, settings=None)

    assert output.mode == "RGB"
    assert output.getpixel((5, 5)) == (128, 128, 128)


def test_jpg_at_quality_30_is_smaller_than_at_95() -> None:
    image = noisy_image((64, 64))

    low = encode_output(image, output_format="JPG", quality=30)
    high = encode_output(image, output_format="JPG", quality=95)

    assert len(low) < len(high)


@pytest.mark.parametrize(
    ("output_format", "mime", "extension", "pillow_format"),
    [
        ("JPG", "image/jpeg", "jpg", "JPEG"),
        ("jpg", "image/jpeg", "jpg", "JPEG"),
        ("PNG", "image/png", "png", "PNG"),
        ("WEBP", "image/webp", "webp", "WEBP"),
    ],
)
def test_rendered_names_the_mime_type_and_extension_of_its_format(
    output_format: str, mime: str, extension: str, pillow_format: str, noisy_png: bytes
) -> None:
    rendered = render(noisy_png, model=SWINIR, factor=2, settings=None, output_format=output_format)

    assert (rendered.mime, rendered.extension) == (mime, extension)
    assert open_output(rendered).format == pillow_format


@pytest.mark.parametrize(
    ("options", "code", "parameter"),
    [
        ({"output_format": "GIF"}, "invalidOutputFormat", "outputFormat"),
        ({"quality": 10}, "invalidOutputQuality", "outputQuality"),
        ({"quality": 100}, "invalidOutputQuality", "outputQuality"),
        ({"factor": 0}, "invalidUpscaleFactor", "upscaleFactor"),
    ],
)
def test_render_refuses_bad_options_before_decoding(
    options: dict[str, object], code: str, parameter: str
) -> None:
    arguments: dict[str, object] = {"model": SWINIR, "factor": 2, "settings": None, **options}

    with pytest.raises(ImagingError) as caught:
        render(b"not even an image", **arguments)  # type: ignore[arg-type]

    assert (caught.value.code, caught.value.parameter) == (code, parameter)


def test_render_accepts_a_decoded_pillow_image() -> None:
    rendered = render(noisy_image((16, 8)), model=SWINIR, factor=2, settings=None)

    assert (rendered.width, rendered.height, rendered.input_width) == (32, 16, 16)


# --- refused inputs -------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["GIF", "BMP", "TIFF"])
def test_other_formats_are_refused_naming_the_format(fmt: str) -> None:
    with pytest.raises(ImagingError) as caught:
        decode_image(encode(noisy_image(), fmt))

    assert caught.value.code == "unsupportedImageFormat"
    assert fmt in caught.value.message
    assert caught.value.parameter == "inputImage"


def test_data_that_is_no_image_is_refused_as_unsupported() -> None:
    with pytest.raises(ImagingError) as caught:
        decode_image(b"hello, this is plain text and not an image at all")

    assert caught.value.code == "unsupportedImageFormat"


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP"])
def test_truncated_images_are_refused_as_corrupt(fmt: str) -> None:
    whole = encode(noisy_image((64, 64)), fmt)

    with pytest.raises(ImagingError) as caught:
        decode_image(whole[: len(whole) // 2])

    assert caught.value.code == "corruptImage"


def test_an_image_cut_inside_its_header_is_refused_as_corrupt() -> None:
    with pytest.raises(ImagingError) as caught:
        decode_image(encode(noisy_image(), "PNG")[:20])

    assert caught.value.code == "corruptImage"


def test_a_decompression_bomb_header_is_refused_as_too_large() -> None:
    with pytest.raises(ImagingError) as caught:
        decode_image(png_with_header(20_000, 20_000))

    assert caught.value.code == "imageTooLarge"


def test_the_pixel_limit_is_checked_before_decoding() -> None:
    # 7000x7000 is under Pillow's own limit but over ours; the pixel data is missing, so only
    # a check of the header can give imageTooLarge rather than corruptImage.
    with pytest.raises(ImagingError) as caught:
        decode_image(png_with_header(7000, 7000))

    assert caught.value.code == "imageTooLarge"


def test_a_small_max_pixels_refuses_a_small_image(noisy_png: bytes) -> None:
    with pytest.raises(ImagingError) as caught:
        render(noisy_png, model=SWINIR, factor=2, settings=None, max_pixels=32 * 32 - 1)

    assert caught.value.code == "imageTooLarge"


def test_decode_image_loads_the_pixels(noisy_png: bytes) -> None:
    image = decode_image(noisy_png)

    assert image.size == (32, 32)
    assert image.tobytes() == noisy_image().tobytes()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    fmt=st.sampled_from(["PNG", "JPEG", "WEBP"]),
    damage=st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), min_size=1, max_size=8),
)
def test_damaged_files_either_decode_or_raise_imaging_error(
    fmt: str, damage: list[tuple[int, int]]
) -> None:
    data = bytearray(encode(noisy_image((16, 16)), fmt))
    for position, value in damage:
        data[position % len(data)] = value

    try:
        image = decode_image(bytes(data))
    except ImagingError as exc:
        assert exc.code in {"corruptImage", "imageTooLarge", "unsupportedImageFormat"}
    else:
        assert image.width * image.height > 0


# --- prices and errors ----------------------------------------------------------------------------


def test_cost_of_is_deterministic_and_follows_the_output_megapixels() -> None:
    first = cost_of(SWINIR, 2048, 2048)

    assert first == cost_of(SWINIR, 2048, 2048)
    assert first == round(PRICES[SWINIR] * 4 * 1.048576, 6)
    assert cost_of(CLARITY, 2048, 2048) == pytest.approx(4 * cost_of(CLARITY, 1024, 1024), abs=4e-6)


def test_cost_of_an_unknown_model_uses_the_default_price() -> None:
    assert cost_of(UNKNOWN_MODEL, 1000, 1000) == DEFAULT_PRICE


def test_cost_of_is_rounded_to_six_decimals() -> None:
    cost = cost_of(CCSR, 333, 777)

    assert cost == round(cost, 6)
    assert cost > 0


def test_imaging_error_keeps_its_fields_through_pickle() -> None:
    error = ImagingError("corruptImage", "broken", parameter="inputImage")

    copy = pickle.loads(pickle.dumps(error))

    assert (copy.code, copy.message, copy.parameter) == ("corruptImage", "broken", "inputImage")
    assert str(copy) == "corruptImage: broken (parameter inputImage)"
