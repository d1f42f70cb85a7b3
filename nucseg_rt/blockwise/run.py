"""Segment one volume of any size: whole when it fits in memory, else blockwise, optionally on dask.

:func:`nucseg_rt.blockwise.plan.plan_run` decides from the volume's shape (read from the file's
header, nothing loaded) and a memory budget; :func:`segment_blockwise` runs the blockwise pipeline
(:mod:`nucseg_rt.blockwise.blocks`: global normalisation bounds, block files in a work folder,
:mod:`nucseg_rt.blockwise.merge`: merge) and writes the labels to OME-Zarr or TIFF. The work folder
``<output>.blocks`` is the resume state: a re-run with the same input and settings computes
only the blocks whose files are missing. It is removed once the output is written.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from nucseg_rt.blockwise import blocks
from nucseg_rt.blockwise.plan import plan_run
from nucseg_rt.errors import InvalidInputError, check_cancel
from nucseg_rt.params import InputSpec, MaskParams, validate_diameter, validate_positive, validate_whole

__all__ = ["LargeSettings", "BlockwiseResult", "segment_blockwise", "volume_shape",
           "workdir_for"]

logger = logging.getLogger("nucseg_rt")

#: Default memory budget: this fraction of the machine's physical memory.
DEFAULT_MEMORY_FRACTION = 0.5


@dataclass(frozen=True)
class LargeSettings:
    """How volumes too large for memory are handled.

    Attributes
    ----------
    block_size : (Z, Y, X), N, "N" or "Z,Y,X", or None
        Core block size in input voxels; None: whole volume if it fits ``max_memory``, else the
        largest block that fits.
    max_memory : int, str or None
        Memory budget in bytes or as text ("4GB", "512MiB"); default half the physical memory,
        per worker on ``scheduler="local"``.
    halo : (Z, Y, X) or None
        Voxels read around each block (default one diameter + 8, same distance in Z).
    scheduler : None, "local" or "tcp://HOST:PORT"
        None: blocks computed in this process.
    workers : int or None
        LocalCluster worker processes (default 2).
    resume : bool
        Reuse block files of an interrupted run with the same settings.
    iou_threshold : float
        Masks of neighbouring blocks with at least this IoU are one nucleus.
    """

    block_size: tuple[int, int, int] | None = None
    max_memory: int | str | None = None
    halo: tuple[int, int, int] | None = None
    scheduler: str | None = None
    workers: int | None = None
    resume: bool = True
    iou_threshold: float = 0.5

    def __post_init__(self):
        if self.block_size is not None:
            object.__setattr__(self, "block_size", blocks.parse_block_size(self.block_size))
        if self.max_memory is not None:
            from nucseg_rt.io import parse_memory

            object.__setattr__(self, "max_memory", parse_memory(self.max_memory, "max_memory"))
        if self.workers is not None:
            validate_whole("workers", self.workers, 1)
        if self.workers is not None and self.scheduler != "local":
            raise InvalidInputError("`workers` applies to `scheduler` 'local' only")
        if not 0 < self.iou_threshold <= 1:
            raise InvalidInputError(f"`iou_threshold` must be in (0, 1], got {self.iou_threshold!r}")
        if self.scheduler is not None:
            from nucseg_rt.blockwise.dask import validate_scheduler

            validate_scheduler(self.scheduler)

    def budget(self) -> int:
        from nucseg_rt.io import physical_memory

        total = self.max_memory or int(DEFAULT_MEMORY_FRACTION * physical_memory())
        return total // (self.workers or 2) if self.scheduler == "local" else total


@dataclass(frozen=True)
class BlockwiseResult:
    """Outcome of :func:`segment_blockwise`."""

    path: Path
    shape: tuple[int, ...]
    n_nuclei: int
    n_blocks: int
    computed: int
    reused: int
    seconds: float
    block_size: tuple[int, int, int]
    diameter: float = 0.0
    diameter_source: str = ""
    min_size: int | None = None


def volume_shape(source, *, channel_axis=None, z_axis=None) -> tuple[tuple[int, ...], tuple, int]:
    """(stored shape, (Z, Y, X), channels) of a file, from its header only (no zarr for TIFF)."""
    from nucseg_rt.io import read_header
    from nucseg_rt.prep.axes import resolve_axes

    shape, info = read_header(source)
    axes = resolve_axes(shape, letters=info.axes, channel_axis=channel_axis, z_axis=z_axis,
                        what=str(source))
    return shape, axes.shape_zyx, axes.nchan or 1


def workdir_for(out_path: str | os.PathLike) -> Path:
    """The resume folder of an output: ``<output>.blocks`` next to it."""
    out_path = Path(out_path)
    return out_path.with_name(out_path.name + ".blocks")


def _validate_inputs(inputs: InputSpec) -> None:
    norm = inputs.normalize
    if norm.tile_norm or norm.sharpen_radius:
        raise InvalidInputError("`tile_norm` and `sharpen_radius` are not available blockwise "
                                "(they depend on the whole plane); use them without blocks")


def _prepare_workdir(workdir: Path, fingerprint: str, resume: bool) -> None:
    """Create the work folder; drop block files from another run or when not resuming."""
    manifest = workdir / "run.json"
    if workdir.exists():
        same = False
        if manifest.exists():
            try:
                same = json.loads(manifest.read_text()).get("fingerprint") == fingerprint
            except (OSError, ValueError):
                same = False
        if not (resume and same):
            if resume:
                logger.warning("%s holds blocks of a run with other settings; starting over", workdir)
            shutil.rmtree(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    if not manifest.exists():
        from nucseg_rt.io import atomic_write

        with atomic_write(manifest) as fh:
            fh.write(json.dumps({"fingerprint": fingerprint}).encode())


def segment_blockwise(source, out_path, segmenter, *, anisotropy: float = 1.0,
                      diameter: float | Literal["auto"] | None = None, resample: bool = True,
                      params: MaskParams | None = None, inputs: InputSpec | None = None,
                      settings: LargeSettings | None = None, block_size=None,
                      voxel_size=None, unit: str | None = None,
                      progress: Callable[[str, int, int], None] | None = None,
                      cancel: threading.Event | None = None, client=None) -> BlockwiseResult:
    """Segment ``source`` block by block and write the labels to ``out_path``.

    Parameters
    ----------
    source : path-like or array
        TIFF / OME-TIFF / zarr / OME-Zarr path (read lazily), or an in-memory ``(Z, Y, X)``
        array (in-process only).
    out_path : path-like
        ``*.ome.zarr`` / ``*.zarr``: OME-Zarr labels group (``labels/masks/0``, uint32);
        anything else: TIFF (uint16 when the ids fit, else uint32). Written atomically.
    segmenter : Segmenter
        Used for the blocks in-process, and for the model's facts (diameter, channels, hash).
    anisotropy, diameter, resample
        As for :meth:`nucseg_rt.Segmenter.segment`. ``diameter="auto"`` is estimated once,
        before the blocks run, on up to 16 planes of a central 512 x 512 window (scaled with the
        global bounds), so every block runs at the same scale.
    params : MaskParams, optional
        The mask settings (default ``MaskParams()``).
    inputs : InputSpec, optional
        Axes of the stored array, channels and normalisation (``tile_norm`` and
        ``sharpen_radius`` are refused: they depend on the whole plane).
    settings : LargeSettings, optional
        Memory budget, halo, scheduler and resume (default ``LargeSettings()``).
    block_size : (Z, Y, X), optional
        Overrides ``settings.block_size`` / the memory budget.
    progress : callable, optional
        ``progress(stage, done, total)``: "normalisation bounds", "diameter", "blocks", "merge",
        "write TIFF".
    cancel : threading.Event, optional
        Checked before every block (and while dask tasks run): raises
        :class:`nucseg_rt.errors.Cancelled`. The block files written so far stay in the work
        folder, so a re-run resumes.
    client : distributed.Client, optional
        Run the blocks on this client (default: per ``settings.scheduler``).

    Returns
    -------
    BlockwiseResult
    """
    from nucseg_rt.io import open_volume

    t0 = time.perf_counter()
    params = params if params is not None else MaskParams()
    inputs = inputs if inputs is not None else InputSpec()
    settings = settings if settings is not None else LargeSettings()
    anisotropy = validate_positive("anisotropy", anisotropy)
    diameter = validate_diameter(diameter)
    _validate_inputs(inputs)
    out_path = Path(out_path)
    if isinstance(source, (str, os.PathLike)):
        source = str(Path(source).resolve())
    with open_volume(source, channel_axis=inputs.channel_axis, z_axis=inputs.z_axis) as vol:
        shape = vol.shape_zyx
        if progress is not None:
            progress("normalisation bounds", 0, 1)
        bounds = inputs.normalize.lowhigh
        if bounds is None:
            bounds = blocks.global_bounds(vol, percentile=inputs.normalize.percentile,
                                             chan=inputs.chan, chan2=inputs.chan2,
                                             nchan=segmenter.net.info.nchan)
        bounds = tuple(map(tuple, np.asarray(bounds, np.float64).reshape(-1, 2)))
        d, d_source = _run_diameter(vol, segmenter, diameter, inputs, bounds, anisotropy,
                                    progress, cancel)
        params = params.resolved(segmenter.mask_defaults, diameter=d, anisotropy=anisotropy,
                                 n_planes=shape[0])  # the whole volume's, in every block
        block = block_size or plan_run(shape, anisotropy=anisotropy, rescale=segmenter.rescale_for(d),
                                       diameter=d, nchan=vol.nchan or 1, settings=settings).block
        plan = blocks.plan_blocks(shape, block or shape, diameter=d, anisotropy=anisotropy,
                                     halo=settings.halo)
        voxel_size = voxel_size or vol.info.voxel_size_zyx
        unit = unit or vol.info.unit
    threads = None
    if settings.scheduler == "local":
        from nucseg_rt.blockwise.dask import local_threads

        threads = local_threads(settings.workers or 2)
    spec = blocks.SegmenterSpec.from_segmenter(segmenter, threads=threads)
    workdir = workdir_for(out_path)
    ctx = blocks.BlockContext(source=source, inputs=inputs, params=params,
                                 anisotropy=anisotropy, diameter=d, resample=bool(resample),
                                 plan=plan, bounds=bounds, workdir=str(workdir), spec=spec)
    check_cancel(cancel)
    _prepare_workdir(workdir, ctx.fingerprint(segmenter.model.sha256), settings.resume)
    todo = [i for i in range(len(plan)) if not blocks.block_file(workdir, i).exists()]
    reused = len(plan) - len(todo)
    _compute(ctx, todo, segmenter, settings, reused, progress, cancel, client)
    check_cancel(cancel)
    stats = _merge_and_write(plan, workdir, out_path, voxel_size, unit, settings,
                             params.min_size, progress)
    shutil.rmtree(workdir, ignore_errors=True)
    logger.info("blockwise: %d blocks (%d reused), %d nuclei (%d from candidates, %d duplicates "
                "skipped)", len(plan), reused, stats.n_labels, stats.candidates_painted,
                stats.duplicates)
    return BlockwiseResult(out_path, shape, stats.n_labels, len(plan), len(todo), reused,
                           time.perf_counter() - t0, plan.core, d, d_source, params.min_size)


#: ``diameter="auto"`` in a blockwise run: planes sampled over Z and the central window's side
AUTO_PLANES, AUTO_WINDOW = 16, 512


def _run_diameter(vol, segmenter, diameter, inputs: InputSpec, bounds, anisotropy, progress,
                  cancel) -> tuple[float, str]:
    """The diameter every block runs at, and where it comes from."""
    if diameter is None:
        return float(segmenter.diam_labels), "model default"
    if diameter != "auto":
        return float(diameter), "given"
    zn, yn, xn = vol.shape_zyx
    y0, x0 = max(0, (yn - AUTO_WINDOW) // 2), max(0, (xn - AUTO_WINDOW) // 2)
    box = (slice(0, zn, max(1, zn // AUTO_PLANES)), slice(y0, y0 + AUTO_WINDOW),
           slice(x0, x0 + AUTO_WINDOW))
    sample = vol.read(box)
    fixed = dataclasses.replace(inputs.normalize, lowhigh=np.asarray(bounds))
    spec = dataclasses.replace(inputs, channel_axis=vol.channel_axis, z_axis=0, normalize=fixed)
    est = segmenter.estimate_diameter(sample, anisotropy=anisotropy, inputs=spec,
                                      progress=progress, cancel=cancel)
    logger.info("estimated nucleus diameter: %.1f px (%s; %d planes of a central %dx%d window, "
                "used for every block)", est.diameter, est.summary(), sample.shape[0],
                sample.shape[-2], sample.shape[-1])
    return float(est.diameter), "auto" if not est.fallback else "model default (nothing found)"


def _merge_and_write(plan, workdir: Path, out_path: Path, voxel_size, unit, settings,
                     min_size: int, progress):
    """Merge the block files into the output: an OME-Zarr labels group built under a temporary
    name, or a scratch zarr in the work folder copied plane by plane into a TIFF."""
    from nucseg_rt.blockwise.merge import CHUNK_SIDE, merge_blocks, scratch_chunks
    from nucseg_rt.io import atomic_dir, create_labels_zarr, is_zarr_path, write_labels_tif
    from nucseg_rt.masks.postprocess import label_dtype

    chunks = tuple(min(c, CHUNK_SIDE) for c in plan.core)
    merge = dict(iou_threshold=settings.iou_threshold, min_size=min_size, progress=progress)
    if is_zarr_path(out_path):
        with atomic_dir(out_path) as tmp:
            out = create_labels_zarr(tmp, plan.shape, chunks=chunks, voxel_size=voxel_size,
                                     unit=unit)
            return merge_blocks(plan, workdir, out, **merge)
    scratch = workdir / "labels.zarr"
    shutil.rmtree(scratch, ignore_errors=True)
    out = create_labels_zarr(scratch, plan.shape, chunks=scratch_chunks(plan.core))
    stats = merge_blocks(plan, workdir, out, **merge)
    if progress is not None:
        progress("write TIFF", 0, 1)
    write_labels_tif(out_path, out, voxel_size, unit=unit, overwrite=True,
                     dtype=label_dtype(stats.n_labels))
    return stats


def _compute(ctx, todo, segmenter, settings, reused, progress, cancel, client) -> None:
    total = reused + len(todo)
    if progress is not None:
        progress("blocks", reused, total)
    if settings.scheduler is None and client is None:
        with blocks.BlockReader() as reader:
            for n, index in enumerate(todo, 1):
                check_cancel(cancel)
                blocks.compute_block(ctx, index, segmenter, reader)
                if progress is not None:
                    progress("blocks", reused + n, total)
        return
    from nucseg_rt.blockwise.dask import open_client, run_blocks

    def advance(n):
        if progress is not None:
            progress("blocks", reused + n, total)

    if client is not None:
        run_blocks(client, ctx, todo, progress=advance, cancel=cancel)
        return
    with open_client(settings.scheduler, workers=settings.workers) as client:
        run_blocks(client, ctx, todo, progress=advance, cancel=cancel)
