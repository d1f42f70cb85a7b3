"""Input handling, normalization and resampling against Cellpose 3.1 / OpenCV / SciPy (reference)."""

import numpy as np
import pytest

from nucseg_rt import prep
from nucseg_rt.prep import intensity
from nucseg_rt.prep.filters import gaussian_filter1d
from helpers import CELLPOSE, cellpose_module, noise_volume, zyxc_input

SHAPE = (23, 97, 131)

T = cellpose_module("cellpose.transforms")
pytestmark = CELLPOSE
cv2 = pytest.importorskip("cv2")


def _rel(a, b):
    return float(np.abs(a.astype(np.float64) - b).max() / max(np.abs(b).max(), 1e-30))


def _cp_rescale(x, rescale, anisotropy):
    """Cellpose 3.1 CellposeModel._run_net, do_3D branch, before run_3D."""
    Lz, Ly, Lx = x.shape[:-1]
    if rescale != 1.0:
        x = T.resize_image(x, Ly=int(Ly * rescale), Lx=int(Lx * rescale))
    return T.resize_image(x.transpose(1, 0, 2, 3), Ly=int(Lz * anisotropy * rescale),
                          Lx=int(Lx * rescale)).transpose(1, 0, 2, 3)


def _cp_flows_back(yf, shape, rescale):
    """Cellpose 3.1 CellposeModel._run_net, do_3D branch with resample=True."""
    Lz, Ly, Lx = shape
    if rescale != 1.0:
        yf = T.resize_image(yf, Ly=Ly, Lx=Lx)
    if Lz != yf.shape[0]:
        yf = T.resize_image(yf.transpose(1, 0, 2, 3), Ly=Lz, Lx=Lx).transpose(1, 0, 2, 3)
    return yf


def _cp_labels_back(mask, shape):
    """Cellpose 3.1 dynamics.resize_and_compute_masks, 3D resize branch."""
    Lz, Ly, Lx = shape
    if mask.shape[1] != Ly:
        mask = T.resize_image(mask, Ly=Ly, Lx=Lx, no_channels=True, interpolation=cv2.INTER_NEAREST)
    if mask.shape[0] != Lz:
        mask = T.resize_image(mask.transpose(1, 0, 2), Ly=Lz, Lx=Lx, no_channels=True,
                              interpolation=cv2.INTER_NEAREST).transpose(1, 0, 2)
    return mask


# --- input handling -------------------------------------------------------------------------


def test_zyx_gray_equals_cellpose_convert_image():
    vol = noise_volume()
    np.testing.assert_array_equal(prep.to_zyxc(vol)[0], T.convert_image(vol, None, do_3D=True, nchan=2))


@pytest.mark.parametrize("chan, chan2, channels", [(0, 0, [0, 0]), (2, 1, [2, 1]), (1, 0, [1, 0]),
                                                   (1, 2, None)])
def test_zcyx_channel_choice_equals_cellpose(chan, chan2, channels):
    vol = np.random.default_rng(1).random((23, 2, 97, 131)) * 50.0
    x, lines = prep.to_zyxc(vol, chan=chan, chan2=chan2)
    ref = T.convert_image(vol, channels, do_3D=True, nchan=2)
    np.testing.assert_allclose(x, ref, rtol=1e-6, atol=0)
    assert "treating axis 1 (size 2) as channels (smallest axis; pass channel_axis to override)" \
        in lines


# --- normalization --------------------------------------------------------------------------


@pytest.mark.parametrize("ours, theirs", [
    ({}, {}),
    ({"invert": True}, {"invert": True}),
    ({"percentile": (3.0, 97.5)}, {"percentile": (3.0, 97.5)}),
    ({"lowhigh": (100, 900)}, {"lowhigh": (100, 900)}),
    ({"lowhigh": [[100.0, 900.0], [0.0, 300.0]], "invert": True},
     {"lowhigh": [[100.0, 900.0], [0.0, 300.0]], "invert": True}),
    ({"sharpen_radius": 3.0}, {"sharpen_radius": 3.0}),
    ({"sharpen_radius": 2.5, "invert": True}, {"sharpen_radius": 2.5, "invert": True}),
    ({"tile_norm": 40}, {"tile_norm_blocksize": 40}),
    ({"tile_norm": 64, "percentile": (2.0, 98.0)},
     {"tile_norm_blocksize": 64, "percentile": (2.0, 98.0)}),
    ({"norm3D": False}, {"norm3D": False}),
    ({"norm3D": False, "invert": True}, {"norm3D": False, "invert": True}),
])
@pytest.mark.parametrize("two", [False, True])
def test_normalize_equals_cellpose_normalize_img(ours, theirs, two):
    x = zyxc_input(two=two)
    if "sharpen_radius" in ours:
        x = x[:7].copy()  # Cellpose's torch FFT is slow on this machine
    x0 = x.copy()
    got = prep.normalize(x, **ours)
    ref = T.normalize_img(x.copy(), **{"norm3D": True, **theirs})
    np.testing.assert_array_equal(x, x0)
    assert not np.shares_memory(got, x)
    np.testing.assert_allclose(got, ref, rtol=0, atol=2e-5)


def test_normalize99_downsampled_large_volume():
    shape = (101, 460, 250)  # 11.6M voxels > 224**3: percentiles from a [::2, ::2, ::1] subsample
    vol = np.random.default_rng(4).gamma(2.0, 100.0, shape).astype(np.float32)
    ref = T.normalize99(vol, copy=True, downsample=True)
    full = T.normalize99(vol, copy=True, downsample=False)
    got = prep.normalize(vol[..., None], copy=False)[..., 0]  # in place: vol is overwritten
    np.testing.assert_array_equal(got, ref)
    assert not np.array_equal(got, full)  # the subsample path was actually taken


def test_tile_norm_with_flat_tiles_equals_normalize99_tile():
    x = zyxc_input(seed=5, two=True)
    x[:, :50, :60, 0] = 7.0  # flat tiles get their nearest neighbour's bounds
    x[:, :, :, 1] = 0.0
    x[3, 10:20, 10:20, 1] = 5.0  # a sparse channel: mostly flat tiles
    ref = T.normalize99_tile(x.copy(), blocksize=32, lower=1.0, upper=99.0, norm3D=True)
    np.testing.assert_allclose(prep.normalize(x, tile_norm=32), ref, rtol=0, atol=2e-5)


def test_sharpen_equals_smooth_sharpen_img():
    x = zyxc_input(seed=6, two=True)[:5].copy()
    ref = T.smooth_sharpen_img(x.copy(), sharpen_radius=4.0, smooth_radius=0)
    got = x.copy()
    intensity._sharpen(got, 4.0, [0, 1])
    assert _rel(got, ref) < 1e-5


@pytest.mark.parametrize("smooth, sharpen", [(6.0, 8.0), (3.0, 0.0), (0.0, 4.0)])
def test_smooth_sharpen_equals_smooth_sharpen_img(smooth, sharpen):
    x = zyxc_input(seed=6, two=True)[:3].copy()
    ref = T.smooth_sharpen_img(x.copy(), sharpen_radius=sharpen, smooth_radius=smooth)
    assert _rel(prep.smooth_sharpen(x, sharpen_radius=sharpen, smooth_radius=smooth), ref) < 1e-5


def test_constant_plane_in_whole_volume_mode_equals_cellpose():
    x = zyxc_input()
    x[4] = 123.0
    np.testing.assert_array_equal(prep.normalize(x), T.normalize_img(x.copy(), norm3D=True))


def test_near_constant_channel_matches_cellpose():
    x = zyxc_input()
    x[..., 0] = 10.0
    x[0, 0, 0, 0] = 10.0005  # range below 1e-3: Cellpose zeros it (and invert then gives 1)
    for inv in (False, True):
        np.testing.assert_array_equal(prep.normalize(x, invert=inv),
                                      T.normalize_img(x.copy(), invert=inv))


def test_invert_applies_with_tile_norm_where_cellpose_skips_it():
    x = zyxc_input(two=True)
    ref = T.normalize_img(x.copy(), tile_norm_blocksize=40)  # Cellpose skips invert here
    np.testing.assert_allclose(prep.normalize(x, tile_norm=40, invert=True), 1 - ref, atol=2e-5)


def test_tile_norm_per_plane_sparse_sample_is_finite():
    sparse = np.zeros((4, 97, 131, 1), np.float32)
    sparse[1, 5:9, 5:9] = 1.0
    sparse[2, 40:60, 70:90] = np.arange(400, dtype=np.float32).reshape(20, 20, 1)
    out = prep.normalize(sparse, tile_norm=32, norm3D=False)
    assert np.isfinite(out).all() and not out[0].any() and out[2].max() > 0.5
    # what Cellpose intends: its per-plane maps, built with x99 from x99 (its code uses x01)
    ref = sparse.copy()
    x01, x99 = intensity._tile_bounds(ref, 32, 1.0, 99.0)
    for axis in (0, 1):
        x01 = gaussian_filter1d(x01, 1.0, axis, accumulate=np.float64)
        x99 = gaussian_filter1d(x99, 1.0, axis, accumulate=np.float64)
    for z in range(4):
        lo = cv2.resize(x01[z], (131, 97), interpolation=cv2.INTER_LINEAR)[..., None]
        hi = cv2.resize(x99[z], (131, 97), interpolation=cv2.INTER_LINEAR)[..., None]
        ref[z] = (ref[z] - lo) / (hi - lo)
    ref[[0, 3]] = 0  # constant planes
    np.testing.assert_allclose(out, ref, atol=1e-5)


def test_gaussian_filter1d_equals_scipy():
    ndimage = pytest.importorskip("scipy.ndimage")
    arr = np.random.default_rng(11).random((3, 5, 2, 2)).astype(np.float32)
    for axis in range(3):
        for sigma in (1.0, 2.5):
            np.testing.assert_array_equal(gaussian_filter1d(arr, sigma, axis, accumulate=np.float64),
                                          ndimage.gaussian_filter1d(arr, sigma, axis=axis))


# --- resizing -------------------------------------------------------------------------------


SIZES = [(97, 131, 224, 315), (97, 131, 41, 53), (23, 131, 57, 131), (224, 224, 97, 131),
         (1, 9, 5, 7), (9, 1, 4, 1), (5, 7, 5, 7)]


@pytest.mark.parametrize("nc", [None, 1, 2, 3, 4, 5])
@pytest.mark.parametrize("h, w, H, W", SIZES)
def test_resize_linear_equals_cv2(h, w, H, W, nc):
    rng = np.random.default_rng(h * w + H)
    img = rng.standard_normal((h, w) if nc is None else (h, w, nc)).astype(np.float32) * 100
    ref = cv2.resize(img, (W, H), interpolation=cv2.INTER_LINEAR).reshape(
        (H, W) if nc is None else (H, W, nc))
    got = prep.resize_linear(img, H, W)
    assert got.shape == ref.shape and got.dtype == np.float32
    assert _rel(got, ref) < 1e-5


def test_resize_linear_stacks_equal_cellpose_resize_image():
    x = zyxc_input(two=True)
    assert _rel(prep.resize_linear(x, 150, 77), T.resize_image(x, Ly=150, Lx=77)) < 1e-5
    stack = x[..., 0].copy()
    got = prep.resize_linear(stack, 60, 200, channels_last=False)
    assert got.shape == (23, 60, 200)
    assert _rel(got, T.resize_image(stack, Ly=60, Lx=200, no_channels=True)) < 1e-5


@pytest.mark.parametrize("dtype", [np.uint16, np.uint32])
@pytest.mark.parametrize("h, w, H, W", SIZES + [(7, 7, 3, 3), (100, 100, 300, 300)])
def test_resize_nearest_equals_cv2(h, w, H, W, dtype):
    lab = np.random.default_rng(h + w).integers(0, 60000, (h, w)).astype(dtype)
    ref = cv2.resize(lab, (W, H), interpolation=cv2.INTER_NEAREST).reshape(H, W)
    got = prep.resize_nearest(lab, H, W)
    assert got.dtype == dtype
    np.testing.assert_array_equal(got, ref)


def test_resize_nearest_labels_equal_cellpose_resize_image():
    lab = np.random.default_rng(7).integers(2**24, 2**32 - 1, (23, 97, 131), dtype=np.uint32)
    small = lab % 60000
    np.testing.assert_array_equal(prep.resize_nearest(small, 150, 77), T.resize_image(
        small, 150, 77, no_channels=True, interpolation=cv2.INTER_NEAREST))


@pytest.mark.parametrize("rescale, anisotropy", [(17 / 25, 1.0), (1.0, 2.5), (17 / 25, 2.5),
                                                 (1.3, 0.5), (1.0, 1.01)])
def test_rescale_and_resize_back_equal_cellpose_run_net(rescale, anisotropy):
    x = prep.normalize(zyxc_input(two=True))
    x0 = x.copy()
    got = prep.rescale_volume(x, rescale=rescale, anisotropy=anisotropy)
    ref = _cp_rescale(x, rescale, anisotropy)
    assert got.shape == ref.shape
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)
    yf = np.random.default_rng(8).standard_normal(got.shape[:3] + (4,)).astype(np.float32)
    back = prep.resize_flows_back(yf, SHAPE)
    ref_back = _cp_flows_back(yf, SHAPE, rescale)
    assert back.shape == SHAPE + (4,)
    np.testing.assert_allclose(back, ref_back, rtol=1e-5, atol=1e-5)
    lab = np.random.default_rng(9).integers(0, 500, got.shape[:3]).astype(np.uint16)
    np.testing.assert_array_equal(prep.resize_labels_3d(lab, SHAPE), _cp_labels_back(lab, SHAPE))
    np.testing.assert_array_equal(x, x0)
