"""Seeded synthetic label images for the dynamics / postprocess / stitch / metrics tests.

Nuclei are random ellipsoids (ellipses in 2D) drawn one after another onto free voxels only, so
later nuclei are clipped by earlier ones and neighbours touch, as in real tissue.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage


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
        cc, ncc = ndimage.label(inside)
        if ncc > 1:  # clipped into pieces by earlier nuclei: keep the largest piece
            inside = cc == 1 + np.argmax(np.bincount(cc.ravel())[1:])
        if inside.sum() < min_size:
            continue
        k += 1
        lab[inside] = k
    return lab


def ideal_flows(lab):
    """Cellpose 3.1's own flows of ``lab`` at network scale (x5) and cellprob +10 / -10."""
    from cellpose import dynamics as cp_dynamics

    dP = (cp_dynamics.masks_to_flows(lab) * 5.0).astype(np.float32)
    cellprob = np.where(lab > 0, 10.0, -10.0).astype(np.float32)
    return dP, cellprob
