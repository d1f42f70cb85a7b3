"""Input axes: the one rule deciding which axes of an array are Z, Y, X and channels, and the
conversion of a user volume to (Z, Y, X, nchan) float32 network input.

:func:`resolve_axes` is used for in-memory arrays (:func:`to_zyxc`), lazily read TIFF / zarr
volumes (:class:`nucseg_rt.io.LazyVolume`) and the batch runner's look at a file's header,
so all three decide alike. Every guess is returned as a human-readable line (and logged on the
``"nucseg_rt"`` logger by the caller), so a user can see what was assumed and override it with
``time_axis`` / ``channel_axis`` / ``z_axis``.

The rule:

1. ``time_axis`` / ``channel_axis`` / ``z_axis`` given by the user always win.
2. Axis letters from the file (ImageJ hyperstacks and OME ``DimensionOrder`` as tifffile's
   ``series.axes``, NGFF axes: ``"TZCYX"``...) fill in the rest: ``C`` (or ``S``) is the channel
   axis when it holds more than one channel, ``Z`` is Z, ``T`` of more than one point is time. A
   time axis ``T`` of size 1 is dropped.
3. A time axis is never guessed from the shape alone. It is refused (one volume per call) unless
   the caller segments frame by frame (``allow_time=True``: :mod:`nucseg_rt.timelapse`, the
   batch); :attr:`AxisPlan.t` names it.
4. Other singleton axes are dropped unless named.
5. Without letters, a 4th axis of size <= 4 (:data:`MAX_GUESSED_CHANNELS`), the only one that
   small, is taken as channels with a WARNING; Z is the first non-channel axis; Y and X are the
   remaining axes in their order.
"""

from __future__ import annotations

import logging
import numbers
from dataclasses import dataclass

import numpy as np

from nucseg_rt.errors import InvalidInputError, SettingsError, quoted_names

__all__ = ["AxisPlan", "resolve_axes", "to_zyxc", "check_gray", "time_lapse_refusal",
           "MAX_GUESSED_CHANNELS", "MAX_GRAY_CHANNELS"]

logger = logging.getLogger("nucseg_rt")

#: Largest axis size that is guessed to be the channel axis.
MAX_GUESSED_CHANNELS = 4
#: Most channels ``chan=0`` (gray) averages. Cellpose's channel conventions name at most three
#: colour channels (1 red, 2 green, 3 blue; 0 = their mean) and an RGBA image adds a fourth: an
#: axis with more entries is time points or planes (a 20-frame time-lapse averaged into one
#: volume gave a wrong result with exit 0, issue 22), so it is refused, not averaged.
MAX_GRAY_CHANNELS = 4


@dataclass(frozen=True)
class AxisPlan:
    """Which axes of an array of ``shape`` are Z, Y, X and channels (from :func:`resolve_axes`).

    Attributes
    ----------
    shape : tuple of int
        The array's shape.
    z, y, x : int
        Axis numbers (>= 0) of Z, Y and X.
    c : int or None
        Axis number of the channels, None for a single-channel volume.
    notes : tuple of str
        Decisions taken (INFO).
    warnings : tuple of str
        Guesses the user should check (WARNING): channels guessed without axis metadata.
    t : int or None
        Axis number of the time points (only with ``resolve_axes(..., allow_time=True)``), None
        for a single volume.
    """

    shape: tuple
    z: int
    y: int
    x: int
    c: int | None
    notes: tuple = ()
    warnings: tuple = ()
    t: int | None = None

    @property
    def order(self) -> tuple:
        """``(z, y, x)`` or ``(z, y, x, c)``."""
        return (self.z, self.y, self.x) + (() if self.c is None else (self.c,))

    @property
    def shape_zyx(self) -> tuple:
        return tuple(int(self.shape[a]) for a in (self.z, self.y, self.x))

    @property
    def nchan(self) -> int | None:
        """Number of channels, None without a channel axis."""
        return None if self.c is None else int(self.shape[self.c])

    @property
    def n_frames(self) -> int | None:
        """Number of time points, None without a time axis."""
        return None if self.t is None else int(self.shape[self.t])

    def index(self, frame: int = 0) -> tuple:
        """Index template: ``slice(None)`` on the used axes, ``frame`` on the time axis, 0 on the
        dropped (singleton) ones."""
        return tuple(slice(None) if i in self.order else frame if i == self.t else 0
                     for i in range(len(self.shape)))

    def log(self, prefix: str = "", level: int = logging.INFO) -> None:
        """Log the notes at ``level`` and the warnings at WARNING on the ``"nucseg_rt"`` logger."""
        extra = {"param": _AXES}  # the lines name them: "pass channel_axis to override"
        for line in self.notes:
            logger.log(level, "%s%s", prefix, line, extra=extra)
        for line in self.warnings:
            logger.warning("%s%s", prefix, line, extra=extra)


def resolve_axes(shape, *, letters: str | None = None, channel_axis: int | None = None,
                 z_axis: int | None = None, time_axis: int | None = None, what: str = "`vol`",
                 allow_time: bool = False) -> AxisPlan:
    """Decide the Z, Y, X and channel axes of an array (the rule in the module docstring).

    Parameters
    ----------
    shape : tuple of int
        The array's shape.
    letters : str, optional
        The file's axis letters, one per axis (e.g. ``"ZCYX"``); ignored unless of length
        ``len(shape)``.
    channel_axis, z_axis, time_axis : int, optional
        The user's choice (negative counts from the end).
    what : str
        How messages name the array (e.g. a file name).
    allow_time : bool
        The caller segments a time axis frame by frame (``AxisPlan.t``); False: a time axis
        (named by the user or by the file) is refused with a "time-lapse segmentation" error.

    Returns
    -------
    AxisPlan

    Raises
    ------
    InvalidInputError
        An axis out of range or named twice, a time axis when not ``allow_time``
        (:class:`~nucseg_rt.errors.SettingsError` when the user named it), fewer than 3 or more
        than 4 non-singleton axes (the time axis aside), or an ambiguous channel axis.
    """
    shape = tuple(int(s) for s in shape)
    caxis = _validate_axis(channel_axis, "channel_axis", shape, what)
    zaxis = _validate_axis(z_axis, "z_axis", shape, what)
    taxis = _validate_axis(time_axis, "time_axis", shape, what)
    _check_distinct(shape, channel_axis=caxis, z_axis=zaxis, time_axis=taxis)
    letters = letters.upper() if letters and len(letters) == len(shape) else None
    notes: list[str] = []
    if letters is not None:
        caxis, zaxis, taxis = _from_letters(shape, letters, caxis, zaxis, taxis, notes)
    if taxis is not None and not allow_time:
        raise _time_lapse_error(shape, taxis, letters, what, given=time_axis is not None)
    if taxis is not None:
        notes.append(f"axis {taxis} ({shape[taxis]} time points) is time"
                     + (" (time_axis)" if time_axis is not None else ""))
    keep = [i for i, s in enumerate(shape) if (s != 1 or i in (caxis, zaxis)) and i != taxis]
    dropped = [i for i in range(len(shape)) if i not in keep and i != taxis]
    if dropped:
        notes.append(f"squeezing singleton axes {_join(dropped)} of shape {shape}")
    _check_count(shape, keep, letters, what)
    warnings: list[str] = []
    if caxis is None:
        caxis = _guess_channel_axis(shape, keep, zaxis, notes, warnings, what,
                                    guessing=letters is None)
    elif len(keep) == 3:
        said = (f"with channel_axis={caxis}" if channel_axis is not None else
                f"whose axis {caxis} (size {shape[caxis]}) holds channels (file axes {letters})")
        raise _axes_error(
            f"{what} of shape {shape} {said} leaves a 2D image: 3D segmentation needs a Z "
            "axis; 2D images are not supported in 3D mode")
    elif channel_axis is not None:
        notes.append(f"using axis {caxis} (size {shape[caxis]}) as channels (channel_axis)")
    rest = [i for i in keep if i != caxis]
    if zaxis is None:
        zaxis = rest[0]
        notes.append(f"treating axis {zaxis} (size {shape[zaxis]}) as Z "
                     "(first non-channel axis; pass z_axis to override)")
    elif z_axis is not None:
        notes.append(f"using axis {zaxis} (size {shape[zaxis]}) as Z (z_axis)")
    yaxis, xaxis = [i for i in rest if i != zaxis]
    nc = 1 if caxis is None else shape[caxis]
    notes.append(f"volume {shape} -> Z={shape[zaxis]}, Y={shape[yaxis]}, X={shape[xaxis]}, "
                 f"{nc} channel{'s' if nc > 1 else ''} (axes z={zaxis}, y={yaxis}, x={xaxis}, "
                 f"c={caxis})")
    return AxisPlan(shape, zaxis, yaxis, xaxis, caxis, tuple(notes), tuple(warnings), taxis)


def _check_distinct(shape, **axes) -> None:
    """No axis named for two roles."""
    named = [(name, a) for name, a in axes.items() if a is not None]
    for k, (name, a) in enumerate(named):
        for other, b in named[k + 1:]:
            if a == b:
                raise InvalidInputError(
                    f"`{name}` and `{other}` are the same axis ({a}) of shape {shape}")


def _time_lapse_error(shape, taxis, letters, what, *, given: bool) -> InvalidInputError:
    source = "time_axis" if given else f"file axes {letters}"
    return time_lapse_refusal(f"{what} of shape {shape} has a time axis (axis {taxis}, "
                              f"{shape[taxis]} time points; {source})", given=given)


def time_lapse_refusal(detail: str, *, given: bool) -> InvalidInputError:
    """The refusal of a time axis where one volume is expected (:meth:`predict_flows`, the
    diameter estimate, a blockwise run): a :class:`~nucseg_rt.errors.SettingsError` when the
    user named it (``given``), else an InvalidInputError."""
    error = SettingsError if given else InvalidInputError
    return error(
        f"{detail}: this step takes one volume; a time-lapse is segmented frame by frame "
        "(Segmenter.segment or Segmenter.segment_frames with time_axis, or the batch), or "
        "select one time point first", param=("time_axis", *_AXES))


def _from_letters(shape, letters, caxis, zaxis, taxis, notes):
    """Fill the axes the user did not name from the file's letters (T > 1 is time)."""
    if taxis is None:
        found = next((i for i, letter in enumerate(letters) if letter == "T" and shape[i] > 1
                      and i not in (caxis, zaxis)), None)
        if found is not None:
            taxis = found
            notes.append(f"axis {found} ({shape[found]} time points) is time "
                         f"(file axes {letters})")
    if caxis is None:
        found = next((letters.index(a) for a in "CS" if a in letters
                      and shape[letters.index(a)] > 1 and letters.index(a) not in (zaxis, taxis)),
                     None)
        if found is not None:
            caxis = found
            notes.append(f"axis {found} (size {shape[found]}) holds channels "
                         f"(file axes {letters})")
    if zaxis is None and "Z" in letters and letters.index("Z") not in (caxis, taxis):
        zaxis = letters.index("Z")
        notes.append(f"axis {zaxis} (size {shape[zaxis]}) is Z (file axes {letters})")
    return caxis, zaxis, taxis


def _check_count(shape, keep, letters, what) -> None:
    named = f" (axes {letters})" if letters else ""
    if len(keep) < 3:
        raise InvalidInputError(
            f"{what} of shape {shape}{named} has only {len(keep)} non-singleton axes (a 2D "
            "image): 3D segmentation needs a Z axis; 2D images are not supported in 3D mode")
    if len(keep) > 4:
        raise InvalidInputError(
            f"{what} of shape {shape}{named} has {len(keep)} non-singleton axes; expected Z, Y, "
            "X, at most one channel axis and a time axis named by the file or by time_axis "
            "(select a position first)", param=(*quoted_names(what), "time_axis"))


def to_zyxc(
    vol,
    *,
    channel_axis: int | None = None,
    z_axis: int | None = None,
    chan: int = 0,
    chan2: int = 0,
    nchan: int = 2,
    time_axis: int | None = None,
) -> tuple[np.ndarray, list[str]]:
    """Convert a 3D volume to network input of shape (Z, Y, X, nchan), float32.

    Parameters
    ----------
    vol : array_like, 3 or 4 non-singleton axes, any real numeric dtype
        For example (Z, C, Y, X), (Z, Y, X) or any other axis order given
        ``channel_axis`` / ``z_axis``. Singleton axes are squeezed unless named by
        ``channel_axis`` or ``z_axis``. Never modified.
    channel_axis : int or None
        Axis of ``vol`` holding the channels (0-based, negative allowed). ``None``:
        after squeezing, a 4-axis array uses its smallest axis as channels if that
        axis has size <= 4 (``MAX_GUESSED_CHANNELS``), with a warning; a 3-axis array
        has no channel axis. See :func:`resolve_axes`.
    z_axis : int or None
        Axis of ``vol`` holding Z. ``None``: the first non-channel axis. Y and X are
        the remaining axes in their original order.
    time_axis : int or None
        A time axis is refused here (one volume): time-lapses are segmented frame by frame.
    chan, chan2 : int
        Channel choice as Cellpose's ``channels=[chan, chan2]``: ``chan`` 0 = gray
        (mean over all channels; ``chan2`` is then ignored, as in Cellpose), 1 = first
        (red), 2 = second (green), 3 = third (blue) channel. ``chan2`` is the
        optional second (nuclear) channel, 0 = none. A single-channel volume is
        used as is.
    nchan : int
        Number of network input channels; the selected channels are padded with
        zero channels up to ``nchan`` (2 for Cellpose 3 models: nuclei + zeros).

    Returns
    -------
    x : (Z, Y, X, nchan) float32
        A new array; channel 0 is ``chan`` (or the gray mean), channel 1 is
        ``chan2`` if given, the rest are zeros.
    log_lines : list of str
        One line per guess or decision (also logged on the ``"nucseg_rt"`` logger: a
        guessed channel axis at WARNING, the rest at INFO), e.g.
        ``"treating axis 1 (size 2) as channels"``.

    Raises
    ------
    InvalidInputError
        For a 2D image (3D segmentation needs Z), an array with more than 4
        non-singleton axes or an ambiguous channel axis when no axes are given, an
        axis index out of range, ``channel_axis == z_axis``, a zero-size axis,
        NaN/Inf values, a channel index beyond the available channels, ``chan=0`` (gray)
        over more than :data:`MAX_GRAY_CHANNELS` channels, a time axis, or a
        non-numeric dtype.

    Notes
    -----
    Cellpose 3.1's ``convert_image`` treats the smallest axis as channels when it
    is smaller than 10 (so a 7-plane stack becomes 7 channels and the first 2 are
    kept) and keeps the first ``nchan`` channels when no ``channels`` are given.
    Here channels are only guessed up to size 4 and every other ambiguity is an
    error naming the axes to pass. For an unambiguous (Z, Y, X) gray volume the
    result equals ``convert_image(vol, None, do_3D=True, nchan=2)``; Cellpose's
    ``channels=None`` on a multi-channel volume corresponds to ``chan=1, chan2=2``.
    """
    vol = _validate_volume(vol)
    nchan = _validate_count(nchan, "nchan", minimum=1)
    chan = _validate_count(chan, "chan", minimum=0)
    chan2 = _validate_count(chan2, "chan2", minimum=0)
    plan = resolve_axes(vol.shape, channel_axis=channel_axis, z_axis=z_axis, time_axis=time_axis)
    check_gray(plan, chan)
    lines = [*plan.notes, *plan.warnings]
    view = _zyxc_view(vol, (plan.z, plan.y, plan.x, plan.c))
    selection: list[str] = []
    sources, gray = _select_channels(view.shape[-1], chan, chan2, nchan, selection)
    out = _fill_output(view, sources, gray, nchan)
    plan.log()
    for line in selection:
        logger.info(line)
    return out, lines + selection


def _validate_volume(vol) -> np.ndarray:
    arr = np.asarray(vol)
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)
            or arr.dtype == np.bool_):
        raise InvalidInputError(
            f"`vol` must have a real numeric dtype (integer or float), got dtype {arr.dtype}"
        )
    if arr.ndim < 3:
        raise InvalidInputError(
            f"`vol` of shape {arr.shape} is a {arr.ndim}D array: 3D segmentation needs a Z "
            "axis; 2D images are not supported in 3D mode"
        )
    if 0 in arr.shape:
        raise InvalidInputError(f"`vol` has a zero-size axis: shape {arr.shape}")
    return arr


def _validate_count(value, name: str, *, minimum: int) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise InvalidInputError(f"`{name}` must be an integer >= {minimum}, got {value!r}")
    if value < minimum:
        raise InvalidInputError(f"`{name}` must be an integer >= {minimum}, got {value}")
    return int(value)


def _validate_axis(axis, name: str, shape: tuple[int, ...], what: str = "`vol`") -> int | None:
    if axis is None:
        return None
    ndim = len(shape)
    if isinstance(axis, (bool, np.bool_)) or not isinstance(axis, numbers.Integral):
        raise InvalidInputError(f"`{name}` must be an integer axis index or None, got {axis!r}")
    if not -ndim <= axis < ndim:
        raise InvalidInputError(
            f"`{name}`={axis} is out of range for {what} of shape {shape} "
            f"(valid: 0..{ndim - 1} or -{ndim}..-1)"
        )
    return int(axis) % ndim


#: the parameters axis decisions name without backticks ("pass z_axis=0")
_AXES = ("time_axis", "channel_axis", "z_axis")


def _axes_error(message: str) -> InvalidInputError:
    """An error about the axes: it concerns the array (quoted) and the axis parameters."""
    return InvalidInputError(message, param=(*quoted_names(message), *_AXES))


def _guess_channel_axis(shape, keep, zaxis, notes, warnings, what, guessing) -> int | None:
    cands = [i for i in keep if i != zaxis]
    smallest = min(shape[i] for i in cands)
    ties = [i for i in cands if shape[i] == smallest]
    if len(keep) == 3:
        if smallest <= MAX_GUESSED_CHANNELS and zaxis is None and guessing:
            ax = ties[0]
            raise _axes_error(
                f"{what} of shape {shape} is ambiguous: axis {ax} (size {smallest}) looks like "
                "channels, which would leave a 2D image (3D segmentation needs a Z axis; 2D "
                f"images are not supported in 3D mode). If axis {ax} is Z, pass z_axis={ax}"
            )
        notes.append("no channel axis: treating the volume as single-channel "
                     "(pass channel_axis if one axis is channels)")
        return None
    if smallest > MAX_GUESSED_CHANNELS:
        raise _axes_error(
            f"{what} of shape {shape} is ambiguous: 4 non-singleton axes but none of size <= "
            f"{MAX_GUESSED_CHANNELS} to be channels; pass time_axis (a time-lapse) or "
            "channel_axis (and z_axis)"
        )
    if len(ties) > 1:
        raise _axes_error(
            f"{what} of shape {shape} is ambiguous: axes {_join(ties)} all have size {smallest}; "
            "pass channel_axis (and z_axis)"
        )
    warnings.append(f"treating axis {ties[0]} (size {smallest}) as channels "
                    "(smallest axis; pass channel_axis to override)")
    return ties[0]


def check_gray(plan: AxisPlan, chan: int, what: str = "`vol`") -> None:
    """Refuse ``chan`` 0 (gray: the mean of the channels) over more than
    :data:`MAX_GRAY_CHANNELS` channels: such an axis holds time points or planes."""
    if chan != 0 or plan.nchan is None or plan.nchan <= MAX_GRAY_CHANNELS:
        return
    raise InvalidInputError(
        f"{what} of shape {plan.shape}: `chan` 0 (gray) would average the {plan.nchan} entries of "
        f"axis {plan.c} (the channel axis) into one image; more than {MAX_GRAY_CHANNELS} "
        "channels are never averaged (Cellpose's channels are at most red, green, blue and "
        "alpha): if that axis holds time points pass time_axis (a time-lapse), else choose one "
        "channel with `chan`", param=(*quoted_names(what), "chan", *_AXES))


def _zyxc_view(vol: np.ndarray, order) -> np.ndarray:
    """A (Z, Y, X, C) view of ``vol`` (no copy); C = 1 without a channel axis."""
    zaxis, yaxis, xaxis, caxis = order
    used = [a for a in order if a is not None]
    drop = tuple(i for i in range(vol.ndim) if i not in used)
    squeezed = np.squeeze(vol, axis=drop) if drop else vol
    pos = {a: k for k, a in enumerate(sorted(used))}
    if caxis is None:
        return np.transpose(squeezed, (pos[zaxis], pos[yaxis], pos[xaxis]))[..., None]
    return np.transpose(squeezed, (pos[zaxis], pos[yaxis], pos[xaxis], pos[caxis]))


def _select_channels(nc: int, chan: int, chan2: int, nchan: int, lines):
    """Return (source channel indices, gray flag) following Cellpose's ``reshape``."""
    for name, value in (("chan", chan), ("chan2", chan2)):
        if value > nc:
            raise InvalidInputError(
                f"`{name}`={value} selects channel {value} but the volume has {nc} "
                f"channel{'s' if nc > 1 else ''}"
            )
    if nc == 1:
        if chan2 > 0:
            lines.append(f"chan2={chan2} ignored: the volume has a single channel")
        sources, gray = [0], False
    elif chan == 0:
        if chan2 > 0:
            lines.append(f"chan2={chan2} ignored because chan=0 (gray), as in Cellpose")
        lines.append(f"chan=0: using the mean of the {nc} channels (gray)")
        sources, gray = [], True
    else:
        sources = [chan - 1] + ([chan2 - 1] if chan2 > 0 else [])
        lines.append("using channel " + " and ".join(str(s + 1) for s in sources)
                     + f" of {nc}")
        gray = False
    nsel = 1 if gray else len(sources)
    if nsel > nchan:
        raise InvalidInputError(
            f"`chan2`={chan2} selects a second channel but the model takes nchan={nchan}"
        )
    if nchan > nsel:
        lines.append(f"padding with {nchan - nsel} zero channel{'s' if nchan - nsel > 1 else ''}"
                     f" to the model's nchan={nchan}")
    return sources, gray


def _fill_output(view: np.ndarray, sources, gray: bool, nchan: int) -> np.ndarray:
    """Copy the selected channels plane by plane into a new (Z, Y, X, nchan) array."""
    nz, ny, nx, _ = view.shape
    out = np.zeros((nz, ny, nx, nchan), np.float32)
    nsel = 1 if gray else len(sources)
    with np.errstate(over="ignore", invalid="ignore"):
        for z in range(nz):
            plane = view[z]
            if gray:
                out[z, :, :, 0] = plane.astype(np.float32).mean(axis=-1)
            else:
                for j, src in enumerate(sources):
                    out[z, :, :, j] = plane[:, :, src]
            if not np.isfinite(out[z, :, :, :nsel]).all():
                raise InvalidInputError(
                    f"`vol` contains NaN or Inf values (first in Z plane {z}"
                    f"{', after conversion to float32' if view.dtype.itemsize > 4 else ''})"
                )
    return out


def _join(items) -> str:
    items = [str(i) for i in items]
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]
