"""nucseg_rt.masks.postprocess against Cellpose 3.1's utils / fastremap / flow_error (test-only)."""

from __future__ import annotations

import numpy as np
import pytest

from _dynamics_synth import random_ellipsoids
from nucseg_rt.masks import postprocess
from nucseg_rt.errors import InvalidInputError
from nucseg_rt.masks.postprocess import fill_holes_and_remove_small_masks, flow_errors, remove_bad_flow_masks, renumber

cp_utils = pytest.importorskip("cellpose.utils")
fastremap = pytest.importorskip("fastremap")


@pytest.fixture(scope="module")
def holey():
    """3D labels with punched holes, enclosed cavities and tiny masks."""
    lab = random_ellipsoids((23, 97, 131), 70, seed=3, radius=(4.0, 10.0)).astype(np.uint16)
    rng = np.random.default_rng(0)
    for k in range(1, lab.max() + 1, 2):
        zz, yy, xx = np.nonzero(lab == k)
        c = rng.integers(len(zz))
        lab[zz[c], yy[c], xx[c]] = 0  # a one-voxel hole (or a dent at the surface)
    n = lab.max()
    lab[0, :3, :3] = n + 1  # small masks
    lab[5:7, 50:52, 0:2] = n + 2
    return lab


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


def test_cavity_filled_and_enclosed_mask_absorbed():
    lab = np.zeros((9, 9, 9), np.uint16)
    lab[1:8, 1:8, 1:8] = 1
    lab[3:6, 3:6, 3:6] = 0  # cavity
    lab[4, 4, 4] = 2  # a mask inside the cavity
    out = fill_holes_and_remove_small_masks(lab, min_size=-1)
    ref = cp_utils.fill_holes_and_remove_small_masks(lab.copy(), min_size=-1)
    np.testing.assert_array_equal(out, ref)
    assert out.max() == 1 and (out[1:8, 1:8, 1:8] == 1).all()


def test_2d_hole_is_4_connected():
    ring = np.zeros((7, 7), np.uint8)
    ring[1:6, 1:6] = 3
    ring[2:5, 2:5] = 0  # hole
    ring[1, 1] = 0  # a corner gap only touches the hole diagonally: still a hole
    out = fill_holes_and_remove_small_masks(ring, min_size=-1)
    np.testing.assert_array_equal(out, cp_utils.fill_holes_and_remove_small_masks(ring.copy(), min_size=-1))
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


@pytest.mark.parametrize("scale", [7, 10**12])
def test_renumber_equals_fastremap(scale):
    x = (np.random.default_rng(1).integers(0, 50, (20, 30)).astype(np.uint64) * scale)
    ref = fastremap.renumber(x.copy())[0]
    np.testing.assert_array_equal(renumber(x), ref)


def test_more_than_65535_masks_are_uint32():
    lab = np.arange(1, 70001, dtype=np.int64).reshape(280, 250)[::-1]
    out = renumber(lab)
    assert out.dtype == np.uint32 and out.max() == 70000 and out[0, 0] == 1
    out = fill_holes_and_remove_small_masks(lab, min_size=1)
    assert out.dtype == np.uint32 and out.max() == 70000
    assert postprocess.label_dtype(65535) == np.uint16


def test_flow_errors_equal_cellpose():
    cp_metrics = pytest.importorskip("cellpose.metrics")
    lab = random_ellipsoids((120, 140), 40, seed=4, radius=(5.0, 12.0))
    rng = np.random.default_rng(2)
    dP = rng.normal(0, 3, (2, *lab.shape)).astype(np.float32)
    ref = cp_metrics.flow_error(lab, dP, device=pytest.importorskip("torch").device("cpu"))[0]
    np.testing.assert_allclose(flow_errors(lab, dP), ref, rtol=1e-5, atol=1e-6)
    kept = remove_bad_flow_masks(lab, dP, threshold=float(np.median(ref)))
    assert kept.max() == (ref <= np.median(ref)).sum()


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
