"""The task options of ``upscale-stream run``: flags, parsing, and mapping onto task fields.

Every field of the upscale task (``upscale-api.txt``) has one flag::

    --factor          upscaleFactor        --webhook-url      webhookURL
    --model           model                --delivery         deliveryMethod
    --output-type     outputType           --upload-endpoint  uploadEndpoint
    --format          outputFormat         --ttl              ttl
    --quality         outputQuality        --include-cost     includeCost
    --setting k=v     settings.k

argparse checks what it can (enums, numbers); :func:`check_task_options` then builds one
:class:`~upscale_stream.models.UpscaleTask` with a placeholder input, so the library's own rules
(SwinIR only for 4x, quality range, settings per model) are applied once, before anything is
read or sent, and a violation is reported under the flag's name.
"""

from __future__ import annotations

import argparse
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import orjson

from ..errors import InvalidTask
from ..models import AIR_ID, CCSR, CLARITY, SD_LATENT_UPSCALER, SWINIR, UpscaleSettings
from ..models import UpscaleTask as _UpscaleTask
from .errors import UsageError

N = TypeVar("N", int, float)

__all__ = [
    "EXTENSIONS",
    "FLAG_OF_FIELD",
    "MODEL_NAMES",
    "OUTPUT_FORMATS",
    "OUTPUT_TYPES",
    "add_task_arguments",
    "check_task_options",
    "extension_for",
    "parse_model",
    "parse_output_format",
    "parse_output_type",
    "parse_quality",
    "parse_setting",
    "positive_float",
    "positive_int",
    "task_options_from_args",
]

MODEL_NAMES: Mapping[str, str] = {
    "clarity": CLARITY,
    "ccsr": CCSR,
    "sd-latent": SD_LATENT_UPSCALER,
    "swinir": SWINIR,
}
"""Short names accepted by ``--model``, and the AIR id each stands for."""

OUTPUT_FORMATS = ("JPG", "PNG", "WEBP")
OUTPUT_TYPES = ("URL", "base64Data", "dataURI")
DELIVERY_METHODS = ("sync", "async")

EXTENSIONS: Mapping[str, str] = {"JPG": "jpg", "PNG": "png", "WEBP": "webp"}
"""File extension of each ``outputFormat``; the API's default format is JPG."""

FLAG_OF_FIELD: Mapping[str, str] = {
    "upscaleFactor": "--factor",
    "model": "--model",
    "outputType": "--output-type",
    "outputFormat": "--format",
    "outputQuality": "--quality",
    "webhookURL": "--webhook-url",
    "deliveryMethod": "--delivery",
    "uploadEndpoint": "--upload-endpoint",
    "ttl": "--ttl",
    "includeCost": "--include-cost",
    "settings": "--setting",
}
"""The flag that sets each wire field of the task."""

_ALLOWED: Mapping[str, str] = {
    "outputQuality": "an integer from 20 to 99",
    "ttl": "whole seconds, at least 60",
    "webhookURL": "an http:// or https:// URL",
    "uploadEndpoint": "an http:// or https:// URL",
}

_PYDANTIC_OPENINGS = frozenset({"Input", "Value", "String", "Field"})
_FORMAT_ALIASES = {"JPEG": "JPG"}
_OUTPUT_TYPE_ALIASES = {
    "url": "URL",
    "base64data": "base64Data",
    "base64": "base64Data",
    "datauri": "dataURI",
}
_MODEL_CHOICES = ", ".join(MODEL_NAMES)
_SETTING_NAMES = [info.alias or name for name, info in UpscaleSettings.model_fields.items()]


# -- argparse value types (a ValueError or ArgumentTypeError names the argument) ---------------


def parse_model(text: str) -> str:
    """``--model``: a short name (``swinir``) or an AIR id (``provider:id@version``).

    Returns:
        The AIR id to send.

    Raises:
        argparse.ArgumentTypeError: neither a known name nor an AIR id.
    """
    name = text.strip().lower()
    if name in MODEL_NAMES:
        return MODEL_NAMES[name]
    if AIR_ID.match(text.strip()):
        return text.strip()
    raise argparse.ArgumentTypeError(
        f"invalid choice: {text!r} (choose from {_MODEL_CHOICES}, "
        "or an AIR id provider:id@version such as runware:503@1)"
    )


def parse_output_format(text: str) -> str:
    """``--format``: JPG, PNG or WEBP in any case (``jpeg`` means JPG)."""
    upper = text.strip().upper()
    return _FORMAT_ALIASES.get(upper, upper)


def parse_output_type(text: str) -> str:
    """``--output-type``: URL, base64Data or dataURI in any case."""
    return _OUTPUT_TYPE_ALIASES.get(text.strip().lower(), text)


def parse_number(text: str, convert: Callable[[str], N], noun: str) -> N:
    """``convert(text)``, or an argparse error that says what was expected."""
    try:
        return convert(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {noun}, got {text!r}") from None


def parse_quality(text: str) -> int:
    """``--quality``: a whole number; the range (20 to 99) is the task model's rule, checked
    with the other options, but a non-number already says what is expected."""
    return parse_number(text, int, "an integer from 20 to 99")


def positive_int(text: str) -> int:
    """A whole number of at least 1."""
    value = parse_number(text, int, "a whole number")
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def positive_float(text: str) -> float:
    """A number of seconds greater than 0."""
    value = parse_number(text, float, "a number of seconds")
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be greater than 0, got {text}")
    return value


def parse_setting(text: str) -> tuple[str, Any]:
    """``--setting key=value``: one entry of the task's ``settings``.

    Known settings are converted to their type (``steps=20`` is an int, ``strength=0.3`` a
    float, prompts stay text) and keyed by their wire name (``positive_prompt`` and
    ``positivePrompt`` are the same). Unknown keys pass through: JSON scalars (``true``, ``3``,
    ``0.5``) keep their type, anything else is text.

    Raises:
        argparse.ArgumentTypeError: not ``key=value``, or a value of the wrong type.
    """
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise argparse.ArgumentTypeError(
            f"expected key=value, got {text!r} (for example steps=20 or positivePrompt=sharp)"
        )
    known = _known_setting(key)
    if known is None:
        return key, _json_scalar(raw)
    wire, kind = known
    try:
        value: Any = kind(raw)
    except ValueError:
        what = "a whole number" if kind is int else "a number"
        raise argparse.ArgumentTypeError(f"{wire} takes {what}, got {raw!r}") from None
    return wire, value


def _known_setting(key: str) -> tuple[str, type] | None:
    for name, info in UpscaleSettings.model_fields.items():
        wire = info.alias or name
        if key in (name, wire):
            kinds = [t for t in typing.get_args(info.annotation) if t is not types.NoneType]
            return wire, kinds[0] if kinds else str
    return None


def _json_scalar(raw: str) -> Any:
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return raw
    return value if isinstance(value, bool | int | float) else raw


# -- the flags ----------------------------------------------------------------------------------


def add_task_arguments(parser: argparse.ArgumentParser) -> None:
    """Add one flag per task field to ``parser`` (in their own help group)."""
    group = parser.add_argument_group(
        "task options", "Each flag sets one field of every upscale task; unset fields are not sent."
    )
    group.add_argument(
        "--factor",
        type=int,
        choices=(2, 4),
        default=2,
        help="upscaleFactor: 2 or 4 (4 only with swinir). Default: 2.",
    )
    group.add_argument(
        "--model",
        type=parse_model,
        default=SWINIR,
        metavar="NAME|AIR",
        help=(
            f"model: one of {_MODEL_CHOICES} "
            f"({', '.join(f'{n}={a}' for n, a in MODEL_NAMES.items())}), "
            "or any AIR id provider:id@version. Default: swinir."
        ),
    )
    group.add_argument(
        "--format",
        dest="output_format",
        type=parse_output_format,
        choices=OUTPUT_FORMATS,
        metavar="{JPG,PNG,WEBP}",
        help=(
            "outputFormat: JPG, PNG or WEBP (any case). It also sets the output file's "
            "extension. Default: not sent (the API answers JPG)."
        ),
    )
    group.add_argument(
        "--quality",
        dest="output_quality",
        type=parse_quality,
        metavar="20-99",
        help="outputQuality: compression quality, an integer from 20 to 99. Default: not sent "
        "(the API uses 95).",
    )
    group.add_argument(
        "--output-type",
        type=parse_output_type,
        choices=OUTPUT_TYPES,
        metavar="{URL,base64Data,dataURI}",
        help=(
            "outputType: how each result comes back: URL (downloaded from the server), "
            "base64Data or dataURI (inline in the answer). Default: not sent (the API uses URL)."
        ),
    )
    group.add_argument(
        "--delivery",
        dest="delivery_method",
        type=str.lower,
        choices=DELIVERY_METHODS,
        default="sync",
        help="deliveryMethod: sync (results pushed) or async (acknowledged, then polled with "
        "getResponse). Default: sync.",
    )
    group.add_argument(
        "--include-cost",
        action="store_true",
        default=None,
        help="includeCost: ask for each task's cost (USD); the summary then adds them up. "
        "Default: off.",
    )
    group.add_argument(
        "--webhook-url",
        metavar="URL",
        help="webhookURL: the server also POSTs each result to this http(s) URL. Default: none.",
    )
    group.add_argument(
        "--upload-endpoint",
        metavar="URL",
        help="uploadEndpoint: the server also PUTs each output image to this http(s) URL "
        "(for example a presigned S3 URL). Default: none.",
    )
    group.add_argument(
        "--ttl",
        type=int,
        metavar="SECONDS",
        help="ttl: how long URL outputs stay downloadable, at least 60; only with URL output. "
        "Default: not sent.",
    )
    group.add_argument(
        "--setting",
        dest="settings",
        action="append",
        type=parse_setting,
        metavar="KEY=VALUE",
        help=(
            "settings.KEY for the creative upscalers (repeatable), for example "
            "--setting steps=20 --setting positivePrompt='sharp, detailed'. Known keys: "
            f"{', '.join(_SETTING_NAMES)}"
            "; which ones a model accepts is checked up front. swinir takes none."
        ),
    )


# -- from parsed flags to task fields -----------------------------------------------------------


def task_options_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The task fields the flags ask for, by their Python names (unset ones left out).

    Returns:
        Keyword arguments for :class:`~upscale_stream.models.UpscaleTask` (without
        ``input_image``): ``upscale_factor`` and ``model`` always, the others when given.
    """
    options: dict[str, Any] = {
        "upscale_factor": args.factor,
        "model": args.model,
        "output_type": args.output_type,
        "output_format": args.output_format,
        "output_quality": args.output_quality,
        "webhook_url": args.webhook_url,
        "delivery_method": args.delivery_method,
        "upload_endpoint": args.upload_endpoint,
        "ttl": args.ttl,
        "include_cost": args.include_cost,
        "settings": dict(args.settings) if args.settings else None,
    }
    return {name: value for name, value in options.items() if value is not None}


def check_task_options(options: Mapping[str, Any]) -> _UpscaleTask:
    """Validate the options once, by building a task with a placeholder input.

    Returns:
        The placeholder task (its ``to_wire()`` shows exactly what every task will carry).

    Raises:
        UsageError: an option breaks a rule; the message names the flag, the value and what
            is allowed, for example ``--quality 100: input should be less than or equal to 99``.
    """
    try:
        return _UpscaleTask(input_image="placeholder", **options)
    except InvalidTask as exc:
        raise UsageError(_describe(exc)) from None


def extension_for(output_format: str | None) -> str:
    """The output file extension for an ``outputFormat`` (``None``: the API default, JPG)."""
    return EXTENSIONS[output_format or "JPG"]


def _describe(exc: InvalidTask) -> str:
    field, _, setting = exc.parameter.partition(".")
    flag = FLAG_OF_FIELD.get(field, exc.parameter)
    if setting:
        shown = f"{flag} {setting}={exc.value}"
    elif isinstance(exc.value, bool) or exc.value is None:
        shown = flag
    else:
        shown = f"{flag} {exc.value}"
    reason = exc.reason
    if reason.split(" ", 1)[0] in _PYDANTIC_OPENINGS:  # "Input should be..." reads as a clause
        reason = reason[:1].lower() + reason[1:]
    allowed = _ALLOWED.get(field)
    if allowed and allowed not in reason:
        reason += f" (allowed: {allowed})"
    return f"{shown}: {reason}"
