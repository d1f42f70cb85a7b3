"""nucseg_rt.eval.metrics.average_precision equals Cellpose 3.1's metrics.average_precision."""

from __future__ import annotations

import numpy as np
import pytest

from _dynamics_synth import random_ellipsoids
from nucseg_rt.errors import InvalidInputError
from nucseg_rt.eval.metrics import average_precision

cp_metrics = pytest.importorskip("cellpose.metrics")
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


def test_exact_halves_match_once():
    true = np.zeros((4, 8), np.uint8)
    true[:, :4] = 1
    pred = np.zeros_like(true)
    pred[:2, :4] = 1
    pred[2:, :4] = 2  # each half has IoU exactly 0.5 with the true mask
    ap, tp, fp, fn = average_precision(true, pred, 0.5)
    ref = cp_metrics.average_precision(true, pred, threshold=[0.5])
    assert (tp[0], fp[0], fn[0]) == (1, 1, 0) and ap[0] == 0.5
    assert ref[1][0] == 1 and ref[0][0] == 0.5


def test_empty_cases():
    z = np.zeros((5, 5), np.uint16)
    one = z.copy()
    one[1:3, 1:3] = 1
    ap, tp, fp, fn = average_precision(one, z)
    assert (ap == 0).all() and (fn == 1).all() and (fp == 0).all()
    ap, tp, fp, fn = average_precision(z, one)
    assert (ap == 0).all() and (fp == 1).all()
    assert np.isnan(average_precision(z, z)[0]).all()


def test_counts_present_ids_not_the_largest_id():
    true = np.zeros((10, 10), np.uint32)
    true[:5, :5], true[5:, 5:] = 3, 70000  # two masks with arbitrary ids
    ap, tp, fp, fn = average_precision(true, (true > 0).astype(np.uint8) * (1 + (true == 3)))
    assert tp.tolist() == [2, 2, 2] and fn.tolist() == [0, 0, 0] and (ap == 1).all()


def test_inputs_not_modified(true):
    pred = _perturbed(true, "eroded")
    t0, p0 = true.copy(), pred.copy()
    average_precision(true, pred)
    np.testing.assert_array_equal(true, t0)
    np.testing.assert_array_equal(pred, p0)


@pytest.mark.parametrize("a, b, th, match", [
    (np.zeros((4, 4), np.int32), np.zeros((4, 5), np.int32), 0.5, "same shape"),
    (np.zeros((4, 4), np.float32), np.zeros((4, 4), np.int32), 0.5, "`true` must be an integer"),
    (np.zeros((4, 4), np.int32), -np.ones((4, 4), np.int32), 0.5, "`pred` labels must be >= 0"),
    (np.zeros((4, 4), np.int32), np.zeros((4, 4), np.int32), 0.3, "`thresholds` must be IoU values in \\[0.5, 1\\]"),
    (np.zeros((4, 4), np.int32), np.zeros((4, 4), np.int32), [0.5, 1.2], "`thresholds`"),
    (np.zeros((4, 4), np.int32), np.zeros((4, 4), np.int32), [], "`thresholds`"),
])
def test_bad_input_raises(a, b, th, match):
    with pytest.raises(InvalidInputError, match=match):
        average_precision(a, b, th)
