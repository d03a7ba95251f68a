"""The output folder's state: digests, lines, what counts as done, the order of a write,
part files and their recovery, file modes, and the job id."""

from __future__ import annotations

import errno
import hashlib
import os
from pathlib import Path, PurePosixPath
from typing import Any

import pytest

from upscale_stream.cli import manifest as manifest_module
from upscale_stream.cli.manifest import (
    Entry,
    ManifestWriter,
    is_done,
    job_id_for,
    options_digest,
    part_path,
    read_manifest,
    recover_outputs,
    remove_part_files,
    write_file_atomic,
)


def entry(input: str = "/in/a.png", options: str = "d1", output: str = "a.jpg") -> Entry:
    return Entry(
        input=input,
        options=options,
        output=output,
        task_uuid="6a1f0e3c-3a52-4a5e-9d35-0c8e1c3b2a10",
        cost=0.0021,
        bytes_in=1234,
        bytes_out=5678,
        finished_at="2025-01-01T00:00:00+00:00",
    )


def test_the_digest_ignores_the_task_uuid_and_the_input_but_no_option() -> None:
    base = {"taskType": "upscale", "model": "runware:503@1", "upscaleFactor": 2}
    same = {**base, "taskUUID": "x", "inputImage": "data:..."}
    assert options_digest(base) == options_digest(same)
    assert options_digest(base) == options_digest(dict(reversed(base.items())))
    assert options_digest(base) != options_digest({**base, "upscaleFactor": 4})
    assert options_digest(base) != options_digest({**base, "outputFormat": "PNG"})


def test_an_entry_round_trips_through_its_json_line() -> None:
    line = entry().to_line()
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    for name in (b'"input"', b'"output"', b'"taskUUID"', b'"cost"', b'"bytesIn"', b'"bytesOut"'):
        assert name in line
    assert Entry.from_line(line) == entry()


def test_appended_lines_are_read_back_later_lines_winning(tmp_path: Path) -> None:
    path = tmp_path / "state" / "manifest.jsonl"
    with ManifestWriter(path) as manifest:
        manifest.append(entry(output="old.jpg"))
        manifest.append(entry(input="/in/b.png"))
    with ManifestWriter(path) as manifest:
        manifest.append(entry(output="a.jpg"))
    entries = read_manifest(path)
    assert set(entries) == {("/in/a.png", "d1"), ("/in/b.png", "d1")}
    assert entries[("/in/a.png", "d1")].output == "a.jpg"


def test_a_line_cut_short_by_a_crash_is_skipped_and_the_next_append_stays_whole(
    tmp_path: Path,
) -> None:
    path = tmp_path / "manifest.jsonl"
    path.write_bytes(entry().to_line() + entry(input="/in/b.png").to_line()[:30])
    assert set(read_manifest(path)) == {("/in/a.png", "d1")}
    with ManifestWriter(path) as manifest:
        manifest.append(entry(input="/in/c.png"))
    assert set(read_manifest(path)) == {("/in/a.png", "d1"), ("/in/c.png", "d1")}


def test_a_fresh_manifest_forgets_the_old_lines(tmp_path: Path) -> None:
    path = tmp_path / "manifest.jsonl"
    with ManifestWriter(path) as manifest:
        manifest.append(entry())
    with ManifestWriter(path, fresh=True) as manifest:
        manifest.append(entry(input="/in/z.png"))
    assert set(read_manifest(path)) == {("/in/z.png", "d1")}


def test_a_missing_manifest_is_empty_and_junk_lines_are_ignored(tmp_path: Path) -> None:
    assert read_manifest(tmp_path / "none.jsonl") == {}
    path = tmp_path / "m.jsonl"
    path.write_bytes(b'not json\n{"input": 3}\n[]\n\n' + entry().to_line())
    assert list(read_manifest(path)) == [("/in/a.png", "d1")]


def test_done_needs_the_same_options_the_same_output_and_the_file_still_there(
    tmp_path: Path,
) -> None:
    entries = {("/in/a.png", "d1"): entry()}
    output = PurePosixPath("a.jpg")
    assert not is_done(entries, "/in/a.png", "d1", output, tmp_path)  # file missing
    (tmp_path / "a.jpg").write_bytes(b"jpg")
    assert is_done(entries, "/in/a.png", "d1", output, tmp_path)
    assert not is_done(entries, "/in/a.png", "d2", output, tmp_path)
    assert not is_done(entries, "/in/a.png", "d1", PurePosixPath("a@2x.jpg"), tmp_path)
    assert not is_done(entries, "/in/b.png", "d1", output, tmp_path)


# -- the order of a write, part files, recovery, the job id ------------------------------------


def test_commit_writes_the_part_file_then_the_line_then_renames(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[str] = []
    real_replace = os.replace

    def replace(source: Any, target: Any) -> None:
        # At the rename, the line is already in the manifest and the bytes in the part file.
        seen.append(Path(source).name)
        assert read_manifest(tmp_path / "m.jsonl")[("/in/a.png", "d1")].sha256
        assert Path(source).read_bytes() == b"image bytes"
        real_replace(source, target)

    monkeypatch.setattr(os, "replace", replace)
    with ManifestWriter(tmp_path / "m.jsonl") as writer:
        writer.commit(tmp_path, entry(output="sub/a.jpg"), b"image bytes")

    assert (tmp_path / "sub" / "a.jpg").read_bytes() == b"image bytes"
    assert seen == [f".a.jpg.{entry().task_uuid}.part"]
    [line] = read_manifest(tmp_path / "m.jsonl").values()
    assert (line.bytes_out, line.sha256) == (11, hashlib.sha256(b"image bytes").hexdigest())


def test_a_failed_part_write_leaves_no_line_and_no_part_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def full(path: Path, content: bytes) -> None:
        path.write_bytes(content[:3])
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(manifest_module, "_write_new_file", full)
    with ManifestWriter(tmp_path / "m.jsonl") as writer, pytest.raises(OSError):
        writer.commit(tmp_path, entry(), b"image bytes")

    assert read_manifest(tmp_path / "m.jsonl") == {}
    assert [p.name for p in tmp_path.iterdir()] == ["m.jsonl"]


def test_a_line_and_a_matching_part_file_are_recovered_and_a_mismatch_is_not(
    tmp_path: Path,
) -> None:
    good = Entry(**{**_fields(entry(output="a.jpg")), "sha256": _sha(b"abc"), "bytes_out": 3})
    bad = Entry(
        **{
            **_fields(entry(input="/in/b.png", output="b.jpg")),
            "sha256": _sha(b"xyz"),
            "bytes_out": 3,
        }
    )
    (tmp_path / part_path(PurePosixPath("a.jpg"), good.task_uuid)).write_bytes(b"abc")
    (tmp_path / part_path(PurePosixPath("b.jpg"), bad.task_uuid)).write_bytes(b"xy!")
    entries = {(good.input, good.options): good, (bad.input, bad.options): bad}

    assert recover_outputs(entries, tmp_path) == 1
    assert (tmp_path / "a.jpg").read_bytes() == b"abc"
    assert not (tmp_path / "b.jpg").exists()
    assert remove_part_files(tmp_path) == 1
    assert list(tmp_path.iterdir()) == [tmp_path / "a.jpg"]


def test_files_get_the_mode_the_umask_allows_not_0600(tmp_path: Path) -> None:
    old = os.umask(0o027)
    try:
        write_file_atomic(tmp_path / "s.json", b"{}")
        with ManifestWriter(tmp_path / "m.jsonl") as writer:
            writer.commit(tmp_path, entry(), b"bytes")
    finally:
        os.umask(old)
    assert oct((tmp_path / "s.json").stat().st_mode & 0o777) == "0o640"
    assert oct((tmp_path / "a.jpg").stat().st_mode & 0o777) == "0o640"


def test_the_job_id_is_kept_in_the_folder_and_new_job_replaces_it(tmp_path: Path) -> None:
    first, created = job_id_for(tmp_path / "state", new_job=False)
    again, created_again = job_id_for(tmp_path / "state", new_job=False)
    fresh, created_fresh = job_id_for(tmp_path / "state", new_job=True)

    assert (created, created_again, created_fresh) == (True, False, True)
    assert again == first != fresh
    assert job_id_for(tmp_path / "state", new_job=False) == (fresh, False)


def _fields(value: Entry) -> dict[str, Any]:
    return {name: getattr(value, name) for name in Entry.__dataclass_fields__}


def _sha(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()
