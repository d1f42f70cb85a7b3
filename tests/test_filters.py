"""Flow smoothing (dp_smooth) equals scipy's gaussian_filter over the spatial axes."""

import numpy as np
import pytest

from nucseg_rt.errors import InvalidInputError
from nucseg_rt.prep.filters import smooth_flows

ndimage = pytest.importorskip("scipy.ndimage")


@pytest.mark.parametrize("sigma", [0.5, 1.0, 3.0])
def test_smooth_flows_equals_scipy(sigma):
    dP = np.random.default_rng(0).standard_normal((3, 5, 30, 41)).astype(np.float32)
    before = dP.copy()
    out = smooth_flows(dP, sigma)  # sigma 3 on Z=5 needs repeated reflection
    np.testing.assert_allclose(out, ndimage.gaussian_filter(dP, (0, sigma, sigma, sigma)), atol=1e-5)
    np.testing.assert_array_equal(dP, before)


def test_zero_sigma_is_a_copy_and_negative_refused():
    dP = np.ones((2, 8, 9), np.float32)
    out = smooth_flows(dP, 0)
    assert out is not dP and np.array_equal(out, dP)
    with pytest.raises(InvalidInputError, match="`dp_smooth` must be >= 0"):
        smooth_flows(dP, -1.0)
