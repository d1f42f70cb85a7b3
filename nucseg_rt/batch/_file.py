"""One file of a batch: what its header says (:func:`plan_file`), then read, segment (whole or
blockwise) and write it (:func:`segment_file`)."""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from nucseg_rt.batch._plan import Job, pending_outputs
from nucseg_rt.batch._settings import RunSettings
from nucseg_rt.errors import (InvalidInputError, MissingDependencyError, NucsegError, SettingsError,
                              check_cancel)
from nucseg_rt.io import VolumeInfo
from nucseg_rt.params import InputSpec, MaskParams
from nucseg_rt.prep.axes import AxisPlan

__all__ = ["FilePlan", "FileResult", "plan_file", "segment_file"]

logger = logging.getLogger("nucseg_rt")

Status = Literal["done", "skipped", "failed", "cancelled"]


@dataclass(frozen=True)
class FilePlan:
    """What a file's header says and what was decided from it (no pixels read).

    Attributes
    ----------
    source : Path
    shape : tuple of int
        The stored array's shape.
    info : VolumeInfo
        Voxel size, axis letters, dtype.
    axes : AxisPlan
        Its Z, Y, X (and channel) axes (:func:`nucseg_rt.prep.axes.resolve_axes`).
    anisotropy : float
        The anisotropy the file is run at.
    anisotropy_source : str
        "given", the file's calibration, or the default 1.0 and why.
    lazy : bool
        A zarr / OME-Zarr input (read through zarr, also when segmented whole).
    """

    source: Path
    shape: tuple
    info: VolumeInfo
    axes: AxisPlan
    anisotropy: float
    anisotropy_source: str
    lazy: bool = False


@dataclass(frozen=True)
class FileResult:
    """What happened to one file.

    Attributes
    ----------
    source : Path
    status : {"done", "skipped", "failed", "cancelled"}
        "skipped": all outputs existed; "cancelled": abandoned when ``cancel`` was set
        (nothing written under an output's name).
    shape : tuple of int
        The stored array's shape (empty when not read).
    n_nuclei : int or None
    seconds : float
    anisotropy, diameter : float or None
        The values the file was run at, ...
    anisotropy_source, diameter_source : str
        ... and where they came from ("given", the file's calibration, "auto", "model default").
    written : tuple of Path
        Outputs written.
    note : str
        E.g. the blockwise plan.
    min_size : int or None
        The size filter used (voxels): given, or size-aware from the diameter and anisotropy
        (``MaskParams.min_size`` None; ``min_size_source`` says which).
    error : str or None
        One-line reason of a failure.
    exception : BaseException or None
        The exception behind a failure (``internal`` tells a bug from bad input).
    """

    source: Path
    status: Status
    shape: tuple = ()
    n_nuclei: int | None = None
    seconds: float = 0.0
    anisotropy: float | None = None
    anisotropy_source: str = ""
    diameter: float | None = None
    diameter_source: str = ""
    written: tuple = ()
    note: str = ""
    error: str | None = None
    exception: BaseException | None = field(default=None, repr=False, compare=False)
    min_size: int | None = None
    min_size_source: str = ""

    @property
    def internal(self) -> bool:
        """The failure is a bug in nucseg-rt, not a problem of the input or the machine."""
        return self.exception is not None and not isinstance(self.exception, FILE_ERRORS)


#: Errors that are one file's fault (or the machine's: disk full, memory): the batch goes on
FILE_ERRORS = (NucsegError, OSError, MemoryError)


# --- the header -------------------------------------------------------------------------------


def min_size_source(params) -> str:
    """Where the size filter came from: "given", or "size" (size-aware, from the nucleus size)."""
    return "size" if params.min_size is None else "given"


def plan_file(source, *, inputs: InputSpec, run: RunSettings) -> FilePlan:
    """Read ``source``'s header and decide its axes and anisotropy.

    Raises
    ------
    SettingsError
        ``inputs.channel_axis`` / ``z_axis`` do not fit the file's axes (a batch stops).
    InvalidInputError
        The file cannot be read, or its axes are not those of a volume.
    """
    from nucseg_rt.io import is_zarr_store as _is_zarr_store, read_header
    from nucseg_rt.prep import check_gray, resolve_axes

    source = Path(source)
    shape, info = read_header(source)
    _check_user_axes(shape, inputs, source)
    try:
        axes = resolve_axes(shape, letters=info.axes, channel_axis=inputs.channel_axis,
                            z_axis=inputs.z_axis, time_axis=inputs.time_axis,
                            what="the image", allow_time=True)  # reported with the file name
        check_gray(axes, inputs.chan, what="the image")
    except SettingsError:
        raise
    except InvalidInputError:
        _check_finite(source, info)  # NaN values are the problem, whatever the axes
        raise
    axes.log(prefix=f"{source.name}: ", level=logging.DEBUG)  # the Segmenter logs what it uses
    anisotropy, where = _anisotropy(run, info, source)
    return FilePlan(source, shape, info, axes, anisotropy, where, _is_zarr_store(source))


def _check_finite(source: Path, info: VolumeInfo) -> None:
    """A float image whose first stored plane holds NaN / Inf: say so (the same words as
    :func:`nucseg_rt.prep.to_zyxc`), not that its axes do not fit."""
    from nucseg_rt.io import read_first_plane

    if not np.issubdtype(info.dtype, np.floating):
        return
    plane = read_first_plane(source)
    bad = int(plane.size - np.count_nonzero(np.isfinite(plane)))
    if bad:
        amount = "all" if bad == plane.size else f"{bad} of {plane.size}"
        raise InvalidInputError(f"`vol` contains NaN or Inf values ({amount} values of its first "
                                "stored plane)")


def _check_user_axes(shape, inputs: InputSpec, source: Path) -> None:
    ndim = len(shape)
    given = {name: getattr(inputs, name) for name in ("time_axis", "channel_axis", "z_axis")
             if getattr(inputs, name) is not None}
    for name, axis in given.items():
        if not -ndim <= axis < ndim:
            raise SettingsError(f"`{name}` {axis} is out of range for {source} ({ndim} axes, "
                                f"shape {shape}; valid: 0..{ndim - 1} or -{ndim}..-1)")
    names = list(given)
    for k, a in enumerate(names):
        for b in names[k + 1:]:
            if given[a] % ndim == given[b] % ndim:
                raise SettingsError(f"`{a}` {given[a]} and `{b}` {given[b]} are the same axis "
                                    f"of {source} (shape {shape})")


def _anisotropy(run: RunSettings, info: VolumeInfo, source: Path) -> tuple[float, str]:
    if run.anisotropy is not None:
        value, where = run.anisotropy, "given"
    else:
        value, where = info.anisotropy()
        if value is None:
            logger.warning("%s: %s; anisotropy 1.0 assumed (give `anisotropy`: Z step / XY "
                           "pixel size)", source.name, where, extra={"param": "anisotropy"})
            value, where = 1.0, f"default ({where})"
    return float(value), where


# --- whole or blockwise ---------------------------------------------------------------------------


def _gib(nbytes: float) -> str:
    return f"{nbytes / 2**30:.1f} GiB" if nbytes >= 2**29 else f"{nbytes / 2**20:.0f} MiB"


def _choose_blocks(plan: FilePlan, segmenter, run: RunSettings, params: MaskParams):
    """The core block size when the file is to be segmented blockwise, else None.

    Settings that would need more memory than the budget even for the smallest block are
    refused first: a :class:`SettingsError` (the batch stops) when the value to blame was given
    for the run, an InvalidInputError (this file fails) when it is the file's calibration.
    """
    from nucseg_rt.blockwise import plan_run

    known = run.diameter if isinstance(run.diameter, float) else None  # "auto": model's, here
    rescale, diameter = segmenter.rescale_for(known), float(known or segmenter.diam_labels)
    a = 1.0 if params.stitch else plan.anisotropy  # stitch mode does not resample Z
    scale = dict(rescale=rescale, diameter=diameter, nchan=plan.axes.nchan or 1,
                 settings=run.blockwise, halo_anisotropy=plan.anisotropy)
    planned = plan_run(plan.axes.shape_zyx, anisotropy=a, **scale)
    for line in planned.warnings if planned.mode != "refused" else ():  # before the work
        logger.warning("%s: %s", plan.source.name, line, extra={"param": ("anisotropy",
                                                                           "diameter")})
    if planned.mode == "refused":
        diameter_alone = plan_run(plan.axes.shape_zyx, anisotropy=1.0, **scale).mode == "refused"
        culprit_given = (known is not None) if diameter_alone else run.anisotropy is not None
        _refuse_scale(plan, rescale, diameter, planned.whole_bytes, planned.smallest_bytes,
                      planned.budget, run.blockwise is not None,
                      SettingsError if culprit_given else InvalidInputError)
    return planned.block


def _refuse_scale(plan, rescale, diameter, whole, smallest, budget, blockwise, error) -> None:
    z, y, x = plan.axes.shape_zyx
    grid = (int(z * plan.anisotropy * rescale), int(y * rescale), int(x * rescale))
    unit = "even its smallest block" if blockwise else "it"
    message = (f"{plan.source}: anisotropy {plan.anisotropy:g} ({plan.anisotropy_source}) and "
               f"diameter {diameter:g} px make a network grid of {grid[0]} x {grid[1]} x "
               f"{grid[2]} voxels for this {z} x {y} x {x} volume (~{_gib(whole)}); {unit} would "
               f"need ~{_gib(smallest)}, more than the memory budget of {_gib(budget)}: "
               f"check `anisotropy` (Z step / XY pixel size) and `diameter`")
    raise error(message)


# --- one file ---------------------------------------------------------------------------------


def segment_file(segmenter, job: Job, *, inputs: InputSpec | None = None,
                 params: MaskParams | None = None, run: RunSettings | None = None,
                 plan: FilePlan | None = None,
                 progress: Callable[[str, int, int], None] | None = None,
                 cancel: threading.Event | None = None, client=None) -> FileResult:
    """Read ``job.source``, segment it (whole, or blockwise when ``run.blockwise`` asks) and
    write its pending outputs. A time-lapse (a time axis from the file or ``inputs.time_axis``)
    is segmented frame by frame, each frame whole, and resumes at the next unfinished frame
    (``run.frames``, ``run.link``; masks written as (T, Z, Y, X)).

    Parameters
    ----------
    segmenter : nucseg_rt.Segmenter
    job : Job
        Input and output paths.
    inputs, params, run : InputSpec, MaskParams, RunSettings, optional
        Axes/channels/normalisation, mask settings, scale/outputs/blockwise (defaults: their
        defaults).
    plan : FilePlan, optional
        From :func:`plan_file` (made here if not given).
    progress : callable, optional
        ``progress(stage, done, total)``: "read", the network's and blockwise stages, "write";
        a time-lapse: "frame" (frames done of the run's) and each frame's stages.
    cancel : threading.Event, optional
        Checked between steps (and inside the network and blockwise runs): raises
        :class:`nucseg_rt.errors.Cancelled`; nothing is written under an output's name.
    client : distributed.Client or nucseg_rt.blockwise.dask.LazyClient, optional
        For blockwise runs with a scheduler: the cluster to use (one for a batch).

    Returns
    -------
    FileResult
        "done" or "skipped" (all outputs exist and not ``run.overwrite``).
    """
    inputs = inputs if inputs is not None else InputSpec()
    params = params if params is not None else MaskParams()
    run = run if run is not None else RunSettings()
    todo = pending_outputs(job, overwrite=run.overwrite)
    if not todo:
        return FileResult(job.source, "skipped")
    t0 = time.perf_counter()
    plan = plan if plan is not None else plan_file(job.source, inputs=inputs, run=run)
    if run.frames is not None and plan.axes.t is None:
        raise InvalidInputError(f"{job.source} has no time axis (shape {plan.shape}): `frames` "
                                "applies to time-lapses (`time_axis` names one)",
                                param=("frames", "time_axis"))
    block = _choose_blocks(plan, segmenter, run, params)
    check_cancel(cancel)
    if plan.axes.t is not None:  # each frame its own whole volume
        from nucseg_rt.batch._timelapse import segment_time_lapse

        return segment_time_lapse(segmenter, job, plan, inputs, params, run, todo, progress,
                                  cancel, t0, block)
    if block is not None:
        return _blockwise(segmenter, job, plan, inputs, params, run, todo, progress, cancel,
                          client, t0)
    return _whole(segmenter, job, plan, inputs, params, run, todo, progress, cancel, t0)


def _read(plan: FilePlan, inputs: InputSpec, progress):
    """The volume, and the InputSpec naming its axes as decided by the plan."""
    from nucseg_rt.io import open_volume, read_volume

    if progress is not None:
        progress("read", 0, 1)
    if plan.lazy:
        with open_volume(plan.source, channel_axis=plan.axes.c, z_axis=plan.axes.z) as vol:
            volume, axes = vol.read_all(), (vol.channel_axis, 0)
    else:
        volume, _ = read_volume(plan.source)
        axes = (plan.axes.c, plan.axes.z)
    if progress is not None:
        progress("read", 1, 1)
    return volume, dataclasses.replace(inputs, channel_axis=axes[0], z_axis=axes[1])


def _whole(segmenter, job, plan, inputs, params, run, todo, progress, cancel, t0) -> FileResult:
    volume, spec = _read(plan, inputs, progress)
    check_cancel(cancel)
    result = segmenter.segment(volume, anisotropy=plan.anisotropy, diameter=run.diameter,
                               resample=run.resample, params=params, inputs=spec,
                               progress=progress, cancel=cancel)
    del volume
    check_cancel(cancel)
    if progress is not None:
        progress("write", 0, 1)
    job.masks.parent.mkdir(parents=True, exist_ok=True)
    _write_whole(job, plan, result, todo, run.overwrite)
    return FileResult(job.source, "done", plan.shape, result.n_masks, time.perf_counter() - t0,
                      plan.anisotropy, plan.anisotropy_source, result.run.diameter,
                      result.run.diameter_source, tuple(todo),
                      min_size=result.info.get("min_size"),
                      min_size_source=min_size_source(params))


def _write_whole(job: Job, plan: FilePlan, result, todo, overwrite: bool) -> None:
    from nucseg_rt.io import is_zarr_path, write_flows_npz, write_labels_tif, write_labels_zarr

    voxel, unit = plan.info.voxel_size_zyx, plan.info.unit
    if job.masks in todo:
        write = write_labels_zarr if is_zarr_path(job.masks) else write_labels_tif
        write(job.masks, result.masks, voxel, unit=unit, overwrite=overwrite)
    if job.flows is not None and job.flows in todo:
        write_flows_npz(job.flows, result.flows, result.cellprob, overwrite=overwrite)


def _blockwise(segmenter, job, plan, inputs, params, run, todo, progress, cancel, client,
               t0) -> FileResult:
    from nucseg_rt.blockwise.run import segment_blockwise
    from nucseg_rt.io import import_zarr

    if job.flows is not None and job.flows in todo:
        raise InvalidInputError("`save_flows` is not available for blockwise runs (the flows "
                                "of a volume this size do not fit in memory)")
    if job.masks.exists() and not run.overwrite:
        raise InvalidInputError(f"{job.masks} already exists")
    try:
        import_zarr()
    except MissingDependencyError as exc:
        raise MissingDependencyError(f"{job.source} does not fit the memory budget whole at "
                                     f"these settings; {exc}") from exc
    job.masks.parent.mkdir(parents=True, exist_ok=True)  # the resume folder goes next to it
    if client is not None:
        from nucseg_rt.blockwise.dask import LazyClient

        if isinstance(client, LazyClient):
            client = client.get()  # the batch's cluster, started on first use
    res = segment_blockwise(job.source, job.masks, segmenter, anisotropy=plan.anisotropy,
                            diameter=run.diameter, resample=run.resample, params=params,
                            inputs=inputs, settings=run.blockwise, progress=progress,
                            cancel=cancel, client=client)
    note = (f" (blockwise {'x'.join(map(str, res.block_size))}: {res.n_blocks} blocks"
            + (f", {res.reused} resumed" if res.reused else "") + ")")
    return FileResult(job.source, "done", plan.shape, res.n_nuclei, time.perf_counter() - t0,
                      plan.anisotropy, plan.anisotropy_source, res.diameter, res.diameter_source,
                      (job.masks,), note, min_size=res.min_size,
                      min_size_source=min_size_source(params))
