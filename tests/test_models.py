"""Wire models: every rule of the seed, the error message naming field and value, templates."""

from __future__ import annotations

import base64
import os
import random
import uuid
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from upscale_stream import b64
from upscale_stream.errors import InvalidTask
from upscale_stream.inputs import EncodedImage
from upscale_stream.models import (
    CCSR,
    CLARITY,
    SD_LATENT_UPSCALER,
    SWINIR,
    ErrorItem,
    TaskTemplate,
    UpscaleResult,
    UpscaleTask,
    new_task_uuid,
)

IMAGE = "fd613011-3872-4f37-b4aa-0d343c051a27"


def rejected(**fields: Any) -> InvalidTask:
    with pytest.raises(InvalidTask) as info:
        UpscaleTask(input_image=IMAGE, **fields)
    return info.value


@pytest.mark.parametrize(
    ("fields", "parameter", "code", "shown"),
    [
        ({"model": CCSR, "upscale_factor": 4}, "upscaleFactor", "invalidUpscaleFactor", "=4"),
        ({"model": CLARITY, "upscale_factor": 4}, "upscaleFactor", "invalidUpscaleFactor", "=4"),
        (
            {"model": SD_LATENT_UPSCALER, "upscale_factor": 4},
            "upscaleFactor",
            "invalidUpscaleFactor",
            "=4",
        ),
        ({"upscale_factor": 3}, "upscaleFactor", "invalidUpscaleFactor", "=3"),
        ({"output_quality": 100}, "outputQuality", "invalidOutputQuality", "=100"),
        ({"output_quality": 19}, "outputQuality", "invalidOutputQuality", "=19"),
        ({"ttl": 30}, "ttl", "invalidTtl", "=30"),
        ({"ttl": 60, "output_type": "base64Data"}, "ttl", "incompatibleParameters", "=60"),
        (
            {"model": CCSR, "settings": {"strength": 0.3}},
            "settings.strength",
            "unsupportedParameter",
            "=0.3",
        ),
        (
            {"model": CCSR, "settings": {"scheduler": "Euler"}},
            "settings.scheduler",
            "unsupportedParameter",
            "='Euler'",
        ),
        (
            {"model": CLARITY, "settings": {"clip_skip": 1}},
            "settings.clipSkip",
            "unsupportedParameter",
            "=1",
        ),
        (
            {"model": SD_LATENT_UPSCALER, "settings": {"strength": 0.2}},
            "settings.strength",
            "unsupportedParameter",
            "=0.2",
        ),
        (
            {"model": SD_LATENT_UPSCALER, "settings": {"control_net_weight": 0.2}},
            "settings.controlNetWeight",
            "unsupportedParameter",
            "=0.2",
        ),
        (
            {"model": SWINIR, "settings": {"steps": 10}},
            "settings.steps",
            "unsupportedParameter",
            "=10",
        ),
        (
            {"model": CLARITY, "settings": {"strength": 1.5}},
            "settings.strength",
            "invalidStrength",
            "=1.5",
        ),
        (
            {"model": CLARITY, "settings": {"cfg_scale": 60}},
            "settings.CFGScale",
            "invalidCFGScale",
            "=60",
        ),
        ({"output_type": "PNG"}, "outputType", "invalidOutputType", "='PNG'"),
        ({"output_format": "GIF"}, "outputFormat", "invalidOutputFormat", "='GIF'"),
        ({"delivery_method": "later"}, "deliveryMethod", "invalidDeliveryMethod", "='later'"),
        ({"model": "swinir"}, "model", "invalidModel", "='swinir'"),
        ({"task_uuid": "not-a-uuid"}, "taskUUID", "invalidTaskUUID", "='not-a-uuid'"),
        ({"task_uuid": str(uuid.uuid1())}, "taskUUID", "invalidTaskUUID", "="),
        ({"webhook_url": "ftp://host/x"}, "webhookURL", "invalidWebhookURL", "='ftp://host/x'"),
        (
            {"upload_endpoint": "s3://bucket"},
            "uploadEndpoint",
            "invalidUploadEndpoint",
            "='s3://bucket'",
        ),
        ({"include_cost": "yes"}, "includeCost", "invalidIncludeCost", "='yes'"),
        ({"outputQualty": 90}, "outputQualty", "unknownParameter", "=90"),
    ],
)
def test_each_rule_of_the_seed_is_rejected_naming_the_field_and_the_value(
    fields: dict[str, Any], parameter: str, code: str, shown: str
) -> None:
    error = rejected(**fields)
    assert (error.parameter, error.code) == (parameter, code)
    assert str(error).startswith(parameter + shown)


def test_a_missing_input_image_is_named() -> None:
    with pytest.raises(InvalidTask) as info:
        UpscaleTask.from_wire({"taskType": "upscale", "model": SWINIR})
    assert (info.value.parameter, info.value.code) == ("inputImage", "missingInputImage")


def test_invalid_task_is_a_value_error_and_carries_no_whole_payload() -> None:
    error = rejected(output_quality=100)
    assert isinstance(error, ValueError)
    long_value = "x" * 10_000
    assert len(str(rejected(webhook_url=long_value))) < 300


@pytest.mark.parametrize("model", [CLARITY, CCSR, SD_LATENT_UPSCALER, SWINIR, "acme:7@2"])
def test_factor_two_works_for_every_model_and_unknown_air_ids_pass_through(model: str) -> None:
    task = UpscaleTask(input_image=IMAGE, model=model)
    assert task.to_wire()["model"] == model


def test_swinir_takes_factor_four_and_settings_pass_through_for_unknown_models() -> None:
    assert UpscaleTask(input_image=IMAGE, upscale_factor=4).upscale_factor == 4
    task = UpscaleTask(input_image=IMAGE, model="acme:7@2", settings={"strength": 0.5})
    assert task.to_wire()["settings"] == {"strength": 0.5}


def test_extra_settings_are_kept_for_newer_server_features() -> None:
    task = UpscaleTask(input_image=IMAGE, model=CCSR, settings={"colorFix": True, "steps": 5})
    assert task.to_wire()["settings"] == {"steps": 5, "colorFix": True}


def test_wire_names_are_exact_and_python_names_are_snake_case() -> None:
    task = UpscaleTask.from_wire(
        {
            "taskType": "upscale",
            "taskUUID": "19abad0d-6ec5-40a6-b7af-203775fa5b7f",
            "inputImage": IMAGE,
            "model": "runware:501@1",
            "outputType": "URL",
            "outputFormat": "jpg",
            "upscaleFactor": 2,
        }
    )
    assert task.output_format == "JPG" and task.task_uuid == "19abad0d-6ec5-40a6-b7af-203775fa5b7f"
    assert list(task.to_wire()) == [
        "taskType",
        "taskUUID",
        "inputImage",
        "model",
        "upscaleFactor",
        "outputType",
        "outputFormat",
        "deliveryMethod",
    ]


@given(st.integers(min_value=20, max_value=99), st.sampled_from(["JPG", "PNG", "WEBP"]))
def test_a_template_encodes_exactly_what_the_model_serialises(quality: int, fmt: str) -> None:
    options: dict[str, Any] = {
        "output_quality": quality,
        "output_format": fmt,
        "include_cost": True,
    }
    task_uuid = new_task_uuid()
    template = TaskTemplate(model=CLARITY, settings={"strength": 0.4}, **options)
    expected = UpscaleTask(
        task_uuid=task_uuid,
        input_image='a "quoted" \\ image',
        model=CLARITY,
        settings={"strength": 0.4},
        **options,
    ).to_json()
    assert template.encode(task_uuid, 'a "quoted" \\ image') == expected


@given(
    st.uuids().map(str),
    st.sampled_from(["JPG", "PNG", "WEBP"]),
    st.text(max_size=12),
    st.booleans(),
)
def test_a_template_encodes_an_image_uuid_input_the_same_both_ways(
    image: str, fmt: str, note: str, upper: bool
) -> None:
    """The image-UUID shortcut builds one string; any option text (quotes, escapes, non-ASCII)
    must still come out byte for byte as the general encoder and the model have it."""
    image = image.upper() if upper else image
    task_uuid = new_task_uuid()
    options: dict[str, Any] = {"output_format": fmt, "settings": {"prompt": note}}
    template = TaskTemplate(model=CLARITY, **options)
    expected = UpscaleTask(task_uuid=task_uuid, input_image=image, model=CLARITY, **options)
    assert template.encode_image_uuid(task_uuid, image) == expected.to_json()
    assert template.encode_image_uuid(task_uuid, image) == template.encode(task_uuid, image)


@given(
    st.binary(max_size=300),
    st.sampled_from(["image/png", "image/jpeg", "image/webp"]),
    st.sampled_from(["JPG", "PNG", "WEBP"]),
    st.text(max_size=12),
)
def test_a_template_encodes_local_image_data_as_its_data_uri_would_be(
    raw: bytes, mime: str, fmt: str, note: str
) -> None:
    """An EncodedImage (local data as its base64 bytes) is joined in without a str of the URI;
    the payload must be byte for byte the one the URI as a str gives, and the model's."""
    image = EncodedImage(mime, b64.encode(raw))
    uri = str(image)
    assert uri == f"data:{mime};base64,{base64.b64encode(raw).decode()}"
    task_uuid = new_task_uuid()
    options: dict[str, Any] = {"output_format": fmt, "settings": {"prompt": note}}
    template = TaskTemplate(model=CLARITY, **options)
    expected = UpscaleTask(task_uuid=task_uuid, input_image=uri, model=CLARITY, **options)
    assert template.encode(task_uuid, image) == template.encode(task_uuid, uri)
    assert template.encode(task_uuid, image) == expected.to_json()


def test_a_template_validates_its_options_once_up_front() -> None:
    with pytest.raises(InvalidTask):
        TaskTemplate(model=CCSR, upscale_factor=4)


def test_new_task_uuids_are_valid_v4_and_distinct() -> None:
    values = {new_task_uuid() for _ in range(10_000)}
    assert len(values) == 10_000
    assert all(uuid.UUID(v).version == 4 and uuid.UUID(v).variant == uuid.RFC_4122 for v in values)


def test_a_drawn_batch_is_exactly_uuid4_of_the_os_random_bytes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from upscale_stream import models

    random_bytes = random.Random(7).randbytes(16 * 256)
    monkeypatch.setattr(models.os, "urandom", lambda size: random_bytes[:size])
    expected = [
        str(uuid.UUID(bytes=random_bytes[pos : pos + 16], version=4))
        for pos in range(0, len(random_bytes), 16)
    ]
    assert models._draw_uuids() == expected


def test_threads_drawing_at_once_never_get_the_same_task_uuid() -> None:
    from concurrent.futures import ThreadPoolExecutor

    def draw(_: int) -> list[str]:
        return [new_task_uuid() for _ in range(3_000)]  # refills the shared pool many times

    with ThreadPoolExecutor(4) as pool:
        drawn = [value for batch in pool.map(draw, range(4)) for value in batch]
    assert len(set(drawn)) == len(drawn) == 12_000


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_never_repeats_the_task_uuids_its_parent_has_in_store() -> None:
    new_task_uuid()  # the pool now holds drawn UUIDs the parent has not handed out
    reader, writer = os.pipe()
    child = os.fork()
    if child == 0:  # the child: report its next UUIDs and leave at once
        os.write(writer, " ".join(new_task_uuid() for _ in range(50)).encode())
        os._exit(0)
    os.close(writer)
    with os.fdopen(reader) as pipe:
        in_child = set(pipe.read().split())
    os.waitpid(child, 0)
    in_parent = {new_task_uuid() for _ in range(50)}
    assert len(in_child) == 50 and not in_child & in_parent


def test_results_accept_every_output_spelling_and_keep_unknown_fields() -> None:
    base = {"taskType": "upscale", "taskUUID": IMAGE}
    assert (
        UpscaleResult.model_validate(base | {"imageURL": "https://x/y.jpg"}).url
        == "https://x/y.jpg"
    )
    media = UpscaleResult.model_validate(base | {"mediaUUID": "m", "mediaURL": "https://m"})
    assert (media.uuid, media.url) == ("m", "https://m")
    extra = UpscaleResult.model_validate(
        base | {"imageBase64Data": "AA==", "cost": 0.0013, "new": 1}
    )
    assert extra.cost == 0.0013 and extra.model_extra == {"new": 1}


def test_error_items_carry_every_documented_field_and_a_list_parameter_keeps_the_first() -> None:
    item = ErrorItem.from_wire(
        {
            "code": "incompatibleParameters",
            "message": "no",
            "parameter": ["ttl", "outputType"],
            "taskType": "upscale",
            "taskUUID": IMAGE,
            "documentation": "https://docs",
        }
    )
    error = item.to_exception()
    assert (error.code, error.parameter, error.task_uuid, error.task_type, error.documentation) == (
        "incompatibleParameters",
        "ttl",
        IMAGE,
        "upscale",
        "https://docs",
    )
