"""nucseg_rt.masks.stitch.stitch3d: Cellpose 3.1's stitching on known cases, dtypes, bad input
(equality with Cellpose's utils.stitch3D: tests/reference/test_stitch_cellpose.py)."""

from __future__ import annotations

import numpy as np
import pytest

from helpers import quirk_planes, split_merge_planes
from nucseg_rt.errors import InvalidInputError
from nucseg_rt.masks.stitch import stitch3d


def test_reproduces_cellpose_quirk_before_first_stitch():
    out = stitch3d(quirk_planes(), 0.25)
    assert out[0, 3, 3] == out[2, 13, 13] == out[4, 14, 14] == 1


def test_split_and_merge_follow_best_iou():
    out = stitch3d(split_merge_planes(), 0.25)
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
