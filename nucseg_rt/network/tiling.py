"""Tile placement and tapered blending for running the 2D network over planes (Cellpose 3.1 rules).

A plane is zero-padded so both sides are multiples of 16 plus 8 pixels each side
(:func:`pad_yx`); tiles of ``bsize`` (224) are placed with ``tile_overlap`` (0.1) as Cellpose's
``make_tiles`` does, and the network outputs are averaged with a sigmoid taper
(:func:`taper_mask`), as Cellpose's ``average_tiles`` does.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np


#: tile edges the runtime accepts: multiples of 16 (the network halves a tile 4 times)
TILE_SIZE_RANGE = (64, 1024)


def is_tile_size(value) -> bool:
    """Whether ``value`` is an accepted tile edge: a whole multiple of 16 in ``TILE_SIZE_RANGE``."""
    lo, hi = TILE_SIZE_RANGE
    return (not isinstance(value, bool) and int(value) == value and lo <= value <= hi
            and int(value) % 16 == 0)


def pad_yx(ly: int, lx: int, div: int = 16, extra: int = 1) -> tuple[int, int, int, int]:
    """Padding ``(y_before, y_after, x_before, x_after)`` of a plane (Cellpose ``get_pad_yx``)."""
    def one(n: int) -> tuple[int, int]:
        lpad = int(div * np.ceil(n / div) - n)
        return extra * div // 2 + lpad // 2, extra * div // 2 + lpad - lpad // 2

    return (*one(ly), *one(lx))


def tile_starts(n: int, bsize: int, tile_overlap: float) -> np.ndarray:
    """Start offsets of tiles along an axis of length ``n`` (Cellpose ``make_tiles``)."""
    tile_overlap = min(0.5, max(0.05, tile_overlap))
    size = min(bsize, n)
    count = 1 if n <= bsize else int(np.ceil((1.0 + 2 * tile_overlap) * n / bsize))
    return np.linspace(0, n - size, count).astype(int)


@lru_cache(maxsize=16)
def taper_mask(ly: int, lx: int, sig: float = 7.5, *, own: bool = False) -> np.ndarray:
    """Sigmoid taper weights ``(ly, lx)`` float32, ~1 inside, falling off 20 px from tile edges.

    Cellpose computes the taper for a square of ``max(224, ly, lx)`` and crops it, so tiles
    smaller than 224 are barely tapered; ``own=True`` tapers each axis at its own length.
    """
    if own:
        def axis(n):
            xm = np.abs(np.arange(n) - (n - 1) / 2)
            return 1 / (1 + np.exp((xm - (n / 2 - 20)) / sig))

        m = (axis(ly)[:, np.newaxis] * axis(lx)).astype(np.float32)
        m.setflags(write=False)
        return m
    bsize = max(224, max(ly, lx))
    xm = np.arange(bsize)
    xm = np.abs(xm - xm.mean())
    m = 1 / (1 + np.exp((xm - (bsize / 2 - 20)) / sig))
    m = m * m[:, np.newaxis]
    m = m[bsize // 2 - ly // 2: bsize // 2 + ly // 2 + ly % 2,
          bsize // 2 - lx // 2: bsize // 2 + lx // 2 + lx % 2]
    m = m.astype(np.float32)
    m.setflags(write=False)
    return m


@dataclass(frozen=True)
class TileGrid:
    """Tiles covering one padded plane.

    Attributes
    ----------
    pads : (int, int, int, int)
        Zero padding (y before, y after, x before, x after) applied to the plane.
    shape : (int, int)
        Padded plane shape ``(Ly, Lx)``.
    tile : (int, int)
        Tile shape ``(ly, lx)`` (``bsize`` or smaller for small planes).
    starts : list of (int, int)
        Top-left corner of every tile, row-major.
    """

    pads: tuple
    shape: tuple
    tile: tuple
    starts: tuple
    compact: bool = False

    @property
    def ntiles(self) -> int:
        return len(self.starts)


def compact_starts(n: int, bsize: int, tile_overlap: float) -> tuple[np.ndarray, int]:
    """Fewest, smallest tiles along an axis of length ``n``: ``(starts, size)``.

    Cellpose always uses ``bsize`` tiles, ``ceil((1 + 2 * overlap) * n / bsize)`` of them, so a
    272-pixel axis gets two 224-pixel tiles overlapping by 176 pixels. Here the count is the
    smallest that covers ``n`` with tiles of at most ``bsize`` overlapping by at least
    ``tile_overlap * bsize`` pixels, and the tiles shrink (to a multiple of 16, as the network
    needs) to just cover ``n``: 2 tiles of 160 for 272 pixels.
    """
    tile_overlap = min(0.5, max(0.05, tile_overlap))
    if n <= bsize:
        return np.zeros(1, int), n
    ov = int(np.ceil(tile_overlap * bsize))
    count = int(np.ceil((n - ov) / (bsize - ov)))
    size = min(bsize, int(16 * np.ceil((n + (count - 1) * ov) / count / 16)))
    return np.linspace(0, n - size, count).astype(int), size


def make_grid(ly: int, lx: int, *, bsize: int = 224, tile_overlap: float = 0.1,
              compact: bool = False) -> TileGrid:
    """Tile grid for a ``(ly, lx)`` plane, padded as Cellpose pads it.

    ``compact=False`` places tiles exactly as Cellpose 3.1; ``compact=True`` uses
    :func:`compact_starts` (fewer network pixels, tapered by :func:`taper_mask` at the tile's
    own size).
    """
    pads = pad_yx(ly, lx)
    lyp, lxp = ly + pads[0] + pads[1], lx + pads[2] + pads[3]
    if compact:
        (ys, ty), (xs, tx) = compact_starts(lyp, bsize, tile_overlap), compact_starts(
            lxp, bsize, tile_overlap)
    else:
        ys, xs = tile_starts(lyp, bsize, tile_overlap), tile_starts(lxp, bsize, tile_overlap)
        ty, tx = min(bsize, lyp), min(bsize, lxp)
    starts = tuple((int(y), int(x)) for y in ys for x in xs)
    return TileGrid(pads=pads, shape=(lyp, lxp), tile=(ty, tx), starts=starts, compact=compact)


def grid_taper(grid: TileGrid) -> np.ndarray:
    """The blending weights of one tile of ``grid``."""
    return taper_mask(*grid.tile, own=True) if grid.compact else taper_mask(*grid.tile)


def blend_weights(grid: TileGrid) -> np.ndarray:
    """``1 / sum of taper weights`` over the padded plane, for normalising accumulated tiles."""
    navg = np.zeros(grid.shape, np.float64)
    m = grid_taper(grid)
    ly, lx = grid.tile
    for y, x in grid.starts:
        navg[y:y + ly, x:x + lx] += m
    return (1.0 / navg).astype(np.float32)
