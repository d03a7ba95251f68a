"""What the official SDKs and raw frames found the server getting wrong (issue 10, fidelity).

Models and factors come from one registry (server/upscalers.py, decisions in docs/server.md);
settings keys follow the same rule as top-level keys; ttl has no effect on a non-URL output
(the seed); inputs.image requests are answered in both spellings; messages quote JSON.
"""

from __future__ import annotations

import base64
import io
from typing import Any

import pytest
from PIL import Image

from .conftest import WireClient, png_data_uri, upscale


async def answer(client: WireClient, task: dict[str, Any]) -> dict[str, Any]:
    await client.send([task])
    return (await client.collect([task["taskUUID"]]))[task["taskUUID"]]


def size_of(item: dict[str, Any]) -> tuple[int, int]:
    text = item.get("imageBase64Data") or item["imageDataURI"].partition(",")[2]
    with Image.open(io.BytesIO(base64.b64decode(text))) as image:
        return image.size


@pytest.mark.parametrize(
    "model", ["runware:999@1", "runware:100@1", "civitai:4384@128713", "no-air-id"]
)
async def test_a_model_the_server_does_not_run_gets_invalid_model(
    client: WireClient, model: str
) -> None:
    error = await answer(client, upscale(model=model))
    assert (error["code"], error["parameter"]) == ("invalidModel", "model")
    for known in ("runware:500@1", "runware:501@1", "runware:502@1", "runware:503@1"):
        assert known in error["message"]
    assert "runware:504@1 (Real-ESRGAN)" in error["message"]


@pytest.mark.parametrize(
    ("model", "factor", "size"),
    [
        ("runware:504@1", 2, (20, 12)),
        ("runware:504@1", 4, (40, 24)),
        ("runware:500@1", 2.5, (25, 15)),
        ("runware:500@1", 4, (40, 24)),
        ("runware:500@1", 3.0, (30, 18)),
        ("runware:503@1", 4, (40, 24)),
    ],
)
async def test_each_model_runs_the_factors_the_sources_give_it(
    client: WireClient, model: str, factor: float, size: tuple[int, int]
) -> None:
    task = upscale(model=model, upscaleFactor=factor, inputImage=png_data_uri(10, 6))
    result = await answer(client, {**task, "outputType": "base64Data", "outputFormat": "PNG"})
    assert size_of(result) == size


@pytest.mark.parametrize(
    ("model", "factor"),
    [
        ("runware:504@1", 3),
        ("runware:500@1", 1.5),
        ("runware:500@1", 4.5),
        ("runware:501@1", 4),
        ("runware:502@1", 4),
        ("runware:503@1", 2.5),
        ("runware:503@1", True),
    ],
)
async def test_a_factor_the_model_does_not_take_gets_invalid_upscale_factor(
    client: WireClient, model: str, factor: Any
) -> None:
    error = await answer(client, upscale(model=model, upscaleFactor=factor))
    assert (error["code"], error["parameter"]) == ("invalidUpscaleFactor", "upscaleFactor")
    assert "True" not in error["message"]  # wire-shaped: true, not a Python repr


async def test_an_unknown_settings_key_is_refused_like_an_unknown_top_level_key(
    client: WireClient,
) -> None:
    error = await answer(client, upscale(model="runware:500@1", settings={"strenght": 0.3}))
    assert (error["code"], error["parameter"]) == ("unknownParameter", "settings.strenght")
    error = await answer(client, upscale(noSuchField=1))
    assert (error["code"], error["parameter"]) == ("unknownParameter", "noSuchField")


async def test_later_documented_settings_are_accepted_where_the_model_takes_settings(
    client: WireClient,
) -> None:
    result = await answer(client, upscale(model="runware:500@1", settings={"colorFix": True}))
    assert "imageURL" in result
    error = await answer(client, upscale(model="runware:504@1", settings={"colorFix": True}))
    assert (error["code"], error["parameter"]) == ("unsupportedParameter", "settings.colorFix")


@pytest.mark.parametrize("output_type", ["base64Data", "dataURI"])
async def test_ttl_with_a_non_url_output_has_no_effect_and_is_no_error(
    client: WireClient, output_type: str
) -> None:
    result = await answer(client, upscale(outputType=output_type, ttl=120))
    assert "imageBase64Data" in result or "imageDataURI" in result
    error = await answer(client, upscale(outputType=output_type, ttl=5))
    assert (error["code"], error["parameter"]) == ("invalidTtl", "ttl")  # still a bad value


async def test_inputs_image_requests_are_answered_in_both_spellings(client: WireClient) -> None:
    task = upscale()
    task["inputs"] = {"image": task.pop("inputImage")}
    result = await answer(client, task)
    assert result["mediaUUID"] == result["imageUUID"]
    assert result["mediaURL"] == result["imageURL"]
    legacy = await answer(client, upscale())
    assert "mediaUUID" not in legacy and "mediaURL" not in legacy


async def test_error_items_carry_documentation_and_quote_json(client: WireClient) -> None:
    error = await answer(client, upscale(includeCost="yes"))
    assert error["documentation"] == "https://runware.ai/docs/en/tools/upscale"
    assert 'includeCost "yes"' in error["message"], error["message"]
