"""TIFF files: read a volume and its calibration, check that a file is whole, write labels.

Label TIFFs are written atomically (:func:`nucseg_rt.io.atomic_write`); existing files are never
overwritten unless ``overwrite=True``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from nucseg_rt.errors import InvalidInputError
from nucseg_rt.io._fs import atomic_write, existing_file, validate_output_path
from nucseg_rt.io._meta import VolumeInfo, tiff_info, validate_voxel_size

__all__ = ["read_volume", "tiff_header", "tiff_problem", "write_labels_tif", "damage_reports"]

# tifffile logs these (instead of raising) when a file is cut short or damaged.
_DAMAGE_WORDS = ("invalid page offset", "invalid value offset", "corrupt", "truncat",
                 "failed to reshape")
_LABEL_TYPES = (np.uint8, np.uint16, np.uint32)


def read_volume(path: str | os.PathLike) -> tuple[np.ndarray, VolumeInfo]:
    """Read the first image series of a TIFF file into memory.

    Parameters
    ----------
    path : str or os.PathLike
        A TIFF, ImageJ hyperstack or OME-TIFF file.

    Returns
    -------
    volume : ndarray
        The pixels in file order, e.g. (Z, Y, X) or (Z, C, Y, X), dtype as stored.
    info : VolumeInfo
        Voxel size, axis letters and dtype.

    Raises
    ------
    InvalidInputError
        The path does not exist or is not a file, the file is not a TIFF, is truncated
        or damaged, or holds an empty image.
    """
    path = existing_file(path)
    with _checked_tiff(path) as (tif, series):
        volume = series.asarray()
        info = tiff_info(tif, series, volume.dtype)
    _check_not_empty(path, volume.shape)
    return volume, info


def tiff_header(path: Path) -> tuple[tuple[int, ...], VolumeInfo]:
    """Shape and :class:`VolumeInfo` of a TIFF's first image series, without reading its pixels
    (:func:`nucseg_rt.io.read_header` for any input)."""
    path = existing_file(path)
    with _checked_tiff(path) as (tif, series):
        shape, info = tuple(int(s) for s in series.shape), tiff_info(tif, series, series.dtype)
    _check_not_empty(path, shape)
    return shape, info


def _check_not_empty(path: Path, shape: tuple[int, ...]) -> None:
    if 0 in shape:
        raise InvalidInputError(f"{path}: image has a zero-size axis, shape {shape}")


@contextlib.contextmanager
def _checked_tiff(path: Path):
    """Yield ``(TiffFile, first series)``; after the caller's reads walk every IFD (a cut-off tail
    may hide behind good data). A file that is not a TIFF, or is truncated or damaged (an
    exception, or a damage report tifffile only logs), raises InvalidInputError."""
    import tifffile

    try:
        with damage_reports() as damage, tifffile.TiffFile(path) as tif:
            yield tif, tif.series[0]
            for _ in tif.pages:
                pass
    except MemoryError:
        raise
    except Exception as exc:  # tifffile, codecs and short reads raise many types
        if isinstance(exc, tifffile.TiffFileError) and str(exc).startswith("not a TIFF"):
            raise InvalidInputError(f"{path}: {exc}") from exc
        raise InvalidInputError(f"{path}: TIFF file is truncated or damaged "
                                f"({type(exc).__name__}: {strip_repr(str(exc))})") from exc
    if damage:
        raise InvalidInputError(
            f"{path}: TIFF file is truncated or damaged ({strip_repr(damage[0])})")


@contextlib.contextmanager
def damage_reports() -> Iterator[list[str]]:
    """Collect tifffile's log messages that mean a damaged file; keep them off stderr."""
    found: list[str] = []

    class _Collector(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            message = record.getMessage()
            if any(word in message.lower() for word in _DAMAGE_WORDS):
                found.append(message)

    log = logging.getLogger("tifffile")
    handler, propagate = _Collector(logging.WARNING), log.propagate
    log.addHandler(handler)
    log.propagate = False
    try:
        yield found
    finally:
        log.removeHandler(handler)
        log.propagate = propagate


def strip_repr(message: str) -> str:
    """tifffile's messages start with the object's repr ("<tifffile.TiffFile 'x.tif'> ...")."""
    return re.sub(r"^<[^>]*>\s*", "", message)


def tiff_problem(path: str | os.PathLike) -> str | None:
    """Why a TIFF is not whole (unreadable structure, data past its end), or None.

    Reads the header and every IFD, not the pixels. A file cut after a complete page can pass
    (it is a valid, smaller TIFF): only an unchanged size tells that writing has ended.
    """
    import tifffile

    try:
        with damage_reports() as damage, tifffile.TiffFile(path) as tif:
            size = tif.filehandle.size
            series = tif.series[0] if tif.series else None
            if series is None or not series.shape or 0 in series.shape:
                return "no image in the file"
            for page in tif.pages:  # every IFD: a cut-off tail may hide behind good pages
                ends = [o + n for o, n in zip(page.dataoffsets, page.databytecounts) if n]
                if ends and max(ends) > size:
                    return f"page {page.index} ends past the end of the file ({size} bytes)"
            offset = series.dataoffset
            if offset is not None and offset + series.nbytes > size:
                return f"image data ends past the end of the file ({size} bytes)"
    except Exception as exc:  # tifffile raises many types on partial or bad files
        return f"{type(exc).__name__}: {strip_repr(str(exc))}"
    return strip_repr(damage[0]) if damage else None


# --- writing ------------------------------------------------------------------------------------


def write_labels_tif(path: str | os.PathLike, labels,
                     voxel_size: tuple[float, float, float] | None = None, *,
                     unit: str | None = None, overwrite: bool = False, dtype=None,
                     note: dict | None = None) -> Path:
    """Write a label image as a zlib-compressed TIFF, atomically.

    uint8/uint16 labels are written as an ImageJ hyperstack (opens in Fiji with
    its calibration); uint32 labels, which ImageJ cannot store, as a tifffile
    TIFF carrying the same calibration.

    Parameters
    ----------
    path : str or os.PathLike
        Destination file; its folder must exist.
    labels : (T, Z, Y, X), (Z, Y, X) or (Y, X) array of uint8, uint16 or uint32
        Label image, 0 = background (T, Z, Y, X: a time-lapse, written as a TZYX hyperstack): a
        numpy array, or an array read one entry of its first axis at a time (e.g. a zarr array
        larger than memory, never held whole).
    voxel_size : tuple of 3 float, optional
        Physical voxel size (Z, Y, X), stored as ImageJ spacing and TIFF resolution.
    unit : str, optional
        Unit of ``voxel_size`` (e.g. ``"um"``).
    overwrite : bool
        Replace ``path`` if it exists; otherwise an existing file is an error.
    dtype : uint8, uint16 or uint32, optional
        Type to store the labels as (default: ``labels``' own).
    note : dict of str, optional
        ``key=value`` lines stored as ImageJ's Info property (or in the tifffile description),
        e.g. which frames of a time-lapse the file holds.

    Returns
    -------
    Path
        The written file.
    """
    path = validate_output_path(path, overwrite)
    if not hasattr(labels, "dtype") or labels.ndim not in (3, 4):
        labels = np.asarray(labels)
    dtype = _validate_labels(labels, dtype)
    kwargs = _tiff_calibration(labels.ndim, dtype, validate_voxel_size(voxel_size), unit)
    if note:  # ImageJ's Info property (Image > Show Info), in the description otherwise
        kwargs["metadata"]["Info"] = "\n".join(f"{k}={v}" for k, v in note.items())
    if isinstance(labels, np.ndarray):
        data = {"data": labels.astype(dtype, copy=False)}
    else:
        data = {"data": _planes(labels, dtype), "shape": tuple(labels.shape), "dtype": dtype}
    import tifffile

    with atomic_write(path) as fh:
        tifffile.imwrite(fh, compression="zlib", **data, **kwargs)
    return path


def _planes(labels, dtype):
    """The 2D planes of ``labels``, reading one entry of its first axis at a time."""
    for i in range(labels.shape[0]):
        block = np.asarray(labels[i]).astype(dtype, copy=False)
        yield from block.reshape(-1, *block.shape[-2:])


def _validate_labels(labels, dtype) -> np.dtype:
    """The type to store ``labels`` as."""
    if dtype is None and labels.dtype not in _LABEL_TYPES:
        raise InvalidInputError(
            f"`labels` must be uint8, uint16 or uint32, got {labels.dtype}")
    if dtype is not None and np.dtype(dtype) not in _LABEL_TYPES:
        raise InvalidInputError(f"`dtype` must be uint8, uint16 or uint32, got {dtype}")
    if labels.ndim not in (2, 3, 4):
        raise InvalidInputError(f"`labels` must be (T, Z, Y, X), (Z, Y, X) or (Y, X), got shape "
                                f"{labels.shape}")
    return np.dtype(dtype or labels.dtype)


def _tiff_calibration(ndim: int, dtype: np.dtype, voxel_size, unit: str | None) -> dict:
    """tifffile.imwrite keywords carrying axes and voxel size (ImageJ when it can)."""
    metadata: dict = {"axes": "TZYX"[4 - ndim:]}
    kwargs: dict = {"imagej": dtype != np.uint32, "metadata": metadata}
    if ndim == 4:  # a Z of 3 or 4 planes is not RGB samples
        kwargs["photometric"] = "minisblack"
    if voxel_size is not None:
        kwargs["resolution"] = (1.0 / voxel_size[2], 1.0 / voxel_size[1])
        metadata["spacing"] = voxel_size[0]
        if unit:
            metadata["unit"] = unit
    return kwargs
