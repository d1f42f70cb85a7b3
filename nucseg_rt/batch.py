"""Segmenting many TIFF files: find the inputs, plan the outputs, segment one file.

The command line's ``segment`` is a loop over :func:`segment_file`; this module holds
the parts that decide what is read and written, so they can be tested and reused:

- inputs come from explicit paths or a folder (Cellpose's ``--dir``, ``--img_filter``,
  ``--look_one_level_down``), skipping files that are outputs themselves;
- ``<stem>_masks.tif`` (or ``<stem>_masks.ome.zarr``) / ``<stem>_flows.npz`` go next to the
  input or into ``out_dir``;
  a plan whose outputs would overwrite an input, or each other, is refused;
- an output that exists is kept (the file is skipped when all its outputs exist) unless
  ``overwrite``; every output is written atomically (see :mod:`nucseg_rt.io.tiff`);
- a volume too large for the memory budget (or any volume, given a block size) is segmented
  blockwise (:mod:`nucseg_rt.blockwise.run`); zarr / OME-Zarr inputs are read lazily.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from nucseg_rt.errors import InvalidInputError
from nucseg_rt.io.tiff import VolumeInfo, read_volume, write_flows_npz, write_labels_tif

__all__ = ["Job", "FileResult", "find_images", "plan_jobs", "pending_outputs",
           "check_writable", "axes_arguments", "segment_file"]

IMAGE_SUFFIXES = (".tif", ".tiff")
# name endings of files written by nucseg-rt or Cellpose; never taken as inputs from a folder
OUTPUT_ENDINGS = ("_masks", "_flows", "_cp_masks", "_cp_output", "_cellprob", "_seg")


@dataclass(frozen=True)
class Job:
    """One input file and where its results go (``flows`` None: not requested)."""

    source: Path
    masks: Path
    flows: Path | None = None

    @property
    def outputs(self) -> list[Path]:
        return [p for p in (self.masks, self.flows) if p is not None]


@dataclass(frozen=True)
class FileResult:
    """What happened to one file: ``status`` is "done" or "skipped"."""

    shape: tuple[int, ...]
    n_nuclei: int
    seconds: float
    status: str
    written: tuple[Path, ...] = ()
    note: str = ""


def _stem(path: Path) -> str:
    name = path.name
    for suffix in (".ome.tiff", ".ome.tif", ".tiff", ".tif", ".ome.zarr", ".zarr"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def _natural_key(path: Path):
    return [int(part) if part.isdigit() else part.lower()
            for part in re.split(r"(\d+)", str(path))]


def find_images(folder: str | os.PathLike, *, img_filter: str = "",
                look_one_level_down: bool = False) -> list[Path]:
    """TIFF files in ``folder`` (and its sub-folders if asked), in natural order.

    Only files whose name without extension ends in ``img_filter`` are taken; hidden
    files and files whose name ends in a known output ending (``_masks``, ``_flows``, ...)
    never are.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InvalidInputError(f"`--dir` {folder} is not a folder")
    folders = [folder]
    if look_one_level_down:
        folders += sorted((p for p in folder.iterdir() if p.is_dir()), key=_natural_key)
    found = []
    for sub in folders:
        for path in sub.iterdir():
            stem = _stem(path)
            if (path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES
                    and not path.name.startswith(".")  # hidden, e.g. macOS "._x.tif"
                    and stem.endswith(img_filter) and not stem.endswith(OUTPUT_ENDINGS)):
                found.append(path)
    if not found:
        raise InvalidInputError(
            f"no TIFF images in {folder}" + (f" ending in {img_filter!r}" if img_filter else "")
            + (" or its sub-folders" if look_one_level_down else ""))
    return sorted(found, key=_natural_key)


def plan_jobs(paths: Iterable[str | os.PathLike], *, out_dir: str | os.PathLike | None = None,
              save_flows: bool = False, output_format: str = "tif") -> list[Job]:
    """One :class:`Job` per distinct input; refuses plans that would overwrite data.

    ``output_format`` "tif" writes ``<stem>_masks.tif``, "zarr" ``<stem>_masks.ome.zarr``.

    Raises
    ------
    InvalidInputError
        An output path equals an input path, or two inputs would write the same output.
    """
    if output_format not in ("tif", "zarr"):
        raise InvalidInputError(f"`output_format` must be 'tif' or 'zarr', got {output_format!r}")
    suffix = "_masks.tif" if output_format == "tif" else "_masks.ome.zarr"
    jobs, seen = [], set()
    for path in map(Path, paths):
        key = os.path.abspath(path)
        if key in seen:
            continue
        seen.add(key)
        folder = Path(out_dir) if out_dir is not None else path.parent
        stem = _stem(path)
        flows = folder / f"{stem}_flows.npz" if save_flows else None
        jobs.append(Job(path, folder / f"{stem}{suffix}", flows))
    producers: dict[str, Path] = {}
    for job in jobs:
        for out in job.outputs:
            key = os.path.abspath(out)
            if key in seen:
                raise InvalidInputError(f"output {out} of {job.source} is also an input; "
                                        f"refusing to overwrite it (choose another --out-dir)")
            if key in producers:
                raise InvalidInputError(f"{producers[key]} and {job.source} would both write "
                                        f"{out}; rename one or use separate --out-dir runs")
            producers[key] = job.source
    return jobs


def pending_outputs(job: Job, *, overwrite: bool = False) -> list[Path]:
    """The outputs of ``job`` still to write (all of them with ``overwrite``)."""
    return list(job.outputs) if overwrite else [p for p in job.outputs if not p.exists()]


def check_writable(folder: str | os.PathLike) -> Path:
    """Create ``folder`` if needed and prove a file can be written there."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".nucseg-rt-write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise InvalidInputError(f"output folder {folder} is not writable "
                                f"({exc.strerror or exc})") from exc
    return folder


def axes_arguments(info: VolumeInfo, *, channel_axis: int | None = None,
                   z_axis: int | None = None) -> dict:
    """``channel_axis`` / ``z_axis`` for ``Segmenter.segment``: the user's, else the file's.

    When neither is given and the file names its axes (ImageJ/OME), the channel axis is
    its ``C`` (or ``S``) axis and Z its ``Z`` axis; a time axis is refused.
    """
    if channel_axis is not None or z_axis is not None or info.axes is None:
        return {"channel_axis": channel_axis, "z_axis": z_axis}
    if "T" in info.axes:
        raise InvalidInputError(f"image has a time axis (axes {info.axes}); nucseg-rt segments "
                                f"one volume per file: save each time point separately")
    channel = next((info.axes.index(a) for a in "CS" if a in info.axes), None)
    return {"channel_axis": channel, "z_axis": info.axes.index("Z") if "Z" in info.axes else None}


def segment_file(segmenter, job: Job, *, options: dict | None = None,
                 channel_axis: int | None = None, z_axis: int | None = None,
                 overwrite: bool = False,
                 progress: Callable[[str, int, int], None] | None = None,
                 large=None, client=None) -> FileResult:
    """Read ``job.source``, segment it and write its pending outputs.

    Parameters
    ----------
    segmenter : nucseg_rt.Segmenter
        A loaded segmenter.
    job : Job
        Input and output paths.
    options : dict, optional
        Keyword arguments for ``Segmenter.segment`` (anisotropy, diameter, ...).
    channel_axis, z_axis : int, optional
        Axes of the file's array; default from the file's axis metadata, else guessed.
    overwrite : bool
        Replace existing outputs; otherwise a file whose outputs all exist is skipped.
    progress : callable, optional
        ``progress(stage, done, total)``, passed to ``Segmenter.segment``.
    large : nucseg_rt.blockwise.run.LargeSettings, optional
        Blockwise settings. Given (the command line always gives them), a volume whose
        estimated memory exceeds the budget, or any volume when a block size is set, is
        segmented blockwise; None: always whole (zarr inputs are still read lazily).
    client : distributed.Client or nucseg_rt.blockwise.dask.LazyClient, optional
        For blockwise runs with a scheduler: compute the blocks on this client (one cluster
        for a batch of files) instead of opening one for this file.

    Returns
    -------
    FileResult
        Shape of the input array, number of nuclei, seconds and status.
    """
    todo = pending_outputs(job, overwrite=overwrite)
    if not todo:
        return FileResult((), 0, 0.0, "skipped")
    t0 = time.perf_counter()
    block = _blockwise_block_size(segmenter, job, options or {}, large, channel_axis, z_axis)
    if block is not None:
        return _segment_file_blockwise(segmenter, job, options or {}, large, block, todo,
                                       channel_axis, z_axis, overwrite, progress, t0, client)
    if _is_zarr(job.source):
        from nucseg_rt.io.lazy import open_volume

        with open_volume(job.source, channel_axis=channel_axis, z_axis=z_axis) as vol:
            volume, info = vol.read_all(), vol.info
            axes = {"channel_axis": vol.channel_axis, "z_axis": 0}
    else:
        volume, info = read_volume(job.source)
        axes = axes_arguments(info, channel_axis=channel_axis, z_axis=z_axis)
    result = segmenter.segment(volume, progress=progress, **axes, **(options or {}))
    shape = tuple(volume.shape)
    del volume
    if job.masks in todo:
        if _is_zarr(job.masks):
            from nucseg_rt.io.lazy import write_labels_zarr

            write_labels_zarr(job.masks, result.masks, info.voxel_size_zyx, unit=info.unit,
                              overwrite=overwrite)
        else:
            write_labels_tif(job.masks, result.masks, info.voxel_size_zyx, unit=info.unit,
                             overwrite=overwrite)
    if job.flows is not None and job.flows in todo:
        write_flows_npz(job.flows, result.flows, result.cellprob, overwrite=overwrite)
    n_nuclei = int(result.masks.max()) if result.masks.size else 0
    return FileResult(shape, n_nuclei, time.perf_counter() - t0, "done", tuple(todo))


def _is_zarr(path: Path) -> bool:
    from nucseg_rt.io.lazy import is_zarr_path

    return is_zarr_path(path) or path.is_dir()


def _blockwise_block_size(segmenter, job, options, large, channel_axis, z_axis):
    """Core block size when ``job`` is to be segmented blockwise, else None.

    Decided from the file's header; a header that cannot be understood sends the file down
    the whole-volume path, which reports the problem the usual way.
    """
    if large is None:
        return None
    from nucseg_rt.blockwise import run as large_mod

    try:
        _, shape_zyx, nchan = large_mod.volume_shape(job.source, channel_axis=channel_axis,
                                                     z_axis=z_axis)
    except InvalidInputError:
        if _is_zarr(job.source):
            raise
        return None
    if 0 in shape_zyx:
        return None
    return large_mod.choose_mode(shape_zyx, segmenter, options, large, nchan=nchan)


def _segment_file_blockwise(segmenter, job, options, large, block, todo, channel_axis, z_axis,
                            overwrite, progress, t0, client=None) -> FileResult:
    from nucseg_rt.blockwise.run import segment_blockwise

    if job.flows is not None and job.flows in todo:
        raise InvalidInputError("--save-flows is not available for blockwise runs (the flows "
                                "of a volume this size do not fit in memory)")
    if job.masks.exists() and not overwrite:
        raise InvalidInputError(f"{job.masks} already exists")
    if client is not None:
        from nucseg_rt.blockwise.dask import LazyClient

        if isinstance(client, LazyClient):
            client = client.get()
    res = segment_blockwise(job.source, job.masks, segmenter, options=options, settings=large,
                            block_size=block, channel_axis=channel_axis, z_axis=z_axis,
                            progress=progress, client=client)
    note = (f" (blockwise {'x'.join(map(str, res.block_size))}: {res.n_blocks} blocks"
            + (f", {res.reused} resumed" if res.reused else "") + ")")
    return FileResult(res.shape, res.n_nuclei, time.perf_counter() - t0, "done", (job.masks,),
                      note=note)
