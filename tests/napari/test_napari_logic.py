"""The napari plugin's logic without napari, Qt or a display: layers in, parameters, runs.

Runs in the main suite (napari not needed); the GUI itself is tested in test_napari_widget.py.
"""

from __future__ import annotations

import subprocess
import sys
import threading

import numpy as np
import pytest

from nucseg_rt.errors import Cancelled, InvalidInputError, ModelNotFoundError
from nucseg_rt.eval.synth import make_volume
from nucseg_rt.napari import _logic as logic
from nucseg_rt.napari._logic import (FlowParams, ProgressState, SegmenterCache,
                                     anisotropy_from_scale, flows_to_rgb, layer_input,
                                     output_names)
from nucseg_rt.params import InputSpec, MaskParams
from nucseg_rt.napari._sample import embryo_small, example_path


# --- layers in ---------------------------------------------------------------------------------


def test_anisotropy_from_scale():
    assert anisotropy_from_scale((2.0, 0.5, 0.5)) == 4.0
    assert anisotropy_from_scale((1, 1, 1)) == 1.0
    assert anisotropy_from_scale((0.25, 1.0, 1.0)) == 0.25
    for bad in [(0, 1, 1), (1, 1, -1), (float("nan"), 1, 1)]:
        with pytest.raises(InvalidInputError, match="scale must be finite and > 0"):
            anisotropy_from_scale(bad)


def test_gray_3d_layer():
    data = np.zeros((5, 20, 30), np.uint16)
    inp = layer_input("stack", data, rgb=False, scale=(2.0, 0.5, 0.5), translate=(1, 2, 3))
    assert inp.data is data and inp.spec == InputSpec(z_axis=0)
    assert inp.scale == (2.0, 0.5, 0.5) and inp.translate == (1.0, 2.0, 3.0)
    assert inp.anisotropy == 4.0 and inp.notes == ()
    # a channel choice on a one-channel layer is ignored, with a note
    inp = layer_input("stack", data, rgb=False, scale=(1, 1, 1), translate=(0, 0, 0), channel=2)
    assert inp.spec.chan == 0 and "channel 2 ignored" in inp.notes[0]


def test_a_layer_without_scale_gets_a_note_not_a_silent_anisotropy_1():
    data = np.zeros((5, 20, 30), np.uint16)
    inp = layer_input("stack", data, rgb=False, scale=(1, 1, 1), translate=(0, 0, 0))
    assert inp.anisotropy == 1.0
    assert len(inp.notes) == 1 and "has no scale (Z and X both 1): anisotropy 1 assumed" in inp.notes[0]
    four = layer_input("s4", np.zeros((2, 5, 20, 30)), rgb=False, scale=(1, 1, 1, 1), translate=(0,) * 4,
                       channel=1)
    assert any("has no scale" in n for n in four.notes)
    assert layer_input("ok", data, rgb=False, scale=(1, 0.25, 0.25), translate=(0, 0, 0)).notes == ()


def test_2d_layer_is_refused():
    with pytest.raises(InvalidInputError, match="'plane' is 2D .*needs a Z stack"):
        layer_input("plane", np.zeros((20, 30)), rgb=False, scale=(1, 1), translate=(0, 0))
    with pytest.raises(InvalidInputError, match="'photo' is 2D"):
        layer_input("photo", np.zeros((20, 30, 3), np.uint8), rgb=True, scale=(1, 1),
                    translate=(0, 0), channel=1)


def test_rgb_needs_a_channel_choice():
    data = np.zeros((4, 16, 16, 3), np.uint8)
    with pytest.raises(InvalidInputError, match="'rgb' is RGB: choose a channel under 'advanced'"):
        layer_input("rgb", data, rgb=True, scale=(3, 1, 1), translate=(0, 0, 0))
    inp = layer_input("rgb", data, rgb=True, scale=(3, 1, 1), translate=(0, 5, 0), channel=2)
    assert inp.spec == InputSpec(channel_axis=3, z_axis=0, chan=2)
    assert inp.scale == (3.0, 1.0, 1.0) and inp.translate == (0.0, 5.0, 0.0)
    rgba = np.zeros((4, 16, 16, 4), np.uint8)
    inp = layer_input("rgba", rgba, rgb=True, scale=(1, 1, 1), translate=(0, 0, 0), channel=0)
    assert inp.data.shape == (4, 16, 16, 3)  # alpha dropped before the gray mean
    with pytest.raises(InvalidInputError, match="channel 3 chosen but layer 'ga' has 2 channels"):
        layer_input("ga", np.zeros((4, 16, 16, 2)), rgb=True, scale=(1, 1, 1),
                    translate=(0, 0, 0), channel=3)


def test_4d_layers_find_their_channel_axis():
    zcyx = np.zeros((6, 2, 16, 16), np.float32)
    with pytest.raises(InvalidInputError, match="'zc' has 2 channels .*choose a channel"):
        layer_input("zc", zcyx, rgb=False, scale=(9, 1, 2, 2), translate=(0, 0, 0, 0))
    inp = layer_input("zc", zcyx, rgb=False, scale=(4, 1, 0.5, 0.5), translate=(1, 0, 2, 3),
                      channel=1)
    assert inp.spec == InputSpec(channel_axis=1, z_axis=0, chan=1)
    assert inp.scale == (4.0, 0.5, 0.5) and inp.translate == (1.0, 2.0, 3.0)
    czyx = np.zeros((3, 6, 16, 16), np.float32)
    inp = layer_input("cz", czyx, rgb=False, scale=(1, 4, 0.5, 0.5), translate=(0, 0, 0, 0),
                      channel=0)
    assert inp.spec == InputSpec(channel_axis=0, z_axis=1, chan=0) and inp.anisotropy == 8.0
    with pytest.raises(InvalidInputError, match="no single channel axis"):
        layer_input("t", np.zeros((3, 3, 16, 16)), rgb=False, scale=(1,) * 4,
                    translate=(0,) * 4, channel=1)
    with pytest.raises(InvalidInputError, match="has 5 dimensions"):
        layer_input("big", np.zeros((2, 3, 4, 5, 6)), rgb=False, scale=(1,) * 5,
                    translate=(0,) * 5)
    with pytest.raises(InvalidInputError, match="`channel` must be one of"):
        layer_input("x", np.zeros((4, 5, 6)), rgb=False, scale=(1,) * 3, translate=(0,) * 3,
                    channel=7)


def test_non_square_pixels_give_a_note():
    inp = layer_input("v", np.zeros((4, 8, 8)), rgb=False, scale=(2, 0.6, 0.5),
                      translate=(0, 0, 0))
    assert inp.anisotropy == 4.0 and "non-square pixels (Y 0.6, X 0.5)" in inp.notes[0]


def test_output_names():
    assert output_names("embryo") == {"masks": "embryo masks", "cellprob": "embryo cellprob",
                                      "flows": "embryo flows"}


# --- parameters --------------------------------------------------------------------------------


def test_flow_params_validate_and_map_to_the_library():
    with pytest.raises(ModelNotFoundError, match="no model to run"):
        FlowParams(model=None)
    with pytest.raises(InvalidInputError, match="`anisotropy` must be > 0, got 0"):
        FlowParams(model="m", anisotropy=0)
    with pytest.raises(InvalidInputError, match="`diameter` must be > 0, got -3"):
        FlowParams(model="m", diameter=-3)
    with pytest.raises(InvalidInputError, match="`diameter` must be a number > 0 or 'auto'"):
        FlowParams(model="m", diameter="big")
    with pytest.raises(InvalidInputError, match="`precision` must be"):
        FlowParams(model="m", precision="fp8")
    with pytest.raises(InvalidInputError, match="`backend` must be"):
        FlowParams(model="m", backend="gpu")
    inp = layer_input("zc", np.zeros((6, 2, 16, 16)), rgb=False, scale=(4, 1, 1, 1),
                      translate=(0,) * 4, channel=2)
    fp = FlowParams(model="m", anisotropy=4, diameter="auto")
    assert fp.predict_kwargs(inp) == dict(anisotropy=4.0, diameter="auto", mode="3d",
                                          inputs=InputSpec(channel_axis=1, z_axis=0, chan=2))
    fp = FlowParams(model="m", diameter=17, stitch=True)
    assert fp.diameter == 17.0 and fp.predict_kwargs(inp)["mode"] == "stitch"


def test_model_choices_from_the_registry(monkeypatch):
    names, default, error = logic.model_choices()
    assert default == "nuclei_3d" and names[0] == "nuclei_3d" and error is None
    assert logic.precision_choices("nuclei_3d") == ["fp32", "int8"]
    assert logic.precision_choices("not-there") == ["fp32"]
    assert logic.precision_choices("nuclei_3d", "openvino") == ["fp32", "int8", "bf16"]
    assert logic.backend_choices() == ["auto", "onnxruntime", "openvino"]
    from nucseg_rt import Segmenter

    # the registry's record agrees with the network's own metadata (17 for the bundled model)
    assert logic.default_diameter("nuclei_3d") == Segmenter("nuclei_3d", device="cpu").diam_labels == 17.0
    assert logic.default_diameter("not-there", 17.0) == 17.0
    from nucseg_rt.models import registry

    monkeypatch.setattr(registry, "list_models", lambda **_: [])
    assert logic.model_choices() == ([], None, logic.NO_MODEL_MESSAGE)


def test_segmenter_cache_keeps_one_warm():
    made, closed = [], []

    class Fake:
        def __init__(self, model, precision, backend):
            self.key = (model, precision)
            made.append(self.key)

        def close(self):
            closed.append(self.key)

    cache = SegmenterCache(Fake)
    a = cache.get("m", "fp32")
    assert cache.get("m", "fp32") is a and made == [("m", "fp32")]
    b = cache.get("m", "int8")
    assert b is not a and closed == [("m", "fp32")]
    cache.close()
    assert closed == [("m", "fp32"), ("m", "int8")]
    c = cache.get("m", "fp32", "openvino")  # another backend replaces it too
    assert made[-1] == ("m", "fp32") and len(made) == 3 and c is not a
    cache.close()


def test_progress_state_across_threads():
    state = ProgressState()
    assert state.snapshot() == ("", 0, 0) and state.text() == "starting"
    threads = [threading.Thread(target=lambda k=k: [state("YX", i, 100) for i in range(k)])
               for k in (50, 60)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stage, done, total = state.snapshot()
    assert stage == "YX" and total == 100 and done in (49, 59)
    state("ZX", 3, 7)
    assert state.text() == "ZX: 3/7"


def test_flows_to_rgb():
    flows = np.zeros((3, 2, 4, 5), np.float32)
    flows[0, 0, 0, 0], flows[2, 1, 3, 4] = 2.0, -4.0
    rgb = flows_to_rgb(flows)
    assert rgb.shape == (2, 4, 5, 3) and rgb.dtype == np.uint8
    assert tuple(rgb[0, 0, 0]) == (192, 128, 128) and tuple(rgb[1, 3, 4]) == (128, 128, 1)
    assert (rgb[0, 1, 1] == 128).all()
    assert (flows_to_rgb(np.zeros((3, 1, 2, 2))) == 128).all()
    with pytest.raises(InvalidInputError, match=r"must have shape \(3, Z, Y, X\)"):
        flows_to_rgb(np.zeros((2, 1, 2, 2)))


def test_messages():
    assert logic.describe_error(InvalidInputError("`x` must be > 0")) == "`x` must be > 0"
    assert logic.describe_error(RuntimeError("boom")) == "segmentation failed: RuntimeError: boom"
    assert logic.is_cancelled(Cancelled("stop")) and not logic.is_cancelled(ValueError())


def test_logic_imports_without_napari_qt_or_torch():
    code = ("import sys\nfor m in ('napari', 'qtpy', 'PyQt5', 'magicgui', 'torch'):\n"
            "    sys.modules[m] = None\n"
            "import nucseg_rt.napari, nucseg_rt.napari._logic, nucseg_rt.napari._sample\n"
            "print('ok')\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr


# --- sample data -------------------------------------------------------------------------------


def test_sample_is_the_shipped_example_with_its_scale():
    assert example_path().name == "embryo_small.tif"
    [(data, kwargs, kind)] = embryo_small()
    assert kind == "image" and data.shape == (24, 192, 192) and data.dtype == np.uint16
    assert kwargs["name"] == "embryo_small" and kwargs["scale"] == (2.0, 0.5, 0.5)
    assert anisotropy_from_scale(kwargs["scale"]) == 4.0
    with pytest.raises(FileNotFoundError, match="not in this installation"):
        example_path("nope.tif")


# --- runs with the library (tiny model) --------------------------------------------------------


@pytest.fixture
def tiny_registered(tiny_onnx_model):
    """The tiny model added to this test's registry as "tiny"; its name."""
    from nucseg_rt.models import registry

    registry.add_model(tiny_onnx_model, name="tiny")
    return "tiny"


@pytest.fixture(scope="module")
def blobs():
    img, _, _ = make_volume((20, 72, 80), anisotropy=2.0, seed=7, diameter_mean=14.0)
    return img


def _input(vol):
    return layer_input("blobs", vol, rgb=False, scale=(2.0, 1.0, 1.0), translate=(0, 0, 0))


def test_run_then_rethreshold_equals_full_runs(tiny_registered, blobs):
    from nucseg_rt import Segmenter

    before = blobs.copy()
    segs = SegmenterCache()
    inp = _input(blobs)
    fp = FlowParams(model=tiny_registered, anisotropy=inp.anisotropy, diameter=14.0)
    progress = ProgressState()
    out = logic.run_flows(segs, inp, fp, MaskParams(), progress=progress,
                          cancel=threading.Event())
    np.testing.assert_array_equal(blobs, before)  # the layer's data is not touched
    seg = Segmenter(tiny_registered)
    full = seg.segment(blobs, anisotropy=2.0, diameter=14.0)
    assert out.n_labels > 0
    np.testing.assert_array_equal(out.masks, full.masks)
    stage, done, total = progress.snapshot()
    assert (stage, done, total) == ("masks", 1, 1)  # the last step shown is the mask step
    again = logic.run_masks(out.cache, MaskParams(cellprob_threshold=1.0, min_size=40))
    full = seg.segment(blobs, anisotropy=2.0, diameter=14.0, cellprob_threshold=1.0, min_size=40)
    np.testing.assert_array_equal(again.masks, full.masks)
    assert again.cache is out.cache and set(again.seconds) == {"masks"}
    assert again.cache.accepts(MaskParams(cellprob_threshold=2.0))
    assert not again.cache.accepts(MaskParams(stitch_threshold=0.5))
    with pytest.raises(InvalidInputError, match="press Run"):
        logic.run_masks(out.cache, MaskParams(stitch_threshold=0.5))
    segs.close()


def test_stitch_mode_rethreshold_equals_full_run(tiny_registered, blobs):
    from nucseg_rt import Segmenter

    segs = SegmenterCache()
    inp = _input(blobs)
    fp = FlowParams(model=tiny_registered, anisotropy=inp.anisotropy, diameter=14.0, stitch=True)
    out = logic.run_flows(segs, inp, fp, MaskParams(stitch_threshold=0.25))
    seg = Segmenter(tiny_registered)
    for t in (0.25, 0.6):
        full = seg.segment(blobs, diameter=14.0, stitch_threshold=t)
        masks = logic.run_masks(out.cache, MaskParams(stitch_threshold=t)).masks
        np.testing.assert_array_equal(masks, full.masks)
    with pytest.raises(InvalidInputError, match="needs FlowParams\\(stitch=True\\)"):
        logic.run_flows(segs, inp, fp, MaskParams())
    segs.close()


def test_cancelled_run_raises_and_the_segmenter_stays_usable(tiny_registered, blobs):
    segs = SegmenterCache()
    inp = _input(blobs)
    fp = FlowParams(model=tiny_registered, anisotropy=inp.anisotropy, diameter=14.0)
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(Cancelled):
        logic.run_flows(segs, inp, fp, MaskParams(), cancel=cancel)
    out = logic.run_flows(segs, inp, fp, MaskParams(), cancel=threading.Event())
    assert out.n_labels > 0
    segs.close()


def test_4d_layer_without_a_channel_axis_is_a_time_lapse():
    """napari layers have no axis names: a 4D layer whose first two axes are both longer than
    4 is (T, Z, Y, X)."""
    movie = np.arange(10 * 12 * 4 * 5, dtype=np.uint16).reshape(10, 12, 4, 5)
    inp = layer_input("tl", movie, rgb=False, scale=(60, 2, 0.5, 0.5), translate=(0, 1, 2, 3))
    assert inp.spec == InputSpec(time_axis=0, z_axis=1) and inp.n_frames == 10
    assert (inp.scale, inp.translate, inp.time) == ((2.0, 0.5, 0.5), (1.0, 2.0, 3.0), (60.0, 0.0))
    one = inp.frame(3)
    assert one.spec == InputSpec(z_axis=0) and one.time is None and one.anisotropy == 4.0
    np.testing.assert_array_equal(one.data, movie[3])
    with pytest.raises(InvalidInputError, match="frame 10 is outside the 10 frames"):
        inp.frame(10)


def test_time_lapse_layer_current_frame_or_all_frames(tiny_registered):
    from nucseg_rt import Segmenter
    from helpers import blob_timelapse

    movie = blob_timelapse(5, (12, 48, 52))
    inp = layer_input("tl", movie, rgb=False, scale=(1, 2, 0.5, 0.5), translate=(0,) * 4)
    segs = SegmenterCache()
    fp = FlowParams(model=tiny_registered, anisotropy=inp.anisotropy, diameter=30.0)
    with pytest.raises(InvalidInputError, match="'tl' is a time-lapse: choose the current frame"):
        logic.run_flows(segs, inp, fp, MaskParams())
    current = logic.run_flows(segs, inp, fp, MaskParams(), frame=2)
    direct = Segmenter(tiny_registered, use_probe=False)
    expected = direct.segment(movie[2], anisotropy=4.0, diameter=30.0).masks
    np.testing.assert_array_equal(current.masks, expected)
    assert current.cache.accepts(MaskParams())  # a new threshold reuses that frame's flows
    seen = []
    everything = logic.run_flows(segs, inp, fp, MaskParams(), frame="all",
                                 progress=lambda *a: seen.append(a))
    assert everything.masks.shape == movie.shape and ("frame", 5, 5) in seen
    assert everything.cache.scale == (1.0, 2.0, 0.5, 0.5) and everything.cache.flows is None
    assert not everything.cache.accepts(MaskParams())  # no flows kept: Run again
    linked = dict(direct.segment_frames(movie, time_axis=0, link=True, anisotropy=4.0,
                                        diameter=30.0))
    np.testing.assert_array_equal(everything.masks[4], linked[4])
    direct.close()
    segs.close()
