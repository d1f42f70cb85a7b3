"""Flows from label images by heat diffusion, as Cellpose 3.1's ``masks_to_flows`` (CPU path).

For every mask of a 2D label image, heat is injected at the in-mask pixel closest to the mask's
mean position and diffused (Jacobi 3x3 mean, ``2 * (ly + lx)`` iterations, ``ly, lx`` = bounding
box size + 2) over the mask's pixels only; the flow is the central-difference gradient of the
heat map, normalised to unit length. A 3D label volume gets the sum of the 2D flows of its YX,
ZY and ZX slices, exactly like Cellpose's ``ndim == 3`` branch.

Used at run time (flow-error quality control) and to make training targets. numba only.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from nucseg_rt._parallel import over_threads
from nucseg_rt.errors import InvalidInputError

__all__ = ["masks_to_flows"]


@njit(cache=True, nogil=True)
def _label_pixels(m, nlab):
    """Bounding boxes and raster-ordered pixel lists (CSR) of labels 1..nlab in a 2D slice."""
    ly, lx = m.shape
    count = np.zeros(nlab + 1, np.int64)
    bbox = np.empty((nlab + 1, 4), np.int64)  # ymin, ymax, xmin, xmax (inclusive)
    for i in range(nlab + 1):
        bbox[i, 0] = ly
        bbox[i, 1] = -1
        bbox[i, 2] = lx
        bbox[i, 3] = -1
    for y in range(ly):
        for x in range(lx):
            v = m[y, x]
            if v > 0:
                count[v] += 1
                bbox[v, 0] = min(bbox[v, 0], y)
                bbox[v, 1] = max(bbox[v, 1], y)
                bbox[v, 2] = min(bbox[v, 2], x)
                bbox[v, 3] = max(bbox[v, 3], x)
    start = np.zeros(nlab + 2, np.int64)
    for i in range(nlab + 1):
        start[i + 1] = start[i] + count[i]
    fill = start[:-1].copy()
    ys = np.empty(start[-1], np.int64)
    xs = np.empty(start[-1], np.int64)
    for y in range(ly):
        for x in range(lx):
            v = m[y, x]
            if v > 0:
                ys[fill[v]] = y
                xs[fill[v]] = x
                fill[v] += 1
    return count, bbox, start, ys, xs


@njit(cache=True, nogil=True)
def _diffuse_one(y, x, ly, lx, niter):
    """Heat diffusion on one mask; ``y, x`` are bbox coordinates offset by 1. Returns (dy, dx)."""
    n = y.size
    ymean = 0.0
    xmean = 0.0
    for k in range(n):
        ymean += y[k]
        xmean += x[k]
    ymean /= n
    xmean /= n
    best = 0
    dbest = np.inf
    for k in range(n):
        d = (x[k] - xmean) ** 2 + (y[k] - ymean) ** 2
        if d < dbest:
            dbest = d
            best = k
    cidx = y[best] * lx + x[best]
    T = np.zeros(ly * lx, np.float64)
    new = np.empty(n, np.float64)
    for _ in range(niter):
        T[cidx] += 1.0
        for k in range(n):
            i = y[k] * lx + x[k]
            new[k] = (1.0 / 9.0) * (T[i] + T[i - lx] + T[i + lx] + T[i - 1] + T[i + 1]
                                    + T[i - lx - 1] + T[i - lx + 1]
                                    + T[i + lx - 1] + T[i + lx + 1])
        for k in range(n):
            T[y[k] * lx + x[k]] = new[k]
    dy = np.empty(n, np.float64)
    dx = np.empty(n, np.float64)
    for k in range(n):
        i = y[k] * lx + x[k]
        dy[k] = T[i + lx] - T[i - lx]
        dx[k] = T[i + 1] - T[i - 1]
    return dy, dx


@njit(cache=True, nogil=True)
def _flows_slice(m, nlab, niter):
    """(2, Ly, Lx) float64 unit flows of one 2D int label slice."""
    ly0, lx0 = m.shape
    mu = np.zeros((2, ly0, lx0), np.float64)
    count, bbox, start, ys, xs = _label_pixels(m, nlab)
    for lab in range(1, nlab + 1):
        if count[lab] == 0:
            continue
        y0 = bbox[lab, 0]
        x0 = bbox[lab, 2]
        ly = bbox[lab, 1] - y0 + 3
        lx = bbox[lab, 3] - x0 + 3
        y = ys[start[lab]:start[lab + 1]] - y0 + 1
        x = xs[start[lab]:start[lab + 1]] - x0 + 1
        nit = 2 * (ly + lx) if niter <= 0 else niter
        dy, dx = _diffuse_one(y, x, ly, lx, nit)
        for k in range(y.size):
            mu[0, y[k] + y0 - 1, x[k] + x0 - 1] = dy[k]
            mu[1, y[k] + y0 - 1, x[k] + x0 - 1] = dx[k]
    for yy in range(ly0):
        for xx in range(lx0):
            nrm = 1e-60 + np.sqrt(mu[0, yy, xx] ** 2 + mu[1, yy, xx] ** 2)
            mu[0, yy, xx] /= nrm
            mu[1, yy, xx] /= nrm
    return mu


def _flows_2d_batch(stack: np.ndarray, nlab: int, niter: int) -> np.ndarray:
    """Flows of each 2D slice of a C-contiguous int32 (N, Ly, Lx) stack -> (N, 2, Ly, Lx)
    float32, slices on threads (a numba ``prange`` driver cost 9 s of compilation per process
    on first use, against 2 s for the kernel alone; 2026-12-07)."""
    out = np.empty((stack.shape[0], 2, *stack.shape[1:]), np.float32)

    def work(i):
        out[i] = _flows_slice(stack[i], nlab, niter)

    over_threads(stack.shape[0], work)
    return out


def _flows_3d(lab: np.ndarray, nlab: int, niter: int) -> np.ndarray:
    """(3, Z, Y, X) float32: the sums of the YX, ZY and ZX slice flows (one orientation at a
    time; within one, the slices write disjoint voxels). Each sum in float32, in Cellpose's
    order (YX, then ZY, then ZX)."""
    nz, ny, nx = lab.shape
    mu = np.zeros((3, nz, ny, nx), np.float32)
    views = ((nz, lambda i: lab[i], lambda i: (mu[1, i], mu[2, i])),
             (ny, lambda i: lab[:, i, :], lambda i: (mu[0, :, i, :], mu[2, :, i, :])),
             (nx, lambda i: lab[:, :, i], lambda i: (mu[0, :, :, i], mu[1, :, :, i])))
    for n, plane, target in views:
        def work(i, plane=plane, target=target):
            f = _flows_slice(np.ascontiguousarray(plane(i)), nlab, niter)
            a, b = target(i)
            a += f[0].astype(np.float32)
            b += f[1].astype(np.float32)

        over_threads(n, work)
    return mu


def _validate_labels(labels: np.ndarray) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim not in (2, 3):
        raise InvalidInputError(f"`labels` must be 2D (Y, X) or 3D (Z, Y, X), got shape {labels.shape}")
    if not (np.issubdtype(labels.dtype, np.integer) or labels.dtype == bool):
        raise InvalidInputError(f"`labels` must have an integer dtype, got {labels.dtype}")
    if labels.size and labels.min() < 0:
        raise InvalidInputError(f"`labels` must be >= 0, got minimum {labels.min()}")
    return labels


def masks_to_flows(labels: np.ndarray, *, niter: int | None = None) -> np.ndarray:
    """Unit flow field pointing to each mask's centre, computed by heat diffusion.

    Parameters
    ----------
    labels : (Y, X) or (Z, Y, X) int array
        0 = background, 1..N = masks (label ids need not be consecutive).
    niter : int, optional
        Diffusion iterations per mask; default ``2 * (ly + lx)`` from the mask's padded bbox.

    Returns
    -------
    flows : (2, Y, X) or (3, Z, Y, X) float32
        ``[dY, dX]`` or ``[dZ, dY, dX]``; unit length per 2D slice, zero on background. In 3D
        each component is the sum of the two 2D slice flows that contain that axis.
    """
    labels = _validate_labels(labels)
    if niter is not None and int(niter) <= 0:
        raise InvalidInputError(f"`niter` must be > 0, got {niter}")
    nit = 0 if niter is None else int(niter)
    lab = np.ascontiguousarray(labels, dtype=np.int32)
    nlab = int(lab.max()) if lab.size else 0
    if lab.ndim == 2:
        if nlab == 0:
            return np.zeros((2, *lab.shape), np.float32)
        return _flows_2d_batch(lab[None], nlab, nit)[0]
    if nlab == 0:
        return np.zeros((3, *lab.shape), np.float32)
    return _flows_3d(lab, nlab, nit)


def masks_to_flows_batch(labels: np.ndarray, *, niter: int | None = None) -> np.ndarray:
    """2D flows of each slice of a ``(N, Y, X)`` label stack, in parallel.

    Returns
    -------
    flows : (N, 2, Y, X) float32
    """
    labels = _validate_labels(labels)
    if labels.ndim != 3:
        raise InvalidInputError(f"`labels` must be (N, Y, X), got shape {labels.shape}")
    nit = 0 if niter is None else int(niter)
    lab = np.ascontiguousarray(labels, dtype=np.int32)
    nlab = int(lab.max()) if lab.size else 0
    if nlab == 0:
        return np.zeros((lab.shape[0], 2, *lab.shape[1:]), np.float32)
    return _flows_2d_batch(lab, nlab, nit)
