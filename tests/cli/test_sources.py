"""Input discovery (files, folders, URLs, UUIDs, @lists, stdin) and output naming."""

from __future__ import annotations

import io
from pathlib import Path, PurePosixPath

import pytest

from upscale_stream.cli.errors import UsageError
from upscale_stream.cli.sources import Source, discover, plan_outputs

from .helpers import write_image

UUID = "0f8fad5b-d9cb-469f-a165-70867728950e"


def stems(sources: list[Source]) -> list[str]:
    return [str(source.stem) for source in sources]


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "photos"
    for name in ("b.png", "a.JPG", "c.jpeg", "d.webp", "sub/e.png", "sub/deeper/f.png"):
        write_image(root / name, image_format="PNG")
    (root / "notes.txt").write_text("not an image")
    (root / "anim.gif").write_bytes(b"GIF89a")
    write_image(root / ".thumbnails" / "hidden.png")
    write_image(root / ".hidden.png")
    return root


def test_a_folder_is_searched_recursively_for_png_jpg_and_webp_in_sorted_order(tree: Path) -> None:
    found = discover([str(tree)], stdin=io.StringIO())
    assert stems(found) == ["a", "b", "c", "d", "sub/deeper/f", "sub/e"]
    assert all(isinstance(source.image, Path) for source in found)
    assert found[0].key == str((tree / "a.JPG").absolute())
    assert found[0].size == (tree / "a.JPG").stat().st_size


def test_the_output_folder_inside_an_input_folder_is_never_read(tree: Path) -> None:
    out = tree / "sub"
    assert stems(discover([str(tree)], stdin=io.StringIO(), exclude=out)) == ["a", "b", "c", "d"]


def test_a_file_given_directly_keeps_only_its_name(tree: Path) -> None:
    found = discover([str(tree / "sub" / "e.png")], stdin=io.StringIO())
    assert stems(found) == ["e"]


def test_an_unsupported_file_is_kept_so_it_fails_alone_with_its_reason(tmp_path: Path) -> None:
    (tmp_path / "notes.png").write_text("not an image")
    found = discover([str(tmp_path / "notes.png")], stdin=io.StringIO())
    assert stems(found) == ["notes"]


def test_a_missing_path_is_a_usage_error_naming_it(tmp_path: Path) -> None:
    missing = tmp_path / "missing_dir"
    with pytest.raises(UsageError, match=r"INPUT .*missing_dir: no such file or folder"):
        discover([str(missing)], stdin=io.StringIO())


def test_a_missing_path_in_a_list_is_a_usage_error_naming_the_list(tmp_path: Path) -> None:
    (tmp_path / "list.txt").write_text(f"{tmp_path / 'gone.png'}\n")
    with pytest.raises(UsageError, match=r"INPUT @.*list.txt: .*gone.png: no such file"):
        discover([f"@{tmp_path / 'list.txt'}"], stdin=io.StringIO())


def test_urls_are_named_after_their_path_or_a_hash() -> None:
    found = discover(
        [
            "https://cdn.example/img/cat%20photo.jpg?v=2",
            "https://cdn.example/",
            "http://x.example/a/b/",
        ],
        stdin=io.StringIO(),
    )
    assert [s.image for s in found] == [s.key for s in found]
    assert stems(found)[0] == "cat_photo"
    assert stems(found)[1].startswith("url-")
    assert stems(found)[2] == "b"


def test_an_image_uuid_passes_through_and_names_its_output() -> None:
    found = discover([UUID.upper()], stdin=io.StringIO())
    assert found == [Source(UUID, UUID.upper(), PurePosixPath(UUID))]


def test_a_list_file_names_files_folders_and_urls_with_comments_and_blanks(
    tree: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    listing = tmp_path / "list.txt"
    listing.write_text("# my inputs\n\nphotos/b.png\n  photos/sub  \nhttps://cdn.example/z.png\n")
    found = discover([f"@{listing}"], stdin=io.StringIO())
    assert stems(found) == ["b", "deeper/f", "e", "z"]


def test_dash_reads_the_list_from_stdin(tree: Path) -> None:
    found = discover(["-"], stdin=io.StringIO(f"{tree / 'b.png'}\n{tree / 'd.webp'}\n"))
    assert stems(found) == ["b", "d"]


def test_an_input_named_twice_is_upscaled_once(tree: Path) -> None:
    found = discover([str(tree / "b.png"), str(tree)], stdin=io.StringIO())
    assert stems(found) == ["b", "a", "c", "d", "sub/deeper/f", "sub/e"]


def test_an_unreadable_list_names_the_argument(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"^INPUT @.*nope\.txt: cannot read the list"):
        discover([f"@{tmp_path / 'nope.txt'}"], stdin=io.StringIO())


def test_a_list_cannot_name_another_list(tmp_path: Path) -> None:
    listing = tmp_path / "list.txt"
    listing.write_text("@other.txt\n")
    with pytest.raises(UsageError, match="a list cannot name another list"):
        discover([f"@{listing}"], stdin=io.StringIO())


def test_finding_nothing_is_a_usage_error_naming_the_inputs(tmp_path: Path) -> None:
    (tmp_path / "readme.txt").write_text("hi")
    with pytest.raises(UsageError, match=r"^INPUT .*: no PNG, JPG or WEBP images found"):
        discover([str(tmp_path)], stdin=io.StringIO())


def test_outputs_take_the_format_extension_and_the_suffix(tree: Path) -> None:
    planned = plan_outputs(
        discover([str(tree)], stdin=io.StringIO()), extension="webp", suffix="@2x"
    )
    assert [str(p.output) for p in planned] == [
        "a@2x.webp",
        "b@2x.webp",
        "c@2x.webp",
        "d@2x.webp",
        "sub/deeper/f@2x.webp",
        "sub/e@2x.webp",
    ]


def test_inputs_that_would_share_an_output_name_get_numbered_in_input_order(
    tmp_path: Path,
) -> None:
    for name in ("x.png", "x.jpg", "x.webp"):
        write_image(tmp_path / "in" / name)
    write_image(tmp_path / "other" / "x.png")
    found = discover([str(tmp_path / "in"), str(tmp_path / "other")], stdin=io.StringIO())
    outputs = [str(p.output) for p in plan_outputs(found, extension="jpg")]
    assert outputs == ["x.jpg", "x-2.jpg", "x-3.jpg", "x-4.jpg"]
    again = discover([str(tmp_path / "in"), str(tmp_path / "other")], stdin=io.StringIO())
    assert [str(p.output) for p in plan_outputs(again, extension="jpg")] == outputs


def test_hidden_folders_are_skipped_but_a_hidden_folder_given_directly_is_read(
    tmp_path: Path,
) -> None:
    write_image(tmp_path / ".cache" / "a.png")
    assert stems(discover([str(tmp_path / ".cache")], stdin=io.StringIO())) == ["a"]
