"""The typed result of an upscale task, and its hot-path decoder.

Every result item the server sends becomes one :class:`UpscaleResult`. At tens of thousands of
results a second, pydantic's ``model_validate`` (about 3 us an item) was the largest single cost
of the client, so the common case goes through one C call instead: ``msgspec.convert`` of the
item (already parsed by the core) into a frozen :class:`msgspec.Struct`, about 0.5 us, with the
same field types checked. Anything unusual (a field of an unexpected type, a key this library
does not know) falls back to the pydantic model :class:`~upscale_stream.models.UpscaleResultModel`,
which validates the item leniently, exactly as before, and keeps unknown keys in
:attr:`UpscaleResult.model_extra`. So pydantic stays at the edge, for what is rare; the
decoder never accepts what the pydantic model would refuse.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import msgspec

__all__ = ["UpscaleResult", "decode_plain_frame", "decode_result"]

_WIRE_NAMES = {
    "task_type": "taskType",
    "task_uuid": "taskUUID",
    "image_uuid": "imageUUID",
    "input_image_uuid": "inputImageUUID",
    "image_url": "imageURL",
    "image_base64_data": "imageBase64Data",
    "image_data_uri": "imageDataURI",
    "media_uuid": "mediaUUID",
    "media_url": "mediaURL",
}


class UpscaleResult(
    msgspec.Struct,
    frozen=True,
    forbid_unknown_fields=True,
    rename=_WIRE_NAMES,
    repr_omit_defaults=True,
):
    """One finished upscale, as the server delivered it.

    Exactly one of ``image_url``, ``image_base64_data`` and ``image_data_uri`` is normally set,
    following the task's ``outputType``. ``media_uuid``/``media_url`` are accepted as the newer
    spellings (protocol.md section 5.3). Unknown fields are kept (:attr:`model_extra`).
    Instances are immutable; build one from a wire item with :meth:`model_validate`.
    """

    task_uuid: str
    task_type: str = "upscale"
    image_uuid: str | None = None
    input_image_uuid: str | None = None
    image_url: str | None = None
    image_base64_data: str | None = None
    image_data_uri: str | None = None
    media_uuid: str | None = None
    media_url: str | None = None
    cost: float | None = None
    status: str | None = None

    @classmethod
    def model_validate(cls, item: Mapping[str, Any]) -> UpscaleResult:
        """Build a result from a wire item (a dict with Runware's camelCase keys).

        Raises:
            pydantic.ValidationError: a known field has a value of the wrong type.
        """
        return decode_result(item)

    @property
    def model_extra(self) -> dict[str, Any]:
        """The item's keys this library does not know, with their values (``{}`` if none)."""
        return {}

    @property
    def url(self) -> str | None:
        """The download URL, whichever spelling the server used."""
        return self.image_url or self.media_url

    @property
    def uuid(self) -> str | None:
        """The output image's UUID, whichever spelling the server used."""
        return self.image_uuid or self.media_uuid

    def to_wire(self) -> dict[str, Any]:
        """The result with wire names, unset fields left out, unknown keys included."""
        wire: dict[str, Any] = msgspec.to_builtins(self)
        return {key: value for key, value in wire.items() if value is not None}

    def read_bytes(self, *, timeout: float = 60.0) -> bytes:
        """The output image's bytes: decoded from base64, or downloaded from the URL (blocking).

        Raises:
            UpscaleError: the result carries no image, or the download failed.
        """
        from .download import result_bytes

        return result_bytes(self, timeout=timeout)

    async def aread_bytes(self, *, timeout: float = 60.0) -> bytes:
        """Like :meth:`read_bytes`, without blocking the event loop (runs in a thread)."""
        return await asyncio.to_thread(self.read_bytes, timeout=timeout)

    def save(self, path: str | Any, *, timeout: float = 60.0) -> Any:
        """Write the output image to ``path`` atomically (temp file + rename); returns the path."""
        from .download import save_atomic

        return save_atomic(path, self.read_bytes(timeout=timeout))

    async def asave(self, path: str | Any, *, timeout: float = 60.0) -> Any:
        """Like :meth:`save`, without blocking the event loop (runs in a thread)."""
        return await asyncio.to_thread(self.save, path, timeout=timeout)


class _ResultWithExtra(UpscaleResult, frozen=True):
    """A result whose item carried keys this library does not know (kept, not validated)."""

    unknown: dict[str, Any] = msgspec.field(default_factory=dict)

    @property
    def model_extra(self) -> dict[str, Any]:
        """The item's keys this library does not know, with their values."""
        return dict(self.unknown)

    def to_wire(self) -> dict[str, Any]:
        """The result with wire names, unset fields left out, unknown keys included."""
        wire = super().to_wire()
        wire.pop("unknown", None)
        wire.update(self.unknown)
        return wire


_convert = msgspec.convert
_ValidationError = msgspec.ValidationError


def decode_result(item: Mapping[str, Any]) -> UpscaleResult:
    """Turn one result item into an :class:`UpscaleResult`: one C call in the common case.

    Raises:
        pydantic.ValidationError: a known field has a value of the wrong type (the lenient
            pydantic model decides, as it always did).
    """
    try:
        return _convert(item, UpscaleResult)
    except _ValidationError:
        return _decode_unusual(item)


def _decode_unusual(item: Mapping[str, Any]) -> UpscaleResult:
    """The slow path: validate with the pydantic model, keep unknown keys as ``extra``."""
    from .models import UpscaleResultModel

    checked = UpscaleResultModel.model_validate(item)
    fields = {name: getattr(checked, name) for name in UpscaleResultModel.model_fields}
    unknown = dict(checked.model_extra or {})
    if not unknown:
        return UpscaleResult(**fields)
    return _ResultWithExtra(**fields, unknown=unknown)


class _PlainFrame(msgspec.Struct, forbid_unknown_fields=True):
    """A frame of results and nothing else: ``{"data": [result, ...]}``."""

    data: list[UpscaleResult]


_frame_decoder = msgspec.json.Decoder(_PlainFrame)
_DecodeError = msgspec.DecodeError


def decode_plain_frame(text: str | bytes) -> list[UpscaleResult] | None:
    """The results of a frame that is ``{"data": [...]}`` of plain result items, or ``None``.

    One C call decodes the JSON straight into :class:`UpscaleResult` structs, with no dict per
    item and no second pass: the hot path of the client's core. A plain item has only fields
    :class:`UpscaleResult` knows, each of its type, exactly what :func:`decode_result` accepts
    without falling back to pydantic. Any other frame (an error array, a pong, an item with an
    unknown key or a wrong type, invalid JSON) gives ``None``, and the caller reads it as JSON.
    """
    try:
        return _frame_decoder.decode(text).data
    except _DecodeError:
        return None
