"""nucseg_rt.masks.label_flows: heat-diffusion flows on known shapes, batches, bad input (equality
with Cellpose 3.1's CPU masks_to_flows: tests/reference/test_label_flows_cellpose.py)."""

import numpy as np
import pytest

from helpers import random_ellipsoids
from nucseg_rt.errors import InvalidInputError
from nucseg_rt.masks.label_flows import masks_to_flows, masks_to_flows_batch


def _blobs(shape, n, seed):
    """Touching ellipsoids (ellipses in 2D) with semi-axes 2.5-8 px, ids 1..N."""
    return random_ellipsoids(shape, n, radius=(2.5, 8.0), seed=seed, min_size=4)


def test_disc_flows_point_to_centre():
    yy, xx = np.mgrid[:41, :45]
    lab = ((yy - 20) ** 2 + (xx - 22) ** 2 <= 12 ** 2).astype(np.uint16)
    f = masks_to_flows(lab)
    assert f.shape == (2, 41, 45) and f.dtype == np.float32
    assert np.all(f[:, lab == 0] == 0)
    r = np.hypot(yy - 20, xx - 22)
    sel = (lab > 0) & (r > 2)
    to_c = np.stack([20 - yy, 22 - xx]) / np.maximum(r, 1e-9)
    cos = (f * to_c).sum(0)[sel]
    assert cos.min() > 0.9
    np.testing.assert_allclose(np.hypot(f[0], f[1])[sel], 1.0, atol=1e-5)


def test_batch_equals_single():
    labs = np.stack([_blobs((33, 35), 6, s) for s in range(3)])
    b = masks_to_flows_batch(labs)
    for i in range(3):
        np.testing.assert_array_equal(b[i], masks_to_flows(labs[i]))


def test_empty_and_input_unchanged():
    assert not masks_to_flows(np.zeros((5, 6), np.uint8)).any()
    assert masks_to_flows(np.zeros((3, 5, 6), np.uint8)).shape == (3, 3, 5, 6)
    lab = _blobs((20, 21), 3, 4)
    before = lab.copy()
    masks_to_flows(lab)
    np.testing.assert_array_equal(lab, before)


def test_bad_input():
    with pytest.raises(InvalidInputError, match="`labels` must be 2D"):
        masks_to_flows(np.zeros(5, np.int32))
    with pytest.raises(InvalidInputError, match="integer dtype"):
        masks_to_flows(np.zeros((4, 4), np.float32))
    with pytest.raises(InvalidInputError, match=">= 0"):
        masks_to_flows(-np.ones((4, 4), np.int32))
    with pytest.raises(InvalidInputError, match="`niter` must be > 0"):
        masks_to_flows(np.ones((4, 4), np.int32), niter=0)
