"""Flow smoothing (dp_smooth): known answers and bad input (equality with scipy's
gaussian_filter: tests/reference/test_filters_scipy.py)."""

import numpy as np
import pytest

from nucseg_rt.errors import InvalidInputError
from nucseg_rt.prep.filters import smooth_flows


def test_zero_sigma_is_a_copy_and_negative_refused():
    dP = np.ones((2, 8, 9), np.float32)
    out = smooth_flows(dP, 0)
    assert out is not dP and np.array_equal(out, dP)
    with pytest.raises(InvalidInputError, match="`dp_smooth` must be >= 0"):
        smooth_flows(dP, -1.0)


def test_constant_and_linear_flows_are_kept():
    """A normalised Gaussian keeps constants; with reflected edges, linear ramps inside."""
    dP = np.full((3, 6, 20, 21), 2.5, np.float32)
    before = dP.copy()
    np.testing.assert_allclose(smooth_flows(dP, 1.5), 2.5, rtol=1e-6)
    np.testing.assert_array_equal(dP, before)
    ramp = np.broadcast_to(np.arange(21, dtype=np.float32), (2, 20, 21)).copy()
    out = smooth_flows(ramp, 1.0)
    np.testing.assert_allclose(out[:, :, 5:-5], ramp[:, :, 5:-5], atol=1e-5)  # away from the edges
