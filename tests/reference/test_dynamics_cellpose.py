"""nucseg_rt.masks.dynamics.compute_masks(method="cellpose") against Cellpose 3.1 (reference),
on Cellpose's own flows of seeded labels."""

from __future__ import annotations

import numpy as np
import pytest

from helpers import CELLPOSE, cellpose_flows, cellpose_module, random_ellipsoids
from nucseg_rt.masks import dynamics
from nucseg_rt.masks.dynamics import compute_masks
from nucseg_rt.eval.metrics import average_precision

cp_dynamics = cellpose_module("cellpose.dynamics")
pytestmark = CELLPOSE
torch = pytest.importorskip("torch")


def _ref(fn, *args, **kwargs):
    """Call the torch reference on one thread. numba's OpenMP layer sets the calling thread's
    OpenMP thread count, which torch then uses for every tiny op: 20x slower on 2 busy cores."""
    torch.set_num_threads(1)
    return fn(*args, **kwargs)


def _ap(true, pred, th=0.5):
    return float(average_precision(true, pred, [th])[0][0])


@pytest.fixture(scope="module")
def vol3d():
    """60 touching nuclei in 32 x 96 x 96, Cellpose's flows x5."""
    lab = random_ellipsoids((32, 96, 96), 60, seed=1, radius=(5.0, 11.0))
    return (lab, *cellpose_flows(lab))


@pytest.fixture(scope="module")
def vol3d_odd():
    """Odd size 23 x 97 x 131, flatter nuclei (anisotropic sampling)."""
    lab = random_ellipsoids((23, 97, 131), 70, seed=2, radius=(4.0, 9.0), aniso=2.0)
    return (lab, *cellpose_flows(lab))


@pytest.fixture(scope="module")
def img2d():
    lab = random_ellipsoids((199, 251), 120, seed=3, radius=(5.0, 14.0))
    return (lab, *cellpose_flows(lab))


# --------------------------------------------------------------------------------------------
# method="cellpose" reproduces Cellpose 3.1
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("which", ["vol3d", "vol3d_odd"])
def test_cellpose_method_matches_cellpose_3d(which, request):
    lab, dP, cellprob = request.getfixturevalue(which)
    ref = _ref(cp_dynamics.compute_masks, dP, cellprob, do_3D=True, min_size=15)
    ours = compute_masks(dP, cellprob, method="cellpose", min_size=15)
    assert ours.dtype == np.uint16 and ours.shape == lab.shape
    assert _ap(ref, ours) >= 0.98
    assert ours.max() == ref.max()


def test_cellpose_3d_steps_equal_torch_grid_sample(vol3d):
    """The integration itself: final voxels equal Cellpose's torch steps (float32, same order)."""
    _, dP, cellprob = vol3d
    active = cellprob > 0
    idx = np.flatnonzero(active)
    dest = dynamics._follow(dP, active, idx, 200, "cellpose")
    p = _ref(cp_dynamics.steps_interp, dP * active / 5.0, np.nonzero(active), 200).int().numpy()
    ref = np.ravel_multi_index(tuple(p), active.shape)
    assert np.mean(dest != ref) <= 1e-3


@pytest.mark.parametrize("flow_threshold", [0.0, 0.4])
def test_cellpose_method_matches_cellpose_2d(img2d, flow_threshold):
    lab, dP, cellprob = img2d
    ref = _ref(cp_dynamics.compute_masks, dP, cellprob, min_size=15, flow_threshold=flow_threshold)
    ours = compute_masks(dP, cellprob, method="cellpose", min_size=15, flow_threshold=flow_threshold)
    assert _ap(ref, ours) >= 0.98
    assert _ap(lab, ours) >= 0.98  # and recovers the true labels


def test_flow_threshold_removes_masks_with_wrong_flows(img2d):
    lab, dP, cellprob = img2d
    bad = dP.copy()
    bad[:, lab == 7] *= -1  # flows of one nucleus point outwards
    kept = compute_masks(bad, cellprob, method="cellpose", flow_threshold=0.4)
    ref = _ref(cp_dynamics.compute_masks, bad, cellprob, min_size=15, flow_threshold=0.4)
    assert _ap(ref, kept) >= 0.98
    assert set(np.unique(kept)) == set(range(kept.max() + 1))  # renumbered 1..N


def test_min_size_off_matches_cellpose_without_postprocessing(vol3d):
    _, dP, cellprob = vol3d
    ref = _ref(cp_dynamics.compute_masks, dP, cellprob, do_3D=True)  # Cellpose's default min_size=-1
    ours = compute_masks(dP, cellprob, method="cellpose", min_size=-1)
    assert _ap(ref, ours) >= 0.98
