"""nucseg_rt.eval.metrics.average_precision on cases with known answers, and bad input (the
comparison with Cellpose 3.1 is tests/reference/test_metrics_cellpose.py)."""

from __future__ import annotations

import numpy as np
import pytest

from helpers import random_ellipsoids
from nucseg_rt.errors import InvalidInputError
from nucseg_rt.eval.metrics import average_precision


@pytest.fixture(scope="module", params=["3d", "2d"])
def true(request):
    shape = (24, 64, 80) if request.param == "3d" else (150, 170)
    return random_ellipsoids(shape, 35, seed=7)


def test_exact_halves_match_once():
    true = np.zeros((4, 8), np.uint8)
    true[:, :4] = 1
    pred = np.zeros_like(true)
    pred[:2, :4] = 1
    pred[2:, :4] = 2  # each half has IoU exactly 0.5 with the true mask
    ap, tp, fp, fn = average_precision(true, pred, 0.5)
    assert (tp[0], fp[0], fn[0]) == (1, 1, 0) and ap[0] == 0.5


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


def test_missing_and_extra_masks_counted_exactly(true):
    n = int(true.max())
    assert average_precision(true, true, [0.5, 0.75, 1.0])[0].tolist() == [1.0, 1.0, 1.0]
    pred = true.copy()
    pred[np.isin(pred, [2, 5, 9])] = 0  # three masks missed
    pred[(true == 0) & (np.indices(true.shape)[-1] < 6)] = n + 1  # one extra on background only
    ap, tp, fp, fn = average_precision(true, pred, [0.5, 1.0])
    assert tp.tolist() == [n - 3] * 2 and fn.tolist() == [3, 3] and fp.tolist() == [1, 1]
    np.testing.assert_allclose(ap, (n - 3) / (n + 1))


def test_inputs_not_modified(true):
    xs = np.indices(true.shape)[-1]
    pred = np.where(true > 0, 2 * true - (xs % 20 < 10), 0)
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
