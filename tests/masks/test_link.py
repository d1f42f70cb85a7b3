"""Time-lapse label linking by overlap (masks.link)."""

from __future__ import annotations

import numpy as np
import pytest

from nucseg_rt.errors import InvalidInputError
from nucseg_rt.masks.link import FrameLinker, link_labels


def _balls(shape, centres, radius, ids):
    zz, yy, xx = np.indices(shape)
    lab = np.zeros(shape, np.uint16)
    for c, i in zip(centres, ids):
        lab[(zz - c[0]) ** 2 + (yy - c[1]) ** 2 + (xx - c[2]) ** 2 <= radius ** 2] = i
    return lab


def test_moved_nuclei_keep_their_labels_and_a_new_one_gets_a_fresh_label():
    shape = (16, 64, 64)
    prev = _balls(shape, [(8, 15, 15), (8, 15, 45), (8, 45, 30)], 6, [7, 3, 9])
    # the same nuclei moved by 2 px, listed in another order with other ids, plus a new one
    cur = _balls(shape, [(8, 47, 31), (8, 17, 15), (8, 15, 47), (8, 56, 56)], 6, [1, 2, 3, 4])
    res = link_labels(prev, cur, next_label=10)
    lab = res.labels
    assert lab[8, 47, 31] == 9 and lab[8, 17, 15] == 7 and lab[8, 15, 47] == 3
    assert lab[8, 56, 56] == 10
    assert (res.n_linked, res.n_new, res.next_label) == (3, 1, 11)
    assert ((lab > 0) == (cur > 0)).all()


def test_a_nucleus_that_moved_beyond_min_iou_is_new_and_each_label_is_used_once():
    shape = (12, 48, 48)
    prev = _balls(shape, [(6, 24, 12)], 5, [1])
    cur = _balls(shape, [(6, 24, 19)], 5, [1])  # moved 7 px: IoU ~0.06
    assert link_labels(prev, cur, next_label=2).labels.max() == 2
    assert link_labels(prev, cur, next_label=2, min_iou=0.03).labels.max() == 1
    # a division: two daughters overlap the mother; the better one keeps its label
    cur2 = _balls(shape, [(6, 24, 10), (6, 24, 17)], 4, [1, 2])
    res = link_labels(prev, cur2, next_label=2, min_iou=0.1)
    assert sorted(np.unique(res.labels)[1:].tolist()) == [1, 2]
    assert res.labels[6, 24, 10] == 1 and res.labels[6, 24, 17] == 2


def test_frame_linker_streams_and_resumes():
    shape = (10, 40, 40)
    frames = [_balls(shape, [(5, 12 + t, 12), (5, 28, 28 - t)], 5, [1 + t % 2, 2 - t % 2]) for t in range(4)]
    lk = FrameLinker()
    out = [lk.link(f).labels for f in frames]
    assert all(o[5, 12 + t, 12] == out[0][5, 12, 12] for t, o in enumerate(out))
    again = FrameLinker()
    again.resume(out[1], max_label=int(max(o.max() for o in out[:2])))
    assert np.array_equal(again.link(frames[2]).labels, out[2])
    inputs = [f.copy() for f in frames]
    FrameLinker().link(frames[0])
    assert all(np.array_equal(a, b) for a, b in zip(inputs, frames))


def test_bad_arguments_are_refused():
    a = np.zeros((4, 8, 8), np.uint16)
    with pytest.raises(InvalidInputError, match="`min_iou` must be in"):
        link_labels(a, a, next_label=1, min_iou=0)
    with pytest.raises(InvalidInputError, match="`previous` shape"):
        link_labels(a[:2], a, next_label=1)
    b = a.copy()
    b[0, 0, 0] = 5
    with pytest.raises(InvalidInputError, match="`next_label` must be above"):
        link_labels(b, a, next_label=5)
