"""nucseg_rt.masks.dynamics.compute_masks on known labels: the stable method, determinism, edge
cases, bad input. Flows are the ideal flows of seeded labels (the runtime's masks_to_flows, equal
to Cellpose's); the comparison with Cellpose itself is tests/reference/test_dynamics_cellpose.py."""

from __future__ import annotations

import logging

import numba
import numpy as np
import pytest

from helpers import ideal_flows, random_ellipsoids
from nucseg_rt.masks import dynamics
from nucseg_rt.masks.dynamics import compute_masks
from nucseg_rt.errors import InvalidInputError
from nucseg_rt.eval.metrics import average_precision
from nucseg_rt.prep.filters import smooth_flows


def _ap(true, pred, th=0.5):
    return float(average_precision(true, pred, [th])[0][0])


@pytest.fixture(scope="module")
def vol3d():
    """60 touching nuclei in 32 x 96 x 96, ideal flows x5."""
    lab = random_ellipsoids((32, 96, 96), 60, seed=1, radius=(5.0, 11.0))
    return (lab, *ideal_flows(lab))


@pytest.fixture(scope="module")
def vol3d_odd():
    """Odd size 23 x 97 x 131, flatter nuclei (anisotropic sampling)."""
    lab = random_ellipsoids((23, 97, 131), 70, seed=2, radius=(4.0, 9.0), aniso=2.0)
    return (lab, *ideal_flows(lab))


@pytest.fixture(scope="module")
def img2d():
    lab = random_ellipsoids((199, 251), 120, seed=3, radius=(5.0, 14.0))
    return (lab, *ideal_flows(lab))


# --------------------------------------------------------------------------------------------
# method="stable" (issue 7)
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("which", ["vol3d", "vol3d_odd"])
def test_stable_recovers_labels_where_cellpose_splits_them(which, request):
    lab, dP, cellprob = request.getfixturevalue(which)
    stable = compute_masks(dP, cellprob)  # default method
    assert _ap(lab, stable, 0.75) >= 0.95
    assert _ap(lab, stable, 0.5) >= 0.98
    # Cellpose splits nuclei on ideal flows (issue 7); the cellpose method reproduces that
    split = compute_masks(dP, cellprob, method="cellpose")
    assert _ap(lab, split, 0.75) < 0.8


def test_2d_stable_is_cellpose(img2d):
    _, dP, cellprob = img2d
    a = compute_masks(dP, cellprob, method="stable")
    b = compute_masks(dP, cellprob, method="cellpose")
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("noise", ["gaussian", "smoothed"])
def test_stable_on_noisy_flows(vol3d, noise):
    lab, dP, cellprob = vol3d
    rng = np.random.default_rng(5)
    noisy = (dP + rng.normal(0.0, 2.5, dP.shape)).astype(np.float32)
    if noise == "smoothed":  # each component Gaussian-filtered in Z, Y, X
        noisy = smooth_flows(noisy, 1.0)
    stable = _ap(lab, compute_masks(noisy, cellprob), 0.75)
    split = _ap(lab, compute_masks(noisy, cellprob, method="cellpose"), 0.75)
    assert stable >= 0.9
    assert stable >= split


# --------------------------------------------------------------------------------------------
# determinism, edge cases, dtypes
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["stable", "cellpose"])
def test_same_labels_for_any_thread_count(vol3d_odd, method):
    _, dP, cellprob = vol3d_odd
    n0 = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = compute_masks(dP, cellprob, method=method)
        numba.set_num_threads(min(2, numba.config.NUMBA_NUM_THREADS))
        two = compute_masks(dP, cellprob, method=method)
    finally:
        numba.set_num_threads(n0)
    np.testing.assert_array_equal(one, two)


@pytest.mark.parametrize("shape", [(2, 40, 50), (3, 6, 40, 50)])
def test_no_foreground_gives_zeros(shape):
    dP = np.ones(shape, np.float32)
    out = compute_masks(dP, np.full(shape[1:], -5.0, np.float32))
    assert out.shape == shape[1:] and out.dtype == np.uint16 and not out.any()


def test_niter_zero_gives_no_seeds(vol3d):
    _, dP, cellprob = vol3d
    assert not compute_masks(dP, cellprob, niter=0).any()


def test_inputs_not_modified(vol3d):
    _, dP, cellprob = vol3d
    dP0, cp0 = dP.copy(), cellprob.copy()
    for method in ("stable", "cellpose"):
        compute_masks(dP, cellprob, method=method)
    np.testing.assert_array_equal(dP, dP0)
    np.testing.assert_array_equal(cellprob, cp0)


def test_more_than_65535_masks_are_uint32():
    # end points on a 3-pixel grid (a 5-wide local maximum needs spacing >= 3), 12 pixels each
    shape = (2, 3 * 240, 3 * 280)
    cy, cx = np.meshgrid(np.arange(1, shape[1], 3), np.arange(1, shape[2], 3), indexing="ij")
    centres = (cy * shape[2] + cx).ravel()
    dest = np.repeat(centres, 12).astype(np.int64)
    idx = np.arange(dest.size, dtype=np.int64)  # any distinct voxels
    out = dynamics._masks_from_destinations(dest, idx, shape, 0.4)
    assert centres.size > 65535
    assert out.dtype == np.uint32 and out.max() == centres.size


def test_float_niter_is_truncated(vol3d_odd):
    _, dP, cellprob = vol3d_odd
    a = compute_masks(dP, cellprob, niter=150.9, method="cellpose")
    b = compute_masks(dP, cellprob, niter=150, method="cellpose")
    np.testing.assert_array_equal(a, b)


def test_flow_threshold_in_3d_warns_only_when_set(vol3d_odd, caplog):
    _, dP, cellprob = vol3d_odd
    with caplog.at_level(logging.WARNING, logger="nucseg_rt.masks.dynamics"):
        compute_masks(dP, cellprob)
        assert "flow_threshold" not in caplog.text
        compute_masks(dP, cellprob, flow_threshold=0.4)
        assert "flow_threshold" in caplog.text


# --------------------------------------------------------------------------------------------
# bad input
# --------------------------------------------------------------------------------------------
_DP = np.zeros((3, 4, 5, 6), np.float32)
_CP = np.zeros((4, 5, 6), np.float32)


@pytest.mark.parametrize("dP, cellprob, kwargs, match", [
    (np.zeros((3, 5, 6), np.float32), np.zeros((5, 6), np.float32), {}, "`dP` must have shape"),
    (np.zeros((4, 5, 6), np.float32), _CP, {}, "`dP` must have shape"),
    (_DP, np.zeros((4, 5, 7), np.float32), {}, "`cellprob` must have shape"),
    (np.zeros((3, 0, 5, 6), np.float32), np.zeros((0, 5, 6), np.float32), {}, "zero-size"),
    (np.zeros((3, 1, 5, 6), np.float32), np.zeros((1, 5, 6), np.float32), {"method": "cellpose"}, ">= 2"),
    (np.full((3, 4, 5, 6), np.nan, np.float32), _CP, {}, "`dP` contains NaN"),
    (_DP, np.full((4, 5, 6), np.inf, np.float32), {}, "`cellprob` contains NaN or Inf"),
    (_DP.astype(complex), _CP, {}, "`dP` must be a real-valued"),
    (_DP, _CP, {"niter": -1}, "`niter` must be >= 0"),
    (_DP, _CP, {"niter": "200"}, "`niter` must be a finite number"),
    (_DP, _CP, {"niter": True}, "`niter` must be a finite number"),
    (_DP, _CP, {"cellprob_threshold": float("nan")}, "`cellprob_threshold`"),
    (_DP, _CP, {"min_size": 1.5}, "`min_size` must be an integer"),
    (_DP, _CP, {"max_size_fraction": 0}, "`max_size_fraction` must be > 0"),
    (_DP, _CP, {"method": "euler"}, "`method` must be one of 'stable', 'cellpose', got 'euler'"),
    (_DP, _CP, {"flow_threshold": -0.1}, "`flow_threshold` must be >= 0"),
])
def test_bad_input_raises(dP, cellprob, kwargs, match):
    with pytest.raises(InvalidInputError, match=match):
        compute_masks(dP, cellprob, **kwargs)
