"""The network stage as one object: :class:`EngineOptions` (how to run it, validated once) and
:class:`Engine` (the onnxruntime sessions of every stream, the stream threads, and the passes
over a prepared volume).

An Engine owns what it makes: :meth:`Engine.close` joins its stream threads, then releases its
sessions.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Literal, Union

import numpy as np

from nucseg_rt.errors import ClosedError, InvalidInputError
from nucseg_rt.network.predict import (Progress, WorkAvoidance, load_net, run_3d, run_planes,
                                       select_providers, uses_cuda)
from nucseg_rt.network.tiling import TILE_SIZE_RANGE, is_tile_size
from nucseg_rt.params import (BACKENDS, DEVICES, GRID_Z_FACTOR, PRECISIONS, Backend, Device,
                              Mode, Precision, validate_choice, validate_whole)
from nucseg_rt.prep.resample import rescale_volume, resize_channels_back, resize_linear

__all__ = ["EngineOptions", "Engine", "NetworkRun", "DEFAULT_WORK_AVOIDANCE", "WorkAvoidanceChoice",
           "check_precision", "resolve_backend", "BackendChoice", "model_agreement",
           "AUTO_CANDIDATES", "FAITHFUL_AP50"]

logger = logging.getLogger("nucseg_rt")

CPU_BATCH_SIZE = 2
GPU_BATCH_SIZE = 8
DEFAULT_CPU_STREAMS = 2
MAX_STREAMS = 64
#: on by default where measured to keep masks at AP@0.5 >= 0.99 against the plain run
#: (benchmarks/work_avoidance.py, docs/benchmarks.md): background tiles everywhere; YX on the
#: acquired planes and compact tiles up to anisotropy 8 (at 11.5 they moved AP to 0.98-0.99)
DEFAULT_WORK_AVOIDANCE = WorkAvoidance(native_yx=True, compact_tiles=True, background_bound=0.05,
                                       max_anisotropy=8.0)

#: a WorkAvoidance, or "default" (:data:`DEFAULT_WORK_AVOIDANCE`) / "plain" (Cellpose's passes)
WorkAvoidanceChoice = Union[WorkAvoidance, Literal["default", "plain"]]


def check_precision(precision: str, providers: list) -> None:
    """fp16 runs on CUDA only (onnxruntime has no fast fp16 CPU kernels); bf16 on OpenVINO only."""
    if precision == "bf16":
        raise InvalidInputError("`precision` 'bf16' runs with `backend` 'openvino' only "
                                "(--backend openvino, on a CPU with native bf16); onnxruntime "
                                "runs 'fp32', 'int8' or 'fp16' (CUDA)",
                                param=("precision", "backend"))
    if precision == "fp16" and not uses_cuda(providers):
        raise InvalidInputError("`precision` 'fp16' runs on CUDA only (onnxruntime has no fast "
                                "fp16 CPU kernels); on the CPU use 'int8' or 'fp32'",
                                param=("precision", "device"))


@dataclass(frozen=True)
class BackendChoice:
    """The network engine a run uses, and why (for ``nucseg-rt info`` and the run summary).

    ``floor``: network passes of fewer input pixels than this run on onnxruntime fp32 instead
    (``"auto"``'s size rule, :data:`AUTO_FLOOR`; 0: every pass on ``backend``)."""

    backend: str
    precision: str
    reason: str
    floor: int = 0

    def __str__(self) -> str:
        if self.floor:
            return (f"{self.backend} {self.precision} for passes of {_mpx(self.floor)} or more, "
                    f"onnxruntime fp32 below ({self.reason})")
        return f"{self.backend} {self.precision} ({self.reason})"

    def below_floor(self) -> BackendChoice:
        """What a pass under :attr:`floor` runs: onnxruntime fp32, with the reason."""
        return BackendChoice("onnxruntime", "fp32", f"auto: a pass under {_mpx(self.floor)}, "
                             "where OpenVINO's start-up costs more than it saves")

    def above_floor(self) -> BackendChoice:
        """What a pass at or above :attr:`floor` runs: this engine, with the rule in its reason."""
        return BackendChoice(self.backend, self.precision,
                             f"a pass of {_mpx(self.floor)} or more; {self.reason}")


def _mpx(pixels: int) -> str:
    return f"{pixels / 1e6:g} Mpx"


#: What ``backend="auto"`` may run in place of onnxruntime fp32 on the CPU, fastest first: only
#: runs measured faster than onnxruntime fp32 in the whole pipeline on the project's machine
#: (docs/benchmarks.md), each only where the model's metadata (``agreement``, written by the
#: exporter from ``benchmarks/agreement.py``) records masks that agree with onnxruntime fp32's at
#: AP@0.5 >= :data:`FAITHFUL_AP50`, where its engine is installed and where the CPU runs it
#: natively. On that machine (AMD EPYC, CPUID family 25 model 17, 2 cores, 2026-12-06, OpenVINO
#: 2026.4.1 with one stream on both cores) OpenVINO bf16 ran the bundled model's whole pipeline in
#: 3.67 s against onnxruntime fp32's 4.30 s on a 64x256x256 volume, 5.33 against 6.45 s at
#: anisotropy 11.5, and Cellpose's full-width network 1.72x faster; its masks agree at 0.998.
AUTO_CANDIDATES: tuple[tuple[str, str], ...] = (("openvino", "bf16"),)
#: ``"auto"``'s size rule: a network pass (one call of the volume's views, or of a few planes)
#: over fewer input pixels than this runs on onnxruntime fp32 even where a candidate was picked.
#: OpenVINO's start-up in a new process (import, compiling the model, first call per tile
#: shape) is a fixed cost that small passes do not earn back. Measured with
#: ``benchmarks/auto_floor.py`` (2026-12-07, docs/benchmarks.md; bundled model, one new process
#: per run, 2 cores): OpenVINO bf16 took 0.86x / 0.98x onnxruntime fp32's speed at 0.20 / 0.66
#: Mpx, and was faster at every size from 1.57 Mpx (1.11x) to 18.9 Mpx (1.45x).
AUTO_FLOOR = 1_500_000
#: The agreement with fp32 masks (AP@0.5, mean over the held-out settings) a faster run needs.
FAITHFUL_AP50 = 0.99


def model_agreement(metadata: dict[str, str] | None) -> dict[str, float]:
    """A model's measured agreement with onnxruntime fp32, ``{"backend/precision": AP@0.5}``,
    from its metadata key ``agreement`` (JSON); empty when absent or unreadable."""
    import json

    text = (metadata or {}).get("agreement", "")
    try:
        value = json.loads(text) if text else {}
        return {str(k): float(v) for k, v in value.items()}
    except (ValueError, TypeError, AttributeError):
        logger.warning("ignoring the model's unreadable `agreement` metadata: %r", text[:80])
        return {}


def _cannot_run(backend: str, precision: str) -> str | None:
    """Why ``backend``/``precision`` cannot run here (None: it can). OpenVINO is not imported
    where the CPU flags answer (Linux): ``auto`` asks this on every run, small ones too."""
    if backend == "openvino":
        import importlib.util

        if importlib.util.find_spec("openvino") is None:
            return "OpenVINO is not installed (the openvino extra)"
        from nucseg_rt.network._openvino import cpu_flags_bf16, cpu_supports_bf16

        if precision == "bf16":
            native = cpu_flags_bf16()
            if not (cpu_supports_bf16() if native is None else native):
                return "the CPU has no native bf16"
    return None


def resolve_backend(backend: str, precision: str, *, agreement: dict[str, float] | None = None,
                    device: str = "auto") -> BackendChoice:
    """The engine and precision that run for ``backend`` and ``precision``: the one place
    ``"auto"`` is decided.

    An explicit ``"onnxruntime"`` or ``"openvino"`` is taken as given (checked elsewhere:
    :func:`check_precision`, :func:`nucseg_rt.network._openvino.check_openvino_precision`).
    ``"auto"`` with ``precision`` "fp32" on the CPU runs the first of :data:`AUTO_CANDIDATES`
    whose ``agreement`` (the model's, :func:`model_agreement`) is >= :data:`FAITHFUL_AP50` and
    that runs here, else onnxruntime fp32; on CUDA, onnxruntime. ``"auto"`` with another
    precision: bf16 on OpenVINO (it runs nowhere else), int8/fp16 on onnxruntime.
    ``reason`` says why, for ``nucseg-rt info`` and the run summary.
    """
    validate_choice("backend", backend, BACKENDS)
    if backend != "auto":
        return BackendChoice(backend, precision, "given")
    if precision == "bf16":
        return BackendChoice("openvino", "bf16", "auto: bf16 runs on OpenVINO only")
    if precision != "fp32":
        return BackendChoice("onnxruntime", precision, f"auto: {precision} runs on onnxruntime")
    if device == "cuda" or (device == "auto" and uses_cuda(select_providers("auto"))):
        return BackendChoice("onnxruntime", "fp32", "auto: CUDA runs on onnxruntime")
    notes = []
    for engine, prec in AUTO_CANDIDATES:
        key = f"{engine}/{prec}"
        ap = (agreement or {}).get(key)
        if ap is None:
            notes.append(f"{key} not measured for this model")
        elif ap < FAITHFUL_AP50:
            notes.append(f"{key} masks agree with fp32 at AP@0.5 {ap:.3f} < {FAITHFUL_AP50}")
        elif (why := _cannot_run(engine, prec)) is not None:
            notes.append(f"{key}: {why}")
        else:
            return BackendChoice(engine, prec, f"auto: faster, and its masks agree with fp32 at "
                                               f"AP@0.5 {ap:.3f} >= {FAITHFUL_AP50} on the held-out volumes",
                                 floor=AUTO_FLOOR)
    return BackendChoice("onnxruntime", "fp32",
                         "auto: " + ("; ".join(notes) or "the fastest run faithful to fp32"))


@dataclass(frozen=True)
class EngineOptions:
    """How the network runs: device, model variant, threads, streams, tiles, work avoidance.

    Validated once, here; the Segmenter, the command line and blockwise workers share it.

    Parameters
    ----------
    device : {"auto", "cpu", "cuda"}
        ``"auto"`` uses CUDA when onnxruntime offers it, else the CPU.
    precision : {"fp32", "int8", "fp16", "bf16"}
        Model variant; fp32 is the reference, fp16 is for CUDA (onnxruntime) only, bf16 (the fp32
        file in bf16 arithmetic) for ``backend`` "openvino" on CPUs with native bf16 only.
    backend : {"auto", "onnxruntime", "openvino"}
        The network engine; ``"auto"`` resolves in :func:`resolve_backend` (onnxruntime fp32,
        or a faster run the model was measured to agree with; see :meth:`resolved`);
        ``"openvino"`` runs the same ONNX files on the CPU (the openvino extra).
    threads : int, optional
        Threads per stream: onnxruntime's intra-op threads, OpenVINO's
        ``INFERENCE_NUM_THREADS`` (default: the cores shared out between the streams).
    batch_size : int, optional
        Tiles per network call (default 2 on the CPU, 8 on CUDA).
    streams : int, optional
        Network sessions running groups of planes side by side, 1 to 64 (default: the saved
        probe's; else 2 on the CPU with onnxruntime, 1 with OpenVINO (one stream on all cores),
        when ``threads`` is given or on CUDA).
    tile_overlap : float
        Overlap of neighbouring tiles as a fraction of the tile, in [0.05, 0.5].
    bsize : int
        Tile edge in pixels, a multiple of 16 in [64, 1024] (224 is Cellpose's).
    work_avoidance : WorkAvoidance, "default" or "plain"
        Network work skipped; kept as a :class:`WorkAvoidance` ("plain": Cellpose's passes).
    use_probe : bool
        On the CPU, take ``batch_size``, ``threads`` and ``streams`` not given from the saved
        probe (``nucseg-rt info --probe --save``).
    floor : int
        With ``backend`` "openvino": network passes over fewer input pixels than this run on
        onnxruntime fp32 (``"auto"``'s size rule, set by :meth:`resolved`; 0: none).
    """

    device: Device = "auto"
    precision: Precision = "fp32"
    backend: Backend = "auto"
    threads: int | None = None
    batch_size: int | None = None
    streams: int | None = None
    tile_overlap: float = 0.1
    bsize: int = 224
    work_avoidance: WorkAvoidanceChoice = "default"
    use_probe: bool = True
    floor: int = 0

    def __post_init__(self):
        set_ = object.__setattr__
        validate_choice("precision", self.precision, PRECISIONS)
        validate_choice("backend", self.backend, BACKENDS)
        set_(self, "floor", int(validate_whole("floor", self.floor, 0)))
        if self.floor and self.backend != "openvino":
            raise InvalidInputError(f"`floor` applies to `backend` 'openvino' only (got backend "
                                    f"{self.backend!r}); leave it 0", param=("floor", "backend"))
        set_(self, "work_avoidance", _work_avoidance(self.work_avoidance))
        for name, high in (("batch_size", None), ("threads", None), ("streams", MAX_STREAMS)):
            if getattr(self, name) is not None:
                validate_whole(name, getattr(self, name), 1, high)
        if not is_tile_size(self.bsize):
            lo, hi = TILE_SIZE_RANGE
            raise InvalidInputError(f"`bsize` must be a multiple of 16 from {lo} to {hi}, "
                                    f"got {self.bsize!r}", param="bsize")
        if not 0.05 <= self.tile_overlap <= 0.5:
            raise InvalidInputError(f"`tile_overlap` must be in [0.05, 0.5], got {self.tile_overlap!r}",
                                    param="tile_overlap")
        validate_choice("device", self.device, DEVICES)
        for name in ("threads", "batch_size", "streams"):
            if getattr(self, name) is not None:
                set_(self, name, int(getattr(self, name)))
        set_(self, "bsize", int(self.bsize))
        set_(self, "tile_overlap", float(self.tile_overlap))

    def backend_choice(self, agreement: dict[str, float] | None = None) -> BackendChoice:
        """Which engine runs and why (:func:`resolve_backend`), for a model whose measured
        agreement with fp32 is ``agreement`` (:func:`model_agreement`; None: none measured)."""
        choice = resolve_backend(self.backend, self.precision, agreement=agreement,
                                 device=self.device)
        return dataclasses.replace(choice, floor=self.floor) if self.floor else choice

    def resolved(self, agreement: dict[str, float] | None = None
                 ) -> tuple[EngineOptions, BackendChoice]:
        """These options with ``backend`` and ``precision`` made concrete (``"auto"`` decided
        for a model with this ``agreement``), and the choice with its reason."""
        choice = self.backend_choice(agreement)
        if (choice.backend, choice.precision, choice.floor) == (self.backend, self.precision,
                                                                self.floor):
            return self, choice
        return self.replace(backend=choice.backend, precision=choice.precision,
                            floor=choice.floor), choice

    def providers(self) -> list:
        """The onnxruntime execution providers for ``device``, checked against ``precision``
        (raises DeviceUnavailableError for CUDA without CUDA, InvalidInputError for fp16 on
        the CPU or bf16 on onnxruntime). With the OpenVINO backend: ``["OpenVINO CPU"]``, after
        checking that OpenVINO is installed (MissingDependencyError), that ``device`` is not
        "cuda" and that the CPU runs ``precision``."""
        if self.backend_choice().backend == "openvino":
            from nucseg_rt.network._openvino import (OPENVINO_PROVIDERS, check_openvino_precision,
                                                     openvino_core)

            if self.device == "cuda":
                raise InvalidInputError("`backend` 'openvino' runs on the CPU only; use `device` "
                                        "'cpu' or 'auto', or `backend` 'onnxruntime' for CUDA",
                                        param=("backend", "device"))
            if not self.floor:  # under auto's floor: checked when the first large pass needs it
                openvino_core()
                check_openvino_precision(self.precision)
            return list(OPENVINO_PROVIDERS)
        providers = select_providers(self.device)
        check_precision(self.precision, providers)
        return providers

    def replace(self, **changes) -> EngineOptions:
        """A copy with ``changes`` (validated again)."""
        return dataclasses.replace(self, **changes)

    def labels_key(self) -> str:
        """What in these options can change the labels (for a blockwise resume fingerprint);
        threads, batch size and streams cannot; the backend can (named when not onnxruntime,
        so onnxruntime fingerprints stay as they were)."""
        engine = self.backend_choice().backend
        precision = self.precision if engine == "onnxruntime" else (engine, self.precision)
        if self.floor:  # which passes run on which engine
            precision = (*precision, ("floor", self.floor))
        return repr((precision, (("work_avoidance", self.work_avoidance),
                                      ("bsize", self.bsize), ("tile_overlap", self.tile_overlap))))


def _work_avoidance(value) -> WorkAvoidance:
    if isinstance(value, WorkAvoidance):
        return value
    if value == "default":
        return DEFAULT_WORK_AVOIDANCE
    if value == "plain":
        return WorkAvoidance.plain()
    raise InvalidInputError(
        f"`work_avoidance` must be a WorkAvoidance, 'default' or 'plain', got {value!r}",
        param="work_avoidance")


@dataclass(frozen=True)
class NetworkRun:
    """What one network pass did (diagnostics, typed).

    Attributes
    ----------
    network_shape : (Z', Y', X') or None
        The network grid of a 3D run (None in stitch mode).
    ortho : str or None
        The ZY/ZX network's file name when one ran.
    tiles : dict
        Per orientation: ``tiles_run``, ``tiles_skipped``, ``pixels``.
    seconds : float
        Wall time of the pass.
    dynamics_grid : (Z', Y', X') or None
        Set when the network-grid outputs are kept for the mask stage (coarse Z).
    network : BackendChoice or None
        The engine and precision that ran this pass, and why.
    """

    network_shape: tuple | None = None
    ortho: str | None = None
    tiles: dict = dataclasses.field(default_factory=dict)
    seconds: float = 0.0
    dynamics_grid: tuple | None = None
    network: BackendChoice | None = None


class _Lane:
    """The nets of one engine and precision: one per stream (plus the ZY/ZX network's), and the
    threads running the streams."""

    def __init__(self, path, ortho_path, *, choice: BackendChoice, options: EngineOptions,
                 providers: list):
        on_cpu = not uses_cuda(providers)
        self.choice = choice
        streams, threads = options.streams, options.threads
        if streams is None:
            # onnxruntime on the CPU: two streams of one thread were faster than one stream of
            # two on both 2-core CPUs measured; OpenVINO: one stream on all cores (its own
            # threading) ran the pipeline 1.6x faster than two single-thread streams (bf16,
            # 64x256x256, 2026-12-06: docs/benchmarks.md)
            streams = (min(DEFAULT_CPU_STREAMS, os.cpu_count() or 1)
                       if on_cpu and threads is None and choice.backend == "onnxruntime" else 1)
        if threads is None and (streams > 1 or choice.backend == "openvino"):
            # OpenVINO's own default for one stream ran bf16 1.16x slower than all the cores
            threads = max(1, (os.cpu_count() or 1) // streams)
        kind = dict(backend=choice.backend, precision=choice.precision)
        self.nets = []
        self.nets_ortho = None
        try:
            self.nets = [load_net(path, providers, threads, **kind) for _ in range(streams)]
            self.nets_ortho = ([load_net(ortho_path, providers, threads, **kind)
                                for _ in range(streams)] if ortho_path is not None else None)
        except BaseException:
            self.close()
            raise
        self.streams, self.threads = streams, threads
        self.pool = (ThreadPoolExecutor(streams, thread_name_prefix="nucseg-stream")
                     if streams > 1 else None)

    def close(self) -> None:
        """Join the stream threads, then release the nets (idempotent)."""
        pool, self.pool = getattr(self, "pool", None), None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
        for net in [*self.nets, *(self.nets_ortho or [])]:
            net.close()


class Engine:
    """The network sessions of one model (onnxruntime or OpenVINO, by ``options.backend``), one
    per stream, and the threads running them.

    With ``options.floor`` (``"auto"``'s size rule), passes over fewer input pixels than the
    floor run on onnxruntime fp32 sessions made here, and the OpenVINO nets are made on the first
    pass at or above it: a small volume never pays OpenVINO's start-up. Which engine ran a pass
    is in its :attr:`NetworkRun.network`.

    Parameters
    ----------
    path, ortho_path : path-like
        The main network and the optional ZY/ZX network.
    options : EngineOptions
        ``batch_size``, ``threads`` and ``streams`` not given take the built-in defaults here.
    providers : list, optional
        From :meth:`EngineOptions.providers` (made here if not given).
    ortho_min_anisotropy : float
        The ZY/ZX network runs for stacks at least this anisotropic (0: always).
    choice : BackendChoice, optional
        How ``options.backend`` was decided (from :meth:`EngineOptions.resolved`; its reason is
        what :attr:`backend` reports); default ``options.backend_choice()``.

    Use it as a context manager or call :meth:`close`: it joins the stream threads, then
    releases the sessions.
    """

    def __init__(self, path, ortho_path=None, *, options: EngineOptions,
                 providers: list | None = None, ortho_min_anisotropy: float = 0.0,
                 choice: BackendChoice | None = None):
        providers = providers if providers is not None else options.providers()
        if choice is not None and (choice.backend, choice.precision, choice.floor) != (
                options.backend, options.precision, options.floor):
            raise InvalidInputError(f"`choice` {choice} does not match the options "
                                    f"(backend {options.backend!r}, precision "
                                    f"{options.precision!r}, floor {options.floor}); pass "
                                    "EngineOptions.resolved()'s pair", param="choice")
        self.backend = choice if choice is not None else options.backend_choice()
        self._path, self._ortho_path, self._options = path, ortho_path, options
        self._providers = providers
        self._lock = threading.Lock()
        self._closed = False
        first = (self.backend.below_floor() if self.backend.floor else self.backend)
        if self.backend.floor:
            providers = select_providers("cpu")
        #: the lane made now (its nets answer :attr:`nets`, :attr:`info`, ...) and, with a
        #: floor, the one made on the first pass at or above it
        self._first = _Lane(path, ortho_path, choice=first, options=options, providers=providers)
        self._large: _Lane | None = None if self.backend.floor else self._first
        self.ortho_name = getattr(ortho_path, "name", "ortho network") if ortho_path else None
        self.ortho_min_anisotropy = float(ortho_min_anisotropy)
        ortho = self._first.nets_ortho
        if ortho is not None and ortho[0].info.nchan != self.info.nchan:
            self.close()
            raise InvalidInputError(f"ortho model takes {ortho[0].info.nchan} channels, "
                                    f"main model {self.info.nchan}")
        self.device = "cuda" if uses_cuda(self._first.nets[0].providers) else "cpu"
        batch_size = options.batch_size
        if batch_size is None:  # CPU: 2 tiles per call was fastest and keeps activations small
            batch_size = CPU_BATCH_SIZE if self.device == "cpu" else GPU_BATCH_SIZE
        self.batch_size, self.bsize, self.tile_overlap = batch_size, options.bsize, options.tile_overlap
        self.avoid = options.work_avoidance

    # -- what it runs ----------------------------------------------------------------------------
    def _check_open(self) -> None:
        if self._closed:
            raise ClosedError("this Segmenter was closed (close() or the end of its `with` "
                              "block); make a new Segmenter")

    @property
    def nets(self) -> list:
        """The main network of each stream (of the onnxruntime sessions under a floor); raises
        ClosedError after :meth:`close`."""
        self._check_open()
        return self._first.nets

    @property
    def nets_ortho(self) -> list | None:
        """The ZY/ZX network of each stream, or None."""
        return self._first.nets_ortho

    @property
    def streams(self) -> int:
        return self._first.streams

    @property
    def threads(self) -> int | None:
        return self._first.threads

    @property
    def info(self):
        """The main network's :class:`nucseg_rt.network.predict.NetInfo` (channels, diameters)."""
        return self._first.nets[0].info

    @property
    def providers(self) -> list:
        return self._first.nets[0].providers

    def lane_for(self, pixels: int) -> _Lane:
        """The nets that run a pass over ``pixels`` network input pixels (the OpenVINO ones made
        now if this is the first pass at or above the floor)."""
        self._check_open()
        if not self.backend.floor or pixels < self.backend.floor:
            return self._first
        with self._lock:
            self._check_open()
            if self._large is None:
                logger.info("network: a pass of %s: %s", _mpx(pixels), self.backend)
                self._large = self._start_large()
            return self._large

    def _start_large(self) -> _Lane:
        """The OpenVINO lane of auto's size rule; if OpenVINO refuses to start here after all
        (the checks at construction did not import it), onnxruntime fp32, with a warning."""
        from nucseg_rt.errors import MissingDependencyError, ModelFormatError
        from nucseg_rt.network._openvino import check_openvino_precision

        try:
            check_openvino_precision(self.backend.precision)
            return _Lane(self._path, self._ortho_path, choice=self.backend.above_floor(),
                         options=self._options, providers=self._providers)
        except (InvalidInputError, MissingDependencyError, ModelFormatError) as exc:
            logger.warning("OpenVINO did not start (%s); running onnxruntime fp32", exc)
            # the onnxruntime fp32 nets of the small passes, reported with this reason
            fallback = copy.copy(self._first)
            fallback.choice = BackendChoice("onnxruntime", "fp32",
                                            f"auto: OpenVINO did not start ({exc})")
            return fallback

    def _tiling(self, lane: _Lane) -> dict:
        return dict(batch_size=self.batch_size, bsize=self.bsize, tile_overlap=self.tile_overlap,
                    pool=lane.pool)

    def run_planes(self, planes: np.ndarray, *, sink, progress: Progress | None = None,
                   label: str = "", cancel: threading.Event | None = None,
                   avoid: WorkAvoidance | None = None) -> BackendChoice:
        """:func:`nucseg_rt.network.predict.run_planes` on this engine's streams and tiles (the
        planes are one pass); returns what ran them."""
        lane = self.lane_for(int(np.prod(planes.shape[:3])))
        run_planes(lane.nets, planes, sink=sink, progress=progress, label=label, avoid=avoid,
                   cancel=cancel, **self._tiling(lane))
        return lane.choice

    def predict(self, x: np.ndarray, *, mode: Mode, rescale: float, anisotropy: float,
                resample: bool, progress: Progress | None = None,
                cancel: threading.Event | None = None) -> tuple[np.ndarray, np.ndarray | None, NetworkRun]:
        """Network outputs for a prepared ``(Z, Y, X, C)`` volume.

        Returns
        -------
        yf : (4, Z, Y, X) float32
            Z, Y, X flows and cellprob (stitch mode: Z flow zero), on the input grid when
            ``resample`` (else on the network grid).
        grid : (4, Z', Y', X') float32 or None
            The network-grid outputs when kept for the mask stage (coarse Z, see
            :data:`nucseg_rt.params.GRID_Z_FACTOR`).
        run : NetworkRun
        """
        shape = x.shape[:3]
        t0 = time.perf_counter()
        network_shape = ortho = None
        stats: dict = {}
        if mode == "stitch":
            yf, ran = self._yx_planes(x, rescale=rescale, progress=progress, cancel=cancel)
            del x
        else:
            xr = rescale_volume(x, rescale=rescale, anisotropy=anisotropy, nchan=self.info.nchan)
            network_shape = tuple(int(s) for s in xr.shape[:3])
            lane = self.lane_for(3 * int(np.prod(network_shape)))  # YX, ZY and ZX planes
            native, avoid = None, self.avoid.at(anisotropy)
            if avoid.native_yx and xr.shape[0] > x.shape[0]:
                native = (resize_linear(x, *xr.shape[1:3]) if xr.shape[1:3] != x.shape[1:3]
                          else np.ascontiguousarray(x, np.float32))
            del x
            nets_ortho = lane.nets_ortho if anisotropy >= self.ortho_min_anisotropy else None
            ortho = self.ortho_name if nets_ortho is not None else None
            yf = run_3d(lane.nets, xr, net_ortho=nets_ortho, progress=progress, avoid=avoid,
                        yx_native=native, stats=stats, cancel=cancel,
                        ortho_weight=self.info.mask_defaults.ortho_weight, **self._tiling(lane))
            del xr, native
            ran = lane.choice
        seconds = time.perf_counter() - t0
        grid = grid_shape = None
        if resample and yf.shape[1:] != shape:
            if mode == "3d":
                if yf.shape[1] >= GRID_Z_FACTOR * shape[0]:
                    grid = yf
                    grid_shape = tuple(int(s) for s in yf.shape[1:])
                yf = resize_channels_back(yf, shape)
            else:  # planes resized in XY, the three network outputs together (as Cellpose)
                out = np.zeros((4, *shape), np.float32)
                out[1:] = np.moveaxis(resize_linear(np.ascontiguousarray(np.moveaxis(yf[1:], 0, -1)),
                                                    *shape[1:]), -1, 0)
                yf = out
        return yf, grid, NetworkRun(network_shape, ortho, stats, seconds, grid_shape, ran)

    def _yx_planes(self, x, *, rescale, progress, cancel) -> tuple[np.ndarray, BackendChoice]:
        """Stitch mode's network pass: every YX plane in 2D, ``(4, Z, Y', X')`` (Z flow zero),
        and what ran it."""
        ly, lx = x.shape[1:3]
        if rescale != 1.0:
            x = resize_linear(x, int(ly * rescale), int(lx * rescale))
        yf = np.zeros((4, *x.shape[:3]), np.float32)

        def sink(i, out):
            yf[1:, i] = out

        ran = self.run_planes(x, sink=sink, progress=progress, label="YX", avoid=self.avoid,
                              cancel=cancel)
        return yf, ran

    # -- resources -------------------------------------------------------------------------------
    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Join the stream threads (each finishes its batch of tiles), then release every
        session (idempotent)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        # auto's fallback lane runs the first lane's nets (_start_large): released once, here
        shared = self._large is None or self._large.nets is self._first.nets
        for lane in (self._first,) if shared else (self._first, self._large):
            lane.close()

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
