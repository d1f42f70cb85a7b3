"""nucseg_rt.masks.stitch.stitch3d: Cellpose 3.1's stitching on known cases, dtypes, bad input
(equality with Cellpose's utils.stitch3D: tests/reference/test_stitch_cellpose.py)."""

from __future__ import annotations

import numpy as np
import pytest

from _dynamics_synth import random_ellipsoids
from nucseg_rt.errors import InvalidInputError
from nucseg_rt.masks.stitch import stitch3d


@pytest.fixture(scope="module")
def planes():
    """Per-plane labels of 3D nuclei with shuffled ids, an empty gap and a cut corner."""
    lab = random_ellipsoids((20, 97, 131), 40, seed=4, radius=(5.0, 11.0))
    rng = np.random.default_rng(0)
    out = np.zeros(lab.shape, np.uint16)
    for z in range(lab.shape[0]):
        ids = np.unique(lab[z])[1:]
        lut = np.zeros(lab.max() + 1, np.int64)
        lut[ids] = rng.permutation(len(ids)) + 1
        out[z] = lut[lab[z]]
    out[8:10] = 0
    out[0, :20, :20] = 0
    out[12][out[12] == 2] = 0  # a gap in the ids of one plane
    return out


def _quirk_planes():
    # plane 1 is empty before any two planes were stitched: plane 2 keeps its own ids,
    # so its mask 1 gets the same id as the unrelated mask 1 of plane 0 (as in Cellpose)
    m = np.zeros((5, 20, 20), np.uint16)
    m[0, 2:5, 2:5] = 1
    m[2, 12:16, 12:16] = 1
    m[2, 5:9, 5:9] = 2
    m[3, 12:16, 12:16] = 1
    m[4, 13:17, 12:16] = 3
    return m


def _split_merge_planes():
    m = np.zeros((2, 10, 20), np.uint16)
    m[0, :, :10] = 1
    m[0, :, 10:] = 2
    m[1, :, 2:16] = 5  # overlaps 1 (8 px wide) more than 2 (6 px wide)
    m[1, :, 16:] = 3
    return m


def test_reproduces_cellpose_quirk_before_first_stitch():
    out = stitch3d(_quirk_planes(), 0.25)
    assert out[0, 3, 3] == out[2, 13, 13] == out[4, 14, 14] == 1


def test_split_and_merge_follow_best_iou():
    out = stitch3d(_split_merge_planes(), 0.25)
    assert out[1, 0, 5] == 1 and out[1, 0, 18] == 2


def test_input_not_modified_and_dtype(planes):
    before = planes.copy()
    out = stitch3d(planes, 0.25)
    np.testing.assert_array_equal(planes, before)
    assert out.dtype == np.uint16


def test_many_labels_become_uint32():
    m = np.zeros((2, 300, 300), np.uint32)
    m[0] = np.arange(1, 90001).reshape(300, 300)
    m[1, 5] = 1  # a row over 300 one-pixel masks, IoU 1/300 each: a new id 90001
    out = stitch3d(m, 0.5)
    assert out.dtype == np.uint32 and out[1, 5, 0] == 90001


@pytest.mark.parametrize("masks, threshold, match", [
    (np.zeros((4, 5), np.uint16), 0.25, "`masks` must be a \\(Z, Y, X\\) stack"),
    (np.zeros((2, 4, 5), np.float32), 0.25, "`masks` must have an integer dtype"),
    (-np.ones((2, 4, 5), np.int32), 0.25, "`masks` must be >= 0"),
    (np.zeros((2, 4, 5), np.uint16), 1.5, "`stitch_threshold` must be a number in \\[0, 1\\], got 1.5"),
    (np.zeros((2, 4, 5), np.uint16), "0.3", "`stitch_threshold` must be a number"),
])
def test_bad_input_raises(masks, threshold, match):
    with pytest.raises(InvalidInputError, match=match):
        stitch3d(masks, threshold)
