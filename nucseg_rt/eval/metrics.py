"""Instance-segmentation accuracy: average precision at IoU thresholds (Cellpose's definition).

``AP = TP / (TP + FP + FN)`` where a true and a predicted mask match when their IoU is at
least the threshold. For thresholds >= 0.5 matches are (almost) unique, so no Hungarian solver
is needed (see :func:`average_precision`). numpy + numba.
"""

from __future__ import annotations

import numbers

import numpy as np
from numba import njit

from nucseg_rt.errors import InvalidInputError
from nucseg_rt.masks.postprocess import renumber

__all__ = ["average_precision", "split_fraction", "label_diameter"]


@njit(cache=True, nogil=True)
def _candidates(t, p, nt):
    """Per true label, the (up to 2) predicted labels that may cover more than a third of it.

    Misra-Gries summary with two counters over the stream of predicted labels (> 0) inside each
    true mask: any label with more than a third of the stream is kept, so any partner with
    IoU >= 0.5 (which covers at least half of the true mask) is among the two.
    """
    cand = np.zeros((nt + 1, 2), np.int64)
    cnt = np.zeros((nt + 1, 2), np.int64)
    for i in range(t.size):
        a, b = t[i], p[i]
        if a == 0 or b == 0:
            continue
        if cand[a, 0] == b and cnt[a, 0] > 0:
            cnt[a, 0] += 1
        elif cand[a, 1] == b and cnt[a, 1] > 0:
            cnt[a, 1] += 1
        elif cnt[a, 0] == 0:
            cand[a, 0], cnt[a, 0] = b, 1
        elif cnt[a, 1] == 0:
            cand[a, 1], cnt[a, 1] = b, 1
        else:
            cnt[a, 0] -= 1
            cnt[a, 1] -= 1
    return cand


@njit(cache=True, nogil=True)
def _overlaps(t, p, nt, np_, cand):
    """Areas of all labels and the exact overlap of each true label with its two candidates."""
    area_t = np.zeros(nt + 1, np.int64)
    area_p = np.zeros(np_ + 1, np.int64)
    inter = np.zeros((nt + 1, 2), np.int64)
    for i in range(t.size):
        a, b = t[i], p[i]
        area_t[a] += 1
        area_p[b] += 1
        if a > 0 and b > 0:
            if cand[a, 0] == b:
                inter[a, 0] += 1
            elif cand[a, 1] == b:
                inter[a, 1] += 1
    return area_t, area_p, inter


def _validate(true, pred, thresholds) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    true, pred = np.asarray(true), np.asarray(pred)
    for name, a in (("true", true), ("pred", pred)):
        if not np.issubdtype(a.dtype, np.integer):
            raise InvalidInputError(f"`{name}` must be an integer label array, got dtype {a.dtype}")
        if a.size and np.issubdtype(a.dtype, np.signedinteger) and a.min() < 0:
            raise InvalidInputError(f"`{name}` labels must be >= 0, got minimum {a.min()}")
    if true.shape != pred.shape:
        raise InvalidInputError(f"`true` and `pred` must have the same shape, got {true.shape} and {pred.shape}")
    th = np.atleast_1d(np.asarray(thresholds, dtype=object))
    if th.ndim != 1 or th.size == 0 or not all(
            isinstance(v, numbers.Real) and not isinstance(v, bool) and 0.5 <= v <= 1 for v in th):
        raise InvalidInputError(
            f"`thresholds` must be IoU values in [0.5, 1] (below 0.5 matches are not unique and need "
            f"an assignment solver, e.g. cellpose.metrics.average_precision), got {thresholds!r}")
    return true, pred, th.astype(np.float64)


def average_precision(true: np.ndarray, pred: np.ndarray,
                      thresholds=(0.5, 0.75, 0.9)) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Average precision of predicted masks against true masks, Cellpose 3.1's definition.

    A true mask t and a predicted mask p match at threshold th when
    ``IoU = |t & p| / |t | p| >= th``; TP is the largest number of disjoint matched pairs,
    ``FP = N_pred - TP``, ``FN = N_true - TP``, ``AP = TP / (TP + FP + FN)``.

    No assignment solver is needed: IoU >= 0.5 means each mask of the pair covers at least half
    of the other, so a mask has at most two partners, and only when it is split exactly in
    halves; the match graph is a set of stars and its maximum matching is its number of
    components (``nodes - edges``). This equals Cellpose's ``linear_sum_assignment`` count.

    Parameters
    ----------
    true, pred : (Y, X) or (Z, Y, X) int arrays of the same shape
        0 = background; any positive ids. Not modified.
    thresholds : float or sequence of floats in [0.5, 1]

    Returns
    -------
    ap : (T,) float64 (NaN where both images are empty, as in Cellpose)
    tp, fp, fn : (T,) int64

    Notes
    -----
    N_true and N_pred count the ids present; Cellpose uses the largest id, which is the same
    for labels numbered 1..N.
    """
    true, pred, th = _validate(true, pred, thresholds)
    t = renumber(true.reshape(1, -1)).reshape(-1)  # ids 1..N: arrays indexed by label stay small
    p = renumber(pred.reshape(1, -1)).reshape(-1)
    nt, npr = int(t.max(initial=0)), int(p.max(initial=0))
    cand = _candidates(t, p, nt)
    area_t, area_p, inter = _overlaps(t, p, nt, npr, cand)
    rows = np.repeat(np.arange(nt + 1), 2)
    cols = cand.reshape(-1)
    ov = inter.reshape(-1)
    ok = (rows > 0) & (cols > 0) & (ov > 0)
    rows, cols, ov = rows[ok], cols[ok], ov[ok]
    iou = ov / (area_t[rows] + area_p[cols] - ov)
    tp = np.zeros(th.size, np.int64)
    for k, v in enumerate(th):
        e = iou >= v
        tp[k] = np.unique(rows[e]).size + np.unique(cols[e]).size - int(e.sum())
    fp, fn = npr - tp, nt - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        ap = tp / (tp + fp + fn).astype(np.float64)
    return ap, tp, fp, fn


def split_fraction(true: np.ndarray, pred: np.ndarray, *, min_cover: float = 0.1) -> tuple[float, int, int]:
    """Fraction of true nuclei split into two or more predicted masks.

    A true nucleus counts as split when at least two predicted masks each lie mostly inside it
    (more than half of the predicted mask's voxels) and each cover at least ``min_cover`` of it.

    Returns
    -------
    fraction : float
        ``n_split / n_true`` (0 when there are no true nuclei).
    n_split, n_true : int
    """
    true, pred, _ = _validate(true, pred, (0.5,))
    t = true.ravel().astype(np.int64)
    p = pred.ravel().astype(np.int64)
    nt, npd = int(t.max()) if t.size else 0, int(p.max()) if p.size else 0
    n_true = int(np.count_nonzero(np.bincount(t, minlength=nt + 1)[1:]))
    if nt == 0 or npd == 0:
        return 0.0, 0, n_true
    both = (t > 0) & (p > 0)
    pairs, inter = np.unique(t[both] * (npd + 1) + p[both], return_counts=True)
    ti, pi = pairs // (npd + 1), pairs % (npd + 1)
    area_t = np.bincount(t, minlength=nt + 1)
    area_p = np.bincount(p, minlength=npd + 1)
    inside = (inter > 0.5 * area_p[pi]) & (inter >= min_cover * area_t[ti])
    per_true = np.bincount(ti[inside], minlength=nt + 1)
    n_split = int((per_true >= 2).sum())
    return n_split / max(n_true, 1), n_split, n_true


def label_diameter(labels: np.ndarray) -> float:
    """Cellpose's ``diameters``: median equivalent-circle diameter of the labelled objects.

    ``labels`` (Y, X) integer array (0 background). Returns 0.0 when there is no object.
    """
    counts = np.bincount(np.asarray(labels, np.int64).ravel())[1:]
    counts = counts[counts > 0]
    return float(np.median(counts ** 0.5) / (np.pi ** 0.5 / 2)) if counts.size else 0.0
