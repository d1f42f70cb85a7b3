"""The public entry point: :class:`Segmenter` turns a volume into flows and 3D labels.

Two stages a user can run separately and that together give exactly :meth:`Segmenter.segment`:
:meth:`Segmenter.predict_flows` (the network, expensive; returns a :class:`Flows` result) and
:meth:`Segmenter.masks_from_flows` (cheap, re-runnable with other thresholds). Both follow
Cellpose 3.1's ``eval(do_3D=True)`` semantics, or its ``stitch_threshold`` mode.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Literal

import numpy as np

from nucseg_rt.errors import check_cancel
from nucseg_rt.masks.assemble import masks_from_flows as _masks_from_flows
from nucseg_rt.network.engine import Engine, EngineOptions, WorkAvoidanceChoice, model_agreement
from nucseg_rt.network.predict import Progress, uses_cuda
from nucseg_rt.params import (MODES, Backend, Device, DynamicsMethod, InputSpec, MaskParams, Mode,
                              Normalization, Precision, file_precision, settings_or_keywords,
                              validate_choice, validate_diameter, validate_positive)
from nucseg_rt.prep import normalize, to_zyxc
from nucseg_rt.results import Flows, RunInfo, SegmentationResult

logger = logging.getLogger("nucseg_rt")

__all__ = ["Segmenter", "SegmentationResult", "Flows", "Normalization", "MaskParams", "InputSpec",
           "EngineOptions"]


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
    device : {"auto", "cpu", "cuda"}, optional
        ``"auto"`` (default) uses CUDA when onnxruntime offers it, else the CPU.
    precision : {"fp32", "int8", "fp16", "bf16"}, optional
        Model variant; fp32 (default) is the reference. int8 runs the registered model's quantized
        variant (the bundled ``nuclei_3d`` ships one; ``nucseg-rt quantize NAME`` makes one);
        fp16 is for CUDA only; bf16 runs the fp32 file in bf16 arithmetic with ``backend``
        "openvino", on CPUs with native bf16 only.
    backend : {"auto", "onnxruntime", "openvino"}, optional
        The network engine (default "auto": onnxruntime fp32, or with precision "fp32" on the
        CPU a run measured faster whose masks the model's metadata records as agreeing with
        fp32's at AP@0.5 >= 0.99: OpenVINO bf16 where it is installed and the CPU has bf16,
        see :func:`nucseg_rt.network.engine.resolve_backend`; :attr:`backend` and
        ``engine.backend`` say what runs and why). "openvino" runs the same ONNX files
        with OpenVINO on the CPU (``pip install 'nucseg-rt[openvino]'``).
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
    tile_overlap : float, optional
        Overlap of neighbouring tiles as a fraction of the tile (default Cellpose's 0.1).
    bsize : int, optional
        Tile edge in pixels, a multiple of 16 in [64, 1024]; 224 (default) is Cellpose's and the parity
        reference. Other sizes change the flows slightly (each tile's style vector and the
        blending); on a 2-core CPU the network's cost per pixel hardly depends on it, but tiles
        that hold a whole plane avoid computing overlaps (measured in docs/benchmarks.md).
    work_avoidance : WorkAvoidance, "default" or "plain", optional
        Network work skipped (default "default", see
        :class:`nucseg_rt.network.predict.WorkAvoidance`); "plain" computes exactly what
        Cellpose 3.1 computes (the parity reference).
    use_probe : bool, optional
        On the CPU, take ``batch_size``, ``threads`` and ``streams`` not given from the results
        ``nucseg-rt info --probe --save`` stored in ``probe.json`` in the registry folder (the
        values taken are logged at INFO; default True). False: ignore that file.
    engine : EngineOptions, optional
        All the settings from ``device`` to ``use_probe`` as one object, instead of those
        keywords (giving both is an InvalidInputError naming the keywords).

    Use it as a context manager (``with Segmenter(...) as seg:``) or call :meth:`close` to
    join its stream threads and release its onnxruntime sessions when done. The network stage
    is :attr:`engine` (a :class:`nucseg_rt.network.engine.Engine`).
    """

    def __init__(self, model: str | os.PathLike = "nuclei_3d", ortho: str | os.PathLike | None = None,
                 device: Device | None = None, precision: Precision | None = None, *,
                 backend: Backend | None = None, threads: int | None = None,
                 batch_size: int | None = None,
                 streams: int | None = None, tile_overlap: float | None = None,
                 bsize: int | None = None,
                 work_avoidance: WorkAvoidanceChoice | None = None,
                 use_probe: bool | None = None, engine: EngineOptions | None = None):
        from nucseg_rt.models import registry

        options = settings_or_keywords(engine, "engine", EngineOptions, dict(
            device=device, precision=precision, backend=backend, threads=threads,
            batch_size=batch_size,
            streams=streams, tile_overlap=tile_overlap, bsize=bsize,
            work_avoidance=work_avoidance, use_probe=use_probe))
        options.providers()  # what was asked runs here (device, precision) before any file
        self.model = registry.resolve_model(model, ortho=ortho, precision=options.precision)
        # "auto" decided for this model (its measured agreement with fp32), then concrete
        asked = options.precision
        options, choice = options.resolved(model_agreement(self.model.metadata))
        if file_precision(choice.precision) != file_precision(asked):
            self.model = registry.resolve_model(model, ortho=ortho, precision=choice.precision)
        providers = options.providers()
        if (options.use_probe and choice.backend == "onnxruntime"
                and not uses_cuda(providers)):
            options = _with_probe(options)
        self.options = options
        # checked when the model was resolved (modelfile.inspect_model); empty: always
        min_anisotropy = float((self.model.ortho_metadata or {}).get("min_anisotropy") or 0.0)
        self.engine = Engine(self.model.path, self.model.ortho_path, options=options,
                             providers=providers, ortho_min_anisotropy=min_anisotropy,
                             choice=choice)
        logger.info("model %s on %s (%s): %s", self.model.name, self.device,
                    ", ".join(self.engine.providers), self.engine.backend)

    # -- what it runs with (the engine's, after the defaults were filled in) ---------------------
    @property
    def device(self) -> str:
        return self.engine.device

    @property
    def precision(self) -> str:
        return self.options.precision

    @property
    def backend(self) -> str:
        """The network engine that runs ("onnxruntime" or "openvino"; "auto" resolved; under
        ``auto``'s size rule, ``engine.backend.floor``, smaller passes run on onnxruntime fp32:
        each result's ``run.network`` says which ran)."""
        return self.engine.backend.backend

    @property
    def batch_size(self) -> int:
        return self.engine.batch_size

    @property
    def threads(self) -> int | None:
        return self.engine.threads

    @property
    def streams(self) -> int:
        return self.engine.streams

    @property
    def net(self):
        """The main network (of the first stream)."""
        return self.engine.nets[0]

    @property
    def diam_mean(self) -> float:
        return self.engine.info.diam_mean

    @property
    def diam_labels(self) -> float:
        return self.engine.info.diam_labels

    @property
    def mask_defaults(self):
        """The model's :class:`~nucseg_rt.params.MaskDefaults` (threshold, size filter, view
        weight), from its metadata."""
        return self.engine.info.mask_defaults

    def rescale_for(self, diameter: float | None) -> float:
        """XY zoom before the network for a nucleus ``diameter`` (None: the model's default):
        ``diam_mean / diameter``, the one rescale rule (whole-volume, blockwise and memory
        estimates)."""
        return self.diam_mean / float(diameter or self.diam_labels)

    # -- stage 1: the network -------------------------------------------------------------------
    def _prepare(self, vol, spec: InputSpec) -> tuple[np.ndarray, bool, tuple]:
        """Normalised ``(Z, Y, X, C)`` float32 volume, whether the input was constant, and the
        axis decisions."""
        x, notes = to_zyxc(vol, channel_axis=spec.channel_axis, z_axis=spec.z_axis,
                           time_axis=spec.time_axis,
                           chan=spec.chan, chan2=spec.chan2, nchan=self.engine.info.nchan)
        constant = all(x[..., c].min() == x[..., c].max() for c in range(x.shape[-1]))
        nm = spec.normalize
        x = normalize(x, percentile=nm.percentile, lowhigh=nm.lowhigh, tile_norm=nm.tile_norm,
                      sharpen_radius=nm.sharpen_radius, invert=nm.invert, copy=False)
        # trailing all-zero channels (the zeros Cellpose appends) are re-created per tile
        keep = x.shape[-1]
        while keep > 1 and not x[..., keep - 1].any():
            keep -= 1
        x = np.ascontiguousarray(x[..., :keep]) if keep < x.shape[-1] else x
        return x, constant, tuple(notes)

    def _diameter(self, diameter, x, *, anisotropy: float, constant: bool, progress,
                  cancel) -> tuple[float, str, dict | None]:
        """The diameter to run at (given, the model's default, or estimated for ``"auto"``),
        where it came from, and the estimate."""
        if diameter is None:
            return self.diam_labels, "model default", None
        if diameter != "auto":
            return float(diameter), "given", None
        if constant:
            return self.diam_labels, "model default (constant input, nothing to estimate)", None
        from nucseg_rt.diameter import estimate_diameter

        est = estimate_diameter(self.engine, x, anisotropy=anisotropy, progress=progress,
                                cancel=cancel)
        logger.info("estimated nucleus diameter: %.1f px (%s)", est.diameter, est.summary())
        return est.diameter, "auto", est.as_dict()

    def predict_flows(self, vol: np.ndarray, *, anisotropy: float = 1.0,
                      diameter: float | Literal["auto"] | None = None,
                      channel_axis: int | None = None, z_axis: int | None = None,
                      chan: int | None = None, chan2: int | None = None,
                      normalize: Normalization | None = None, resample: bool = True,
                      mode: Mode = "3d", progress: Progress | None = None,
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
            :func:`nucseg_rt.diameter.estimate_diameter`); the estimate is logged and kept
            in ``Flows.run.diameter_estimate``.
        channel_axis, z_axis : int, optional
            Axes of ``vol`` holding channels and Z (default: guessed, and logged).
        chan, chan2 : int, optional
            Channel to segment (0 gray, the default; 1-3 red/green/blue) and optional second
            channel (0 none).
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
            The axis/channel/normalisation settings as one object, instead of ``channel_axis``,
            ``z_axis``, ``chan``, ``chan2`` and ``normalize`` (giving both is an
            InvalidInputError).

        Returns
        -------
        Flows
            ``flows`` (3, Z, Y, X) float32 and ``cellprob`` (Z, Y, X) float32, plus what
            :meth:`masks_from_flows` needs; unpacks as ``flows, cellprob``.
        """
        spec = settings_or_keywords(inputs, "inputs", InputSpec, dict(
            channel_axis=channel_axis, z_axis=z_axis, chan=chan, chan2=chan2, normalize=normalize))
        anisotropy = validate_positive("anisotropy", anisotropy)
        diameter = validate_diameter(diameter)
        validate_choice("mode", mode, MODES)
        check_cancel(cancel)
        x, constant, notes = self._prepare(vol, spec)
        shape = tuple(int(s) for s in x.shape[:3])
        d, source, estimate = self._diameter(diameter, x, anisotropy=anisotropy, constant=constant,
                                             progress=progress, cancel=cancel)
        rescale = self.rescale_for(d)
        run = RunInfo(shape, notes, anisotropy, d, source, rescale, mode, estimate)
        if constant:
            zeros = np.zeros(shape, np.float32)
            return Flows(np.zeros((3, *shape), np.float32), zeros, shape, rescale, anisotropy, d,
                         resampled=True, mode=mode, constant_input=True, run=run,
                         mask_defaults=self.mask_defaults)
        yf, grid, net = self.engine.predict(x, mode=mode, rescale=rescale, anisotropy=anisotropy,
                                            resample=resample, progress=progress, cancel=cancel)
        run = dataclasses.replace(run, network_shape=net.network_shape, ortho=net.ortho,
                                  tiles=net.tiles if mode == "3d" else None,
                                  seconds_network=net.seconds, dynamics_grid=net.dynamics_grid,
                                  network=str(net.network),
                                  engine=f"{net.network.backend} {net.network.precision}")
        return Flows(yf[:3], yf[3], shape, rescale, anisotropy, d, resampled=bool(resample),
                     mode=mode, run=run, grid_flows=None if grid is None else grid[:3],
                     grid_cellprob=None if grid is None else grid[3],
                     mask_defaults=self.mask_defaults)

    def estimate_diameter(self, vol: np.ndarray, *, anisotropy: float = 1.0,
                          inputs: InputSpec | None = None, progress: Progress | None = None,
                          cancel: threading.Event | None = None):
        """Estimate the typical nucleus diameter of ``vol`` as ``diameter="auto"`` does.

        For a sample of a larger volume (e.g. a few planes of a central block): give
        ``inputs.normalize`` fixed ``lowhigh`` bounds so it is scaled as the whole volume.

        Returns
        -------
        nucseg_rt.diameter.DiameterEstimate
            ``diameter`` in XY pixels of ``vol``; the model's default when the sample is constant
            (``fallback`` True).
        """
        from nucseg_rt.diameter import DiameterEstimate, estimate_diameter

        anisotropy = validate_positive("anisotropy", anisotropy)
        check_cancel(cancel)
        x, constant, _ = self._prepare(vol, inputs or InputSpec())
        if constant:
            return DiameterEstimate(float(self.diam_labels), fallback=True)
        return estimate_diameter(self.engine, x, anisotropy=anisotropy, progress=progress,
                                 cancel=cancel)

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
        params = settings_or_keywords(params, "params", MaskParams, mask_params,
                                      build=MaskParams.from_kwargs)
        return _masks_from_flows(flows, params, cancel=cancel)

    # -- stage 1 + 2 ---------------------------------------------------------------------------
    def segment(self, vol: np.ndarray, *, anisotropy: float = 1.0,
                diameter: float | Literal["auto"] | None = None,
                stitch_threshold: float | None = None, dp_smooth: float | None = None,
                min_size: int | None = None, cellprob_threshold: float | None = None,
                resample: bool = True, niter: int | None = None,
                flow_threshold: float | None = None, max_size_fraction: float | None = None,
                dynamics_method: DynamicsMethod | None = None,
                channel_axis: int | None = None, z_axis: int | None = None,
                chan: int | None = None, chan2: int | None = None,
                normalize: Normalization | None = None,
                progress: Progress | None = None, cancel: threading.Event | None = None,
                params: MaskParams | None = None, inputs: InputSpec | None = None) -> SegmentationResult:
        """Segment a 3D volume: :meth:`predict_flows`, then :meth:`masks_from_flows`.

        Parameters
        ----------
        vol, anisotropy, diameter, resample, channel_axis, z_axis, chan, chan2, normalize, inputs
            As in :meth:`predict_flows`.
        stitch_threshold : float, optional
            ``> 0``: each YX plane is segmented in 2D (with Cellpose's flow-error check,
            ``flow_threshold`` default 0.4) and masks are linked plane to plane when their IoU
            is above it; 0 (default): flows are followed in 3D.
        dp_smooth : float, optional
            Gaussian sigma smoothing the flows before the dynamics (default 0 = off).
        min_size : int, optional
            Masks smaller than this many voxels are removed (default 15; ``<= 0`` keeps all).
        cellprob_threshold : float, optional
            Cell-probability logit above which a voxel is foreground (default 0); lower finds
            more nuclei.
        niter : int, optional
            Dynamics steps (default 200 at the network's scale, i.e. scaled by 1/rescale when
            ``resample``).
        flow_threshold : float, optional
            Stitch mode only (ignored in 3D, with a warning).
        max_size_fraction : float, optional
            Masks larger than this fraction of the volume are removed (default 0.4).
        dynamics_method : {"stable", "cellpose"}, optional
            3D flow following (default "stable"); "cellpose" is exactly Cellpose 3.1.
        progress : callable, optional
            ``progress(stage, done, total)``: "diameter", "YX", "ZX", "ZY".
        cancel : threading.Event, optional
            Raises :class:`nucseg_rt.errors.Cancelled` soon after it is set.
        params : MaskParams, optional
            All mask settings as one object, instead of the mask keywords above (giving both is
            an InvalidInputError naming the keywords). A keyword left out (None) takes the
            :class:`~nucseg_rt.params.MaskParams` default.

        Returns
        -------
        SegmentationResult
            A time-lapse (``inputs.time_axis`` set): ``masks`` (T, Z, Y, X), each frame segmented
            as its own volume with labels restarting per frame (see :meth:`segment_frames` for
            linked labels and for data larger than memory); ``flows`` and ``cellprob`` are None
            (not kept per frame), ``run`` is the last frame's.
        """
        params = settings_or_keywords(params, "params", MaskParams, dict(
            cellprob_threshold=cellprob_threshold, min_size=min_size,
            max_size_fraction=max_size_fraction, niter=niter, method=dynamics_method,
            dp_smooth=dp_smooth, stitch_threshold=stitch_threshold, flow_threshold=flow_threshold))
        t0 = time.perf_counter()
        if inputs is not None and getattr(inputs, "time_axis", None) is not None:
            settings_or_keywords(inputs, "inputs", InputSpec, dict(  # both given: refused
                channel_axis=channel_axis, z_axis=z_axis, chan=chan, chan2=chan2,
                normalize=normalize))
            return self._segment_time_lapse(vol, anisotropy, diameter, resample, params, inputs,
                                            progress, cancel, t0)
        flows = self.predict_flows(vol, anisotropy=anisotropy, diameter=diameter, channel_axis=channel_axis,
                                   z_axis=z_axis, chan=chan, chan2=chan2, normalize=normalize,
                                   resample=resample, mode="stitch" if params.stitch else "3d",
                                   progress=progress, cancel=cancel, inputs=inputs)
        info = dict(flows.info, dynamics=params.method)
        masks = _masks_from_flows(flows, params, cancel=cancel, info=info)
        result = SegmentationResult(masks=masks, flows=flows.flows, cellprob=flows.cellprob,
                                    info=info, run=flows.run)
        info.update(seconds_total=time.perf_counter() - t0, n_masks=result.n_masks)
        return result

    def _segment_time_lapse(self, vol, anisotropy, diameter, resample, params, inputs,
                            progress, cancel, t0) -> SegmentationResult:
        masks, last = [], None
        from nucseg_rt.timelapse import array_frames

        for _, labels, result in array_frames(self, vol, time_axis=None, frames=None,
                                              link=False, anisotropy=anisotropy,
                                              diameter=diameter, resample=resample,
                                              params=params, inputs=inputs, progress=progress,
                                              cancel=cancel):
            masks.append(labels)
            last = result
        stack = np.stack(masks)
        info = dict(last.info, n_frames=len(masks), seconds_total=time.perf_counter() - t0)
        result = SegmentationResult(masks=stack, flows=None, cellprob=None, info=info,
                                    run=last.run)
        info["n_masks"] = result.n_masks
        return result

    def segment_frames(self, vol, *, time_axis: int | None = None,
                       frames: str | Sequence[int] | None = None, link: bool = False,
                       anisotropy: float = 1.0, diameter: float | Literal["auto"] | None = None,
                       resample: bool = True, params: MaskParams | None = None,
                       inputs: InputSpec | None = None, progress: Progress | None = None,
                       cancel: threading.Event | None = None) -> Iterator[tuple[int, np.ndarray]]:
        """Segment a time-lapse one frame at a time, each frame as its own volume.

        Parameters
        ----------
        vol : array
            The time-lapse, e.g. (T, Z, Y, X) or (T, Z, C, Y, X): a numpy array, or an array
            read on indexing (a zarr array, never loaded whole). Not modified.
        time_axis : int, optional
            Axis of the time points (or ``inputs.time_axis``; giving both differently is an
            InvalidInputError).
        frames : str or sequence of int, optional
            Frames to segment, e.g. ``"0-9,20"`` or ``[0, 5]`` (default all), yielded in order.
        link : bool
            Relabel so that a nucleus keeps its label from one yielded frame to the next
            (matched by overlap, :class:`nucseg_rt.masks.link.FrameLinker`); False: labels
            restart per frame.
        anisotropy, diameter, resample, params, inputs, progress, cancel
            As in :meth:`segment` (``diameter="auto"``: estimated per frame). ``progress``
            also receives ``("frame", done, total)``.

        Yields
        ------
        t : int
            The frame number.
        masks : (Z, Y, X) uint16 or uint32
            Its labels.

        Examples
        --------
        >>> for t, masks in seg.segment_frames(movie, time_axis=0, link=True):  # doctest: +SKIP
        ...     save(t, masks)
        """
        from nucseg_rt.timelapse import array_frames

        for t, masks, _ in array_frames(self, vol, time_axis=time_axis, frames=frames, link=link,
                                        anisotropy=anisotropy, diameter=diameter,
                                        resample=resample, params=params, inputs=inputs,
                                        progress=progress, cancel=cancel):
            yield t, masks

    # -- resources: the engine (sessions, stream threads) belongs to this Segmenter -------------
    def close(self) -> None:
        """Join the stream threads and release the onnxruntime sessions (idempotent). Using the
        Segmenter afterwards raises :class:`nucseg_rt.errors.ClosedError`."""
        self.engine.close()

    def __enter__(self) -> Segmenter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _with_probe(options: EngineOptions) -> EngineOptions:
    """``options`` with ``batch_size``, ``threads`` and ``streams`` not given taken from the
    saved probe (``nucseg-rt info --probe --save``; CPU only)."""
    if None not in (options.batch_size, options.threads, options.streams):
        return options
    from nucseg_rt.models import probe_defaults

    batch_size, threads, streams = probe_defaults(options.precision, batch_size=options.batch_size,
                                                  threads=options.threads, streams=options.streams)
    return options.replace(batch_size=batch_size, threads=threads, streams=streams)
