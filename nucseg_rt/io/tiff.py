"""Reading volumes and writing results: TIFF in, label TIFF and flow ``.npz`` out.

Every output is written to a temporary file in the destination folder and renamed
into place with ``os.replace``, so an interrupted run never leaves a half-written
result; the temporary file is removed on any error (disk full included). Existing
files are never overwritten unless ``overwrite=True``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import secrets
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np

from nucseg_rt.errors import InvalidInputError

__all__ = ["VolumeInfo", "read_volume", "read_header", "write_labels_tif", "write_flows_npz", "atomic_write"]

# Axis letters whose meaning is certain; tifffile's "Q" / "I" mean "unknown".
_KNOWN_AXES = frozenset("TZCYXS")
# tifffile logs these (instead of raising) when a file is cut short or damaged.
_DAMAGE_WORDS = ("invalid page offset", "invalid value offset", "corrupt", "truncat",
                 "failed to reshape")


@dataclass(frozen=True)
class VolumeInfo:
    """What a TIFF file says about its image besides the pixels.

    Attributes
    ----------
    voxel_size_zyx : tuple of 3 float, or None
        Physical voxel size (Z, Y, X) in ``unit``; None when the file is not
        calibrated (no Y/X resolution, or only the writer's default 1 x 1 with no unit
        and no Z spacing). Z is 1.0 when the file gives Y/X but no Z spacing (ImageJ's
        rule).
    axes : str or None
        Axis letters of the returned array (e.g. ``"ZYX"``, ``"ZCYX"``) when the file
        states them (ImageJ, OME or tifffile metadata); None when they are unknown.
    dtype : numpy.dtype
        Pixel type as stored in the file.
    unit : str or None
        Unit of ``voxel_size_zyx`` (e.g. ``"um"``) when the file names one.
    z_step_known : bool
        The file states the Z step, in the unit of the pixel size (converted when the file
        gives Z in another length unit), so Z step / pixel size is its anisotropy.
    calibration : str or None
        Where the voxel size comes from: "ImageJ", "OME", "tifffile" or "OME-Zarr".
    """

    voxel_size_zyx: tuple[float, float, float] | None
    axes: str | None
    dtype: np.dtype
    unit: str | None = None
    z_step_known: bool = False
    calibration: str | None = None

    def anisotropy(self) -> tuple[float | None, str]:
        """Z step / X pixel size from the file's calibration, and where it comes from.

        Returns ``(None, reason)`` when the file does not state both the Z step and the pixel
        size (in the same unit).
        """
        if self.voxel_size_zyx is None:
            return None, "the file has no voxel size"
        if not self.z_step_known:
            return None, "the file gives the pixel size but no Z step"
        z, _, x = self.voxel_size_zyx
        unit = f" {self.unit}" if self.unit else ""
        return z / x, f"file calibration ({self.calibration}: Z step {z:g}{unit} / pixel {x:g}{unit})"


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
    path = _validate_input_path(path)
    import tifffile

    try:
        with _tifffile_damage_reports() as damage, tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            volume = series.asarray()
            for _ in tif.pages:  # walk every IFD: a cut-off tail may hide behind good data
                pass
            info = _volume_info(tif, series, volume.dtype)
    except MemoryError:
        raise
    except Exception as exc:  # tifffile, codecs and short reads raise many types
        if isinstance(exc, tifffile.TiffFileError) and str(exc).startswith("not a TIFF"):
            raise InvalidInputError(f"{path}: {exc}") from exc
        raise InvalidInputError(f"{path}: TIFF file is truncated or damaged "
                                f"({type(exc).__name__}: {_strip_repr(str(exc))})") from exc
    if damage:
        raise InvalidInputError(
            f"{path}: TIFF file is truncated or damaged ({_strip_repr(damage[0])})")
    if volume.size == 0:
        raise InvalidInputError(f"{path}: image has a zero-size axis, shape {volume.shape}")
    return volume, info


def read_header(path: str | os.PathLike) -> tuple[tuple[int, ...], VolumeInfo]:
    """Shape and :class:`VolumeInfo` of a TIFF's first image series, without reading its pixels.

    Raises
    ------
    InvalidInputError
        The path does not exist, is not a file or not a readable TIFF, or the image is empty.
    """
    path = _validate_input_path(path)
    import tifffile

    try:
        with _tifffile_damage_reports() as damage, tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            shape, info = tuple(int(s) for s in series.shape), _volume_info(tif, series, series.dtype)
            for _ in tif.pages:  # every IFD: a cut-off file may still show a smaller image
                pass
    except Exception as exc:  # tifffile raises many types on bad files
        if isinstance(exc, tifffile.TiffFileError) and str(exc).startswith("not a TIFF"):
            raise InvalidInputError(f"{path}: {exc}") from exc
        raise InvalidInputError(f"{path}: TIFF file is truncated or damaged "
                                f"({type(exc).__name__}: {_strip_repr(str(exc))})") from exc
    if damage:
        raise InvalidInputError(
            f"{path}: TIFF file is truncated or damaged ({_strip_repr(damage[0])})")
    if 0 in shape:
        raise InvalidInputError(f"{path}: image has a zero-size axis, shape {shape}")
    return shape, info


def write_labels_tif(path: str | os.PathLike, labels: np.ndarray,
                     voxel_size: tuple[float, float, float] | None = None, *,
                     unit: str | None = None, overwrite: bool = False) -> Path:
    """Write a label image as a zlib-compressed TIFF, atomically.

    uint8/uint16 labels are written as an ImageJ hyperstack (opens in Fiji with
    its calibration); uint32 labels, which ImageJ cannot store, as a tifffile
    TIFF carrying the same calibration.

    Parameters
    ----------
    path : str or os.PathLike
        Destination file; its folder must exist.
    labels : (Z, Y, X) or (Y, X) ndarray of uint8, uint16 or uint32
        Label image, 0 = background.
    voxel_size : tuple of 3 float, optional
        Physical voxel size (Z, Y, X), stored as ImageJ spacing and TIFF resolution.
    unit : str, optional
        Unit of ``voxel_size`` (e.g. ``"um"``).
    overwrite : bool
        Replace ``path`` if it exists; otherwise an existing file is an error.

    Returns
    -------
    Path
        The written file.
    """
    path = _validate_output_path(path, overwrite)
    labels = _validate_labels(labels)
    voxel_size = _validate_voxel_size(voxel_size)
    kwargs = _tiff_calibration(labels, voxel_size, unit)
    import tifffile

    with atomic_write(path) as fh:
        tifffile.imwrite(fh, labels, compression="zlib", **kwargs)
    return path


def write_flows_npz(path: str | os.PathLike, flows: np.ndarray, cellprob: np.ndarray, *,
                    overwrite: bool = False) -> Path:
    """Write flows and cell probability to an ``.npz`` file, atomically.

    Parameters
    ----------
    path : str or os.PathLike
        Destination file; its folder must exist.
    flows : (3, Z, Y, X) or (2, Y, X) float ndarray
        Flow field, components in ZYX (or YX) order; stored as float32 ``"flows"``.
    cellprob : (Z, Y, X) or (Y, X) float ndarray
        Cell probability logits; stored as float32 ``"cellprob"``.
    overwrite : bool
        Replace ``path`` if it exists; otherwise an existing file is an error.

    Returns
    -------
    Path
        The written file.
    """
    path = _validate_output_path(path, overwrite)
    flows, cellprob = np.asarray(flows), np.asarray(cellprob)
    if flows.ndim != cellprob.ndim + 1 or flows.shape[1:] != cellprob.shape \
            or flows.shape[0] != cellprob.ndim:
        raise InvalidInputError(
            f"`flows` must have shape (ndim, *cellprob.shape), got flows {flows.shape} "
            f"and cellprob {cellprob.shape}")
    with atomic_write(path) as fh:
        np.savez(fh, flows=flows.astype(np.float32, copy=False),
                 cellprob=cellprob.astype(np.float32, copy=False))
    return path


# --- validation -----------------------------------------------------------------------


def _validate_input_path(path: str | os.PathLike) -> Path:
    path = Path(path)
    if not path.exists():
        raise InvalidInputError(f"{path}: file does not exist")
    if not path.is_file():
        raise InvalidInputError(f"{path}: not a file")
    return path


def _validate_output_path(path: str | os.PathLike, overwrite: bool) -> Path:
    path = Path(path)
    if not path.parent.is_dir():
        raise InvalidInputError(f"output folder {path.parent} does not exist")
    if path.exists() and not overwrite:
        raise InvalidInputError(f"{path} already exists (pass overwrite=True to replace it)")
    if path.is_dir():
        raise InvalidInputError(f"{path} is a folder, not a file")
    return path


def _validate_labels(labels: np.ndarray) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.dtype not in (np.uint8, np.uint16, np.uint32):
        raise InvalidInputError(
            f"`labels` must be uint8, uint16 or uint32, got {labels.dtype}")
    if labels.ndim not in (2, 3):
        raise InvalidInputError(f"`labels` must be (Z, Y, X) or (Y, X), got shape {labels.shape}")
    return labels


def _validate_voxel_size(voxel_size) -> tuple[float, float, float] | None:
    if voxel_size is None:
        return None
    size = tuple(float(v) for v in voxel_size)
    if len(size) != 3 or not all(np.isfinite(v) and v > 0 for v in size):
        raise InvalidInputError(
            f"`voxel_size` must be three finite values > 0 (Z, Y, X), got {voxel_size!r}")
    return size


# --- reading metadata -------------------------------------------------------------------


@contextlib.contextmanager
def _tifffile_damage_reports() -> Iterator[list[str]]:
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


def _strip_repr(message: str) -> str:
    """tifffile's messages start with the object's repr ("<tifffile.TiffFile 'x.tif'> ...")."""
    return re.sub(r"^<[^>]*>\s*", "", message)


def _volume_info(tif, series, dtype: np.dtype) -> VolumeInfo:
    axes = series.axes if set(series.axes) <= _KNOWN_AXES else None
    z_size, unit, source = None, None, None
    if tif.is_imagej:
        meta = tif.imagej_metadata or {}
        z_size, unit, source = meta.get("spacing"), meta.get("unit"), "ImageJ"
    elif tif.is_ome:
        return _ome_info(tif.ome_metadata, axes, dtype)
    elif tif.is_shaped:
        meta = tif.shaped_metadata[0] if tif.shaped_metadata else {}
        z_size, unit, source = meta.get("spacing"), meta.get("unit"), "tifffile"
    yx = _page_resolution(series.pages[0] if series.pages else tif.pages[0])
    if yx == (1.0, 1.0) and z_size is None and not unit:
        yx = None  # the writer's default resolution, not a calibration
    voxel = None if yx is None else (float(z_size or 1.0), *yx)
    z_known = voxel is not None and _positive(z_size)
    return VolumeInfo(voxel, axes, np.dtype(dtype), _clean_unit(unit), z_known,
                      source if voxel is not None else "TIFF")


def _page_resolution(page) -> tuple[float, float] | None:
    """(Y, X) pixel size from the TIFF resolution tags, or None if absent or unset."""
    tags = page.tags
    if "XResolution" not in tags or "YResolution" not in tags:
        return None
    sizes = []
    for name in ("YResolution", "XResolution"):
        num, den = tags[name].value
        if num <= 0 or den <= 0:
            return None
        sizes.append(den / num)
    return sizes[0], sizes[1]


def _ome_info(xml: str | None, axes: str | None, dtype: np.dtype) -> VolumeInfo:
    pixels = None
    if xml:
        with contextlib.suppress(ET.ParseError):
            pixels = next((el for el in ET.fromstring(xml).iter()
                           if el.tag.rsplit("}", 1)[-1] == "Pixels"), None)
    if pixels is None or "PhysicalSizeX" not in pixels.attrib \
            or "PhysicalSizeY" not in pixels.attrib:
        return VolumeInfo(None, axes, np.dtype(dtype))
    attrs = pixels.attrib
    unit = _clean_unit(attrs.get("PhysicalSizeXUnit", "um"))  # OME's default unit is µm
    z = _in_unit(attrs.get("PhysicalSizeZ"), _clean_unit(attrs.get("PhysicalSizeZUnit", "um")),
                 unit)
    voxel = (z if z is not None else 1.0, float(attrs["PhysicalSizeY"]),
             float(attrs["PhysicalSizeX"]))
    return VolumeInfo(voxel, axes, np.dtype(dtype), unit, z is not None, "OME")


#: metres per unit, for Z steps given in another unit than the pixel size
_LENGTHS = {"m": 1.0, "mm": 1e-3, "um": 1e-6, "nm": 1e-9, "pm": 1e-12, "cm": 1e-2,
            "millimeter": 1e-3, "micrometer": 1e-6, "nanometer": 1e-9, "centimeter": 1e-2,
            "meter": 1.0}


def _in_unit(value, unit: str | None, target: str | None) -> float | None:
    """``value`` (in ``unit``) expressed in ``target``; None if absent, not > 0 or not convertible."""
    if not _positive(value):
        return None
    if unit == target:
        return float(value)
    if unit in _LENGTHS and target in _LENGTHS:
        return float(value) * _LENGTHS[unit] / _LENGTHS[target]
    return None


def _positive(value) -> bool:
    try:
        return value is not None and np.isfinite(float(value)) and float(value) > 0
    except (TypeError, ValueError):
        return False


def _clean_unit(unit) -> str | None:
    if not unit or not isinstance(unit, str):
        return None
    return {"\\u00B5m": "um", "µm": "um", "micron": "um"}.get(unit, unit)


# --- writing ------------------------------------------------------------------------------


def _tiff_calibration(labels: np.ndarray, voxel_size, unit: str | None) -> dict:
    """tifffile.imwrite keywords carrying axes and voxel size (ImageJ when it can)."""
    axes = "ZYX" if labels.ndim == 3 else "YX"
    metadata: dict = {"axes": axes}
    kwargs: dict = {"imagej": labels.dtype != np.uint32, "metadata": metadata}
    if voxel_size is not None:
        kwargs["resolution"] = (1.0 / voxel_size[2], 1.0 / voxel_size[1])
        metadata["spacing"] = voxel_size[0]
        if unit:
            metadata["unit"] = unit
    return kwargs


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike) -> Iterator[IO[bytes]]:
    """Yield a binary file to write ``path`` through, renamed into place on success only.

    The data goes to a hidden temporary file in ``path``'s folder, which is flushed,
    synced and then renamed over ``path`` with ``os.replace`` (atomic on one file
    system). On any error, including ``KeyboardInterrupt`` and a full disk, the
    temporary file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.part")
    try:
        with open(tmp, "xb") as fh:  # plain open: permissions follow the umask
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
