"""The "Segment nuclei (3D)" dock widget: the form, the thread workers and the output layers.

Everything that is not GUI lives in :mod:`nucseg_rt.napari._logic`; this module only wires it
to napari. Run computes flows and masks in a napari thread worker (the viewer stays
responsive; Cancel sets the event the library checks between batches of tiles). The flows are
kept, so changing the cell-probability threshold, the minimum size, the dynamics or (in stitch
mode) the stitch threshold recomputes only the masks, also in a worker.
"""

from __future__ import annotations

import threading
import weakref
from typing import TYPE_CHECKING

# onnx (which nucseg-rt uses to read model metadata) holds the GIL for ~2 s while its module
# initialises: imported here, when the widget is docked, not in the first run's worker thread,
# where it would freeze the viewer.
import onnx  # noqa: F401
from magicgui.widgets import (CheckBox, ComboBox, Container, FloatSpinBox, Label, ProgressBar,
                              PushButton, SpinBox)
from napari.layers import Image, Labels
from napari.qt.threading import WorkerBase, create_worker
from napari.utils.notifications import show_error, show_warning
from qtpy.QtCore import QTimer, Signal
from qtpy.QtWidgets import QVBoxLayout, QWidget
from superqt import QCollapsible

from nucseg_rt.errors import InvalidInputError, ModelNotFoundError, NucsegError
from nucseg_rt.napari._logic import (FlowParams, ProgressState, RunOutcome, SegmenterCache,
                                     backend_choices, default_diameter, default_threshold, describe_error,
                                     flows_to_rgb, is_cancelled, layer_input, model_choices,
                                     output_names, precision_choices, run_flows, run_masks)
from nucseg_rt.params import MaskParams

if TYPE_CHECKING:
    import napari

TITLE = "Segment nuclei (3D)"
_FRAME_CHOICES = ("current frame", "all frames")
_NO_CHANNEL = -1
_CHANNELS = [("not chosen (one-channel image)", _NO_CHANNEL), ("gray (mean of the channels)", 0),
             ("channel 1", 1), ("channel 2", 2), ("channel 3", 3)]
_POLL_MS = 100


class SegmentWidget(QWidget):
    """Dock widget: segment the nuclei of the chosen 3D Image layer into a Labels layer.

    Signals
    -------
    run_finished(str)
        After Run: ``"done"``, ``"cancelled"`` or ``"error"``.
    masks_updated()
        After masks were recomputed from the cached flows.
    """

    run_finished = Signal(str)
    masks_updated = Signal()

    def __init__(self, napari_viewer: napari.viewer.Viewer, parent: QWidget | None = None):
        super().__init__(parent)
        self.setWindowTitle(TITLE)
        self.viewer = napari_viewer
        self.cache = None  # FlowCache of the last run
        self.last_outcome: RunOutcome | None = None  # of the last run or re-threshold
        self._segmenters = SegmenterCache()
        self._progress = ProgressState()
        self._cancel: threading.Event | None = None
        self._worker = None
        self._mask_worker = None
        self._mask_pending = False
        self._result = ""
        self._outputs: weakref.WeakSet = weakref.WeakSet()  # image layers added by runs
        self._adding = False
        self._build()
        self._connect()
        self._on_active_layer()
        self._prefill_anisotropy()
        self._cancel_events: list[threading.Event] = []
        segmenters, cancel_events = self._segmenters, self._cancel_events
        self.destroyed.connect(lambda *_: _release(segmenters, cancel_events))

    # --- building ------------------------------------------------------------------------------
    def _build(self) -> None:
        names, default, self._model_error = model_choices()
        self.image = ComboBox(label="image", choices=self._image_choices,
                              tooltip="the 3D Image layer to segment")
        self.model = ComboBox(label="model", choices=names,
                              tooltip="a model from the nucseg-rt registry",
                              **({"value": default} if default else {}))
        self.precision = ComboBox(label="precision", choices=precision_choices(default),
                                  value="fp32", tooltip="int8 is faster on the CPU")
        self.backend = ComboBox(label="backend", choices=backend_choices(), value="auto",
                                tooltip="network engine: auto (OpenVINO bf16 where the CPU has "
                                        "it and the model's masks agree with fp32, else "
                                        "onnxruntime fp32; the status says what ran), "
                                        "onnxruntime (exact fp32), or openvino (CPU; offers "
                                        "bf16)")
        self.anisotropy = FloatSpinBox(label="anisotropy", min=0.01, max=1000.0, step=0.1,
                                       value=1.0, tooltip="Z step / XY pixel size; filled in "
                                                          "from the layer's scale")
        self.diameter = FloatSpinBox(label="diameter (px)", min=1.0, max=5000.0, step=1.0,
                                     value=default_diameter(default),
                                     tooltip="typical nucleus diameter in XY pixels")
        self.auto_diameter = CheckBox(text="estimate the diameter",
                                      tooltip="let the model estimate the diameter")
        self.frames = ComboBox(label="time-lapse", choices=list(_FRAME_CHOICES),
                               value="current frame",
                               tooltip="a 4D layer without a channel axis (size <= 4) is a "
                                       "time-lapse (T, Z, Y, X): segment the frame shown or all "
                                       "frames (labels linked from frame to frame)")
        self.add_cellprob = CheckBox(text="add cell probability layer")
        self.add_flows = CheckBox(text="add flows layer")
        self.channel = ComboBox(label="channel", choices=_CHANNELS, value=_NO_CHANNEL,
                                tooltip="needed for RGB and multi-channel layers")
        self.cellprob_threshold = FloatSpinBox(label="cellprob threshold", min=-12.0, max=12.0,
                                               step=0.5, value=default_threshold(default),
                                               tooltip="the model's default; lower it to find "
                                                       "more and larger nuclei")
        self.size_aware = CheckBox(text="min size from the nucleus size", value=True,
                                   tooltip="remove masks under a share of the expected nucleus "
                                           "volume (diameter and anisotropy)")
        self.min_size = SpinBox(label="min size (voxels)", min=-1, max=10**8, value=15,
                                enabled=False)
        self.dynamics = ComboBox(label="dynamics", choices=["stable", "cellpose"], value="stable")
        self.stitch_threshold = FloatSpinBox(label="stitch threshold", min=0.0, max=0.99,
                                             step=0.05, value=0.0,
                                             tooltip="0: 3D flows; > 0: planes segmented in 2D "
                                                     "and stitched in Z by this IoU")
        self.run_button = PushButton(text="Run")
        self.cancel_button = PushButton(text="Cancel", enabled=False)
        self.progress_bar = ProgressBar(min=0, max=1, value=0, label="progress")
        self.status = Label(value="")
        self.status.native.setWordWrap(True)  # long messages wrap instead of widening the dock
        main = Container(widgets=[self.image, self.model, self.precision, self.backend,
                                  self.anisotropy,
                                  self.diameter, self.auto_diameter, self.frames,
                                  self.add_cellprob,
                                  self.add_flows])
        advanced = Container(widgets=[self.channel, self.cellprob_threshold, self.size_aware,
                                      self.min_size,
                                      self.dynamics, self.stitch_threshold])
        buttons = Container(widgets=[self.run_button, self.cancel_button], layout="horizontal",
                            labels=False)
        bottom = Container(widgets=[buttons, self.progress_bar, self.status], labels=False)
        self.advanced = QCollapsible("advanced", self)
        self.advanced.addWidget(advanced.native)
        layout = QVBoxLayout(self)
        for part in (main.native, self.advanced, bottom.native):
            layout.addWidget(part)
        layout.addStretch(1)
        self._containers = (main, advanced, buttons, bottom)
        self._timer = QTimer(self)
        self._timer.setInterval(_POLL_MS)
        self._timer.timeout.connect(self._show_progress)

    def _connect(self) -> None:
        layers = self.viewer.layers
        layers.events.inserted.connect(self._on_layers_changed)
        layers.events.removed.connect(self._on_layers_changed)
        layers.selection.events.active.connect(self._on_active_layer)
        self.image.changed.connect(self._prefill_anisotropy)
        self.model.changed.connect(self._on_model_changed)
        self.backend.changed.connect(self._on_backend_changed)
        self.auto_diameter.changed.connect(lambda on: setattr(self.diameter, "enabled", not on))
        self.size_aware.changed.connect(lambda on: setattr(self.min_size, "enabled", not on))
        for w in (self.cellprob_threshold, self.size_aware, self.min_size, self.dynamics,
                  self.stitch_threshold):
            w.changed.connect(self._on_mask_params_changed)
        self.run_button.clicked.connect(self.run)
        self.cancel_button.clicked.connect(self.cancel)

    # --- form ----------------------------------------------------------------------------------
    def _image_choices(self, _widget=None) -> list[tuple[str, Image]]:
        return [(layer.name, layer) for layer in self.viewer.layers
                if isinstance(layer, Image) and layer not in self._outputs]

    def _on_layers_changed(self, event=None) -> None:
        layer = getattr(event, "value", None)
        if layer is not None and event.type == "inserted":
            layer.events.name.connect(lambda _e: self.image.reset_choices())
        self.image.reset_choices()

    def _on_active_layer(self, event=None) -> None:
        if self._adding:
            return
        active = self.viewer.layers.selection.active
        if isinstance(active, Image) and active not in self._outputs:
            self.image.reset_choices()
            self.image.value = active

    def _prefill_anisotropy(self, *_):
        layer = self.image.value
        if layer is None:
            return
        try:
            inp = layer_input(layer.name, _layer_data(layer), rgb=layer.rgb, scale=layer.scale,
                              translate=layer.translate, channel=0)
            self.anisotropy.value = round(inp.anisotropy, 4)
        except NucsegError:
            pass  # a 2D layer: Run says why

    def _on_model_changed(self, model) -> None:
        self.precision.choices = precision_choices(model, self.backend.value)
        self.diameter.value = default_diameter(model, self.diameter.value)
        self.cellprob_threshold.value = default_threshold(model)

    def _on_backend_changed(self, backend) -> None:
        self.precision.choices = precision_choices(self.model.value, backend)

    def _mask_params(self) -> MaskParams:
        return MaskParams(cellprob_threshold=float(self.cellprob_threshold.value),
                          min_size=None if self.size_aware.value else int(self.min_size.value),
                          method=self.dynamics.value,
                          stitch_threshold=float(self.stitch_threshold.value))

    def _collect(self):
        layer = self.image.value
        if layer is None:
            raise InvalidInputError("no Image layer to segment: open a 3D volume, or File > Open "
                                    "Sample > nucseg-rt")
        if not self.model.value:
            raise ModelNotFoundError(self._model_error or "no model chosen")
        channel = None if self.channel.value == _NO_CHANNEL else self.channel.value
        inp = layer_input(layer.name, _layer_data(layer), rgb=layer.rgb, scale=layer.scale,
                          translate=layer.translate, channel=channel)
        mp = self._mask_params()
        fp = FlowParams(model=self.model.value, precision=self.precision.value,
                        backend=self.backend.value,
                        anisotropy=float(self.anisotropy.value),
                        diameter="auto" if self.auto_diameter.value else float(self.diameter.value),
                        stitch=mp.stitch)
        return inp, fp, mp

    # --- run -----------------------------------------------------------------------------------
    @property
    def busy(self) -> bool:
        """True while a run (network) is going on."""
        return self._worker is not None

    def run(self, *_) -> bool:
        """Start a run on the chosen layer; False, with a message in the viewer, if it cannot."""
        if self.busy:
            return False
        try:
            inp, fp, mp = self._collect()
        except NucsegError as exc:
            self._say_error(describe_error(exc))
            return False
        for note in inp.notes:
            show_warning(note)
        self._cancel = threading.Event()
        self._cancel_events.append(self._cancel)
        self._progress.reset()
        frame = None if inp.time is None else "all" if self.frames.value == "all frames" \
            else int(self.viewer.dims.current_step[0])
        worker = create_worker(run_flows, self._segmenters, inp, fp, mp, progress=self._progress,
                               cancel=self._cancel, frame=frame, _start_thread=False,
                               _ignore_errors=True)
        worker.returned.connect(self._on_run_returned)
        worker.errored.connect(self._on_run_errored)
        worker.finished.connect(self._on_run_finished)
        self._worker, self._result = worker, "error"
        self._set_running(True)
        self.status.value = f"segmenting {inp.name!r}..."
        worker.start()
        return True

    def cancel(self, *_) -> None:
        """Ask the running segmentation to stop; nothing is added to the viewer."""
        if self._cancel is not None:
            self._cancel.set()
            self.cancel_button.enabled = False
            self.status.value = "cancelling..."

    def _on_run_returned(self, outcome: RunOutcome) -> None:
        self.cache, self.last_outcome, self._result = outcome.cache, outcome, "done"
        self._show_outputs(outcome, with_flows=True)
        flows, secs = outcome.cache.flows, outcome.seconds
        text = (f"{outcome.n_labels} nuclei in {outcome.cache.image!r} (network {secs['flows']:.1f}"
                f" s, masks {secs['masks']:.1f} s)")
        if flows is None:  # all the frames of a time-lapse: no flows kept
            text = (f"{outcome.n_labels} nuclei tracked in {outcome.masks.shape[0]} frames of "
                    f"{outcome.cache.image!r} ({secs['masks']:.1f} s)")
        else:
            used = outcome.mask_params.resolved(flows.mask_defaults, diameter=flows.diameter,
                                                anisotropy=flows.anisotropy,
                                                n_planes=flows.shape[0])
            text += f"; min size {used.min_size} voxels"
            if outcome.cache.flow_params.diameter == "auto":
                self.diameter.value = round(float(flows.diameter), 1)
                text += f"; estimated diameter {float(flows.diameter):.1f} px"
        ran = outcome.cache.segmenter.engine.backend  # what the network runs on, and why
        run = flows.run if flows is not None and flows.run and flows.run.engine else None
        # the pass's own engine when known ("auto" runs small passes on onnxruntime)
        text += "; " + (run.engine if run else f"{ran.backend} {ran.precision}")
        self.status.value = text
        self.status.tooltip = run.network if run else str(ran)

    def _on_run_errored(self, exc: BaseException) -> None:
        if is_cancelled(exc):
            self._result = "cancelled"
            self.status.value = "cancelled: nothing was added"
        else:
            self._say_error(describe_error(exc))

    def _on_run_finished(self) -> None:
        self._worker = self._cancel = None
        result, self._result = self._result, ""
        self._set_running(False, done=result == "done")
        self.run_finished.emit(result)
        if result == "done" and self._mask_params() != self._shown_mask_params:
            self._on_mask_params_changed()  # changed while the network ran

    def _set_running(self, running: bool, done: bool = False) -> None:
        self.run_button.enabled = not running
        self.cancel_button.enabled = running
        self.progress_bar.max, self.progress_bar.value = 1, int(done)
        if running:
            self._timer.start()
        else:
            self._timer.stop()

    def _show_progress(self) -> None:
        stage, done, total = self._progress.snapshot()
        if total:
            self.progress_bar.max = total
            self.progress_bar.value = min(done, total)
        if not (self._cancel is not None and self._cancel.is_set()):
            self.status.value = f"segmenting: {self._progress.text()}"

    # --- masks from cached flows ---------------------------------------------------------------
    _shown_mask_params: MaskParams | None = None

    def _on_mask_params_changed(self, *_) -> None:
        if self.busy or self.cache is None:
            return
        try:
            mp = self._mask_params()
        except NucsegError as exc:
            self.status.value = str(exc)
            return
        if not self.cache.accepts(mp):
            self.status.value = ("the stitch threshold switches between 3D and stitched flows: "
                                 "press Run")
            return
        if self._mask_worker is not None:
            self._mask_pending = True
            return
        worker = create_worker(run_masks, self.cache, mp, _start_thread=False,
                               _ignore_errors=True)
        worker.returned.connect(self._on_masks_returned)
        worker.errored.connect(lambda exc: self._say_error(describe_error(exc)))
        worker.finished.connect(self._on_masks_finished)
        self._mask_worker = worker
        self.status.value = "recomputing the masks from the cached flows..."
        worker.start()

    def _on_masks_returned(self, outcome: RunOutcome) -> None:
        if outcome.cache is not self.cache:
            return  # a newer run replaced these flows
        self.last_outcome = outcome
        self._show_outputs(outcome, with_flows=False)
        self.status.value = (f"{outcome.n_labels} nuclei in {outcome.cache.image!r} (masks from "
                             f"cached flows in {outcome.seconds['masks']:.2f} s)")

    def _on_masks_finished(self) -> None:
        self._mask_worker = None
        if self._mask_pending:
            self._mask_pending = False
            self._on_mask_params_changed()
            if self._mask_worker is not None:
                return
        self.masks_updated.emit()

    # --- output layers -------------------------------------------------------------------------
    def _show_outputs(self, outcome: RunOutcome, *, with_flows: bool) -> None:
        cache = outcome.cache
        names = output_names(cache.image)
        geometry = dict(scale=cache.scale, translate=cache.translate)
        self._put_layer(names["masks"], outcome.masks, "labels", **geometry)
        self._shown_mask_params = outcome.mask_params
        with_flows = with_flows and cache.flows is not None
        if with_flows and self.add_cellprob.value:
            self._put_layer(names["cellprob"], cache.flows.cellprob, "image", colormap="magma",
                            blending="additive", visible=False, **geometry)
        if with_flows and self.add_flows.value:
            self._put_layer(names["flows"], flows_to_rgb(cache.flows.flows), "image", rgb=True,
                            visible=False, **geometry)

    def _put_layer(self, name, data, kind, *, scale, translate, **kwargs):
        """Replace the data of our layer ``name`` (same kind), else add a new layer."""
        layers = self.viewer.layers
        if name in layers:
            layer = layers[name]
            same = (isinstance(layer, Labels) if kind == "labels"
                    else isinstance(layer, Image) and layer.rgb == kwargs.get("rgb", False))
            if same:
                layer.data = data
                layer.scale, layer.translate = scale, translate
                return layer
            layers.remove(layer)
        add = self.viewer.add_labels if kind == "labels" else self.viewer.add_image
        self._adding = True  # the new layer becomes active: not an input to follow
        try:
            layer = add(data, name=name, scale=scale, translate=translate, **kwargs)
        finally:
            self._adding = False
        if kind == "image":
            self._outputs.add(layer)
            self.image.reset_choices()
        return layer

    def _say_error(self, message: str) -> None:
        self.status.value = message
        show_error(message)

    # --- teardown ------------------------------------------------------------------------------
    def shutdown(self, timeout_ms: int = 10_000) -> None:
        """Cancel a running segmentation, wait for the workers and release the model."""
        if self._cancel is not None:
            self._cancel.set()
        running = [w for w in (self._worker, self._mask_worker) if w is not None]
        for worker in running:
            worker.quit()
        if running:
            WorkerBase.await_workers(msecs=timeout_ms)
        self._timer.stop()
        self._segmenters.close()

    def closeEvent(self, event) -> None:  # noqa: N802 (Qt's name)
        self.shutdown()
        super().closeEvent(event)


def _layer_data(layer: Image):
    """The full-resolution data of an Image layer (level 0 of a multiscale layer)."""
    return layer.data[0] if layer.multiscale else layer.data


def _release(segmenters: SegmenterCache, cancel_events: list) -> None:
    for event in cancel_events:
        event.set()
    segmenters.close()
