"""Training data for the Cellpose-style 2D network: planes from 3D volumes, cache, augmentation.

One implementation of plane extraction serves both the crop maker (``crops.py``) and training
(``train.py``): resample Z to isotropic, then take YX planes (every ``yx_step``-th) and ZY / ZX
planes (every ``ortho_step``-th), keeping planes with at least ``min_masks`` objects.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Iterator, Literal

import numpy as np
import torch
import torch.nn.functional as F

from nucseg_rt.errors import InvalidInputError
from nucseg_rt.eval.metrics import label_diameter
from nucseg_rt.masks.label_flows import masks_to_flows_batch

__all__ = ["resample_z", "iter_planes", "normalize99", "PlaneSet", "synthetic_planes",
           "load_pairs", "realtex_planes", "augment_batch", "dim_object_weight", "small_object_weight",
           "contact_band_weight", "rotate_flip_flows", "label_diameter", "coarse_axis"]


def resample_z(vol: np.ndarray, anisotropy: float, *, order: Literal[0, 1] = 1,
               nz_out: int | None = None, align: Literal["corners", "centers"] = "centers") -> np.ndarray:
    """Stretch axis 0 by ``anisotropy`` (linear for images, nearest for labels).

    Parameters
    ----------
    vol : (Z, Y, X) array
    anisotropy : Z step / XY pixel size (> 0).
    order : 1 linear (float32 output), 0 nearest (dtype kept).
    nz_out : output plane count; default ``round(Z * anisotropy)``.
    align : "centers" maps pixel centres like cv2/Cellpose resize; "corners" maps plane k
        to output index ``k * anisotropy`` (planes sampled every ``anisotropy`` voxels).

    Returns
    -------
    (nz_out, Y, X) array.
    """
    if anisotropy <= 0:
        raise InvalidInputError(f"`anisotropy` must be > 0, got {anisotropy}")
    nz = vol.shape[0]
    nz_out = int(round(nz * anisotropy)) if nz_out is None else int(nz_out)
    zo = np.arange(nz_out, dtype=np.float64)
    src = zo / anisotropy if align == "corners" else (zo + 0.5) / anisotropy - 0.5
    src = np.clip(src, 0, nz - 1)
    if order == 0:
        return vol[np.round(src).astype(int)].copy()
    z0 = np.floor(src).astype(int)
    z1 = np.minimum(z0 + 1, nz - 1)
    w = (src - z0).astype(np.float32)[:, None, None]
    return (1 - w) * vol[z0].astype(np.float32) + w * vol[z1].astype(np.float32)


def _n_objects(lab2d: np.ndarray) -> int:
    return int(np.count_nonzero(np.bincount(lab2d.ravel())[1:]))


def iter_planes(img: np.ndarray, labels: np.ndarray, *, yx_step: int = 1, ortho_step: int = 1,
                min_masks: int = 1, edge_band: int = 0) -> Iterator[tuple[str, int, np.ndarray, np.ndarray]]:
    """Yield ``(axis, index, image_plane, label_plane)`` from isotropic volumes.

    ``img`` is (Z, Y, X) or (C, Z, Y, X) (channels first); ``labels`` (Z, Y, X). Axis is
    "YX" (plane ``img[z]``), "ZY" (``img[:, :, x]``) or "ZX" (``img[:, y, :]``): every
    ``yx_step``-th / ``ortho_step``-th index from 0, plus (``edge_band`` > 0) the first and last
    ``edge_band`` indices of each axis, where the volume's borders cut nuclei. Planes with fewer
    than ``min_masks`` distinct objects are skipped.
    """
    if labels.shape != img.shape[-3:]:
        raise InvalidInputError(f"`labels` shape {labels.shape} != image shape {img.shape[-3:]}")
    lab = labels.astype(np.int64, copy=False)
    nz, ny, nx = lab.shape
    specs = [("YX", nz, yx_step), ("ZX", ny, ortho_step), ("ZY", nx, ortho_step)]
    for axis, n, step in specs:
        if step <= 0:
            continue
        band = range(min(edge_band, n)), range(max(n - edge_band, 0), n)
        for i in sorted(set(range(0, n, step)).union(*band)):
            sl = {"YX": (i, slice(None), slice(None)), "ZX": (slice(None), i, slice(None)),
                  "ZY": (slice(None), slice(None), i)}[axis]
            lp = lab[sl]
            if _n_objects(lp) < min_masks:
                continue
            yield axis, i, img[(Ellipsis, *sl)], lp


def normalize99(x: np.ndarray, lower: float = 1.0, upper: float = 99.0) -> np.ndarray:
    """Cellpose ``normalize99``: 0 at the ``lower``, 1 at the ``upper`` percentile (float32 copy)."""
    x = np.asarray(x, np.float32)
    lo, hi = np.percentile(x, [lower, upper])
    if hi - lo > 1e-3:
        return (x - lo) / (hi - lo)
    return np.zeros_like(x)


class PlaneSet:
    """2D training planes padded to a common size, with their flows (arrays kept in memory).

    Attributes
    ----------
    imgs : (N, H, W) float16, normalised images (zero padded)
    labels : (N, H, W) uint16
    flows : (N, 2, H, W) float16, unit heat-diffusion flows of ``labels``
    shapes : (N, 2) int32, valid size of each plane
    diams : (N,) float32, typical nucleus diameter of each plane in px (what ``diam_mean``
        scaling refers to): given per plane (the 3D diameter of a synthetic volume), or the
        median equivalent-circle diameter of the plane's labels
    """

    def __init__(self, imgs, labels, flows, shapes, diams=None):
        self.imgs, self.labels, self.flows, self.shapes = imgs, labels, flows, shapes
        if diams is None:
            diams = np.array([label_diameter(lb[:h, :w]) for lb, (h, w) in zip(labels, shapes)], np.float32)
        self.diams = np.asarray(diams, np.float32)

    def __len__(self) -> int:
        return len(self.imgs)

    @classmethod
    def from_planes(cls, planes: list[tuple]) -> "PlaneSet":
        """From ``(image, labels)`` or ``(image, labels, diameter)`` tuples (2D, any sizes)."""
        if not planes:
            raise InvalidInputError("no training planes (check `min_masks` and the data)")
        hmax = max(p[0].shape[0] for p in planes)
        wmax = max(p[0].shape[1] for p in planes)
        n = len(planes)
        imgs = np.zeros((n, hmax, wmax), np.float16)
        labels = np.zeros((n, hmax, wmax), np.uint16)
        shapes = np.zeros((n, 2), np.int32)
        diams = np.zeros(n, np.float32)
        for i, p in enumerate(planes):
            im, lb = p[0], p[1]
            h, w = im.shape
            imgs[i, :h, :w] = normalize99(im)
            labels[i, :h, :w] = lb
            shapes[i] = h, w
            diams[i] = p[2] if len(p) > 2 else label_diameter(lb)
        flows = masks_to_flows_batch(labels).astype(np.float16)
        return cls(imgs, labels, flows, shapes, diams)

    def save(self, path: Path) -> None:
        np.savez(path, imgs=self.imgs, labels=self.labels, flows=self.flows, shapes=self.shapes,
                 diams=self.diams)

    @classmethod
    def load(cls, path: Path) -> "PlaneSet":
        with np.load(path) as d:
            return cls(d["imgs"], d["labels"], d["flows"], d["shapes"], d["diams"] if "diams" in d else None)

    def diam_labels(self) -> float:
        """Mean over planes of Cellpose's median equivalent-circle diameter."""
        ds = [label_diameter(lb) for lb in self.labels]
        ds = [d for d in ds if d > 0]
        return float(np.mean(ds)) if ds else 0.0


def synthetic_planes(n_volumes: int, *, seed: int, shape_iso=(96, 160, 160),
                     diam_mean: float = 30.0, diam_spread: float = 0.2,
                     anisotropies=(1.0, 2.0, 4.0, 8.0, 11.5), yx_step: int = 4,
                     ortho_step: int = 8, min_masks: int = 1, axes=("YX", "ZY", "ZX"), progress=None):
    """Planes from seeded synthetic volumes, Z-subsampled then resampled back to isotropic.

    Only planes of the orientations in ``axes`` are kept. Volume ``k`` uses seed ``[seed, k]``; its mean diameter is
    ``diam_mean * exp(N(0, diam_spread))`` and its anisotropy is drawn from ``anisotropies``.
    Returns a list of ``(image_plane float32, label_plane, diameter)``, ``diameter`` being the
    volume's mean 3D nucleus diameter (what a user passes as ``--diameter``).
    """
    from nucseg_rt.eval.synth import make_volume

    planes = []
    for k in range(n_volumes):
        rng = np.random.default_rng([seed, k])
        aniso = float(rng.choice(anisotropies))
        dm = diam_mean * math.exp(rng.normal(0, diam_spread))
        img, _, meta = make_volume(shape_iso, density=float(rng.uniform(0.2, 0.4)), diameter_mean=dm,
                                   anisotropy=aniso, seed=int(rng.integers(2**31)), keep_iso=True)
        lab_iso = meta["labels_iso"]
        nz = int(math.floor((img.shape[0] - 1) * aniso)) + 1
        iso = resample_z(img, aniso, nz_out=nz, align="corners")
        for axis, _, ip, lp in iter_planes(iso, lab_iso[:nz], yx_step=yx_step, ortho_step=ortho_step,
                                           min_masks=min_masks):
            if axis in axes:
                planes.append((ip, lp, dm))
        if progress is not None:
            progress(k + 1, n_volumes)
    return planes


def realtex_planes(bank, n_volumes: int, *, seed: int, diam_mean: float = 17.0, yx_step: int = 4,
                   ortho_step: int = 8, min_masks: int = 1, hard: dict[str, float] | None = None,
                   edge_band: int = 0, progress=None):
    """Planes of seeded real-texture volumes (``nucseg_rt.eval.realtex``) made from ``bank``.

    Volume ``k`` uses seed ``[seed, k]`` and a spec from ``realtex.draw_spec`` (nuclei around
    ``diam_mean`` px, anisotropy 1-11.5, some thin stacks and small crops whose borders cut
    nuclei; ``hard`` overrides ``draw_spec``'s ``thin_prob``, ``crop_prob`` and ``dense_prob``).
    Its planes are resampled back to isotropic in Z as the runtime does; the labels are
    the true isotropic cross-sections. YX planes every ``yx_step``-th, ZY/ZX every
    ``ortho_step``-th (and the ``edge_band`` planes at each border: ``iter_planes``), with at
    least ``min_masks`` nuclei. Returns ``(image, labels, diameter)``
    tuples, ``diameter`` the volume's median mid-section diameter (what a user passes).
    """
    from nucseg_rt.eval import realtex

    planes = []
    for k in range(n_volumes):
        rng = np.random.default_rng([seed, k])
        spec = realtex.draw_spec(rng, diameter=diam_mean, **(hard or {}))
        img, _, meta = realtex.make_volume(bank, spec, seed=int(rng.integers(2**31)), keep_iso=True)
        lab_iso = meta["labels_iso"]
        nz = min(int(math.floor((img.shape[0] - 1) * spec.anisotropy)) + 1, lab_iso.shape[0])
        iso = resample_z(img, spec.anisotropy, nz_out=nz, align="corners")
        for _, _, ip, lp in iter_planes(iso, lab_iso[:nz], yx_step=yx_step, ortho_step=ortho_step,
                                        min_masks=min_masks, edge_band=edge_band):
            planes.append((ip, lp, meta["diameter"]))
        if progress is not None:
            progress(k + 1, n_volumes)
    return planes


def label_path_for(img_path: Path, mask_filter: str = "_masks") -> Path | None:
    """Label file of a 2D training image: ``X_masks.tif`` for ``X.tif`` or ``X_img.tif``."""
    stems = [img_path.stem] + ([img_path.stem[:-4]] if img_path.stem.endswith("_img") else [])
    for stem in stems:
        for ext in (img_path.suffix, ".tif", ".tiff", ".png"):
            cand = img_path.with_name(stem + mask_filter + ext)
            if cand.exists():
                return cand
    return None


def load_pairs(folder: Path, *, mask_filter: str = "_masks", chan: int = 0):
    """2D (image, labels) pairs from a folder in Cellpose's layout (``X.tif`` + ``X_masks.tif``,
    or ``X_img.tif`` + ``X_masks.tif`` as written by ``crops.py``).

    Images may be (Y, X) or (C, Y, X) / (Y, X, C) with C <= 4 (channel ``chan`` is used).
    """
    import tifffile

    folder = Path(folder)
    if not folder.is_dir():
        raise InvalidInputError(f"training folder {folder} does not exist")
    pairs = []
    for f in sorted(folder.iterdir()):
        if f.suffix.lower() not in (".tif", ".tiff") or f.stem.endswith(mask_filter):
            continue
        lab_path = label_path_for(f, mask_filter)
        if lab_path is None:
            continue
        img, lab = tifffile.imread(f), tifffile.imread(lab_path)
        if img.ndim == 3:
            img = img[chan] if img.shape[0] <= 4 else img[..., chan]
        if img.shape != lab.shape or img.ndim != 2:
            raise InvalidInputError(f"{f.name}: image {img.shape} and labels {lab.shape} must be 2D and match")
        pairs.append((img.astype(np.float32), lab.astype(np.int64)))
    if not pairs:
        raise InvalidInputError(f"no image/label pairs (`*{mask_filter}.tif`) in {folder}")
    return pairs


def load_or_make_cache(path: Path, params: dict, make) -> PlaneSet:
    """Load a PlaneSet cached at ``path`` (.npz) if its ``params`` match, else ``make()`` and save."""
    meta = path.with_suffix(".json")
    params = json.loads(json.dumps(params))  # as stored: tuples become lists
    if path.exists() and meta.exists() and json.loads(meta.read_text()) == params:
        return PlaneSet.load(path)
    ps = PlaneSet.from_planes(make())
    path.parent.mkdir(parents=True, exist_ok=True)
    ps.save(path)
    meta.write_text(json.dumps(params))
    return ps


def rotate_flip_flows(img, flows, lab, k: int, flip: bool):
    """Rotate by ``k`` x 90 degrees (``torch.rot90`` on the last two axes) then optionally flip X.

    ``img`` (..., H, W), ``flows`` (2, H, W) as (dY, dX), ``lab`` (H, W); vectors are rotated
    with the pixels so they still point to the same centres.
    """
    for _ in range(k % 4):
        img, lab = torch.rot90(img, 1, (-2, -1)), torch.rot90(lab, 1, (-2, -1))
        f = torch.rot90(flows, 1, (-2, -1))
        flows = torch.stack([-f[1], f[0]])
    if flip:
        img, lab, flows = img.flip(-1), lab.flip(-1), flows.flip(-1)
        flows = torch.stack([flows[0], -flows[1]])
    return img, flows, lab


def _region(arr: np.ndarray, y0: int, x0: int, size: int) -> np.ndarray:
    """``arr[..., y0:y0+size, x0:x0+size]`` with zero padding outside."""
    out = np.zeros((*arr.shape[:-2], size, size), arr.dtype)
    h, w = arr.shape[-2:]
    ys, xs = max(y0, 0), max(x0, 0)
    ye, xe = min(y0 + size, h), min(x0 + size, w)
    if ye > ys and xe > xs:
        out[..., ys - y0:ye - y0, xs - x0:xe - x0] = arr[..., ys:ye, xs:xe]
    return out


def _gaussian_kernel(sigma: float) -> torch.Tensor:
    """A normalised 1D Gaussian of ``sigma`` px, radius ``ceil(3 sigma)`` (at least 1)."""
    r = max(1, int(math.ceil(3 * sigma)))
    k = torch.exp(-0.5 * (torch.arange(-r, r + 1, dtype=torch.float32) / sigma) ** 2)
    return k / k.sum()


def coarse_axis(im: torch.Tensor, step: float, sigma: float, phase: float) -> torch.Tensor:
    """What a coarse Z axis does to an (H, W) image, along its rows (axis 0).

    Blur with a Gaussian of ``sigma`` px (the axial PSF), sample rows every ``step`` px from
    ``phase`` (the Z planes), then interpolate linearly back to every row with the ends held, as
    the runtime resamples Z to isotropic. The labels stay as they are: they are the true
    cross-sections that a ZY/ZX plane of a real anisotropic volume shows.
    """
    h = im.shape[0]
    if sigma > 0:
        k = _gaussian_kernel(sigma)
        r = len(k) // 2
        im = F.conv2d(F.pad(im[None, None], (0, 0, r, r), mode="replicate"), k.view(1, 1, -1, 1))[0, 0]
    pos = torch.arange(phase, h - 1e-6, step, dtype=torch.float64)
    if len(pos) < 2:
        return im
    i0 = pos.floor().long().clamp(max=h - 1)
    i1 = (i0 + 1).clamp(max=h - 1)
    f = (pos - i0).float()[:, None]
    samples = (1 - f) * im[i0] + f * im[i1]
    u = ((torch.arange(h, dtype=torch.float64) - phase) / step).clamp(0, len(pos) - 1)
    j0 = u.floor().long().clamp(max=len(pos) - 1)
    j1 = (j0 + 1).clamp(max=len(pos) - 1)
    g = (u - j0).float()[:, None]
    return (1 - g) * samples[j0] + g * samples[j1]


def gaussian_blur(im: torch.Tensor, sigma: float) -> torch.Tensor:
    """An (H, W) image blurred with an isotropic Gaussian of ``sigma`` px (edges replicated)."""
    if sigma <= 0:
        return im
    k = _gaussian_kernel(sigma)
    r = len(k) // 2
    x = F.pad(im[None, None], (r, r, r, r), mode="replicate")
    x = F.conv2d(x, k.view(1, 1, -1, 1))
    return F.conv2d(x, k.view(1, 1, 1, -1))[0, 0]


def camera_noise(im: torch.Tensor, sd: float, rng: np.random.Generator) -> torch.Tensor:
    """Read plus shot noise on a normalised image (0-1 = 1st-99th percentile): Gaussian with
    variance ``sd**2 * (1 + max(im, 0))``, drawn from ``rng``."""
    z = torch.from_numpy(rng.standard_normal(tuple(im.shape)).astype(np.float32))
    return im + z * sd * torch.sqrt(1.0 + im.clamp(min=0))


def _scale(ps: PlaneSet, i: int, rng: np.random.Generator, diam_mean: float | None, scale_jitter: float,
           wide: tuple[float, float] | None, wide_prob: float) -> float:
    """Zoom factor of one sample: nuclei to ``diam_mean`` x jitter, or (``wide_prob``) to a size
    drawn log-uniformly from ``wide``; without ``diam_mean``, jitter around the stored scale."""
    d = float(ps.diams[i])
    if diam_mean is None or d <= 0:
        return math.exp(rng.uniform(-math.log(scale_jitter), math.log(scale_jitter)))
    if wide is not None and rng.random() < wide_prob:
        return math.exp(rng.uniform(math.log(wide[0]), math.log(wide[1]))) / d
    return diam_mean / d * math.exp(rng.uniform(-math.log(scale_jitter), math.log(scale_jitter)))


def _one_sample(ps: PlaneSet, i: int, rng: np.random.Generator, crop: int, aug: dict):
    h, w = ps.shapes[i]
    s = _scale(ps, i, rng, aug["diam_mean"], aug["scale_jitter"], aug["wide"], aug["wide_prob"])
    src = max(8, int(math.ceil(crop / s)))
    y0 = int(rng.integers(0, h - src + 1)) if h > src else -int(rng.integers(0, src - h + 1))
    x0 = int(rng.integers(0, w - src + 1)) if w > src else -int(rng.integers(0, src - w + 1))
    im = torch.from_numpy(_region(ps.imgs[i, :h, :w], y0, x0, src).astype(np.float32))
    fl = torch.from_numpy(_region(ps.flows[i, :, :h, :w], y0, x0, src).astype(np.float32))
    lb = torch.from_numpy(_region(ps.labels[i, :h, :w], y0, x0, src).astype(np.int64))
    if src != crop:
        im = F.interpolate(im[None, None], size=(crop, crop), mode="bilinear", align_corners=False)[0, 0]
        fl = F.interpolate(fl[None], size=(crop, crop), mode="bilinear", align_corners=False)[0]
        lb = F.interpolate(lb[None, None].float(), size=(crop, crop), mode="nearest")[0, 0].long()
    if aug["ortho_prob"] > 0 and rng.random() < aug["ortho_prob"]:
        lo, hi = aug["ortho_steps"]
        step = math.exp(rng.uniform(math.log(lo), math.log(hi)))
        im = coarse_axis(im, step, step * rng.uniform(0.2, 0.5), rng.uniform(0, step))
    im, fl, lb = rotate_flip_flows(im, fl, lb, int(rng.integers(4)), bool(rng.random() < 0.5))
    nl = int(lb.max()) + 1
    fac = np.exp(rng.normal(0, aug["brightness_sd"], nl))
    fac[rng.random(nl) < aug["faint_prob"]] *= rng.uniform(0.15, 0.4)
    fac[0] = 1.0
    fmap = torch.from_numpy(fac.astype(np.float32))[lb]
    fmap = F.avg_pool2d(fmap[None, None], 5, stride=1, padding=2, count_include_pad=False)[0, 0]
    im = im * fmap
    g = math.exp(rng.uniform(-math.log(aug["gamma_range"]), math.log(aug["gamma_range"])))
    im = torch.where(im > 0, im.clamp(min=0) ** g, im)
    if aug["blur_prob"] > 0 and rng.random() < aug["blur_prob"]:
        im = gaussian_blur(im, rng.uniform(*aug["blur_sigma"]))
    if aug["noise_prob"] > 0 and rng.random() < aug["noise_prob"]:
        im = camera_noise(im, rng.uniform(*aug["noise_sd"]), rng)
    w = (dim_object_weight(im, lb, aug["dim_weight"]) * small_object_weight(lb, aug["small_weight"])
         * contact_band_weight(lb, aug["contact_weight"]))
    return im, fl, lb, w


def _below_median_weight(lb: torch.Tensor, count: torch.Tensor, stat: torch.Tensor, max_weight: float,
                         power: float) -> torch.Tensor:
    """Per-pixel weight ``(median / stat) ** power``, clamped to [1, ``max_weight``], on the nuclei
    whose ``stat`` (per label, 0 = background) is below the median over the crop's nuclei (those
    with ``count`` > 0); 1 on background and on the other nuclei."""
    w = torch.ones(lb.shape, dtype=torch.float32)
    present = count[1:] > 0
    if not bool(present.any()):
        return w
    ref = stat[1:][present].median()
    if float(ref) <= 0:
        return w
    # the floor keeps a stat at or below 0 (a dim nucleus after normalisation) at the top weight
    per = ((ref / stat.clamp(min=float(ref) / max_weight ** (1.0 / power))) ** power).clamp(1.0, max_weight)
    per[0] = 1.0
    return per[lb]


def dim_object_weight(im: torch.Tensor, lb: torch.Tensor, max_weight: float) -> torch.Tensor:
    """Per-pixel loss weight that lets dim nuclei count more: 1 on background and on nuclei at
    least as bright (mean intensity) as the median nucleus of the crop, ``median / mean`` (at
    most ``max_weight``) on dimmer ones. ``max_weight`` 1 gives all ones."""
    nl = int(lb.max()) + 1
    if max_weight <= 1.0 or nl < 2:
        return torch.ones(lb.shape, dtype=torch.float32)
    flat = lb.reshape(-1)
    count = torch.bincount(flat, minlength=nl).float()
    mean = torch.bincount(flat, weights=im.reshape(-1).double(), minlength=nl).float() / count.clamp(min=1)
    return _below_median_weight(lb, count, mean, max_weight, 1.0)


def small_object_weight(lb: torch.Tensor, max_weight: float) -> torch.Tensor:
    """Per-pixel loss weight that lets small nuclei count more (caps cut by a plane or a border,
    nuclei seen end-on): 1 on background and on nuclei with at least the crop's median nucleus
    area, ``sqrt(median / area)`` (at most ``max_weight``) on smaller ones, so that a nucleus'
    total weight grows with its size, only more slowly. ``max_weight`` 1 gives all ones."""
    nl = int(lb.max()) + 1
    if max_weight <= 1.0 or nl < 2:
        return torch.ones(lb.shape, dtype=torch.float32)
    area = torch.bincount(lb.reshape(-1), minlength=nl).float()
    return _below_median_weight(lb, area, area, max_weight, 0.5)


def contact_band_weight(lb: torch.Tensor, max_weight: float, radius: int = 2) -> torch.Tensor:
    """Per-pixel loss weight on the contacts between nuclei (the weight map of Ronneberger et al.'s
    U-Net, in its simplest form): ``max_weight`` on every pixel, nucleus or background, with two
    different nuclei within ``radius`` px (a (2 radius + 1)-px square), 1 elsewhere. Where two
    nuclei touch or nearly do, the flows must point apart and the gap must be background, or the
    masks merge. ``max_weight`` 1 gives all ones."""
    if radius < 1:
        raise ValueError(f"`radius` must be >= 1, got {radius}")
    nl = int(lb.max())
    if max_weight <= 1.0 or nl < 2:
        return torch.ones(lb.shape, dtype=torch.float32)
    f = lb[None, None].float()
    k = 2 * radius + 1
    hi = F.max_pool2d(f, k, stride=1, padding=radius)[0, 0]
    # the smallest nucleus label in the window (nl + 1 where there is none)
    lo = -F.max_pool2d(-torch.where(f > 0, f, float(nl + 1)), k, stride=1, padding=radius)[0, 0]
    contact = (hi > 0) & (lo < hi)
    return torch.where(contact, torch.tensor(float(max_weight)), torch.tensor(1.0))


def augment_batch(ps: PlaneSet, idx, rng: np.random.Generator, *, crop: int = 128,
                  scale_jitter: float = 1.4, brightness_sd: float = 0.3, faint_prob: float = 0.1,
                  gamma_range: float = 1.4, nchan: int = 2, diam_mean: float | None = None,
                  wide: tuple[float, float] | None = None, wide_prob: float = 0.0,
                  ortho_prob: float = 0.0, ortho_steps: tuple[float, float] = (1.5, 12.0),
                  blur_prob: float = 0.0, blur_sigma: tuple[float, float] = (0.5, 2.0),
                  noise_prob: float = 0.0, noise_sd: tuple[float, float] = (0.02, 0.12),
                  dim_weight: float = 1.0, small_weight: float = 1.0, contact_weight: float = 1.0):
    """Random crops with scale jitter, 90-degree rotations/flips, per-nucleus brightness, gamma,
    and optionally optical blur and camera noise.

    With ``diam_mean``, each plane is zoomed so that its nuclei (``ps.diams``) are ``diam_mean``
    px across (times the jitter), or with probability ``wide_prob`` a size drawn log-uniformly
    from ``wide`` (px). With probability ``ortho_prob`` a crop is made to look like a ZY/ZX plane
    of a coarse-Z stack (``coarse_axis``, Z step drawn log-uniformly from ``ortho_steps`` px at
    the network's scale) before its random rotation. With probability ``blur_prob`` a crop is
    blurred (``gaussian_blur``, sigma drawn uniformly from ``blur_sigma`` px at the network's
    scale: a softer objective or defocus), and with probability ``noise_prob`` given camera
    noise (``camera_noise``, sd drawn uniformly from ``noise_sd`` in normalised units).
    ``dim_weight`` > 1 weights the loss on nuclei dimmer than the crop's median nucleus up to that
    factor (``dim_object_weight``), after all intensity augmentation; ``small_weight`` > 1 weights
    it on nuclei smaller than the crop's median nucleus (``small_object_weight``);
    ``contact_weight`` > 1 on the pixels where two nuclei touch or nearly do
    (``contact_band_weight``).
    They multiply.

    Returns
    -------
    x : (B, nchan, crop, crop) float32 (channel 0 nuclei, others zero)
    flows : (B, 2, crop, crop) float32 unit flows (dY, dX)
    cellprob : (B, crop, crop) float32, 1 inside masks
    weight : (B, crop, crop) float32, per-pixel loss weight (all ones unless ``dim_weight``,
        ``small_weight`` or ``contact_weight`` > 1)
    """
    aug = dict(scale_jitter=scale_jitter, brightness_sd=brightness_sd, faint_prob=faint_prob,
               gamma_range=gamma_range, diam_mean=diam_mean, wide=wide, wide_prob=wide_prob,
               ortho_prob=ortho_prob, ortho_steps=ortho_steps, blur_prob=blur_prob, blur_sigma=blur_sigma,
               noise_prob=noise_prob, noise_sd=noise_sd, dim_weight=dim_weight,
               small_weight=small_weight, contact_weight=contact_weight)
    xs, fs, cs, ws = [], [], [], []
    for i in idx:
        im, fl, lb, w = _one_sample(ps, int(i), rng, crop, aug)
        x = torch.zeros(nchan, crop, crop)
        x[0] = im
        xs.append(x)
        fs.append(fl)
        cs.append((lb > 0).float())
        ws.append(w)
    return torch.stack(xs), torch.stack(fs), torch.stack(cs), torch.stack(ws)
