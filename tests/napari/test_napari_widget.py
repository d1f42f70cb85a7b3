"""The napari plugin in a real napari.Viewer (pytest-qt), headless under Xvfb:

    xvfb-run -a pytest tests/napari

Skipped when napari or pytest-qt is not installed (`pip install '.[napari]' pytest-qt pyqt5`).
The sample runs use the bundled model in int8 (the fastest on the CPU) or the tiny test model.
"""

from __future__ import annotations

import os
import sys
import time

import numpy as np
import pytest

_HINT = "needs pip install '.[napari]' pytest-qt pyqt5"
pytest.importorskip("napari.viewer", reason=f"napari not installed; {_HINT}")  # the real napari
pytest.importorskip("pytestqt", reason=f"pytest-qt not installed; {_HINT}")
if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY")
                                             or os.environ.get("WAYLAND_DISPLAY")):
    # without a display Qt aborts the whole test process (offscreen has no OpenGL for napari)
    pytest.skip("needs a display: xvfb-run -a pytest tests/napari", allow_module_level=True)

from napari.layers import Labels  # noqa: E402

from nucseg_rt.napari import _widget  # noqa: E402
from nucseg_rt.napari._sample import embryo_small  # noqa: E402
from nucseg_rt.napari._widget import TITLE, SegmentWidget  # noqa: E402

RUN_TIMEOUT_MS = 600_000


@pytest.fixture
def errors(monkeypatch):
    """Messages the widget sends to the viewer (show_error / show_warning)."""
    said = {"error": [], "warning": []}
    monkeypatch.setattr(_widget, "show_error", said["error"].append)
    monkeypatch.setattr(_widget, "show_warning", said["warning"].append)
    return said


@pytest.fixture
def sample():
    [(data, kwargs, _)] = embryo_small()
    return data, kwargs


def _dock(viewer) -> SegmentWidget:
    _, widget = viewer.window.add_plugin_dock_widget("nucseg-rt", TITLE)
    assert isinstance(widget, SegmentWidget)
    return widget


def _run(qtbot, widget, expect="done"):
    with qtbot.waitSignal(widget.run_finished, timeout=RUN_TIMEOUT_MS) as blocker:
        assert widget.run()
    assert blocker.args == [expect], widget.status.value


def test_manifest_is_discovered():
    from npe2 import PluginManager

    pm = PluginManager.instance()
    pm.discover()
    manifest = pm.get_manifest("nucseg-rt")
    assert [w.display_name for w in manifest.contributions.widgets] == [TITLE]
    assert [s.key for s in manifest.contributions.sample_data] == ["embryo_small"]


def test_sample_opens_with_its_scale(make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.open_sample("nucseg-rt", "embryo_small")
    layer = viewer.layers["embryo_small"]
    assert layer.data.shape == (24, 192, 192)
    np.testing.assert_allclose(layer.scale, (2.0, 0.5, 0.5))


def test_run_on_the_sample_equals_the_library(make_napari_viewer, qtbot, sample, errors):
    from nucseg_rt import Segmenter

    data, kwargs = sample
    viewer = make_napari_viewer()
    image = viewer.add_image(data, translate=(10.0, -4.0, 2.5), **kwargs)
    widget = _dock(viewer)
    assert widget.image.value is image
    assert widget.anisotropy.value == 4.0  # from the layer's scale
    assert widget.model.value == "nuclei_3d" and widget.diameter.value == 17.0  # the model's diam_labels
    widget.diameter.value = 30.0  # the sample's nuclei
    widget.precision.value = "int8"
    widget.add_cellprob.value = widget.add_flows.value = True

    ticks = []  # the event loop runs while the worker computes (not counting the layer adds)
    timer = _ticker(ticks, while_=lambda: widget.cache is None)
    _run(qtbot, widget)
    timer.stop()
    gaps = np.diff(ticks)
    assert len(ticks) > 10 and gaps.max() < 1.0, f"GUI blocked for {gaps.max():.2f} s"

    masks = viewer.layers["embryo_small masks"]
    assert isinstance(masks, Labels)
    np.testing.assert_allclose(masks.scale, (2.0, 0.5, 0.5))
    np.testing.assert_allclose(masks.translate, (10.0, -4.0, 2.5))
    seg = Segmenter("nuclei_3d", precision="int8")
    ref = seg.segment(data, anisotropy=4.0, diameter=30.0)
    assert masks.data.max() > 0
    assert masks.data.max() == ref.masks.max()
    np.testing.assert_array_equal(masks.data, ref.masks)
    assert f"min size {ref.info['min_size']} voxels" in widget.status.value
    assert widget.status.value.endswith("; onnxruntime int8")  # what the network ran on
    assert widget.status.tooltip == str(seg.engine.backend)
    cellprob = viewer.layers["embryo_small cellprob"]
    flows = viewer.layers["embryo_small flows"]
    assert cellprob.data.shape == data.shape and flows.rgb and flows.data.shape == (*data.shape, 3)
    np.testing.assert_allclose(flows.scale, (2.0, 0.5, 0.5))
    assert widget.image.value is image  # the added image layers are not offered as input
    assert not errors["error"], errors

    # re-threshold from the cached flows: no network, same masks as a full run
    network_seconds = widget.last_outcome.seconds["flows"]
    with qtbot.waitSignal(widget.masks_updated, timeout=RUN_TIMEOUT_MS):
        widget.cellprob_threshold.value = 1.0
    assert widget.last_outcome.seconds["masks"] < network_seconds / 4
    ref = seg.segment(data, anisotropy=4.0, diameter=30.0, cellprob_threshold=1.0)
    assert viewer.layers["embryo_small masks"] is masks
    np.testing.assert_array_equal(masks.data, ref.masks)
    assert widget.size_aware.value and not widget.min_size.enabled  # size-aware by default
    widget.size_aware.value = False
    assert widget.min_size.enabled
    with qtbot.waitSignal(widget.masks_updated, timeout=RUN_TIMEOUT_MS):
        widget.min_size.value = 4000  # larger than some nuclei: fewer masks
    want = seg.masks_from_flows(widget.cache.flows, cellprob_threshold=1.0, min_size=4000,
                                method="stable")
    assert 0 < want.max() < ref.masks.max()
    np.testing.assert_array_equal(masks.data, want)
    assert "from cached flows" in widget.status.value
    assert len([n for n in viewer.layers if n.name.startswith("embryo_small")]) == 4
    widget.stitch_threshold.value = 0.3  # other flows needed: no recompute, a hint to Run
    assert "press Run" in widget.status.value and widget._mask_worker is None
    widget.shutdown()


def test_cancel_adds_nothing_and_the_widget_runs_again(make_napari_viewer, qtbot, sample,
                                                       errors):
    data, kwargs = sample
    viewer = make_napari_viewer()
    viewer.add_image(data, **kwargs)
    widget = _dock(viewer)  # fp32: slow enough to cancel in the middle
    with qtbot.waitSignal(widget.run_finished, timeout=RUN_TIMEOUT_MS) as blocker:
        assert widget.run()
        assert widget.busy and widget.cancel_button.enabled and not widget.run_button.enabled
        assert not widget.run()  # one run at a time
        qtbot.waitUntil(lambda: widget._progress.snapshot()[1] > 0, timeout=RUN_TIMEOUT_MS)
        t0 = time.perf_counter()
        widget.cancel_button.clicked.emit()
    assert blocker.args == ["cancelled"]
    assert time.perf_counter() - t0 < 10
    assert "embryo_small masks" not in viewer.layers and widget.cache is None
    assert widget.status.value.startswith("cancelled")
    assert widget.run_button.enabled and not widget.cancel_button.enabled
    assert not errors["error"]

    viewer.add_image(data[:8, :64, :80], name="crop", scale=kwargs["scale"])
    assert widget.image.value.name == "crop"  # follows the selected layer
    widget.precision.value = "int8"
    widget.auto_diameter.value = True
    assert not widget.diameter.enabled
    _run(qtbot, widget)
    assert viewer.layers["crop masks"].data.shape == (8, 64, 80)
    assert "estimated diameter" in widget.status.value
    assert widget.diameter.value == round(widget.cache.flows.diameter, 1)
    widget.shutdown()


def test_bad_input_is_reported_in_the_viewer(make_napari_viewer, errors):
    viewer = make_napari_viewer()
    widget = _dock(viewer)
    assert not widget.run()
    assert "no Image layer" in errors["error"][-1]
    viewer.add_image(np.zeros((32, 32), np.uint8), name="plane")
    assert not widget.run()
    assert "'plane' is 2D" in errors["error"][-1]
    viewer.add_image(np.zeros((4, 32, 32, 3), np.uint8), name="colour", rgb=True)
    assert not widget.run()
    assert "'colour' is RGB: choose a channel" in errors["error"][-1]
    assert widget.status.value == errors["error"][-1]
    viewer.add_image(np.zeros((4, 32, 32), np.uint8), name="stack", scale=(3, 1.5, 1.5))
    assert widget.image.value.name == "stack"  # follows the selected layer
    assert widget.anisotropy.value == 2.0
    widget.shutdown()


def test_library_errors_are_reported(make_napari_viewer, qtbot, errors, tiny_onnx_model):
    from nucseg_rt.models import registry

    record = registry.add_model(tiny_onnx_model, name="tiny")
    record.files.path.write_bytes(b"not the registered model")
    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((4, 32, 32), np.uint8), name="stack")
    widget = _dock(viewer)
    widget.model.value = "tiny"
    _run(qtbot, widget, expect="error")  # raised in the worker, reported in the viewer
    assert "tiny" in errors["error"][-1] and "sha256" in errors["error"][-1]
    assert "stack masks" not in viewer.layers and widget.run_button.enabled
    widget.shutdown()


def test_no_model_is_reported(make_napari_viewer, errors, monkeypatch):
    from nucseg_rt.napari import _logic

    monkeypatch.setattr(_widget, "model_choices", lambda: ([], None, _logic.NO_MODEL_MESSAGE))
    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((4, 32, 32), np.uint8), name="stack")
    widget = SegmentWidget(viewer)
    viewer.window.add_dock_widget(widget)
    assert widget.model.value is None
    assert not widget.run()
    assert errors["error"] == [_logic.NO_MODEL_MESSAGE]
    widget.shutdown()


def _ticker(ticks, while_):
    """A 50 ms timer noting when the event loop let it tick, as long as ``while_()``."""
    from qtpy.QtCore import QTimer

    timer = QTimer()
    timer.setInterval(50)
    timer.timeout.connect(lambda: ticks.append(time.perf_counter()) if while_() else None)
    timer.start()
    return timer


def test_time_lapse_current_frame_then_all_frames(make_napari_viewer, qtbot, errors,
                                                  tiny_onnx_model):
    """A (T, Z, Y, X) layer: "current frame" segments the frame the viewer shows (and keeps its
    flows for a new threshold), "all frames" gives linked (T, Z, Y, X) labels, both equal to the
    library's runs."""
    from helpers import blob_timelapse
    from nucseg_rt import Segmenter
    from nucseg_rt.models import registry

    registry.add_model(tiny_onnx_model, name="tiny")
    movie = blob_timelapse(6, (12, 64, 72))  # both first axes > 4: a time-lapse
    viewer = make_napari_viewer()
    viewer.add_image(movie, name="movie", scale=(1.0, 2.0, 0.5, 0.5))
    widget = _dock(viewer)
    widget.model.value = "tiny"
    widget.diameter.value = 30.0
    assert widget.anisotropy.value == 4.0 and widget.frames.value == "current frame"
    viewer.dims.set_current_step(0, 3)
    _run(qtbot, widget)
    seg = Segmenter(tiny_onnx_model)
    masks = viewer.layers["movie masks"]
    assert masks.data.shape == (12, 64, 72)
    np.testing.assert_array_equal(masks.data,
                                  seg.segment(movie[3], anisotropy=4.0, diameter=30.0).masks)
    assert widget.cache.flows is not None and "4 nuclei" in widget.status.value

    widget.frames.value = "all frames"
    _run(qtbot, widget)
    masks = viewer.layers["movie masks"]
    assert masks.data.shape == (6, 12, 64, 72)
    np.testing.assert_allclose(masks.scale, (1.0, 2.0, 0.5, 0.5))
    want = np.stack([m for _, m in seg.segment_frames(movie, time_axis=0, link=True,
                                                      anisotropy=4.0, diameter=30.0)])
    np.testing.assert_array_equal(masks.data, want)
    assert want.max() == 4  # the four blobs keep their labels through the frames
    assert "tracked in 6 frames" in widget.status.value
    assert not errors["error"], errors
    widget.shutdown()
