"""The one registry of the upscale models the reference server knows, and their factors.

An ``upscale`` task names its model by AIR id. The server runs only the models listed here;
any other id, well-formed or not, gets the real API's answer for a model it does not have:
``invalidModel`` on ``model``, naming the models that exist (an AIR id that merely *looks*
right, such as ``runware:999@1`` or a ``civitai:`` checkpoint, is not an upscaler).

Sources (docs/protocol.md section 5.2; the decisions are in docs/server.md):

* the seed (``shared/seed/upscale-api.txt``, the upscale page) lists four models, factor
  ``2 | 4``, "only SwinIR supports 4x", and the per-model ``settings`` table;
* ``runware-sdk`` 1.8.0, generated from the live schemas, adds Real-ESRGAN (``runware:504@1``,
  factor 2 or 4, no settings) and types Clarity's ``upscaleFactor`` as a float; the Clarity
  model page describes it as a "2x to 4x" upscaler. So Clarity takes any factor from 2 to 4
  (2, 2.5, 3, 4...), CCSR and the latent upscaler 2 only, SwinIR and Real-ESRGAN 2 or 4.

This module is pure data plus one check; :mod:`.handlers` calls :func:`check_upscale` before
the rest of the task is validated, and the image pipelines (:mod:`.imaging`) are chosen by
the same AIR ids.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import InvalidTask
from ..models import CCSR, CLARITY, SD_LATENT_UPSCALER, SWINIR
from ..wire import UPSCALE

__all__ = [
    "PASS_THROUGH_FIELDS",
    "REAL_ESRGAN",
    "UPSCALERS",
    "Upscaler",
    "check_upscale",
    "known_models",
    "normalise_upscale",
]

REAL_ESRGAN = "runware:504@1"

_DIFFUSION = frozenset({"positivePrompt", "negativePrompt", "steps", "seed", "CFGScale"})

SEED_SETTINGS = _DIFFUSION | {"strength", "controlNetWeight", "scheduler", "clipSkip"}
"""The ``settings`` parameters of the seed's compatibility table (model by model)."""

LATER_SETTINGS = frozenset({"colorFix", "tileDiffusion", "enhanceDetails", "realism"})
"""Settings the diffusion upscalers gained later (protocol.md section 5.2): accepted by the
models that take settings, with no effect on this server's pipelines."""


@dataclass(frozen=True, slots=True)
class Upscaler:
    """One upscale model the server runs.

    Attributes:
        air: Its AIR id, the ``model`` value.
        name: Its display name.
        factors: The ``upscaleFactor`` values it accepts, when they are a list.
        factor_range: The inclusive range it accepts instead, when any number in it goes.
        settings: The ``settings`` parameters it takes (the seed's compatibility table).
    """

    air: str
    name: str
    factors: tuple[int, ...] = ()
    factor_range: tuple[float, float] | None = None
    settings: frozenset[str] = frozenset()

    def accepts(self, factor: float) -> bool:
        """Whether ``factor`` is an ``upscaleFactor`` of this model."""
        if self.factor_range is not None:
            low, high = self.factor_range
            return low <= factor <= high
        return factor in self.factors

    def factors_text(self) -> str:
        """The accepted factors, as a message says them."""
        if self.factor_range is not None:
            low, high = self.factor_range
            return f"any number from {low:g} to {high:g}"
        return " or ".join(str(f) for f in self.factors)


UPSCALERS: Mapping[str, Upscaler] = {
    model.air: model
    for model in (
        Upscaler(
            CLARITY,
            "Clarity",
            factor_range=(2.0, 4.0),
            settings=_DIFFUSION | {"strength", "controlNetWeight", "scheduler"},
        ),
        Upscaler(CCSR, "CCSR", factors=(2,), settings=_DIFFUSION | {"controlNetWeight"}),
        Upscaler(
            SD_LATENT_UPSCALER,
            "Stable Diffusion Latent Upscaler",
            factors=(2,),
            settings=_DIFFUSION | {"clipSkip"},
        ),
        Upscaler(SWINIR, "SwinIR", factors=(2, 4)),
        Upscaler(REAL_ESRGAN, "Real-ESRGAN", factors=(2, 4)),
    )
}
"""Every upscale model the server runs, by AIR id."""

DEFAULT_MODEL = SWINIR
"""The model of a task that names none (the client library's default too)."""


def known_models() -> str:
    """The models, as an error message lists them."""
    return ", ".join(f"{m.air} ({m.name})" for m in UPSCALERS.values())


def check_upscale(fields: Mapping[str, Any]) -> tuple[Upscaler, float]:
    """The model a task names and its factor, or the error the real API gives.

    Args:
        fields: The task's fields, wire names (``model``, ``upscaleFactor``).

    Returns:
        The model and the factor (an ``int`` when it is whole, else a ``float``).

    Raises:
        InvalidTask: ``invalidModel`` for a model the server does not run,
            ``invalidUpscaleFactor`` for a factor the model does not take.
    """
    model_id = fields.get("model", DEFAULT_MODEL)
    model = UPSCALERS.get(model_id) if isinstance(model_id, str) else None
    if model is None:
        raise InvalidTask(
            f"is not an upscale model of this server; use one of: {known_models()}",
            parameter="model",
            value=model_id,
            code="invalidModel",
        )
    factor = fields.get("upscaleFactor", 2)
    if isinstance(factor, bool) or not isinstance(factor, int | float):
        raise InvalidTask(
            f"must be a number; {model.name} takes {model.factors_text()}",
            parameter="upscaleFactor",
            value=factor,
            code="invalidUpscaleFactor",
        )
    if not model.accepts(factor):
        raise InvalidTask(
            f"{model.name} ({model.air}) takes upscaleFactor {model.factors_text()}",
            parameter="upscaleFactor",
            value=factor,
            code="invalidUpscaleFactor",
        )
    _check_settings(model, fields.get("settings"))
    return model, int(factor) if float(factor).is_integer() else float(factor)


def _check_settings(model: Upscaler, settings: object) -> None:
    """Refuse a ``settings`` key no source documents, or one the model does not take.

    The same rule as for top-level keys: a key the real API documents is accepted (and may
    have no effect here), a key nobody documents is ``unknownParameter``. Keys used to be
    accepted silently inside ``settings`` while refused at the top level, so a typo such as
    ``settings.strenght`` was quietly ignored.
    """
    if not isinstance(settings, dict):
        return  # not an object: the task model answers invalidSettings
    for name, value in settings.items():
        if name not in SEED_SETTINGS and name not in LATER_SETTINGS:
            raise InvalidTask(
                "is not a settings parameter of the upscale task",
                parameter=f"settings.{name}",
                value=value,
                code="unknownParameter",
            )
        takes = name in model.settings or (name in LATER_SETTINGS and bool(model.settings))
        if not takes:
            supported = ", ".join(sorted(model.settings)) or "no settings"
            raise InvalidTask(
                f"{model.name} ({model.air}) does not take {name}; it takes: {supported}",
                parameter=f"settings.{name}",
                value=value,
                code="unsupportedParameter",
            )


PASS_THROUGH_FIELDS = frozenset(
    {"routing", "providerSettings", "safety", "targetMegapixels", "numberResults"}
)
"""Upscale fields the real API accepts that our model does not know; dropped, not rejected."""


def normalise_upscale(item: Mapping[str, Any]) -> dict[str, Any]:
    """Turn a received upscale item into fields :meth:`UpscaleTask.from_wire` accepts.

    ``imageUpscale`` becomes ``upscale``, ``inputs.image`` becomes ``inputImage``, the
    :data:`PASS_THROUGH_FIELDS` are dropped, a whole float ``upscaleFactor`` becomes an int,
    and a ``ttl`` with a non-URL output is checked and dropped (it has no effect there).

    Raises:
        InvalidTask: ``inputs`` is not an object.
    """
    fields = {key: value for key, value in item.items() if key not in PASS_THROUGH_FIELDS}
    fields["taskType"] = UPSCALE
    inputs = fields.pop("inputs", None)
    if inputs is not None:
        if not isinstance(inputs, dict):
            raise InvalidTask(
                'must be an object like {"image": ...}',
                parameter="inputs",
                value=inputs,
                code="invalidInputs",
            )
        if "inputImage" not in fields and "image" in inputs:
            fields["inputImage"] = inputs["image"]
    factor = fields.get("upscaleFactor")
    if isinstance(factor, float) and factor.is_integer():
        fields["upscaleFactor"] = int(factor)
    if "ttl" in fields and fields.get("outputType") not in (None, "URL"):
        # The seed: ttl "only takes effect when outputType is URL. It has no effect on other
        # output types." So it is not an error there: its value is checked, then dropped.
        ttl = fields.pop("ttl")
        if isinstance(ttl, bool) or not isinstance(ttl, int) or ttl < 60:
            raise InvalidTask(
                "must be a whole number of seconds, at least 60",
                parameter="ttl",
                value=ttl,
                code="invalidTtl",
            )
    return fields
