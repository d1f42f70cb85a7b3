"""The public entry point: :class:`Segmenter` turns a volume into flows and 3D labels.

Two stages a user can run separately: :meth:`Segmenter.predict_flows` (the network, expensive)
and :func:`nucseg_rt.dynamics.compute_masks` (cheap, re-runnable with other thresholds).
:meth:`Segmenter.segment` runs both with Cellpose 3.1's ``eval(do_3D=True)`` semantics, or its
``stitch_threshold`` mode.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from nucseg_rt.prep import axes
from nucseg_rt.masks import dynamics
from nucseg_rt.masks import postprocess
from nucseg_rt.prep import normalize as preprocess
from nucseg_rt.masks import stitch
from nucseg_rt.errors import ClosedError, InvalidInputError
from nucseg_rt.prep.filters import smooth_flows
from nucseg_rt.prep.resample import (rescale_volume, resize_flows_back, resize_labels_3d, resize_linear,
                                 resize_nearest)
from nucseg_rt.network.predict import (Device, Progress, WorkAvoidance, load_net, run_3d, run_planes,
                               select_providers)
from nucseg_rt.network.tiling import is_tile_size

logger = logging.getLogger("nucseg_rt")

Precision = Literal["fp32", "int8", "fp16"]
CPU_BATCH_SIZE = 2
GPU_BATCH_SIZE = 8
DEFAULT_CPU_STREAMS = 2
#: on by default where measured to keep masks at AP@0.5 >= 0.99 against the plain run
#: (benchmarks/work_avoidance.py, docs/benchmarks.md): background tiles everywhere; YX on the
#: acquired planes and compact tiles up to anisotropy 8 (at 11.5 they moved AP to 0.98-0.99)
DEFAULT_WORK_AVOIDANCE = WorkAvoidance(native_yx=True, compact_tiles=True, background_bound=0.05,
                                       max_anisotropy=8.0)


@dataclass(frozen=True)
class Normalization:
    """How the image is scaled to 0..1 before the network (Cellpose ``normalize`` params).

    ``percentile`` low/high; ``lowhigh`` fixed values instead of percentiles; ``tile_norm``
    block size for tiled normalisation (0 = off); ``sharpen_radius`` high-pass radius (0 = off);
    ``invert`` for dark nuclei.
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


@dataclass
class SegmentationResult:
    """Output of :meth:`Segmenter.segment`.

    Attributes
    ----------
    masks : (Z, Y, X) uint16 or uint32
        Labels 1..N, 0 = background, on the input grid.
    flows : (3, Z, Y, X) float32
        Z, Y, X flows at network scale (x5), on the input grid (network grid if ``resample=False``).
    cellprob : (Z, Y, X) float32
        Cell probability logits (sum over views in 3D), same grid as ``flows``.
    info : dict
        Parameters actually used (rescale, niter, axes guesses) and seconds per stage.
    """

    masks: np.ndarray
    flows: np.ndarray
    cellprob: np.ndarray
    info: dict = field(default_factory=dict)


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


def _validate_positive(name: str, value) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise InvalidInputError(f"`{name}` must be a number > 0, got {value!r}") from None
    if not np.isfinite(v) or v <= 0:
        raise InvalidInputError(f"`{name}` must be > 0, got {value!r}")
    return v


def _validate_segment_args(stitch_threshold, dp_smooth, cellprob_threshold, niter, min_size) -> None:
    if not 0 <= float(stitch_threshold) < 1:
        raise InvalidInputError(f"`stitch_threshold` must be in [0, 1), got {stitch_threshold!r}")
    if not np.isfinite(dp_smooth) or dp_smooth < 0:
        raise InvalidInputError(f"`dp_smooth` must be >= 0, got {dp_smooth!r}")
    if not np.isfinite(cellprob_threshold):
        raise InvalidInputError(f"`cellprob_threshold` must be finite, got {cellprob_threshold!r}")
    if niter is not None and (int(niter) != niter or niter < 0):
        raise InvalidInputError(f"`niter` must be a whole number >= 0, got {niter!r}")
    if int(min_size) != min_size:
        raise InvalidInputError(f"`min_size` must be a whole number, got {min_size!r}")


class Segmenter:
    """Segment nuclei in 3D volumes with a Cellpose 3 network exported to ONNX.

    Parameters
    ----------
    model : str or path-like
        A registered model name (``"nuclei_3d"`` is bundled) or an ``.onnx`` file.
    ortho : path-like, optional
        ONNX network for ZY/ZX planes (default: the model's registered/embedded partner, if any).
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
        if precision == "fp16" and on_cpu:
            raise InvalidInputError("`precision` 'fp16' runs on CUDA only (onnxruntime has no fast "
                                    "fp16 CPU kernels); on the CPU use 'int8' or 'fp32'")
        self.model = registry.resolve_model(model, ortho=ortho, precision=precision)
        if use_probe and on_cpu and None in (batch_size, threads, streams):
            from nucseg_rt.models.probe import probe_defaults  # `nucseg-rt info --probe --save`

            batch_size, threads, streams = probe_defaults(precision, batch_size=batch_size,
                                                          threads=threads, streams=streams)
        if streams is None:  # CPU: two streams were faster than one on both 2-core CPUs measured
            streams = (min(DEFAULT_CPU_STREAMS, os.cpu_count() or 1) if on_cpu and threads is None
                       else 1)
        streams = int(streams)
        if threads is None and streams > 1:
            threads = max(1, (os.cpu_count() or 1) // streams)
        self.nets = [load_net(self.model.path, providers, threads, replica=k)
                     for k in range(streams)]
        self.nets_ortho = ([load_net(self.model.ortho_path, providers, threads, replica=k)
                            for k in range(streams)] if self.model.ortho_path is not None else None)
        self.streams, self.threads = streams, threads
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

    # -- stage 1 -------------------------------------------------------------------------------
    def _prepare(self, vol, channel_axis, z_axis, chan, chan2, normalize: Normalization,
                 info: dict) -> np.ndarray:
        x, notes = axes.to_zyxc(vol, channel_axis=channel_axis, z_axis=z_axis,
                                chan=chan, chan2=chan2, nchan=self.net.info.nchan)
        info["axes"] = list(notes)
        info["constant_input"] = all(x[..., c].min() == x[..., c].max() for c in range(x.shape[-1]))
        x = preprocess.normalize(x, percentile=normalize.percentile, lowhigh=normalize.lowhigh,
                                 tile_norm=normalize.tile_norm,
                                 sharpen_radius=normalize.sharpen_radius, invert=normalize.invert,
                                 copy=False)
        # trailing all-zero channels (the zeros Cellpose appends) are re-created per tile
        keep = x.shape[-1]
        while keep > 1 and not x[..., keep - 1].any():
            keep -= 1
        return np.ascontiguousarray(x[..., :keep]) if keep < x.shape[-1] else x

    def _rescale(self, diameter) -> float:
        if diameter is None or diameter == 0:
            return self.diam_mean / self.diam_labels
        return self.diam_mean / _validate_positive("diameter", diameter)

    def _flows_3d(self, x, *, rescale, anisotropy, resample, progress, info) -> np.ndarray:
        shape = x.shape[:3]
        t0 = time.perf_counter()
        xr = rescale_volume(x, rescale=rescale, anisotropy=anisotropy,
                                     nchan=self.net.info.nchan)
        info["network_shape"] = tuple(int(s) for s in xr.shape[:3])
        native, avoid = None, self.avoid.at(anisotropy)
        if avoid.native_yx and xr.shape[0] > x.shape[0]:
            native = (resize_linear(x, *xr.shape[1:3]) if xr.shape[1:3] != x.shape[1:3]
                      else np.ascontiguousarray(x, np.float32))
        del x
        stats: dict = {}
        yf = run_3d(self.nets, xr, net_ortho=self.nets_ortho, batch_size=self.batch_size,
                    bsize=self.bsize, tile_overlap=self.tile_overlap, progress=progress,
                    avoid=avoid, yx_native=native, stats=stats)
        info["tiles"] = stats
        del xr, native
        info["seconds_network"] = time.perf_counter() - t0
        if resample and yf.shape[1:] != shape:
            yf = _resize_channels_back(yf, shape)
        return yf

    def predict_flows(self, vol: np.ndarray, *, anisotropy: float = 1.0, diameter: float | None = None,
                      channel_axis: int | None = None, z_axis: int | None = None, chan: int = 0,
                      chan2: int = 0, normalize: Normalization | None = None, resample: bool = True,
                      progress: Progress | None = None, info: dict | None = None):
        """Run the network over YX, ZY and ZX planes (Cellpose 3.1 ``do_3D=True``).

        With ``work_avoidance="plain"`` the flows equal Cellpose's; the default skips work
        (see :class:`nucseg_rt.network.predict.WorkAvoidance`) and gives flows that differ slightly.

        Parameters
        ----------
        vol : array
            3D volume ``(Z, Y, X)``, ``(Z, C, Y, X)`` or any order given ``channel_axis``/``z_axis``.
        anisotropy : float
            Z step / XY pixel size (e.g. 11.5 when Z is 11.5x coarser).
        diameter : float, optional
            Typical nucleus diameter in XY pixels (default: the model's training diameter).
        resample : bool
            Return flows on the input grid (True) or on the network grid (False).

        Returns
        -------
        flows : (3, Z, Y, X) float32
            Z, Y, X flows (network scale).
        cellprob : (Z, Y, X) float32
            Summed cell-probability logits.
        """
        info = {} if info is None else info
        normalize = normalize or Normalization()
        anisotropy = _validate_positive("anisotropy", anisotropy)
        rescale = self._rescale(diameter)
        info.update(rescale=rescale, anisotropy=anisotropy)
        x = self._prepare(vol, channel_axis, z_axis, chan, chan2, normalize, info)
        info["shape"] = tuple(int(s) for s in x.shape[:3])
        yf = self._flows_3d(x, rescale=rescale, anisotropy=anisotropy, resample=resample,
                            progress=progress, info=info)
        return yf[:3], yf[3]

    # -- stage 1 + 2 ---------------------------------------------------------------------------
    def segment(self, vol: np.ndarray, *, anisotropy: float = 1.0, diameter: float | None = None,
                stitch_threshold: float = 0.0, dp_smooth: float = 0.0, min_size: int = 15,
                cellprob_threshold: float = 0.0, resample: bool = True, niter: int | None = None,
                flow_threshold: float | None = None, max_size_fraction: float = 0.4,
                dynamics_method: Literal["stable", "cellpose"] = "stable",
                channel_axis: int | None = None, z_axis: int | None = None, chan: int = 0,
                chan2: int = 0, normalize: Normalization | None = None,
                progress: Progress | None = None) -> SegmentationResult:
        """Segment a 3D volume: flows from the network, then masks from the flows.

        With ``stitch_threshold > 0`` each YX plane is segmented in 2D (with Cellpose's flow-error
        check, ``flow_threshold`` default 0.4) and masks are linked plane to plane by IoU;
        otherwise flows are followed in 3D (``flow_threshold`` does not apply and is ignored
        with a warning). ``niter`` defaults to 200, scaled by 1/rescale when ``resample``.
        See :class:`SegmentationResult` for the outputs.
        """
        _validate_segment_args(stitch_threshold, dp_smooth, cellprob_threshold, niter, min_size)
        info: dict = {"dynamics": dynamics_method}
        t0 = time.perf_counter()
        if stitch_threshold > 0:
            res = self._segment_stitched(vol, diameter=diameter, stitch_threshold=stitch_threshold,
                                         min_size=min_size, cellprob_threshold=cellprob_threshold,
                                         resample=resample, niter=niter,
                                         flow_threshold=0.4 if flow_threshold is None else flow_threshold,
                                         max_size_fraction=max_size_fraction,
                                         channel_axis=channel_axis, z_axis=z_axis, chan=chan,
                                         chan2=chan2, normalize=normalize, progress=progress, info=info)
        else:
            if flow_threshold is not None:
                logger.warning("flow_threshold applies to 2D/stitch mode only; ignored in 3D")
            flows, cellprob = self.predict_flows(
                vol, anisotropy=anisotropy, diameter=diameter, channel_axis=channel_axis,
                z_axis=z_axis, chan=chan, chan2=chan2, normalize=normalize, resample=resample,
                progress=progress, info=info)
            if dp_smooth > 0:
                flows = smooth_flows(flows, dp_smooth)
            if info["constant_input"]:
                logger.warning("the volume is constant: no nuclei to find")
                masks = np.zeros(info["shape"], np.uint16)
            else:
                masks = self._masks_3d(flows, cellprob, info=info, resample=resample, niter=niter,
                                       cellprob_threshold=cellprob_threshold, min_size=min_size,
                                       max_size_fraction=max_size_fraction, method=dynamics_method)
            res = SegmentationResult(masks=masks, flows=flows, cellprob=cellprob, info=info)
        info["seconds_total"] = time.perf_counter() - t0
        info["n_masks"] = int(res.masks.max()) if res.masks.size else 0
        return res

    def _niter(self, niter, resample: bool, rescale: float) -> int:
        if niter:
            return int(niter)
        return int(200 / rescale) if resample else 200

    def _masks_3d(self, flows, cellprob, *, info, resample, niter, cellprob_threshold, min_size,
                  max_size_fraction, method) -> np.ndarray:
        t0 = time.perf_counter()
        n = self._niter(niter, resample, info["rescale"])
        info["niter"] = n
        masks = dynamics.compute_masks(flows, cellprob, niter=n, cellprob_threshold=cellprob_threshold,
                                       min_size=-1, max_size_fraction=max_size_fraction, method=method)
        if masks.shape != info["shape"]:
            masks = resize_labels_3d(masks, info["shape"])
        masks = postprocess.fill_holes_and_remove_small_masks(masks, min_size=min_size)
        info["seconds_dynamics"] = time.perf_counter() - t0
        return masks

    def _segment_stitched(self, vol, *, diameter, stitch_threshold, min_size, cellprob_threshold,
                          resample, niter, flow_threshold, max_size_fraction, channel_axis, z_axis,
                          chan, chan2, normalize, progress, info) -> SegmentationResult:
        normalize = normalize or Normalization()
        rescale = self._rescale(diameter)
        info.update(rescale=rescale, mode="stitch")
        x = self._prepare(vol, channel_axis, z_axis, chan, chan2, normalize, info)
        nz, ly, lx = x.shape[:3]
        info["shape"] = (nz, ly, lx)
        if info["constant_input"]:
            logger.warning("the volume is constant: no nuclei to find")
            zeros = np.zeros((nz, ly, lx), np.float32)
            return SegmentationResult(masks=np.zeros((nz, ly, lx), np.uint16),
                                      flows=np.zeros((3, nz, ly, lx), np.float32), cellprob=zeros,
                                      info=info)
        t0 = time.perf_counter()
        if rescale != 1.0:
            x = resize_linear(x, int(ly * rescale), int(lx * rescale))
        yf = np.zeros((*x.shape[:3], 3), np.float32)

        def sink(i, out):
            yf[i] = out.transpose(1, 2, 0)

        run_planes(self.nets, x, batch_size=self.batch_size, bsize=self.bsize,
                   tile_overlap=self.tile_overlap, sink=sink, progress=progress, label="YX",
                   avoid=self.avoid)
        del x
        if resample and yf.shape[1:3] != (ly, lx):
            yf = resize_linear(yf, ly, lx)
        info["seconds_network"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        n = self._niter(niter, resample, rescale)
        info["niter"] = n
        masks = np.zeros((nz, ly, lx), np.uint32)
        for z in range(nz):
            dP = np.ascontiguousarray(yf[z, :, :, :2].transpose(2, 0, 1))
            m = dynamics.compute_masks(dP, yf[z, :, :, 2], niter=n, cellprob_threshold=cellprob_threshold,
                                       min_size=-1, max_size_fraction=max_size_fraction,
                                       method="cellpose", flow_threshold=flow_threshold)
            if m.shape != (ly, lx):
                m = resize_nearest(m, ly, lx)
            masks[z] = postprocess.fill_holes_and_remove_small_masks(m, min_size=-1)
        masks = stitch.stitch3d(masks, stitch_threshold)
        masks = postprocess.fill_holes_and_remove_small_masks(masks, min_size=min_size)
        info["seconds_dynamics"] = time.perf_counter() - t0
        flows = np.zeros((3, *yf.shape[:3]), np.float32)
        flows[1:] = np.moveaxis(yf[..., :2], -1, 0)
        return SegmentationResult(masks=masks, flows=flows, cellprob=np.ascontiguousarray(yf[..., 2]),
                                  info=info)

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
