"""Masks from flows: follow the flow field, histogram where pixels end, grow seeds (numba).

Two integration methods (the rest of the pipeline is Cellpose 3.1's ``get_masks_torch``):

``method="cellpose"``
    Cellpose 3.1's ``compute_masks`` step for step. 3D: Euler steps sampled like its
    ``torch.grid_sample(align_corners=False)`` call on coordinates normalised as if
    ``align_corners=True`` (the flow is read at ``p * L / (L - 1) - 0.5``, trilinear, zero outside),
    float32 arithmetic in torch's order, clamped to ``[0, L - 1]``. 2D: its numba
    ``map_coordinates`` (bilinear at ``p``, edge clamp, float64 weights).
``method="stable"`` (default)
    3D: damped Euler steps ``p += 0.4 * dP(p) / 5`` (trilinear at ``p``, zero outside the mask,
    clamped to the volume); a pixel stops once every step component is below 1e-3 px.
    Why: each 3D flow component is the sum of two unit 2D views, so Cellpose's steps are ~2.4 px
    and the flow changes by up to 4 px/step per px across a nucleus centre (gain g). Euler's method
    converges to a sink only if step x g < 2; Cellpose's 3D steps are at ~4, so pixels settle in
    2-cycles of ~2 px across the centre, the 5-px seed window finds two peaks, and ~40% of
    nuclei are cut in two (issue 7). The factor 0.4 (0.8 x the mean of the views) gives step x g
    <= 1.6 on ideal flows, leaving room for noise. On ideal flows the labels equal those of a
    10x finer integration (factor 0.1, 3000 steps), i.e. the sinks of the flow field itself.
    2D: as "cellpose" (2D steps are ~1 px, within the bound; measured: no splitting).

Both are parallel over pixels and give the same labels for any thread count: nogil numba kernels
over ranges of pixels, run on Python threads (``nucseg_rt._parallel``; numba's threads, as
:func:`dynamics_threads` sets them). ``prange`` kernels did the same work but cost 7.5 s of
compilation per process on first use (2026-12-07).
Extra memory: mask (1 byte), end-point histogram (4) and labels (2-4) per voxel, 16 bytes per
foreground voxel; measured peak ~8.5 bytes per voxel on 64x256x256 (Cellpose 3.1: ~46).
Accuracy and speed of both methods: ``benchmarks/dynamics_methods.py``.
"""

from __future__ import annotations

import contextlib
import logging
import numbers
import threading
from collections.abc import Iterator

import numba
import numpy as np
from numba import njit

from nucseg_rt._parallel import over_ranges
from nucseg_rt.errors import InvalidInputError, check_cancel
from nucseg_rt.masks import postprocess
from nucseg_rt.params import DYNAMICS_METHODS, DynamicsMethod

__all__ = ["compute_masks", "dynamics_threads"]

logger = logging.getLogger(__name__)


@contextlib.contextmanager
def dynamics_threads(n: int | None) -> Iterator[None]:
    """numba's threads (the dynamics) set to ``n`` (at most numba's maximum) within the block,
    the previous number restored after it; None: unchanged."""
    if n is None:
        yield
        return
    previous = numba.get_num_threads()
    numba.set_num_threads(max(1, min(int(n), numba.config.NUMBA_NUM_THREADS)))
    try:
        yield
    finally:
        numba.set_num_threads(previous)


class _DefaultFloat(float):
    """A float that remembers it was not passed by the user (for the 3D ``flow_threshold`` note)."""


_FLOW_THRESHOLD_DEFAULT = _DefaultFloat(0.4)
_STABLE_GAIN = np.float32(0.4)  # 3D step = 0.4 x the summed views (0.8 x their mean); see module doc
_STABLE_TOL = np.float32(1e-3)  # px; a pixel whose step is shorter than this on every axis stops
_BLOCK = 16  # pixels integrated together per parallel work item
_GROW_CHUNK = 4096  # seeds grown in parallel per batch (11^3 bytes each)
#: Pixels followed per call of the parallel Euler kernels; ``cancel`` is looked at between
#: calls. Every pixel's path is its own (the kernels' blocks only group work), so the chunks give
#: the labels of one call. 2^16 pixels x up to 200 steps is a small fraction of a second on a few
#: cores, and still thousands of blocks of 16 to share among the threads.
_FOLLOW_CHUNK = 1 << 16


# --------------------------------------------------------------------------------------------
# flow sampling and Euler integration
# --------------------------------------------------------------------------------------------
@njit(cache=True, nogil=True)
def _sample_torch(dP, active, gz, gy, gx, cz, cy, cx):
    """torch ``grid_sample`` (trilinear, zero padding, align_corners=False) at grid point (gz, gy, gx).

    Samples ``dP * mask / 5`` scaled per channel by ``c = 2 / (L - 1)`` in float32, in torch's
    corner order (tnw, tne, tsw, tse, bnw, bne, bsw, bse) and association, so sums match bit for bit.
    """
    nz, ny, nx = active.shape
    one, two, five = np.float32(1.0), np.float32(2.0), np.float32(5.0)
    iz = ((gz + one) * np.float32(nz) - one) / two
    iy = ((gy + one) * np.float32(ny) - one) / two
    ix = ((gx + one) * np.float32(nx) - one) / two
    z0, y0, x0 = int(np.floor(iz)), int(np.floor(iy)), int(np.floor(ix))
    fz0, fy0, fx0 = np.float32(z0), np.float32(y0), np.float32(x0)
    fz1, fy1, fx1 = np.float32(z0 + 1), np.float32(y0 + 1), np.float32(x0 + 1)
    w = ((fx1 - ix) * (fy1 - iy) * (fz1 - iz), (ix - fx0) * (fy1 - iy) * (fz1 - iz),
         (fx1 - ix) * (iy - fy0) * (fz1 - iz), (ix - fx0) * (iy - fy0) * (fz1 - iz),
         (fx1 - ix) * (fy1 - iy) * (iz - fz0), (ix - fx0) * (fy1 - iy) * (iz - fz0),
         (fx1 - ix) * (iy - fy0) * (iz - fz0), (ix - fx0) * (iy - fy0) * (iz - fz0))
    vz = vy = vx = np.float32(0.0)
    for n in range(8):
        z, y, x = z0 + n // 4, y0 + (n // 2) % 2, x0 + n % 2
        if 0 <= z < nz and 0 <= y < ny and 0 <= x < nx and active[z, y, x]:
            vx += (dP[2, z, y, x] / five) * cx * w[n]
            vy += (dP[1, z, y, x] / five) * cy * w[n]
            vz += (dP[0, z, y, x] / five) * cz * w[n]
    return vz, vy, vx


@njit(cache=True, nogil=True)
def _follow_cellpose_3d(dP, active, idx, niter, dest, b0, b1):
    """Cellpose 3.1's 3D steps on grid coordinates in [-1, 1]; writes final flat voxel indices.

    Pixels are processed in blocks (independent work for the CPU to overlap); a pixel stops
    early only when its orbit is provably periodic (fixed point or exact 2-cycle), so the
    result equals running all ``niter`` steps.
    """
    nz, ny, nx = active.shape
    one, two, half = np.float32(1.0), np.float32(2.0), np.float32(0.5)
    sz, sy, sx = np.float32(nz - 1), np.float32(ny - 1), np.float32(nx - 1)
    cz, cy, cx = np.float32(2.0 / (nz - 1)), np.float32(2.0 / (ny - 1)), np.float32(2.0 / (nx - 1))
    for blk in range(b0, b1):
        j0 = blk * _BLOCK
        n = min(_BLOCK, idx.size - j0)
        g = np.empty((3, _BLOCK), np.float32)  # current position
        q = np.full((3, _BLOCK), np.nan, np.float32)  # position one step earlier
        done = np.zeros(_BLOCK, np.bool_)
        for k in range(n):
            i = idx[j0 + k]
            g[0, k] = np.float32(i // (ny * nx)) / sz * two - one
            g[1, k] = np.float32((i // nx) % ny) / sy * two - one
            g[2, k] = np.float32(i % nx) / sx * two - one
        left = n
        for t in range(niter):
            for k in range(n):
                if done[k]:
                    continue
                vz, vy, vx = _sample_torch(dP, active, g[0, k], g[1, k], g[2, k], cz, cy, cx)
                rz = min(max(g[0, k] + vz, -one), one)
                ry = min(max(g[1, k] + vy, -one), one)
                rx = min(max(g[2, k] + vx, -one), one)
                cyc = rz == q[0, k] and ry == q[1, k] and rx == q[2, k]
                if cyc or (rz == g[0, k] and ry == g[1, k] and rx == g[2, k]):
                    done[k] = True
                    left -= 1
                    if not (cyc and (niter - t - 1) % 2 == 1):  # else the orbit ends on g
                        g[0, k], g[1, k], g[2, k] = rz, ry, rx
                    continue
                q[0, k], q[1, k], q[2, k] = g[0, k], g[1, k], g[2, k]
                g[0, k], g[1, k], g[2, k] = rz, ry, rx
            if left == 0:
                break
        for k in range(n):
            z = int((g[0, k] + one) * half * sz)
            y = int((g[1, k] + one) * half * sy)
            x = int((g[2, k] + one) * half * sx)
            dest[j0 + k] = (z * ny + y) * nx + x


@njit(cache=True, nogil=True)
def _sample_linear(dP, active, pz, py, px):
    """Trilinear ``dP * mask / 5`` at pixel coordinates (pz, py, px) inside the volume; float32."""
    nz, ny, nx = active.shape
    z0, y0, x0 = int(pz), int(py), int(px)
    tz, ty, tx = pz - np.float32(z0), py - np.float32(y0), px - np.float32(x0)
    one = np.float32(1.0)
    vz = vy = vx = np.float32(0.0)
    for n in range(8):
        dz, dy, dx = n // 4, (n // 2) % 2, n % 2
        z, y, x = min(z0 + dz, nz - 1), min(y0 + dy, ny - 1), min(x0 + dx, nx - 1)
        if active[z, y, x]:
            w = ((tz if dz else one - tz) * (ty if dy else one - ty)) * (tx if dx else one - tx)
            vz += dP[0, z, y, x] * w
            vy += dP[1, z, y, x] * w
            vx += dP[2, z, y, x] * w
    five = np.float32(5.0)
    return vz / five, vy / five, vx / five


@njit(cache=True, nogil=True)
def _follow_stable_3d(dP, active, idx, niter, gain, tol, dest, b0, b1):
    """Damped Euler steps ``p += gain * flow(p)`` until ``niter`` or every |step| < ``tol``."""
    nz, ny, nx = active.shape
    zero = np.float32(0.0)
    lz, ly, lx = np.float32(nz - 1), np.float32(ny - 1), np.float32(nx - 1)
    for blk in range(b0, b1):
        j0 = blk * _BLOCK
        n = min(_BLOCK, idx.size - j0)
        p = np.empty((3, _BLOCK), np.float32)
        done = np.zeros(_BLOCK, np.bool_)
        for k in range(n):
            i = idx[j0 + k]
            p[0, k], p[1, k], p[2, k] = i // (ny * nx), (i // nx) % ny, i % nx
        left = n
        for t in range(niter):
            for k in range(n):
                if done[k]:
                    continue
                vz, vy, vx = _sample_linear(dP, active, p[0, k], p[1, k], p[2, k])
                vz, vy, vx = gain * vz, gain * vy, gain * vx
                p[0, k] = min(max(p[0, k] + vz, zero), lz)
                p[1, k] = min(max(p[1, k] + vy, zero), ly)
                p[2, k] = min(max(p[2, k] + vx, zero), lx)
                if abs(vz) < tol and abs(vy) < tol and abs(vx) < tol:
                    done[k] = True
                    left -= 1
            if left == 0:
                break
        for k in range(n):
            dest[j0 + k] = (int(p[0, k]) * ny + int(p[1, k])) * nx + int(p[2, k])


@njit(cache=True, nogil=True)
def _bilinear_channel(dP, active, c, y0, y1, x0, x1, fy, fx):
    five = np.float32(5.0)
    f00 = np.float64(dP[c, 0, y0, x0] / five) if active[0, y0, x0] else 0.0
    f01 = np.float64(dP[c, 0, y0, x1] / five) if active[0, y0, x1] else 0.0
    f10 = np.float64(dP[c, 0, y1, x0] / five) if active[0, y1, x0] else 0.0
    f11 = np.float64(dP[c, 0, y1, x1] / five) if active[0, y1, x1] else 0.0
    return np.float32(f00 * (1 - fy) * (1 - fx) + f01 * (1 - fy) * fx + f10 * fy * (1 - fx)
                      + f11 * fy * fx)


@njit(cache=True, nogil=True)
def _bilinear_cp(dP, active, y, x):
    """Cellpose's numba ``map_coordinates`` at (y, x): edge clamp, float64 weights, float32 result."""
    _, ny, nx = active.shape
    y0, x0 = min(ny - 1, max(0, int(y))), min(nx - 1, max(0, int(x)))
    y1, x1 = min(ny - 1, y0 + 1), min(nx - 1, x0 + 1)
    fy, fx = np.float64(y) - int(y), np.float64(x) - int(x)
    return (_bilinear_channel(dP, active, 0, y0, y1, x0, x1, fy, fx),
            _bilinear_channel(dP, active, 1, y0, y1, x0, x1, fy, fx))


@njit(cache=True, nogil=True)
def _follow_cellpose_2d(dP, active, idx, niter, dest, b0, b1):
    """Cellpose 3.1's 2D CPU steps; ``dP`` (2, 1, Y, X), ``active`` (1, Y, X); final flat indices."""
    _, ny, nx = active.shape
    zero = np.float32(0.0)
    ly, lx = np.float32(ny - 1), np.float32(nx - 1)
    for blk in range(b0, b1):
        j0 = blk * _BLOCK
        n = min(_BLOCK, idx.size - j0)
        p = np.empty((2, _BLOCK), np.float32)
        q = np.full((2, _BLOCK), np.nan, np.float32)
        done = np.zeros(_BLOCK, np.bool_)
        for k in range(n):
            p[0, k], p[1, k] = idx[j0 + k] // nx, idx[j0 + k] % nx
        left = n
        for t in range(niter):
            for k in range(n):
                if done[k]:
                    continue
                vy, vx = _bilinear_cp(dP, active, p[0, k], p[1, k])
                ry, rx = min(ly, max(zero, p[0, k] + vy)), min(lx, max(zero, p[1, k] + vx))
                cyc = ry == q[0, k] and rx == q[1, k]
                if cyc or (ry == p[0, k] and rx == p[1, k]):
                    done[k] = True
                    left -= 1
                    if not (cyc and (niter - t - 1) % 2 == 1):
                        p[0, k], p[1, k] = ry, rx
                    continue
                q[0, k], q[1, k] = p[0, k], p[1, k]
                p[0, k], p[1, k] = ry, rx
            if left == 0:
                break
        for k in range(n):
            dest[j0 + k] = int(p[0, k]) * nx + int(p[1, k])


# --------------------------------------------------------------------------------------------
# histogram of end points -> seeds -> masks (Cellpose's get_masks_torch without the dense copies)
# --------------------------------------------------------------------------------------------
@njit(cache=True, nogil=True)
def _histogram(dest, size):
    h = np.zeros(size, np.int32)
    for j in range(dest.size):
        h[dest[j]] += 1
    return h


@njit(cache=True, nogil=True)
def _seed_test(h, shape, cand, is_seed, s0, s1):
    """``is_seed[s]`` for candidates ``s0 <= s < s1``: equal to the max of their 5^3 window."""
    nz, ny, nx = shape
    for s in range(s0, s1):
        i = cand[s]
        z, y, x = i // (ny * nx), (i // nx) % ny, i % nx
        ok = True
        for zz in range(max(z - 2, 0), min(z + 3, nz)):
            for yy in range(max(y - 2, 0), min(y + 3, ny)):
                for xx in range(max(x - 2, 0), min(x + 3, nx)):
                    if h[(zz * ny + yy) * nx + xx] > h[i]:
                        ok = False
        is_seed[s] = ok


def _find_seeds(h: np.ndarray, shape: tuple) -> np.ndarray:
    """Flat indices (C order) of voxels with count > 10 that equal the max of their 5^3 window."""
    cand = np.flatnonzero(h > 10)
    is_seed = np.zeros(cand.size, np.bool_)
    over_ranges(cand.size, lambda s0, s1: _seed_test(h, shape, cand, is_seed, s0, s1),
                grain=1024)
    return cand[is_seed]


@njit(cache=True, nogil=True)
def _grow_range(flag, shape, seeds, out, s0, s1):
    """Voxels reachable from each seed in <= 5 steps of 26-connectivity through ``flag & 1``.

    Equals Cellpose's 5 x (3^3 max-pool, then multiply by ``h > 2``) inside the 11^3 box around
    the seed. ``out[s]`` is the seed's 11^3 box (C order) with 1 where reached.
    """
    nz, ny, nx = shape
    for s in range(s0, s1):
        i = seeds[s]
        cz, cy, cx = i // (ny * nx), (i // nx) % ny, i % nx
        m = out[s]
        m[:] = 0
        queue = np.empty(1331, np.int64)
        m[665] = 1  # box centre (5, 5, 5); its count is > 10
        queue[0] = 665
        head, tail, level_end = 0, 1, 1
        for depth in range(5):
            while head < level_end:
                b = queue[head]
                head += 1
                bz, by, bx = b // 121, (b // 11) % 11, b % 11
                for dz in range(max(bz - 1, 0), min(bz + 2, 11)):
                    z = cz + dz - 5
                    for dy in range(max(by - 1, 0), min(by + 2, 11)):
                        y = cy + dy - 5
                        for dx in range(max(bx - 1, 0), min(bx + 2, 11)):
                            x = cx + dx - 5
                            n = (dz * 11 + dy) * 11 + dx
                            if m[n] == 0 and 0 <= z < nz and 0 <= y < ny and 0 <= x < nx \
                                    and (flag[(z * ny + y) * nx + x] & 1) == 1:
                                m[n] = 1
                                queue[tail] = n
                                tail += 1
            level_end = tail


def _grow(flag, shape, seeds, out) -> None:
    """:func:`_grow_range` over all ``seeds``, on threads."""
    over_ranges(seeds.size, lambda s0, s1: _grow_range(flag, shape, seeds, out, s0, s1),
                grain=64)


@njit(cache=True, nogil=True)
def _paint(flag, shape, seeds, grown, first_label):
    """Write labels of grown seeds (in order: later overwrite) into bits 1.. of ``flag``."""
    nz, ny, nx = shape
    for s in range(seeds.size):
        i = seeds[s]
        cz, cy, cx = i // (ny * nx), (i // nx) % ny, i % nx
        lab = (first_label + s) << 1
        for b in range(1331):
            if grown[s, b]:
                f = ((cz + b // 121 - 5) * ny + cy + (b // 11) % 11 - 5) * nx + cx + b % 11 - 5
                flag[f] = lab | 1


@njit(cache=True, nogil=True)
def _lookup_range(flag, dest, out, j0, j1):
    for j in range(j0, j1):
        out[j] = flag[dest[j]] >> 1


def _lookup(flag, dest, out) -> None:
    over_ranges(dest.size, lambda j0, j1: _lookup_range(flag, dest, out, j0, j1), grain=1 << 16)


@njit(cache=True, nogil=True)
def _scatter_range(values, idx, out, j0, j1):
    for j in range(j0, j1):
        out[idx[j]] = values[j]


def _scatter(values, idx, out) -> None:
    over_ranges(idx.size, lambda j0, j1: _scatter_range(values, idx, out, j0, j1), grain=1 << 16)


@njit(cache=True, nogil=True)
def _to_flag_range(h, i0, i1):
    for i in range(i0, i1):
        h[i] = 1 if h[i] > 2 else 0


def _to_flag(h) -> None:
    over_ranges(h.size, lambda i0, i1: _to_flag_range(h, i0, i1), grain=1 << 16)


def _seed_map(h: np.ndarray, shape: tuple, cancel=None) -> int:
    """Turn histogram ``h`` in place into ``label << 1 | (count > 2)``; returns the number of seeds.

    Seeds are sorted by count, ascending (stable: ties in C order; Cellpose's torch argsort
    leaves ties unordered), so the larger seeds paint last and win where boxes overlap.
    """
    seeds = _find_seeds(h, shape)
    if seeds.size == 0:
        return 0
    seeds = seeds[np.argsort(h[seeds], kind="stable")]
    _to_flag(h)
    grown = np.empty((min(_GROW_CHUNK, seeds.size), 1331), np.uint8)
    for s0 in range(0, seeds.size, _GROW_CHUNK):
        check_cancel(cancel)
        chunk = seeds[s0:s0 + _GROW_CHUNK]
        _grow(h, shape, chunk, grown[:chunk.size])
        _paint(h, shape, chunk, grown, s0 + 1)
    return int(seeds.size)


def _masks_from_destinations(dest, idx, shape, max_size_fraction, cancel=None) -> np.ndarray:
    """Cellpose's get_masks: seeds from the end-point histogram, labels, big masks removed, renumber."""
    size = int(np.prod(shape))
    h = _histogram(dest, size)
    shape3 = (1, *shape) if len(shape) == 2 else tuple(shape)
    check_cancel(cancel)
    n = _seed_map(h, shape3, cancel)
    if n == 0:
        logger.info("no seeds found - no masks")
        return np.zeros(shape, np.uint16)
    check_cancel(cancel)
    lab = np.empty(dest.size, np.int32)
    _lookup(h, dest, lab)
    del h
    count = postprocess.label_counts(lab, n)
    big = count > size * max_size_fraction
    big[0] = False
    if big.any():
        lab[big[lab]] = 0
    lut = np.zeros(n + 1, np.int64)
    nlab = postprocess._first_appearance_lut(lab, lut)
    out = np.zeros(shape, postprocess.label_dtype(nlab))
    _scatter(lut.astype(out.dtype)[lab], idx, out.reshape(-1))
    return out


# --------------------------------------------------------------------------------------------
# public API
# --------------------------------------------------------------------------------------------
@njit(cache=True, nogil=True)
def _count_nonfinite(a, i0, i1):
    n = 0
    for i in range(i0, i1):
        if not np.isfinite(a[i]):
            n += 1
    return n


def _all_finite(a) -> bool:
    bad = []  # one count per part (list.append is atomic)
    over_ranges(a.size, lambda i0, i1: bad.append(_count_nonfinite(a, i0, i1)), grain=1 << 16)
    return not any(bad)


def _validate_arrays(dP, cellprob, method) -> tuple[np.ndarray, np.ndarray]:
    dP, cellprob = np.asarray(dP), np.asarray(cellprob)
    if dP.ndim not in (3, 4) or dP.shape[0] != dP.ndim - 1:
        raise InvalidInputError(f"`dP` must have shape (3, Z, Y, X) or (2, Y, X), got {dP.shape}")
    if cellprob.shape != dP.shape[1:]:
        raise InvalidInputError(f"`cellprob` must have shape dP.shape[1:] = {dP.shape[1:]}, "
                                f"got {cellprob.shape}")
    for name, a in (("dP", dP), ("cellprob", cellprob)):
        if not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)):
            raise InvalidInputError(f"`{name}` must be a real-valued array, got dtype {a.dtype}")
    if min(cellprob.shape) == 0:
        raise InvalidInputError(f"`dP` and `cellprob` must not have a zero-size axis, got {cellprob.shape}")
    if method == "cellpose" and cellprob.ndim == 3 and min(cellprob.shape) < 2:
        raise InvalidInputError(f"`dP` spatial axes must each be >= 2 for method='cellpose' in 3D "
                                f"(Cellpose divides by size - 1), got {cellprob.shape}")
    dP = np.ascontiguousarray(dP, dtype=np.float32)
    for name, a in (("dP", dP), ("cellprob", cellprob)):
        if np.issubdtype(a.dtype, np.floating) and not _all_finite(np.ascontiguousarray(a).reshape(-1)):
            raise InvalidInputError(f"`{name}` contains NaN or Inf values")
    return dP, cellprob


def _validate_real(name: str, value, *, low: float | None = None, strict: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not np.isfinite(value):
        raise InvalidInputError(f"`{name}` must be a finite number, got {value!r}")
    if low is not None and (value < low or (strict and value == low)):
        raise InvalidInputError(f"`{name}` must be {'>' if strict else '>='} {low}, got {value!r}")
    return float(value)


def _validate_options(niter, cellprob_threshold, min_size, max_size_fraction, method,
                      flow_threshold) -> int:
    if method not in DYNAMICS_METHODS:
        raise InvalidInputError(f"`method` must be one of {', '.join(map(repr, DYNAMICS_METHODS))}, "
                                f"got {method!r}")
    niter = int(_validate_real("niter", niter, low=0))  # truncated like Cellpose's np.uint32(niter)
    _validate_real("cellprob_threshold", cellprob_threshold)
    postprocess._validate_min_size(min_size)
    _validate_real("max_size_fraction", max_size_fraction, low=0, strict=True)
    if flow_threshold is not None:
        _validate_real("flow_threshold", flow_threshold, low=0)
    return niter


def _follow(dP, active, idx, niter, method, cancel=None) -> np.ndarray:
    """Final flat voxel index of every foreground pixel (``idx``) after ``niter`` steps, in chunks
    of :data:`_FOLLOW_CHUNK` pixels with a look at ``cancel`` before each."""
    dest = np.empty(idx.size, np.int64)
    planar = active.ndim == 2
    if planar:
        dP, active = dP[:, None], active[None]
    kernel, extra = ((_follow_cellpose_2d, ()) if planar else
                     (_follow_cellpose_3d, ()) if method == "cellpose" else
                     (_follow_stable_3d, (_STABLE_GAIN, _STABLE_TOL)))
    for j0 in range(0, idx.size, _FOLLOW_CHUNK):
        check_cancel(cancel)
        part, out = idx[j0:j0 + _FOLLOW_CHUNK], dest[j0:j0 + _FOLLOW_CHUNK]

        def work(b0, b1, part=part, out=out):
            kernel(dP, active, part, niter, *extra, out, b0, b1)

        over_ranges((part.size + _BLOCK - 1) // _BLOCK, work)
    return dest


def compute_masks(dP: np.ndarray, cellprob: np.ndarray, *, niter: int = 200,
                  cellprob_threshold: float = 0.0, min_size: int = 15,
                  max_size_fraction: float = 0.4, method: DynamicsMethod = "stable",
                  flow_threshold: float | None = _FLOW_THRESHOLD_DEFAULT,
                  cancel: threading.Event | None = None) -> np.ndarray:
    """Label image from flows and cell probability (Cellpose 3.1's ``compute_masks``).

    Pixels with ``cellprob > cellprob_threshold`` follow ``dP * mask / 5`` for ``niter`` Euler
    steps; where they end is histogrammed; local maxima (5-wide window) with more than 10 pixels
    seed masks, grown 5 steps over bins holding more than 2 pixels; each pixel takes the label
    of the bin it ends in. Masks larger than ``max_size_fraction`` of the image are removed and
    labels renumbered. Then, if ``min_size > 0``, holes are filled and masks smaller than
    ``min_size`` removed (:func:`nucseg_rt.masks.postprocess.fill_holes_and_remove_small_masks`).

    Parameters
    ----------
    dP : (3, Z, Y, X) or (2, Y, X) float32
        Flows at network scale (x5), axis order ZYX / YX. Not modified.
    cellprob : (Z, Y, X) or (Y, X) float32
        Cell probability logits.
    niter : int
        Euler steps (a float is truncated, as in Cellpose). With ``method="stable"`` pixels stop
        early once converged.
    cellprob_threshold : float
        Pixels above it are foreground.
    min_size : int
        ``<= 0`` turns off hole filling and small-mask removal (call the postprocess function
        yourself, e.g. after resizing the masks).
    max_size_fraction : float
        Masks with more voxels than this fraction of the image are removed.
    method : {"stable", "cellpose"}
        3D integration; see the module docstring. 2D always uses Cellpose's.
    flow_threshold : float or None
        2D only: masks whose flows differ from ``dP / 5`` by a mean squared error above this are
        removed (Cellpose's ``remove_bad_flow_masks``); ``None`` or 0 turns it off. Ignored in
        3D, with a warning if passed explicitly.
    cancel : threading.Event, optional
        Looked at between chunks of Euler steps and between the steps after them; when set,
        :class:`nucseg_rt.errors.Cancelled` is raised. The labels do not depend on it.

    Returns
    -------
    labels : (Z, Y, X) or (Y, X) uint16 (uint32 if more than 65535 masks)
        0 = background, masks 1..N.
    """
    niter = _validate_options(niter, cellprob_threshold, min_size, max_size_fraction, method,
                              flow_threshold)
    dP, cellprob = _validate_arrays(dP, cellprob, method)
    if cellprob.ndim == 3 and flow_threshold is not _FLOW_THRESHOLD_DEFAULT:
        logger.warning("flow_threshold=%s is ignored in 3D (Cellpose applies it to 2D only)", flow_threshold,
                       extra={"param": "flow_threshold"})
    active = cellprob > cellprob_threshold
    idx = np.flatnonzero(active)
    if idx.size == 0:
        logger.info("no pixels with cellprob > %g - no masks", cellprob_threshold)
        return np.zeros(cellprob.shape, np.uint16)
    dest = _follow(dP, active, idx, niter, method, cancel)
    labels = _masks_from_destinations(dest, idx, cellprob.shape, max_size_fraction, cancel)
    del dest, idx, active
    check_cancel(cancel)
    return _postprocess(labels, dP, flow_threshold, min_size)


def _postprocess(labels, dP, flow_threshold, min_size) -> np.ndarray:
    """2D flow-error check, then hole filling and small-mask removal (if ``min_size > 0``)."""
    if labels.ndim == 2 and flow_threshold and labels.max() > 0:
        labels = postprocess.remove_bad_flow_masks(labels, dP, threshold=float(flow_threshold))
    if min_size > 0:
        labels = postprocess.fill_holes_and_remove_small_masks(labels, min_size=min_size)
    if labels.dtype == np.uint32:
        logger.warning("more than 65535 masks: labels returned as uint32")
    return labels
