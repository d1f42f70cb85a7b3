"""nucseg_rt.eval.metrics.average_precision equals Cellpose 3.1's metrics.average_precision."""

from __future__ import annotations

import numpy as np
import pytest

from helpers import CELLPOSE, cellpose_module, random_ellipsoids
from nucseg_rt.eval.metrics import average_precision

cp_metrics = cellpose_module("cellpose.metrics")
pytestmark = CELLPOSE
ndimage = pytest.importorskip("scipy.ndimage")

TH = [0.5, 0.6, 0.75, 0.9, 1.0]


def _perturbed(true, kind, seed=0):
    """Predictions with known kinds of error (all renumbered 1..N like real output)."""
    rng = np.random.default_rng(seed)
    if kind == "same":
        pred = true.copy()
    elif kind == "eroded":
        pred = np.where(ndimage.grey_erosion(true, size=3) == true, true, 0)
    elif kind == "dilated":
        pred = ndimage.grey_dilation(true, size=3)
    elif kind == "merged":  # pairs of masks merged into one
        lut = np.arange(true.max() + 1)
        lut[2::2] = lut[1:-1:2] if true.max() % 2 else lut[1::2][: len(lut[2::2])]
        pred = lut[true]
    elif kind == "split":  # every mask cut in two along x
        xs = np.indices(true.shape)[-1]
        pred = np.where(true > 0, 2 * true - (xs % 20 < 10), 0)
    elif kind == "shuffled":  # unrelated masks of the same image size
        pred = random_ellipsoids(true.shape, 30, seed=seed + 50)
    else:  # missing and extra masks
        pred = true.copy()
        pred[np.isin(pred, rng.choice(true.max(), 5) + 1)] = 0
        pred[(pred == 0) & (random_ellipsoids(true.shape, 10, seed=seed + 9) > 0)] = true.max() + 1
    from nucseg_rt.masks.postprocess import renumber

    return renumber(pred)


@pytest.fixture(scope="module", params=["3d", "2d"])
def true(request):
    shape = (24, 64, 80) if request.param == "3d" else (150, 170)
    return random_ellipsoids(shape, 35, seed=7)


@pytest.mark.parametrize("kind", ["same", "eroded", "dilated", "merged", "split", "shuffled", "missing"])
def test_equals_cellpose(true, kind):
    pred = _perturbed(true, kind)
    ours = average_precision(true, pred, TH)
    ref = cp_metrics.average_precision(true, pred, threshold=TH)
    np.testing.assert_allclose(ours[0], ref[0], rtol=1e-6)
    for a, b in zip(ours[1:], ref[1:]):
        np.testing.assert_array_equal(a, b)


def test_exact_halves_match_once_as_in_cellpose():
    true = np.zeros((4, 8), np.uint8)
    true[:, :4] = 1
    pred = np.zeros_like(true)
    pred[:2, :4] = 1
    pred[2:, :4] = 2  # each half has IoU exactly 0.5 with the true mask
    ours = average_precision(true, pred, 0.5)
    ref = cp_metrics.average_precision(true, pred, threshold=[0.5])
    assert ref[1][0] == ours[1][0] == 1 and ref[0][0] == ours[0][0] == 0.5
