"""Input handling, normalization and resampling: known answers, invariants and bad input.

Equality with Cellpose 3.1 / OpenCV / SciPy as references: tests/reference/test_preprocess_cellpose.py.
"""

import logging

import numpy as np
import pytest

from nucseg_rt import prep
from helpers import noise_volume, zyxc_input
from nucseg_rt.errors import InvalidInputError

SHAPE = (23, 97, 131)


# --- input handling -------------------------------------------------------------------------


def test_zyx_gray_gets_a_zero_second_channel():
    vol = noise_volume()
    x, lines = prep.to_zyxc(vol)
    assert x.dtype == np.float32 and x.shape == SHAPE + (2,)
    np.testing.assert_array_equal(x[..., 0], vol)
    assert not x[..., 1].any()
    assert "treating axis 0 (size 23) as Z (first non-channel axis; pass z_axis to override)" in lines
    assert any("no channel axis" in line for line in lines)


@pytest.mark.parametrize("perm", [(0, 1, 2, 3), (3, 0, 1, 2), (1, 2, 3, 0), (1, 0, 3, 2)])  # Y before X
def test_any_axis_order_with_axes_given(perm):
    base = np.random.default_rng(2).random((23, 97, 131, 3)).astype(np.float32)
    ref, _ = prep.to_zyxc(base, chan=3, chan2=1)
    moved = np.transpose(base, np.argsort(perm))  # axis i of base lands at position perm[i]
    z_axis, c_axis = perm[0], perm[3] - moved.ndim  # negative channel_axis is allowed
    x, lines = prep.to_zyxc(moved, channel_axis=c_axis, z_axis=z_axis, chan=3, chan2=1)
    np.testing.assert_array_equal(x, ref)
    assert f"using axis {perm[0]} (size 23) as Z (z_axis)" in lines


def test_singletons_squeezed_and_thin_stack_needs_z_axis():
    vol = noise_volume()
    x, lines = prep.to_zyxc(vol[None, :, None])
    np.testing.assert_array_equal(x, prep.to_zyxc(vol)[0])
    assert any(line.startswith("squeezing singleton axes 0 and 2") for line in lines)
    thin = noise_volume((3, 97, 131))
    with pytest.raises(InvalidInputError, match=r"axis 0 \(size 3\) looks like channels.*z_axis=0"):
        prep.to_zyxc(thin)
    x, _ = prep.to_zyxc(thin, z_axis=0)
    assert x.shape == (3, 97, 131, 2)
    one = prep.to_zyxc(vol[:1], z_axis=0)[0]  # an explicitly named singleton Z is kept
    assert one.shape == (1, 97, 131, 2)


def test_guesses_are_logged(caplog):
    with caplog.at_level(logging.INFO, logger="nucseg_rt"):
        _, lines = prep.to_zyxc(np.zeros((23, 2, 97, 131), np.uint8))
    assert [r.getMessage() for r in caplog.records if r.name == "nucseg_rt"] == lines


@pytest.mark.parametrize("vol, kwargs, match", [
    (np.zeros((97, 131)), {}, "2D images are not supported in 3D mode"),
    (np.zeros((1, 97, 131)), {}, "2D images are not supported in 3D mode"),
    (np.zeros((2, 97, 131)), {"channel_axis": 0}, "leaves a 2D image"),
    (np.zeros((2, 3, 23, 97, 131)), {}, "5 non-singleton axes"),
    (np.zeros((23, 9, 97, 131)), {}, "ambiguous: 4 non-singleton axes but none of size <= 4"),
    (np.zeros((3, 3, 97, 131)), {}, r"ambiguous: axes 0 and 1 all have size 3"),
    (np.zeros((23, 2, 97, 131)), {"channel_axis": 4}, r"`channel_axis`=4 is out of range"),
    (np.zeros((23, 2, 97, 131)), {"z_axis": -5}, r"`z_axis`=-5 is out of range"),
    (np.zeros((23, 2, 97, 131)), {"z_axis": 1.0}, "`z_axis` must be an integer"),
    (np.zeros((23, 2, 97, 131)), {"channel_axis": 1, "z_axis": -3}, "are the same axis"),
    (np.zeros((23, 0, 131)), {}, "zero-size axis"),
    (np.zeros((23, 2, 97, 131)), {"chan": 3}, r"`chan`=3 selects channel 3 but the volume has 2"),
    (np.zeros((23, 2, 97, 131)), {"chan": 1, "chan2": 4}, r"`chan2`=4 selects channel 4"),
    (np.zeros((23, 2, 97, 131)), {"chan": -1}, r"`chan` must be an integer >= 0"),
    (np.zeros((23, 2, 97, 131)), {"chan": 1, "chan2": 2, "nchan": 1}, "model takes nchan=1"),
    (np.zeros((23, 2, 97, 131)), {"nchan": 0}, r"`nchan` must be an integer >= 1"),
    (np.zeros((23, 97, 131), complex), {}, "real numeric dtype"),
    (np.full((23, 97, 131), "a"), {}, "real numeric dtype"),
])
def test_bad_input_raises(vol, kwargs, match):
    with pytest.raises(InvalidInputError, match=match):
        prep.to_zyxc(vol, **kwargs)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf, 1e300])
def test_non_finite_values_raise(bad):
    vol = np.ones((23, 97, 131))
    vol[5, 3, 7] = bad
    with pytest.raises(InvalidInputError, match=r"NaN or Inf values \(first in Z plane 5"):
        prep.to_zyxc(vol)


# --- normalization --------------------------------------------------------------------------


def test_smooth_sharpen_is_normalizes_sharpening():
    x = zyxc_input(seed=6, two=True)[:4].copy()
    x0 = x.copy()
    out = prep.smooth_sharpen(x, sharpen_radius=3.0)
    np.testing.assert_array_equal(x, x0)
    assert out.dtype == np.float32 and out.shape == x.shape
    np.testing.assert_array_equal(prep.normalize(out), prep.normalize(x, sharpen_radius=3.0))
    np.testing.assert_array_equal(prep.smooth_sharpen(x, sharpen_radius=0.0), x)


def test_smooth_sharpen_of_a_constant():
    x = np.full((2, 40, 52, 1), 7.0, np.float32)
    np.testing.assert_allclose(prep.smooth_sharpen(x, sharpen_radius=0.0, smooth_radius=3.0), 7.0,
                               rtol=1e-6)  # the smoothing kernel sums to 1
    np.testing.assert_allclose(prep.smooth_sharpen(x, sharpen_radius=5.0, smooth_radius=2.0), 0.0,
                               atol=1e-5)  # a difference of two such kernels
    with pytest.raises(InvalidInputError, match=r"`smooth_radius` must be a finite number >= 0"):
        prep.smooth_sharpen(x, sharpen_radius=1.0, smooth_radius=-1.0)
    with pytest.raises(InvalidInputError, match=r"`x_zyxc` must be a non-empty \(Z, Y, X, C\)"):
        prep.smooth_sharpen(x[0], sharpen_radius=1.0)


def test_constant_volume_gives_zeros():
    x, _ = prep.to_zyxc(np.full(SHAPE, 500, np.uint16))
    for kwargs in ({}, {"invert": True}, {"tile_norm": 40}, {"sharpen_radius": 3.0, "invert": True},
                   {"norm3D": False, "invert": True}, {"tile_norm": 40, "norm3D": False}):
        out = prep.normalize(x, **kwargs)
        assert np.isfinite(out).all() and not out.any(), kwargs


def test_constant_plane_zeroed_per_plane_only():
    x = zyxc_input()
    x[4] = 123.0
    out = prep.normalize(x, norm3D=False)
    assert not out[4].any() and out[5, ..., 0].any()
    assert prep.normalize(x)[4, ..., 0].any()  # whole-volume bounds: the plane is just data


def test_invert_applies_with_tile_norm():
    x = zyxc_input(two=True)
    np.testing.assert_allclose(prep.normalize(x, tile_norm=40, invert=True),
                               1 - prep.normalize(x, tile_norm=40), atol=1e-6)


def test_normalize_in_place_when_asked():
    x = zyxc_input()
    assert prep.normalize(x, copy=False) is x


@pytest.mark.parametrize("kwargs, match", [
    ({"percentile": (50, 10)}, r"0 <= low < high <= 100, got \(50, 10\)"),
    ({"percentile": (-1, 99)}, "0 <= low < high <= 100"),
    ({"percentile": 5}, "two numbers"),
    ({"lowhigh": (1, 2, 3)}, r"shape \(2,\) or \(nchan, 2\) = \(2, 2\), got shape \(3,\)"),
    ({"lowhigh": (5, 5)}, "low != high"),
    ({"lowhigh": (0, 1), "tile_norm": 10}, "cannot be combined"),
    ({"tile_norm": -1}, r"`tile_norm` must be an integer >= 0, got -1"),
    ({"sharpen_radius": -2.0}, r"`sharpen_radius` must be a finite number >= 0, got -2.0"),
])
def test_normalize_bad_parameters(kwargs, match):
    with pytest.raises(InvalidInputError, match=match):
        prep.normalize(zyxc_input(), **kwargs)


def test_normalize_bad_arrays():
    with pytest.raises(InvalidInputError, match=r"\(Z, Y, X, C\) array, got shape \(23, 97, 131\)"):
        prep.normalize(np.ones(SHAPE, np.float32))
    x = zyxc_input()
    x[2, 3, 4, 0] = np.nan
    with pytest.raises(InvalidInputError, match="NaN or Inf"):
        prep.normalize(x)


# --- resizing -------------------------------------------------------------------------------


def test_resize_nearest_labels_exact_beyond_float32():
    lab = np.random.default_rng(7).integers(2**24, 2**32 - 1, (23, 97, 131), dtype=np.uint32)
    got = prep.resize_nearest(lab, 150, 77)
    yi = np.minimum(np.floor(np.arange(150) * (1 / (150 / 97))).astype(int), 96)
    xi = np.minimum(np.floor(np.arange(77) * (1 / (77 / 131))).astype(int), 130)
    np.testing.assert_array_equal(got, lab[:, yi][:, :, xi])


def test_rescale_with_dropped_zero_channel_matches_two_channel_run():
    x = prep.normalize(zyxc_input())
    two = prep.rescale_volume(x, rescale=0.6, anisotropy=2.5)
    one = prep.rescale_volume(np.ascontiguousarray(x[..., :1]), rescale=0.6, anisotropy=2.5, nchan=2)
    np.testing.assert_array_equal(one[..., 0], two[..., 0])


def test_3d_helpers_no_op_returns_input():
    x = prep.normalize(zyxc_input())
    assert prep.rescale_volume(x, rescale=1.0, anisotropy=None) is x
    assert prep.resize_flows_back(x, SHAPE) is x
    lab = np.zeros(SHAPE, np.uint32)
    assert prep.resize_labels_3d(lab, SHAPE) is lab


@pytest.mark.parametrize("call, match", [
    (lambda x: prep.rescale_volume(x, rescale=0.0, anisotropy=1.0), r"`rescale` must be a finite number > 0, got 0.0"),
    (lambda x: prep.rescale_volume(x, rescale=float("nan"), anisotropy=1.0), "`rescale` must be a finite"),
    (lambda x: prep.rescale_volume(x, rescale=1.0, anisotropy=-2.0), r"`anisotropy` must be .* got -2.0"),
    (lambda x: prep.rescale_volume(x, rescale=1.0, anisotropy=0.01), "anisotropy too low"),
    (lambda x: prep.rescale_volume(x, rescale=0.005, anisotropy=1.0), "diameter too large"),
    (lambda x: prep.rescale_volume(x[0], rescale=0.5, anisotropy=1.0), r"\(Z, Y, X, C\) array"),
    (lambda x: prep.resize_flows_back(x, (23, 97)), "three sizes"),
    (lambda x: prep.resize_flows_back(x, (23, 0, 5)), r"`shape_zyx` must be an integer >= 1, got 0"),
    (lambda x: prep.resize_linear(x, 0, 5), r"`Ly` must be an integer >= 1, got 0"),
    (lambda x: prep.resize_nearest(x[..., 0], 5, 5), "`labels` must have an integer dtype"),
    (lambda x: prep.resize_labels_3d(np.zeros((3, 4), np.uint16), SHAPE), r"\(Z, Y, X\) array"),
])
def test_resize_bad_input_raises(call, match):
    with pytest.raises(InvalidInputError, match=match):
        call(zyxc_input())


def test_resize_inputs_unchanged():
    x = zyxc_input(two=True)
    lab = np.random.default_rng(10).integers(0, 9, SHAPE).astype(np.uint16)
    x0, lab0 = x.copy(), lab.copy()
    prep.resize_linear(x, 50, 60)
    prep.resize_nearest(lab, 50, 60)
    prep.resize_labels_3d(lab, (30, 50, 60))
    prep.resize_flows_back(x, (30, 50, 60))
    np.testing.assert_array_equal(x, x0)
    np.testing.assert_array_equal(lab, lab0)
