"""Crop maker of the seed workflow: 2D training pairs from 3D z-stacks (+ label stacks).

For each z-stack ``<stem>.tif`` (labels ``<stem><mask-filter>.tif`` next to it, default
``_masks``): move channel / z axes, resample Z by ``--anisotropy`` (linear for the image,
nearest for the labels, as the runtime does), take YX planes (every one) and ZY / ZX planes (every
``--ortho-step``-th) with at least ``--min-masks`` objects, pick up to ``--nimg-per-tif`` planes
per orientation at random (seeded), optionally tile-normalise (``--tile-norm``) and smooth/sharpen
(``--sharpen-radius``, with Cellpose ``make_train``'s smoothing radius 6) with the runtime's
numerics (``nucseg_rt.prep.normalize``, equal to Cellpose's), cut a random
``--crop-size`` crop and write ``<stem>_<YX|ZY|ZX>_<index>_img.tif`` /
``..._masks.tif`` pairs. Cellpose trains on them with ``--img_filter _img --mask_filter _masks``.

Plane extraction is shared with training (``train_data.iter_planes``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import tifffile

from nucseg_rt.errors import InvalidInputError
from nucseg_rt import prep as _runtime
from nucseg_rt_export.train_data import iter_planes, resample_z

__all__ = ["main", "make_crops", "tile_normalize", "smooth_sharpen"]


def smooth_sharpen(img: np.ndarray, *, sharpen_radius: float, smooth_radius: float = 6.0) -> np.ndarray:
    """Cellpose ``smooth_sharpen_img`` of one plane: the runtime's
    :func:`nucseg_rt.prep.normalize.smooth_sharpen` on ``(Y, X)``, returned as ``(Y, X)`` float32.

    ``smooth_radius > 0``: ``G(smooth) * img - G(sharpen) * img``; else ``img - G(sharpen) * img``.
    """
    return _runtime.smooth_sharpen(_as_zyxc(img), sharpen_radius=sharpen_radius,
                                   smooth_radius=smooth_radius)[0, :, :, 0]


def tile_normalize(img: np.ndarray, blocksize: int, lower: float = 1.0, upper: float = 99.0) -> np.ndarray:
    """Cellpose ``normalize99_tile`` of one plane: the runtime's ``normalize(..., tile_norm=blocksize)``
    on ``(Y, X)``, returned as ``(Y, X)`` float32.

    Tiles of ``blocksize`` overlapping by ~10 %; their ``lower``/``upper`` percentiles are
    smoothed and bilinearly interpolated over the plane. A constant plane gives zeros.
    """
    return _runtime.normalize(_as_zyxc(img), percentile=(lower, upper), tile_norm=blocksize,
                              norm3D=False)[0, :, :, 0]


def _as_zyxc(img: np.ndarray) -> np.ndarray:
    """A (Y, X) plane as the runtime's (1, Y, X, 1) volume (a view; the runtime copies it)."""
    img = np.asarray(img)
    if img.ndim != 2:
        raise InvalidInputError(f"expected a (Y, X) plane, got shape {img.shape}")
    return img[None, :, :, None]


def _to_czyx(img: np.ndarray, channel_axis: int | None, z_axis: int | None) -> np.ndarray:
    """Move axes to (C, Z, Y, X); Y, X keep their order."""
    want = 3 if channel_axis is None else 4
    if img.ndim != want:
        raise InvalidInputError(f"expected a {want}D image with `channel_axis`={channel_axis}, got shape {img.shape}")
    for name, ax in (("channel_axis", channel_axis), ("z_axis", z_axis)):
        if ax is not None and not -img.ndim <= ax < img.ndim:
            raise InvalidInputError(f"`{name}` must be in [-{img.ndim}, {img.ndim}), got {ax}")
    c = None if channel_axis is None else channel_axis % img.ndim
    z = (0 if c != 0 else 1) if z_axis is None else z_axis % img.ndim
    if c is None:
        return np.moveaxis(img, z, 0)[None]
    if c == z:
        raise InvalidInputError(f"`channel_axis` and `z_axis` are the same axis ({c})")
    return np.moveaxis(img, (c, z), (0, 1))


def make_crops(image: np.ndarray, labels: np.ndarray, *, anisotropy: float = 1.0, crop_size: int = 224,
               nimg_per_tif: int = 10, min_masks: int = 1, ortho_step: int = 1, chan: int = 0,
               sharpen_radius: float = 0.0, smooth_radius: float = 6.0, tile_norm: int = 0,
               channel_axis: int | None = None, z_axis: int | None = None, seed: int = 0):
    """2D (image, labels) crops from one z-stack.

    Parameters
    ----------
    image : (Z, Y, X) array, or with a channel axis (``channel_axis``); ``z_axis`` says where Z is
        when it is not first.
    labels : (Z, Y, X) int array matching the image's Z, Y, X.

    Returns
    -------
    list of ``(tag, image_crop float32 (h, w), label_crop uint16/uint32 (h, w))``, tag like "ZY_3".
    """
    if anisotropy <= 0:
        raise InvalidInputError(f"`anisotropy` must be > 0, got {anisotropy}")
    if crop_size < 16:
        raise InvalidInputError(f"`crop_size` must be >= 16, got {crop_size}")
    czyx = _to_czyx(np.asarray(image), channel_axis, z_axis)
    if not 0 <= chan < czyx.shape[0]:
        raise InvalidInputError(f"`chan` must be in [0, {czyx.shape[0]}), got {chan}")
    vol = czyx[chan].astype(np.float32)
    if labels.shape != vol.shape:
        raise InvalidInputError(f"labels shape {labels.shape} != image (Z, Y, X) shape {vol.shape}")
    if anisotropy != 1.0:
        vol = resample_z(vol, anisotropy)
        labels = resample_z(labels, anisotropy, order=0)
    rng = np.random.default_rng(seed)
    out = []
    for axis in ("YX", "ZY", "ZX"):
        cands = [(i, ip, lp) for ax, i, ip, lp in iter_planes(
            vol, labels, yx_step=1 if axis == "YX" else 0, ortho_step=ortho_step if axis != "YX" else 0,
            min_masks=min_masks) if ax == axis]
        for k in rng.permutation(len(cands))[:nimg_per_tif]:
            i, ip, lp = cands[k]
            if tile_norm:
                ip = tile_normalize(ip, tile_norm)
            if sharpen_radius:
                ip = smooth_sharpen(ip, sharpen_radius=sharpen_radius, smooth_radius=smooth_radius)
            ly, lx = ip.shape
            y0 = int(rng.integers(0, ly - crop_size + 1)) if ly > crop_size else 0
            x0 = int(rng.integers(0, lx - crop_size + 1)) if lx > crop_size else 0
            sl = (slice(y0, y0 + crop_size), slice(x0, x0 + crop_size))
            out.append((f"{axis}_{i}", np.ascontiguousarray(ip[sl], np.float32),
                        np.ascontiguousarray(lp[sl]).astype(labels.dtype)))
    return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="nucseg-rt make-crops", description=__doc__.split("\n\n")[0])
    a = p.add_argument
    a("paths", nargs="+", type=Path, help="z-stack TIFFs or folders of them")
    a("--out", type=Path, required=True, help="output folder for the _img/_masks pairs")
    a("--mask-filter", default="_masks", help="label file suffix: <stem><mask-filter>.tif")
    a("--anisotropy", type=float, default=1.0)
    a("--crop-size", type=int, default=224)
    a("--nimg-per-tif", type=int, default=10, help="planes per orientation per stack")
    a("--min-masks", type=int, default=1)
    a("--ortho-step", type=int, default=1, help="take every Nth ZY / ZX plane")
    a("--sharpen-radius", type=float, default=0.0)
    a("--smooth-radius", type=float, default=6.0, help="used with --sharpen-radius (Cellpose default 6)")
    a("--tile-norm", type=int, default=0, help="tile normalisation block size (0: off)")
    a("--chan", type=int, default=0, help="channel index to use")
    a("--channel-axis", type=int, default=None)
    a("--z-axis", type=int, default=None)
    a("--seed", type=int, default=0)
    return p


def _find_pairs(paths: list[Path], mask_filter: str) -> list[tuple[Path, Path]]:
    files = []
    for p in paths:
        files += sorted(q for q in p.iterdir() if q.suffix.lower() in (".tif", ".tiff")) if p.is_dir() else [p]
    pairs = []
    for f in files:
        if f.stem.endswith(mask_filter):
            continue
        lab = f.with_name(f.stem + mask_filter + f.suffix)
        if not lab.exists():
            raise InvalidInputError(f"no label file {lab} for image {f}")
        pairs.append((f, lab))
    if not pairs:
        raise InvalidInputError(f"no image TIFFs found in {[str(p) for p in paths]}")
    return pairs


def main(argv: list[str] | None = None) -> int:
    """Command-line entry; returns an exit code."""
    args = build_parser().parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    n = 0
    for k, (img_path, lab_path) in enumerate(_find_pairs(args.paths, args.mask_filter)):
        crops = make_crops(tifffile.imread(img_path), tifffile.imread(lab_path), anisotropy=args.anisotropy,
                           crop_size=args.crop_size, nimg_per_tif=args.nimg_per_tif, min_masks=args.min_masks,
                           ortho_step=args.ortho_step, chan=args.chan, sharpen_radius=args.sharpen_radius,
                           smooth_radius=args.smooth_radius, tile_norm=args.tile_norm,
                           channel_axis=args.channel_axis, z_axis=args.z_axis, seed=args.seed + k)
        for tag, im, lb in crops:
            tifffile.imwrite(args.out / f"{img_path.stem}_{tag}_img.tif", im)
            tifffile.imwrite(args.out / f"{img_path.stem}_{tag}_masks.tif", lb)
        n += len(crops)
        print(f"{img_path.name}: {len(crops)} crops")
    print(f"wrote {n} image/mask pairs to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
