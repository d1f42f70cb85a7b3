"""What a file says about its image besides the pixels: axis letters and the voxel size, read from
ImageJ, OME, tifffile or OME-Zarr (NGFF) metadata into one :class:`VolumeInfo`."""

from __future__ import annotations

import contextlib
import xml.etree.ElementTree as ET
from dataclasses import dataclass

import numpy as np

from nucseg_rt.errors import InvalidInputError

__all__ = ["VolumeInfo", "tiff_info", "ngff_axes", "ngff_unit", "validate_voxel_size"]

# Axis letters whose meaning is certain; tifffile's "Q" / "I" mean "unknown".
_KNOWN_AXES = frozenset("TZCYXS")


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


def validate_voxel_size(voxel_size) -> tuple[float, float, float] | None:
    """``voxel_size`` as three floats > 0 (Z, Y, X), or None."""
    if voxel_size is None:
        return None
    size = tuple(float(v) for v in voxel_size)
    if len(size) != 3 or not all(np.isfinite(v) and v > 0 for v in size):
        raise InvalidInputError(
            f"`voxel_size` must be three finite values > 0 (Z, Y, X), got {voxel_size!r}")
    return size


# --- TIFF ---------------------------------------------------------------------------------------


def tiff_info(tif, series, dtype: np.dtype) -> VolumeInfo:
    """The :class:`VolumeInfo` of ``series`` in the open ``tifffile.TiffFile`` ``tif``."""
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


# --- OME-Zarr (NGFF) ------------------------------------------------------------------------------


def ngff_axes(ms: dict, level: dict):
    """Axis letters, (Z, Y, X) voxel size, unit (of X) and whether the Z step is known (in the
    unit of X) from NGFF multiscales metadata."""
    letters = "".join(_ngff_letter(a) for a in ms.get("axes", [])) or None
    scale = next((t["scale"] for t in level.get("coordinateTransformations", [])
                  if t.get("type") == "scale"), None)
    voxel, unit, z_known = None, None, False
    if letters and scale and all(a in letters for a in "ZYX"):
        units = {a.get("name", "").upper()[:1]: _short_unit(a.get("unit"))
                 for a in ms["axes"] if isinstance(a, dict)}
        unit = units.get("X")
        z = _in_unit(scale[letters.index("Z")], units.get("Z"), unit)
        z_known = z is not None
        voxel = (z if z_known else float(scale[letters.index("Z")]),
                 *(float(scale[letters.index(a)]) for a in "YX"))
    return letters, voxel, unit, z_known


#: NGFF axis types whose letter is certain whatever the axis is called ("frame" of type "time")
_NGFF_TYPES = {"time": "T", "channel": "C"}


def _ngff_letter(axis) -> str:
    """An NGFF axis's letter: from its type for time and channel axes, else its name's first."""
    if isinstance(axis, dict):
        return _NGFF_TYPES.get(axis.get("type"), str(axis.get("name", "")).upper()[:1])
    return str(axis).upper()[:1]


def _short_unit(unit: str | None) -> str | None:
    return {"micrometer": "um", "nanometer": "nm", "millimeter": "mm"}.get(unit or "", unit)


def ngff_unit(unit: str | None) -> str | None:
    """The NGFF name of a short unit ("um" -> "micrometer"); None if it has none."""
    return {"um": "micrometer", "µm": "micrometer", "nm": "nanometer",
            "mm": "millimeter"}.get(unit or "", None)


# --- units --------------------------------------------------------------------------------------

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
