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
def taper_mask(ly: int, lx: int, sig: float = 7.5) -> np.ndarray:
    """Sigmoid taper weights ``(ly, lx)`` float32, ~1 inside, falling off 20 px from tile edges."""
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

    @property
    def ntiles(self) -> int:
        return len(self.starts)


def make_grid(ly: int, lx: int, *, bsize: int = 224, tile_overlap: float = 0.1) -> TileGrid:
    """Tile grid for a ``(ly, lx)`` plane, padded as Cellpose pads it."""
    pads = pad_yx(ly, lx)
    lyp, lxp = ly + pads[0] + pads[1], lx + pads[2] + pads[3]
    ys = tile_starts(lyp, bsize, tile_overlap)
    xs = tile_starts(lxp, bsize, tile_overlap)
    starts = tuple((int(y), int(x)) for y in ys for x in xs)
    return TileGrid(pads=pads, shape=(lyp, lxp), tile=(min(bsize, lyp), min(bsize, lxp)),
                    starts=starts)


def blend_weights(grid: TileGrid) -> np.ndarray:
    """``1 / sum of taper weights`` over the padded plane, for normalising accumulated tiles."""
    navg = np.zeros(grid.shape, np.float64)
    m = taper_mask(*grid.tile)
    ly, lx = grid.tile
    for y, x in grid.starts:
        navg[y:y + ly, x:x + lx] += m
    return (1.0 / navg).astype(np.float32)
