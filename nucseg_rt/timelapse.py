"""Time-lapses: each time point segmented as its own volume, one frame at a time.

The one frame loop (:func:`iter_frames`) serves :meth:`nucseg_rt.Segmenter.segment_frames` (an
array in memory or a zarr array), :meth:`nucseg_rt.Segmenter.segment` with
``InputSpec(time_axis=...)`` and the batch runner (a file read lazily, one frame at a time). Memory
holds one frame and its result, whatever the number of frames.

Labels restart in every frame unless linked: with ``link``, a :class:`~nucseg_rt.masks.link.
FrameLinker` relabels each frame so that a nucleus keeps the label it had in the previous frame
of the run (matched by overlap; a new nucleus gets a label never used before in the series).
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Iterator, Sequence

import numpy as np

from nucseg_rt.errors import InvalidInputError, check_cancel
from nucseg_rt.params import InputSpec, MaskParams

__all__ = ["iter_frames", "array_frames", "frame_spec", "select_frames", "parse_frames"]

Progress = Callable[[str, int, int], None]


def parse_frames(spec: str | None, n_frames: int) -> tuple[int, ...]:
    """The frame indices of ``spec`` (e.g. ``"0-9,20"``; None or ``"all"``: every frame).

    Ranges are inclusive; indices count from 0 and must be below ``n_frames``; the result is
    sorted, without repeats.
    """
    if n_frames < 1:
        raise InvalidInputError(f"the time axis has {n_frames} frames")
    if spec is None or spec.strip().lower() in ("", "all"):
        return tuple(range(n_frames))
    out: set[int] = set()
    for part in spec.split(","):
        part = part.strip()
        try:
            if "-" in part:
                a, b = (int(v) for v in part.split("-", 1))
            else:
                a = b = int(part)
        except ValueError:
            raise InvalidInputError(f"`frames` must be like '0-9,20' (frame numbers from 0), "
                                    f"got {spec!r}") from None
        if a > b:
            raise InvalidInputError(f"`frames` range {part!r} runs backwards")
        if a < 0 or b >= n_frames:
            raise InvalidInputError(f"`frames` {part!r} is outside the {n_frames} frames "
                                    f"(0-{n_frames - 1})")
        out.update(range(a, b + 1))
    return tuple(sorted(out))


def select_frames(frames: str | Sequence[int] | None, n_frames: int) -> tuple[int, ...]:
    """Frame numbers from ``frames``: None (all), a spec like ``"0-9,20"`` or numbers."""
    if frames is None or isinstance(frames, str):
        return parse_frames(frames, n_frames)
    picked = []
    for t in frames:
        if isinstance(t, (bool, np.bool_)) or not isinstance(t, (int, np.integer)):
            raise InvalidInputError(f"`frames` must hold frame numbers, got {t!r}")
        if not 0 <= t < n_frames:
            raise InvalidInputError(f"`frames` {int(t)} is outside the {n_frames} frames "
                                    f"(0-{n_frames - 1})")
        picked.append(int(t))
    if not picked:
        raise InvalidInputError("`frames` is empty")
    return tuple(sorted(set(picked)))


def frame_spec(shape, inputs: InputSpec, *, letters: str | None = None, what: str = "`vol`"):
    """The axes of a time-lapse of ``shape``: its :class:`~nucseg_rt.prep.axes.AxisPlan` (``t``
    set) and the InputSpec of one frame as ``vol[plan.index(t)]`` gives it.

    Raises
    ------
    InvalidInputError
        No time axis (neither ``inputs.time_axis`` nor the letters name one), or the other axes
        are not those of a volume.
    """
    from nucseg_rt.prep import resolve_axes

    plan = resolve_axes(shape, letters=letters, channel_axis=inputs.channel_axis,
                        z_axis=inputs.z_axis, time_axis=inputs.time_axis, what=what,
                        allow_time=True)
    if plan.t is None:
        raise InvalidInputError(f"{what} of shape {tuple(shape)} has no time axis: pass "
                                "`time_axis`", param="time_axis")
    kept = [i for i, ix in enumerate(plan.index(0)) if isinstance(ix, slice)]
    spec = dataclasses.replace(inputs, time_axis=None, z_axis=kept.index(plan.z),
                               channel_axis=None if plan.c is None else kept.index(plan.c))
    return plan, spec


def iter_frames(segmenter, read: Callable[[int], np.ndarray], frames: Sequence[int],
                spec: InputSpec, *, anisotropy: float = 1.0, diameter=None,
                resample: bool = True, params: MaskParams | None = None, linker=None,
                progress: Progress | None = None,
                cancel: threading.Event | None = None) -> Iterator[tuple]:
    """Segment ``read(t)`` for each ``t`` of ``frames``, in order, one at a time.

    Parameters
    ----------
    segmenter : nucseg_rt.Segmenter
    read : callable
        ``read(t)``: frame ``t`` as an array whose axes ``spec`` names.
    frames : sequence of int
        Frame numbers to segment.
    spec : InputSpec
        Axes (of one frame), channels, normalisation.
    anisotropy, diameter, resample, params
        As in :meth:`nucseg_rt.Segmenter.segment` (``diameter="auto"``: estimated per frame).
    linker : nucseg_rt.masks.link.FrameLinker, optional
        Relabels each frame's masks to follow the nuclei (its state continues a resumed run);
        None: labels restart in every frame.
    progress : callable, optional
        ``progress("frame", done, total)`` before each frame and at the end, and the stages of
        the frame in progress.
    cancel : threading.Event, optional
        Raises :class:`nucseg_rt.errors.Cancelled` soon after it is set.

    Yields
    ------
    t : int
    masks : (Z, Y, X) uint16 or uint32
        Frame ``t``'s labels (linked with ``linker``).
    result : SegmentationResult
        The frame's own result (its flows and unlinked masks).
    """
    n = len(frames)
    for i, t in enumerate(frames):
        check_cancel(cancel)
        if progress is not None:
            progress("frame", i, n)
        result = segmenter.segment(read(t), anisotropy=anisotropy, diameter=diameter,
                                   resample=resample, params=params, inputs=spec,
                                   progress=progress, cancel=cancel)
        masks = result.masks if linker is None else linker.link(result.masks).labels
        yield t, masks, result
    if progress is not None:
        progress("frame", n, n)


def array_frames(segmenter, vol, *, time_axis, frames, link, anisotropy, diameter, resample,
             params, inputs, progress, cancel) -> Iterator[tuple]:
    """:func:`iter_frames` over the frames of an array (a time axis named by ``time_axis`` or
    ``inputs``), as :meth:`nucseg_rt.Segmenter.segment_frames` documents."""
    from nucseg_rt.masks.link import FrameLinker

    inputs = inputs if inputs is not None else InputSpec()
    if not isinstance(inputs, InputSpec):
        raise InvalidInputError(f"`inputs` must be an InputSpec, got {type(inputs).__name__}")
    if time_axis is not None and inputs.time_axis not in (None, time_axis):
        raise InvalidInputError(f"`time_axis` {time_axis} and `inputs.time_axis` "
                                f"{inputs.time_axis} differ; give one")
    if time_axis is not None:
        inputs = dataclasses.replace(inputs, time_axis=time_axis)
    if not hasattr(vol, "shape") or not hasattr(vol, "__getitem__"):
        vol = np.asarray(vol)
    plan, spec = frame_spec(vol.shape, inputs)
    picked = select_frames(frames, plan.n_frames)
    params = params if params is not None else MaskParams()
    yield from iter_frames(segmenter, lambda t: np.asarray(vol[plan.index(t)]), picked, spec,
                           anisotropy=anisotropy, diameter=diameter, resample=resample,
                           params=params, linker=FrameLinker() if link else None,
                           progress=progress, cancel=cancel)
