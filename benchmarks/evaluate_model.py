"""Accuracy of a model on held-out synthetic volumes (the model card's numbers).

For each anisotropy (1, 4, 11.5 by default) it generates held-out volumes with seeds the
training never uses (10_000+), segments them with nucseg-rt, and prints AP@0.5, AP@0.75 and
the number of faint nuclei missed (no predicted mask with IoU >= 0.5), for each dynamics method.

    python benchmarks/evaluate_model.py --model nuclei_3d
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

HELD_OUT_SEED = 10_000


def matched_true_labels(labels, masks, thr=0.5) -> set:
    """Ids of true labels matched by a predicted mask at IoU >= thr (unique for thr >= 0.5)."""
    t = labels.ravel().astype(np.int64)
    p = masks.ravel().astype(np.int64)
    ov = np.zeros((t.max() + 1, p.max() + 1), np.int64)
    np.add.at(ov, (t, p), 1)
    st, sp = ov.sum(1, keepdims=True), ov.sum(0, keepdims=True)
    iou = ov / np.maximum(st + sp - ov, 1)
    iou[0, :] = 0
    iou[:, 0] = 0
    return set(np.flatnonzero((iou >= thr).any(1)).tolist())


def evaluate(model: str, anisotropies, n_volumes: int, shape_iso, methods, diameter: float) -> dict:
    from nucseg_rt import Segmenter
    from nucseg_rt.eval.metrics import average_precision
    from nucseg_rt.eval.synth import make_volume

    seg = Segmenter(model, device="cpu")
    out = {}
    for a in anisotropies:
        rows = {m: dict(ap50=[], ap75=[], faint=0, faint_missed=0, seconds=0.0) for m in methods}
        for k in range(n_volumes):
            img, labels, meta = make_volume(shape_iso, anisotropy=a, seed=HELD_OUT_SEED + k,
                                            diameter_mean=30.0)
            t0 = time.perf_counter()
            flows, cellprob = seg.predict_flows(img, anisotropy=a, diameter=diameter)
            tnet = time.perf_counter() - t0
            for m in methods:
                from nucseg_rt.masks.dynamics import compute_masks
                from nucseg_rt.masks.postprocess import fill_holes_and_remove_small_masks

                t0 = time.perf_counter()
                masks = compute_masks(flows, cellprob, niter=int(200 * diameter / seg.diam_mean),
                                      min_size=-1, method=m)
                masks = fill_holes_and_remove_small_masks(masks, min_size=15)
                ap = average_precision(labels, masks, thresholds=(0.5, 0.75))[0]
                r = rows[m]
                r["ap50"].append(float(ap[0]))
                r["ap75"].append(float(ap[1]))
                hit = matched_true_labels(labels, masks)
                r["faint"] += len(meta["faint_labels"])
                r["faint_missed"] += sum(1 for f in meta["faint_labels"] if f not in hit)
                r["seconds"] += tnet + time.perf_counter() - t0
        out[str(a)] = {m: dict(ap50=float(np.mean(r["ap50"])), ap75=float(np.mean(r["ap75"])),
                               faint=r["faint"], faint_missed=r["faint_missed"],
                               seconds=r["seconds"] / n_volumes) for m, r in rows.items()}
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="nuclei_3d")
    ap.add_argument("--anisotropy", type=float, nargs="+", default=[1.0, 4.0, 11.5])
    ap.add_argument("--n-volumes", type=int, default=2)
    ap.add_argument("--shape", type=int, nargs=3, default=[96, 192, 192], help="isotropic Z Y X")
    ap.add_argument("--diameter", type=float, default=30.0)
    ap.add_argument("--methods", nargs="+", default=["stable", "cellpose"])
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    res = evaluate(args.model, args.anisotropy, args.n_volumes, tuple(args.shape), args.methods,
                   args.diameter)
    print(f"model {args.model}: {args.n_volumes} held-out volumes of {tuple(args.shape)} (iso) per anisotropy")
    print(f"{'anisotropy':>10s} {'method':>9s} {'AP@0.5':>7s} {'AP@0.75':>8s} {'faint missed':>13s} {'s/vol':>6s}")
    for a, rows in res.items():
        for m, r in rows.items():
            print(f"{a:>10s} {m:>9s} {r['ap50']:7.3f} {r['ap75']:8.3f} "
                  f"{r['faint_missed']:>6d} / {r['faint']:<5d} {r['seconds']:6.1f}")
    if args.json:
        args.json.write_text(json.dumps(res, indent=1))
    return res


if __name__ == "__main__":
    main()
