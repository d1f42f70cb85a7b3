"""Shared, cached data for the blockwise tests: a synthetic volume, its TIFF, whole-volume masks.

Cached per test session (functools.lru_cache) so test_blockwise, test_distributed and
test_cli_large segment the same volume whole only once. Uses the bundled model ``nuclei_3d``.
"""

from __future__ import annotations

import functools
import tempfile
from pathlib import Path

import numpy as np
import tifffile

#: name -> (iso shape, anisotropy, seed, density): ~30 px nuclei, small enough to run whole
CASES = {"iso": ((24, 128, 128), 1.0, 3, 0.4), "aniso2": ((48, 112, 112), 2.0, 5, 0.4)}
_TMP = Path(tempfile.mkdtemp(prefix="nucseg-blockdata-"))


@functools.lru_cache(maxsize=None)
def volume(case: str = "iso") -> tuple[np.ndarray, float]:
    """(image (Z, Y, X) uint16, anisotropy)."""
    from nucseg_rt.eval.synth import make_volume

    shape, aniso, seed, density = CASES[case]
    img, _, _ = make_volume(shape, anisotropy=aniso, seed=seed, diameter_mean=30.0, density=density)
    img.setflags(write=False)
    return img, aniso


@functools.lru_cache(maxsize=None)
def tiff(case: str = "iso") -> Path:
    """The volume written as a calibrated ImageJ TIFF (0.5 um pixels, Z step 0.5 * aniso)."""
    img, aniso = volume(case)
    path = _TMP / f"{case}.tif"
    tifffile.imwrite(path, img, imagej=True, resolution=(2.0, 2.0),
                     metadata={"axes": "ZYX", "spacing": 0.5 * aniso, "unit": "um"})
    return path


@functools.lru_cache(maxsize=None)
def segmenter():
    from nucseg_rt import Segmenter

    return Segmenter("nuclei_3d", device="cpu")


@functools.lru_cache(maxsize=None)
def whole_masks(case: str = "iso") -> np.ndarray:
    img, aniso = volume(case)
    masks = segmenter().segment(img, anisotropy=aniso, diameter=30.0).masks
    masks.setflags(write=False)
    return masks


@functools.lru_cache(maxsize=None)
def blockwise_masks(case: str, block: str):
    """(BlockwiseResult, labels) of the in-process blockwise run of ``case`` with ``block``."""
    from nucseg_rt.blockwise import blocks
    from nucseg_rt.blockwise import run as large

    _, aniso = volume(case)
    out = _TMP / f"{case}_{block.replace(',', 'x')}_masks.tif"
    res = large.segment_blockwise(tiff(case), out, segmenter(),
                                  diameter=30.0, anisotropy=aniso,
                                  settings=large.LargeSettings(),
                                  block_size=blocks.parse_block_size(block))
    masks = tifffile.imread(res.path)
    masks.setflags(write=False)
    return res, masks


def split_nuclei(whole: np.ndarray, blocks: np.ndarray, fraction: float = 0.1) -> list[int]:
    """Whole-volume nuclei covered by two blockwise labels with pieces >= ``fraction`` of them."""
    split = []
    for label in range(1, int(whole.max()) + 1):
        inside = blocks[whole == label]
        ids, counts = np.unique(inside[inside > 0], return_counts=True)
        if (counts >= fraction * inside.size).sum() > 1:
            split.append(label)
    return split
