"""Preprocessing: intensity normalization of (Z, Y, X, C) network input, Cellpose 3.1 style.

``normalize`` reproduces Cellpose's ``transforms.normalize_img(..., norm3D=True)``:
1st-99th percentile per channel over the whole volume (``normalize99`` with
``downsample=True``), ``lowhigh`` overrides, ``invert``, ``tile_norm``
(``normalize99_tile``) and ``sharpen_radius`` (``smooth_sharpen_img``, here with
``numpy.fft``; :func:`smooth_sharpen` also offers its smoothing). Input handling lives in
``nucseg_rt.prep.axes``; resampling in ``nucseg_rt.prep.resample``.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from nucseg_rt.errors import InvalidInputError
from nucseg_rt.prep.filters import gaussian_filter1d
from nucseg_rt.prep.resample import resize_linear

__all__ = ["normalize", "smooth_sharpen"]

#: Volumes with more voxels per channel than this get percentiles from a strided subsample.
_DOWNSAMPLE_SIZE = 224**3
#: Percentile ranges up to this are treated as flat (the channel becomes 0), as in Cellpose.
_MIN_RANGE = 1e-3
_TILE_OVERLAP = 0.1


def normalize(
    x_zyxc: np.ndarray,
    *,
    percentile: tuple[float, float] = (1.0, 99.0),
    lowhigh=None,
    tile_norm: int = 0,
    sharpen_radius: float = 0.0,
    invert: bool = False,
    norm3D: bool = True,
    copy: bool = True,
) -> np.ndarray:
    """Normalize each channel so the ``percentile`` bounds map to 0 and 1.

    Parameters
    ----------
    x_zyxc : (Z, Y, X, C) array, real numeric
        Network input, e.g. from ``to_zyxc``. Not modified unless ``copy=False``.
    percentile : (float, float)
        Lower and upper percentile, ``0 <= low < high <= 100``.
    lowhigh : None, (low, high) or (C, 2) array_like
        Fixed intensities that map to 0 and 1 (per channel if (C, 2)); when given,
        percentiles are not computed. Cannot be combined with ``tile_norm`` or
        ``sharpen_radius`` (Cellpose silently ignores those).
    tile_norm : int
        If > 0, percentiles are computed in overlapping tiles of this size in Y and
        X and interpolated (Cellpose's ``normalize99_tile``, ``smooth3D=1``).
    sharpen_radius : float
        If > 0, subtract a Gaussian surround of this sigma (in pixels) from each
        YX plane before normalizing (Cellpose's ``smooth_sharpen_img``).
    invert : bool
        Map normalized ``v`` to ``1 - v`` (for dark objects on a bright background).
    norm3D : bool
        True: one set of bounds per channel for the whole volume (Cellpose 3D mode).
        False: bounds per Z plane (per-plane tile maps with ``tile_norm``).
    copy : bool
        False lets a float32 ``x_zyxc`` be normalized in place (saves one volume of
        memory); the result is then ``x_zyxc`` itself.

    Returns
    -------
    (Z, Y, X, C) float32
        Normalized volume. A channel (or, with ``norm3D=False``, a plane) whose
        input values are all equal is returned as zeros unless ``lowhigh`` is given.

    Raises
    ------
    InvalidInputError
        Bad parameter values, a non-4D or non-numeric array, or NaN/Inf values.

    Notes
    -----
    Deliberate differences from Cellpose 3.1: a constant channel (plane) is set to
    0, where Cellpose feeds its raw value to the network; ``invert`` also applies
    with ``tile_norm`` (Cellpose's ``normalize_img`` skips it there); ``tile_norm``
    with ``norm3D=False`` uses per-plane upper bounds (Cellpose uses the lower bounds
    for both when C > 1 and then always raises ZeroDivisionError).
    """
    low, high = _validate_percentile(percentile)
    tile_norm = _validate_int(tile_norm, "tile_norm")
    sharpen_radius = _validate_radius(sharpen_radius)
    arr = _validate_array(x_zyxc)
    nchan = arr.shape[-1]
    bounds = _validate_lowhigh(lowhigh, nchan)
    if bounds is not None and (tile_norm > 0 or sharpen_radius > 0):
        raise InvalidInputError(
            "`lowhigh` cannot be combined with `tile_norm` or `sharpen_radius` "
            f"(got tile_norm={tile_norm}, sharpen_radius={sharpen_radius})"
        )
    if copy or arr.dtype != np.float32 or not arr.flags.writeable:
        img = np.array(arr, dtype=np.float32, order="C")
    else:
        img = arr
    constant = _constant_channels(img)
    if bounds is not None:
        for c in range(nchan):
            img[..., c] -= bounds[c, 0]
            img[..., c] /= bounds[c, 1] - bounds[c, 0]
        good, zero = np.ones(nchan, bool), []
    else:
        if sharpen_radius > 0:
            _sharpen(img, sharpen_radius, np.flatnonzero(~constant))
            constant |= _constant_channels(img)
        zero = _constant_parts(img, constant, norm3D)
        if tile_norm > 0:
            _tile_normalize(img, tile_norm, low, high, norm3D=norm3D)
            good = ~constant
        elif norm3D:
            good = _normalize_channels(img, low, high, skip=constant)
        else:
            good = _normalize_planes(img, low, high)
    if invert:
        for c in np.flatnonzero(good):
            np.subtract(1, img[..., c], out=img[..., c])
    for index in zero:
        img[index] = 0
    return img


def _validate_percentile(percentile) -> tuple[float, float]:
    try:
        low, high = (float(p) for p in percentile)
    except (TypeError, ValueError):
        raise InvalidInputError(
            f"`percentile` must be two numbers (low, high), got {percentile!r}") from None
    if not 0 <= low < high <= 100:
        raise InvalidInputError(
            f"`percentile` must satisfy 0 <= low < high <= 100, got {percentile!r}")
    return low, high


def _validate_int(value, name: str) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral) or value < 0:
        raise InvalidInputError(f"`{name}` must be an integer >= 0, got {value!r}")
    return int(value)


def _validate_radius(value, name: str = "sharpen_radius") -> float:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real) \
            or not math.isfinite(value) or value < 0:
        raise InvalidInputError(f"`{name}` must be a finite number >= 0, got {value!r}")
    return float(value)


def _validate_lowhigh(lowhigh, nchan: int) -> np.ndarray | None:
    if lowhigh is None:
        return None
    bounds = np.asarray(lowhigh)
    if not (np.issubdtype(bounds.dtype, np.integer) or np.issubdtype(bounds.dtype, np.floating)):
        raise InvalidInputError(f"`lowhigh` must be numbers, got {lowhigh!r}")
    if bounds.shape == (2,):
        bounds = np.tile(bounds, (nchan, 1))
    elif bounds.shape != (nchan, 2):
        raise InvalidInputError(
            f"`lowhigh` must have shape (2,) or (nchan, 2) = ({nchan}, 2), got shape {bounds.shape}")
    if not np.isfinite(bounds).all() or (bounds[:, 0] == bounds[:, 1]).any():
        raise InvalidInputError(f"`lowhigh` must be finite with low != high, got {lowhigh!r}")
    return bounds


def _validate_array(x) -> np.ndarray:
    arr = np.asarray(x)
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise InvalidInputError(f"`x_zyxc` must be real numeric, got dtype {arr.dtype}")
    if arr.ndim != 4 or 0 in arr.shape:
        raise InvalidInputError(
            f"`x_zyxc` must be a non-empty (Z, Y, X, C) array, got shape {arr.shape}")
    return arr


def _constant_channels(img: np.ndarray) -> np.ndarray:
    """(C,) bool: channels whose values are all equal; raises on NaN/Inf."""
    # per channel: numpy reduces a strided channel far faster than axis=(0, 1, 2) of ZYXC
    cmin = np.array([img[..., c].min() for c in range(img.shape[-1])])
    cmax = np.array([img[..., c].max() for c in range(img.shape[-1])])
    if not (np.isfinite(cmin).all() and np.isfinite(cmax).all()):
        raise InvalidInputError("`x_zyxc` contains NaN or Inf values")
    return cmin == cmax


def _constant_parts(img, constant, norm3D: bool) -> list:
    """Index tuples of the channels (norm3D) or planes that are zeroed at the end."""
    if norm3D:
        return [(Ellipsis, c) for c in np.flatnonzero(constant)]
    flat = np.stack([img[..., c].min(axis=(1, 2)) == img[..., c].max(axis=(1, 2))
                     for c in range(img.shape[-1])], axis=1)
    flat[:, constant] = True
    return [(z, Ellipsis, c) for z, c in zip(*np.nonzero(flat))]


def _percentile_bounds(values: np.ndarray, low: float, high: float):
    """Cellpose ``normalize99`` bounds (float32 scalars) of one channel or plane."""
    if values.size > _DOWNSAMPLE_SIZE:
        nskip = [max(1, n // 224) for n in values.shape]
        if values.ndim == 3:
            nskip[0] = max(1, values.shape[0] // 50)
        values = values[tuple(slice(None, None, k) for k in nskip)]
    buf = np.array(values, copy=True)  # partitioned in place by both calls
    return (np.percentile(buf, low, overwrite_input=True),
            np.percentile(buf, high, overwrite_input=True))


def _rescale_inplace(values: np.ndarray, low: float, high: float) -> None:
    x01, x99 = _percentile_bounds(values, low, high)
    if x99 - x01 > _MIN_RANGE:
        values -= x01
        values /= x99 - x01
    else:
        values[...] = 0


def _normalize_channels(img, low, high, *, skip) -> np.ndarray:
    """Per-channel whole-volume normalization; returns the channels normalized."""
    good = ~skip
    for c in np.flatnonzero(good):
        _rescale_inplace(img[..., c], low, high)
    return good


def _normalize_planes(img, low, high) -> np.ndarray:
    """Per-plane normalization (norm3D=False); returns channels with any plane done."""
    good = np.zeros(img.shape[-1], bool)
    for z in range(img.shape[0]):
        for c in range(img.shape[-1]):
            plane = img[z, :, :, c]
            if plane.max() > plane.min():
                _rescale_inplace(plane, low, high)
                good[c] = True
    return good


# --- tile normalization (Cellpose normalize99_tile) -------------------------------------


def _tile_starts(length: int, blocksize: int) -> tuple[np.ndarray, int]:
    block = min(blocksize, length)
    n = 1 if length <= blocksize else int(np.ceil((1.0 + 2 * _TILE_OVERLAP) * length / blocksize))
    return np.linspace(0, length - block, n).astype(int), block


def _fill_flat_tiles(x01: np.ndarray, x99: np.ndarray) -> None:
    """Give tiles with range < 1e-3 the bounds of the nearest other tile (in place)."""
    for c in range(x01.shape[-1]):
        flat = x99[:, :, c] - x01[:, :, c] < _MIN_RANGE
        nflat = int(flat.sum())
        if nflat == flat.size:
            x01[:, :, c] = 0
            x99[:, :, c] = 1
        elif nflat > 0:
            fy, fx = np.nonzero(flat)
            ny, nx = np.nonzero(~flat)
            near = ((fy - ny[:, None]) ** 2 + (fx - nx[:, None]) ** 2).argmin(axis=0)
            x01[fy, fx, c] = x01[ny[near], nx[near], c]
            x99[fy, fx, c] = x99[ny[near], nx[near], c]


def _tile_bounds(img, blocksize: int, low: float, high: float):
    """(Z, ny, nx, C) float32 lower and upper percentile of each tile of each plane."""
    nz, ly, lx, nc = img.shape
    ystart, by = _tile_starts(ly, blocksize)
    xstart, bx = _tile_starts(lx, blocksize)
    x01 = np.empty((nz, len(ystart), len(xstart), nc), np.float32)
    x99 = np.empty_like(x01)
    for z in range(nz):
        tiles = np.stack([img[z, y:y + by, x:x + bx] for y in ystart for x in xstart])
        tiles = tiles.reshape(len(ystart), len(xstart), by, bx, nc)
        x01[z] = np.percentile(tiles, low, axis=(-3, -2))
        x99[z] = np.percentile(tiles, high, axis=(-3, -2))
        _fill_flat_tiles(x01[z], x99[z])
    return x01, x99


def _tile_normalize(img, blocksize: int, low: float, high: float, *, norm3D: bool) -> None:
    nz, ly, lx, _ = img.shape
    x01, x99 = _tile_bounds(img, blocksize, low, high)
    # Cellpose smooths over axes 0 (Z) and 1 (tile rows), then axis 1 again for norm3D.
    for axis in (0, 1) + ((1,) if norm3D else ()):
        x01 = gaussian_filter1d(x01, 1.0, axis, accumulate=np.float64)
        x99 = gaussian_filter1d(x99, 1.0, axis, accumulate=np.float64)
    if norm3D or nz == 1:
        lo_map = resize_linear(x01.mean(axis=0), ly, lx)
        img -= lo_map
        img /= resize_linear(x99.mean(axis=0), ly, lx) - lo_map
        return
    # every tile range is >= 1e-3 after filling, and smoothing and interpolation are convex
    for z in range(nz):
        lo_map = resize_linear(x01[z], ly, lx)
        img[z] -= lo_map
        img[z] /= resize_linear(x99[z], ly, lx) - lo_map


# --- sharpening and smoothing (Cellpose smooth_sharpen_img) -----------------------------------


def smooth_sharpen(x_zyxc: np.ndarray, *, sharpen_radius: float, smooth_radius: float = 0.0) -> np.ndarray:
    """Smooth and/or sharpen each YX plane, as Cellpose's ``transforms.smooth_sharpen_img``.

    ``normalize(..., sharpen_radius=r)`` applies this with ``smooth_radius=0`` before its
    percentile normalisation; Cellpose's crop maker (``make_train``) uses its default
    ``smooth_radius=6``, a difference of Gaussians.

    Parameters
    ----------
    x_zyxc : (Z, Y, X, C) array, real numeric
        Not modified.
    sharpen_radius : float
        Sigma (pixels) of the Gaussian surround subtracted from each plane; 0 = none.
    smooth_radius : float
        Sigma (pixels) of the Gaussian each plane is smoothed with; 0 = none (the plane
        itself minus the surround).

    Returns
    -------
    (Z, Y, X, C) float32
        Circular (FFT) filtering with Cellpose's kernels: ``G(smooth) - G(sharpen)``, ``G(smooth)``
        or ``delta - G(sharpen)``; the input (as float32) when both radii are 0.

    Raises
    ------
    InvalidInputError
        A negative or non-finite radius, a non-4D or non-numeric array.
    """
    sharpen_radius = _validate_radius(sharpen_radius)
    smooth_radius = _validate_radius(smooth_radius, "smooth_radius")
    img = np.array(_validate_array(x_zyxc), dtype=np.float32, order="C")
    if sharpen_radius > 0 or smooth_radius > 0:
        _sharpen(img, sharpen_radius, range(img.shape[-1]), smooth=smooth_radius)
    return img


def _gaussian_kernel(sigma: float, ly: int, lx: int) -> np.ndarray:
    """Cellpose's ``gaussian_kernel``: a normalized Gaussian on its (ly, lx) grid."""
    y = np.linspace(-ly / 2, ly / 2 + 1, ly)
    x = np.linspace(-ly / 2, ly / 2 + 1, lx)  # sic: Cellpose spans X with Ly too
    yy, xx = np.meshgrid(y, x, indexing="ij")
    kernel = np.exp(-(yy**2 + xx**2) / (2 * sigma**2))
    kernel /= kernel.sum()
    return kernel


def _filter_kernel(sharpen: float, smooth: float, ly: int, lx: int) -> np.ndarray:
    """Cellpose's ``smooth_sharpen_img`` kernel: ``G(smooth) - G(sharpen)``, or, without
    smoothing, the surround kernel (delta at the centre minus the Gaussian)."""
    if smooth > 0:
        kernel = _gaussian_kernel(smooth, ly, lx)
        if sharpen > 0:
            kernel -= _gaussian_kernel(sharpen, ly, lx)
        return kernel
    kernel = -_gaussian_kernel(sharpen, ly, lx)
    kernel[ly // 2, lx // 2] = 1
    return kernel


def _sharpen(img: np.ndarray, sigma: float, channels, *, smooth: float = 0.0) -> None:
    """Circular FFT filtering of each YX plane of ``channels``, in place."""
    _, ly, lx, _ = img.shape
    fk = np.conj(np.fft.rfft2(_filter_kernel(sigma, smooth, ly, lx)))
    for z in range(img.shape[0]):
        for c in channels:
            plane = img[z, :, :, c].astype(np.float64)
            filt = np.fft.irfft2(np.fft.rfft2(plane) * fk, s=(ly, lx))
            img[z, :, :, c] = np.fft.fftshift(filt)
