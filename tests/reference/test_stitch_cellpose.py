"""nucseg_rt.masks.stitch.stitch3d equals Cellpose 3.1's utils.stitch3D (reference)."""

from __future__ import annotations

import numpy as np
import pytest

from helpers import CELLPOSE, cellpose_module, quirk_planes, split_merge_planes
from nucseg_rt.masks.stitch import stitch3d

cp_utils = cellpose_module("cellpose.utils")
pytestmark = CELLPOSE


@pytest.mark.parametrize("threshold", [0.0, 0.25, 0.5, 0.9])
def test_equals_cellpose(planes, threshold):
    ref = cp_utils.stitch3D(planes.copy(), stitch_threshold=threshold)
    np.testing.assert_array_equal(stitch3d(planes, threshold), ref)


@pytest.mark.parametrize("make", [quirk_planes, split_merge_planes])
def test_small_cases_equal_cellpose(make):
    m = make()
    np.testing.assert_array_equal(stitch3d(m, 0.25), cp_utils.stitch3D(m.copy(), 0.25))
