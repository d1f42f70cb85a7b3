"""nucseg_rt_export.real_data: one label convention for the training sources (half_contrast_labels),
on seeded synthetic discs whose true edge is known."""

import numpy as np
import pytest

from nucseg_rt.errors import InvalidInputError
from nucseg_rt_export.real_data import half_contrast_labels, load_source

YY, XX = np.mgrid[:64, :96]


def _disc(cy, cx, r):
    return (YY - cy) ** 2 + (XX - cx) ** 2 <= r * r


def _image(*discs, seed=0, level=100.0):
    """Flat discs of ``level`` on a background of 10, with seeded camera noise (sd 2)."""
    img = np.full(YY.shape, 10.0, np.float32)
    for d in discs:
        img[d] = level
    return img + np.random.default_rng(seed).normal(0, 2, YY.shape).astype(np.float32)


def _ring(mask, r):
    """``mask`` grown by r px in rows and columns (r > 0: a (2r+1)^2 square), or shrunk by |r|
    4-connected steps (r < 0)."""
    out = mask.copy()
    for _ in range(abs(r)):
        p = np.pad(out, 1, constant_values=r < 0)
        if r > 0:
            out = np.logical_or.reduce([p[i:i + out.shape[0], j:j + out.shape[1]]
                                        for i in range(3) for j in range(3)])
        else:
            out = out & p[:-2, 1:-1] & p[2:, 1:-1] & p[1:-1, :-2] & p[1:-1, 2:]
    return out


@pytest.mark.parametrize("drawn_radius", [12, 8])  # drawn 2 px outside / inside the true edge
def test_boundary_moves_to_half_contrast_at_most_two_px(drawn_radius):
    true = _disc(30, 40, 10)
    drawn = _disc(30, 40, drawn_radius)
    lab = np.where(drawn, 7, 0).astype(np.int32)
    out = half_contrast_labels(_image(true), lab)
    assert set(np.unique(out)) == {0, 7}
    m = out == 7
    # within 2 px of the drawn boundary, and the drawn interior kept
    assert not (m & ~_ring(drawn, 2)).any() and (m | ~_ring(drawn, -2)).all()
    iou = (m & true).sum() / (m | true).sum()
    drawn_iou = (drawn & true).sum() / (drawn | true).sum()
    assert iou > 0.93 and iou > drawn_iou + 0.1, (iou, drawn_iou)


def test_touching_nuclei_keep_their_border_and_one_piece_each():
    a, b = _disc(30, 30, 11), _disc(30, 52, 11)  # 22 px apart: they touch
    lab = np.zeros(YY.shape, np.int32)
    lab[_ring(a, 2)] = 1
    lab[_ring(b, 2) & (lab == 0)] = 2  # drawn 2 px too big, sharing a border
    out = half_contrast_labels(_image(a, b, seed=1), lab)
    for i in (1, 2):
        m = out == i
        assert m.sum() > 0.85 * (a.sum()) and not (m & (lab != i) & (lab > 0)).any()
        assert _one_piece(m)
    # where the drawn labels met, nothing was handed from one nucleus to the other
    assert not ((out == 1) & (lab == 2)).any() and not ((out == 2) & (lab == 1)).any()


def _one_piece(m):
    seen = np.zeros_like(m)
    stack = [tuple(np.argwhere(m)[0])]
    while stack:
        y, x = stack.pop()
        if not (0 <= y < m.shape[0] and 0 <= x < m.shape[1]) or seen[y, x] or not m[y, x]:
            continue
        seen[y, x] = True
        stack += [(y + 1, x), (y - 1, x), (y, x + 1), (y, x - 1)]
    return bool(seen.sum() == m.sum())


def test_dim_and_tiny_nuclei_keep_their_drawn_masks():
    dim, tiny = _disc(20, 20, 8), _disc(45, 70, 1)
    lab = np.zeros(YY.shape, np.int32)
    lab[dim], lab[tiny] = 3, 4
    img = _image(tiny, seed=2)  # the dim nucleus is not brighter than the background
    out = half_contrast_labels(img, lab)
    np.testing.assert_array_equal(out, lab)


def test_refusals():
    lab = np.zeros(YY.shape, np.int32)
    with pytest.raises(InvalidInputError, match="must be 2D and match"):
        half_contrast_labels(np.zeros((4, 4), np.float32), lab)
    with pytest.raises(InvalidInputError, match="`level` must be in"):
        half_contrast_labels(_image(), lab, level=1.0)
    with pytest.raises(InvalidInputError, match="`convention` must be one of drawn, half-contrast"):
        load_source("hela_ctc", None, convention="tight")  # refused before any download
