"""Volumes larger than memory: :func:`open_volume` reads blocks of TIFF / OME-TIFF / zarr /
OME-Zarr lazily, and :func:`read_header` gives any input's shape and calibration without its pixels.

A TIFF is opened through tifffile's zarr store when zarr is installed (one page or tile is
decoded at a time, with ordinary file reads, so nothing is memory-mapped and resident memory stays
bounded); without zarr, through :class:`_TiffPages`, which decodes the whole pages (planes) a read
needs: enough for a time-lapse read frame by frame. A zarr array or OME-Zarr image is read at its
full-resolution level ``0``. The :class:`LazyVolume` knows which axes are Z, Y, X (and channels)
and returns blocks as ``(Z, Y, X)`` or ``(Z, C, Y, X)`` arrays.

zarr inputs need ``zarr`` (``pip install 'nucseg-rt[large]'``), imported inside the functions.
"""

from __future__ import annotations

import itertools
import math
import os
import threading
from pathlib import Path

import numpy as np

from nucseg_rt.errors import InvalidInputError, MissingDependencyError
from nucseg_rt.io._fs import existing_file
from nucseg_rt.io._meta import VolumeInfo, tiff_info
from nucseg_rt.io._tiff import damage_reports, tiff_header
from nucseg_rt.io._zarr import import_zarr, is_zarr_store, open_zarr
from nucseg_rt.prep.axes import resolve_axes

__all__ = ["LazyVolume", "open_volume", "read_header", "read_first_plane"]


class LazyVolume:
    """A volume read block by block; axes resolved once.

    Attributes
    ----------
    shape_zyx : (int, int, int)
        Size of the Z, Y and X axes.
    nchan : int or None
        Number of channels, None for a single-channel (Z, Y, X) volume.
    dtype : numpy.dtype
        Pixel type.
    info : VolumeInfo
        Voxel size, axis letters and dtype (as :func:`nucseg_rt.io.read_volume` gives them).
    axes : nucseg_rt.prep.axes.AxisPlan
        The stored array's Z, Y, X (and channel, and time) axes, decided by
        :func:`nucseg_rt.prep.axes.resolve_axes` (the rule every input follows).
    n_frames : int or None
        Number of time points of a time-lapse opened with ``allow_time``, else None.
    """

    def __init__(self, array, info: VolumeInfo, *, channel_axis: int | None = None,
                 z_axis: int | None = None, time_axis: int | None = None,
                 allow_time: bool = False, closer=None, what: str = "the volume"):
        self._array, self.info, self._closer = array, info, closer
        self.dtype = np.dtype(array.dtype)
        self.axes = resolve_axes(tuple(array.shape), letters=info.axes, channel_axis=channel_axis,
                                 z_axis=z_axis, time_axis=time_axis, what=what,
                                 allow_time=allow_time)
        self._order = self.axes.order
        self.n_frames = self.axes.n_frames
        self.shape_zyx = self.axes.shape_zyx
        self.nchan = self.axes.nchan

    @property
    def channel_axis(self) -> int | None:
        """Channel axis of the arrays :meth:`read` returns (1 or None)."""
        return None if self.nchan is None else 1

    def read(self, zyx_slices: tuple[slice, slice, slice], *, frame: int = 0) -> np.ndarray:
        """The block ``zyx_slices`` (of time point ``frame`` of a time-lapse) as a new
        ``(Z, Y, X)`` or ``(Z, C, Y, X)`` array."""
        index = list(self.axes.index(frame))
        for k, sl in enumerate(zyx_slices):
            index[self._order[k]] = sl
        block = np.asarray(self._array[tuple(index)])
        kept = [i for i, ix in enumerate(index) if isinstance(ix, slice)]  # axes left in block
        pos = {ax: kept.index(ax) for ax in self._order}
        perm = [pos[self._order[0]]] + ([pos[self._order[3]]] if self.nchan else []) \
            + [pos[self._order[1]], pos[self._order[2]]]
        return np.ascontiguousarray(np.transpose(block, perm))

    def read_all(self, *, frame: int = 0) -> np.ndarray:
        """The whole volume (of time point ``frame``)."""
        return self.read((slice(None),) * 3, frame=frame)

    def close(self) -> None:
        if self._closer is not None:
            self._closer()
            self._closer = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def open_volume(source, *, channel_axis: int | None = None, z_axis: int | None = None,
                time_axis: int | None = None, allow_time: bool = False) -> LazyVolume:
    """Open a volume for block reads without loading it.

    Parameters
    ----------
    source : path-like or array
        A TIFF / OME-TIFF file, a ``.zarr`` array or group, an ``.ome.zarr`` image, or an
        in-memory array (used as is).
    channel_axis, z_axis : int, optional
        Axes of the stored array; default from its metadata (ImageJ/OME/NGFF axes), else Z is
        the first axis and a 4th axis of size <= 4 holds channels.
    time_axis : int, optional
        Axis of the time points (default: from the metadata, never guessed).
    allow_time : bool
        The caller reads a time-lapse frame by frame (``read(..., frame=t)``); False: a time
        axis is refused.

    Returns
    -------
    LazyVolume
        Close it (or use ``with``) to release the file.
    """
    axes = dict(channel_axis=channel_axis, z_axis=z_axis, time_axis=time_axis,
                allow_time=allow_time)
    if not isinstance(source, (str, os.PathLike)):
        arr = np.asarray(source)
        if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
            raise InvalidInputError(f"`vol` must be real numeric, got dtype {arr.dtype}")
        return LazyVolume(arr, VolumeInfo(None, None, arr.dtype), what="`vol`", **axes)
    path = _existing(source)
    if is_zarr_store(path):
        array, info = open_zarr(path)
        return LazyVolume(array, info, what=str(path), **axes)
    return _open_tiff(existing_file(path), axes)


def read_header(source: str | os.PathLike) -> tuple[tuple[int, ...], VolumeInfo]:
    """Shape and :class:`VolumeInfo` of a TIFF or zarr / OME-Zarr volume; no pixels are read.

    Parameters
    ----------
    source : str or os.PathLike
        A TIFF / OME-TIFF file, a ``.zarr`` array or group, or an ``.ome.zarr`` image (zarr is
        needed for zarr inputs only).

    Returns
    -------
    shape : tuple of int
        The stored array's shape, in file order.
    info : VolumeInfo
        Voxel size, axis letters and dtype.

    Raises
    ------
    InvalidInputError
        The path does not exist, is not a readable TIFF or zarr, or the image is empty.
    """
    path = _existing(source)
    if is_zarr_store(path):
        array, info = open_zarr(path)
        return tuple(int(s) for s in array.shape), info
    return tiff_header(path)


def read_first_plane(source: str | os.PathLike) -> np.ndarray:
    """The first stored 2D plane of a TIFF (its first page) or zarr / OME-Zarr array, whatever
    its axes mean: a cheap look at the values (e.g. NaN) before the axes are known."""
    path = _existing(source)
    if is_zarr_store(path):
        array, _ = open_zarr(path)
        return np.asarray(array[(0,) * (array.ndim - 2)])
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            return tif.pages[0].asarray()
    except Exception as exc:  # tifffile raises many types on bad files
        raise InvalidInputError(
            f"{path}: cannot read as TIFF ({type(exc).__name__}: {exc})") from exc


def _existing(source: str | os.PathLike) -> Path:
    path = Path(source)
    if not path.exists():
        raise InvalidInputError(f"{path}: file does not exist")
    return path


class _TiffPages:
    """A TIFF series as a read-only array decoded page by page, for readers without zarr.

    Indexing takes one int or slice per axis; the pages (2D planes, with their samples) under
    the indexed leading axes are decoded one at a time and sliced. A series whose pages do not
    tile its leading axes one plane each (tiled volumes, SubIFD pyramids) is read whole on the
    first access instead.
    """

    def __init__(self, series):
        self._series = series
        self.shape, self.dtype = tuple(series.shape), np.dtype(series.dtype)
        self.ndim = len(self.shape)
        page_shape = tuple(series.keyframe.shape)
        self._lead = self.ndim - len(page_shape)
        pages = series.pages
        self._paged = (self._lead >= 0 and self.shape[self._lead:] == page_shape
                       and len(pages) == math.prod(self.shape[:self._lead])
                       and all(p is not None for p in pages))
        self._whole = None
        self._lock = threading.Lock()  # one file handle: one seek-and-read at a time

    def __getitem__(self, index) -> np.ndarray:
        index = index if isinstance(index, tuple) else (index,)
        index = index + (slice(None),) * (self.ndim - len(index))
        if not self._paged:
            with self._lock:
                if self._whole is None:
                    self._whole = self._series.asarray()
            return self._whole[index]
        lead, rest = index[:self._lead], index[self._lead:]
        ranges = [[ix] if isinstance(ix, int) else range(*ix.indices(n))
                  for ix, n in zip(lead, self.shape)]
        sizes = [len(r) for r, ix in zip(ranges, lead) if not isinstance(ix, int)]
        tail = [len(range(*ix.indices(n))) for ix, n in zip(rest, self.shape[self._lead:])
                if not isinstance(ix, int)]
        out = np.empty((math.prod(len(r) for r in ranges), *tail), self.dtype)
        for i, pos in enumerate(itertools.product(*ranges)):  # one decoded page at a time
            k = int(np.ravel_multi_index(pos, self.shape[:self._lead])) if pos else 0
            with self._lock:
                plane = self._series.pages[k].asarray()
            out[i] = plane[rest]
        return out.reshape(*sizes, *tail)


def _open_tiff(path: Path, axes: dict) -> LazyVolume:
    try:
        zarr = import_zarr()
    except MissingDependencyError:
        zarr = None  # page by page (_TiffPages)
    import tifffile

    try:
        with damage_reports() as damage:
            tif = tifffile.TiffFile(path)
            series = tif.series[0]
            info = tiff_info(tif, series, series.dtype)
            store = series.aszarr() if zarr is not None else None
            array = zarr.open(store, mode="r") if zarr is not None else _TiffPages(series)
    except Exception as exc:  # tifffile raises many types on bad files
        raise InvalidInputError(f"{path}: cannot read as TIFF ({type(exc).__name__}: {exc})") from exc
    if damage:
        tif.close()
        raise InvalidInputError(f"{path}: TIFF file is truncated or damaged ({damage[0]})")
    if 0 in array.shape:
        tif.close()
        raise InvalidInputError(f"{path}: image has a zero-size axis, shape {array.shape}")

    def closer():
        if store is not None:
            store.close()
        tif.close()

    try:
        return LazyVolume(array, info, closer=closer, what=str(path), **axes)
    except BaseException:
        closer()
        raise
