"""The public entry point: :class:`Segmenter` turns a volume into flows and 3D labels.

Two stages a user can run separately and that together give exactly :meth:`Segmenter.segment`:
:meth:`Segmenter.predict_flows` (the network, expensive; returns a :class:`Flows` result) and
:meth:`Segmenter.masks_from_flows` (cheap, re-runnable with other thresholds). Both follow
Cellpose 3.1's ``eval(do_3D=True)`` semantics, or its ``stitch_threshold`` mode.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Literal

import numpy as np

from nucseg_rt.errors import Cancelled, ClosedError, InvalidInputError
from nucseg_rt.masks.assemble import masks_from_flows as _masks_from_flows
from nucseg_rt.network.predict import (Device, Progress, WorkAvoidance, load_net, run_3d, run_planes,
                                       select_providers)
from nucseg_rt.network.tiling import is_tile_size
from nucseg_rt.params import (GRID_Z_FACTOR, InputSpec, MaskParams, Normalization, validate_diameter,
                              validate_positive)
from nucseg_rt.prep import axes
from nucseg_rt.prep import normalize as preprocess
from nucseg_rt.prep.resample import rescale_volume, resize_flows_back, resize_linear
from nucseg_rt.results import Flows, SegmentationResult

logger = logging.getLogger("nucseg_rt")

__all__ = ["Segmenter", "SegmentationResult", "Flows", "Normalization", "MaskParams", "InputSpec"]

Precision = Literal["fp32", "int8", "fp16"]
CPU_BATCH_SIZE = 2
GPU_BATCH_SIZE = 8
DEFAULT_CPU_STREAMS = 2
#: on by default where measured to keep masks at AP@0.5 >= 0.99 against the plain run
#: (benchmarks/work_avoidance.py, docs/benchmarks.md): background tiles everywhere; YX on the
#: acquired planes and compact tiles up to anisotropy 8 (at 11.5 they moved AP to 0.98-0.99)
DEFAULT_WORK_AVOIDANCE = WorkAvoidance(native_yx=True, compact_tiles=True, background_bound=0.05,
                                       max_anisotropy=8.0)


def _resize_channels_back(yf: np.ndarray, shape: tuple) -> np.ndarray:
    """Resize ``(K, Z', Y', X')`` to ``(K, *shape)`` one channel at a time (bounded extra memory)."""
    out = np.empty((yf.shape[0], *shape), np.float32)
    for c in range(yf.shape[0]):
        out[c] = resize_flows_back(yf[c][..., np.newaxis], shape)[..., 0]
    return out


def _work_avoidance(value) -> WorkAvoidance:
    if isinstance(value, WorkAvoidance):
        return value
    if value == "default":
        return DEFAULT_WORK_AVOIDANCE
    if value == "plain":
        return WorkAvoidance.plain()
    raise InvalidInputError(
        f"`work_avoidance` must be a WorkAvoidance, 'default' or 'plain', got {value!r}")


def check_precision(precision: str, providers: list) -> None:
    """fp16 runs on CUDA only (onnxruntime has no fast fp16 CPU kernels)."""
    if precision == "fp16" and "CUDAExecutionProvider" not in providers:
        raise InvalidInputError("`precision` 'fp16' runs on CUDA only (onnxruntime has no fast "
                                "fp16 CPU kernels); on the CPU use 'int8' or 'fp32'")


def _check_cancel(cancel: threading.Event | None) -> None:
    if cancel is not None and cancel.is_set():
        raise Cancelled("cancelled")


class Segmenter:
    """Segment nuclei in 3D volumes with a Cellpose 3 network exported to ONNX.

    Parameters
    ----------
    model : str or path-like
        A registered model name (``"nuclei_3d"`` is bundled) or an ``.onnx`` file.
    ortho : path-like, optional
        ONNX network for ZY/ZX planes (default: the model's registered/embedded partner, if any).
        It runs for stacks at least as anisotropic as its metadata ``min_anisotropy`` (when set,
        e.g. a partner trained on coarse-Z planes); the main network takes the planes below that.
    device : {"auto", "cpu", "cuda"}
        ``"auto"`` uses CUDA when onnxruntime offers it, else the CPU.
    precision : {"fp32", "int8", "fp16"}
        Model variant; fp32 is the reference. int8 runs the registered model's quantized
        variant (the bundled ``nuclei_3d`` ships one; ``nucseg-rt quantize NAME`` makes one);
        fp16 is for CUDA only.
    threads : int, optional
        onnxruntime intra-op threads per stream (default: one per physical core, shared out
        between the streams).
    streams : int, optional
        Network sessions running groups of planes side by side, the cores shared out between
        them. Default: what ``nucseg-rt info --probe --save`` found fastest; else 2 on the CPU
        (1 when ``threads`` is given, or on CUDA). On 2-core CPUs two streams of one thread ran
        the network 1.1-1.3x faster than one stream of two threads. The outputs do not depend
        on it; peak memory grows with it (each stream holds one batch of activations).
    batch_size : int, optional
        224x224 tiles per network call; default 2 on the CPU (measured fastest on a 2-core
        machine, and peak memory grows ~40 MB per tile) and 8 on CUDA (Cellpose's default).
    tile_overlap : float
        Overlap of neighbouring tiles as a fraction of the tile (Cellpose's 0.1).
    bsize : int
        Tile edge in pixels, a multiple of 16 in [64, 1024]; 224 is Cellpose's and the parity
        reference. Other sizes change the flows slightly (each tile's style vector and the
        blending); on a 2-core CPU the network's cost per pixel hardly depends on it, but tiles
        that hold a whole plane avoid computing overlaps (measured in docs/benchmarks.md).
    work_avoidance : WorkAvoidance, "default" or "plain"
        Network work skipped (see :class:`nucseg_rt.network.predict.WorkAvoidance`); "plain" computes
        exactly what Cellpose 3.1 computes (the parity reference).
    use_probe : bool
        On the CPU, take ``batch_size``, ``threads`` and ``streams`` not given from the results
        ``nucseg-rt info --probe --save`` stored in ``probe.json`` in the registry folder (the
        values taken are logged at INFO). False: ignore that file.

    Use it as a context manager (``with Segmenter(...) as seg:``) or call :meth:`close` to
    release its onnxruntime sessions when done.
    """

    def __init__(self, model: str | os.PathLike = "nuclei_3d", ortho: str | os.PathLike | None = None,
                 device: Device = "auto", precision: Precision = "fp32", *,
                 threads: int | None = None, batch_size: int | None = None,
                 streams: int | None = None, tile_overlap: float = 0.1,
                 bsize: int = 224,
                 work_avoidance: WorkAvoidance | Literal["default", "plain"] = "default",
                 use_probe: bool = True):
        from nucseg_rt.models import registry

        if precision not in ("fp32", "int8", "fp16"):
            raise InvalidInputError(f"`precision` must be 'fp32', 'int8' or 'fp16', got {precision!r}")
        self.avoid = _work_avoidance(work_avoidance)
        if batch_size is not None and (int(batch_size) != batch_size or batch_size < 1):
            raise InvalidInputError(f"`batch_size` must be a whole number >= 1, got {batch_size!r}")
        if threads is not None and (int(threads) != threads or threads < 1):
            raise InvalidInputError(f"`threads` must be a whole number >= 1, got {threads!r}")
        if streams is not None and (isinstance(streams, bool) or int(streams) != streams
                                    or not 1 <= streams <= 64):
            raise InvalidInputError(f"`streams` must be a whole number from 1 to 64, got {streams!r}")
        if not is_tile_size(bsize):
            raise InvalidInputError(f"`bsize` (tile size) must be a multiple of 16 from 64 to 1024, "
                                    f"got {bsize!r}")
        if not 0.05 <= tile_overlap <= 0.5:
            raise InvalidInputError(f"`tile_overlap` must be in [0.05, 0.5], got {tile_overlap!r}")
        providers = select_providers(device)
        on_cpu = "CUDAExecutionProvider" not in providers
        check_precision(precision, providers)
        self.model = registry.resolve_model(model, ortho=ortho, precision=precision)
        if use_probe and on_cpu and None in (batch_size, threads, streams):
            from nucseg_rt.models import probe_defaults  # `nucseg-rt info --probe --save`

            batch_size, threads, streams = probe_defaults(precision, batch_size=batch_size,
                                                          threads=threads, streams=streams)
        if streams is None:  # CPU: two streams were faster than one on both 2-core CPUs measured
            streams = (min(DEFAULT_CPU_STREAMS, os.cpu_count() or 1) if on_cpu and threads is None
                       else 1)
        streams = int(streams)
        if threads is None and streams > 1:
            threads = max(1, (os.cpu_count() or 1) // streams)
        self.nets = [load_net(self.model.path, providers, threads)
                     for k in range(streams)]
        self.nets_ortho = ([load_net(self.model.ortho_path, providers, threads)
                            for k in range(streams)] if self.model.ortho_path is not None else None)
        self.streams, self.threads = streams, threads
        # checked when the model was resolved (modelfile.inspect_model); empty: always
        self.ortho_min_anisotropy = float((self.model.ortho_metadata or {}).get("min_anisotropy") or 0.0)
        if self.net_ortho is not None and self.net_ortho.info.nchan != self.net.info.nchan:
            raise InvalidInputError(
                f"ortho model takes {self.net_ortho.info.nchan} channels, main model {self.net.info.nchan}")
        self.device = "cuda" if "CUDAExecutionProvider" in self.net.providers else "cpu"
        self.precision = precision
        if batch_size is None:  # CPU: 2 tiles per call was fastest and keeps activations small
            batch_size = CPU_BATCH_SIZE if self.device == "cpu" else GPU_BATCH_SIZE
        self.batch_size, self.tile_overlap, self.bsize = int(batch_size), float(tile_overlap), int(bsize)
        logger.info("model %s on %s (%s)", self.model.name, self.device, ", ".join(self.net.providers))

    @property
    def net(self):
        """The main network (of the first stream)."""
        return self.nets[0]

    @property
    def net_ortho(self):
        """The ZY/ZX network (of the first stream), or None: the main network runs them.
        Setting it (None, or one network) applies to every stream."""
        return self.nets_ortho[0] if self.nets_ortho else None

    @net_ortho.setter
    def net_ortho(self, net) -> None:
        self.nets_ortho = None if net is None else [net]

    @property
    def diam_mean(self) -> float:
        return self.net.info.diam_mean

    @property
    def diam_labels(self) -> float:
        return self.net.info.diam_labels

    def rescale_for(self, diameter: float | None) -> float:
        """XY zoom before the network for a nucleus ``diameter`` (None: the model's default):
        ``diam_mean / diameter``, the one rescale rule (whole-volume, blockwise and memory
        estimates)."""
        return self.diam_mean / float(diameter or self.diam_labels)

    # -- stage 1: the network -------------------------------------------------------------------
    def _prepare(self, vol, spec: InputSpec, info: dict) -> tuple[np.ndarray, bool]:
        """Normalised ``(Z, Y, X, C)`` float32 volume and whether the input was constant."""
        x, notes = axes.to_zyxc(vol, channel_axis=spec.channel_axis, z_axis=spec.z_axis,
                                chan=spec.chan, chan2=spec.chan2, nchan=self.net.info.nchan)
        info["axes"] = list(notes)
        constant = all(x[..., c].min() == x[..., c].max() for c in range(x.shape[-1]))
        nm = spec.normalize
        x = preprocess.normalize(x, percentile=nm.percentile, lowhigh=nm.lowhigh, tile_norm=nm.tile_norm,
                                 sharpen_radius=nm.sharpen_radius, invert=nm.invert, copy=False)
        # trailing all-zero channels (the zeros Cellpose appends) are re-created per tile
        keep = x.shape[-1]
        while keep > 1 and not x[..., keep - 1].any():
            keep -= 1
        return (np.ascontiguousarray(x[..., :keep]) if keep < x.shape[-1] else x), constant

    def _diameter(self, diameter, x, *, anisotropy: float, constant: bool, progress, cancel,
                  info: dict) -> float:
        """The diameter to run at: given, the model's default, or estimated (``"auto"``)."""
        if diameter is None:
            info["diameter_source"] = "model default"
            return self.diam_labels
        if diameter != "auto":
            info["diameter_source"] = "given"
            return float(diameter)
        if constant:
            info["diameter_source"] = "model default (constant input, nothing to estimate)"
            return self.diam_labels
        from nucseg_rt.network.diameter import estimate_diameter

        est = estimate_diameter(self, x, anisotropy=anisotropy, progress=progress, cancel=cancel)
        info["diameter_source"] = "auto"
        info["diameter_estimate"] = est.as_dict()
        logger.info("estimated nucleus diameter: %.1f px (%s)", est.diameter, est.summary())
        return est.diameter

    def _run_network(self, x, *, mode, rescale, anisotropy, resample, progress, cancel,
                     info) -> tuple[np.ndarray, np.ndarray | None]:
        """``(4, Z, Y, X)``: Z, Y, X flows and cellprob (stitch mode: Z flow zero), and the
        network-grid outputs when they are kept for the mask stage (coarse Z, see
        :data:`GRID_Z_FACTOR`), else None."""
        shape = x.shape[:3]
        t0 = time.perf_counter()
        if mode == "stitch":
            yf = self._run_yx_planes(x, rescale=rescale, progress=progress, cancel=cancel)
            del x
        else:
            xr = rescale_volume(x, rescale=rescale, anisotropy=anisotropy, nchan=self.net.info.nchan)
            info["network_shape"] = tuple(int(s) for s in xr.shape[:3])
            native, avoid = None, self.avoid.at(anisotropy)
            if avoid.native_yx and xr.shape[0] > x.shape[0]:
                native = (resize_linear(x, *xr.shape[1:3]) if xr.shape[1:3] != x.shape[1:3]
                          else np.ascontiguousarray(x, np.float32))
            del x
            stats: dict = {}
            use_ortho = self.nets_ortho is not None and anisotropy >= self.ortho_min_anisotropy
            info["ortho"] = (getattr(self.model.ortho_path, "name", "ortho network") if use_ortho
                             else None)
            yf = run_3d(self.nets, xr, net_ortho=self.nets_ortho if use_ortho else None,
                        batch_size=self.batch_size,
                        bsize=self.bsize, tile_overlap=self.tile_overlap, progress=progress,
                        avoid=avoid, yx_native=native, stats=stats, cancel=cancel)
            info["tiles"] = stats
            del xr, native
        info["seconds_network"] = time.perf_counter() - t0
        grid = None
        if resample and yf.shape[1:] != shape:
            if mode == "3d":
                if yf.shape[1] >= GRID_Z_FACTOR * shape[0]:
                    grid = yf
                    info["dynamics_grid"] = tuple(int(s) for s in yf.shape[1:])
                yf = _resize_channels_back(yf, shape)
            else:  # planes resized in XY, the three network outputs together (as Cellpose)
                out = np.zeros((4, *shape), np.float32)
                out[1:] = np.moveaxis(resize_linear(np.ascontiguousarray(np.moveaxis(yf[1:], 0, -1)),
                                                    *shape[1:]), -1, 0)
                yf = out
        return yf, grid

    def _run_yx_planes(self, x, *, rescale, progress, cancel) -> np.ndarray:
        """Stitch mode's network pass: every YX plane in 2D, ``(4, Z, Y', X')`` (Z flow zero)."""
        ly, lx = x.shape[1:3]
        if rescale != 1.0:
            x = resize_linear(x, int(ly * rescale), int(lx * rescale))
        yf = np.zeros((4, *x.shape[:3]), np.float32)

        def sink(i, out):
            yf[1:, i] = out

        run_planes(self.nets, x, batch_size=self.batch_size, bsize=self.bsize,
                   tile_overlap=self.tile_overlap, sink=sink, progress=progress, label="YX",
                   avoid=self.avoid, cancel=cancel)
        return yf

    def predict_flows(self, vol: np.ndarray, *, anisotropy: float = 1.0,
                      diameter: float | Literal["auto"] | None = None,
                      channel_axis: int | None = None, z_axis: int | None = None, chan: int = 0,
                      chan2: int = 0, normalize: Normalization | None = None, resample: bool = True,
                      mode: Literal["3d", "stitch"] = "3d", progress: Progress | None = None,
                      cancel: threading.Event | None = None, inputs: InputSpec | None = None) -> Flows:
        """Run the network: YX, ZY and ZX planes (Cellpose 3.1 ``do_3D=True``), or YX planes only
        (``mode="stitch"``, for :meth:`masks_from_flows` with ``stitch_threshold > 0``).

        With ``work_avoidance="plain"`` the flows equal Cellpose's; the default skips work
        (see :class:`nucseg_rt.network.predict.WorkAvoidance`) and gives flows that differ slightly.

        Parameters
        ----------
        vol : array
            3D volume ``(Z, Y, X)``, ``(Z, C, Y, X)`` or any order given ``channel_axis``/``z_axis``.
            Not modified.
        anisotropy : float
            Z step / XY pixel size (e.g. 11.5 when Z is 11.5x coarser); > 0.
        diameter : float, "auto" or None
            Typical nucleus diameter in XY pixels. None: the model's training diameter (no
            rescaling). "auto": estimated first from a few YX planes (see
            :func:`nucseg_rt.network.diameter.estimate_diameter`); the estimate is logged and kept
            in ``Flows.info["diameter_estimate"]``.
        channel_axis, z_axis : int, optional
            Axes of ``vol`` holding channels and Z (default: guessed, and logged).
        chan, chan2 : int
            Channel to segment (0 gray, 1-3 red/green/blue) and optional second channel.
        normalize : Normalization, optional
            Intensity scaling (default: 1st-99th percentile).
        resample : bool
            Flows on the input grid (True) or on the network grid (False).
        mode : {"3d", "stitch"}
            Views to run: all three, or YX planes only.
        progress : callable, optional
            ``progress(stage, done, total)``; stages "diameter", "YX", "ZX", "ZY".
        cancel : threading.Event, optional
            When set, the call raises :class:`nucseg_rt.errors.Cancelled` within one batch of
            tiles; the Segmenter stays usable.
        inputs : InputSpec, optional
            The axis/channel/normalisation settings as one object (instead of the keywords).

        Returns
        -------
        Flows
            ``flows`` (3, Z, Y, X) float32 and ``cellprob`` (Z, Y, X) float32, plus what
            :meth:`masks_from_flows` needs; unpacks as ``flows, cellprob``.
        """
        spec = inputs or InputSpec(channel_axis=channel_axis, z_axis=z_axis, chan=chan, chan2=chan2,
                                   normalize=normalize or Normalization())
        anisotropy = validate_positive("anisotropy", anisotropy)
        diameter = validate_diameter(diameter)
        if mode not in ("3d", "stitch"):
            raise InvalidInputError(f"`mode` must be '3d' or 'stitch', got {mode!r}")
        _check_cancel(cancel)
        info: dict = {}
        x, constant = self._prepare(vol, spec, info)
        shape = tuple(int(s) for s in x.shape[:3])
        info["shape"] = shape
        d = self._diameter(diameter, x, anisotropy=anisotropy, constant=constant, progress=progress,
                           cancel=cancel, info=info)
        rescale = self.rescale_for(d)
        info.update(rescale=rescale, anisotropy=anisotropy, diameter=d, mode=mode)
        if constant:
            zeros = np.zeros(shape, np.float32)
            return Flows(np.zeros((3, *shape), np.float32), zeros, shape, rescale, anisotropy, d,
                         resampled=True, mode=mode, constant_input=True, info=info)
        yf, grid = self._run_network(x, mode=mode, rescale=rescale, anisotropy=anisotropy,
                                     resample=resample, progress=progress, cancel=cancel, info=info)
        return Flows(yf[:3], yf[3], shape, rescale, anisotropy, d, resampled=bool(resample),
                     mode=mode, info=info, grid_flows=None if grid is None else grid[:3],
                     grid_cellprob=None if grid is None else grid[3])

    def estimate_diameter(self, vol: np.ndarray, *, anisotropy: float = 1.0,
                          inputs: InputSpec | None = None, progress: Progress | None = None,
                          cancel: threading.Event | None = None):
        """Estimate the typical nucleus diameter of ``vol`` as ``diameter="auto"`` does.

        For a sample of a larger volume (e.g. a few planes of a central block): give
        ``inputs.normalize`` fixed ``lowhigh`` bounds so it is scaled as the whole volume.

        Returns
        -------
        nucseg_rt.network.diameter.DiameterEstimate
            ``diameter`` in XY pixels of ``vol``; the model's default when the sample is constant
            (``fallback`` True).
        """
        from nucseg_rt.network.diameter import DiameterEstimate, estimate_diameter

        anisotropy = validate_positive("anisotropy", anisotropy)
        _check_cancel(cancel)
        x, constant = self._prepare(vol, inputs or InputSpec(), {})
        if constant:
            return DiameterEstimate(float(self.diam_labels), fallback=True)
        return estimate_diameter(self, x, anisotropy=anisotropy, progress=progress, cancel=cancel)

    # -- stage 2: the masks -------------------------------------------------------------------
    def masks_from_flows(self, flows: Flows, params: MaskParams | None = None, *,
                         cancel: threading.Event | None = None, **mask_params) -> np.ndarray:
        """Masks from a :meth:`predict_flows` result: exactly what :meth:`segment` gives for the
        same settings (3D and stitch mode).

        Parameters
        ----------
        flows : Flows
            From :meth:`predict_flows`; not modified, so it can be re-thresholded many times.
        params : MaskParams, optional
            The mask settings as one object; or give them as keywords (``cellprob_threshold``,
            ``min_size``, ``max_size_fraction``, ``niter``, ``method``, ``dp_smooth``,
            ``stitch_threshold``, ``flow_threshold``; see :class:`nucseg_rt.params.MaskParams`).
        cancel : threading.Event, optional
            Checked between steps; raises :class:`nucseg_rt.errors.Cancelled`.

        Returns
        -------
        masks : (Z, Y, X) uint16 or uint32
        """
        if params is not None and mask_params:
            raise InvalidInputError("give the mask settings either as `params` or as keywords, not both")
        params = params if params is not None else MaskParams.from_kwargs(**mask_params)
        return _masks_from_flows(flows, params, cancel=cancel)

    # -- stage 1 + 2 ---------------------------------------------------------------------------
    def segment(self, vol: np.ndarray, *, anisotropy: float = 1.0,
                diameter: float | Literal["auto"] | None = None,
                stitch_threshold: float = 0.0, dp_smooth: float = 0.0, min_size: int = 15,
                cellprob_threshold: float = 0.0, resample: bool = True, niter: int | None = None,
                flow_threshold: float | None = None, max_size_fraction: float = 0.4,
                dynamics_method: Literal["stable", "cellpose"] = "stable",
                channel_axis: int | None = None, z_axis: int | None = None, chan: int = 0,
                chan2: int = 0, normalize: Normalization | None = None,
                progress: Progress | None = None, cancel: threading.Event | None = None,
                params: MaskParams | None = None, inputs: InputSpec | None = None) -> SegmentationResult:
        """Segment a 3D volume: :meth:`predict_flows`, then :meth:`masks_from_flows`.

        Parameters
        ----------
        vol, anisotropy, diameter, resample, channel_axis, z_axis, chan, chan2, normalize, inputs
            As in :meth:`predict_flows`.
        stitch_threshold : float
            ``> 0``: each YX plane is segmented in 2D (with Cellpose's flow-error check,
            ``flow_threshold`` default 0.4) and masks are linked plane to plane when their IoU
            is above it; 0: flows are followed in 3D.
        dp_smooth : float
            Gaussian sigma smoothing the flows before the dynamics (0 = off).
        min_size : int
            Masks smaller than this many voxels are removed (``<= 0`` keeps all).
        cellprob_threshold : float
            Cell-probability logit above which a voxel is foreground; lower finds more nuclei.
        niter : int, optional
            Dynamics steps (default 200 at the network's scale, i.e. scaled by 1/rescale when
            ``resample``).
        flow_threshold : float, optional
            Stitch mode only (ignored in 3D, with a warning).
        max_size_fraction : float
            Masks larger than this fraction of the volume are removed.
        dynamics_method : {"stable", "cellpose"}
            3D flow following; "cellpose" is exactly Cellpose 3.1.
        progress : callable, optional
            ``progress(stage, done, total)``: "diameter", "YX", "ZX", "ZY".
        cancel : threading.Event, optional
            Raises :class:`nucseg_rt.errors.Cancelled` soon after it is set.
        params : MaskParams, optional
            All mask settings as one object (then the mask keywords above must stay at their
            defaults).

        Returns
        -------
        SegmentationResult
        """
        if params is None:
            params = MaskParams(cellprob_threshold=cellprob_threshold, min_size=min_size,
                                max_size_fraction=max_size_fraction, niter=niter, method=dynamics_method,
                                dp_smooth=dp_smooth, stitch_threshold=stitch_threshold,
                                flow_threshold=flow_threshold)
        t0 = time.perf_counter()
        flows = self.predict_flows(vol, anisotropy=anisotropy, diameter=diameter, channel_axis=channel_axis,
                                   z_axis=z_axis, chan=chan, chan2=chan2, normalize=normalize,
                                   resample=resample, mode="stitch" if params.stitch else "3d",
                                   progress=progress, cancel=cancel, inputs=inputs)
        info = dict(flows.info, dynamics=params.method)
        masks = _masks_from_flows(flows, params, cancel=cancel, info=info)
        info["seconds_total"] = time.perf_counter() - t0
        info["n_masks"] = int(masks.max()) if masks.size else 0
        return SegmentationResult(masks=masks, flows=flows.flows, cellprob=flows.cellprob, info=info)

    # -- resources: the onnxruntime sessions belong to this Segmenter -------------------------
    _closed = False

    @property
    def nets(self) -> list:
        """The main network of each stream; raises ClosedError after :meth:`close`."""
        if self._closed:
            raise ClosedError("this Segmenter was closed (close() or the end of its `with` "
                              "block); make a new Segmenter")
        return self._nets

    @nets.setter
    def nets(self, nets) -> None:
        self._nets = list(nets)

    def close(self) -> None:
        """Release the onnxruntime sessions of every stream (idempotent). Using the Segmenter
        afterwards raises :class:`nucseg_rt.errors.ClosedError`."""
        if self._closed:
            return
        for net in [*self._nets, *(self.nets_ortho or [])]:
            net.close()
        self.nets_ortho = None
        self._closed = True

    def __enter__(self) -> "Segmenter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

