"""Seeded synthetic 3D nuclei volumes for training and evaluation (numpy only).

Recipe (all random choices from one ``numpy.random.Generator``):

1. Nuclei in an isotropic volume: ellipsoids with random orientation and aspect ratio, some
   elongated, some irregular (smooth radial perturbation of the surface), some dividing (two
   daughter nuclei side by side). Centres are placed uniformly or next to an existing nucleus
   (clusters); nuclei may touch but never overlap: a voxel belongs to the nucleus with the smallest
   normalised distance, which makes flat contact faces.
2. Intensity: per-nucleus brightness (log-normal; a fraction of faint nuclei, flagged in ``meta``),
   chromatin texture (band-passed noise), darker nucleoli, brighter rim.
3. Optics: anisotropic Gaussian PSF (longer in Z) plus a weak wide halo, uneven background.
4. Acquisition: Z planes sampled every ``anisotropy`` isotropic voxels (linear interpolation for
   non-integer steps; labels nearest), then Poisson photon noise, read noise and camera offset.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from nucseg_rt.errors import InvalidInputError
from nucseg_rt.eval.optics import acquire, blur, uneven_background

__all__ = ["make_volume", "subsample_z"]


def _validate(shape, n_nuclei, density, diameter_mean, diameter_spread, anisotropy):
    if len(shape) != 3 or min(shape) < 4:
        raise InvalidInputError(f"`shape_zyx_iso` must be 3 sizes >= 4, got {shape}")
    if n_nuclei is not None and density is not None:
        raise InvalidInputError("give `n_nuclei` or `density`, not both")
    if n_nuclei is not None and int(n_nuclei) < 0:
        raise InvalidInputError(f"`n_nuclei` must be >= 0, got {n_nuclei}")
    if density is not None and not 0 < density <= 0.8:
        raise InvalidInputError(f"`density` must be in (0, 0.8], got {density}")
    if diameter_mean <= 2:
        raise InvalidInputError(f"`diameter_mean` must be > 2, got {diameter_mean}")
    if not 0 <= diameter_spread < 1:
        raise InvalidInputError(f"`diameter_spread` must be in [0, 1), got {diameter_spread}")
    if not 1 <= anisotropy <= 20:
        raise InvalidInputError(f"`anisotropy` must be in [1, 20], got {anisotropy}")


def _random_rotation(rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    return q * np.sign(np.diag(r))


def _nucleus(rng, centre, radius, *, elongation=1.0, axis=None, irregular=0.0):
    """Dict describing one nucleus: centre, rotation, semi-axes, surface perturbation."""
    rot = _random_rotation(rng)
    if axis is not None:  # first local axis along `axis`
        a = axis / np.linalg.norm(axis)
        b = np.cross(a, rng.normal(size=3))
        b /= np.linalg.norm(b)
        rot = np.stack([a, b, np.cross(a, b)], axis=1)
    ratios = rng.uniform(0.85, 1.15, size=3)
    ratios[0] *= elongation
    ratios /= np.prod(ratios) ** (1 / 3)
    nfreq = 4
    return dict(centre=np.asarray(centre, float), rot=rot, semi=radius * ratios,
                freq=rng.normal(size=(nfreq, 3)) * 2.0, phase=rng.uniform(0, 2 * np.pi, nfreq),
                amp=irregular * rng.uniform(0.3, 1.0, nfreq) / np.sqrt(nfreq), radius=radius)


def _place_nuclei(rng, shape, n, diameter_mean, diameter_spread, *, cluster_prob,
                  elongated_fraction, irregular_fraction, dividing_fraction):
    nuclei: list[dict] = []
    kinds: list[str] = []
    shp = np.asarray(shape, float)
    tries = 0
    while len(nuclei) < n and tries < 60 * max(n, 1):
        tries += 1
        r = 0.5 * diameter_mean * float(np.exp(rng.normal(0, diameter_spread)))
        if nuclei and rng.random() < cluster_prob:
            other = nuclei[rng.integers(len(nuclei))]
            u = rng.normal(size=3)
            c = other["centre"] + u / np.linalg.norm(u) * (other["radius"] + r) * rng.uniform(0.85, 1.0)
        else:
            c = rng.uniform(-0.1, 1.1, size=3) * shp
        if np.any(c < -0.3 * r) or np.any(c > shp - 1 + 0.3 * r):
            continue
        kind = rng.choice(["round", "elongated", "irregular", "dividing"],
                          p=_kind_probs(elongated_fraction, irregular_fraction, dividing_fraction))
        if kind == "dividing":
            u = rng.normal(size=3)
            u /= np.linalg.norm(u)
            rd = 0.72 * r
            new = [_nucleus(rng, c + s * u * rd * 1.05, rd, elongation=1.35, axis=np.cross(u, rng.normal(size=3)))
                   for s in (-1, 1)]
        else:
            new = [_nucleus(rng, c, r, elongation=rng.uniform(1.5, 2.2) if kind == "elongated" else 1.0,
                            irregular=rng.uniform(0.15, 0.3) if kind == "irregular" else rng.uniform(0, 0.08))]
        if all(_far_enough(nu, nuclei) for nu in new):
            nuclei.extend(new)
            kinds.extend([kind] * len(new))
    return nuclei, kinds


def _kind_probs(elong, irreg, div):
    p = np.array([max(0.0, 1 - elong - irreg - div), elong, irreg, div])
    return p / p.sum()


def _far_enough(nu, nuclei) -> bool:
    for o in nuclei:
        if np.linalg.norm(nu["centre"] - o["centre"]) < 0.75 * (nu["radius"] + o["radius"]):
            return False
    return True


def _normalised_distance(nu, shape):
    """Bounding-box slices and normalised distance (<1 inside) of one nucleus."""
    ext = nu["semi"].max() * (1 + np.abs(nu["amp"]).sum()) + 1
    lo = np.maximum(np.floor(nu["centre"] - ext).astype(int), 0)
    hi = np.minimum(np.ceil(nu["centre"] + ext).astype(int) + 1, shape)
    if np.any(hi <= lo):
        return None, None
    grid = np.stack(np.meshgrid(*[np.arange(a, b, dtype=np.float32) for a, b in zip(lo, hi)],
                                indexing="ij"), axis=-1) - nu["centre"].astype(np.float32)
    local = grid @ nu["rot"].astype(np.float32)
    scaled = local / nu["semi"].astype(np.float32)
    d = np.sqrt((scaled ** 2).sum(-1))
    if nu["amp"].any():
        u = scaled / np.maximum(d, 1e-6)[..., None]
        pert = np.cos(u @ nu["freq"].T.astype(np.float32) + nu["phase"].astype(np.float32)) @ nu["amp"].astype(np.float32)
        d = d / (1 + pert)
    return tuple(slice(a, b) for a, b in zip(lo, hi)), d






def _texture(rng, shape):
    """Chromatin texture in [0, 1]: band-passed noise, fine spots plus coarse domains."""
    noise = rng.normal(size=shape).astype(np.float32)
    fine = blur(noise, [1.2, 1.2, 1.2])
    coarse = blur(noise, [4.0, 4.0, 4.0])
    t = fine / (fine.std() + 1e-6) + 0.7 * coarse / (coarse.std() + 1e-6)
    return np.clip(0.5 + 0.2 * t, 0, 1)


def _paint(rng, shape, nuclei, faint_fraction):
    """Label volume and clean (unblurred) intensity volume."""
    labels = np.zeros(shape, np.uint16)
    best = np.full(shape, 1.0, np.float32)
    dist = np.full(shape, 1.0, np.float32)
    for i, nu in enumerate(nuclei, start=1):
        sl, d = _normalised_distance(nu, shape)
        if sl is None:
            continue
        win = d < best[sl]
        best[sl][win] = d[win]
        labels[sl][win] = i
        dist[sl][win] = d[win]
    bright = np.exp(rng.normal(0, 0.3, size=len(nuclei) + 1)).astype(np.float32)
    faint = rng.random(len(nuclei) + 1) < faint_fraction
    bright[faint] *= rng.uniform(0.1, 0.3, size=int(faint.sum()))
    bright[0] = 0
    tex = _texture(rng, shape)
    rim = 1.0 + 0.3 * np.clip((dist - 0.75) / 0.25, 0, 1)
    img = bright[labels] * (0.55 + 0.9 * tex) * rim
    for i, nu in enumerate(nuclei, start=1):  # nucleoli: darker blobs inside
        for _ in range(rng.integers(0, 4)):
            off = rng.normal(size=3)
            off = off / np.linalg.norm(off) * rng.uniform(0, 0.5) * nu["semi"].min()
            rr = nu["radius"] * rng.uniform(0.12, 0.22)
            _darken(img, labels, i, nu["centre"] + off, rr, rng.uniform(0.35, 0.6))
    return labels, img, bright[1:], faint[1:]


def _darken(img, labels, lab, centre, r, factor):
    lo = np.maximum(np.floor(centre - r).astype(int), 0)
    hi = np.minimum(np.ceil(centre + r).astype(int) + 1, img.shape)
    if np.any(hi <= lo):
        return
    sl = tuple(slice(a, b) for a, b in zip(lo, hi))
    g = np.meshgrid(*[np.arange(a, b) for a, b in zip(lo, hi)], indexing="ij")
    inside = (sum((gi - ci) ** 2 for gi, ci in zip(g, centre)) < r * r) & (labels[sl] == lab)
    img[sl][inside] *= factor




def subsample_z(vol: np.ndarray, anisotropy: float, *, order: int = 1) -> np.ndarray:
    """Sample planes every ``anisotropy`` isotropic voxels along axis 0.

    Parameters
    ----------
    vol : (Z, Y, X) array
    anisotropy : float >= 1
    order : 0 (nearest, for labels) or 1 (linear, for images)

    Returns
    -------
    (Z', Y, X) array with ``Z' = floor((Z - 1) / anisotropy) + 1``, same dtype as ``vol``.
    """
    zpos = np.arange(0, vol.shape[0] - 1 + 1e-6, anisotropy)
    if order == 0:
        return vol[np.clip(np.round(zpos).astype(int), 0, vol.shape[0] - 1)].copy()
    z0 = np.floor(zpos).astype(int)
    z1 = np.minimum(z0 + 1, vol.shape[0] - 1)
    w = (zpos - z0).astype(np.float32)[:, None, None]
    return ((1 - w) * vol[z0] + w * vol[z1]).astype(vol.dtype)


def _relabel(labels):
    ids = np.unique(labels)
    ids = ids[ids > 0]
    lut = np.zeros(int(labels.max()) + 1, np.uint16)
    lut[ids] = np.arange(1, ids.size + 1)
    return lut[labels], ids


def make_volume(shape_zyx_iso, *, n_nuclei: int | None = None, density: float | None = None,
                diameter_mean: float = 30.0, diameter_spread: float = 0.15,
                anisotropy: float = 1.0, seed: int = 0, faint_fraction: float = 0.15,
                cluster_prob: float = 0.4, elongated_fraction: float = 0.15,
                irregular_fraction: float = 0.25, dividing_fraction: float = 0.05,
                psf_sigma_xy: float = 1.0, psf_sigma_z: float = 2.5,
                keep_iso: bool = False) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Make a synthetic nuclei volume.

    Parameters
    ----------
    shape_zyx_iso : (Z, Y, X) sizes of the isotropic volume the nuclei are drawn in.
    n_nuclei, density : number of nuclei, or target fraction of the volume they fill
        (default ``density=0.25``).
    diameter_mean : mean nucleus diameter in isotropic voxels; ``diameter_spread`` is the
        standard deviation of its log.
    anisotropy : Z step of the output in isotropic voxels (1 to 20; 11.5 allowed).
    seed : seed of the random generator; equal arguments give identical output.
    keep_iso : also return the isotropic labels and clean image in ``meta``.

    Returns
    -------
    image : (Z', Y, X) uint16, ``Z' = floor((Z - 1) / anisotropy) + 1``
    labels : (Z', Y, X) uint16, consecutive ids 1..N (N = ``meta["n_nuclei"]``)
    meta : dict with ``n_nuclei``, ``faint_labels`` (ids of faint nuclei), ``dividing_labels``,
        ``kinds`` (per label), ``brightness``, ``diameters`` (per label), ``anisotropy``;
        with ``keep_iso``: ``labels_iso`` (Z, Y, X) uint16 (same ids, nuclei absent from the
        sampled planes removed) and ``image_iso`` (clean blurred float32 image).
    """
    shape = tuple(int(s) for s in shape_zyx_iso)
    _validate(shape, n_nuclei, density, diameter_mean, diameter_spread, anisotropy)
    rng = np.random.default_rng(seed)
    if n_nuclei is None:
        dens = 0.25 if density is None else density
        n_nuclei = int(round(dens * np.prod(shape) / (np.pi / 6 * diameter_mean ** 3)))
    nuclei, kinds = _place_nuclei(rng, shape, n_nuclei, diameter_mean, diameter_spread,
                                  cluster_prob=cluster_prob, elongated_fraction=elongated_fraction,
                                  irregular_fraction=irregular_fraction, dividing_fraction=dividing_fraction)
    labels_iso, clean, bright, faint = _paint(rng, shape, nuclei, faint_fraction)
    sxy = psf_sigma_xy * rng.uniform(0.8, 1.25)
    blurred = blur(clean, [psf_sigma_z * rng.uniform(0.8, 1.25), sxy, sxy], halo=0.08)
    img = subsample_z(blurred, anisotropy)
    labels = subsample_z(labels_iso, anisotropy, order=0)
    labels, ids = _relabel(labels)
    img = acquire(rng, img, subsample_z(uneven_background(rng, shape), anisotropy))
    idx = ids - 1
    meta: dict[str, Any] = dict(
        n_nuclei=int(ids.size), anisotropy=float(anisotropy), seed=seed,
        faint_labels=[int(i) for i in np.flatnonzero(faint[idx]) + 1],
        dividing_labels=[int(i) + 1 for i, k in enumerate(np.asarray(kinds)[idx]) if k == "dividing"],
        kinds=[kinds[i] for i in idx], brightness=bright[idx].tolist(),
        diameters=[2 * nuclei[i]["radius"] for i in idx],
    )
    if keep_iso:
        lut = np.zeros(len(nuclei) + 1, np.uint16)
        lut[ids] = np.arange(1, ids.size + 1)
        meta["labels_iso"] = lut[labels_iso]
        meta["image_iso"] = blurred
    return img, labels, meta

