"""Turning what a user hands us into the ``inputImage`` value of an upscale task.

The API takes the UUID of an uploaded image, a public URL, a data URI or bare base64, in PNG,
JPEG or WEBP (``upscale-api.txt``, ``inputImage``). UUIDs and URLs pass through; local sources
(paths, bytes, Pillow images) become a data URI, encoded once. Before anything is sent we check
the real format from the magic bytes, the MIME type a data URI declares, and by default
(``verify=True``) the header as Pillow reads it (dimensions, the pixel limit against
decompression bombs) and that the file's structure is complete (:func:`_incomplete`), which
catches truncated files at a fiftieth of the cost of decoding every pixel (``verify="full"``,
for damage inside the compressed data, which the server reports as ``corruptImage`` anyway).
Rejections are
:class:`~upscale_stream.errors.InvalidTask` with ``parameter="inputImage"`` and a short ``value``,
never the whole payload. No networking and no asyncio here: the async client asks
:func:`needs_thread` and then runs :func:`prepare_input` in ``asyncio.to_thread``.
"""

from __future__ import annotations

import base64
import binascii
import io
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, TypeAlias
from urllib.parse import urlsplit

from PIL import Image

from upscale_stream import b64
from upscale_stream.errors import InvalidTask

__all__ = [
    "SUPPORTED_MIME",
    "UUID_FORM",
    "EncodedImage",
    "ImageSource",
    "PreparedInput",
    "Verify",
    "decode_inline",
    "is_uuid",
    "needs_thread",
    "prepare_input",
    "sniff_mime",
    "wire_value",
]

Verify: TypeAlias = bool | Literal["full"]
"""How much of local image data :func:`prepare_input` checks: ``False`` the magic bytes,
``True`` the header and the file structure, ``"full"`` also every pixel."""

ImageSource: TypeAlias = str | bytes | bytearray | memoryview | os.PathLike[str] | Image.Image
"""Anything :func:`prepare_input` accepts: a UUID, URL, data URI, base64 text or file name
(``str``), raw image bytes, a path, or a Pillow image."""

SUPPORTED_MIME: dict[str, str] = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp"}
"""Pillow format name -> MIME type, for the formats the API accepts."""

_PARAMETER = "inputImage"
_INVALID = "invalidInputImage"
_PNG = "image/png"
_THREAD_THRESHOLD = 256 * 1024
_HEAD_CHARS = 4096  # base64 characters of a long data URI decoded to check its format
_MIN_BASE64_CHARS = 64
UUID_FORM = re.compile(r"[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}")
"""A canonical hyphenated UUID, any version or case: what :func:`is_uuid` accepts, as a regex
(``fullmatch``; the tests hold :func:`is_uuid` to it)."""
_HEX_TO_ZERO = bytes.maketrans(b"0123456789abcdefABCDEF", b"0" * 22)
_UUID_SHAPE = b"00000000-0000-0000-0000-000000000000"
_BASE64_RE = re.compile(r"[A-Za-z0-9+/]+={0,2}")
_SCHEME_RE = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://")
_DATA_URI_RE = re.compile(r"data:image/(png|jpeg|jpg|webp);base64,")  # then the payload
_OTHER_IMAGE_URI_RE = re.compile(r"data:image/([a-z0-9.+-]{1,20});base64,")
_DECLARED_MIME = {"png": _PNG, "jpeg": "image/jpeg", "jpg": "image/jpeg", "webp": "image/webp"}
_FORMAT_OF_MIME = {mime: name for name, mime in SUPPORTED_MIME.items()}
_PNG_MODES = frozenset({"1", "L", "LA", "I;16", "I;16B", "P", "RGB", "RGBA"})
# Modes PNG cannot store, mapped to the closest mode it can; the rest go to RGB or RGBA.
_PNG_CONVERSIONS = {"La": "LA", "PA": "RGBA", "RGBa": "RGBA", "I": "I;16", "F": "I;16"}


@dataclass(frozen=True, slots=True)
class PreparedInput:
    """An ``inputImage`` value ready for the wire, with what we learned while preparing it.

    Attributes:
        value: The string to send as ``inputImage``.
        kind: How ``value`` is expressed: ``"uuid"``, ``"url"``, ``"data_uri"`` or ``"base64"``.
        mime: The MIME type of local data we encoded or checked; ``None`` for UUIDs and URLs.
        size_bytes: The size of the raw (decoded) image bytes, for local data.
        width: The width in pixels, when Pillow read the header (``verify`` not ``False``, or a
            Pillow image).
        height: The height in pixels, when Pillow read the image.
    """

    value: str
    kind: Literal["uuid", "url", "data_uri", "base64"]
    mime: str | None = None
    size_bytes: int | None = None
    width: int | None = None
    height: int | None = None


class EncodedImage:
    """A data URI made from local image bytes, kept as its base64 bytes (:func:`wire_value`).

    A task's payload is joined from these bytes in one copy
    (:meth:`~upscale_stream.models.TaskTemplate.encode`); as a ``str`` the same URI would cost
    three more copies of the image's size (bytes to ``str``, the URI's prefix, the JSON
    string), each a fresh buffer the size of the image. ``str()`` gives the data URI.

    Args:
        mime: The image's MIME type (``image/png``, ``image/jpeg`` or ``image/webp``).
        data: The standard base64 of the image (ASCII; nothing in it needs a JSON escape).
    """

    __slots__ = ("data", "head", "mime")

    def __init__(self, mime: str, data: bytes) -> None:
        self.mime = mime
        self.data = data
        self.head = f'"data:{mime};base64,'.encode()
        """The JSON string's opening quote and the URI up to its payload."""

    def __str__(self) -> str:
        return f"data:{self.mime};base64,{self.data.decode('ascii')}"

    def __repr__(self) -> str:
        return f"EncodedImage({self.mime!r}, <{len(self.data)} base64 bytes>)"


@dataclass(frozen=True, slots=True)
class _Local:
    """Local image data (a file, bytes, a Pillow image), checked: what becomes a data URI."""

    raw: bytes
    mime: str
    width: int | None
    height: int | None

    def encoded(self) -> EncodedImage:
        return EncodedImage(self.mime, b64.encode(self.raw))

    def prepared(self) -> PreparedInput:
        value = str(self.encoded())  # the data URI: EncodedImage is the one place that spells it
        return PreparedInput(value, "data_uri", self.mime, len(self.raw), self.width, self.height)


def is_uuid(text: str) -> bool:
    """Tell whether ``text`` is a canonical, hyphenated UUID string.

    Any version and either case is accepted. The server only issues v4 UUIDs, but we are lenient
    when reading and leave the final word to it.

    Args:
        text: The string to check.

    Returns:
        ``True`` for ``xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`` in hexadecimal digits.
    """
    # Every hex digit to "0", then one compare: 1.4k instructions against UUID_FORM's 3.5k
    # (it runs once per task). isascii() first: a lone surrogate cannot be encoded.
    return (
        len(text) == 36 and text.isascii() and text.encode().translate(_HEX_TO_ZERO) == _UUID_SHAPE
    )


def sniff_mime(head: bytes) -> str | None:
    """Recognise PNG, JPEG and WEBP data by its magic bytes.

    Args:
        head: The first bytes of the data; 12 are enough.

    Returns:
        ``"image/png"``, ``"image/jpeg"`` or ``"image/webp"``, or ``None`` for anything else.
    """
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    return None


def needs_thread(source: ImageSource) -> bool:
    """Tell whether preparing ``source`` may take real CPU or I/O.

    The async client runs :func:`prepare_input` in ``asyncio.to_thread`` when this is ``True``:
    for paths and file names (reading a file), Pillow images (PNG encoding), and bytes or
    base64 text of more than 256 KiB (encoding and checking).

    Args:
        source: What the user passed as the input image.

    Returns:
        ``False`` when preparing is cheap enough to run on the event loop.
    """
    if isinstance(source, str):
        if is_uuid(source) or _SCHEME_RE.match(source):
            return False
        if source.startswith("data:"):
            return False  # checked by its head only
        if _looks_like_base64(source):
            return len(source) * 3 // 4 > _THREAD_THRESHOLD
        return True  # it may name a file
    if isinstance(source, bytes | bytearray | memoryview):
        return memoryview(source).nbytes > _THREAD_THRESHOLD
    return True


def prepare_input(
    source: ImageSource, *, verify: Verify = True, max_bytes: int = 50 * 1024 * 1024
) -> PreparedInput:
    """Turn ``source`` into the ``inputImage`` value of an upscale task.

    UUIDs and ``http(s)`` URLs pass through. A data URI or bare base64 text passes through
    unchanged once checked. A path, a string naming an existing file, raw bytes or a Pillow image
    becomes a ``data:<mime>;base64,...`` URI; Pillow images are encoded losslessly as PNG.

    Args:
        source: What the user passed as the input image.
        verify: How much of local image data to check. ``True`` (the default): Pillow reads
            the header (dimensions; more pixels than ``PIL.Image.MAX_IMAGE_PIXELS`` is a
            decompression bomb) and the structure must be complete (PNG chunks up to ``IEND``,
            a JPEG end-of-image marker after its scan data, the WEBP RIFF chunks), which
            rejects truncated files without decoding a pixel. ``"full"``: also decode every
            pixel, to reject damage inside the compressed data (about 2.6 ms per 0.45 MB file
            against 0.06 ms; the server decodes anyway and reports such a file as
            ``corruptImage``). ``False``: only the magic bytes, and ``width`` and ``height``
            stay ``None``. Text that is already encoded (a data URI or base64 longer than
            4 KiB) is checked by its head only: format, declared MIME and, when the header
            fits, the dimensions; decoding it whole would cost more than sending it, and the
            server validates it anyway.
        max_bytes: The largest raw image accepted, in bytes (before base64 encoding).

    Returns:
        The value to send, how it is expressed, and what we learned about the image.

    Raises:
        InvalidTask: The source is not usable; ``code`` says why (``invalidInputImage``,
            ``unsupportedImageFormat``, ``corruptImage``, ``imageTooLarge``,
            ``inputImageNotFound``).
    """
    found = _examine(source, verify, max_bytes)
    return found if isinstance(found, PreparedInput) else found.prepared()


def wire_value(
    source: ImageSource, *, verify: Verify = True, max_bytes: int = 50 * 1024 * 1024
) -> str | EncodedImage:
    """``prepare_input(source).value``, as a task's payload takes it: a data URI made from local
    data comes back as an :class:`EncodedImage` (its base64 bytes, not a ``str``).

    Raises:
        InvalidTask: as :func:`prepare_input`.
    """
    found = _examine(source, verify, max_bytes, details=False)
    if isinstance(found, PreparedInput):
        return found.value
    return found.encoded()


def _examine(
    source: ImageSource, verify: Verify, max_bytes: int, details: bool = True
) -> PreparedInput | _Local:
    """What :func:`prepare_input` found: a value to pass as is, or local data to encode
    (``details=False``: a data URI's dimensions are not read, for a payload's sake)."""
    if isinstance(source, Image.Image):
        return _from_pillow(source, max_bytes)
    if isinstance(source, bytes | bytearray | memoryview):
        return _from_bytes(bytes(source), verify, max_bytes, f"<{memoryview(source).nbytes} bytes>")
    if isinstance(source, str):
        return _from_text(source, verify, max_bytes, details)
    if isinstance(source, os.PathLike):
        return _from_path(Path(os.fsdecode(source)), verify, max_bytes)
    raise _invalid(
        f"expected a str, bytes, a path or a PIL image, got {type(source).__name__}",
        f"<{type(source).__name__}>",
    )


def _from_text(
    text: str, verify: Verify, max_bytes: int, details: bool = True
) -> PreparedInput | _Local:
    if is_uuid(text):
        return PreparedInput(text, "uuid")
    if scheme := _SCHEME_RE.match(text):
        return _from_url(text, scheme.group(1).lower())
    shown = _shorten(text)
    if text.startswith("data:"):
        return _from_data_uri(text, verify, max_bytes, shown, details)
    if os.path.isfile(text):  # False, not an error, for names too long or with NUL bytes
        return _from_path(Path(text), verify, max_bytes)
    raw = _decode_base64(text) if _looks_like_base64(text) else None
    if raw is not None and sniff_mime(raw[:12]) is not None:
        mime, width, height = _inspect(raw, verify, max_bytes, shown)
        return PreparedInput(text, "base64", mime, len(raw), width, height)
    if raw is not None and (detected := _identify(raw)) is not None:
        raise _unsupported(f"the base64 text decodes to a {detected} image", shown)
    # The official SDK sends a missing relative path to the server as if it were a URL; we refuse.
    reason = (
        "the value is neither a UUID, an http(s) URL, a data URI, base64 image data nor an "
        "existing file"
    )
    if len(text) <= 255:  # a longer string is no file name, and may be a payload
        reason += f" (looked for {Path(text).absolute()})"
    raise _invalid(reason, shown, "inputImageNotFound" if Path(text).suffix else _INVALID)


def _from_url(text: str, scheme: str) -> PreparedInput:
    shown = _shorten(text)
    if scheme not in ("http", "https"):
        reason = f"{scheme}:// is not accepted; use an http(s) URL, or pass a local file as a path"
        raise _invalid(reason, shown)
    if any(char.isspace() for char in text):
        raise _invalid("the URL contains whitespace; percent-encode it", shown)
    try:
        parts = urlsplit(text)
        _ = parts.port  # raises ValueError for a port that is not a number in range
    except ValueError as exc:
        raise _invalid(f"the URL does not parse: {exc}", shown) from exc
    if not parts.hostname:
        raise _invalid("the URL has no host", shown)
    return PreparedInput(text, "url")


def decode_inline(
    text: str, *, max_bytes: int = 50 * 1024 * 1024, parameter: str = _PARAMETER
) -> tuple[bytes, str]:
    """The image bytes and MIME type of an inline input: a data URI or bare base64 text.

    This is the one decoder of inline images: the client's checks (:func:`prepare_input`) and
    the reference server's tasks (``inputImage``, ``imageUpload.image``, ``mediaStorage.media``)
    all apply its rule, so what one accepts the other accepts:

    * ``data:image/<png|jpeg|jpg|webp>;base64,<payload>``, whose declared type must be the
      type of the bytes (``data:text/plain;base64,<png>`` is refused), or bare base64;
    * the payload is standard base64 with its padding, without spaces or line breaks (what
      every SDK's encoder writes);
    * the bytes are PNG, JPEG or WEBP by their magic bytes. Decoding the pixels is the
      caller's next step (the server does it in a worker thread).

    Args:
        text: The inline value as sent.
        max_bytes: The largest decoded image accepted, in bytes.
        parameter: The wire field the value came in, for error messages.

    Returns:
        The decoded bytes and their MIME type (``image/png``, ``image/jpeg``, ``image/webp``).

    Raises:
        InvalidTask: ``invalidInputImage`` (not a data URI of an image, not base64, a
            declared type that is not the data's), ``unsupportedImageFormat`` or
            ``imageTooLarge``; ``parameter`` names the field.
    """
    try:
        return _decode_inline(text, max_bytes)
    except InvalidTask as exc:
        if parameter == _PARAMETER:
            raise
        raise InvalidTask(exc.reason, parameter=parameter, value=exc.value, code=exc.code) from None


def _decode_inline(text: str, max_bytes: int) -> tuple[bytes, str]:
    shown = _shorten(text)
    payload, declared = _split_inline(text, shown)
    if (estimate := len(payload) * 3 // 4) > max_bytes:  # refuse before decoding
        raise _too_large(estimate, max_bytes, shown)
    raw = _decode_base64(payload)
    if raw is None:
        raise _invalid("the value is not valid base64 (no spaces or line breaks)", shown)
    mime, _, _ = _inspect(raw, False, max_bytes, shown, declared)
    return raw, mime


def _split_inline(text: str, shown: str) -> tuple[str, str | None]:
    """The base64 payload of an inline value and the MIME type its data URI declares."""
    start, declared = _inline_start(text, shown)
    return (text[start:] if start else text), declared


def _inline_start(text: str, shown: str) -> tuple[int, str | None]:
    """Where the base64 payload of an inline value starts (0 for bare base64) and the MIME
    type its data URI declares: the payload itself is not copied (megabytes, once per task)."""
    if text[:5].lower() != "data:":
        return 0, None
    match = _DATA_URI_RE.match(text)
    if match is None:
        other = _OTHER_IMAGE_URI_RE.match(text)
        if other is not None:  # a well-formed data URI of a format the API does not take
            raise _unsupported(f"the data URI declares image/{other.group(1)}", shown)
        reason = "a data URI must look like data:image/<png|jpeg|jpg|webp>;base64,<payload>"
        raise _invalid(reason, shown)
    return match.end(), _DECLARED_MIME[match.group(1)]


def _from_data_uri(
    text: str, verify: Verify, max_bytes: int, shown: str, details: bool = True
) -> PreparedInput:
    start, declared = _inline_start(text, shown)
    length = len(text) - start  # the payload's, read in place: no copy of it
    if (estimate := length * 3 // 4) > max_bytes:  # refuse before decoding
        raise _too_large(estimate, max_bytes, shown)
    # Text the caller already encoded is checked by its head (format and declared MIME), not
    # decoded whole: that would cost more than sending it. Local files, bytes and PIL images
    # are the ones decoded fully (``verify``).
    raw = _decode_base64(text[start : start + _HEAD_CHARS])
    if raw is None:
        raise _invalid("the data URI payload is not valid base64 (no spaces or line breaks)", shown)
    if length <= _HEAD_CHARS:
        mime, width, height = _inspect(raw, verify, max_bytes, shown, declared)
    else:
        mime, _, _ = _inspect(raw, False, max_bytes, shown, declared)
        # The dimensions are for PreparedInput's reader; a task's payload needs none.
        width, height = _header_size(raw) if details else (None, None)
    padding = 0
    while padding < length and text[-1 - padding] == "=":
        padding += 1
    return PreparedInput(text, "data_uri", mime, length * 3 // 4 - padding, width, height)


def _header_size(head: bytes) -> tuple[int | None, int | None]:
    """Width and height read from an image's first bytes, when its header fits in them."""
    try:
        with Image.open(io.BytesIO(head)) as image:
            return image.size
    except Exception:  # the header did not fit in the head: size unknown, not an error
        return None, None


def _from_path(path: Path, verify: Verify, max_bytes: int) -> _Local:
    shown = str(path)
    try:
        if not path.is_file():
            if path.exists():
                raise _invalid("the path is not a regular file", shown)
            reason = f"no such file (looked for {path.absolute()})"
            raise _invalid(reason, shown, "inputImageNotFound")
        if (size := path.stat().st_size) > max_bytes:
            raise _too_large(size, max_bytes, shown)
        raw = path.read_bytes()
    except OSError as exc:
        raise _invalid(f"cannot read the file: {exc.strerror or exc}", shown) from exc
    return _from_bytes(raw, verify, max_bytes, shown)


def _from_bytes(raw: bytes, verify: Verify, max_bytes: int, shown: str) -> _Local:
    mime, width, height = _inspect(raw, verify, max_bytes, shown)
    return _Local(raw, mime, width, height)


def _from_pillow(image: Image.Image, max_bytes: int) -> _Local:
    width, height = image.size
    shown = f"<PIL image {image.mode} {width}x{height}>"
    if width == 0 or height == 0:
        raise _invalid("the image is empty", shown)
    buffer = io.BytesIO()
    try:
        if image.mode not in _PNG_MODES:  # keep alpha where there is any
            fallback = "RGBA" if image.has_transparency_data else "RGB"
            image = image.convert(_PNG_CONVERSIONS.get(image.mode, fallback))
        image.save(buffer, format="PNG")
    except ValueError as exc:  # a conversion Pillow does not support, or a closed image
        raise _invalid(f"cannot encode the image as PNG: {exc}", shown) from exc
    except Exception as exc:  # a lazily opened file that turns out to be damaged
        raise _invalid(f"cannot read the image: {exc}", shown, "corruptImage") from exc
    png = buffer.getvalue()
    if len(png) > max_bytes:
        raise _too_large(len(png), max_bytes, shown)
    return _Local(png, _PNG, width, height)


def _inspect(
    raw: bytes, verify: Verify, max_bytes: int, shown: str, declared: str | None = None
) -> tuple[str, int | None, int | None]:
    """Check ``raw`` is a supported image; return its MIME type and, if verified, its size.

    ``verify=True`` reads the header with Pillow and walks the container (:func:`_incomplete`);
    ``"full"`` decodes the pixels instead of walking the container.
    """
    if not raw:
        raise _invalid("the image data is empty", shown)
    if len(raw) > max_bytes:
        raise _too_large(len(raw), max_bytes, shown)
    mime = sniff_mime(raw[:12])
    if mime is None:
        raise _unsupported(f"the data is {_identify(raw) or 'not a known image format'}", shown)
    name = _FORMAT_OF_MIME[mime]
    if declared is not None and mime != declared:
        reason = f"the data URI declares {declared} but the data is {name}; use data:{mime}"
        raise _invalid(reason, shown)
    if not verify:
        return mime, None, None
    try:
        with Image.open(io.BytesIO(raw), formats=(name,)) as image:
            width, height = image.size
            if (limit := Image.MAX_IMAGE_PIXELS) is not None and width * height > limit:
                # Pillow only warns between the limit and twice the limit; we refuse.
                raise Image.DecompressionBombError(f"{width}x{height} pixels")
            if verify == "full":
                image.load()
            elif (problem := _incomplete(raw, mime)) is not None:
                raise _invalid(f"the {name} data is truncated: {problem}", shown, "corruptImage")
    except InvalidTask:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        # The warning arrives as an exception where warnings are errors (as under pytest).
        reason = (
            f"the image has more pixels than PIL.Image.MAX_IMAGE_PIXELS ({Image.MAX_IMAGE_PIXELS})"
            " allows; it may be a decompression bomb"
        )
        raise _invalid(reason, shown, "imageTooLarge") from exc
    except Exception as exc:  # Pillow's decoders raise many types on damaged data
        reason = f"the {name} data is corrupt or truncated: {str(exc)[:200]}"
        raise _invalid(reason, shown, "corruptImage") from exc
    return mime, width, height


def _identify(raw: bytes) -> str | None:
    """Name the format of ``raw`` if Pillow can tell, for a better error message."""
    try:
        with Image.open(io.BytesIO(raw)) as image:
            return image.format
    except Exception:  # any failure only means that Pillow does not recognise it
        return None


def _incomplete(raw: bytes, mime: str) -> str | None:
    """Why ``raw`` is not a complete file of its (sniffed) format, or ``None`` when it is.

    Only the container is read, never the compressed pixels: a truncated file (the usual
    damage: a partial download or copy) fails here; bytes changed inside the pixel data of a
    complete file pass, and the server, which decodes every input, answers ``corruptImage``.
    """
    if mime == _PNG:
        return _png_incomplete(raw)
    if mime == "image/jpeg":
        return _jpeg_incomplete(raw)
    return _webp_incomplete(raw)


def _png_incomplete(raw: bytes) -> str | None:
    """Walk the chunks by their lengths: the data must hold every one, up to ``IEND``."""
    pos, end = 8, len(raw)
    while pos + 12 <= end:
        length = int.from_bytes(raw[pos : pos + 4], "big")
        kind = raw[pos + 4 : pos + 8]
        pos += 12 + length
        if pos > end:
            name = kind.decode("latin-1")
            return f"the {name!r} chunk needs {pos - end} bytes more than there are"
        if kind == b"IEND":
            return None
    return f"it ends after {end} bytes without an IEND chunk"


def _jpeg_incomplete(raw: bytes) -> str | None:
    """Walk the segments to the first scan as Pillow does; an end-of-image marker must follow.

    Inside entropy-coded data a ``0xFF`` byte is always followed by ``0x00`` or a restart
    marker, so ``FF D9`` after the first scan can only be the end of the image.
    """
    pos, end = 2, len(raw)
    while pos + 2 <= end:
        if raw[pos] != 0xFF:  # junk between segments, skipped as Pillow skips it
            pos = raw.find(b"\xff", pos)
            if pos < 0:
                break
            continue
        marker = raw[pos + 1]
        if marker == 0xFF:  # fill byte before a marker
            pos += 1
            continue
        if marker in (0x00, 0x01) or 0xD0 <= marker <= 0xD9:  # no length follows these
            pos += 2
            continue
        if pos + 4 > end:
            break
        pos += 2 + int.from_bytes(raw[pos + 2 : pos + 4], "big")
        if marker == 0xDA:  # start of scan
            if raw.rfind(b"\xff\xd9", pos) < 0:  # from the end, where EOI is
                return "it has no end-of-image marker after its scan data"
            return None
    return f"it ends after {end} bytes, before its scan data"


def _webp_incomplete(raw: bytes) -> str | None:
    """The RIFF size must fit in the data, and its chunks in the RIFF size."""
    if len(raw) < 20:
        return f"it is {len(raw)} bytes, too short for a WEBP header"
    end = 8 + int.from_bytes(raw[4:8], "little")
    if end > len(raw):
        return f"the RIFF header declares {end} bytes, there are {len(raw)}"
    pos = 12
    while pos + 8 <= end:
        length = int.from_bytes(raw[pos + 4 : pos + 8], "little")
        pos += 8 + length
        if pos > end:
            return f"a chunk needs {pos - end} bytes more than the RIFF size holds"
        pos += length & 1  # chunks are padded to an even length
    return None if pos >= end else "it ends inside a chunk header"


def _looks_like_base64(text: str) -> bool:
    return len(text) >= _MIN_BASE64_CHARS and _BASE64_RE.fullmatch(text) is not None


def _decode_base64(text: str) -> bytes | None:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None


def _shorten(text: str) -> str:
    return text if len(text) <= 64 else f"{text[:32]}...<{len(text)} chars>"


def _invalid(reason: str, shown: str, code: str = _INVALID) -> InvalidTask:
    return InvalidTask(reason, parameter=_PARAMETER, value=shown, code=code)


def _unsupported(what: str, shown: str) -> InvalidTask:
    reason = f"{what}; inputImage accepts PNG, JPEG or WEBP"
    return _invalid(reason, shown, "unsupportedImageFormat")


def _too_large(size: int, max_bytes: int, shown: str) -> InvalidTask:
    reason = f"the image is {size} bytes, over the limit of {max_bytes} (max_bytes)"
    return _invalid(reason, shown, "imageTooLarge")
