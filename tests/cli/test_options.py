"""The task flags: parsing, mapping onto task fields, and the up-front validation."""

from __future__ import annotations

import argparse
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from upscale_stream.cli.errors import UsageError
from upscale_stream.cli.options import (
    FLAG_OF_FIELD,
    MODEL_NAMES,
    add_task_arguments,
    check_task_options,
    extension_for,
    parse_model,
    parse_quality,
    parse_setting,
    task_options_from_args,
)
from upscale_stream.models import CCSR, CLARITY, SD_LATENT_UPSCALER, SWINIR, UpscaleTask


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(exit_on_error=False)
    add_task_arguments(parser)
    return parser.parse_args(list(argv))


def wire(*argv: str) -> dict[str, Any]:
    """What every task carries on the wire for these flags (UUID and input left out)."""
    task = check_task_options(task_options_from_args(parse(*argv)))
    body = task.to_wire()
    del body["taskUUID"], body["inputImage"]
    return body


def test_no_flags_send_only_the_required_fields() -> None:
    assert wire() == {
        "taskType": "upscale",
        "model": SWINIR,
        "upscaleFactor": 2,
        "deliveryMethod": "sync",
    }


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--factor", "4"], {"upscaleFactor": 4}),
        (["--model", "clarity"], {"model": CLARITY}),
        (["--model", "CCSR"], {"model": CCSR}),
        (["--model", "sd-latent"], {"model": SD_LATENT_UPSCALER}),
        (["--model", "swinir"], {"model": SWINIR}),
        (["--model", "acme:42@7"], {"model": "acme:42@7"}),
        (["--format", "png"], {"outputFormat": "PNG"}),
        (["--format", "jpeg"], {"outputFormat": "JPG"}),
        (["--format", "WebP"], {"outputFormat": "WEBP"}),
        (["--quality", "20"], {"outputQuality": 20}),
        (["--quality", "99"], {"outputQuality": 99}),
        (["--output-type", "url"], {"outputType": "URL"}),
        (["--output-type", "base64data"], {"outputType": "base64Data"}),
        (["--output-type", "dataURI"], {"outputType": "dataURI"}),
        (["--delivery", "ASYNC"], {"deliveryMethod": "async"}),
        (["--include-cost"], {"includeCost": True}),
        (
            ["--webhook-url", "https://hooks.example/x?t=1"],
            {"webhookURL": "https://hooks.example/x?t=1"},
        ),
        (
            ["--upload-endpoint", "https://bucket.example/o"],
            {"uploadEndpoint": "https://bucket.example/o"},
        ),
        (["--ttl", "60"], {"ttl": 60}),
        (
            ["--model", "clarity", "--setting", "steps=12", "--setting", "positive_prompt=a b"],
            {"model": CLARITY, "settings": {"steps": 12, "positivePrompt": "a b"}},
        ),
    ],
)
def test_each_flag_sets_its_wire_field(argv: list[str], expected: dict[str, Any]) -> None:
    body = wire(*argv)
    assert {key: body[key] for key in expected} == expected


def test_every_task_field_has_a_flag() -> None:
    fields = {
        info.alias or name
        for name, info in UpscaleTask.model_fields.items()
        if name not in ("task_type", "task_uuid", "input_image")
    }
    assert fields == set(FLAG_OF_FIELD)


def test_model_names_cover_the_four_documented_models() -> None:
    assert set(MODEL_NAMES.values()) == {CLARITY, CCSR, SD_LATENT_UPSCALER, SWINIR}


def test_an_unknown_model_name_lists_the_names_and_the_air_form() -> None:
    with pytest.raises(argparse.ArgumentTypeError) as caught:
        parse_model("superres")
    message = str(caught.value)
    assert "'superres'" in message
    assert "clarity, ccsr, sd-latent, swinir" in message
    assert "provider:id@version" in message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("steps=20", ("steps", 20)),
        ("strength=0.35", ("strength", 0.35)),
        ("CFGScale=6", ("CFGScale", 6.0)),
        ("cfg_scale=6", ("CFGScale", 6.0)),
        ("positivePrompt=sharp, detailed", ("positivePrompt", "sharp, detailed")),
        ("negativePrompt=a=b", ("negativePrompt", "a=b")),
        ("seed=7", ("seed", 7)),
        ("colorFix=true", ("colorFix", True)),
        ("tiles=3", ("tiles", 3)),
        ("mode=fast", ("mode", "fast")),
    ],
)
def test_settings_take_the_type_of_their_field(text: str, expected: tuple[str, Any]) -> None:
    assert parse_setting(text) == expected


@pytest.mark.parametrize("text", ["steps", "=3", "steps=many", "seed=1.5"])
def test_a_malformed_setting_says_what_is_expected(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        parse_setting(text)


@given(st.integers(min_value=-1000, max_value=1000))
def test_quality_is_accepted_exactly_from_20_to_99(quality: int) -> None:
    options = task_options_from_args(parse("--quality", str(quality)))
    if 20 <= quality <= 99:
        assert check_task_options(options).output_quality == quality
    else:
        with pytest.raises(UsageError, match=rf"^--quality {quality}: .*from 20 to 99"):
            check_task_options(options)


@pytest.mark.parametrize("text", ["abc", "9.5", "", "95%"])
def test_a_quality_that_is_no_integer_says_the_range(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="expected an integer from 20 to 99"):
        parse_quality(text)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--quality", "100"], "--quality 100: "),
        (["--ttl", "59"], "--ttl 59: "),
        (["--model", "clarity", "--factor", "4"], "--factor 4: Clarity (runware:500@1) supports"),
        (["--output-type", "base64Data", "--ttl", "120"], "--ttl 120: ttl only applies to"),
        (["--setting", "steps=10"], "--setting steps=10: SwinIR (runware:503@1) does not support"),
        (["--model", "ccsr", "--setting", "steps=500"], "--setting steps=500: "),
        (["--webhook-url", "ftp://x"], "--webhook-url ftp://x: must be an http"),
        (["--upload-endpoint", "nope"], "--upload-endpoint nope: must be an http"),
    ],
)
def test_a_rule_broken_by_the_options_is_reported_under_its_flag(
    argv: list[str], message: str
) -> None:
    with pytest.raises(UsageError) as caught:
        check_task_options(task_options_from_args(parse(*argv)))
    assert str(caught.value).startswith(message)


def test_the_extension_follows_the_output_format_and_defaults_to_jpg() -> None:
    assert [extension_for(f) for f in (None, "JPG", "PNG", "WEBP")] == ["jpg", "jpg", "png", "webp"]
