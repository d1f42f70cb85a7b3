"""Segmenter end to end on a tiny ONNX model: output grids and types, inputs untouched, bad
arguments (flows equal Cellpose 3.1's eval: tests/reference/test_segment_cellpose.py)."""

import numpy as np
import pytest

from helpers import blob_volume
from nucseg_rt import Segmenter
from nucseg_rt.errors import InvalidInputError


def blobs(shape, seed=0):
    """Twelve bright blurred spheres (radius 6) on a noisy background, uint16."""
    return blob_volume(shape, n=12, sigma=6.0, seed=seed, background=100.0)


def test_resample_false_gives_network_grid(tiny_pair_segmenter):
    vol = blobs((9, 40, 50), seed=2)
    seg = tiny_pair_segmenter
    flows, cellprob = seg.predict_flows(vol, anisotropy=2.0, diameter=15.0, resample=False)
    assert flows.shape == (3, 36, 80, 100) and cellprob.shape == (36, 80, 100)
    res = seg.segment(vol, anisotropy=2.0, diameter=15.0, resample=False)
    assert res.masks.shape == (9, 40, 50)


def test_segment_returns_labels_and_leaves_input(tiny_pair_segmenter):
    vol = blobs((10, 64, 72), seed=3)
    before = vol.copy()
    res = tiny_pair_segmenter.segment(vol, anisotropy=1.0, diameter=30.0)
    np.testing.assert_array_equal(vol, before)
    assert res.masks.shape == vol.shape and res.masks.dtype in (np.uint16, np.uint32)
    assert res.flows.shape == (3, *vol.shape) and res.flows.dtype == np.float32
    assert res.cellprob.shape == vol.shape
    labels = np.unique(res.masks)
    assert len(labels) > 1 and labels[0] == 0 and np.array_equal(labels[1:], np.arange(1, len(labels)))


def test_constant_volume_gives_no_masks(tiny_pair_segmenter):
    res = tiny_pair_segmenter.segment(np.full((6, 40, 40), 7, np.uint16), anisotropy=1.0)
    assert res.masks.max() == 0


@pytest.mark.parametrize("kwargs,match", [
    (dict(anisotropy=0), "`anisotropy` must be > 0"),
    (dict(anisotropy=-2.0), "`anisotropy` must be > 0"),
    (dict(diameter=-5), "`diameter` must be > 0"),
    (dict(stitch_threshold=1.5), "`stitch_threshold`"),
    (dict(dp_smooth=-1), "`dp_smooth`"),
    (dict(niter=-3), "`niter`"),
])
def test_bad_arguments(tiny_pair_segmenter, kwargs, match):
    with pytest.raises(InvalidInputError, match=match):
        tiny_pair_segmenter.segment(np.zeros((4, 32, 32), np.uint16), **{"anisotropy": 1.0, **kwargs})


def test_bad_constructor_arguments(tiny_onnx_pair):
    with pytest.raises(InvalidInputError, match="`precision`"):
        Segmenter(tiny_onnx_pair, precision="int4")
    with pytest.raises(InvalidInputError, match="`batch_size`"):
        Segmenter(tiny_onnx_pair, batch_size=0)
