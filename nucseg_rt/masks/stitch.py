"""Link 2D masks of consecutive planes into 3D masks by IoU (Cellpose 3.1's ``utils.stitch3D``).

numpy only; the overlap of two planes is computed sparsely, so the cost does not grow with the
number of labels already used (Cellpose builds a dense ``planes x all labels`` IoU matrix).
"""

from __future__ import annotations

import numbers

import numpy as np

from nucseg_rt.errors import InvalidInputError
from nucseg_rt.masks.overlap import label_overlaps
from nucseg_rt.masks.postprocess import label_dtype

__all__ = ["stitch3d"]


def _validate(masks, stitch_threshold) -> tuple[np.ndarray, float]:
    masks = np.asarray(masks)
    if masks.ndim != 3:
        raise InvalidInputError(f"`masks` must be a (Z, Y, X) stack of 2D label planes, got shape {masks.shape}")
    if not np.issubdtype(masks.dtype, np.integer):
        raise InvalidInputError(f"`masks` must have an integer dtype, got {masks.dtype}")
    if masks.size and np.issubdtype(masks.dtype, np.signedinteger) and masks.min() < 0:
        raise InvalidInputError(f"`masks` must be >= 0, got minimum {masks.min()}")
    if isinstance(stitch_threshold, bool) or not isinstance(stitch_threshold, numbers.Real) \
            or not 0 <= stitch_threshold <= 1:
        raise InvalidInputError(f"`stitch_threshold` must be a number in [0, 1], got {stitch_threshold!r}")
    return masks, float(stitch_threshold)


def _plane_links(cur: np.ndarray, prev: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """For labels 1..cur.max() of ``cur``: the ``prev`` label each continues (0 = none).

    Cellpose's rule: IoUs below ``threshold`` are zeroed; each previous label keeps only its
    best current label(s); each current label takes the previous label with the highest
    remaining IoU (the smallest id on ties).
    """
    nr = int(cur.max())
    r, c, iou = label_overlaps(cur, prev)  # sorted by (r, c)
    iou[iou < threshold] = 0.0
    cidx = np.unique(c, return_inverse=True)[1]
    colmax = np.zeros(cidx.max() + 1 if cidx.size else 0)
    np.maximum.at(colmax, cidx, iou)
    iou[iou < colmax[cidx]] = 0.0
    rowmax = np.zeros(nr + 1)
    np.maximum.at(rowmax, r, iou)
    best = (iou > 0) & (iou == rowmax[r])
    link = np.zeros(nr + 1, np.int64)
    rb, first = np.unique(r[best], return_index=True)  # first = smallest c of each row
    link[rb] = c[best][first]
    return link, rowmax


def stitch3d(masks: np.ndarray, stitch_threshold: float = 0.25) -> np.ndarray:
    """Give masks in consecutive planes the same label where their IoU >= ``stitch_threshold``.

    Same result as Cellpose 3.1's ``utils.stitch3D``, including its quirks: a label that
    continues nothing gets the next new id, counting ids of absent labels too; and until two
    consecutive non-empty planes have been compared, a plane following an empty one keeps its
    own ids (so they can repeat ids of earlier planes).

    Parameters
    ----------
    masks : (Z, Y, X) integer array
        Independent 2D labels per plane (0 = background). Not modified.
    stitch_threshold : float in [0, 1]

    Returns
    -------
    masks : (Z, Y, X) uint16, or uint32 if the largest id exceeds 65535
    """
    masks, threshold = _validate(masks, stitch_threshold)
    out = masks.astype(np.int64)
    mmax = int(out[0].max()) if out.size else 0
    empty = False
    for i in range(len(out) - 1):
        cur, prev = out[i + 1], out[i]
        ncur = int(cur.max())
        if ncur == 0 or prev.max() == 0:
            if not empty:
                mmax = ncur
            else:
                out[i + 1] = np.where(cur > 0, cur + mmax, 0)
                mmax += ncur
            continue
        link, rowmax = _plane_links(cur, prev, threshold)
        new = np.flatnonzero(rowmax[1:] == 0) + 1
        link[new] = np.arange(mmax + 1, mmax + new.size + 1)
        mmax += new.size
        out[i + 1] = link[cur]
        empty = True
    return out.astype(label_dtype(int(out.max(initial=0))))
