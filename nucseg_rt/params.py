"""Typed, frozen, validated settings that travel between the layers.

One object per concern, each default written once and each check run once, in ``__post_init__``:

- :class:`Normalization`: how intensities are scaled before the network;
- :class:`InputSpec`: which axes and channels of the user's array hold the nuclei;
- :class:`MaskParams`: the mask step (flows to labels), re-runnable from cached flows.

The command line, the batch runner, blockwise workers and the resume fingerprint all build on
these instead of a loose dict of keyword arguments.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal, get_args

from nucseg_rt.errors import InvalidInputError

__all__ = ["Normalization", "InputSpec", "MaskParams", "MaskDefaults", "DEFAULT_NITER",
           "CELLPOSE_MIN_SIZE", "DEFAULT_MIN_SIZE_FRACTION", "size_aware_min_size", "validate_positive",
           "validate_whole",
           "validate_diameter", "validate_choice", "settings_or_keywords", "Precision",
           "PRECISIONS", "file_precision", "Backend", "BACKENDS", "DynamicsMethod", "DYNAMICS_METHODS", "Device", "DEVICES", "Mode",
           "MODES"]

# --- the choices: one Literal per choice, its values derived from it ---------------------------

#: model variant: fp32 is the reference; int8 the quantized variant; fp16 for CUDA only; bf16
#: the fp32 file with bf16 arithmetic (OpenVINO, CPUs with native bf16 only)
Precision = Literal["fp32", "int8", "fp16", "bf16"]
PRECISIONS: tuple[str, ...] = get_args(Precision)
#: network engine: "auto" resolves in nucseg_rt.network.engine.resolve_backend (a faster run
#: only where the model records masks agreeing with fp32's); "openvino" needs the openvino extra
Backend = Literal["auto", "onnxruntime", "openvino"]
BACKENDS: tuple[str, ...] = get_args(Backend)
#: 3D flow following: "stable" (default) or exactly Cellpose 3.1's
DynamicsMethod = Literal["stable", "cellpose"]
DYNAMICS_METHODS: tuple[str, ...] = get_args(DynamicsMethod)
#: execution device: "auto" takes CUDA when onnxruntime offers it
Device = Literal["auto", "cpu", "cuda"]
DEVICES: tuple[str, ...] = get_args(Device)
#: views the network runs: YX, ZY and ZX planes, or YX planes only (stitch mode)
Mode = Literal["3d", "stitch"]
MODES: tuple[str, ...] = get_args(Mode)


def file_precision(precision: str) -> str:
    """The model file a precision runs: bf16 runs the fp32 file (bf16 is arithmetic, not a
    file); the others their own variant."""
    return "fp32" if precision == "bf16" else precision


def _or_list(choices: tuple[str, ...]) -> str:
    quoted = [repr(c) for c in choices]
    return ", ".join(quoted[:-1]) + f" or {quoted[-1]}"


def validate_choice(name: str, value, choices: tuple[str, ...]) -> str:
    """``value`` if it is one of ``choices``, else an InvalidInputError naming ``name``."""
    if value not in choices:
        raise InvalidInputError(f"`{name}` must be {_or_list(choices)}, got {value!r}", param=name)
    return value


def settings_or_keywords(obj, name: str, kind: type, keywords: dict[str, Any], *,
                         build: Callable[..., Any] | None = None):
    """The one rule of every entry point taking a settings object or keywords: ``obj`` (a
    ``kind``, given as ``name``) or one built from the keywords, never both.

    ``keywords`` maps each keyword to its value, None meaning "not given" (the settings
    object's default applies); ``build`` makes the object from the given ones (default
    ``kind``). Given both, an InvalidInputError names the keywords that would be ignored.
    """
    given = {k: v for k, v in keywords.items() if v is not None}
    if obj is None:
        return (build or kind)(**given)
    if not isinstance(obj, kind):
        raise InvalidInputError(f"`{name}` must be a {kind.__name__}, got {type(obj).__name__}",
                                param=name)
    if given:
        names = ", ".join(f"`{k}`" for k in given)
        raise InvalidInputError(f"give the settings either as `{name}` or as keywords, not both: "
                                f"{names} would be ignored", param=(name, *given))
    return obj

#: Cellpose's Euler steps at the network's scale (scaled by 1 / rescale on the input grid)
DEFAULT_NITER = 200
#: Coarse Z: when the network ran at least this many Z planes per input plane, the "stable" 3D
#: dynamics follow the flows on the network's (isotropic) grid and the labels are then resized to
#: the input grid. On the input grid one Z step spans that many network voxels, so the Euler steps
#: in Z overshoot (step x gain > 2) and nuclei are split or joined across planes: measured on
#: held-out synthetic stacks (seeds 20,000-20,002, not the evaluation seeds), AP@0.5 at
#: anisotropy 8 / 11.5 0.921 / 0.747 on the input grid, 0.974 / 0.939 on the network grid.
GRID_Z_FACTOR = 2.0


def validate_positive(name: str, value) -> float:
    """``value`` as a finite float > 0, else InvalidInputError naming ``name``."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise InvalidInputError(f"`{name}` must be a number > 0, got {value!r}",
                                param=name) from None
    if not math.isfinite(v) or v <= 0:
        raise InvalidInputError(f"`{name}` must be > 0, got {value!r}", param=name)
    return v


def validate_diameter(diameter) -> float | Literal["auto"] | None:
    """``None`` (the model's default), ``"auto"`` or a diameter in pixels > 0."""
    if diameter is None or (isinstance(diameter, str) and diameter == "auto"):
        return diameter
    if isinstance(diameter, str):
        raise InvalidInputError(f"`diameter` must be a number > 0 or 'auto', got {diameter!r}")
    v = validate_positive("diameter", diameter)
    return None if v == 0 else v


def validate_whole(name: str, value, low: int | None = None, high: int | None = None) -> int:
    """``value`` as an int: a whole number (any real number type, numpy's too; not a bool), at
    least ``low`` and at most ``high`` where given; else an :class:`InvalidInputError` naming
    ``name`` (``.param``)."""
    span = ("" if low is None and high is None else f" >= {low}" if high is None
            else f" <= {high}" if low is None else f" from {low} to {high}")
    try:
        whole = not isinstance(value, bool) and isinstance(value, numbers.Real) and int(value) == value
    except (OverflowError, ValueError):  # inf, nan
        whole = False
    if not whole:
        raise InvalidInputError(f"`{name}` must be a whole number{span}, got {value!r}", param=name)
    if (low is not None and value < low) or (high is not None and value > high):
        raise InvalidInputError(f"`{name}` must be{span}, got {value!r}", param=name)
    return int(value)


def _finite(name: str, value) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise InvalidInputError(f"`{name}` must be a number, got {value!r}", param=name) from None
    if not math.isfinite(v):
        raise InvalidInputError(f"`{name}` must be finite, got {value!r}", param=name)
    return v


@dataclass(frozen=True)
class Normalization:
    """How the image is scaled to 0..1 before the network (Cellpose ``normalize`` params).

    Parameters
    ----------
    percentile : (low, high)
        Percentiles mapped to 0 and 1, ``0 <= low < high <= 100``.
    lowhigh : (low, high), optional
        Fixed intensities instead of percentiles.
    tile_norm : int
        Block size for tiled normalisation (0 = off).
    sharpen_radius : float
        High-pass radius (0 = off).
    invert : bool
        Invert the image first (dark nuclei on a bright background).
    """

    percentile: tuple = (1.0, 99.0)
    lowhigh: tuple | None = None
    tile_norm: int = 0
    sharpen_radius: float = 0.0
    invert: bool = False

    def __post_init__(self):
        lo, hi = self.percentile
        if not 0 <= lo < hi <= 100:
            raise InvalidInputError(f"`percentile` must satisfy 0 <= low < high <= 100, got {self.percentile}")
        if self.tile_norm < 0:
            raise InvalidInputError(f"`tile_norm` must be >= 0, got {self.tile_norm}")
        if self.sharpen_radius < 0:
            raise InvalidInputError(f"`sharpen_radius` must be >= 0, got {self.sharpen_radius}")


@dataclass(frozen=True)
class InputSpec:
    """Where the nuclei are in the user's array.

    Parameters
    ----------
    channel_axis, z_axis : int, optional
        Axes of the array (negative counts from the end). Default: from the file's axis
        metadata, else guessed and logged (see :func:`nucseg_rt.prep.axes.to_zyxc`).
    time_axis : int, optional
        Axis of the time points of a time-lapse (default: from the file's axis metadata, never
        guessed). :meth:`nucseg_rt.Segmenter.segment` then segments each frame as its own
        volume and returns masks (T, Z, Y, X); :meth:`~nucseg_rt.Segmenter.predict_flows`
        takes one volume and refuses it.
    chan : int
        Channel to segment: 0 gray (the first channel), 1 red, 2 green, 3 blue.
    chan2 : int
        Optional second channel for two-channel models: 0 none, 1-3.
    normalize : Normalization
        Intensity scaling before the network.
    """

    channel_axis: int | None = None
    z_axis: int | None = None
    chan: int = 0
    chan2: int = 0
    normalize: Normalization = field(default_factory=Normalization)
    time_axis: int | None = None

    def __post_init__(self):
        names = ("time_axis", "channel_axis", "z_axis")
        for name in names:
            v = getattr(self, name)
            if v is not None:
                validate_whole(name, v)
        for k, a in enumerate(names):
            for b in names[k + 1:]:
                va, vb = getattr(self, a), getattr(self, b)
                if va is not None and va == vb:
                    raise InvalidInputError(f"`{a}` and `{b}` must differ, both are {va}")
        for name in ("chan", "chan2"):
            v = validate_whole(name, getattr(self, name))
            if not 0 <= v <= 3:
                raise InvalidInputError(f"`{name}` must be 0 (gray/none), 1, 2 or 3, got {v}")
        if not isinstance(self.normalize, Normalization):
            raise InvalidInputError(f"`normalize` must be a Normalization, got {type(self.normalize).__name__}")


@dataclass(frozen=True)
class MaskParams:
    """Settings of the mask step: flows and cell probability to labels.

    Parameters
    ----------
    cellprob_threshold : float, optional
        Voxels with a cell-probability logit above it are foreground. Lower it to find more and
        larger nuclei. None (default): the model's own (:class:`MaskDefaults`; Cellpose's 0 for a
        model without one).
    min_size : int, optional
        Masks smaller than this many voxels are removed (after hole filling); ``<= 0`` keeps all.
        None (default): size-aware, a fraction of the expected nucleus volume at the run's
        diameter and anisotropy (:func:`size_aware_min_size`).
    max_size_fraction : float
        Masks larger than this fraction of the volume are removed (Cellpose's 0.4).
    niter : int, optional
        Euler steps of the flow following. Default 200 at the network's scale, i.e. ``200 /
        rescale`` on the input grid.
    method : {"stable", "cellpose"}
        3D flow following: "stable" (default, robust on anisotropic volumes) or "cellpose"
        (exactly Cellpose 3.1). Stitch mode always uses Cellpose's 2D dynamics.
    dp_smooth : float
        Gaussian sigma (voxels) smoothing the flows before following them; 0 = off.
    stitch_threshold : float
        ``> 0``: the volume was run plane by plane (``mode="stitch"``) and 2D masks are linked
        across planes when their IoU is above this; 0: flows are followed in 3D.
    flow_threshold : float, optional
        Stitch mode only: Cellpose's flow-error check on each 2D mask (default 0.4).
    merge_fragments : bool
        Merge touching masks with no cell-probability boundary between them (pieces of one
        textured nucleus; :mod:`nucseg_rt.masks.fragments`). Applies to the "stable" dynamics
        and to stitch mode's 2D masks; ``method="cellpose"`` stays exactly Cellpose's.
    """

    cellprob_threshold: float | None = None
    min_size: int | None = None
    max_size_fraction: float = 0.4
    niter: int | None = None
    method: DynamicsMethod = "stable"
    dp_smooth: float = 0.0
    stitch_threshold: float = 0.0
    flow_threshold: float | None = None
    merge_fragments: bool = False

    def __post_init__(self):
        set_ = object.__setattr__
        if self.cellprob_threshold is not None:
            set_(self, "cellprob_threshold", _finite("cellprob_threshold", self.cellprob_threshold))
        if self.min_size is not None:
            set_(self, "min_size", validate_whole("min_size", self.min_size))
        mf = _finite("max_size_fraction", self.max_size_fraction)
        if not 0 < mf <= 1:
            raise InvalidInputError(f"`max_size_fraction` must be in (0, 1], got {self.max_size_fraction!r}")
        set_(self, "max_size_fraction", mf)
        if self.niter is not None:
            set_(self, "niter", validate_whole("niter", self.niter, low=0) or None)
        validate_choice("method", self.method, DYNAMICS_METHODS)
        dp = _finite("dp_smooth", self.dp_smooth)
        if dp < 0:
            raise InvalidInputError(f"`dp_smooth` must be >= 0, got {self.dp_smooth!r}")
        set_(self, "dp_smooth", dp)
        st = _finite("stitch_threshold", self.stitch_threshold)
        if not 0 <= st < 1:
            raise InvalidInputError(f"`stitch_threshold` must be in [0, 1), got {self.stitch_threshold!r}")
        set_(self, "stitch_threshold", st)
        if self.flow_threshold is not None:
            ft = _finite("flow_threshold", self.flow_threshold)
            if ft < 0:
                raise InvalidInputError(f"`flow_threshold` must be >= 0, got {self.flow_threshold!r}")
            set_(self, "flow_threshold", ft)
        if not isinstance(self.merge_fragments, bool):
            raise InvalidInputError(f"`merge_fragments` must be True or False, got {self.merge_fragments!r}")

    @property
    def stitch(self) -> bool:
        """Whether these settings segment plane by plane and stitch."""
        return self.stitch_threshold > 0

    @classmethod
    def from_kwargs(cls, **kwargs: Any) -> "MaskParams":
        """Build from keyword arguments; an unknown name is an InvalidInputError naming it.

        ``dynamics_method`` is accepted as an alias of ``method``.
        """
        if "dynamics_method" in kwargs:
            kwargs["method"] = kwargs.pop("dynamics_method")
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(kwargs) - names)
        if unknown:
            raise InvalidInputError(f"unknown mask parameter(s) {', '.join(unknown)}; "
                                    f"valid: {', '.join(sorted(names))}")
        return cls(**kwargs)

    def replace(self, **changes: Any) -> "MaskParams":
        """A copy with ``changes`` applied (validated again)."""
        return MaskParams.from_kwargs(**{**asdict(self), **changes})

    def resolved(self, defaults: "MaskDefaults | None", *, diameter: float, anisotropy: float,
                 n_planes: int) -> "MaskParams":
        """These settings with the model's defaults filled in: ``cellprob_threshold`` from
        ``defaults`` (its 3D or its stitch-mode threshold; None: Cellpose's 0) and ``min_size``
        size-aware (see :func:`size_aware_min_size`). Given values are kept."""
        defaults = defaults or MaskDefaults()
        changes = {}
        if self.cellprob_threshold is None:
            changes["cellprob_threshold"] = (defaults.stitch_cellprob_threshold if self.stitch
                                             else defaults.cellprob_threshold)
        if self.min_size is None:
            changes["min_size"] = size_aware_min_size(diameter, anisotropy, n_planes,
                                                      defaults.min_size_fraction)
        return self.replace(**changes) if changes else self


#: Cellpose's ``min_size``: the floor of the size-aware default
CELLPOSE_MIN_SIZE = 15
#: Share of the expected nucleus volume under which a mask is removed, for a model that does not
#: store its own (``min_size_fraction`` metadata; the bundled model stores its calibrated share).
#: Half the share calibrated for our models on the real-texture calibration set (0.1,
#: ``benchmarks/calibrate_defaults.py``, training sources only; models/README.md): a model we
#: have not calibrated, or a diameter given too large, should not lose small real nuclei.
DEFAULT_MIN_SIZE_FRACTION = 0.05


@dataclass(frozen=True)
class MaskDefaults:
    """A model's own defaults for the mask step, from its ONNX metadata (``cellprob_threshold``,
    ``stitch_cellprob_threshold``, ``min_size_fraction``, ``ortho_weight``; written by the
    exporter for models calibrated in this project). A model without them (a converted Cellpose file) runs as Cellpose does: threshold 0,
    all three views' cell probability summed; its size filter follows the nucleus size with
    :data:`DEFAULT_MIN_SIZE_FRACTION`.

    Parameters
    ----------
    cellprob_threshold : float
        Default threshold on the 3D cell probability (the three views' logits summed).
    stitch_cellprob_threshold : float
        Default threshold in stitch mode (and on 2D images), on the YX view's logit alone: a
        threshold on one view is not one on a sum of three (for the bundled model, -2 on the sum
        in 3D is right, -2 on one view made 2D masks too large: models/README.md).
    min_size_fraction : float
        The size-aware ``min_size`` as a share of the expected nucleus volume.
    ortho_weight : float
        Weight of the ZY and ZX views' cell probability against the YX view's, ``w`` in
        ``cp = (cp_YX + w (cp_ZX + cp_ZY)) * 3 / (1 + 2 w)``; 1 is Cellpose's plain sum.
    """

    cellprob_threshold: float = 0.0
    min_size_fraction: float = DEFAULT_MIN_SIZE_FRACTION
    ortho_weight: float = 1.0
    stitch_cellprob_threshold: float = 0.0

    def __post_init__(self):
        _finite("cellprob_threshold", self.cellprob_threshold)
        _finite("stitch_cellprob_threshold", self.stitch_cellprob_threshold)
        for name in ("min_size_fraction", "ortho_weight"):
            v = _finite(name, getattr(self, name))
            if not 0 <= v <= 1:
                raise InvalidInputError(f"`{name}` must be in [0, 1], got {v!r}", param=name)

    @classmethod
    def from_metadata(cls, metadata: dict[str, str]) -> "MaskDefaults":
        """From a model's ``metadata_props`` (absent keys: the class defaults)."""
        names = [f.name for f in fields(cls)]
        return cls(**{k: float(metadata[k]) for k in names if metadata.get(k, "") != ""})


def size_aware_min_size(diameter: float, anisotropy: float, n_planes: int,
                        fraction: float = DEFAULT_MIN_SIZE_FRACTION) -> int:
    """The default ``min_size``: ``fraction`` of the expected nucleus size in voxels, at least
    :data:`CELLPOSE_MIN_SIZE`.

    The expected nucleus is a sphere of ``diameter`` XY pixels sampled every ``anisotropy``
    pixels in Z: its disc ``pi / 4 d^2`` times its depth in planes, ``2/3 d / anisotropy``
    (``pi / 6 d^3 / anisotropy`` voxels), the depth capped at the stack's ``n_planes`` (a thin
    stack holds a slab of each nucleus; a single plane, a 2D image, holds the disc). The same rule
    in 3D and stitch mode (masks are 3D either way). ``fraction`` 0 gives Cellpose's 15.
    """
    d = float(diameter)
    depth = min(2.0 / 3.0 * d / float(anisotropy), max(int(n_planes), 1))
    return max(CELLPOSE_MIN_SIZE, int(round(fraction * math.pi / 4 * d * d * depth)))

    def as_dict(self) -> dict:
        return asdict(self)
