"""Merge masks that are pieces of one nucleus: touching, inside one cell-probability region, with
no boundary between them.

Flow following can break a large textured nucleus (chromatin spots, nucleoli) into pieces whose
flows converge on different points, although the cell probability sees one object. Two touching
nuclei are separated by a dip of the cell probability along their contact; two pieces of one
nucleus are not. A pair of touching masks ``a, b`` is merged when

- their contact is broad: at least ``min_contact`` x (size of the smaller mask) ** ((d - 1) / d)
  face-adjacent voxel pairs (``d`` = 2 or 3), and
- the contact shows no boundary: the mean cell-probability logit on the contact (the smaller
  of the two voxels of each pair) is at least ``level`` x the smaller of the two masks' mean
  logits.

Merges are transitive (union-find); labels are renumbered 1..N in order of first appearance.
"""

from __future__ import annotations

import numpy as np

from nucseg_rt.errors import InvalidInputError

__all__ = ["merge_fragments", "DEFAULT_LEVEL", "DEFAULT_MIN_CONTACT"]

DEFAULT_LEVEL = 0.6
DEFAULT_MIN_CONTACT = 0.5


def _contacts(labels: np.ndarray, cellprob: np.ndarray, n: int):
    """Per touching pair (a < b): contact voxel pairs and the summed min logit over them."""
    keys, vals = [], []
    for ax in range(labels.ndim):
        lo = [slice(None)] * labels.ndim
        hi = [slice(None)] * labels.ndim
        lo[ax], hi[ax] = slice(None, -1), slice(1, None)
        a, b = labels[tuple(lo)], labels[tuple(hi)]
        sel = (a != b) & (a > 0) & (b > 0)
        if not sel.any():
            continue
        av, bv = a[sel].astype(np.int64), b[sel].astype(np.int64)
        keys.append(np.minimum(av, bv) * (n + 1) + np.maximum(av, bv))
        vals.append(np.minimum(cellprob[tuple(lo)][sel], cellprob[tuple(hi)][sel]).astype(np.float64))
    if not keys:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0), np.zeros(0)
    k, v = np.concatenate(keys), np.concatenate(vals)
    uk, inv, cnt = np.unique(k, return_inverse=True, return_counts=True)
    sums = np.bincount(inv, weights=v)
    return uk // (n + 1), uk % (n + 1), cnt, sums


def _find(parent: np.ndarray, i: int) -> int:
    while parent[i] != i:
        parent[i] = parent[parent[i]]
        i = parent[i]
    return i


def merge_fragments(labels: np.ndarray, cellprob: np.ndarray, *, level: float = DEFAULT_LEVEL,
                    min_contact: float = DEFAULT_MIN_CONTACT) -> np.ndarray:
    """Merge touching masks with no cell-probability boundary between them.

    Parameters
    ----------
    labels : (Z, Y, X) or (Y, X) integer array
        Masks 1..N (0 background). Not modified.
    cellprob : same shape, float
        Cell-probability logits on the same grid.
    level : float
        Contact mean logit needed, as a fraction of the smaller mask's mean logit.
    min_contact : float
        Contact size needed, relative to the smaller mask's size ** ((d - 1) / d).

    Returns
    -------
    labels : same shape (uint16, or uint32 above 65535 masks), masks 1..M with M <= N
    """
    labels = np.asarray(labels)
    cellprob = np.asarray(cellprob)
    if labels.shape != cellprob.shape:
        raise InvalidInputError(f"`cellprob` shape {cellprob.shape} != `labels` shape {labels.shape}")
    if labels.ndim not in (2, 3):
        raise InvalidInputError(f"`labels` must be 2D or 3D, got shape {labels.shape}")
    n = int(labels.max()) if labels.size else 0
    if n < 2:
        return labels.copy()
    flat = labels.ravel().astype(np.int64)
    size = np.bincount(flat, minlength=n + 1)
    mean_cp = np.bincount(flat, weights=cellprob.ravel().astype(np.float64), minlength=n + 1) / np.maximum(size, 1)
    a, b, cnt, sums = _contacts(labels, cellprob, n)
    if a.size == 0:
        return labels.copy()
    d = labels.ndim
    small = np.minimum(size[a], size[b]).astype(np.float64)
    broad = cnt >= min_contact * small ** ((d - 1) / d)
    ref = np.minimum(mean_cp[a], mean_cp[b])
    no_boundary = (sums / cnt) >= level * np.maximum(ref, 0.0)
    parent = np.arange(n + 1)
    for i, j in zip(a[broad & no_boundary], b[broad & no_boundary]):
        ri, rj = _find(parent, int(i)), _find(parent, int(j))
        if ri != rj:
            parent[max(ri, rj)] = min(ri, rj)
    roots = np.array([_find(parent, i) for i in range(n + 1)])
    if (roots == np.arange(n + 1)).all():
        return labels.copy()
    from nucseg_rt.masks.postprocess import renumber

    return renumber(roots[labels].astype(labels.dtype))
