"""Flow smoothing (dp_smooth) equals scipy's gaussian_filter over the spatial axes (reference)."""

import numpy as np
import pytest

from nucseg_rt.prep.filters import smooth_flows

ndimage = pytest.importorskip("scipy.ndimage")


@pytest.mark.parametrize("sigma", [0.5, 1.0, 3.0])
def test_smooth_flows_equals_scipy(sigma):
    dP = np.random.default_rng(0).standard_normal((3, 5, 30, 41)).astype(np.float32)
    before = dP.copy()
    out = smooth_flows(dP, sigma)  # sigma 3 on Z=5 needs repeated reflection
    np.testing.assert_allclose(out, ndimage.gaussian_filter(dP, (0, sigma, sigma, sigma)), atol=1e-5)
    np.testing.assert_array_equal(dP, before)
