"""Resampling of images, flows and labels, equal to OpenCV's ``cv2.resize`` as Cellpose 3.1 uses it.

Linear resizing follows ``cv2.INTER_LINEAR``: half-pixel centres, edge clamp, no
antialiasing, a horizontal pass then a vertical pass in float32. Source coordinates
are computed the way the installed OpenCV (5.0) does: in double precision for 1, 3
or 4 channels when the source is at least 2 x 2 (its vectorised path), in float32
otherwise (its generic path). Nearest-neighbour follows ``cv2.INTER_NEAREST``:
``src = floor(dst * (1 / (out / in)))``, clamped. Kernels are numba-parallel over
output rows.

The 3D helpers reproduce the ``do_3D`` branch of ``CellposeModel._run_net``: YX first,
then Z, fused into one kernel so no intermediate volume is allocated.
"""

from __future__ import annotations

import math
import numbers

import numpy as np
from numba import njit

from nucseg_rt._parallel import over_ranges
from nucseg_rt.errors import InvalidInputError

__all__ = ["resize_linear", "resize_nearest", "rescale_volume", "resize_flows_back",
           "resize_channels_back", "resize_labels_3d", "resize_labels_centred", "z_interpolation"]


def resize_linear(arr: np.ndarray, Ly: int, Lx: int, *, channels_last: bool = True) -> np.ndarray:
    """Bilinear resize of the last two spatial axes, equal to ``cv2.INTER_LINEAR``.

    Parameters
    ----------
    arr : (..., Y, X, C) or (..., Y, X) array, real numeric
        With ``channels_last=True`` (default) and ``arr.ndim >= 3`` the last axis is
        channels, as ``cv2.resize`` treats it; a 2D array is always (Y, X).
    Ly, Lx : int
        Output height and width, >= 1.
    channels_last : bool
        False: ``arr`` is (..., Y, X) with no channel axis (e.g. a (Z, Y, X) stack).

    Returns
    -------
    (..., Ly, Lx, C) or (..., Ly, Lx) float32
        A new array (within 1e-5 relative of OpenCV for float32 input).
    """
    arr = _validate_numeric(arr, "arr", integer_only=False)
    Ly, Lx = _validate_size(Ly, "Ly"), _validate_size(Lx, "Lx")
    if arr.ndim < 2 or 0 in arr.shape[-2:] or (channels_last and arr.ndim >= 3 and 0 in arr.shape[-3:]):
        raise InvalidInputError(f"`arr` must have non-empty Y and X axes, got shape {arr.shape}")
    no_channels = arr.ndim == 2 or not channels_last
    src = arr[..., None] if no_channels else arr
    lead, (ny, nx, nc) = src.shape[:-3], src.shape[-3:]
    src = np.ascontiguousarray(src, dtype=np.float32).reshape((-1, ny, nx, nc))
    out = np.empty((src.shape[0], Ly, Lx, nc), np.float32)
    exact = _exact_coords(nc, ny, nx)
    _over_rows(_resize_rows, src, out, *_linear_coords(ny, Ly, exact), *_linear_coords(nx, Lx, exact))
    out = out.reshape(lead + (Ly, Lx, nc))
    return out[..., 0] if no_channels else out


def resize_nearest(labels: np.ndarray, Ly: int, Lx: int) -> np.ndarray:
    """Nearest-neighbour resize of (..., Y, X) integer labels, equal to ``cv2.INTER_NEAREST``.

    Parameters
    ----------
    labels : (..., Y, X) integer array (any width: uint16, uint32, int64, ...)
    Ly, Lx : int
        Output height and width, >= 1.

    Returns
    -------
    (..., Ly, Lx) array of ``labels.dtype``
        A new array; values are copied exactly (Cellpose routes uint32 through
        float32, which is lossy above 2**24).
    """
    labels = _validate_numeric(labels, "labels", integer_only=True)
    Ly, Lx = _validate_size(Ly, "Ly"), _validate_size(Lx, "Lx")
    if labels.ndim < 2 or 0 in labels.shape[-2:]:
        raise InvalidInputError(
            f"`labels` must have non-empty Y and X axes, got shape {labels.shape}")
    lead, (ny, nx) = labels.shape[:-2], labels.shape[-2:]
    src = np.ascontiguousarray(labels).reshape((-1, ny, nx))
    out = np.empty((src.shape[0], Ly, Lx), labels.dtype)
    planes = np.arange(src.shape[0], dtype=np.int64)
    _over_rows(_gather_nearest, src, out, planes, _nearest_index(ny, Ly), _nearest_index(nx, Lx))
    return out.reshape(lead + (Ly, Lx))


def rescale_volume(x_zyxc: np.ndarray, *, rescale: float, anisotropy: float | None,
                   nchan: int | None = None) -> np.ndarray:
    """Resample network input as Cellpose's ``_run_net`` does before ``run_3D``.

    Parameters
    ----------
    x_zyxc : (Z, Y, X, C) float32
    rescale : float
        ``diam_mean / diameter``; Y and X become ``int(Y * rescale)``,
        ``int(X * rescale)`` (unchanged when ``rescale == 1``).
    anisotropy : float or None
        Z spacing / XY spacing (None = 1); Z becomes ``int(Z * anisotropy * rescale)``.
    nchan : int or None
        Channel count of the array Cellpose would resample (the model's nchan), if
        all-zero channels were dropped from ``x_zyxc``; None = ``x_zyxc.shape[-1]``.
        Only selects OpenCV's coordinate rounding (differences < 1e-4 relative).

    Returns
    -------
    (Z', Y', X', C) float32
        Linear resampling, YX first then Z. The (float32, C-contiguous) input
        itself, not a copy, when no resampling is needed.

    Raises
    ------
    InvalidInputError
        Non-positive or non-finite ``rescale``/``anisotropy``, or an output size of 0.
    """
    x = _validate_volume(x_zyxc, "x_zyxc", ndim=4)
    rescale = _validate_factor(rescale, "rescale")
    anisotropy = 1.0 if anisotropy is None else _validate_factor(anisotropy, "anisotropy")
    nc = x.shape[-1] if nchan is None else _validate_size(nchan, "nchan")
    nz, ny, nx = x.shape[:3]
    if rescale == 1.0 and anisotropy == 1.0:
        return x
    if rescale != 1.0:
        ny, nx = int(ny * rescale), int(nx * rescale)
        if ny == 0 or nx == 0:
            raise InvalidInputError(
                f"`rescale`={rescale} resizes YX {x.shape[1:3]} to ({ny}, {nx}): diameter too "
                "large for this image")
    nz = int(x.shape[0] * anisotropy * rescale)
    if nz == 0:
        raise InvalidInputError(
            f"`anisotropy`={anisotropy} with rescale={rescale} resamples Z from {x.shape[0]} to "
            "0 planes: anisotropy too low (or diameter too large) for this volume")
    return _resample_3d(x, (nz, ny, nx), nc)


def resize_flows_back(yf: np.ndarray, shape_zyx: tuple[int, int, int]) -> np.ndarray:
    """Linear resize of network output back to the original grid, YX first then Z.

    Parameters
    ----------
    yf : (Z', Y', X', K) float32
        Network output on the resampled grid (e.g. K = 4: 3 flows + cellprob).
    shape_zyx : (int, int, int)
        Original (Z, Y, X).

    Returns
    -------
    (Z, Y, X, K) float32
        ``yf`` itself when the shapes already agree.
    """
    yf = _validate_volume(yf, "yf", ndim=4)
    return _resample_3d(yf, _validate_shape(shape_zyx), yf.shape[-1])


def resize_channels_back(yf: np.ndarray, shape_zyx: tuple[int, int, int]) -> np.ndarray:
    """:func:`resize_flows_back` for channel-first ``yf (K, Z', Y', X')`` -> ``(K, Z, Y, X)``
    float32, one channel at a time (bounded extra memory)."""
    out = np.empty((yf.shape[0], *shape_zyx), np.float32)
    for c in range(yf.shape[0]):
        out[c] = resize_flows_back(yf[c][..., np.newaxis], shape_zyx)[..., 0]
    return out


def resize_labels_3d(labels: np.ndarray, shape_zyx: tuple[int, int, int]) -> np.ndarray:
    """Nearest-neighbour resize of (Z', Y', X') labels to ``shape_zyx``, YX then Z.

    Parameters
    ----------
    labels : (Z', Y', X') integer array
    shape_zyx : (int, int, int)

    Returns
    -------
    (Z, Y, X) array of ``labels.dtype``
        ``labels`` itself when the shapes already agree. Cellpose skips the YX step
        when only X differs; here every axis is always resized to ``shape_zyx``.
    """
    return _resize_labels(labels, shape_zyx, _nearest_index)


def resize_labels_centred(labels: np.ndarray, shape_zyx: tuple[int, int, int]) -> np.ndarray:
    """Nearest-neighbour resize of (Z', Y', X') labels to ``shape_zyx`` with pixel centres aligned.

    The inverse of the linear resize that made the network grid (OpenCV's half-pixel rule: input
    voxel ``i`` lies at ``(i + 0.5) * n' / n - 0.5`` on the grid), so each output voxel takes the
    label of the grid voxel nearest to its centre. :func:`resize_labels_3d` (Cellpose's rule,
    ``floor(i * n' / n)``) shifts labels by up to one input voxel, which at coarse Z is a whole
    plane.

    Parameters
    ----------
    labels : (Z', Y', X') integer array
    shape_zyx : (int, int, int)

    Returns
    -------
    (Z, Y, X) array of ``labels.dtype``
        ``labels`` itself when the shapes already agree.
    """
    return _resize_labels(labels, shape_zyx, _centred_index)


def _resize_labels(labels, shape_zyx, index) -> np.ndarray:
    """Nearest-neighbour resize of 3D labels with the source index rule ``index(n_in, n_out)``."""
    labels = _validate_numeric(labels, "labels", integer_only=True)
    if labels.ndim != 3 or 0 in labels.shape:
        raise InvalidInputError(f"`labels` must be a non-empty (Z, Y, X) array, got {labels.shape}")
    shape = _validate_shape(shape_zyx)
    if labels.shape == shape:
        return labels
    out = np.empty(shape, labels.dtype)
    _over_rows(_gather_nearest, np.ascontiguousarray(labels), out,
               *[index(n_in, n_out) for n_in, n_out in zip(labels.shape, shape)])
    return out


# --- validation ----------------------------------------------------------------------------


def _validate_numeric(arr, name: str, *, integer_only: bool) -> np.ndarray:
    arr = np.asarray(arr)
    ok = np.issubdtype(arr.dtype, np.integer) or arr.dtype == np.bool_
    if not integer_only:
        ok = ok or np.issubdtype(arr.dtype, np.floating)
    if not ok:
        kind = "an integer" if integer_only else "a real numeric"
        raise InvalidInputError(f"`{name}` must have {kind} dtype, got {arr.dtype}")
    return arr


def _validate_volume(arr, name: str, *, ndim: int) -> np.ndarray:
    arr = _validate_numeric(arr, name, integer_only=False)
    if arr.ndim != ndim or 0 in arr.shape:
        raise InvalidInputError(f"`{name}` must be a non-empty (Z, Y, X, C) array, got {arr.shape}")
    return np.ascontiguousarray(arr, dtype=np.float32)


def _validate_size(value, name: str) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral) or value < 1:
        raise InvalidInputError(f"`{name}` must be an integer >= 1, got {value!r}")
    return int(value)


def _validate_shape(shape) -> tuple[int, int, int]:
    try:
        sizes = tuple(shape)
    except TypeError:
        sizes = ()
    if len(sizes) != 3:
        raise InvalidInputError(f"`shape_zyx` must be three sizes (Z, Y, X), got {shape!r}")
    return tuple(_validate_size(s, "shape_zyx") for s in sizes)


def _validate_factor(value, name: str) -> float:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real) \
            or not math.isfinite(value) or value <= 0:
        raise InvalidInputError(f"`{name}` must be a finite number > 0, got {value!r}")
    return float(value)


# --- coordinates ---------------------------------------------------------------------------


def _exact_coords(nc: int, ny: int, nx: int) -> bool:
    """Whether OpenCV computes source coordinates in double precision for this input."""
    return nc in (1, 3, 4) and ny > 1 and nx > 1


def _linear_coords(n_in: int, n_out: int, exact: bool):
    """Source indices i0, i1 and weights w0, w1 (float32) for one axis, as OpenCV."""
    scale = 1.0 / (n_out / n_in)
    pos = (np.arange(n_out) + 0.5) * scale - 0.5
    if not exact:
        pos = pos.astype(np.float32)
    i0 = np.floor(pos)
    frac = pos - i0
    i0 = i0.astype(np.int64)
    low, high = i0 < 0, i0 >= n_in - 1
    frac[low | high] = 0
    i0[low] = 0
    i0[high] = n_in - 1
    i1 = np.minimum(i0 + 1, n_in - 1)
    return i0, i1, (1 - frac).astype(np.float32), frac.astype(np.float32)


def z_interpolation(n_in: int, n_out: int):
    """Linear interpolation from ``n_in`` to ``n_out`` samples (OpenCV's half-pixel rule).

    Returns ``(i0, i1, w0, w1)``: output ``k`` is ``w0[k] * a[i0[k]] + w1[k] * a[i1[k]]``.
    """
    return _linear_coords(_validate_size(n_in, "n_in"), _validate_size(n_out, "n_out"), True)


def _nearest_index(n_in: int, n_out: int) -> np.ndarray:
    scale = 1.0 / (n_out / n_in)
    return np.minimum(np.floor(np.arange(n_out) * scale).astype(np.int64), n_in - 1)


def _centred_index(n_in: int, n_out: int) -> np.ndarray:
    """Source index nearest to each output pixel centre: ``floor((k + 0.5) * n_in / n_out)``."""
    return np.minimum(((2 * np.arange(n_out, dtype=np.int64) + 1) * n_in) // (2 * n_out), n_in - 1)


# --- 3D resampling -------------------------------------------------------------------------


def _resample_3d(x: np.ndarray, shape: tuple[int, int, int], nc: int) -> np.ndarray:
    """(Z, Y, X, C) float32 -> ``shape`` + (C,): YX linear then Z linear, in one pass.

    ``nc`` is the channel count that selects OpenCV's coordinate precision.
    """
    nz, ny, nx = shape
    Z, Y, X, C = x.shape
    if (nz, ny, nx) == (Z, Y, X):
        return x
    out = np.empty((nz, ny, nx, C), np.float32)
    yx = None
    if (ny, nx) != (Y, X):
        exact = _exact_coords(nc, Y, X)
        yx = _linear_coords(Y, ny, exact) + _linear_coords(X, nx, exact)
        if nz == Z:
            _over_rows(_resize_rows, x, out, *yx)
            return out
    # Cellpose resizes (Z, X', C) planes to (Z', X') here, so OpenCV's precision rule uses Z, X'.
    z0, z1, w0, w1 = _linear_coords(Z, nz, _exact_coords(nc, Z, nx))
    if yx is None:
        _over_rows(_blend_planes, x, out, z0, z1, w0, w1)
    else:
        _over_rows(_resize_zyx, x, out, z0, z1, w0, w1, *yx)
    return out


# --- numba kernels -------------------------------------------------------------------------


def _over_rows(kernel, src, out, *args) -> None:
    """``kernel(src, out, *args, k0, k1)`` over the output rows ``k`` (``out.shape[0] *
    out.shape[1]`` of them), on threads."""
    over_ranges(out.shape[0] * out.shape[1], lambda k0, k1: kernel(src, out, *args, k0, k1),
                grain=16)


@njit(cache=True, nogil=True)
def _resize_rows(src, out, y0, y1, wy0, wy1, x0, x1, wx0, wx1, k0, k1):  # pragma: no cover
    """out[p] = bilinear resize of src[p]; (P, H, W, C) -> (P, Ho, Wo, C), float32 math."""
    nplanes, ho, wo, nc = out.shape
    for k in range(k0, k1):
        p = k // ho
        dy = k - p * ho
        r0, r1, b0, b1 = y0[dy], y1[dy], wy0[dy], wy1[dy]
        for dx in range(wo):
            c0, c1, a0, a1 = x0[dx], x1[dx], wx0[dx], wx1[dx]
            for c in range(nc):
                h0 = src[p, r0, c0, c] * a0 + src[p, r0, c1, c] * a1
                h1 = src[p, r1, c0, c] * a0 + src[p, r1, c1, c] * a1
                out[p, dy, dx, c] = h0 * b0 + h1 * b1


@njit(cache=True, nogil=True)
def _blend_planes(src, out, z0, z1, w0, w1, k0, k1):  # pragma: no cover - numba
    """out[z] = src[z0[z]] * w0[z] + src[z1[z]] * w1[z] for (Z, Y, X, C) arrays."""
    nz, ny, nx, nc = out.shape
    for k in range(k0, k1):
        z = k // ny
        y = k - z * ny
        a, b, u, v = z0[z], z1[z], w0[z], w1[z]
        for x in range(nx):
            for c in range(nc):
                out[z, y, x, c] = src[a, y, x, c] * u + src[b, y, x, c] * v


@njit(cache=True, nogil=True)
def _resize_zyx(src, out, z0, z1, w0, w1, y0, y1, wy0, wy1, x0, x1, wx0, wx1, k0, k1):  # pragma: no cover
    """YX bilinear of planes z0[z] and z1[z] (rounded to float32), then blended in Z.

    The same arithmetic as resizing every plane in YX and then resizing in Z, without
    the intermediate volume.
    """
    nz, ny, nx, nc = out.shape
    for k in range(k0, k1):
        z = k // ny
        dy = k - z * ny
        za, zb, u, v = z0[z], z1[z], w0[z], w1[z]
        r0, r1, b0, b1 = y0[dy], y1[dy], wy0[dy], wy1[dy]
        for dx in range(nx):
            c0, c1, a0, a1 = x0[dx], x1[dx], wx0[dx], wx1[dx]
            for c in range(nc):
                pa = ((src[za, r0, c0, c] * a0 + src[za, r0, c1, c] * a1) * b0
                      + (src[za, r1, c0, c] * a0 + src[za, r1, c1, c] * a1) * b1)
                pb = ((src[zb, r0, c0, c] * a0 + src[zb, r0, c1, c] * a1) * b0
                      + (src[zb, r1, c0, c] * a0 + src[zb, r1, c1, c] * a1) * b1)
                out[z, dy, dx, c] = pa * u + pb * v


@njit(cache=True, nogil=True)
def _gather_nearest(src, out, zi, yi, xi, k0, k1):  # pragma: no cover - numba
    """out[z, y, x] = src[zi[z], yi[y], xi[x]] for (P, H, W) arrays."""
    nz, ny, nx = out.shape
    for k in range(k0, k1):
        z = k // ny
        y = k - z * ny
        sz, sy = zi[z], yi[y]
        for x in range(nx):
            out[z, y, x] = src[sz, sy, xi[x]]
