"""Choose the shipped mask defaults on a calibration set, never on the held-out one.

The calibration set: real-texture 3D volumes (``nucseg_rt.eval.realtex``) built from the
*training* sources' 2D nuclei (not BBBC007, which is held out), with the held-out settings'
geometry (every anisotropy, thin stacks, crops, dense small nuclei) and other seeds
(``CALIBRATION_SEED``). For each volume the network runs once per view (YX, ZX, ZY kept apart);
then every combination of

- ortho weight ``w``: the ZY/ZX views' share of the cell probability,
  ``cp = (cp_YX + w (cp_ZX + cp_ZY)) * 3 / (1 + 2 w)`` (``w = 1`` is Cellpose's sum);
- cell-probability threshold;
- size filter: masks under ``f`` x the expected nucleus volume removed (the runtime's rule,
  ``nucseg_rt.params.size_aware_min_size``);

is scored (AP@0.5, AP@0.75, median volume ratio). ``--scales`` also runs the network with the
diameter multiplied by each factor (the network's preferred scale).

    python benchmarks/calibrate_defaults.py --cache ~/.cache/nucseg-rt/packages --json calib.json
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from evaluate_model import check_settings, object_scores, realtex_volumes  # noqa: E402

CALIBRATION_SEED = 50_000


def per_view_outputs(seg, vol, anisotropy: float, diameter: float):
    """Network outputs of each view on the isotropic network grid: ``{name: (out (3, Z', Y', X'),
    comps)}``, ``out`` = (flow a, flow b, cellprob) in ZYX order, and the input shape."""
    from nucseg_rt.network.predict import ORIENTATIONS, WorkAvoidance
    from nucseg_rt.params import InputSpec
    from nucseg_rt.prep.resample import rescale_volume

    x, _, _ = seg._prepare(vol, InputSpec())
    shape = x.shape[:3]
    xr = rescale_volume(x, rescale=seg.rescale_for(diameter), anisotropy=anisotropy, nchan=seg.net.info.nchan)
    views = {}
    for name, (perm, comps) in ORIENTATIONS.items():
        planes = xr.transpose(perm)
        out = np.zeros((3, *planes.shape[:3]), np.float32)

        def sink(i, o, out=out):
            out[:, i] = o

        seg.engine.run_planes(planes, sink=sink, label=name, avoid=WorkAvoidance.plain())
        views[name] = (np.ascontiguousarray(out.transpose(0, *(1 + np.argsort(perm[:3])))), comps)
    return views, shape


def combined_flows(seg, views, shape, *, anisotropy: float, diameter: float, w: float):
    """A Flows result from the per-view outputs with ortho weight ``w``."""
    from nucseg_rt.params import GRID_Z_FACTOR
    from nucseg_rt.results import Flows
    from nucseg_rt.prep import resize_channels_back

    first = next(iter(views.values()))[0]
    yf = np.zeros((4, *first.shape[1:]), np.float32)
    for name, (out, (a, b)) in views.items():
        yf[a] += out[0]
        yf[b] += out[1]
        yf[3] += (1.0 if name == "YX" else w) * out[2]
    yf[3] *= 3.0 / (1.0 + 2.0 * w)
    grid = yf if yf.shape[1] >= GRID_Z_FACTOR * shape[0] else None
    back = resize_channels_back(yf, shape) if yf.shape[1:] != tuple(shape) else yf
    return Flows(back[:3], back[3], tuple(shape), seg.rescale_for(diameter), anisotropy, diameter, resampled=True,
                 mode="3d", grid_flows=None if grid is None else grid[:3],
                 grid_cellprob=None if grid is None else grid[3])


def main(argv=None) -> int:
    from nucseg_rt import Segmenter
    from nucseg_rt.eval import realtex
    from nucseg_rt.masks import remove_small_masks
    from nucseg_rt.params import size_aware_min_size
    from nucseg_rt_export.real_data import CONVENTIONS, TRAIN_SOURCES

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="nuclei_3d")
    ap.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "nucseg-rt" / "packages")
    ap.add_argument("--n-volumes", type=int, default=2)
    ap.add_argument("--settings", nargs="+", default=None)
    ap.add_argument("--seed", type=int, default=CALIBRATION_SEED,
                    help="volume k of the i-th setting of --settings is built with seed SEED + 100 i + k"
                         f" (default {CALIBRATION_SEED}, the calibration set; another seed draws other"
                         " calibration volumes, e.g. for a confirmation run)")
    ap.add_argument("--weights", type=float, nargs="+", default=[1.0, 0.5, 0.25, 0.1])
    ap.add_argument("--thresholds", type=float, nargs="+", default=[0.0, -0.5, -1.0, -1.5, -2.0, -3.0])
    ap.add_argument("--size-fractions", type=float, nargs="+", default=[0.0, 0.02, 0.05, 0.1, 0.2])
    ap.add_argument("--scales", type=float, nargs="+", default=[1.0],
                    help="diameter multipliers to run the network at")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--label-convention", default="drawn", choices=CONVENTIONS,
                    help="the calibration nuclei's labels: as drawn, or moved to half their contrast "
                         "(real_data.half_contrast_labels; the convention a model trained with it learned)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    check_settings(ap, args.settings)
    seg = Segmenter(args.model, device="cpu", threads=args.threads)
    settings = args.settings or list(realtex.HELDOUT_SETTINGS)
    rows = []
    t0 = time.time()
    for name, k, img, lab, meta in realtex_volumes(TRAIN_SOURCES, args.cache, settings, args.n_volumes,
                                                   args.seed, convention=args.label_convention):
        a, d_true = meta["anisotropy"], meta["diameter"]
        for scale in args.scales:
            d = d_true * scale
            views, shape = per_view_outputs(seg, img, a, d)
            for w, t in itertools.product(args.weights, args.thresholds):
                f = combined_flows(seg, views, shape, anisotropy=a, diameter=d, w=w)
                masks = seg.masks_from_flows(f, cellprob_threshold=t, min_size=0)
                for frac in args.size_fractions:
                    m = remove_small_masks(masks, size_aware_min_size(d, a, img.shape[0], frac)) \
                        if frac else masks
                    r = object_scores(lab, m, meta["edge_labels"])
                    rows.append(dict(setting=name, k=k, scale=scale, w=w, t=t, frac=frac, ap50=r["ap50"],
                                     ap75=r["ap75"], ratio=float(np.median(r["ratios"])) if r["ratios"] else None,
                                     split=r["n_split"] / max(r["n_true"], 1), missed=r["n_missed"] / max(r["n_true"], 1)))
        print(f"{name} {k}: {time.time() - t0:.0f} s", flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows))
    _report(rows)
    return 0


def _report(rows) -> None:
    import collections

    by = collections.defaultdict(list)
    for r in rows:
        by[(r["scale"], r["w"], r["t"], r["frac"])].append(r)
    table = []
    for key, rs in by.items():
        per = collections.defaultdict(list)
        for r in rs:
            per[r["setting"]].append(r["ap50"])
        table.append((float(np.mean([np.mean(v) for v in per.values()])), min(np.mean(v) for v in per.values()),
                      float(np.mean([r["ap75"] for r in rs])),
                      float(np.median([r["ratio"] for r in rs if r["ratio"] is not None])), key))
    table.sort(reverse=True)
    print("mean AP@0.5 over settings, worst setting, AP@0.75, volume ratio, (scale, w, threshold, size fraction)")
    for row in table[:25]:
        print(f"{row[0]:.3f} {row[1]:.3f} {row[2]:.3f} {row[3]:.2f} {row[4]}")
    ref = [r for r in table if r[4] == (1.0, 1.0, 0.0, 0.0)]
    if ref:
        print(f"Cellpose's combination, threshold 0, no size filter: {ref[0][0]:.3f} {ref[0][1]:.3f} {ref[0][2]:.3f} "
              f"{ref[0][3]:.2f}")


if __name__ == "__main__":
    raise SystemExit(main())
