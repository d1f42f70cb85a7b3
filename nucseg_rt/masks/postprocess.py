"""Label clean-up after dynamics: renumbering, hole filling, small masks, flow-error check.

Reproduces Cellpose 3.1's ``utils.fill_holes_and_remove_small_masks`` (with ``fill_voids``
hole filling), ``dynamics.remove_bad_flow_masks`` and ``fastremap.renumber`` with numpy + numba
only. Every function returns a new array; the caller's labels are never modified.
"""

from __future__ import annotations

import numbers

import numpy as np
from numba import njit

from nucseg_rt._parallel import over_ranges, over_threads, thread_count
from nucseg_rt.errors import InvalidInputError

__all__ = ["renumber", "fill_holes_and_remove_small_masks", "remove_small_masks", "flow_errors",
           "remove_bad_flow_masks"]

#: Ids above this many times the array size (+ 2^20) are renumbered with a sort, not a lookup table.
_LUT_FACTOR = 1


def _validate_labels(labels, name: str = "labels") -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim not in (2, 3):
        raise InvalidInputError(f"`{name}` must be 2D (Y, X) or 3D (Z, Y, X), got shape {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer):
        raise InvalidInputError(f"`{name}` must have an integer dtype, got {labels.dtype}")
    if labels.size and np.issubdtype(labels.dtype, np.signedinteger) and labels.min() < 0:
        raise InvalidInputError(f"`{name}` must be >= 0, got minimum {labels.min()}")
    return labels


def _validate_min_size(min_size) -> int:
    if isinstance(min_size, bool) or not isinstance(min_size, numbers.Integral):
        raise InvalidInputError(f"`min_size` must be an integer, got {min_size!r}")
    return int(min_size)


def label_dtype(n_labels: int) -> np.dtype:
    """``uint16`` for up to 65535 labels, else ``uint32`` (Cellpose's rule)."""
    return np.dtype(np.uint16) if n_labels < 2**16 else np.dtype(np.uint32)


# --------------------------------------------------------------------------------------------
# renumbering
# --------------------------------------------------------------------------------------------
@njit(cache=True, nogil=True)
def _first_appearance_lut(flat, lut):
    """Fill ``lut[v]`` with 1, 2, ... in order of first appearance of each v > 0; returns N."""
    n = 0
    for i in range(flat.size):
        v = flat[i]
        if v > 0 and lut[v] == 0:
            n += 1
            lut[v] = n
    return n


@njit(cache=True, nogil=True)
def _apply_lut_range(flat, lut, out, i0, i1):
    for i in range(i0, i1):
        out[i] = lut[flat[i]]


def _apply_lut(flat, lut, out) -> None:
    """``out[i] = lut[flat[i]]`` on threads (a ``prange`` kernel compiled per dtype pair cost
    0.3-0.5 s each on first use)."""
    over_ranges(flat.size, lambda i0, i1: _apply_lut_range(flat, lut, out, i0, i1),
                grain=1 << 16)


def _renumber_lut(labels: np.ndarray, lut: np.ndarray) -> np.ndarray:
    """New array ``lut[labels]`` with the smallest dtype that holds ``lut.max()``."""
    n = int(lut.max()) if lut.size else 0
    out = np.empty(labels.shape, label_dtype(n))
    _apply_lut(labels.reshape(-1), lut.astype(out.dtype), out.reshape(-1))
    return out


@njit(cache=True, nogil=True)
def _presence_lut(flat, lut):
    """``lut[v] = 1`` for every v > 0 present in ``flat``."""
    for i in range(flat.size):
        lut[flat[i]] = 1
    lut[0] = 0


def _relabel_map(labels: np.ndarray, order: str) -> np.ndarray | None:
    """Lookup table old -> new label (1..N, 0 stays 0), or None if the ids are too large for one.

    ``order="first"``: first appearance in C order (``fastremap.renumber``);
    ``order="ascending"``: by label value (Cellpose's fill-holes loop).
    """
    flat = labels.reshape(-1)
    vmax = int(flat.max()) if flat.size else 0
    if vmax > _LUT_FACTOR * flat.size + 2**20:
        return None
    lut = np.zeros(vmax + 1, np.int64)
    if order == "first":
        _first_appearance_lut(flat, lut)
    else:
        _presence_lut(flat, lut)
        lut = np.cumsum(lut) * lut
    return lut


def _relabel_sorted(labels: np.ndarray, order: str) -> np.ndarray:
    """Sort-based relabelling for huge label ids (same result as the lookup-table path)."""
    flat = labels.reshape(-1)
    uniq, first, inv = np.unique(flat, return_index=True, return_inverse=True)
    nz = uniq != 0
    newid = np.zeros(uniq.size, np.int64)
    ids = np.empty(int(nz.sum()), np.int64)
    rank = np.argsort(first[nz], kind="stable") if order == "first" else np.arange(ids.size)
    ids[rank] = np.arange(1, ids.size + 1)
    newid[nz] = ids
    return newid[inv].astype(label_dtype(ids.size)).reshape(labels.shape)


def _relabel(labels: np.ndarray, order: str = "first") -> np.ndarray:
    labels = np.ascontiguousarray(labels)
    lut = _relabel_map(labels, order)
    if lut is None:
        return _relabel_sorted(labels, order)
    return _renumber_lut(labels, lut)


def renumber(labels: np.ndarray) -> np.ndarray:
    """Relabel masks 1..N in order of first appearance (C order), like ``fastremap.renumber``.

    Parameters
    ----------
    labels : (Y, X) or (Z, Y, X) integer array
        0 = background, other values = mask ids (any, need not be consecutive). Not modified.

    Returns
    -------
    labels : same shape, uint16 if N <= 65535 else uint32
    """
    return _relabel(_validate_labels(labels), "first")


# --------------------------------------------------------------------------------------------
# bounding boxes, counts, small masks
# --------------------------------------------------------------------------------------------
@njit(cache=True, nogil=True)
def _boxes_and_counts(lab, n):
    """Per label 1..n: voxel count and bounding box [z0, z1, y0, y1, x0, x1) of a (Z, Y, X) array."""
    nz, ny, nx = lab.shape
    box = np.empty((n + 1, 6), np.int64)
    box[:, 0::2] = np.int64(2**62)
    box[:, 1::2] = -1
    count = np.zeros(n + 1, np.int64)
    for z in range(nz):
        for y in range(ny):
            for x in range(nx):
                v = lab[z, y, x]
                if v > 0:
                    count[v] += 1
                    box[v, 0] = min(box[v, 0], z)
                    box[v, 1] = max(box[v, 1], z + 1)
                    box[v, 2] = min(box[v, 2], y)
                    box[v, 3] = max(box[v, 3], y + 1)
                    box[v, 4] = min(box[v, 4], x)
                    box[v, 5] = max(box[v, 5], x + 1)
    return box, count


@njit(cache=True, nogil=True)
def label_counts(flat, n):
    """Voxel count of every label 0..n in a flat integer label array (numba)."""
    count = np.zeros(n + 1, np.int64)
    for i in range(flat.size):
        count[flat[i]] += 1
    return count


def remove_small_masks(labels: np.ndarray, min_size: float) -> np.ndarray:
    """``labels`` without the masks of fewer than ``min_size`` pixels/voxels, renumbered 1..N by
    first appearance: the size filter of :func:`fill_holes_and_remove_small_masks` without the
    hole filling.

    Parameters
    ----------
    labels : (Y, X) or (Z, Y, X) integer array
        0 = background, 1.. = masks. Not modified.
    min_size : float
        Masks with fewer pixels/voxels go (a fraction of a nucleus volume may be fractional).

    Returns
    -------
    labels : same shape, uint16 (uint32 if more than 65535 masks)
    """
    labels = _validate_labels(labels)
    if isinstance(min_size, bool) or not isinstance(min_size, numbers.Real) or not min_size >= 0:
        raise InvalidInputError(f"`min_size` must be a number >= 0, got {min_size!r}")
    return _remove_small(labels, min_size)


def _remove_small(lab: np.ndarray, min_size: float) -> np.ndarray:
    lab = np.ascontiguousarray(lab)
    n = int(lab.max()) if lab.size else 0
    if n > _LUT_FACTOR * lab.size + 2**20:
        lab = _relabel_sorted(lab, "first")
        n = int(lab.max())
    count = label_counts(lab.reshape(-1), n)
    keep = count >= min_size
    keep[0] = False
    if not keep[1:].all():
        lab = _renumber_lut(lab, np.where(keep, np.arange(n + 1), 0))
    return _relabel(lab, "first")


# --------------------------------------------------------------------------------------------
# hole filling (fill_voids semantics: background inside a mask's bounding box that a 6-connected
# (3D) / 4-connected (2D) flood fill from the box border cannot reach)
# --------------------------------------------------------------------------------------------
@njit(cache=True, nogil=True)
def _flood(buf, stack, top, dz, dy, dx):
    """Mark with 2 every 0 of ``buf`` (dz, dy, dx) 6-connected to the ``top`` voxels on ``stack``."""
    while top > 0:
        top -= 1
        i = stack[top]
        z, y, x = i // (dy * dx), (i // dx) % dy, i % dx
        for d in range(6):
            zz = z + (d == 1) - (d == 0)
            yy = y + (d == 3) - (d == 2)
            xx = x + (d == 5) - (d == 4)
            if 0 <= zz < dz and 0 <= yy < dy and 0 <= xx < dx:
                j = (zz * dy + yy) * dx + xx
                if buf[j] == 0:
                    buf[j] = 2
                    stack[top] = j
                    top += 1


@njit(cache=True, nogil=True)
def _fill_one(src, dst, k, box, is2d, write):
    """Holes of label ``k`` in ``src`` within ``box``; written as ``k`` into ``dst`` if ``write``.

    Returns (number of hole voxels, True if a hole contains voxels of another label).
    """
    z0, z1, y0, y1, x0, x1 = box[0], box[1], box[2], box[3], box[4], box[5]
    dz, dy, dx = z1 - z0, y1 - y0, x1 - x0
    nb = dz * dy * dx
    buf = np.zeros(nb, np.uint8)  # 0 = not reached, 1 = mask k, 2 = reached from the border
    stack = np.empty(nb, np.int64)
    top = 0
    for z in range(dz):
        for y in range(dy):
            for x in range(dx):
                i = (z * dy + y) * dx + x
                if src[z0 + z, y0 + y, x0 + x] == k:
                    buf[i] = 1
                elif ((not is2d) and (z == 0 or z == dz - 1)) or y == 0 or y == dy - 1 \
                        or x == 0 or x == dx - 1:
                    buf[i] = 2
                    stack[top] = i
                    top += 1
    _flood(buf, stack, top, dz, dy, dx)
    nhole = 0
    foreign = False
    for i in range(nb):
        if buf[i] == 0:
            z = z0 + i // (dy * dx)
            y = y0 + (i // dx) % dy
            x = x0 + i % dx
            nhole += 1
            if src[z, y, x] != 0:
                foreign = True
            if write:
                dst[z, y, x] = k
    return nhole, foreign


@njit(cache=True, nogil=True)
def _fill_labels(src, dst, box, count, is2d, first, step, foreign):
    """Fill the holes of labels ``first, first + step, ...`` of ``src`` into ``dst``; marks in
    ``foreign`` the labels whose holes held another label."""
    for k in range(first, box.shape[0], step):
        if count[k] > 0:
            foreign[k] = _fill_one(src, dst, k, box[k], is2d, True)[1]


def _fill_parallel(src, dst, box, count, is2d) -> bool:
    """Fill every label's holes of ``src`` into ``dst`` (labels interleaved over threads; each
    writes only its own label's holes); returns True if any hole held another label."""
    foreign = np.zeros(box.shape[0], np.bool_)
    threads = thread_count(box.shape[0] - 1)
    over_threads(threads, lambda t: _fill_labels(src, dst, box, count, is2d, 1 + t, threads,
                                                 foreign))
    return bool(foreign.any())


@njit(cache=True, nogil=True)
def _fill_sequential(lab, box, count, is2d):
    """Cellpose's order: label 1, 2, ... each overwriting whatever its holes contain."""
    for k in range(1, box.shape[0]):
        if count[k] > 0:
            _fill_one(lab, lab, k, box[k], is2d, True)


def _fill_holes(lab: np.ndarray) -> np.ndarray:
    """Fill holes of consecutive labels ``lab`` (our own array; may be reused)."""
    is2d = lab.ndim == 2
    lab3 = lab[None] if is2d else lab
    n = int(lab3.max()) if lab3.size else 0
    if n == 0:
        return lab
    box, count = _boxes_and_counts(lab3, n)
    out = lab3.copy()
    if _fill_parallel(lab3, out, box, count, is2d):
        # a mask encloses another one: redo in Cellpose's sequential order so results match
        _fill_sequential(lab3, box, count, is2d)
        out = _relabel(lab3, "ascending")  # swallowed masks leave gaps
    return out[0] if is2d else out


def fill_holes_and_remove_small_masks(labels: np.ndarray, *, min_size: int = 15) -> np.ndarray:
    """Fill holes in each mask and remove masks smaller than ``min_size`` (Cellpose 3.1 order).

    Order as in Cellpose: remove masks < ``min_size``; fill each mask's holes (3D: enclosed
    background in the mask's bounding box, 6-connected, like ``fill_voids.fill``; 2D:
    4-connected), so a mask enclosed by another one is absorbed; remove masks < ``min_size``
    again. Holes are always filled; ``min_size <= 0`` only turns off the size filter.

    Differences from Cellpose: small masks are found by label value (Cellpose indexes counts by
    rank, which removes the wrong masks when labels have gaps), and the result is always
    renumbered 1..N (first appearance in C order when ``min_size > 0``, ascending label order
    otherwise, as Cellpose's loop does).

    Parameters
    ----------
    labels : (Y, X) or (Z, Y, X) integer array
        0 = background, 1.. = masks. Not modified.
    min_size : int
        Minimum number of pixels/voxels per mask; ``<= 0`` keeps all sizes.

    Returns
    -------
    labels : same shape, uint16 (uint32 if more than 65535 masks)
    """
    labels = _validate_labels(labels)
    min_size = _validate_min_size(min_size)
    if min_size > 0:
        lab = _remove_small(labels, min_size)
    else:
        lab = _relabel(labels, "ascending")
    lab = _fill_holes(lab)
    if min_size > 0:
        lab = _remove_small(lab, min_size)
    return lab


# --------------------------------------------------------------------------------------------
# flow-error quality control (Cellpose's remove_bad_flow_masks; used in 2D)
# --------------------------------------------------------------------------------------------
@njit(cache=True, nogil=True)
def _flow_error_sums(lab, mu, dP, n):
    err = np.zeros(n + 1, np.float64)
    count = np.zeros(n + 1, np.int64)
    ny, nx = lab.shape
    for y in range(ny):
        for x in range(nx):
            k = lab[y, x]
            if k > 0:
                count[k] += 1
                for c in range(2):
                    d = np.float64(mu[c, y, x]) - np.float64(dP[c, y, x] / np.float32(5.0))
                    err[k] += d * d
    return err, count


def _validate_flow_pair(labels, dP) -> tuple[np.ndarray, np.ndarray]:
    labels = _validate_labels(labels)
    dP = np.asarray(dP)
    if labels.ndim != 2 or dP.shape != (2, *labels.shape):
        raise InvalidInputError(f"`labels` must be (Y, X) and `dP` (2, Y, X) of the same size, "
                                f"got {labels.shape} and {dP.shape}")
    return labels, np.ascontiguousarray(dP, dtype=np.float32)


def flow_errors(labels: np.ndarray, dP: np.ndarray) -> np.ndarray:
    """Mean squared difference per mask between the flows of ``labels`` and ``dP / 5`` (2D).

    Cellpose's ``metrics.flow_error``: the flows of the masks are recomputed with
    :func:`nucseg_rt.masks.label_flows.masks_to_flows` and compared with the network's.

    Parameters
    ----------
    labels : (Y, X) int, 0 = background, masks 1..N
    dP : (2, Y, X) float32, network flows (x5), [dY, dX]

    Returns
    -------
    errors : (N,) float64, ``errors[k - 1]`` for mask k (0 for ids absent from ``labels``)
    """
    from nucseg_rt.masks.label_flows import masks_to_flows

    labels, dP = _validate_flow_pair(labels, dP)
    n = int(labels.max()) if labels.size else 0
    if n == 0:
        return np.zeros(0)
    mu = masks_to_flows(labels)
    err, count = _flow_error_sums(np.ascontiguousarray(labels), mu, dP, n)
    return (err / np.maximum(count, 1))[1:]


def remove_bad_flow_masks(labels: np.ndarray, dP: np.ndarray, *, threshold: float = 0.4) -> np.ndarray:
    """Remove 2D masks whose :func:`flow_errors` exceed ``threshold``, renumber the rest 1..N.

    Parameters
    ----------
    labels : (Y, X) int, 0 = background. Not modified.
    dP : (2, Y, X) float32, network flows (x5)
    threshold : float, > 0

    Returns
    -------
    labels : (Y, X) uint16 (uint32 if more than 65535 masks), order of the kept masks preserved
    """
    if isinstance(threshold, bool) or not isinstance(threshold, numbers.Real) or not threshold > 0:
        raise InvalidInputError(f"`threshold` must be a number > 0, got {threshold!r}")
    bad = np.concatenate(([False], flow_errors(labels, dP) > threshold))
    labels = np.asarray(labels)
    lut = np.where(bad, 0, np.arange(bad.size))
    return _relabel(_renumber_lut(np.ascontiguousarray(labels), lut), "ascending")
