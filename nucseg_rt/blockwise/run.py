"""Segment one volume of any size: whole when it fits in memory, else blockwise, optionally on dask.

:func:`choose_mode` decides from the volume's shape (read from the file's header, nothing
loaded) and a memory budget; :func:`segment_blockwise` runs the blockwise pipeline
(:mod:`nucseg_rt.blockwise.blocks`: global normalisation bounds, block files in a work folder,
:mod:`nucseg_rt.blockwise.merge`: merge) and writes the labels to OME-Zarr or TIFF. The work folder
``<output>.blocks`` is the resume state: a re-run with the same input and settings computes
only the blocks whose files are missing. It is removed once the output is written.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nucseg_rt.blockwise import blocks as blockwise
from nucseg_rt.errors import InvalidInputError

__all__ = ["LargeSettings", "BlockwiseResult", "choose_mode", "segment_blockwise",
           "settings_from_cli", "volume_shape", "workdir_for"]

logger = logging.getLogger("nucseg_rt")

#: Default memory budget: this fraction of the machine's physical memory.
DEFAULT_MEMORY_FRACTION = 0.5


@dataclass(frozen=True)
class LargeSettings:
    """How volumes too large for memory are handled.

    Attributes
    ----------
    block_size : (Z, Y, X) or None
        Core block size in input voxels; None: whole volume if it fits ``max_memory``, else the
        largest block that fits.
    max_memory : int or None
        Memory budget in bytes (default half the physical memory), per worker on dask.
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
    max_memory: int | None = None
    halo: tuple[int, int, int] | None = None
    scheduler: str | None = None
    workers: int | None = None
    resume: bool = True
    iou_threshold: float = 0.5

    def __post_init__(self):
        if self.block_size is not None:
            object.__setattr__(self, "block_size", blockwise.parse_block_size(self.block_size))
        if self.max_memory is not None and self.max_memory <= 0:
            raise InvalidInputError(f"`max_memory` must be > 0, got {self.max_memory!r}")
        if self.workers is not None and (int(self.workers) != self.workers or self.workers < 1):
            raise InvalidInputError(f"`workers` must be a whole number >= 1, got {self.workers!r}")
        if not 0 < self.iou_threshold <= 1:
            raise InvalidInputError(f"`iou_threshold` must be in (0, 1], got {self.iou_threshold!r}")
        if self.scheduler is not None:
            from nucseg_rt.blockwise.dask import validate_scheduler

            validate_scheduler(self.scheduler)

    def budget(self) -> int:
        from nucseg_rt.io.lazy import physical_memory

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


def settings_from_cli(*, block_size: str | None, max_memory: str | None,
                      scheduler: str | None, workers: int | None,
                      resume: bool) -> LargeSettings:
    """:class:`LargeSettings` from command-line text, checked before any work is done
    (errors name the option; dask installed and the scheduler reachable)."""
    from nucseg_rt.io.lazy import parse_memory

    if block_size is not None:
        try:
            blockwise.parse_block_size(block_size)
        except InvalidInputError as exc:
            raise InvalidInputError(str(exc).replace("`block_size`", "`--block-size`")) from None
    if workers is not None and scheduler != "local":
        raise InvalidInputError("`--workers` applies to `--scheduler local` only")
    if workers is not None and workers < 1:
        raise InvalidInputError(f"`--workers` must be >= 1, got {workers}")
    if scheduler is not None:
        from nucseg_rt.blockwise import dask as distributed

        try:
            distributed.validate_scheduler(scheduler)
        except InvalidInputError as exc:
            raise InvalidInputError(str(exc).replace("`scheduler`", "`--scheduler`")) from None
        distributed.check_available(scheduler)
    memory = None if max_memory is None else parse_memory(max_memory, "--max-memory")
    return LargeSettings(block_size=block_size, max_memory=memory, scheduler=scheduler,
                         workers=workers, resume=resume)


def volume_shape(source, *, channel_axis=None, z_axis=None) -> tuple[tuple[int, ...], tuple, int]:
    """(stored shape, (Z, Y, X), channels) of a file, from its header only (no zarr for TIFF)."""
    from nucseg_rt.io.lazy import _resolve_axes, is_zarr_path, open_volume

    if is_zarr_path(source) or Path(source).is_dir():
        with open_volume(source, channel_axis=channel_axis, z_axis=z_axis) as vol:
            return tuple(vol._array.shape), vol.shape_zyx, vol.nchan or 1
    import tifffile

    try:
        with tifffile.TiffFile(source) as tif:
            series = tif.series[0]
            shape, letters = tuple(series.shape), series.axes
    except Exception as exc:
        raise InvalidInputError(f"{source}: cannot read as TIFF ({type(exc).__name__}: {exc})") from exc
    letters = letters if set(letters) <= set("TZCYXS") else None
    _, order = _resolve_axes(shape, letters, channel_axis, z_axis)
    return shape, tuple(shape[i] for i in order[:3]), (shape[order[3]] if len(order) == 4 else 1)


def _rescale(segmenter, options) -> tuple[float, float, float]:
    diameter = options.get("diameter") or segmenter.diam_labels
    return segmenter.diam_mean / float(diameter), float(diameter), float(options.get("anisotropy", 1.0))


def choose_mode(shape_zyx, segmenter, options: dict, settings: LargeSettings,
                nchan: int = 1) -> tuple[int, int, int] | None:
    """Core block size for a blockwise run, or None to segment the volume whole."""
    rescale, diameter, anisotropy = _rescale(segmenter, options)
    if settings.block_size is not None:
        return settings.block_size
    halo = settings.halo or blockwise.default_halo(diameter, anisotropy)
    block = blockwise.choose_block_size(shape_zyx, settings.budget(), anisotropy=anisotropy,
                                        rescale=rescale, halo=halo, nchan=nchan)
    if block is None and settings.scheduler is not None:
        block = tuple(min(s, b) for s, b in zip(shape_zyx, (max(8, round(256 / anisotropy)), 256, 256)))
    return block


def workdir_for(out_path: str | os.PathLike) -> Path:
    """The resume folder of an output: ``<output>.blocks`` next to it."""
    out_path = Path(out_path)
    return out_path.with_name(out_path.name + ".blocks")


def _validate_options(options: dict) -> None:
    norm = options.get("normalize")
    if norm is not None and (norm.tile_norm or norm.sharpen_radius):
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
        from nucseg_rt.io.tiff import atomic_write

        with atomic_write(manifest) as fh:
            fh.write(json.dumps({"fingerprint": fingerprint}).encode())


def segment_blockwise(source, out_path, segmenter, *, options: dict, settings: LargeSettings,
                      block_size=None, channel_axis: int | None = None, z_axis: int | None = None,
                      voxel_size=None, unit: str | None = None,
                      progress: Callable[[str, int, int], None] | None = None,
                      client=None, stop_after: int | None = None) -> BlockwiseResult:
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
    options : dict
        Keyword arguments of ``Segmenter.segment`` (anisotropy, diameter, min_size, ...,
        ``normalize``); ``channel_axis``/``z_axis`` go separately.
    settings : LargeSettings
    block_size : (Z, Y, X), optional
        Overrides ``settings.block_size`` / the memory budget.
    client : distributed.Client, optional
        Run the blocks on this client (default: per ``settings.scheduler``).
    stop_after : int, optional
        Compute only this many blocks, then raise ``KeyboardInterrupt`` (tests of resume).

    Returns
    -------
    BlockwiseResult
    """
    from nucseg_rt.io.lazy import open_volume
    from nucseg_rt.params import Normalization

    t0 = time.perf_counter()
    _validate_options(options)
    options = dict(options)
    normalize = options.pop("normalize", None) or Normalization()
    out_path = Path(out_path)
    if isinstance(source, (str, os.PathLike)):
        source = str(Path(source).resolve())
    with open_volume(source, channel_axis=channel_axis, z_axis=z_axis) as vol:
        shape = vol.shape_zyx
        _, diameter, anisotropy = _rescale(segmenter, options)
        block = block_size or choose_mode(shape, segmenter, {**options}, settings,
                                          nchan=vol.nchan or 1)
        block = block or shape
        plan = blockwise.plan_blocks(shape, block, diameter=diameter, anisotropy=anisotropy,
                                     halo=settings.halo)
        if progress is not None:
            progress("normalisation bounds", 0, 1)
        bounds = normalize.lowhigh
        if bounds is None:
            bounds = blockwise.global_bounds(vol, percentile=normalize.percentile,
                                             chan=options.get("chan", 0),
                                             chan2=options.get("chan2", 0),
                                             nchan=segmenter.net.info.nchan)
        voxel_size = voxel_size or vol.info.voxel_size_zyx
        unit = unit or vol.info.unit
        volume_channel_axis, volume_z_axis = channel_axis, z_axis
    threads = None
    if settings.scheduler == "local":
        from nucseg_rt.blockwise.dask import local_threads

        threads = local_threads(settings.workers or 2)
    spec = blockwise.SegmenterSpec.from_segmenter(segmenter, threads=threads)
    workdir = workdir_for(out_path)
    ctx = blockwise.BlockContext(
        source=source, channel_axis=volume_channel_axis, z_axis=volume_z_axis, plan=plan,
        options=options, normalize=normalize,
        bounds=tuple(map(tuple, np.asarray(bounds, np.float64).reshape(-1, 2))),
        workdir=str(workdir), spec=spec)
    _prepare_workdir(workdir, ctx.fingerprint(segmenter.model.sha256), settings.resume)
    todo = [i for i in range(len(plan)) if not blockwise.block_file(workdir, i).exists()]
    reused = len(plan) - len(todo)
    try:
        _compute(ctx, todo, segmenter, settings, reused, progress, stop_after, client)
    finally:
        blockwise.release_volumes()
    stats = _merge_and_write(plan, workdir, out_path, voxel_size, unit, settings,
                             int(options.get("min_size", 15)), progress)
    shutil.rmtree(workdir, ignore_errors=True)
    logger.info("blockwise: %d blocks (%d reused), %d nuclei (%d from candidates, %d duplicates "
                "skipped)", len(plan), reused, stats.n_labels, stats.candidates_painted,
                stats.duplicates)
    return BlockwiseResult(out_path, shape, stats.n_labels, len(plan), len(todo), reused,
                           time.perf_counter() - t0, plan.core)


def _merge_and_write(plan, workdir: Path, out_path: Path, voxel_size, unit, settings,
                     min_size: int, progress):
    """Merge the block files into the output: an OME-Zarr labels group built under a temporary
    name, or a scratch zarr in the work folder copied plane by plane into a TIFF."""
    from nucseg_rt.blockwise.merge import CHUNK_SIDE, merge_blocks, scratch_chunks
    from nucseg_rt.io.lazy import (atomic_dir, create_labels_zarr, is_zarr_path,
                                  write_labels_tif_streamed)
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
    write_labels_tif_streamed(out_path, out, voxel_size=voxel_size, unit=unit,
                              dtype=label_dtype(stats.n_labels))
    return stats


def _compute(ctx, todo, segmenter, settings, reused, progress, stop_after, client) -> None:
    total = reused + len(todo)
    if progress is not None:
        progress("blocks", reused, total)
    if settings.scheduler is None and client is None:
        for n, index in enumerate(todo, 1):
            if stop_after is not None and n > stop_after:
                raise KeyboardInterrupt(f"stopped after {stop_after} blocks")
            blockwise.compute_block(ctx, index, segmenter)
            if progress is not None:
                progress("blocks", reused + n, total)
        return
    from nucseg_rt.blockwise.dask import open_client, run_blocks

    def advance(n):
        if progress is not None:
            progress("blocks", reused + n, total)

    if client is not None:
        run_blocks(client, ctx, todo, progress=advance)
        return
    with open_client(settings.scheduler, workers=settings.workers) as client:
        run_blocks(client, ctx, todo, progress=advance)
