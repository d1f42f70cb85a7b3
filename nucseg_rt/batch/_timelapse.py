"""One time-lapse file of a batch: frame by frame (each frame its own whole volume, read lazily,
one at a time), each finished frame kept in a :class:`FrameStore` so that an interrupted run
resumes at the next frame, then ``<stem>_masks.tif`` written as (T, Z, Y, X) from the store."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time

import numpy as np

from nucseg_rt.batch._frames import FrameStore, parse_frames
from nucseg_rt.errors import InvalidInputError, check_cancel

__all__ = ["segment_time_lapse"]


class _StoredFrames:
    """The stored frames as a (T, Z, Y, X) array read one frame at a time (for the writer)."""

    ndim = 4

    def __init__(self, store: FrameStore, frames, shape_zyx, dtype):
        self._store, self._frames = store, frames
        self.shape, self.dtype = (len(frames), *shape_zyx), np.dtype(dtype)

    def __getitem__(self, i: int) -> np.ndarray:
        return self._store.load(self._frames[i])


def segment_time_lapse(segmenter, job, plan, inputs, params, run, todo, progress, cancel, t0,
                       block):
    """Segment the frames ``run.frames`` of the time-lapse ``plan.source`` and write its masks
    (T, Z, Y, X); returns its FileResult. Raises InvalidInputError for what time-lapses do not
    have (blockwise frames, flows, zarr output)."""
    from nucseg_rt.batch._file import FileResult, min_size_source
    from nucseg_rt.io import open_volume, write_labels_tif
    from nucseg_rt.masks.link import FrameLinker
    from nucseg_rt.timelapse import iter_frames

    _refuse(job, plan, todo, block)
    frames = parse_frames(run.frames, plan.axes.n_frames)
    store = FrameStore(job.masks, _fingerprint(segmenter, plan, inputs, params, run, frames))
    linker = FrameLinker() if run.link else None
    if linker is not None and store.done:
        linker.resume(store.load(store.done[-1]), store.max_label)
    stored = set(store.done)
    pending = [t for t in frames if t not in stored]
    resumed, last = len(frames) - len(pending), None
    job.masks.parent.mkdir(parents=True, exist_ok=True)  # the frame store goes next to it
    axes = plan.axes
    with open_volume(plan.source, channel_axis=axes.c, z_axis=axes.z, time_axis=axes.t,
                     allow_time=True) as vol:
        spec = dataclasses.replace(inputs, channel_axis=vol.channel_axis, z_axis=0,
                                   time_axis=None)
        for t, masks, result in iter_frames(
                segmenter, lambda t: vol.read_all(frame=t), pending, spec,
                anisotropy=plan.anisotropy, diameter=run.diameter, resample=run.resample,
                params=params, linker=linker, progress=_counting(progress, resumed, len(frames)),
                cancel=cancel):
            store.save(t, masks)
            last = result
    check_cancel(cancel)
    if progress is not None:
        progress("write", 0, 1)
    said = _say_frames(frames, axes.n_frames)
    dtype = np.uint16 if store.max_label <= np.iinfo(np.uint16).max else np.uint32
    write_labels_tif(job.masks, _StoredFrames(store, frames, axes.shape_zyx, dtype),
                     plan.info.voxel_size_zyx, unit=plan.info.unit, overwrite=run.overwrite,
                     dtype=dtype, note={"frames": said, "linked": str(bool(run.link)).lower()})
    store.remove()
    note = (f" (frames {said}: {len(frames)} of {axes.n_frames}"
            + (f", {resumed} resumed" if resumed else "") + (", linked" if run.link else "") + ")")
    diameter = (last.run.diameter, last.run.diameter_source) if last is not None else \
        (None, "resumed")
    return FileResult(job.source, "done", plan.shape, store.max_label, time.perf_counter() - t0,
                      plan.anisotropy, plan.anisotropy_source, *diameter, (job.masks,), note,
                      min_size=last.info.get("min_size") if last is not None else None,
                      min_size_source=min_size_source(params))


def _refuse(job, plan, todo, block) -> None:
    from nucseg_rt.io import is_zarr_path

    if job.flows is not None and job.flows in todo:
        raise InvalidInputError(f"{plan.source}: `save_flows` is not available for time-lapses "
                                "(flows are not kept per frame)", param="save_flows")
    if is_zarr_path(job.masks):
        raise InvalidInputError(f"{plan.source}: `output_format` 'zarr' is not available for "
                                "time-lapses; write 'tif'", param="output_format")
    if block is not None:
        z, y, x = plan.axes.shape_zyx
        raise InvalidInputError(
            f"{plan.source}: a frame ({z} x {y} x {x}) would need blockwise segmentation at "
            "these settings, which time-lapses do not have: check `anisotropy` and `diameter`, "
            "or give more `max_memory` (no `block_size`)",
            param=("anisotropy", "diameter", "max_memory", "block_size"))


def _fingerprint(segmenter, plan, inputs, params, run, frames) -> str:
    """What decides the stored frames' labels: the input (its size and modification time:
    a changed file is not resumed), model, precision, engine choices that change the flows,
    input, mask and scale settings, frames and linking."""
    model, options = segmenter.model, segmenter.options
    stat = plan.source.stat()
    what = dict(model=model.sha256, ortho=getattr(model, "ortho_sha256", None),
                precision=options.precision, bsize=getattr(options, "bsize", None),
                overlap=getattr(options, "tile_overlap", None),
                work_avoidance=str(getattr(options, "work_avoidance", None)),
                inputs=repr(inputs), params=repr(params), anisotropy=plan.anisotropy,
                diameter=run.diameter, resample=run.resample, frames=list(frames),
                link=run.link, shape=list(plan.shape),
                source=[str(plan.source.resolve()), stat.st_size, stat.st_mtime_ns])
    return hashlib.sha256(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()


def _counting(progress, resumed: int, total: int):
    """``progress`` with the "frame" stage counted over all the run's frames (resumed ones
    included)."""
    if progress is None:
        return None

    def counted(stage: str, done: int, n: int) -> None:
        progress(stage, *((resumed + done, total) if stage == "frame" else (done, n)))

    return counted


def _say_frames(frames, n_frames: int) -> str:
    """``frames`` as a spec ("0-9,20"), "all" when every frame."""
    if len(frames) == n_frames:
        return "all"
    runs, start = [], frames[0]
    for a, b in zip(frames, [*frames[1:], None]):
        if b != a + 1:
            runs.append(f"{start}" if start == a else f"{start}-{a}")
            start = b
    return ",".join(runs)
