"""Fragment merging (masks/fragments.py) and the split metric (eval/metrics.split_fraction)."""

import numpy as np
import pytest

from nucseg_rt.errors import InvalidInputError
from nucseg_rt.eval.metrics import split_fraction
from nucseg_rt.masks.fragments import merge_fragments


def _two_discs(dip: float):
    """Two half-discs of one nucleus (labels 1, 2) and a separate touching nucleus (3)."""
    yy, xx = np.mgrid[:40, :60]
    lab = np.zeros((40, 60), np.int32)
    disc = (yy - 20) ** 2 + (xx - 15) ** 2 < 100
    lab[disc & (xx < 15)] = 1
    lab[disc & (xx >= 15)] = 2
    other = (yy - 20) ** 2 + (xx - 30) ** 2 < 81
    lab[other & (lab == 0)] = 3
    cp = np.where(lab > 0, 6.0, -6.0).astype(np.float32)
    edge = np.zeros_like(disc)
    edge[:, 1:] |= (lab[:, 1:] == 3) & (lab[:, :-1] == 2)
    edge[:, :-1] |= (lab[:, :-1] == 2) & (lab[:, 1:] == 3)
    edge[1:] |= (lab[1:] == 3) & (lab[:-1] == 2)
    edge[:-1] |= (lab[:-1] == 2) & (lab[1:] == 3)
    cp[edge] = dip  # a cell-probability dip along the contact of 2 and 3
    return lab, cp


def test_pieces_without_boundary_merge_and_neighbours_stay():
    lab, cp = _two_discs(dip=0.5)
    out = merge_fragments(lab, cp)
    assert out.max() == 2
    assert len(np.unique(out[lab == 1])) == 1 and np.array_equal(np.unique(out[lab == 1]), np.unique(out[lab == 2]))
    assert np.unique(out[lab == 3]).tolist() != np.unique(out[lab == 1]).tolist()
    assert np.array_equal(lab, _two_discs(dip=0.5)[0])  # input not modified


def test_no_dip_merges_everything_touching():
    lab, cp = _two_discs(dip=6.0)
    assert merge_fragments(lab, cp).max() == 1


def test_3d_and_thin_contacts():
    lab = np.zeros((6, 20, 20), np.int32)
    lab[:, 2:10, 2:10] = 1
    lab[:, 10:18, 2:10] = 2           # broad face contact with 1
    lab[:, 2:10, 10:11] = 3           # a sliver: contact 8x6 voxels but tiny size
    lab[0, 18, 12] = 4                # isolated
    cp = np.full(lab.shape, 5.0, np.float32)
    out = merge_fragments(lab, cp)
    assert out[0, 5, 5] == out[0, 12, 5]
    assert out[0, 18, 12] not in (0, out[0, 5, 5])


def test_merge_fragments_bad_input():
    with pytest.raises(InvalidInputError, match="`cellprob` shape"):
        merge_fragments(np.zeros((4, 4), np.int32), np.zeros((4, 5), np.float32))
    with pytest.raises(InvalidInputError, match="2D or 3D"):
        merge_fragments(np.zeros(4, np.int32), np.zeros(4, np.float32))


def test_split_fraction_counts_exactly():
    true = np.zeros((10, 30), np.int32)
    true[:, :10], true[:, 10:20], true[:, 20:] = 1, 2, 3
    pred = np.zeros_like(true)
    pred[:, :5], pred[:, 5:10] = 1, 2     # nucleus 1 split in two
    pred[:, 10:20] = 3                    # nucleus 2 whole
    pred[:, 20:29], pred[:, 29] = 4, 5    # nucleus 3: a 1-column piece covers 10% exactly
    frac, n_split, n_true = split_fraction(true, pred)
    assert (n_split, n_true) == (2, 3) and frac == pytest.approx(2 / 3)
    assert split_fraction(true, pred, min_cover=0.2)[1] == 1
    assert split_fraction(true, np.zeros_like(true)) == (0.0, 0, 3)
