"""Coarse Z: the "stable" 3D dynamics follow the flows on the network's isotropic grid when the
network ran at least GRID_Z_FACTOR planes per input plane, and the labels come back to the input
grid with pixel centres aligned. Tiny ONNX model on seeded blobs; the accuracy gain of the
network grid with the bundled model (AP@0.5 at anisotropy 11.5) is measured by
``benchmarks/evaluate_model.py --anisotropy 11.5 --input-grid``."""

import dataclasses

import numpy as np
import pytest

from helpers import blob_volume
from nucseg_rt.eval.synth import subsample_z
from nucseg_rt.params import GRID_Z_FACTOR
from nucseg_rt.prep.resample import resize_labels_3d, resize_labels_centred, resize_linear

#: four ~30-px blobs on an isotropic (92, 64, 72) grid, acquired every 11.5 planes
CENTERS = [(30, 16, 18), (60, 40, 20), (46, 20, 52), (40, 46, 54)]


@pytest.fixture(scope="module")
def seg(tiny_segmenter):
    """The tiny model's Segmenter (conftest.py), by this module's short name."""
    return tiny_segmenter


@pytest.fixture(scope="module")
def coarse():
    """(8, 64, 72) uint16: the four blobs at anisotropy 11.5 (about 2.6 planes per nucleus)."""
    iso = blob_volume((92, 64, 72), centers=CENTERS, sigma=7.0)
    return subsample_z(iso.astype(np.float32), 11.5).astype(np.uint16)


def test_centred_resize_indices():
    lab = np.arange(1, 4, dtype=np.uint16).reshape(3, 1, 1)
    up = resize_labels_centred(lab, (9, 1, 1))
    assert up.ravel().tolist() == [1, 1, 1, 2, 2, 2, 3, 3, 3]
    down = resize_labels_centred(np.arange(1, 10, dtype=np.uint16).reshape(9, 1, 1), (3, 1, 1))
    assert down.ravel().tolist() == [2, 5, 8]          # the centre of each group of three
    # Cellpose's rule takes the first of each group: shifted by one grid voxel
    assert resize_labels_3d(np.arange(1, 10, dtype=np.uint16).reshape(9, 1, 1),
                            (3, 1, 1)).ravel().tolist() == [1, 4, 7]
    same = np.ones((2, 3, 4), np.uint32)
    assert resize_labels_centred(same, (2, 3, 4)) is same


def test_centred_resize_inverts_the_linear_zoom():
    """A label boundary on the input grid lands back where it was after a linear zoom out and a
    centred nearest resize back, for non-integer factors too."""
    lab = np.zeros((1, 1, 23), np.uint16)
    lab[..., 9:17] = 1
    for n in (41, 57, 80):
        zoomed = resize_linear(lab.astype(np.float32)[0, :, :, None], 1, n)[..., 0]
        back = resize_labels_centred((zoomed >= 0.5).astype(np.uint16)[None], (1, 1, 23))
        np.testing.assert_array_equal(back, lab)


@pytest.mark.parametrize("bad", [np.zeros((2, 3), np.uint16), np.zeros((2, 3, 4), np.float32)])
def test_centred_resize_refuses_bad_labels(bad):
    with pytest.raises(ValueError, match="`labels`"):
        resize_labels_centred(bad, (4, 4, 4))


def test_network_grid_kept_only_for_coarse_z(seg, coarse):
    img = coarse
    f = seg.predict_flows(img, anisotropy=11.5, diameter=30.0)
    assert f.grid_flows is not None and f.grid_cellprob is not None
    assert f.grid_flows.shape[1:] == f.grid_cellprob.shape == f.info["dynamics_grid"]
    assert f.grid_flows.shape[1] >= GRID_Z_FACTOR * img.shape[0]
    assert f.flows.shape == (3, *img.shape)                      # what users get is unchanged
    iso = seg.predict_flows(img[:4], anisotropy=1.0, diameter=30.0, z_axis=0)
    assert iso.grid_flows is None and "dynamics_grid" not in iso.info
    assert seg.predict_flows(img, anisotropy=11.5, diameter=30.0, resample=False).grid_flows is None
    assert seg.predict_flows(img, anisotropy=11.5, diameter=30.0, mode="stitch").grid_flows is None


def test_coarse_z_nuclei_are_found_whole(seg, coarse):
    """On the network grid each blob is one nucleus, whole through its planes; the masks are
    not those of the input-grid dynamics (the grid flows were used)."""
    f = seg.predict_flows(coarse, anisotropy=11.5, diameter=30.0)
    masks = seg.masks_from_flows(f)
    assert masks.shape == coarse.shape and masks.max() == len(CENTERS)
    columns = [set(np.unique(masks[:, y, x])) - {0} for _, y, x in CENTERS]
    assert sorted(len(c) for c in columns) == [1] * len(CENTERS)      # one label per blob
    assert set().union(*columns) == set(range(1, len(CENTERS) + 1))  # all different
    on_input = dataclasses.replace(f, grid_flows=None, grid_cellprob=None)
    assert not np.array_equal(seg.masks_from_flows(on_input), masks)


def test_cellpose_method_stays_on_the_input_grid(seg, coarse):
    img = coarse
    f = seg.predict_flows(img, anisotropy=11.5, diameter=30.0)
    without = dataclasses.replace(f, grid_flows=None, grid_cellprob=None)
    np.testing.assert_array_equal(seg.masks_from_flows(f, method="cellpose"),
                                  seg.masks_from_flows(without, method="cellpose"))
    res = seg.segment(img, anisotropy=11.5, diameter=30.0)
    np.testing.assert_array_equal(res.masks, seg.masks_from_flows(f))
    assert res.info["niter"] == 200                                 # at the network's scale
