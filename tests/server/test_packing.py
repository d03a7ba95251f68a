"""The one frame packer (wire.frame_slices), which the server and the client both use."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from upscale_stream.wire import frame_slices


@given(
    sizes=st.lists(st.integers(0, 300), max_size=60),
    max_items=st.integers(1, 10),
    max_bytes=st.one_of(st.none(), st.integers(1, 600)),
    overhead=st.integers(0, 12),
)
def test_frame_slices_cover_every_item_in_order_within_both_caps(
    sizes: list[int], max_items: int, max_bytes: int | None, overhead: int
) -> None:
    slices = frame_slices(sizes, max_items=max_items, max_bytes=max_bytes, overhead=overhead)
    covered = [index for part in slices for index in range(len(sizes))[part]]
    assert covered == list(range(len(sizes)))  # every item once, in order, no empty frame
    for part in slices:
        frame = sizes[part]
        assert 1 <= len(frame) <= max_items
        if max_bytes is not None and len(frame) > 1:
            assert overhead + sum(size + 1 for size in frame) <= max_bytes


def test_an_item_over_the_byte_cap_goes_alone() -> None:
    assert frame_slices([10, 500, 10], max_items=5, max_bytes=100) == [
        slice(0, 1),
        slice(1, 2),
        slice(2, 3),
    ]
