"""Pydantic wire models of the upscale API: the task, its settings, results and error items.

Python code uses snake_case; the wire uses Runware's exact camelCase names, through aliases.
The rules come from ``shared/seed/upscale-api.txt`` (the contract):

* ``upscaleFactor`` is 2 or 4, and only SwinIR (``runware:503@1``) supports 4;
* ``outputQuality`` is an integer from 20 to 99; ``ttl`` is at least 60 and is for URL output;
* ``settings`` parameters follow the per-model compatibility table of the seed (SwinIR takes none);
* models outside the seed's four are passed through when they look like an AIR id
  (``provider:id@version``), with only the generic checks.

A task that breaks a rule raises :class:`~upscale_stream.errors.InvalidTask`, whose message names
the wire field and the value. The reference server validates with these same models, so client and
server can never disagree about what is valid.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import orjson
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from .errors import APIError, InvalidTask
from .inputs import EncodedImage
from .results import UpscaleResult

__all__ = [
    "CCSR",
    "CLARITY",
    "MODELS",
    "SD_LATENT_UPSCALER",
    "SWINIR",
    "DeliveryMethod",
    "ErrorItem",
    "ModelSpec",
    "OutputFormat",
    "OutputType",
    "TaskTemplate",
    "UpscaleResult",
    "UpscaleResultModel",
    "UpscaleSettings",
    "UpscaleTask",
    "invalid_task_from",
    "new_task_uuid",
]

OutputType = Literal["URL", "base64Data", "dataURI"]
OutputFormat = Literal["JPG", "PNG", "WEBP"]
DeliveryMethod = Literal["sync", "async"]

CLARITY = "runware:500@1"
CCSR = "runware:501@1"
SD_LATENT_UPSCALER = "runware:502@1"
SWINIR = "runware:503@1"

AIR_ID = re.compile(r"^[A-Za-z0-9_.-]+:[A-Za-z0-9_.-]+@[A-Za-z0-9_.-]+$")
UUID_V4 = re.compile(
    r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$", re.IGNORECASE
)


def new_task_uuid() -> str:
    """A random UUID v4 string from the OS's CSPRNG, cheaper than ``random.getrandbits``.

    taskUUIDs are server-wide de-duplication keys: one an attacker could predict could be
    sent first to make our task bounce as ``conflictTaskUUID`` (or to read its result with
    ``getResponse``). A Mersenne Twister is predictable from 624 outputs, so the bits come
    from ``os.urandom``, drawn 256 UUIDs at a time (one syscall and a few dozen C-level copies
    per 256, see :func:`_draw_uuids`); a call pops one. 0.36 us a UUID against 1.3 us for the
    per-UUID f-string it replaces and 5.6 us for ``str(uuid.uuid4())``: no cost worth a
    predictable id. The pool is one list for the process: ``list.pop`` is atomic, so two
    threads never get the same UUID (a race to refill only draws more); a forked child starts
    with an empty pool, so it never repeats its parent's.
    """
    try:
        return _ready.pop()
    except IndexError:
        _ready.extend(_draw_uuids())
        return _ready.pop()


_BATCH = 256
_LAYOUT = b"xxxxxxxx-xxxx-4xxx-yxxx-xxxxxxxxxxxx "  # 36 characters and a separator
_BLANK = bytearray(_LAYOUT * _BATCH)
# Where each of a UUID's 32 hex digits goes in its 37-byte slot; digit 12 (the version
# nibble) is replaced by the layout's "4", digit 16 keeps its low two bits (the variant).
_SLOTS = [pos for pos, char in enumerate(_LAYOUT) if char in b"xy"]
_DIGITS = [digit for digit in range(32) if digit != 12]
_VARIANT_SLOT = _LAYOUT.index(b"y")
_COPIES = [(slot, digit) for slot, digit in zip(_SLOTS, _DIGITS, strict=True) if digit != 16]
_VARIANT_NIBBLE = bytes.maketrans(b"0123456789abcdef", b"89ab89ab89ab89ab")


def _draw_uuids() -> list[str]:
    """256 fresh UUID v4 strings from one ``os.urandom`` call.

    The hex digits are laid into a template of 256 UUIDs by 31 strided slice copies (one per
    digit position, across all 256 at once), so no Python code runs per UUID. Equal to
    ``str(uuid.UUID(bytes=chunk, version=4))`` for each 16-byte chunk (a test checks it).
    """
    digits = os.urandom(16 * _BATCH).hex().encode()
    text = _BLANK[:]
    for slot, digit in _COPIES:
        text[slot::37] = digits[digit::32]
    text[_VARIANT_SLOT::37] = digits[16::32].translate(_VARIANT_NIBBLE)
    return text.decode().split()


_ready: list[str] = []
"""UUIDs drawn and not handed out yet."""


def _reset_pool() -> None:
    _ready.clear()


os.register_at_fork(after_in_child=_reset_pool)


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """What the seed documents about one upscale model.

    Attributes:
        air: The AIR id sent as ``model``.
        name: The model's display name.
        factors: The ``upscaleFactor`` values it accepts.
        settings: The wire names of the ``settings`` parameters it accepts.
    """

    air: str
    name: str
    factors: frozenset[int]
    settings: frozenset[str]


_COMMON = {"positivePrompt", "negativePrompt", "steps", "seed", "CFGScale"}

MODELS: Mapping[str, ModelSpec] = {
    spec.air: spec
    for spec in (
        ModelSpec(
            CLARITY,
            "Clarity",
            frozenset({2}),
            frozenset(_COMMON | {"strength", "controlNetWeight", "scheduler"}),
        ),
        ModelSpec(CCSR, "CCSR", frozenset({2}), frozenset(_COMMON | {"controlNetWeight"})),
        ModelSpec(
            SD_LATENT_UPSCALER,
            "Stable Diffusion Latent Upscaler",
            frozenset({2}),
            frozenset(_COMMON | {"clipSkip"}),
        ),
        ModelSpec(SWINIR, "SwinIR", frozenset({2, 4}), frozenset()),
    )
}
"""The four models of the seed, by AIR id (seed: "Only SwinIR model supports 4x upscaling")."""


class _WireModel(BaseModel):
    """Shared configuration: strict types, aliases on the wire, names accepted in Python."""

    model_config = ConfigDict(
        strict=True,
        frozen=True,
        validate_by_name=True,
        validate_by_alias=True,
        serialize_by_alias=True,
        str_strip_whitespace=False,
    )


class UpscaleSettings(_WireModel):
    """``settings`` of the creative (diffusion) upscalers; which ones apply depends on the model.

    Unknown keys are kept and passed through, so newer server-side settings (for example
    ``colorFix`` or ``tileDiffusion``) need no library upgrade.
    """

    model_config = ConfigDict(extra="allow")

    positive_prompt: str | None = Field(None, alias="positivePrompt", min_length=1)
    negative_prompt: str | None = Field(None, alias="negativePrompt", min_length=1)
    strength: float | None = Field(None, ge=0, le=1)
    control_net_weight: float | None = Field(None, alias="controlNetWeight", ge=0, le=1)
    steps: int | None = Field(None, ge=1, le=100)
    scheduler: str | None = Field(None, min_length=1)
    seed: int | None = Field(None, ge=0, le=2**63 - 1)
    cfg_scale: float | None = Field(None, alias="CFGScale", ge=0, le=50)
    clip_skip: int | None = Field(None, alias="clipSkip", ge=0, le=2)

    def wire_names(self) -> dict[str, Any]:
        """The parameters that are set, by wire name (extras included)."""
        return self.model_dump(by_alias=True, exclude_none=True)


class UpscaleTask(_WireModel):
    """One ``upscale`` task, exactly as it goes on the wire.

    Build it with Python names (``UpscaleTask(input_image=..., upscale_factor=4)``) or from a wire
    dict (:meth:`from_wire`). Invalid values raise :class:`~upscale_stream.errors.InvalidTask`.

    ``task_uuid`` is generated (UUID v4) when not given; pass your own to make a task idempotent
    across process restarts. ``delivery_method`` is always sent (the seed marks it required).
    """

    model_config = ConfigDict(extra="forbid")

    task_type: Literal["upscale"] = Field("upscale", alias="taskType")
    task_uuid: str = Field(default_factory=new_task_uuid, alias="taskUUID")
    input_image: str = Field(alias="inputImage", min_length=1)
    model: str = SWINIR
    upscale_factor: Literal[2, 4] = Field(2, alias="upscaleFactor")
    output_type: OutputType | None = Field(None, alias="outputType")
    output_format: OutputFormat | None = Field(None, alias="outputFormat")
    output_quality: int | None = Field(None, alias="outputQuality", ge=20, le=99)
    webhook_url: str | None = Field(None, alias="webhookURL")
    delivery_method: DeliveryMethod = Field("sync", alias="deliveryMethod")
    upload_endpoint: str | None = Field(None, alias="uploadEndpoint")
    ttl: int | None = Field(None, ge=60)
    include_cost: StrictBool | None = Field(None, alias="includeCost")
    settings: UpscaleSettings | None = None

    def __init__(self, **fields: Any) -> None:
        try:
            super().__init__(**fields)
        except ValidationError as exc:
            raise invalid_task_from(exc, type(self)) from None

    @classmethod
    def from_wire(cls, item: Mapping[str, Any]) -> UpscaleTask:
        """Validate a task given with wire names (as the server receives it).

        Raises:
            InvalidTask: a field is missing, mistyped, out of range or incompatible.
        """
        return cls(**item)

    def to_wire(self) -> dict[str, Any]:
        """The task as a JSON-ready dict with wire names; unset options are left out."""
        return self.model_dump(by_alias=True, exclude_none=True)

    def to_json(self) -> bytes:
        """The task encoded once with orjson (UTF-8 JSON object)."""
        return orjson.dumps(self.to_wire())

    @field_validator("output_format", mode="before")
    @classmethod
    def _upper_format(cls, value: object) -> object:
        # The seed's own example sends "jpg"; the enum is upper case. Accept both.
        return value.upper() if isinstance(value, str) else value

    @field_validator("task_uuid")
    @classmethod
    def _uuid_v4(cls, value: str) -> str:
        if not UUID_V4.match(value):
            raise PydanticCustomError("invalidTaskUUID", "must be a UUID v4 string")
        return value.lower()

    @field_validator("model")
    @classmethod
    def _air_id(cls, value: str) -> str:
        if value not in MODELS and not AIR_ID.match(value):
            known = ", ".join(f"{s.air} ({s.name})" for s in MODELS.values())
            raise PydanticCustomError(
                "invalidModel",
                "must be an AIR id like provider:id@version; upscale models: {known}",
                {"known": known},
            )
        return value

    @field_validator("webhook_url", "upload_endpoint")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^https?://[^\s/]+", value, re.IGNORECASE):
            raise PydanticCustomError("invalidUrl", "must be an http:// or https:// URL")
        return value

    @model_validator(mode="after")
    def _cross_field_rules(self) -> UpscaleTask:
        spec = MODELS.get(self.model)
        if spec is not None and self.upscale_factor not in spec.factors:
            allowed = " or ".join(str(f) for f in sorted(spec.factors))
            raise _rule(
                "invalidUpscaleFactor",
                "upscaleFactor",
                self.upscale_factor,
                f"{spec.name} ({spec.air}) supports upscaleFactor {allowed}; "
                f"only SwinIR ({SWINIR}) supports 4",
            )
        if self.ttl is not None and self.output_type not in (None, "URL"):
            raise _rule(
                "incompatibleParameters",
                "ttl",
                self.ttl,
                f"ttl only applies to outputType URL, not {self.output_type}",
            )
        if spec is not None and self.settings is not None:
            for name, value in self.settings.wire_names().items():
                if name in _KNOWN_SETTINGS and name not in spec.settings:
                    supported = ", ".join(sorted(spec.settings)) or "no settings"
                    raise _rule(
                        "unsupportedParameter",
                        f"settings.{name}",
                        value,
                        f"{spec.name} ({spec.air}) does not support {name}; "
                        f"it supports: {supported}",
                    )
        return self


_KNOWN_SETTINGS = frozenset(
    info.alias or name for name, info in UpscaleSettings.model_fields.items()
)


def _rule(code: str, parameter: str, value: Any, message: str) -> PydanticCustomError:
    # The custom error type is the Runware code; ctx names the wire parameter and value.
    return PydanticCustomError(code, message, {"parameter": parameter, "value": value})


def _wire_name(model: type[BaseModel], loc: tuple[int | str, ...]) -> str:
    """Translate a pydantic error location into the dotted wire name (``settings.CFGScale``)."""
    parts: list[str] = []
    current: type[BaseModel] | None = model
    for part in loc:
        if current is not None and isinstance(part, str):
            fields = current.model_fields
            info = fields.get(part) or next((f for f in fields.values() if f.alias == part), None)
            if info is not None:
                parts.append(info.alias or part)
                annotation = info.annotation
                current = _submodel(annotation)
                continue
        parts.append(str(part))
        current = None
    return ".".join(parts)


def _submodel(annotation: Any) -> type[BaseModel] | None:
    for candidate in (annotation, *getattr(annotation, "__args__", ())):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def invalid_task_from(exc: ValidationError, model: type[BaseModel]) -> InvalidTask:
    """Turn the first pydantic error into an :class:`InvalidTask` that names the wire field.

    The code follows Runware's style: a rule's own code (``invalidUpscaleFactor``,
    ``unsupportedParameter``), ``missing<Field>`` for a missing field, ``unknownParameter`` for
    an unexpected one, and ``invalid<Field>`` otherwise.
    """
    first = exc.errors(include_url=False)[0]
    ctx = first.get("ctx") or {}
    kind = first["type"]
    parameter = ctx.get("parameter") or _wire_name(model, tuple(first["loc"])) or "request"
    value = ctx.get("value", first.get("input"))
    message = first["msg"]
    leaf = parameter.rsplit(".", 1)[-1]
    if kind == "missing":
        return InvalidTask(
            "is required", parameter=parameter, value=None, code=f"missing{_cap(leaf)}"
        )
    if kind == "extra_forbidden":
        return InvalidTask(
            "is not a parameter of the upscale task",
            parameter=parameter,
            value=value,
            code="unknownParameter",
        )
    # Our own rules carry their Runware code as the error type; pydantic's built-in checks
    # (range, type, literal) become invalid<Field>.
    code = kind if kind in _RULE_CODES else ""
    return InvalidTask(message, parameter=parameter, value=value, code=code)


_RULE_CODES = frozenset(
    {"invalidUpscaleFactor", "incompatibleParameters", "unsupportedParameter", "invalidTaskUUID"}
)


def _cap(name: str) -> str:
    return name[:1].upper() + name[1:]


class TaskTemplate:
    """Task options validated once, for many tasks that differ only in taskUUID and inputImage.

    Encoding a task from a template costs one small concatenation instead of a pydantic
    validation and a serialisation, and yields exactly the bytes ``UpscaleTask(...).to_json()``
    would (same keys, same order).

    Raises:
        InvalidTask: the options are invalid (same rules as :class:`UpscaleTask`).
    """

    __slots__ = (
        "_suffix",
        "_uuid_suffix",
        "delivery_method",
        "is_async",
        "kind",
        "options",
        "wire_options",
    )

    _PREFIX = b'{"taskType":"upscale","taskUUID":"'
    _MIDDLE = b'","inputImage":'
    _UUID_PREFIX = _PREFIX.decode()
    _UUID_MIDDLE = _MIDDLE.decode() + '"'

    def __init__(self, **options: Any) -> None:
        if "task_uuid" in options or "taskUUID" in options:
            raise InvalidTask(
                "a template serves many tasks; pass task_uuid per task",
                parameter="taskUUID",
                value=options.get("task_uuid", options.get("taskUUID")),
            )
        probe = UpscaleTask(input_image="-", **options)
        wire = probe.to_wire()
        for key in ("taskType", "taskUUID", "inputImage"):
            del wire[key]
        self._suffix = b"," + orjson.dumps(wire)[1:]
        self._uuid_suffix = '"' + self._suffix.decode()
        self.delivery_method = probe.delivery_method
        self.is_async = probe.delivery_method == "async"
        """Whether the tasks use ``deliveryMethod: "async"`` (ACK, then polling)."""
        self.kind: tuple[bool, str] = (self.is_async, probe.model)
        """``(is_async, model)``: what the connection keeps once for a batch of these tasks
        (:meth:`~upscale_stream.connection.Connection.submit_soon`)."""
        self.options = options
        self.wire_options: dict[str, Any] = wire
        """The options as they go on the wire (what a job's options digest is taken of)."""

    def encode(self, task_uuid: str, input_image: str | EncodedImage) -> bytes:
        """The task's JSON object, ready for the wire (``task_uuid`` must be a UUID v4).

        ``input_image`` as :func:`~upscale_stream.inputs.wire_value` gives it: a data URI of
        local data (:class:`~upscale_stream.inputs.EncodedImage`) is joined from its base64
        bytes, the same bytes as its ``str`` would give, one copy of the image's size in all.
        """
        value: tuple[bytes, ...]
        if type(input_image) is EncodedImage:
            value = (input_image.head, input_image.data, b'"')  # base64 needs no JSON escape
        else:
            value = (orjson.dumps(input_image),)
        # One join: chained "+" would copy a multi-megabyte data URI once per step.
        return b"".join((self._PREFIX, task_uuid.encode(), self._MIDDLE, *value, self._suffix))

    def encode_image_uuid(self, task_uuid: str, image_uuid: str) -> bytes:
        """:meth:`encode` for an image UUID input (one :func:`~upscale_stream.inputs.is_uuid`
        accepted: ASCII hex digits and hyphens, nothing to escape), built as one string: a
        third of ``encode``'s cost, once per task in bulk jobs."""
        prefix, middle = self._UUID_PREFIX, self._UUID_MIDDLE
        return f"{prefix}{task_uuid}{middle}{image_uuid}{self._uuid_suffix}".encode()


class UpscaleResultModel(BaseModel):
    """The pydantic schema of a result item: the lenient validator behind :class:`UpscaleResult`.

    The client decodes results with :func:`upscale_stream.results.decode_result`, which only
    comes here for what is unusual (unknown keys, unexpected types), so both always agree on
    what a valid result is. ``media_uuid``/``media_url`` are the newer spellings (protocol.md
    section 5.3). Unknown fields are kept (``model_extra``).
    """

    model_config = ConfigDict(
        extra="allow", frozen=True, validate_by_name=True, validate_by_alias=True
    )

    task_type: str = Field("upscale", alias="taskType")
    task_uuid: str = Field(alias="taskUUID")
    image_uuid: str | None = Field(None, alias="imageUUID")
    input_image_uuid: str | None = Field(None, alias="inputImageUUID")
    image_url: str | None = Field(None, alias="imageURL")
    image_base64_data: str | None = Field(None, alias="imageBase64Data")
    image_data_uri: str | None = Field(None, alias="imageDataURI")
    media_uuid: str | None = Field(None, alias="mediaUUID")
    media_url: str | None = Field(None, alias="mediaURL")
    cost: float | None = None
    status: str | None = None


class ErrorItem(BaseModel):
    """One item of an ``errors`` array (protocol.md section 4).

    ``parameter`` may arrive as a list for cross-field violations; :meth:`to_exception` keeps the
    first one, as the official SDK does.
    """

    model_config = ConfigDict(extra="allow", frozen=True, populate_by_name=True)

    code: str = "unknownError"
    message: str = ""
    parameter: str | list[str] | None = None
    task_type: str | None = Field(None, alias="taskType")
    task_uuid: str | None = Field(None, alias="taskUUID")
    documentation: str | None = None

    @classmethod
    def from_wire(cls, item: Mapping[str, Any]) -> ErrorItem:
        """Read a wire error item leniently: wrong-typed fields are coerced to text or dropped."""
        fields: dict[str, Any] = {}
        for key in ("code", "message", "taskType", "taskUUID", "documentation"):
            value = item.get(key)
            if value is not None:
                fields[key] = value if isinstance(value, str) else str(value)
        parameter = item.get("parameter")
        if isinstance(parameter, str | list):
            fields["parameter"] = (
                parameter if isinstance(parameter, str) else [str(p) for p in parameter]
            )
        if "message" not in fields and isinstance(item.get("errorMessage"), str):
            fields["message"] = item["errorMessage"]  # legacy shape, protocol.md section 2
        return cls.model_validate(fields)

    def to_wire(self) -> dict[str, Any]:
        """The item with wire names; unset fields are left out."""
        return self.model_dump(by_alias=True, exclude_none=True)

    def to_exception(self) -> APIError:
        """The :class:`~upscale_stream.errors.APIError` this item stands for."""
        parameter = self.parameter[0] if isinstance(self.parameter, list) else self.parameter
        return APIError(
            self.code,
            self.message or self.code,
            parameter=parameter or None,
            task_uuid=self.task_uuid,
            task_type=self.task_type,
            documentation=self.documentation,
        )
