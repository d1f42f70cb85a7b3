"""The two-stage API: predict_flows -> masks_from_flows equals segment(), voxel for voxel;
progress, cancel, MaskParams validation, Flows unpacking. Torch-free (the tiny model on synthetic
nuclei; the bundled model where a run must last long enough to be cancelled)."""

import dataclasses
import threading

import numpy as np
import pytest

from helpers import blob_volume
from nucseg_rt import Segmenter
from nucseg_rt.errors import Cancelled, InvalidInputError
from nucseg_rt.eval.synth import make_volume
from nucseg_rt.params import InputSpec, MaskParams
from nucseg_rt.results import Flows


@pytest.fixture(scope="module")
def seg(tiny_segmenter):
    """The tiny model's Segmenter (conftest.py), by this module's short name."""
    return tiny_segmenter


@pytest.fixture(scope="module")
def vol():
    """Four blobs (sigma 5) in (12, 64, 72): one nucleus each for the tiny model."""
    return blob_volume((12, 64, 72), centers=[(3, 16, 18), (6, 40, 20), (5, 20, 52), (8, 46, 54)])


@pytest.mark.parametrize("kw,mask_kw", [
    (dict(anisotropy=2.0, diameter=26.0), dict(cellprob_threshold=0.0)),
    (dict(anisotropy=2.0, diameter=14.0), dict(cellprob_threshold=-0.5, min_size=30, dp_smooth=1.0)),
    (dict(anisotropy=2.0, diameter=23.0, resample=False), dict(dynamics_method="cellpose", niter=120)),
    # coarse Z: the stable dynamics run on the network grid (Flows.grid_flows)
    (dict(anisotropy=8.0, diameter=20.0), dict(cellprob_threshold=0.0, dp_smooth=1.0)),
    (dict(anisotropy=8.0, diameter=20.0, resample=False), dict(min_size=10)),
    (dict(anisotropy=2.0, diameter=20.0), dict(stitch_threshold=0.3)),
    (dict(anisotropy=2.0, diameter=25.0), dict(stitch_threshold=0.25, flow_threshold=0.6, min_size=5)),
])
def test_masks_from_flows_equals_segment(seg, vol, kw, mask_kw):
    res = seg.segment(vol, **kw, **mask_kw)
    mode = "stitch" if mask_kw.get("stitch_threshold", 0) > 0 else "3d"
    f = seg.predict_flows(vol, mode=mode, **kw)
    params = {("method" if k == "dynamics_method" else k): v for k, v in mask_kw.items()}
    masks = seg.masks_from_flows(f, **params)
    assert res.masks.max() >= 3
    np.testing.assert_array_equal(masks, res.masks)
    np.testing.assert_array_equal(f.flows, res.flows)
    np.testing.assert_array_equal(f.cellprob, res.cellprob)
    # re-thresholding the same Flows object twice gives the same masks (it is not modified)
    np.testing.assert_array_equal(seg.masks_from_flows(f, MaskParams(**params)), masks)


def test_flows_unpacks_and_carries_what_masks_need(seg, vol):
    f = seg.predict_flows(vol, anisotropy=2.0, diameter=20.0)
    flows, cellprob = f
    assert isinstance(f, Flows)
    assert flows is f.flows and cellprob is f.cellprob
    assert flows.shape == (3, *vol.shape) and flows.dtype == np.float32
    assert f.shape == vol.shape and f.mode == "3d" and f.anisotropy == 2.0 and f.diameter == 20.0
    assert f.rescale == pytest.approx(seg.diam_mean / 20.0)


def test_mode_mismatch_is_refused(seg, vol):
    f = seg.predict_flows(vol[:6], anisotropy=2.0, diameter=20.0)
    with pytest.raises(InvalidInputError, match="stitch_threshold.*'3d' mode"):
        seg.masks_from_flows(f, stitch_threshold=0.3)
    with pytest.raises(InvalidInputError, match="either as `params` or as keywords"):
        seg.masks_from_flows(f, MaskParams(), min_size=3)
    with pytest.raises(InvalidInputError, match="unknown mask parameter.*bogus"):
        seg.masks_from_flows(f, bogus=1)
    with pytest.raises(InvalidInputError, match="`flows` must be the Flows result"):
        seg.masks_from_flows((f.flows, f.cellprob))


@pytest.mark.parametrize("kw,match", [
    (dict(cellprob_threshold=float("nan")), "`cellprob_threshold` must be finite"),
    (dict(min_size=1.5), "`min_size` must be a whole number"),
    (dict(niter=-1), "`niter` must be >= 0"),
    (dict(method="fast"), "`method` must be 'stable' or 'cellpose'"),
    (dict(dp_smooth=-1), "`dp_smooth` must be >= 0"),
    (dict(stitch_threshold=1.0), r"`stitch_threshold` must be in \[0, 1\)"),
    (dict(max_size_fraction=0), r"`max_size_fraction` must be in \(0, 1\]"),
    (dict(flow_threshold=-0.1), "`flow_threshold` must be >= 0"),
])
def test_mask_params_validated_once_with_the_name(kw, match):
    with pytest.raises(InvalidInputError, match=match):
        MaskParams(**kw)


@pytest.mark.parametrize("kw,match", [
    (dict(chan=4), "`chan` must be 0"), (dict(channel_axis=1, z_axis=1), "must differ"),
    (dict(z_axis=0.5), "`z_axis` must be a whole number"),
])
def test_input_spec_validated(kw, match):
    with pytest.raises(InvalidInputError, match=match):
        InputSpec(**kw)


def test_mask_params_defaults_and_replace():
    p = MaskParams()  # threshold: the model's; min_size: size-aware (tests/masks/test_defaults.py)
    assert (p.cellprob_threshold, p.min_size, p.max_size_fraction, p.niter, p.method) == (None, None, 0.4, None, "stable")
    q = p.replace(min_size=40)
    assert q.min_size == 40 and p.min_size is None
    with pytest.raises(dataclasses.FrozenInstanceError, match="cannot assign to field 'min_size'"):
        p.min_size = 3  # frozen


def test_progress_reaches_total(tiny_onnx_model):
    seg = Segmenter(str(tiny_onnx_model), device="cpu", streams=2)
    vol = (np.random.default_rng(0).random((7, 60, 64)) * 1000).astype(np.uint16)
    calls = []
    seg.segment(vol, anisotropy=2.0, diameter=30.0, progress=lambda s, d, t: calls.append((s, d, t)))
    for stage in ("YX", "ZX", "ZY"):
        done = [d for s, d, t in calls if s == stage]
        total = {t for s, d, t in calls if s == stage}
        assert len(total) == 1 and max(done) == total.pop()


def test_cancel_before_and_during_leaves_segmenter_usable(tiny_onnx_model):
    seg = Segmenter(str(tiny_onnx_model), device="cpu", streams=2, batch_size=1)
    vol = (np.random.default_rng(1).random((9, 70, 66)) * 1000).astype(np.uint16)
    ev = threading.Event()
    ev.set()
    with pytest.raises(Cancelled):
        seg.segment(vol, anisotropy=1.0, diameter=30.0, cancel=ev)
    ev = threading.Event()
    seen = []

    def progress(stage, done, total):
        seen.append(stage)
        if stage == "ZX":
            ev.set()

    with pytest.raises(Cancelled):
        seg.segment(vol, anisotropy=1.0, diameter=30.0, cancel=ev, progress=progress)
    assert "ZY" not in seen  # stopped within the ZX pass
    res = seg.segment(vol, anisotropy=1.0, diameter=30.0)  # still usable
    assert res.masks.shape == vol.shape


def test_cancel_from_another_thread_returns_quickly():
    import time

    seg = Segmenter("nuclei_3d", device="cpu")
    img, _, _ = make_volume((48, 160, 160), density=0.25, diameter_mean=20.0, anisotropy=1.0, seed=4)
    ev = threading.Event()
    timer = threading.Timer(1.0, ev.set)
    t0 = time.perf_counter()
    timer.start()
    with pytest.raises(Cancelled):
        seg.segment(img, anisotropy=1.0, diameter=17.0, cancel=ev)
    assert time.perf_counter() - t0 < 1.0 + 2.0


@pytest.mark.parametrize("mask_kw", [dict(), dict(dynamics_method="cellpose"),
                                     dict(stitch_threshold=0.3)])
def test_masks_from_flows_honours_a_cancel_set_during_the_call(seg, vol, monkeypatch, mask_kw):
    """Issue 22: an event set while the Euler steps run stops the call (only one set before the
    call did); following the pixels in chunks changes no label."""
    from nucseg_rt.masks import dynamics

    mode = "stitch" if mask_kw.get("stitch_threshold") else "3d"
    flows = seg.predict_flows(vol, anisotropy=2.0, diameter=26.0, mode=mode)
    whole = seg.masks_from_flows(flows, **mask_kw)
    monkeypatch.setattr(dynamics, "_FOLLOW_CHUNK", 97)  # many chunks on this small volume
    np.testing.assert_array_equal(seg.masks_from_flows(flows, **mask_kw), whole)

    ev = threading.Event()
    kernels = {"stable": "_follow_stable_3d", "cellpose": "_follow_cellpose_3d",
               "stitch": "_follow_cellpose_2d"}
    name = kernels["stitch" if mode == "stitch" else mask_kw.get("dynamics_method", "stable")]
    kernel, calls = getattr(dynamics, name), []

    def first_chunk_sets_the_event(*args):
        calls.append(int(args[2][0]))  # the chunk's first pixel (its threads share the chunk)
        ev.set()  # as another thread would, while the steps run
        return kernel(*args)

    monkeypatch.setattr(dynamics, name, first_chunk_sets_the_event)
    with pytest.raises(Cancelled):
        seg.masks_from_flows(flows, cancel=ev, **mask_kw)
    assert len(set(calls)) == 1  # stopped before the next chunk of pixels
