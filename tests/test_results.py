"""The typed result and its hot-path decoder: it must agree with the pydantic model everywhere."""

from __future__ import annotations

from typing import Any

import pydantic
import pytest
from hypothesis import given
from hypothesis import strategies as st

from upscale_stream.models import UpscaleResultModel
from upscale_stream.results import UpscaleResult, decode_result

TASK = "fd613011-3872-4f37-b4aa-0d343c051a27"
WIRE_KEYS = [
    "taskType",
    "taskUUID",
    "imageUUID",
    "inputImageUUID",
    "imageURL",
    "imageBase64Data",
    "imageDataURI",
    "mediaUUID",
    "mediaURL",
    "cost",
    "status",
]
values = st.one_of(
    st.none(),
    st.text(max_size=8),
    st.integers(min_value=-(2**53), max_value=2**53),
    st.floats(allow_nan=False),
    st.booleans(),
    st.lists(st.integers(), max_size=2),
)
items = st.dictionaries(
    st.one_of(st.sampled_from(WIRE_KEYS), st.text(min_size=1, max_size=6)), values, max_size=8
)


def test_a_plain_result_item_decodes_to_the_struct_with_every_field() -> None:
    item = {
        "taskType": "upscale",
        "taskUUID": TASK,
        "imageUUID": "i",
        "inputImageUUID": "s",
        "imageURL": "https://x/y.jpg",
        "cost": 0.0013,
        "status": "success",
    }
    result = decode_result(item)
    assert type(result) is UpscaleResult
    assert (result.task_uuid, result.url, result.uuid, result.cost) == (
        TASK,
        "https://x/y.jpg",
        "i",
        0.0013,
    )
    assert result.model_extra == {}
    assert result.to_wire() == item


def test_unknown_keys_are_kept_and_given_back_on_the_wire() -> None:
    item = {"taskUUID": TASK, "imageBase64Data": "AA==", "newField": [1, 2]}
    result = UpscaleResult.model_validate(item)
    assert isinstance(result, UpscaleResult)
    assert result.model_extra == {"newField": [1, 2]}
    assert result.image_base64_data == "AA=="
    assert result.to_wire() == {"taskType": "upscale", **item}


def test_results_are_immutable() -> None:
    result = decode_result({"taskUUID": TASK})
    with pytest.raises(AttributeError):
        result.task_uuid = "other"  # type: ignore[misc]


def test_a_wrongly_typed_field_is_refused_by_the_pydantic_model() -> None:
    with pytest.raises(pydantic.ValidationError, match="imageURL"):
        decode_result({"taskUUID": TASK, "imageURL": 12})


@given(items)
def test_the_decoder_accepts_exactly_what_the_pydantic_model_accepts_with_equal_values(
    item: dict[str, Any],
) -> None:
    try:
        expected = UpscaleResultModel.model_validate(item)
    except pydantic.ValidationError:
        with pytest.raises(pydantic.ValidationError):
            decode_result(item)
        return
    result = decode_result(item)
    for name in UpscaleResultModel.model_fields:
        mine, theirs = getattr(result, name), getattr(expected, name)
        assert mine == theirs and type(mine) is type(theirs), name
    assert result.model_extra == (expected.model_extra or {})
