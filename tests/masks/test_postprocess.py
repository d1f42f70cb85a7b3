"""nucseg_rt.masks.postprocess on known cases, dtypes and bad input (equality with Cellpose 3.1's
utils / fastremap / flow_error: tests/reference/test_postprocess_cellpose.py)."""

from __future__ import annotations

import numpy as np
import pytest

from helpers import cavity_labels, random_ellipsoids, ring_labels
from nucseg_rt.masks import postprocess
from nucseg_rt.errors import InvalidInputError
from nucseg_rt.masks.label_flows import masks_to_flows
from nucseg_rt.masks.postprocess import fill_holes_and_remove_small_masks, flow_errors, remove_bad_flow_masks, renumber


def test_cavity_filled_and_enclosed_mask_absorbed():
    out = fill_holes_and_remove_small_masks(cavity_labels(), min_size=-1)
    assert out.max() == 1 and (out[1:8, 1:8, 1:8] == 1).all()


def test_2d_hole_is_4_connected():
    out = fill_holes_and_remove_small_masks(ring_labels(), min_size=-1)
    assert (out[2:5, 2:5] == 1).all()


def test_labels_with_gaps_are_removed_by_value():
    lab = np.zeros((20, 20), np.uint16)
    lab[:10, :10] = 4  # 100 px
    lab[15:17, 15:17] = 9  # 4 px -> removed
    out = fill_holes_and_remove_small_masks(lab, min_size=15)
    assert out.max() == 1 and (out[:10, :10] == 1).all() and not out[15:17, 15:17].any()


def test_inputs_not_modified(holey):
    before = holey.copy()
    fill_holes_and_remove_small_masks(holey, min_size=15)
    renumber(holey)
    np.testing.assert_array_equal(holey, before)


def test_more_than_65535_masks_are_uint32():
    lab = np.arange(1, 70001, dtype=np.int64).reshape(280, 250)[::-1]
    out = renumber(lab)
    assert out.dtype == np.uint32 and out.max() == 70000 and out[0, 0] == 1
    out = fill_holes_and_remove_small_masks(lab, min_size=1)
    assert out.dtype == np.uint32 and out.max() == 70000
    assert postprocess.label_dtype(65535) == np.uint16


def test_flow_errors_of_the_masks_own_flows_are_zero():
    lab = random_ellipsoids((120, 140), 40, seed=4, radius=(5.0, 12.0))
    dP = 5.0 * masks_to_flows(lab)  # what an ideal network outputs (x5)
    assert lab.max() > 20
    np.testing.assert_allclose(flow_errors(lab, dP), 0.0, atol=1e-10)
    bad = dP.copy()
    bad[:, lab == 7] *= -1  # flows of mask 7 point outwards: error 4 * mean |flow|^2 = 4
    err = flow_errors(lab, bad)
    assert np.flatnonzero(err > 1e-10).tolist() == [6] and err[6] == pytest.approx(4.0, rel=1e-5)
    kept = remove_bad_flow_masks(lab, bad, threshold=0.4)
    np.testing.assert_array_equal(kept, np.where(lab == 7, 0, lab - (lab > 7)))  # 1..N-1, in order


@pytest.mark.parametrize("labels, kwargs, match", [
    (np.zeros((4, 4), np.float32), {}, "`labels` must have an integer dtype"),
    (-np.ones((4, 4), np.int32), {}, "`labels` must be >= 0"),
    (np.zeros(4, np.int32), {}, "`labels` must be 2D"),
    (np.zeros((2, 2, 2, 2), np.int32), {}, "`labels` must be 2D"),
    (np.zeros((4, 4), np.int32), {"min_size": 1.5}, "`min_size` must be an integer"),
    (np.zeros((4, 4), np.int32), {"min_size": True}, "`min_size` must be an integer"),
])
def test_bad_input_raises(labels, kwargs, match):
    with pytest.raises(InvalidInputError, match=match):
        fill_holes_and_remove_small_masks(labels, **kwargs)


def test_bad_flow_input_raises():
    lab = np.zeros((4, 5), np.int32)
    with pytest.raises(InvalidInputError, match="`dP` \\(2, Y, X\\)"):
        flow_errors(lab, np.zeros((2, 4, 6), np.float32))
    with pytest.raises(InvalidInputError, match="`threshold` must be a number > 0"):
        remove_bad_flow_masks(lab, np.zeros((2, 4, 5), np.float32), threshold=0)
    with pytest.raises(InvalidInputError, match="`labels` must be >= 0"):
        renumber(-np.ones((2, 2), np.int8))


def test_remove_small_masks_is_the_pipeline_size_filter():
    """The public size filter (used by benchmarks/calibrate_defaults.py) keeps exactly the masks
    of at least ``min_size`` voxels, renumbered by first appearance, and refuses bad input."""
    from nucseg_rt.masks import remove_small_masks

    lab = np.zeros((3, 8, 8), np.int32)
    lab[0, :2, :2] = 7   # 4 voxels
    lab[1, 2:5, 2:5] = 3  # 9 voxels
    lab[2, 6:, 6:] = 5   # 4 voxels
    out = remove_small_masks(lab, 4.5)
    assert out.dtype == np.uint16 and out.max() == 1 and np.array_equal(out > 0, lab == 3)
    assert np.array_equal(remove_small_masks(lab, 0), np.select([lab == 7, lab == 3, lab == 5], [1, 2, 3]))
    for bad in (-1, float("nan"), True, "4"):
        with pytest.raises(InvalidInputError, match="`min_size` must be a number >= 0"):
            remove_small_masks(lab, bad)
    with pytest.raises(InvalidInputError, match="`labels` must be >= 0"):
        remove_small_masks(-lab, 1)
