"""The table of which network serves which model and factor, and its copy in docs/engines.md."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from upscale_stream.models import CCSR, CLARITY, MODELS, SD_LATENT_UPSCALER, SWINIR
from upscale_stream.server.engines import NEURAL_ROUTES, neural_weights
from upscale_stream.server.engines.neural import locate_weights

DOC = Path(__file__).parents[3] / "docs" / "engines.md"
ROW = re.compile(r"^\| `(runware:\d+@\d+)` \| [^|]+ \| x(\d) \| [^|]+ \| \*\*([\w.-]+)\*\*")


def test_swinir_gets_the_fast_network_at_both_factors_and_ccsr_the_slow_one():
    assert {pair: w.name for pair, w in NEURAL_ROUTES.items()} == {
        (SWINIR, 2): "realesr-animevideov3-x2",
        (SWINIR, 4): "realesr-animevideov3-x4",
        (CCSR, 2): "realesrgan-x4plus",
    }


@pytest.mark.parametrize("model", [CLARITY, SD_LATENT_UPSCALER, "runware:999@1"])
def test_creative_and_unknown_models_stay_on_pillow(model):
    assert neural_weights(model, 2) is None


def test_every_network_in_the_table_ships_in_the_installed_wheel():
    for weights in NEURAL_ROUTES.values():
        param, model = locate_weights(weights.name)
        assert param.stat().st_size > 0 and model.stat().st_size > 100_000


def test_every_route_is_a_model_and_factor_the_wire_accepts():
    for model, factor in NEURAL_ROUTES:
        assert factor in MODELS[model].factors


def test_the_table_in_docs_engines_md_says_what_the_code_does():
    documented = {
        (m.group(1), int(m.group(2))): m.group(3)
        for line in DOC.read_text().splitlines()
        if (m := ROW.match(line))
    }
    assert documented == {pair: w.name for pair, w in NEURAL_ROUTES.items()}
