"""Coarse Z: the "stable" 3D dynamics follow the flows on the network's isotropic grid when the
network ran at least GRID_Z_FACTOR planes per input plane, and the labels come back to the input
grid with pixel centres aligned. Torch-free (bundled model), synthetic seeded volumes."""

import dataclasses

import numpy as np
import pytest

from nucseg_rt import Segmenter
from nucseg_rt.eval.metrics import average_precision
from nucseg_rt.eval.synth import make_volume
from nucseg_rt.params import GRID_Z_FACTOR
from nucseg_rt.prep.resample import resize_labels_3d, resize_labels_centred, resize_linear


@pytest.fixture(scope="module")
def seg():
    return Segmenter("nuclei_3d", device="cpu")


@pytest.fixture(scope="module")
def coarse():
    """Two 30-px synthetic stacks at anisotropy 11.5 (about 2.6 planes per nucleus)."""
    return [make_volume((96, 160, 160), anisotropy=11.5, seed=30_000 + k, diameter_mean=30.0)[:2]
            for k in range(2)]


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
    img = coarse[0][0]
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
    """At anisotropy 11.5 the input-grid dynamics split and join nuclei across planes (AP@0.5
    0.75 on other seeds); on the network grid they are found whole."""
    ap_grid, ap_input = [], []
    for img, labels in coarse:
        f = seg.predict_flows(img, anisotropy=11.5, diameter=30.0)
        ap_grid.append(average_precision(labels, seg.masks_from_flows(f), thresholds=(0.5,))[0][0])
        on_input = dataclasses.replace(f, grid_flows=None, grid_cellprob=None)
        ap_input.append(average_precision(labels, seg.masks_from_flows(on_input), thresholds=(0.5,))[0][0])
    assert np.mean(ap_grid) >= 0.88, (ap_grid, ap_input)
    assert np.mean(ap_grid) >= np.mean(ap_input) + 0.05, (ap_grid, ap_input)


def test_cellpose_method_stays_on_the_input_grid(seg, coarse):
    img = coarse[0][0]
    f = seg.predict_flows(img, anisotropy=11.5, diameter=30.0)
    without = dataclasses.replace(f, grid_flows=None, grid_cellprob=None)
    np.testing.assert_array_equal(seg.masks_from_flows(f, method="cellpose"),
                                  seg.masks_from_flows(without, method="cellpose"))
    res = seg.segment(img, anisotropy=11.5, diameter=30.0)
    np.testing.assert_array_equal(res.masks, seg.masks_from_flows(f))
    assert res.info["niter"] == 200                                 # at the network's scale
