"""Gaussian smoothing of flow fields (Cellpose's ``flow3D_smooth`` / ``dP_smooth``).

Equal to ``scipy.ndimage.gaussian_filter1d`` with ``mode="reflect"`` and ``truncate=4.0``,
applied along each spatial axis, without scipy.
"""

from __future__ import annotations

import numpy as np

from nucseg_rt.errors import InvalidInputError


def gaussian_kernel1d(sigma: float, truncate: float = 4.0) -> np.ndarray:
    """Normalised 1D Gaussian taps of radius ``int(truncate * sigma + 0.5)``."""
    radius = int(truncate * float(sigma) + 0.5)
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    w = np.exp(-0.5 * (x / sigma) ** 2)
    return w / w.sum()


def gaussian_filter1d(arr: np.ndarray, sigma: float, axis: int, *,
                      accumulate=np.float32) -> np.ndarray:
    """Smooth ``arr`` along ``axis`` (reflect boundary: ``d c b a | a b c d``).

    Sums in ``accumulate`` (float32 keeps flow smoothing at 4 B/voxel; float64 is bit-exact with
    scipy); returns ``arr``'s dtype for floating input, else float32.
    """
    w = gaussian_kernel1d(sigma).astype(accumulate)
    r = len(w) // 2
    out_dtype = arr.dtype if np.issubdtype(arr.dtype, np.floating) else np.float32
    a = np.moveaxis(np.asarray(arr, dtype=accumulate), axis, 0)
    n = a.shape[0]
    # numpy's "symmetric" padding is scipy's "reflect"; wide kernels need repeated reflection
    idx = np.mod(np.arange(-r, n + r), 2 * n)
    idx = np.where(idx >= n, 2 * n - 1 - idx, idx)
    out = np.zeros_like(a)
    for k, wk in enumerate(w):
        out += wk * a[idx[k:k + n]]
    return np.moveaxis(out, 0, axis).astype(out_dtype, copy=False)


def smooth_flows(dP: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian-smooth each component of ``dP (C, *spatial)`` over the spatial axes.

    ``sigma`` 0 returns a copy. The input is not modified.
    """
    if not np.isfinite(sigma) or sigma < 0:
        raise InvalidInputError(f"`dp_smooth` must be >= 0, got {sigma}")
    out = np.array(dP, dtype=np.float32, copy=True)
    if sigma == 0:
        return out
    for c in range(out.shape[0]):
        comp = out[c]
        for ax in range(comp.ndim):
            comp = gaussian_filter1d(comp, sigma, ax)
        out[c] = comp
    return out
