"""Tests for upscale_stream.inputs: turning user sources into ``inputImage`` values."""

from __future__ import annotations

import base64
import io
import random
import uuid
import warnings
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image, ImageFile

from upscale_stream.errors import InvalidTask
from upscale_stream.inputs import (
    SUPPORTED_MIME,
    UUID_FORM,
    EncodedImage,
    ImageSource,
    PreparedInput,
    decode_inline,
    is_uuid,
    needs_thread,
    prepare_input,
    sniff_mime,
    wire_value,
)

UUID = "fd613011-3872-4f37-b4aa-0d343c051a27"


def noisy_image(size: tuple[int, int] = (16, 16), mode: str = "RGB") -> Image.Image:
    """A deterministic noise image, so that compressed files are not trivially small."""
    bands = len(Image.new(mode, (1, 1)).getbands())
    noise = random.Random(f"{size}{mode}").randbytes(size[0] * size[1] * bands)
    return Image.frombytes(mode, size, noise)


def encode(image: Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def image_bytes(fmt: str, size: tuple[int, int] = (16, 16)) -> bytes:
    return encode(noisy_image(size), fmt)


def open_data_uri(value: str) -> tuple[str, Image.Image]:
    """Split a data URI into its MIME type and the decoded, fully loaded image."""
    header, payload = value.split(",", 1)
    assert header.startswith("data:") and header.endswith(";base64")
    image = Image.open(io.BytesIO(base64.b64decode(payload, validate=True)))
    image.load()
    return header[len("data:") : -len(";base64")], image


def data_uri(raw: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(raw).decode('ascii')}"


def rejected(source: object, code: str, **options: object) -> InvalidTask:
    """Prepare ``source``, expect InvalidTask with ``code``, and return it."""
    with pytest.raises(InvalidTask) as caught:
        prepare_input(source, **options)  # type: ignore[arg-type]
    assert caught.value.parameter == "inputImage"
    assert caught.value.code == code, str(caught.value)
    assert "inputImage" in str(caught.value)
    return caught.value


# UUIDs and URLs


@pytest.mark.parametrize("text", [UUID, UUID.upper(), str(uuid.uuid1()), str(uuid.uuid4())])
def test_uuid_strings_pass_through_unchanged(text: str) -> None:
    assert prepare_input(text) == PreparedInput(text, "uuid", None, None, None, None)


@pytest.mark.parametrize(
    "text",
    [
        UUID.replace("-", ""),
        "{" + UUID + "}",
        "urn:uuid:" + UUID,
        UUID + "\n",
        UUID[:-1] + "g",
        UUID[:-1],
    ],
)
def test_is_uuid_rejects_non_canonical_spellings(text: str) -> None:
    assert not is_uuid(text)


_UUID_ALPHABET = "0123456789abcdefABCDEF-gG xX_\u00e9\u0660\udc80"


@settings(max_examples=2000, deadline=None)
@given(
    st.one_of(
        st.uuids().map(str),
        st.uuids().map(lambda u: str(u).upper()),
        st.text(alphabet=_UUID_ALPHABET, min_size=34, max_size=38),
        # a UUID with one character swapped for anything: the near misses
        st.tuples(st.uuids().map(str), st.integers(0, 35), st.characters()).map(
            lambda t: t[0][: t[1]] + t[2] + t[0][t[1] + 1 :]
        ),
    )
)
def test_is_uuid_accepts_exactly_what_the_uuid_form_regex_accepts(text: str) -> None:
    """is_uuid's translate-and-compare test is held to UUID_FORM, the spec as a regex."""
    assert is_uuid(text) == (UUID_FORM.fullmatch(text) is not None)


@pytest.mark.parametrize(
    "url", ["https://example.com/cat.png", "http://127.0.0.1:8080/a?b=c", "HTTPS://Example.com/x"]
)
def test_http_and_https_urls_pass_through_unchanged(url: str) -> None:
    prepared = prepare_input(url)
    assert prepared.kind == "url"
    assert prepared.value is url
    assert prepared.mime is None


@pytest.mark.parametrize("url", ["ftp://example.com/cat.png", "file:///tmp/cat.png"])
def test_urls_with_other_schemes_are_rejected_asking_for_http(url: str) -> None:
    error = rejected(url, "invalidInputImage")
    assert "http(s)" in error.reason


@pytest.mark.parametrize(
    "url", ["https:///cat.png", "https://", "http://[::1/x", "http://a:99999/x", "http://a b/x"]
)
def test_urls_without_a_host_or_that_do_not_parse_are_rejected(url: str) -> None:
    rejected(url, "invalidInputImage")


# Local data


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP"])
def test_bytes_become_a_data_uri_that_decodes_to_the_same_image(fmt: str) -> None:
    raw = image_bytes(fmt, (12, 8))
    prepared = prepare_input(raw)
    assert prepared.kind == "data_uri"
    assert prepared.mime == SUPPORTED_MIME[fmt]
    assert (prepared.size_bytes, prepared.width, prepared.height) == (len(raw), 12, 8)
    assert prepared.value == data_uri(raw, SUPPORTED_MIME[fmt])
    mime, image = open_data_uri(prepared.value)
    assert (mime, image.format, image.size) == (SUPPORTED_MIME[fmt], fmt, (12, 8))


def test_bytearray_and_memoryview_give_the_same_result_as_bytes() -> None:
    raw = image_bytes("PNG")
    expected = prepare_input(raw)
    assert prepare_input(bytearray(raw)) == expected
    assert prepare_input(memoryview(raw)) == expected


def test_a_path_and_a_string_naming_an_existing_file_are_read_and_encoded(tmp_path: Path) -> None:
    raw = image_bytes("JPEG")
    path = tmp_path / "photo.jpg"
    path.write_bytes(raw)
    for source in (path, str(path)):
        prepared = prepare_input(source)
        assert prepared.kind == "data_uri"
        assert prepared.value == data_uri(raw, "image/jpeg")


def test_wire_value_is_prepare_inputs_value_with_local_data_kept_as_base64_bytes(
    tmp_path: Path,
) -> None:
    # What a task's payload is built from (upscale(), upscale_many): the same value, but a
    # data URI made from local data stays as its base64 bytes, never a str of the image's size.
    raw = image_bytes("PNG")
    path = tmp_path / "photo.png"
    path.write_bytes(raw)
    image = noisy_image()
    already = data_uri(raw, "image/png")
    for source in (path, str(path), raw, bytearray(raw), image):
        value = wire_value(source)
        assert isinstance(value, EncodedImage), source
        assert str(value) == prepare_input(source).value
        if source is not image:
            assert base64.b64decode(value.data, validate=True) == raw
    for source in (UUID, "https://example.com/a.png", already, already.split(",", 1)[1]):
        assert wire_value(source) == prepare_input(source).value  # text passes as text
    with pytest.raises(InvalidTask) as caught:
        wire_value(tmp_path / "nope.png")
    assert caught.value.code == "inputImageNotFound"


def test_a_missing_path_is_rejected_naming_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope.png"
    error = rejected(missing, "inputImageNotFound")
    assert str(missing) in str(error)


def test_a_missing_relative_path_string_is_rejected_not_sent_as_a_url(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    error = rejected("images/cat.png", "inputImageNotFound")
    assert "neither a UUID" in error.reason
    assert str(tmp_path / "images" / "cat.png") in error.reason


def test_a_string_that_is_nothing_we_know_is_rejected_as_invalid() -> None:
    error = rejected("hello there", "invalidInputImage")
    assert "existing file" in error.reason


def test_a_directory_is_rejected(tmp_path: Path) -> None:
    rejected(tmp_path, "invalidInputImage")


def test_a_file_over_max_bytes_is_rejected_before_reading(tmp_path: Path) -> None:
    path = tmp_path / "big.png"
    path.write_bytes(image_bytes("PNG"))
    rejected(path, "imageTooLarge", max_bytes=10)


def test_bytes_over_max_bytes_are_rejected() -> None:
    rejected(image_bytes("PNG"), "imageTooLarge", max_bytes=10)


def test_empty_bytes_are_rejected() -> None:
    rejected(b"", "invalidInputImage")


@pytest.mark.parametrize("fmt", ["GIF", "BMP", "TIFF"])
def test_bytes_in_other_formats_are_rejected_naming_the_format(fmt: str) -> None:
    error = rejected(image_bytes(fmt), "unsupportedImageFormat")
    assert fmt in error.reason
    assert "PNG, JPEG or WEBP" in error.reason


def test_bytes_that_are_no_image_at_all_are_rejected_as_unsupported() -> None:
    rejected(b"just some text, not an image", "unsupportedImageFormat")


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP"])
def test_truncated_images_are_rejected_as_corrupt(fmt: str) -> None:
    raw = image_bytes(fmt, (32, 32))
    rejected(raw[: len(raw) // 2], "corruptImage")


# Each variant's container differs: one IDAT or several, VP8 or VP8X + ALPH, one scan or many,
# and a comment segment holding the bytes of an end-of-image marker before the scan.
_VARIANTS = {
    "PNG RGB": ("PNG", "RGB", {}),
    "PNG RGBA": ("PNG", "RGBA", {}),
    "JPEG": ("JPEG", "RGB", {}),
    "JPEG progressive": ("JPEG", "RGB", {"progressive": True}),
    "JPEG with FF D9 in a comment": ("JPEG", "RGB", {"comment": b"\xff\xd9 not the end"}),
    "WEBP lossy": ("WEBP", "RGB", {}),
    "WEBP lossless RGBA": ("WEBP", "RGBA", {"lossless": True}),
}


@pytest.mark.parametrize("variant", _VARIANTS)
def test_an_image_cut_short_anywhere_is_rejected_as_corrupt_by_the_default_check(
    variant: str,
) -> None:
    fmt, mode, options = _VARIANTS[variant]
    buffer = io.BytesIO()
    noisy_image((16, 16), mode).save(buffer, fmt, **options)
    raw = buffer.getvalue()
    assert prepare_input(raw).size_bytes == len(raw)
    for cut in range(12, len(raw)):  # shorter prefixes are not recognisable as the format
        with pytest.raises(InvalidTask) as caught:
            prepare_input(raw[:cut])
        assert caught.value.code == "corruptImage", f"cut at {cut} of {len(raw)}"


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP"])
def test_the_default_check_decodes_no_pixels(fmt: str, monkeypatch: pytest.MonkeyPatch) -> None:
    raw = image_bytes(fmt, (32, 32))

    def refuse(self: object) -> None:
        raise AssertionError("the default check decoded the pixels")

    monkeypatch.setattr(ImageFile.ImageFile, "load", refuse)
    assert (prepare_input(raw).width, prepare_input(raw).height) == (32, 32)
    rejected(raw, "corruptImage", verify="full")  # the full check does call it


def test_damage_inside_complete_png_data_passes_the_default_check_but_not_the_full_one() -> None:
    # What the default check gives up (the server decodes every input and reports it).
    raw = image_bytes("PNG", (64, 64))
    middle = len(raw) // 2
    damaged = raw[:middle] + bytes(16) + raw[middle + 16 :]
    assert prepare_input(damaged).mime == "image/png"
    rejected(damaged, "corruptImage", verify="full")


def test_a_jpeg_with_junk_between_its_segments_is_accepted_as_pillow_accepts_it() -> None:
    raw = image_bytes("JPEG", (8, 8))
    app0_end = 4 + int.from_bytes(raw[4:6], "big")  # SOI, then the APP0 segment
    junky = raw[:app0_end] + b"\x00junk\xff\xff" + raw[app0_end:]
    assert prepare_input(junky, verify="full").size_bytes == len(junky)  # Pillow decodes it
    assert prepare_input(junky).size_bytes == len(junky)
    rejected(junky[:-2], "corruptImage")


def test_a_png_with_bytes_after_its_iend_chunk_is_accepted_as_pillow_accepts_it() -> None:
    raw = image_bytes("PNG", (8, 8)) + b"trailing bytes"
    assert prepare_input(raw).size_bytes == len(raw)
    assert prepare_input(raw, verify="full").size_bytes == len(raw)


def test_truncated_images_pass_when_verify_is_false() -> None:
    raw = image_bytes("PNG", (32, 32))[:200]
    prepared = prepare_input(raw, verify=False)
    assert (prepared.mime, prepared.width, prepared.height) == ("image/png", None, None)


def test_the_data_uri_we_build_uses_the_sniffed_format_not_the_file_name(tmp_path: Path) -> None:
    path = tmp_path / "really-a-webp.png"
    path.write_bytes(image_bytes("WEBP"))
    assert prepare_input(path).value.startswith("data:image/webp;base64,")


# Pillow images


def test_an_rgba_pil_image_keeps_its_alpha_channel() -> None:
    image = Image.new("RGBA", (8, 8), (255, 0, 0, 128))
    prepared = prepare_input(image)
    assert (prepared.mime, prepared.width, prepared.height) == ("image/png", 8, 8)
    _, decoded = open_data_uri(prepared.value)
    assert decoded.format == "PNG"
    assert decoded.mode == "RGBA"
    assert decoded.getpixel((3, 3)) == (255, 0, 0, 128)


def test_a_palette_pil_image_keeps_its_transparent_colour() -> None:
    image = Image.new("P", (8, 8), 0)
    image.putpalette([0, 0, 0, 255, 255, 255])
    image.info["transparency"] = 0
    _, decoded = open_data_uri(prepare_input(image).value)
    assert decoded.mode == "P"
    assert decoded.info["transparency"] == 0


@pytest.mark.parametrize(("mode", "stored"), [("CMYK", "RGB"), ("PA", "RGBA"), ("I", "I;16")])
def test_pil_modes_png_cannot_store_are_converted(mode: str, stored: str) -> None:
    _, decoded = open_data_uri(prepare_input(Image.new(mode, (8, 8))).value)
    assert (decoded.mode, decoded.size) == (stored, (8, 8))


def test_a_lossless_round_trip_keeps_every_pixel_of_an_rgb_pil_image() -> None:
    image = noisy_image((8, 8))
    _, decoded = open_data_uri(prepare_input(image).value)
    assert decoded.tobytes() == image.tobytes()


def test_an_empty_pil_image_is_rejected() -> None:
    rejected(Image.new("RGB", (0, 0)), "invalidInputImage")


def test_a_pil_image_whose_png_is_over_max_bytes_is_rejected() -> None:
    rejected(noisy_image(), "imageTooLarge", max_bytes=100)


# Data URIs and bare base64


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP"])
def test_a_data_uri_passes_through_unchanged_with_its_dimensions(fmt: str) -> None:
    raw = image_bytes(fmt, (8, 4))
    text = data_uri(raw, SUPPORTED_MIME[fmt])
    prepared = prepare_input(text)
    assert prepared == PreparedInput(text, "data_uri", SUPPORTED_MIME[fmt], len(raw), 8, 4)
    assert prepared.value is text


def test_a_long_data_uri_is_checked_by_its_head_and_keeps_its_dimensions() -> None:
    noise = Image.effect_noise((300, 200), 80).convert("RGB")
    buffer = io.BytesIO()
    noise.save(buffer, format="PNG")
    text = data_uri(buffer.getvalue(), "image/png")
    assert len(text) > 10_000
    prepared = prepare_input(text)
    assert (prepared.width, prepared.height, prepared.size_bytes) == (
        300,
        200,
        len(buffer.getvalue()),
    )
    assert not needs_thread(text)


def test_a_data_uri_may_declare_image_jpg() -> None:
    text = data_uri(image_bytes("JPEG"), "image/jpg")
    assert prepare_input(text).mime == "image/jpeg"


@pytest.mark.parametrize("verify", [True, False])
def test_a_data_uri_whose_declared_mime_lies_is_rejected(verify: bool) -> None:
    error = rejected(data_uri(image_bytes("JPEG"), "image/png"), "invalidInputImage", verify=verify)
    assert "declares image/png" in error.reason
    assert "JPEG" in error.reason


@pytest.mark.parametrize(
    "text",
    [
        data_uri(image_bytes("PNG"), "image/PNG"),
        "data:image/png," + "iVBORw0KGgo",
        "data:image/png;base64,not base64!",
        "data:image/png;base64,iVBORw0KGgo",  # bad padding
    ],
)
def test_malformed_data_uris_are_rejected(text: str) -> None:
    rejected(text, "invalidInputImage")


def test_a_data_uri_of_another_image_format_is_unsupported_naming_it() -> None:
    error = rejected(data_uri(image_bytes("GIF"), "image/gif"), "unsupportedImageFormat")
    assert "image/gif" in error.reason


def test_a_data_uri_with_an_empty_payload_is_rejected() -> None:
    rejected("data:image/png;base64,", "invalidInputImage")


def test_a_data_uri_with_a_truncated_image_is_rejected_as_corrupt() -> None:
    raw = image_bytes("PNG", (32, 32))
    rejected(data_uri(raw[: len(raw) // 2], "image/png"), "corruptImage")


def test_a_data_uri_over_max_bytes_is_rejected() -> None:
    rejected(data_uri(image_bytes("PNG"), "image/png"), "imageTooLarge", max_bytes=100)


def test_bare_base64_image_data_passes_through_unchanged() -> None:
    raw = image_bytes("PNG", (8, 8))
    text = base64.b64encode(raw).decode("ascii")
    assert prepare_input(text) == PreparedInput(text, "base64", "image/png", len(raw), 8, 8)


def test_bare_base64_of_a_gif_is_rejected_naming_the_format() -> None:
    error = rejected(base64.b64encode(image_bytes("GIF")).decode(), "unsupportedImageFormat")
    assert "GIF" in error.reason


# Limits and error messages


def test_a_decompression_bomb_is_rejected_as_too_large(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    raw = image_bytes("PNG", (16, 16))  # 256 pixels: over twice the limit, Pillow raises
    error = rejected(raw, "imageTooLarge")
    assert "MAX_IMAGE_PIXELS" in error.reason


def test_an_image_just_over_the_pixel_limit_is_rejected_when_pillow_only_warns(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    raw = image_bytes("PNG", (12, 12))  # 144 pixels: Pillow warns but would decode
    with pytest.warns(Image.DecompressionBombWarning):
        rejected(raw, "imageTooLarge")


def test_the_pixel_limit_warning_raised_as_an_error_is_still_reported_as_too_large(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        rejected(data_uri(image_bytes("PNG", (12, 12)), "image/png"), "imageTooLarge")


def test_errors_never_carry_the_whole_payload() -> None:
    raw = image_bytes("JPEG", (64, 64))
    payload = base64.b64encode(raw).decode("ascii")
    for source in (data_uri(raw, "image/png"), base64.b64encode(image_bytes("GIF", (64, 64)))):
        with pytest.raises(InvalidTask) as caught:
            prepare_input(source.decode() if isinstance(source, bytes) else source)
        text = str(caught.value)
        assert text.startswith("inputImage=")
        assert len(text) < 400
        assert len(str(caught.value.value)) < 100
        assert payload[32:96] not in text


def test_long_text_that_is_not_valid_base64_is_rejected_without_echoing_it() -> None:
    text = base64.b64encode(image_bytes("PNG", (32, 32))).decode("ascii")[:-1]  # bad padding
    error = rejected(text, "invalidInputImage")
    assert len(str(error)) < 400
    assert text[32:96] not in str(error)


def test_a_source_of_an_unsupported_type_is_rejected() -> None:
    error = rejected(42, "invalidInputImage")
    assert "int" in error.reason


# Helpers


@pytest.mark.parametrize(
    ("head", "mime"),
    [
        (b"\x89PNG\r\n\x1a\n\x00\x00", "image/png"),
        (b"\xff\xd8\xff\xe0", "image/jpeg"),
        (b"RIFF\x10\x00\x00\x00WEBPVP8 ", "image/webp"),
        (b"RIFF\x10\x00\x00\x00WAVE", None),
        (b"GIF89a", None),
        (b"", None),
    ],
)
def test_sniff_mime_recognises_only_png_jpeg_and_webp(head: bytes, mime: str | None) -> None:
    assert sniff_mime(head) == mime


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        (UUID, False),
        ("https://example.com/cat.png", False),
        ("data:image/png;base64," + "A" * 1000, False),
        ("data:image/png;base64," + "A" * 400_000, False),  # checked by its head only
        ("photo.png", True),
        (b"x" * 1000, False),
        (bytearray(300 * 1024), True),
        (memoryview(bytes(300 * 1024)), True),
        (Path("photo.png"), True),
        (Image.new("RGB", (1, 1)), True),
    ],
)
def test_needs_thread_is_true_only_for_real_cpu_or_io(source: ImageSource, expected: bool) -> None:
    assert needs_thread(source) is expected


# Properties

_VALID_IMAGES = [image_bytes(fmt, (8, 8)) for fmt in SUPPORTED_MIME]
_MAGIC = [b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"RIFF\x00\x01\x00\x00WEBP"]


@st.composite
def damaged_images(draw: st.DrawFn) -> bytes:
    """A valid image with a random slice overwritten and a random tail cut off."""
    raw = draw(st.sampled_from(_VALID_IMAGES))
    start = draw(st.integers(0, len(raw)))
    patch = draw(st.binary(max_size=16))
    end = draw(st.integers(0, len(raw)))
    return (raw[:start] + patch + raw[start + len(patch) :])[: max(end, 1)]


arbitrary_bytes = st.one_of(
    st.binary(max_size=512),
    st.tuples(st.sampled_from(_MAGIC), st.binary(max_size=512)).map(b"".join),
    damaged_images(),
)


@settings(max_examples=300, deadline=None)
@given(arbitrary_bytes)
def test_arbitrary_bytes_give_a_valid_data_uri_or_invalid_task(raw: bytes) -> None:
    try:
        prepared = prepare_input(raw)
    except InvalidTask as error:
        assert error.parameter == "inputImage"
        return
    mime = sniff_mime(raw)
    assert mime is not None
    assert prepared.kind == "data_uri"
    assert prepared.value == data_uri(raw, mime)
    assert (prepared.width, prepared.height) == Image.open(io.BytesIO(raw)).size


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=80))
def test_arbitrary_strings_give_a_prepared_input_or_invalid_task(text: str) -> None:
    try:
        prepared = prepare_input(text)
    except InvalidTask as error:
        assert error.parameter == "inputImage"
        return
    assert prepared.value is text


# -- decode_inline: the one decoder of inline images (client checks and server tasks) -------


def test_decode_inline_gives_the_bytes_and_type_of_a_data_uri_and_of_bare_base64() -> None:
    raw = image_bytes("PNG", (6, 4))
    text = base64.b64encode(raw).decode("ascii")
    assert decode_inline(f"data:image/png;base64,{text}") == (raw, "image/png")
    assert decode_inline(text) == (raw, "image/png")


@pytest.mark.parametrize(
    ("value", "code"),
    [
        pytest.param("data:text/plain;base64,{png}", "invalidInputImage", id="text/plain URI"),
        pytest.param("data:image/jpeg;base64,{png}", "invalidInputImage", id="declared jpeg"),
        pytest.param("{wrapped}", "invalidInputImage", id="line breaks"),
        pytest.param("data:image/png,{png}", "invalidInputImage", id="not base64 URI"),
        pytest.param("{gif}", "unsupportedImageFormat", id="gif"),
        pytest.param("", "invalidInputImage", id="empty"),
    ],
)
def test_decode_inline_refuses_what_the_client_refuses(value: str, code: str) -> None:
    png = base64.b64encode(image_bytes("PNG", (40, 40))).decode("ascii")
    gif = base64.b64encode(image_bytes("GIF", (4, 4))).decode("ascii")
    wrapped = "\n".join(png[i : i + 76] for i in range(0, len(png), 76))
    text = value.format(png=png, gif=gif, wrapped=wrapped)
    with pytest.raises(InvalidTask) as server_side:
        decode_inline(text, parameter="media")
    assert (server_side.value.code, server_side.value.parameter) == (code, "media")
    if text:
        with pytest.raises(InvalidTask):  # the client's check agrees
            prepare_input(text)
