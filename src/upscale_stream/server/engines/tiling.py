"""Tiles with overlap for a network that upscales by a fixed factor. Pure: no I/O, no model.

A convolutional upscaler sees a few pixels around each output pixel (its receptive field). Run
on a tile cut out of a bigger image, it sees zeros past the tile's edges where the whole image
had real pixels, and the tile's outer rows come out wrong. So each tile is cut with a margin of
``overlap`` pixels on every side that has neighbours (:attr:`Tile.source`), the network runs on
that, and only the part that belongs to the tile (:attr:`Tile.core`) is kept
(:meth:`Tile.crop_in_output`). At the image's own border there is no margin: the network's zero
padding there is the same as when it runs on the whole image.

Memory then depends on the tile size, not on the image: the network's largest blob holds
``channels x (tile + 2 * overlap)^2`` floats, whatever the input size.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

__all__ = ["Box", "Tile", "plan_tiles"]

Box = tuple[int, int, int, int]
"""``(left, top, right, bottom)`` in pixels, right and bottom exclusive (Pillow's order)."""


@dataclass(frozen=True, slots=True)
class Tile:
    """One tile of the input.

    Attributes:
        core: The pixels this tile is responsible for, in input coordinates. The cores of a
            plan cover the image exactly once.
        source: ``core`` grown by the overlap on each side, clipped to the image: what the
            network is given.
    """

    core: Box
    source: Box

    def crop_in_output(self, scale: int) -> Box:
        """Where ``core`` lies inside the network's output for ``source``, at ``scale``.

        Args:
            scale: The network's upscale factor.

        Returns:
            The box to cut from the upscaled ``source`` tile.
        """
        left, top, right, bottom = self.core
        src_left, src_top = self.source[0], self.source[1]
        return (
            (left - src_left) * scale,
            (top - src_top) * scale,
            (right - src_left) * scale,
            (bottom - src_top) * scale,
        )

    def place_in_output(self, scale: int) -> tuple[int, int]:
        """The top-left corner of the upscaled ``core`` in the whole output image."""
        return self.core[0] * scale, self.core[1] * scale


def plan_tiles(width: int, height: int, *, tile: int, overlap: int) -> list[Tile]:
    """Cut a ``width`` x ``height`` image into tiles of at most ``tile`` pixels a side.

    Tiles are laid in rows, left to right, top to bottom; the last tile of a row or column is
    the remainder (the sizes are balanced so that no sliver of a few pixels is left over).

    Args:
        width: Image width, at least 1.
        height: Image height, at least 1.
        tile: Largest core side, at least 1.
        overlap: Margin added on each side that has neighbours, at least 0.

    Returns:
        The tiles; one tile whose source is the whole image when it fits in ``tile``.

    Raises:
        ValueError: a size is out of range.
    """
    if width < 1 or height < 1:
        raise ValueError(f"the image must have pixels, not {width}x{height}")
    if tile < 1:
        raise ValueError(f"tile must be at least 1, not {tile}")
    if overlap < 0:
        raise ValueError(f"overlap must be at least 0, not {overlap}")
    columns = _cuts(width, tile)
    rows = _cuts(height, tile)
    tiles = []
    for top, bottom in rows:
        for left, right in columns:
            source = (
                max(0, left - overlap),
                max(0, top - overlap),
                min(width, right + overlap),
                min(height, bottom + overlap),
            )
            tiles.append(Tile((left, top, right, bottom), source))
    return tiles


def _cuts(length: int, tile: int) -> list[tuple[int, int]]:
    """Split ``range(length)`` into ``ceil(length / tile)`` nearly equal runs."""
    count = -(-length // tile)
    edges = [length * index // count for index in range(count + 1)]
    return list(itertools.pairwise(edges))
