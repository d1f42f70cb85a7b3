"""nucseg_rt.masks.postprocess equals Cellpose 3.1's utils / fastremap / flow_error (reference)."""

from __future__ import annotations

import numpy as np
import pytest

from helpers import CELLPOSE, cavity_labels, cellpose_module, random_ellipsoids, ring_labels
from nucseg_rt.masks.postprocess import fill_holes_and_remove_small_masks, flow_errors, remove_bad_flow_masks, renumber

cp_utils = cellpose_module("cellpose.utils")
pytestmark = CELLPOSE
fastremap = pytest.importorskip("fastremap")


@pytest.mark.parametrize("min_size", [15, 200, 0, -1])
def test_fill_and_remove_equals_cellpose_3d(holey, min_size):
    ours = fill_holes_and_remove_small_masks(holey, min_size=min_size)
    ref = cp_utils.fill_holes_and_remove_small_masks(holey.copy(), min_size=min_size)
    assert ours.dtype == np.uint16
    np.testing.assert_array_equal(ours, ref)


@pytest.mark.parametrize("min_size", [15, -1])
def test_fill_and_remove_equals_cellpose_2d(holey, min_size):
    plane = holey[11]
    ref = cp_utils.fill_holes_and_remove_small_masks(plane.copy(), min_size=min_size)
    np.testing.assert_array_equal(fill_holes_and_remove_small_masks(plane, min_size=min_size), ref)


@pytest.mark.parametrize("make", [cavity_labels, ring_labels])
def test_small_cases_equal_cellpose(make):
    lab = make()
    np.testing.assert_array_equal(fill_holes_and_remove_small_masks(lab, min_size=-1),
                                  cp_utils.fill_holes_and_remove_small_masks(lab.copy(), min_size=-1))


@pytest.mark.parametrize("scale", [7, 10**12])
def test_renumber_equals_fastremap(scale):
    x = (np.random.default_rng(1).integers(0, 50, (20, 30)).astype(np.uint64) * scale)
    ref = fastremap.renumber(x.copy())[0]
    np.testing.assert_array_equal(renumber(x), ref)


def test_flow_errors_equal_cellpose():
    cp_metrics = pytest.importorskip("cellpose.metrics")
    lab = random_ellipsoids((120, 140), 40, seed=4, radius=(5.0, 12.0))
    rng = np.random.default_rng(2)
    dP = rng.normal(0, 3, (2, *lab.shape)).astype(np.float32)
    ref = cp_metrics.flow_error(lab, dP, device=pytest.importorskip("torch").device("cpu"))[0]
    np.testing.assert_allclose(flow_errors(lab, dP), ref, rtol=1e-5, atol=1e-6)
    kept = remove_bad_flow_masks(lab, dP, threshold=float(np.median(ref)))
    assert kept.max() == (ref <= np.median(ref)).sum()
