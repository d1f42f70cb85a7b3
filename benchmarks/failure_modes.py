"""Why nuclei are missed: each true nucleus and each unmatched mask of real-texture volumes, by kind.

For the settings of ``nucseg_rt.eval.realtex.HELDOUT_SETTINGS`` (calibration volumes from the
training sources by default, the seeds ``calibrate_defaults.py`` uses; ``--held-out`` builds them
from BBBC007 with the held-out seeds) the model segments each volume with its shipped defaults and
every true nucleus is put in one class:

- ``hit``: a mask matches it at IoU >= 0.5;
- ``none``: masks cover under 20 % of it (the cell probability said background);
- ``merged z`` / ``merged xy``: the mask that overlaps it most lies mostly elsewhere and at least
  a quarter of it on one other nucleus (it was joined to that neighbour): one above or below it
  (their XY outlines overlap by a third of the smaller) or one beside it;
- ``fragments``: two or more masks lie mostly inside it;
- ``too small`` / ``too large``: one mask of its own, but IoU < 0.5 (``too large`` also when the
  mask spilled mostly into background).

Each class is split by where the nucleus lies: ``z-cut`` (it touches the first or last plane),
``xy-cut`` (it touches an XY border only) or ``inner``; the table gives the fraction of it left in
the volume (``kept``: voxels over those of the whole nucleus) as a median. Masks matching no
nucleus are classed as ``sliver`` (mostly on a nucleus the truth leaves out because less than
``min_keep`` of it is in the volume, see ``realtex.make_volume``), ``part`` (mostly on a true
nucleus: a fragment or an overgrown neighbour) or ``background``.

    python benchmarks/failure_modes.py --settings crop@2 thin5@5 --n-volumes 6 \\
        --cache ~/.cache/nucseg-rt/packages
"""

from __future__ import annotations

import argparse
import collections
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from calibrate_defaults import CALIBRATION_SEED  # noqa: E402
from evaluate_model import check_settings, overlap_table  # noqa: E402

KINDS = ("hit", "none", "merged z", "merged xy", "fragments", "too small", "too large")
PLACES = ("inner", "xy-cut", "z-cut")
FP_KINDS = ("sliver", "part", "background")


def classify(labels: np.ndarray, masks: np.ndarray, full: np.ndarray, kept: np.ndarray):
    """``(nuclei, unmatched)``: per true nucleus ``(place, kind, kept fraction)``; per unmatched
    mask its kind. ``full`` holds every nucleus with any voxel in the volume (``min_keep`` 0) and
    ``kept`` the fraction of each of its nuclei inside the volume."""
    p = masks.ravel().astype(np.int64)
    ov, iou = overlap_table(labels, masks)
    (nt, npr), st, sp = ov.shape, ov.sum(1), ov.sum(0)
    zcut, xycut = np.zeros(nt, bool), np.zeros(nt, bool)
    zcut[np.unique(labels[[0, -1]])] = True
    for face in (labels[:, [0, -1]], labels[:, :, [0, -1]]):
        xycut[np.unique(face)] = True
    # the kept fraction of each true nucleus: its full-volume id is the one it overlaps
    fo = overlap_table(labels, full)[0]
    nuclei = []
    for i in range(1, nt):
        if st[i] == 0:
            continue
        place = "z-cut" if zcut[i] else "xy-cut" if xycut[i] else "inner"
        j = int(iou[i].argmax())
        inside = np.flatnonzero(ov[i, 1:] > 0.5 * sp[1:]) + 1
        if iou[i, j] >= 0.5:
            kind = "hit"
        elif ov[i, 1:].sum() < 0.2 * st[i]:
            kind = "none"
        elif len(inside) >= 2:
            kind = "fragments"
        else:
            others = ov[:, j].copy()
            others[[0, i]] = 0
            other = int(others.argmax())
            if ov[i, j] < 0.6 * sp[j] and others[other] >= 0.25 * sp[j]:
                a, b = (labels == i).any(0), (labels == other).any(0)
                kind = "merged z" if (a & b).sum() > min(a.sum(), b.sum()) / 3 else "merged xy"
            else:  # one mask for this nucleus alone, maybe spilling into background
                kind = "too small" if sp[j] < st[i] else "too large"
        nuclei.append((place, kind, float(kept[int(fo[i, 1:].argmax()) + 1])))
    f = full.ravel().astype(np.int64)
    unmatched = []
    for j in range(1, npr):
        if sp[j] == 0 or iou[:, j].max() >= 0.5:
            continue
        on_true = ov[1:, j].sum() > 0.5 * sp[j]
        on_full = np.count_nonzero(f[p == j]) > 0.5 * sp[j]
        unmatched.append("part" if on_true else "sliver" if on_full else "background")
    return nuclei, unmatched


def main(argv=None) -> int:
    from nucseg_rt import Segmenter
    from nucseg_rt.eval import realtex
    from nucseg_rt.eval.metrics import average_precision
    from nucseg_rt_export.real_data import HELDOUT_SOURCES, TRAIN_SOURCES, load_source

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="nuclei_3d")
    ap.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "nucseg-rt" / "packages")
    ap.add_argument("--settings", nargs="+", default=list(realtex.HELDOUT_SETTINGS))
    ap.add_argument("--n-volumes", type=int, default=4)
    ap.add_argument("--held-out", action="store_true",
                    help="BBBC007 volumes with the held-out seeds (report only: never choose anything on them)")
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args(argv)
    check_settings(ap, args.settings)
    sources = HELDOUT_SOURCES if args.held_out else TRAIN_SOURCES
    seed = realtex.HELDOUT_SEED if args.held_out else CALIBRATION_SEED
    bank = realtex.nucleus_bank([(r.image, r.labels) for s in sources for r in load_source(s, args.cache)])
    seg = Segmenter(args.model, device="cpu", threads=args.threads)
    order = list(realtex.ALL_SETTINGS)
    for name in args.settings:
        spec = realtex.setting_spec(name)
        nuclei, unmatched, aps = [], [], []
        for k in range(args.n_volumes):
            s = seed + 100 * order.index(name) + k   # calibrate_defaults' seeds (its default list)
            img, lab, meta = realtex.make_volume(bank, spec, seed=s)
            _, full, fmeta = realtex.make_volume(bank, spec, seed=s, min_keep=0.0)
            kept = np.bincount(full.ravel(), minlength=len(fmeta["true_volume"])) / \
                np.maximum(np.asarray(fmeta["true_volume"]), 1e-9)
            masks = seg.segment(img, anisotropy=meta["anisotropy"], diameter=meta["diameter"]).masks
            aps.append(float(average_precision(lab, masks, thresholds=(0.5,))[0][0]))
            nu, un = classify(lab, masks, full, kept)
            nuclei += nu
            unmatched += un
        count = collections.Counter((pl, kd) for pl, kd, _ in nuclei)
        print(f"\n{name}: {args.n_volumes} volumes, {len(nuclei)} nuclei, mean AP@0.5 {np.mean(aps):.3f}")
        print(f"  {'':8s}" + "".join(f"{kd:>10s}" for kd in KINDS) + "   kept (median) of the missed")
        for pl in PLACES:
            missed = [kp for p_, kd, kp in nuclei if p_ == pl and kd != "hit"]
            print(f"  {pl:8s}" + "".join(f"{count[(pl, kd)]:10d}" for kd in KINDS)
                  + (f"   {np.median(missed):.2f}" if missed else "   -"))
        fp = collections.Counter(unmatched)
        print("  masks matching no nucleus: " + ", ".join(f"{kd} {fp[kd]}" for kd in FP_KINDS))
    return 0


if __name__ == "__main__":
    sys.exit(main())
