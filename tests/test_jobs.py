"""Job ids and deterministic taskUUIDs (upscale_stream.jobs)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from upscale_stream.errors import InvalidTask
from upscale_stream.jobs import (
    check_job_id,
    derive_task_uuid,
    input_key,
    new_job_id,
    options_digest,
)
from upscale_stream.models import UUID_V4


def test_derived_task_uuid_is_a_valid_uuid_v4():
    uuid = derive_task_uuid("job", "path:a.png", options_digest({"upscaleFactor": 2}))
    assert UUID_V4.match(uuid)


@given(
    st.text(min_size=1, max_size=40),
    st.text(max_size=40),
    st.text(max_size=10),
    st.integers(0, 50),
)
def test_every_derived_task_uuid_is_a_uuid_v4(job_id, key, digest, attempt):
    assert UUID_V4.match(derive_task_uuid(job_id, key, digest, attempt))


def test_same_job_input_and_options_give_the_same_task_uuid_in_another_process():
    digest = options_digest({"upscaleFactor": 4, "model": "runware:503@1"})
    here = derive_task_uuid("job-1", "path:x/y.png", digest, 0)
    code = (
        "from upscale_stream.jobs import derive_task_uuid as d;"
        f"print(d('job-1', 'path:x/y.png', {digest!r}, 0))"
    )
    there = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert here == there


def test_each_part_changes_the_task_uuid():
    base = ("job", "path:a.png", "d1", 0)
    seen = {derive_task_uuid(*base)}
    for changed in (
        ("job2", "path:a.png", "d1", 0),
        ("job", "path:b.png", "d1", 0),
        ("job", "path:a.png", "d2", 0),
        ("job", "path:a.png", "d1", 1),
    ):
        seen.add(derive_task_uuid(*changed))
    assert len(seen) == 5


def test_parts_cannot_be_shifted_into_each_other():
    assert derive_task_uuid("ab", "c", "d") != derive_task_uuid("a", "bc", "d")


def test_options_digest_ignores_key_order():
    assert options_digest({"a": 1, "b": 2}) == options_digest({"b": 2, "a": 1})
    assert options_digest({"a": 1}) != options_digest({"a": 2})


def test_input_keys_name_what_the_input_is(tmp_path: Path):
    assert input_key(Path("in/a.png")) == "path:in/a.png"
    assert input_key("https://example.com/a.png") == "url:https://example.com/a.png"
    uuid = "6F1E7B2C-1C4A-4F5E-9A55-0E6C7B1D2A3F"
    assert input_key(uuid) == "uuid:" + uuid.lower()
    assert input_key(b"abc") == input_key(bytearray(b"abc"))
    assert input_key(b"abc").startswith("sha256:")
    assert input_key(b"abc") != input_key(b"abd")


def test_input_key_of_a_pil_image_depends_on_its_pixels():
    red = Image.new("RGB", (4, 4), "red")
    assert input_key(red) == input_key(Image.new("RGB", (4, 4), "red"))
    assert input_key(red) != input_key(Image.new("RGB", (4, 4), "blue"))
    assert input_key(red) != input_key(Image.new("RGB", (2, 8), "red"))


def test_input_key_refuses_what_it_cannot_key():
    with pytest.raises(InvalidTask, match="inputImage"):
        input_key(3.5)


def test_new_job_ids_are_unique_uuids():
    ids = {new_job_id() for _ in range(100)}
    assert len(ids) == 100
    assert all(UUID_V4.match(i) for i in ids)


@pytest.mark.parametrize("bad", ["", "x" * 129, "tab\there", None, 7])
def test_check_job_id_names_the_field_and_value(bad):
    with pytest.raises(InvalidTask, match="job_id") as info:
        check_job_id(bad)
    assert info.value.parameter == "job_id"


def test_negative_attempt_is_refused():
    with pytest.raises(InvalidTask, match="attempt"):
        derive_task_uuid("j", "k", "d", -1)
