"""Seeded synthetic label images for the dynamics / postprocess / stitch / metrics tests.

Nuclei are random ellipsoids (ellipses in 2D) drawn one after another onto free voxels only, so
later nuclei are clipped by earlier ones and neighbours touch, as in real tissue. numpy only
(the torch-free test run has no scipy); the flows of Cellpose itself are in ``cellpose_flows``.
"""

from __future__ import annotations

import numpy as np


def _largest_piece(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """(largest face-connected piece of ``mask``, number of pieces); of equal pieces the first
    in raster order, as ``scipy.ndimage.label`` numbering + ``argmax`` picks it."""
    where = np.nonzero(mask)
    if not where[0].size:
        return mask, 0
    box = tuple(slice(int(i.min()), int(i.max()) + 1) for i in where)
    sub = mask[box]
    none = np.iinfo(np.int64).max
    # every voxel takes the smallest raster index of its piece (= the piece's first voxel)
    lab = np.where(sub, np.arange(sub.size).reshape(sub.shape), none)
    while True:
        new = lab.copy()
        for ax in range(sub.ndim):
            head = tuple(slice(1, None) if a == ax else slice(None) for a in range(sub.ndim))
            tail = tuple(slice(None, -1) if a == ax else slice(None) for a in range(sub.ndim))
            np.minimum(new[head], lab[tail], out=new[head])
            np.minimum(new[tail], lab[head], out=new[tail])
        new[~sub] = none
        if np.array_equal(new, lab):
            break
        lab = new
    roots, counts = np.unique(lab[sub], return_counts=True)
    piece = np.zeros_like(mask)
    piece[box] = lab == roots[np.argmax(counts)]
    return piece, len(roots)


def random_ellipsoids(shape, n, *, radius=(4.0, 9.0), aniso=1.0, seed=0, min_size=40):
    """Label image with up to ``n`` touching ellipsoids, renumbered 1..N in drawing order.

    Parameters
    ----------
    shape : (Z, Y, X) or (Y, X)
    n : int, number of nuclei to try to place
    radius : (low, high) range of the YX semi-axes in pixels
    aniso : float, Z semi-axis = YX semi-axis / aniso (3D only)
    seed : int
    min_size : int, drawn nuclei smaller than this (after clipping) are dropped
    """
    rng = np.random.default_rng(seed)
    shape = tuple(shape)
    lab = np.zeros(shape, np.int32)
    grids = np.indices(shape, dtype=np.float32)
    k = 0
    for _ in range(n):
        r = rng.uniform(*radius, size=len(shape)).astype(np.float32)
        if len(shape) == 3:
            r[0] = r[0] / aniso
        c = np.array([rng.uniform(0, s) for s in shape], np.float32)
        # random rotation in the YX plane
        th = rng.uniform(0, np.pi)
        dy = grids[-2] - c[-2]
        dx = grids[-1] - c[-1]
        u = np.cos(th) * dy + np.sin(th) * dx
        v = -np.sin(th) * dy + np.cos(th) * dx
        d = (u / r[-2]) ** 2 + (v / r[-1]) ** 2
        if len(shape) == 3:
            d = d + ((grids[0] - c[0]) / r[0]) ** 2
        inside = (d <= 1.0) & (lab == 0)
        largest, pieces = _largest_piece(inside)
        if pieces > 1:  # clipped into pieces by earlier nuclei: keep the largest piece
            inside = largest
        if inside.sum() < min_size:
            continue
        k += 1
        lab[inside] = k
    return lab


def ideal_flows(lab):
    """Ideal network output for ``lab``: the runtime's flows (equal to Cellpose 3.1's
    ``masks_to_flows`` within 1e-4, tests/reference/test_label_flows_cellpose.py) at network
    scale (x5), and cellprob +10 / -10."""
    from nucseg_rt.masks.label_flows import masks_to_flows

    return _at_network_scale(masks_to_flows(lab), lab)


def cellpose_flows(lab):
    """As :func:`ideal_flows`, with Cellpose 3.1's own ``masks_to_flows`` (needs cellpose)."""
    from cellpose import dynamics as cp_dynamics

    return _at_network_scale(cp_dynamics.masks_to_flows(lab), lab)


def _at_network_scale(flows, lab):
    dP = (flows * 5.0).astype(np.float32)
    cellprob = np.where(lab > 0, 10.0, -10.0).astype(np.float32)
    return dP, cellprob
