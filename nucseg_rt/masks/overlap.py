"""Overlap of two label images: the IoU of every pair of labels that share voxels (numpy only).

Sparse in the pairs: the cost grows with the voxels and the largest label, not with the
product of the label counts. Used by plane stitching (``stitch``) and time-lapse linking
(``link``).
"""

from __future__ import annotations

import numpy as np

__all__ = ["label_overlaps"]


def label_overlaps(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(ia, ib, iou)``: every pair of a label of ``a`` and a label of ``b`` (both > 0) that
    share at least one voxel, sorted by ``(ia, ib)``, and their intersection over union.

    ``a`` and ``b`` are integer label arrays of one shape (0 = background); int64 ids out,
    float64 IoUs.
    """
    a, b = a.reshape(-1), b.reshape(-1)
    both = (a > 0) & (b > 0)
    ra, rb = a[both].astype(np.int64), b[both].astype(np.int64)
    if not ra.size:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0)
    span = int(rb.max()) + 1
    key, inter = np.unique(ra * span + rb, return_counts=True)
    ia, ib = key // span, key % span
    area_a = np.bincount(a.astype(np.intp, copy=False), minlength=int(ia.max()) + 1)
    area_b = np.bincount(b.astype(np.intp, copy=False), minlength=span)
    return ia, ib, inter / (area_a[ia] + area_b[ib] - inter)
