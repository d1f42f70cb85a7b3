"""What the napari widget does, apart from the GUI: testable without napari, Qt or a display.

The widget turns a napari Image layer into a :class:`LayerInput` (with the library's
:class:`~nucseg_rt.params.InputSpec`), its form into :class:`FlowParams` (the expensive stage: the
network) and the library's :class:`~nucseg_rt.params.MaskParams` (the cheap stage: masks from
flows), and runs :func:`run_flows` / :func:`run_masks` in a napari thread worker.
The flows of the last run are kept (:class:`FlowCache`) so that a new threshold, minimum size or
dynamics recomputes only the masks.
"""

from __future__ import annotations

import dataclasses
import math
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from nucseg_rt import errors
from nucseg_rt.errors import (Cancelled, InvalidInputError, ModelNotFoundError, NucsegError,
                              check_cancel)
from nucseg_rt.params import (BACKENDS, PRECISIONS, InputSpec, MaskParams, validate_choice,
                              validate_diameter, validate_positive)

__all__ = ["LayerInput", "FlowParams", "FlowCache", "RunOutcome", "ProgressState",
           "SegmenterCache", "layer_input", "anisotropy_from_scale", "output_names",
           "model_choices", "precision_choices", "backend_choices", "default_diameter",
           "default_threshold", "run_flows", "run_frames", "run_masks",
           "flows_to_rgb", "describe_error", "is_cancelled", "NO_MODEL_MESSAGE"]

#: channel choices of the widget: None = not chosen (fine for one-channel layers), 0 = gray
#: (mean of the channels), 1..3 = that channel (Cellpose's ``channels=[chan, 0]``)
CHANNELS = (None, 0, 1, 2, 3)
NO_MODEL_MESSAGE = ("no model to run: the registry lists none (the bundled 'nuclei_3d' is not in "
                    "this installation); add one with `nucseg-rt add-model FILE --name NAME`")
_SQUARE_TOLERANCE = 1e-3
#: A 4D layer's axis of at most this size (among the first two) holds channels; a 4D layer with
#: none is a time-lapse (T, Z, Y, X): napari layers carry no axis names
MAX_CHANNELS = 4


# --- the input layer -------------------------------------------------------------------------


@dataclass(frozen=True)
class LayerInput:
    """One napari Image layer as the Segmenter takes it.

    Attributes
    ----------
    name : str
        The layer's name (outputs are named after it, see :func:`output_names`).
    data : array-like
        The layer's data, unchanged: (Z, Y, X), (Z, Y, X, C) for RGB (alpha dropped), or a 4D
        array with a channel axis. Read into memory by the worker, not the GUI thread.
    spec : InputSpec
        Z and channel axes of ``data`` and the channel to segment (``chan`` 0 = the only channel
        or the mean of all, 1..3 = that channel), for :meth:`nucseg_rt.Segmenter.predict_flows`.
    scale, translate : tuple of 3 float
        The layer's (Z, Y, X) scale and translate, for the output layers.
    notes : tuple of str
        Warnings for the user (e.g. a channel choice ignored, non-square pixels).
    time : (float, float) or None
        A time-lapse (T, Z, Y, X) layer (``spec.time_axis`` 0): the time axis' scale and
        translate; None for one volume.
    """

    name: str
    data: Any
    spec: InputSpec
    scale: tuple[float, float, float]
    translate: tuple[float, float, float]
    notes: tuple[str, ...] = ()
    time: tuple[float, float] | None = None

    @property
    def anisotropy(self) -> float:
        """Z step over X pixel size, from the layer's scale."""
        return anisotropy_from_scale(self.scale)

    @property
    def n_frames(self) -> int | None:
        """Time points of a time-lapse layer, None for one volume."""
        return None if self.time is None else int(np.shape(self.data)[0])

    def frame(self, t: int) -> LayerInput:
        """Time point ``t`` of a time-lapse layer as one volume (its data read lazily)."""
        if self.time is None:
            raise InvalidInputError(f"layer {self.name!r} is not a time-lapse")
        if not 0 <= t < self.n_frames:
            raise InvalidInputError(f"frame {t} is outside the {self.n_frames} frames of layer "
                                    f"{self.name!r}")
        spec = dataclasses.replace(self.spec, time_axis=None, z_axis=0)
        return LayerInput(self.name, self.data[t], spec, self.scale, self.translate, self.notes)


def anisotropy_from_scale(scale_zyx) -> float:
    """``scale[z] / scale[x]`` of a (Z, Y, X) scale, e.g. (2.0, 0.5, 0.5) -> 4.0."""
    z, _, x = (float(s) for s in scale_zyx)
    if not (math.isfinite(z) and math.isfinite(x)) or z <= 0 or x <= 0:
        raise InvalidInputError(f"the layer's scale must be finite and > 0 in Z and X, "
                                f"got {tuple(scale_zyx)}")
    return z / x


def _square_pixel_note(name: str, scale_zyx) -> tuple[str, ...]:
    _, y, x = (float(s) for s in scale_zyx)
    if x > 0 and abs(y / x - 1) > _SQUARE_TOLERANCE:
        return (f"layer {name!r} has non-square pixels (Y {y:g}, X {x:g}); nucseg-rt assumes "
                f"square pixels and takes the anisotropy from X",)
    return ()


def _calibration_note(name: str, scale_zyx) -> tuple[str, ...]:
    """A layer whose Z and X scale are both napari's default 1 carries no calibration."""
    z, _, x = (float(s) for s in scale_zyx)
    if z == 1.0 and x == 1.0:
        return (f"layer {name!r} has no scale (Z and X both 1): anisotropy 1 assumed; set the "
                f"anisotropy (Z step / pixel size) in the widget or the layer's scale",)
    return ()


def _geometry_notes(name: str, scale_zyx) -> tuple[str, ...]:
    return _calibration_note(name, scale_zyx) + _square_pixel_note(name, scale_zyx)


def layer_input(name: str, data, *, rgb: bool, scale, translate,
                channel: int | None = None) -> LayerInput:
    """Check a napari Image layer and say how to segment it.

    Parameters
    ----------
    name : str
        Layer name, used in messages.
    data : array-like
        ``layer.data`` (the first level of a multiscale layer).
    rgb : bool
        ``layer.rgb``: the last axis holds colour channels (not part of ``scale``).
    scale, translate : sequence of float
        ``layer.scale`` and ``layer.translate``, one entry per layer dimension.
    channel : {None, 0, 1, 2, 3}
        The widget's channel choice: None = not chosen, 0 = gray (mean), 1..3 = that channel.

    Raises
    ------
    InvalidInputError
        A 2D layer, more than 4 dimensions, a multi-channel or RGB layer without a channel
        choice, a channel beyond the layer's channels, or a 4D layer whose first two axes are
        both channel-like (size <= 4). A 4D layer with none is a time-lapse (T, Z, Y, X).
    """
    if channel not in CHANNELS:
        raise InvalidInputError(f"`channel` must be one of {CHANNELS}, got {channel!r}")
    shape = tuple(int(s) for s in np.shape(data))
    ndim = len(shape) - (1 if rgb else 0)
    if ndim < 3:
        raise InvalidInputError(f"layer {name!r} is 2D (shape {shape}): 3D segmentation needs a "
                                f"Z stack; open a 3D volume or stack the planes")
    if ndim > 4 or (rgb and ndim > 3):
        raise InvalidInputError(f"layer {name!r} has {ndim} dimensions (shape {shape}); segment "
                                f"one 3D volume at a time (e.g. pick one time point)")
    scale, translate = tuple(map(float, scale)), tuple(map(float, translate))
    if rgb:
        nc = shape[-1]
        if channel is None:
            raise InvalidInputError(f"layer {name!r} is RGB: choose a channel under 'advanced' "
                                    f"(gray = mean of the channels, or channel 1-3)")
        if nc == 4:  # RGBA: the alpha channel is not image content
            data, nc = data[..., :3], 3
        caxis, zaxis, keep = len(shape) - 1, 0, (0, 1, 2)
    elif ndim == 3:
        notes = ()
        if channel not in (None, 0, 1):
            notes = (f"layer {name!r} has one channel; channel {channel} ignored",)
        zyx = scale[-3:], translate[-3:]
        return LayerInput(name, data, InputSpec(z_axis=0), *zyx,
                          notes=notes + _geometry_notes(name, zyx[0]))
    elif all(s > MAX_CHANNELS for s in shape[:2]):  # no channel-like axis: (T, Z, Y, X)
        notes = (f"layer {name!r} has one channel; channel {channel} ignored",) \
            if channel not in (None, 0, 1) else ()
        zyx = scale[-3:], translate[-3:]
        return LayerInput(name, data, InputSpec(time_axis=0, z_axis=1), *zyx,
                          notes=notes + _geometry_notes(name, zyx[0]),
                          time=(scale[0], translate[0]))
    else:
        caxis = _channel_axis_4d(name, shape)
        zaxis, nc = 1 - caxis, shape[caxis]
        keep = (zaxis, 2, 3)
        if channel is None:
            raise InvalidInputError(f"layer {name!r} has {nc} channels (axis {caxis} of shape "
                                    f"{shape}): choose a channel under 'advanced'")
    if channel > nc:
        raise InvalidInputError(f"channel {channel} chosen but layer {name!r} has {nc} channels")
    zyx_scale = tuple(scale[i] for i in keep)
    zyx_translate = tuple(translate[i] for i in keep)
    return LayerInput(name, data, InputSpec(channel_axis=caxis, z_axis=zaxis, chan=channel),
                      zyx_scale, zyx_translate,
                      notes=_geometry_notes(name, zyx_scale))


def _channel_axis_4d(name: str, shape: tuple[int, ...]) -> int:
    """The channel axis of a 4D (C, Z, Y, X) or (Z, C, Y, X) layer: the one of size <= 4."""
    small = [a for a in (0, 1) if shape[a] <= MAX_CHANNELS]
    if len(small) != 1:
        raise InvalidInputError(
            f"layer {name!r} has 4 dimensions (shape {shape}) and no single channel axis (size "
            f"<= 4) among the first two; split the channels into layers (right-click > Split "
            f"Stack) or pick one time point")
    return small[0]


def output_names(image_name: str) -> dict[str, str]:
    """Names of the layers a run adds: ``{"masks": "<image> masks", "cellprob": ..., "flows": ...}``."""
    return {kind: f"{image_name} {kind}" for kind in ("masks", "cellprob", "flows")}


# --- the form's parameters -------------------------------------------------------------------


@dataclass(frozen=True)
class FlowParams:
    """What the network stage depends on; cached flows serve new mask settings only while the
    mode (3D or stitch) is the same.

    ``diameter``: XY pixels, ``"auto"`` (estimated by the model) or None (the model's training
    diameter). ``stitch``: YX planes only, for masks stitched in Z (Cellpose's
    ``stitch_threshold`` mode); ``anisotropy`` does not apply then. The mask settings are the
    library's :class:`nucseg_rt.params.MaskParams`.
    """

    model: str | None
    precision: str = "fp32"
    anisotropy: float = 1.0
    diameter: float | Literal["auto"] | None = None
    stitch: bool = False
    backend: str = "auto"

    def __post_init__(self):
        if not self.model:
            raise ModelNotFoundError(NO_MODEL_MESSAGE)
        if self.precision not in PRECISIONS:
            raise InvalidInputError(f"`precision` must be one of {', '.join(PRECISIONS)}, "
                                    f"got {self.precision!r}")
        validate_choice("backend", self.backend, BACKENDS)
        object.__setattr__(self, "anisotropy", validate_positive("anisotropy", self.anisotropy))
        object.__setattr__(self, "diameter", validate_diameter(self.diameter))

    def predict_kwargs(self, inp: LayerInput) -> dict:
        """Keywords of :meth:`nucseg_rt.Segmenter.predict_flows` for ``inp``."""
        return dict(anisotropy=self.anisotropy, diameter=self.diameter, inputs=inp.spec,
                    mode="stitch" if self.stitch else "3d")


# --- models --------------------------------------------------------------------------------


def model_choices() -> tuple[list[str], str | None, str | None]:
    """Registered model names, the default (the bundled model if present) and an error message.

    The message is None unless the registry cannot be read or lists no model.
    """
    from nucseg_rt.models import registry

    try:
        names = [r.name for r in registry.list_models()]
    except NucsegError as exc:
        return [], None, str(exc)
    if not names:
        return [], None, NO_MODEL_MESSAGE
    default = registry.BUNDLED_DEFAULT if registry.BUNDLED_DEFAULT in names else names[0]
    return names, default, None


def precision_choices(model: str | None, backend: str = "auto") -> list[str]:
    """Precisions the model offers: fp32, then its registered variants (int8, fp16), then bf16
    with ``backend`` "openvino" (the fp32 file in bf16; refused at Run on a CPU without it)."""
    reference, *variants_offered = PRECISIONS
    bf16 = ["bf16"] if backend == "openvino" else []
    if not model:
        return [reference, *bf16]
    from nucseg_rt.models import registry

    try:
        variants = registry.model_info(model).variants
    except NucsegError:
        return [reference, *bf16]
    return [reference] + [p for p in variants_offered if p in variants] + bf16


def backend_choices() -> list[str]:
    """The network engines (``--backend``): auto, onnxruntime, openvino."""
    return list(BACKENDS)


def _registered_metadata(model: str | None) -> dict[str, str]:
    """The metadata of registered ``model``; empty when none is chosen or it is not found."""
    if not model:
        return {}
    from nucseg_rt.models import registry

    try:
        return registry.model_info(model).metadata
    except NucsegError:
        return {}


def default_diameter(model: str | None, fallback: float = 30.0) -> float:
    """The model's training diameter (``diam_labels`` metadata) in pixels, else ``fallback``."""
    try:
        return float(_registered_metadata(model).get("diam_labels", fallback))
    except ValueError:
        return fallback


def default_threshold(model: str | None) -> float:
    """The model's default cell-probability threshold (its metadata; Cellpose's 0 without)."""
    from nucseg_rt.params import MaskDefaults

    try:
        return MaskDefaults.from_metadata(_registered_metadata(model)).cellprob_threshold
    except ValueError:
        return MaskDefaults().cellprob_threshold


class SegmenterCache:
    """Keeps one :class:`nucseg_rt.Segmenter` warm; another model, precision or backend
    replaces it.

    Owned by one widget and released by :meth:`close`. ``factory(model, precision, backend)``
    makes a Segmenter (default: ``Segmenter(model, device="auto", precision=precision,
    backend=backend)``).
    """

    def __init__(self, factory=None):
        self._factory = factory or _make_segmenter
        self._lock = threading.Lock()
        self._key: tuple[str, str, str] | None = None
        self._seg = None

    def get(self, model: str, precision: str, backend: str = "auto"):
        with self._lock:
            if self._key != (model, precision, backend):
                self._release()
                self._seg = self._factory(model, precision, backend)
                self._key = (model, precision, backend)
            return self._seg

    def close(self) -> None:
        with self._lock:
            self._release()

    def _release(self) -> None:
        close = getattr(self._seg, "close", None)
        if close is not None:
            close()
        self._seg, self._key = None, None


def _make_segmenter(model: str, precision: str, backend: str = "auto"):
    from nucseg_rt import Segmenter

    return Segmenter(model, device="auto", precision=precision, backend=backend)


# --- running -------------------------------------------------------------------------------


class ProgressState:
    """The last ``progress(stage, done, total)`` call, written by the worker, read by the GUI.

    Callable as the library's ``progress=`` callback; :meth:`snapshot` is safe from any thread.
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._state = ("", 0, 0)

    def __call__(self, stage: str, done: int, total: int) -> None:
        with self._lock:
            self._state = (str(stage), int(done), int(total))

    def reset(self) -> None:
        self("", 0, 0)

    def snapshot(self) -> tuple[str, int, int]:
        with self._lock:
            return self._state

    def text(self) -> str:
        stage, done, total = self.snapshot()
        return f"{stage}: {done}/{total}" if total else (stage or "starting")


@dataclass
class FlowCache:
    """Flows of the last run and everything needed to recompute masks from them."""

    image: str
    segmenter: Any
    flow_params: FlowParams
    flows: Any
    scale: tuple[float, float, float]
    translate: tuple[float, float, float]

    def accepts(self, mask_params: MaskParams) -> bool:
        """True when ``mask_params`` can be applied to these flows (same 3D/stitch mode; no
        flows are kept for all the frames of a time-lapse)."""
        return self.flows is not None and mask_params.stitch == (self.flows.mode == "stitch")


@dataclass
class RunOutcome:
    """What a run gives the widget: the masks, the flows to cache and the seconds taken."""

    masks: np.ndarray
    cache: FlowCache
    mask_params: MaskParams
    seconds: dict = field(default_factory=dict)

    @property
    def n_labels(self) -> int:
        return int(self.masks.max()) if self.masks.size else 0


def run_flows(segmenters: SegmenterCache, inp: LayerInput, flow_params: FlowParams,
              mask_params: MaskParams, *, progress=None,
              cancel: threading.Event | None = None,
              frame: int | Literal["all"] | None = None) -> RunOutcome:
    """The worker body of Run: load the model, the network, then masks. Raises Cancelled.

    A time-lapse layer needs ``frame``: a frame number (that volume, its flows kept for a new
    threshold) or "all" (:func:`run_frames`).
    """
    if mask_params.stitch != flow_params.stitch:
        raise InvalidInputError("`stitch_threshold` > 0 needs FlowParams(stitch=True) and 0 needs "
                                "stitch=False")
    if inp.time is not None:
        if frame == "all":
            return run_frames(segmenters, inp, flow_params, mask_params, progress=progress,
                              cancel=cancel)
        if frame is None:
            raise InvalidInputError(f"layer {inp.name!r} is a time-lapse: choose the current "
                                    "frame or all frames")
        inp = inp.frame(int(frame))
    t0 = time.perf_counter()
    seg = segmenters.get(flow_params.model, flow_params.precision, flow_params.backend)
    t1 = time.perf_counter()
    vol = np.asarray(inp.data)
    flows = seg.predict_flows(vol, progress=progress, cancel=cancel,
                              **flow_params.predict_kwargs(inp))
    t2 = time.perf_counter()
    check_cancel(cancel)
    if progress is not None:  # the network is done: the bar shows the mask step, not "ZY: n/n"
        progress("masks", 0, 1)
    masks = seg.masks_from_flows(flows, mask_params, cancel=cancel)
    if progress is not None:
        progress("masks", 1, 1)
    t3 = time.perf_counter()
    cache = FlowCache(inp.name, seg, flow_params, flows, inp.scale, inp.translate)
    return RunOutcome(masks, cache, mask_params,
                      {"model": t1 - t0, "flows": t2 - t1, "masks": t3 - t2})


def run_frames(segmenters: SegmenterCache, inp: LayerInput, flow_params: FlowParams,
               mask_params: MaskParams, *, progress=None,
               cancel: threading.Event | None = None) -> RunOutcome:
    """Every frame of a time-lapse layer, one at a time (the library's frame loop), labels
    linked from frame to frame: masks (T, Z, Y, X). No flows are kept (the cache's ``flows``
    is None: a new threshold needs Run); its scale and translate are (T, Z, Y, X)."""
    t0 = time.perf_counter()
    seg = segmenters.get(flow_params.model, flow_params.precision, flow_params.backend)
    t1 = time.perf_counter()
    frames = [m for _, m in seg.segment_frames(
        inp.data, time_axis=0, link=True, anisotropy=flow_params.anisotropy,
        diameter=flow_params.diameter, params=mask_params, inputs=inp.spec, progress=progress,
        cancel=cancel)]
    masks = np.stack(frames)
    (ts, tt) = inp.time
    cache = FlowCache(inp.name, seg, flow_params, None, (ts, *inp.scale), (tt, *inp.translate))
    return RunOutcome(masks, cache, mask_params, {"model": t1 - t0, "flows": 0.0,
                                                  "masks": time.perf_counter() - t1})


def run_masks(cache: FlowCache, mask_params: MaskParams) -> RunOutcome:
    """The worker body of a re-threshold: masks from the cached flows, no network."""
    if not cache.accepts(mask_params):
        raise InvalidInputError("the stitch threshold switches between 3D and stitched flows: "
                                "press Run to compute them")
    t0 = time.perf_counter()
    masks = cache.segmenter.masks_from_flows(cache.flows, mask_params)
    return RunOutcome(masks, cache, mask_params, {"masks": time.perf_counter() - t0})


# --- display and messages --------------------------------------------------------------------


def flows_to_rgb(flows: np.ndarray) -> np.ndarray:
    """Flows as colours: (3, Z, Y, X) Z/Y/X components -> (Z, Y, X, 3) uint8 R/G/B.

    Each component maps to 128 +- 127 with the largest absolute flow at the ends, so a
    direction has one colour and background (no flow) is mid-gray.
    """
    f = np.asarray(flows, dtype=np.float32)
    if f.ndim != 4 or f.shape[0] != 3:
        raise InvalidInputError(f"`flows` must have shape (3, Z, Y, X), got {f.shape}")
    peak = float(np.abs(f).max()) if f.size else 0.0
    scale = 127.0 / peak if peak > 0 else 0.0
    rgb = np.empty((*f.shape[1:], 3), np.uint8)
    for c in range(3):
        rgb[..., c] = np.clip(np.rint(128.0 + scale * f[c]), 0, 255)
    return rgb


def is_cancelled(exc: BaseException) -> bool:
    return isinstance(exc, Cancelled)


def describe_error(exc: BaseException) -> str:
    """One line for the viewer (:func:`nucseg_rt.errors.describe_error`; a bug is "segmentation
    failed: <type>: <message>")."""
    return errors.describe_error(exc, bug="segmentation failed: {kind}: {text}")
