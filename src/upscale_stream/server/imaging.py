"""Real upscaling for the reference server: decode, cap, upscale, encode, price. No I/O.

Everything here is synchronous and CPU-bound; the server runs it in a worker thread. The only
input is the bytes (or the Pillow image) it is given: UUIDs and URLs are resolved by the caller.

Honesty first: these are **classical image-processing pipelines built from Pillow filters, not
neural networks**. They make the reference server produce real images of the right size, format
and quality, with per-model differences you can see and measure, so that clients, benchmarks and
tests exercise the whole path. They do not reproduce the look of Runware's models.

Pipeline (:func:`render`)::

    bytes --decode_image--> image --fit_within_cap--> image --upscale_image--> image
          --encode_output--> Rendered(data, mime, extension, sizes)

Per-model pipelines (the resize works on premultiplied RGBA, so transparent pixels do not bleed
colour into edges; every filter after it works on the RGB bands only, and the resized alpha band
is put back unchanged):

``runware:503@1`` (SwinIR)
    LANCZOS resize to the target, then ``UnsharpMask(radius=1.2, percent=60, threshold=2)``.
    Takes no settings.
``runware:500@1`` (Clarity)
    BICUBIC resize, then a detail pass: the result is blended with a ``SHARPEN``-filtered copy,
    the blend weight being ``settings.strength`` (default 0.35; 0 means plain BICUBIC). When
    ``settings.seed`` is given, a faint monochrome grain (at most +/-2 levels) drawn from
    ``random.Random(seed)`` is added, so the same seed always gives the same grain.
``runware:501@1`` (CCSR)
    With ``w = settings.controlNetWeight`` (default 0.6): the input is blended with its 3x3
    median (weight ``w``, a mild denoise), BICUBIC-resized, then sharpened with
    ``UnsharpMask(radius=1.5, percent=100*w, threshold=3)``; the threshold leaves flat areas
    alone, which keeps local contrast without sharpening the noise. ``w = 0`` gives plain
    BICUBIC. The median runs before the resize, on a quarter of the pixels (after a smooth
    upscale a 3x3 median would do next to nothing anyway).
``runware:502@1`` (SD latent upscaler)
    Two resampling steps: BILINEAR to the half-way size (``(1 + factor) / 2`` times the input,
    1.5x for factor 2), then LANCZOS to the target; then a mild ``ImageEnhance.Color`` and
    ``ImageEnhance.Contrast`` boost that follows ``settings.CFGScale`` (default 7; colour
    ``1 + min(CFGScale, 20) / 100``, contrast half of that boost).
any other model id
    LANCZOS resize only.

Prompts, ``steps``, ``scheduler`` and ``clipSkip`` are accepted by the wire models but have no
effect here. Every pipeline is deterministic: the same input bytes and settings give the same
output bytes (with the same Pillow build).

Input is PNG, JPEG or WEBP (the seed's formats); the first frame of an animated image is used.
Greyscale, palette, CMYK and 16-bit inputs are converted to 8-bit RGB, or RGBA when they carry
transparency. EXIF orientation is not applied.
"""

from __future__ import annotations

import io
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import orjson
from PIL import Image, ImageChops, ImageEnhance, ImageFilter

from upscale_stream.inputs import sniff_mime
from upscale_stream.models import CCSR, CLARITY, SD_LATENT_UPSCALER, SWINIR, OutputFormat

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "DEFAULT_PRICE",
    "MAX_OUTPUT_SIDE",
    "PRICES",
    "ImagingError",
    "Rendered",
    "cost_of",
    "decode_image",
    "encode_output",
    "fit_within_cap",
    "render",
    "upscale_image",
]

MAX_OUTPUT_SIDE = 4096
"""The largest output width or height (seed: "The maximum size of the upscaled result")."""

DEFAULT_MAX_PIXELS = 40_000_000
"""Inputs with more pixels than this are refused before decoding (``imageTooLarge``)."""

_PILLOW_FORMAT = {"image/png": "PNG", "image/jpeg": "JPEG", "image/webp": "WEBP"}
_OUTPUTS = {
    "JPG": ("image/jpeg", "jpg"),
    "PNG": ("image/png", "png"),
    "WEBP": ("image/webp", "webp"),
}
_WIRE_FORMATS: Mapping[str, OutputFormat] = {
    "JPG": "JPG",
    "JPEG": "JPG",
    "PNG": "PNG",
    "WEBP": "WEBP",
}
_MIN_QUALITY, _MAX_QUALITY = 20, 99  # seed: outputQuality "Min: 20 Max: 99"
_WHITE = (255, 255, 255)

PRICES: Mapping[str, float] = MappingProxyType(
    {
        CLARITY: 0.0040,
        CCSR: 0.0030,
        SD_LATENT_UPSCALER: 0.0020,
        SWINIR: 0.0006,
    }
)
"""USD per output megapixel, by model AIR id.

These numbers are **made up** for the reference server: small, plausible and fixed, so that
``includeCost`` returns something deterministic that tests can assert. They are not Runware's
prices. Models not listed cost :data:`DEFAULT_PRICE`.
"""

DEFAULT_PRICE = 0.0010
"""USD per output megapixel for models missing from :data:`PRICES` (also made up)."""


class ImagingError(Exception):
    """An input image cannot be used, or a rendering option is out of range.

    Attributes:
        code: A Runware-style error code: ``unsupportedImageFormat``, ``corruptImage``,
            ``imageTooLarge``, ``invalidInputImage``, ``invalidUpscaleFactor``,
            ``invalidOutputFormat``, ``invalidOutputQuality`` or ``invalid<Setting>``.
        message: What is wrong, for the error item sent back to the client.
        parameter: The wire name of the field the error is about.
    """

    def __init__(self, code: str, message: str, *, parameter: str = "inputImage") -> None:
        self.code = code
        self.message = message
        self.parameter = parameter
        super().__init__(code, message)

    def __str__(self) -> str:
        return f"{self.code}: {self.message} (parameter {self.parameter})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_imaging_error, (self.code, self.message, self.parameter))


def _rebuild_imaging_error(code: str, message: str, parameter: str) -> ImagingError:
    return ImagingError(code, message, parameter=parameter)


@dataclass(frozen=True, slots=True)
class Rendered:
    """One encoded output image and the sizes that produced it.

    Attributes:
        data: The encoded image file.
        mime: Its MIME type, for example ``image/jpeg``.
        extension: Its file extension without the dot: ``jpg``, ``png`` or ``webp``.
        width: Output width in pixels.
        height: Output height in pixels.
        input_width: Width of the input as received, before the 4096 cap shrank it.
        input_height: Height of the input as received.
    """

    data: bytes
    mime: str
    extension: str
    width: int
    height: int
    input_width: int
    input_height: int


# --- decoding -------------------------------------------------------------------------------------


def decode_image(raw: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Decode PNG, JPEG or WEBP bytes into a fully loaded Pillow image.

    The format is sniffed from the magic bytes and Pillow may only use the matching decoder.
    The pixel count in the header is checked before any pixel is decoded.

    Args:
        raw: The image file's bytes.
        max_pixels: The largest accepted ``width * height``; Pillow's own
            ``Image.MAX_IMAGE_PIXELS`` applies too, whichever is smaller.

    Returns:
        The decoded image, in the mode the file has (``load()`` has been called).

    Raises:
        ImagingError: ``invalidInputImage`` (empty), ``unsupportedImageFormat`` (naming the
            format when it is recognised), ``imageTooLarge`` or ``corruptImage``.
    """
    if not raw:
        raise ImagingError("invalidInputImage", "the image data is empty")
    mime = sniff_mime(bytes(raw[:12]))
    if mime is None:
        found = _name_format(raw)
        what = f"{found} images are not supported" if found else "the data is not a known image"
        raise ImagingError("unsupportedImageFormat", f"{what}; inputImage accepts PNG, JPEG, WEBP")
    name = _PILLOW_FORMAT[mime]
    try:
        image = Image.open(io.BytesIO(raw), formats=(name,))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        # The warning is an exception only where warnings are errors (as under pytest).
        raise _too_large(str(exc)) from exc
    except Exception as exc:  # Pillow raises many types on damaged headers
        raise _corrupt(name, exc) from exc
    try:
        width, height = image.size
        limit = _pixel_limit(max_pixels)
        if width * height > limit:
            raise _too_large(f"{width}x{height} is {width * height} pixels, over {limit}")
        if width < 1 or height < 1:
            raise ImagingError("corruptImage", f"the {name} image has no pixels ({width}x{height})")
        try:
            image.load()
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise _too_large(str(exc)) from exc
        except Exception as exc:  # truncated or corrupt data: OSError, SyntaxError, ...
            raise _corrupt(name, exc) from exc
    except BaseException:
        image.close()
        raise
    return image


_MAGIC: Mapping[bytes, str] = {
    # leading bytes of formats people send by mistake
    b"GIF87a": "GIF",
    b"GIF89a": "GIF",
    b"BM": "BMP",
    b"II*\x00": "TIFF",
    b"MM\x00*": "TIFF",
    b"\x00\x00\x01\x00": "ICO",
    b"8BPS": "PSD",
    b"%PDF": "PDF",
    b"qoif": "QOI",
    b"\xff\x0a": "JPEG XL",
    b"\x00\x00\x00\x0cJXL ": "JPEG XL",
}
_BRANDS: Mapping[bytes, str] = {b"avif": "AVIF", b"avis": "AVIF", b"heic": "HEIC", b"mif1": "HEIF"}


def _name_format(raw: bytes) -> str | None:
    """Name the format of unsupported data, for a message that says what was sent."""
    head = bytes(raw[:16])
    if head[4:8] == b"ftyp":
        return _BRANDS.get(head[8:12], "ISO media")
    found = next((name for magic, name in _MAGIC.items() if head.startswith(magic)), None)
    if found is None and head.lstrip().startswith((b"<svg", b"<?xml")):
        found = "SVG"
    if found is not None:
        return found
    try:
        with Image.open(io.BytesIO(raw)) as image:
            return image.format
    except Exception:  # any failure only means that Pillow does not know it either
        return None


def _pixel_limit(max_pixels: int) -> int:
    pillow_limit = Image.MAX_IMAGE_PIXELS
    return max_pixels if pillow_limit is None else min(max_pixels, pillow_limit)


def _too_large(detail: str) -> ImagingError:
    return ImagingError("imageTooLarge", f"the input image is too large: {detail[:160]}")


def _corrupt(name: str, exc: BaseException) -> ImagingError:
    return ImagingError(
        "corruptImage", f"the {name} data is corrupt or truncated: {str(exc)[:160]}"
    )


# --- sizes ----------------------------------------------------------------------------------------


def fit_within_cap(image: Image.Image, factor: float) -> Image.Image:
    """Shrink ``image`` so that ``factor`` times its size fits in 4096x4096.

    The seed: "a 2048x2048 image with an upscaleFactor of 4 will first be reduced to 1024x1024".
    The aspect ratio is kept and LANCZOS is used. An image that already fits is returned as is.

    Args:
        image: The decoded input.
        factor: The upscale factor that will follow.

    Returns:
        ``image`` itself, or a reduced RGB/RGBA copy whose longer side is ``4096 // factor``.

    Raises:
        ImagingError: ``invalidUpscaleFactor`` when ``factor`` is not a number from 1 to 4096.
    """
    _check_factor(factor)
    limit = int(MAX_OUTPUT_SIDE // factor)
    width, height = image.size
    if width <= limit and height <= limit:
        return image
    scale = min(limit / width, limit / height)
    size = (max(1, min(limit, round(width * scale))), max(1, min(limit, round(height * scale))))
    return _to_working_mode(image).resize(size, Image.Resampling.LANCZOS)


def _check_factor(factor: float) -> None:
    # Clarity takes fractional factors (docs/server.md); the model registry
    # (server/upscalers.py) decides which factor each model takes, this only bounds the size.
    if type(factor) not in (int, float) or not 1 <= factor <= MAX_OUTPUT_SIDE:
        raise ImagingError(
            "invalidUpscaleFactor",
            f"upscaleFactor must be a number from 1 to {MAX_OUTPUT_SIDE}, not {factor}",
            parameter="upscaleFactor",
        )


# --- upscaling ------------------------------------------------------------------------------------

Size = tuple[int, int]


@dataclass(frozen=True, slots=True)
class _Pipeline:
    """A model's pipeline: a resize of the whole image, then an optional pass on RGB only."""

    resize: Callable[[Image.Image, Size, _Options], Image.Image]
    refine: Callable[[Image.Image, _Options], Image.Image] | None


def upscale_image(
    image: Image.Image, *, model: str, factor: float, settings: Mapping[str, Any] | None
) -> Image.Image:
    """Upscale ``image`` by exactly ``factor`` with the pipeline of ``model``.

    The 4096 cap is not applied here; :func:`render` calls :func:`fit_within_cap` first.

    Args:
        image: Any decoded image; palette, greyscale, CMYK and 16-bit modes are converted.
        model: The AIR id; unknown ids get a plain LANCZOS resize.
        factor: The upscale factor; the output is ``factor`` times the input on each side.
        settings: The task's ``settings`` by wire name (``strength``, ``controlNetWeight``,
            ``CFGScale``, ``seed``, ...), or ``None``.

    Returns:
        A new RGB image, or RGBA when the input carries transparency.

    Raises:
        ImagingError: ``invalidUpscaleFactor``, or ``invalid<Setting>`` for a setting the
            pipeline uses that is not a number.
    """
    _check_factor(factor)
    options = _Options.from_settings(settings)
    pipeline = _PIPELINES.get(model, _PLAIN)
    work = _to_working_mode(image)
    size = (max(1, round(work.width * factor)), max(1, round(work.height * factor)))
    resized = pipeline.resize(work, size, options)
    if pipeline.refine is None:
        return resized
    if resized.mode != "RGBA":
        return pipeline.refine(resized, options)
    refined = pipeline.refine(resized.convert("RGB"), options)
    refined.putalpha(resized.getchannel("A"))
    return refined


def _to_working_mode(image: Image.Image) -> Image.Image:
    """8-bit RGB, or RGBA when the image has transparency; RGB and RGBA pass unchanged."""
    if image.mode in ("RGB", "RGBA"):
        return image
    if image.mode.startswith("I"):
        # 16-bit greyscale PNG: Pillow's own conversion clips at 255, so scale to 8 bits first.
        image = image.convert("I").point(lambda value: value * (1 / 256)).convert("L")
    return image.convert("RGBA" if image.has_transparency_data else "RGB")


@dataclass(frozen=True, slots=True)
class _Options:
    """The settings the pipelines use, checked and clamped to the wire models' ranges."""

    strength: float
    control_net_weight: float
    cfg_scale: float
    seed: int | None

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any] | None) -> _Options:
        given = settings or {}
        seed = given.get("seed")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise _bad_setting("seed", seed, "an integer")
        return cls(
            strength=_number(given, "strength", 0.35, 1.0),
            control_net_weight=_number(given, "controlNetWeight", 0.6, 1.0),
            cfg_scale=_number(given, "CFGScale", 7.0, 50.0),
            seed=seed,
        )


def _number(settings: Mapping[str, Any], name: str, default: float, high: float) -> float:
    value = settings.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _bad_setting(name, value, "a number")
    return min(max(float(value), 0.0), high)


def _bad_setting(name: str, value: object, kind: str) -> ImagingError:
    return ImagingError(
        f"invalid{name[:1].upper()}{name[1:]}",
        f"settings.{name} must be {kind}, not {_json(value)}"[:200],
        parameter=f"settings.{name}",
    )


def _lanczos(image: Image.Image, size: Size, options: _Options) -> Image.Image:
    return image.resize(size, Image.Resampling.LANCZOS)


def _bicubic(image: Image.Image, size: Size, options: _Options) -> Image.Image:
    return image.resize(size, Image.Resampling.BICUBIC)


def _swinir_refine(rgb: Image.Image, options: _Options) -> Image.Image:
    return rgb.filter(ImageFilter.UnsharpMask(radius=1.2, percent=60, threshold=2))


def _clarity_refine(rgb: Image.Image, options: _Options) -> Image.Image:
    strength = options.strength
    result = Image.blend(rgb, rgb.filter(ImageFilter.SHARPEN), strength) if strength else rgb
    if options.seed is not None:
        result = _add_grain(result, options.seed, amplitude=2)
    return result


def _add_grain(rgb: Image.Image, seed: int, *, amplitude: int) -> Image.Image:
    """Add monochrome noise in ``[-amplitude, +amplitude]`` drawn from ``random.Random(seed)``."""
    noise = Image.frombytes("L", rgb.size, random.Random(seed).randbytes(rgb.width * rgb.height))
    levels = 2 * amplitude + 1
    noise = noise.point([value * levels // 256 for value in range(256)])
    return ImageChops.add(rgb, Image.merge("RGB", (noise, noise, noise)), 1.0, -amplitude)


def _ccsr_resize(image: Image.Image, size: Size, options: _Options) -> Image.Image:
    weight = options.control_net_weight
    if weight:
        # Denoise the source (RGB bands only; alpha keeps its edges), then upscale.
        rgb = image.convert("RGB") if image.mode == "RGBA" else image
        denoised = Image.blend(rgb, rgb.filter(ImageFilter.MedianFilter(3)), weight)
        if image.mode == "RGBA":
            denoised.putalpha(image.getchannel("A"))
        image = denoised
    return image.resize(size, Image.Resampling.BICUBIC)


def _ccsr_refine(rgb: Image.Image, options: _Options) -> Image.Image:
    percent = round(100 * options.control_net_weight)
    if not percent:
        return rgb
    return rgb.filter(ImageFilter.UnsharpMask(radius=1.5, percent=percent, threshold=3))


def _latent_resize(image: Image.Image, size: Size, options: _Options) -> Image.Image:
    halfway = (
        max(1, round((image.width + size[0]) / 2)),
        max(1, round((image.height + size[1]) / 2)),
    )
    step = image.resize(halfway, Image.Resampling.BILINEAR)
    return step.resize(size, Image.Resampling.LANCZOS)


def _latent_refine(rgb: Image.Image, options: _Options) -> Image.Image:
    boost = min(options.cfg_scale, 20.0) / 100
    if not boost:
        return rgb
    colourful = ImageEnhance.Color(rgb).enhance(1 + boost)
    return ImageEnhance.Contrast(colourful).enhance(1 + boost / 2)


_PLAIN = _Pipeline(_lanczos, None)
_PIPELINES: Mapping[str, _Pipeline] = MappingProxyType(
    {
        SWINIR: _Pipeline(_lanczos, _swinir_refine),
        CLARITY: _Pipeline(_bicubic, _clarity_refine),
        CCSR: _Pipeline(_ccsr_resize, _ccsr_refine),
        SD_LATENT_UPSCALER: _Pipeline(_latent_resize, _latent_refine),
    }
)


# --- encoding -------------------------------------------------------------------------------------


def encode_output(image: Image.Image, *, output_format: OutputFormat, quality: int) -> bytes:
    """Encode the upscaled image as the task's ``outputFormat``.

    JPG is flattened onto white (it has no alpha) and PNG/WEBP keep alpha. The encoder settings
    favour speed: JPEG without ``optimize``, PNG at ``compress_level=1``, WEBP at ``method=0``.

    Args:
        image: The image to encode (any mode; converted as needed).
        output_format: ``"JPG"``, ``"PNG"`` or ``"WEBP"`` (any case; ``"JPEG"`` is accepted).
        quality: ``outputQuality``, 20 to 99; used by JPG and WEBP, ignored by PNG.

    Returns:
        The encoded file.

    Raises:
        ImagingError: ``invalidOutputFormat`` or ``invalidOutputQuality``.
    """
    wire = _output_name(output_format)
    _check_quality(quality)
    work = _to_working_mode(image)
    buffer = io.BytesIO()
    if wire == "JPG":
        if work.mode == "RGBA":
            flat = Image.new("RGB", work.size, _WHITE)
            flat.paste(work, mask=work.getchannel("A"))
            work = flat
        work.save(buffer, "JPEG", quality=quality, optimize=False)
    elif wire == "PNG":
        work.save(buffer, "PNG", compress_level=1)
    else:
        work.save(buffer, "WEBP", quality=quality, method=0)
    return buffer.getvalue()


def _output_name(output_format: str) -> OutputFormat:
    name = _WIRE_FORMATS.get(output_format.upper()) if isinstance(output_format, str) else None
    if name is None:
        raise ImagingError(
            "invalidOutputFormat",
            f"outputFormat must be JPG, PNG or WEBP, not {_json(output_format)}"[:200],
            parameter="outputFormat",
        )
    return name


def _check_quality(quality: int) -> None:
    if type(quality) is not int or not _MIN_QUALITY <= quality <= _MAX_QUALITY:
        raise ImagingError(
            "invalidOutputQuality",
            f"outputQuality must be a whole number from {_MIN_QUALITY} to {_MAX_QUALITY}, "
            f"not {_json(quality)}"[:200],
            parameter="outputQuality",
        )


# --- the whole pipeline ---------------------------------------------------------------------------


def render(
    raw_or_image: bytes | Image.Image,
    *,
    model: str,
    factor: float,
    settings: Mapping[str, Any] | None,
    output_format: str = "JPG",
    quality: int = 95,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> Rendered:
    """Decode, cap to 4096x4096, upscale and encode one input: the server's whole task body.

    Options are checked before any pixel work, so a bad ``outputFormat`` fails fast.

    Args:
        raw_or_image: The input file's bytes, or an already decoded Pillow image.
        model: The AIR id that selects the pipeline.
        factor: ``upscaleFactor``.
        settings: The task's ``settings`` by wire name, or ``None``.
        output_format: ``outputFormat``: ``"JPG"``, ``"PNG"`` or ``"WEBP"``.
        quality: ``outputQuality``, 20 to 99.
        max_pixels: The largest accepted input, in pixels.

    Returns:
        The encoded output with its MIME type, extension and sizes.

    Raises:
        ImagingError: the input or an option cannot be used; ``code`` says why.
    """
    wire = _output_name(output_format)
    _check_quality(quality)
    _check_factor(factor)
    _Options.from_settings(settings)
    if isinstance(raw_or_image, Image.Image):
        image = raw_or_image
        limit = _pixel_limit(max_pixels)
        if image.width * image.height > limit:
            raise _too_large(f"{image.width}x{image.height} is over {limit} pixels")
    else:
        image = decode_image(raw_or_image, max_pixels=max_pixels)
    input_width, input_height = image.size
    upscaled = upscale_image(
        fit_within_cap(image, factor), model=model, factor=factor, settings=settings
    )
    mime, extension = _OUTPUTS[wire]
    return Rendered(
        data=encode_output(upscaled, output_format=wire, quality=quality),
        mime=mime,
        extension=extension,
        width=upscaled.width,
        height=upscaled.height,
        input_width=input_width,
        input_height=input_height,
    )


def cost_of(model: str, width: int, height: int) -> float:
    """The made-up USD price of an output of ``width`` x ``height`` pixels with ``model``.

    Args:
        model: The AIR id; unknown ids cost :data:`DEFAULT_PRICE` per megapixel.
        width: Output width in pixels.
        height: Output height in pixels.

    Returns:
        ``PRICES[model] * width * height / 1e6``, rounded to 6 decimals.
    """
    per_megapixel = PRICES.get(model, DEFAULT_PRICE)
    return round(per_megapixel * width * height / 1_000_000, 6)


def _json(value: object) -> str:
    """A value as the wire would show it (JSON), for messages that reach clients."""
    try:
        return orjson.dumps(value).decode()[:60]
    except TypeError:
        return type(value).__name__
