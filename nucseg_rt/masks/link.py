"""Labels that follow a nucleus through a time-lapse: each frame's masks relabelled so that a
nucleus keeps the label it had in the previous frame, matched by overlap.

Matching: every pair of a previous and a current mask that overlap gets its IoU; pairs are taken
greedily from the highest IoU down, each mask at most once, while ``IoU >= min_iou``. A current
mask left unmatched (a new nucleus, a daughter after a division, a nucleus that moved more than
its own size) gets a fresh label, never one used before in the series. Greedy matching by IoU is
exact for ``min_iou >= 0.5`` (a mask then has at most one partner above it) and the usual rule
of overlap trackers below it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from nucseg_rt.errors import InvalidInputError
from nucseg_rt.masks.overlap import label_overlaps

__all__ = ["LinkResult", "link_labels", "FrameLinker", "DEFAULT_MIN_IOU"]

#: Nuclei in consecutive frames of an embryo time-lapse overlap well unless they moved by more
#: than about a third of their diameter between frames; below this IoU a match is more often
#: a neighbour than the same nucleus.
DEFAULT_MIN_IOU = 0.25


@dataclass(frozen=True)
class LinkResult:
    """``labels``: the current frame relabelled; ``next_label``: the first label not used yet;
    ``n_linked``: masks that kept a previous label; ``n_new``: masks that got a fresh one."""

    labels: np.ndarray
    next_label: int
    n_linked: int
    n_new: int


def _pairs(previous: np.ndarray, current: np.ndarray):
    """Overlapping (previous id, current id, IoU) triples, highest IoU first."""
    pi, ci, iou = label_overlaps(previous, current)
    order = np.argsort(-iou, kind="stable")
    return pi[order], ci[order], iou[order]


def link_labels(previous: np.ndarray | None, current: np.ndarray, *, next_label: int,
                min_iou: float = DEFAULT_MIN_IOU) -> LinkResult:
    """Relabel ``current`` so that its masks keep the labels of ``previous`` they overlap.

    Parameters
    ----------
    previous : (Z, Y, X) int array or None
        The previous frame's linked labels (None for the first frame: every mask is new).
    current : (Z, Y, X) int array
        This frame's masks, any positive ids. Not modified.
    next_label : int
        The first label never used in the series so far (>= 1, and above every label of
        ``previous``).
    min_iou : float
        Pairs below this IoU are not linked (in (0, 1]).

    Returns
    -------
    LinkResult
        ``labels`` has ``current``'s shape and the smallest unsigned dtype that holds the labels.
    """
    if not 0 < min_iou <= 1:
        raise InvalidInputError(f"`min_iou` must be in (0, 1], got {min_iou!r}")
    current = np.asarray(current)
    if previous is not None and np.shape(previous) != current.shape:
        raise InvalidInputError(f"`previous` shape {np.shape(previous)} != `current` shape {current.shape}")
    if previous is not None and next_label <= int(np.max(previous, initial=0)):
        raise InvalidInputError(f"`next_label` must be above every previous label, got {next_label}")
    if next_label < 1:
        raise InvalidInputError(f"`next_label` must be >= 1, got {next_label}")
    ids = np.unique(current)
    ids = ids[ids > 0]
    lut = np.zeros(int(current.max(initial=0)) + 1, np.int64)
    n_linked = 0
    if previous is not None and ids.size:
        used_prev: set[int] = set()
        for pi, ci, iou in zip(*_pairs(previous, current)):
            if iou < min_iou:
                break
            if lut[ci] or pi in used_prev:
                continue
            lut[ci] = pi
            used_prev.add(int(pi))
            n_linked += 1
    fresh = ids[lut[ids] == 0]
    lut[fresh] = np.arange(next_label, next_label + fresh.size)
    nxt = int(next_label + fresh.size)
    dtype = np.uint16 if nxt - 1 <= np.iinfo(np.uint16).max else np.uint32
    return LinkResult(lut[current].astype(dtype), nxt, n_linked, int(fresh.size))


class FrameLinker:
    """Links the frames of one series as they arrive (frame by frame, bounded memory).

    Holds the previous frame's linked labels and the next free label; ``resume`` restarts it
    from a frame already written (its labels and the largest label written so far).
    """

    def __init__(self, *, min_iou: float = DEFAULT_MIN_IOU):
        if not 0 < min_iou <= 1:
            raise InvalidInputError(f"`min_iou` must be in (0, 1], got {min_iou!r}")
        self.min_iou = float(min_iou)
        self.previous: np.ndarray | None = None
        self.next_label = 1

    def resume(self, previous: np.ndarray | None, max_label: int) -> None:
        """Continue after a frame whose linked labels are ``previous`` (None: a gap, nothing to
        link to), with ``max_label`` the largest label written in the series so far."""
        self.previous = None if previous is None else np.asarray(previous)
        self.next_label = int(max_label) + 1

    def link(self, masks: np.ndarray) -> LinkResult:
        """This frame's ``masks`` relabelled; the linker then holds them as the previous frame."""
        res = link_labels(self.previous, masks, next_label=self.next_label, min_iou=self.min_iou)
        self.previous, self.next_label = res.labels, res.next_label
        return res
