"""The resume manifest: digests, lines, damaged lines, and what counts as done."""

from __future__ import annotations

from pathlib import Path, PurePosixPath

from upscale_stream.cli.manifest import (
    Entry,
    ManifestWriter,
    is_done,
    options_digest,
    read_manifest,
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
