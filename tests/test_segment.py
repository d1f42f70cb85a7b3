"""Segmenter end to end on a tiny ONNX model: output grids and types, inputs untouched, bad
arguments (flows equal Cellpose 3.1's eval: tests/reference/test_segment_cellpose.py)."""

import numpy as np
import pytest

from nucseg_rt import Segmenter
from nucseg_rt.errors import InvalidInputError


@pytest.fixture(scope="module")
def tiny(tiny_onnx_pair):
    """The tiny model pair (main + ortho), diam_mean 30, as a Segmenter (made before the
    per-test registry folder exists, so it does not read a saved probe)."""
    with Segmenter(tiny_onnx_pair, device="cpu", use_probe=False) as seg:
        yield seg


def blobs(shape, seed=0, n=12, radius=6.0):
    """Bright blurred spheres on a noisy background, uint16."""
    rng = np.random.default_rng(seed)
    zz, yy, xx = np.indices(shape, dtype=np.float32)
    img = np.zeros(shape, np.float32)
    for _ in range(n):
        c = rng.uniform([0, 0, 0], shape)
        d2 = (zz - c[0]) ** 2 + (yy - c[1]) ** 2 + (xx - c[2]) ** 2
        img += np.exp(-d2 / (2 * radius ** 2))
    img = 1000 * img + rng.normal(100, 10, shape)
    return np.clip(img, 0, 65535).astype(np.uint16)


def test_resample_false_gives_network_grid(tiny):
    vol = blobs((9, 40, 50), seed=2)
    seg = tiny
    flows, cellprob = seg.predict_flows(vol, anisotropy=2.0, diameter=15.0, resample=False)
    assert flows.shape == (3, 36, 80, 100) and cellprob.shape == (36, 80, 100)
    res = seg.segment(vol, anisotropy=2.0, diameter=15.0, resample=False)
    assert res.masks.shape == (9, 40, 50)


def test_segment_returns_labels_and_leaves_input(tiny):
    vol = blobs((10, 64, 72), seed=3)
    before = vol.copy()
    res = tiny.segment(vol, anisotropy=1.0, diameter=30.0)
    np.testing.assert_array_equal(vol, before)
    assert res.masks.shape == vol.shape and res.masks.dtype in (np.uint16, np.uint32)
    assert res.flows.shape == (3, *vol.shape) and res.flows.dtype == np.float32
    assert res.cellprob.shape == vol.shape
    labels = np.unique(res.masks)
    assert len(labels) > 1 and labels[0] == 0 and np.array_equal(labels[1:], np.arange(1, len(labels)))


def test_constant_volume_gives_no_masks(tiny):
    res = tiny.segment(np.full((6, 40, 40), 7, np.uint16), anisotropy=1.0)
    assert res.masks.max() == 0


@pytest.mark.parametrize("kwargs,match", [
    (dict(anisotropy=0), "`anisotropy` must be > 0"),
    (dict(anisotropy=-2.0), "`anisotropy` must be > 0"),
    (dict(diameter=-5), "`diameter` must be > 0"),
    (dict(stitch_threshold=1.5), "`stitch_threshold`"),
    (dict(dp_smooth=-1), "`dp_smooth`"),
    (dict(niter=-3), "`niter`"),
])
def test_bad_arguments(tiny, kwargs, match):
    with pytest.raises(InvalidInputError, match=match):
        tiny.segment(np.zeros((4, 32, 32), np.uint16), **{"anisotropy": 1.0, **kwargs})


def test_bad_constructor_arguments(tiny_onnx_pair):
    with pytest.raises(InvalidInputError, match="`precision`"):
        Segmenter(tiny_onnx_pair, precision="int4")
    with pytest.raises(InvalidInputError, match="`batch_size`"):
        Segmenter(tiny_onnx_pair, batch_size=0)
