"""The tile plan: cores cover the image exactly once, sources add the overlap where it fits."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from upscale_stream.server.engines.tiling import Tile, plan_tiles

sizes = st.integers(min_value=1, max_value=600)


@given(width=sizes, height=sizes, tile=st.integers(8, 300), overlap=st.integers(0, 40))
def test_cores_cover_every_pixel_exactly_once(width, height, tile, overlap):
    tiles = plan_tiles(width, height, tile=tile, overlap=overlap)
    covered = 0
    for item in tiles:
        left, top, right, bottom = item.core
        assert 0 <= left < right <= width and 0 <= top < bottom <= height
        assert right - left <= tile and bottom - top <= tile
        covered += (right - left) * (bottom - top)
    assert covered == width * height
    rows = sorted({item.core[1] for item in tiles})
    columns = sorted({item.core[0] for item in tiles})
    assert len(tiles) == len(rows) * len(columns)


@given(width=sizes, height=sizes, tile=st.integers(8, 300), overlap=st.integers(0, 40))
def test_sources_grow_each_core_by_the_overlap_clipped_to_the_image(width, height, tile, overlap):
    for item in plan_tiles(width, height, tile=tile, overlap=overlap):
        left, top, right, bottom = item.core
        assert item.source == (
            max(0, left - overlap),
            max(0, top - overlap),
            min(width, right + overlap),
            min(height, bottom + overlap),
        )


@given(scale=st.integers(1, 4), overlap=st.integers(0, 20))
def test_crop_in_output_is_the_core_scaled_inside_the_source(scale, overlap):
    for item in plan_tiles(50, 31, tile=16, overlap=overlap):
        left, top, right, bottom = item.crop_in_output(scale)
        assert (right - left, bottom - top) == (
            (item.core[2] - item.core[0]) * scale,
            (item.core[3] - item.core[1]) * scale,
        )
        assert left == (item.core[0] - item.source[0]) * scale
        assert top == (item.core[1] - item.source[1]) * scale
        assert item.place_in_output(scale) == (item.core[0] * scale, item.core[1] * scale)


def test_an_image_that_fits_is_one_tile_whose_source_is_the_whole_image():
    assert plan_tiles(100, 60, tile=160, overlap=18) == [Tile((0, 0, 100, 60), (0, 0, 100, 60))]


def test_tiles_are_balanced_so_no_sliver_is_left():
    widths = [t.core[2] - t.core[0] for t in plan_tiles(330, 1, tile=160, overlap=0)]
    assert widths == [110, 110, 110]


@pytest.mark.parametrize(
    ("width", "height", "tile", "overlap"),
    [(0, 5, 5, 0), (5, 0, 5, 0), (5, 5, 0, 0), (5, 5, 5, -1)],
)
def test_sizes_out_of_range_are_refused(width, height, tile, overlap):
    with pytest.raises(ValueError):
        plan_tiles(width, height, tile=tile, overlap=overlap)
