"""What each work-avoidance step and int8 save, and what they cost in accuracy.

For each synthetic volume, runs the bundled model with the network passes exactly as Cellpose
(plain), then each step alone, then all of them (the default), in fp32 and int8, and prints
network seconds, network pixels, the fraction of plain-fp32 network time saved, and masks
AP@0.5 against the plain fp32 masks and against the ground truth. The default steps with
320-pixel tiles (Cellpose's are 224) run too. Case ``example`` is the bundled example
(examples/embryo_small.tif, anisotropy 4, with its labels); on it the suite used to assert
AP@0.5 vs plain >= 0.99 for the default steps on <= 0.85 of the plain pixels, >= 0.98 for
320-pixel tiles on no more pixels than 224, and >= 0.98 for plain int8 against plain fp32.

    python benchmarks/work_avoidance.py [--cases dense4 example ...] [--json out.json]

One process, one engine at a time; not part of the test suite.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

CASES = {
    "dense1": dict(shape_iso=(64, 256, 256), anisotropy=1.0, density=0.25),
    "dense4": dict(shape_iso=(61, 256, 256), anisotropy=4.0, density=0.25),
    "dense8": dict(shape_iso=(97, 256, 256), anisotropy=8.0, density=0.25),
    "dense11.5": dict(shape_iso=(139, 256, 256), anisotropy=11.5, density=0.25),
    "sparse1": dict(shape_iso=(64, 256, 256), anisotropy=1.0, density=0.04),
    "example": dict(file="embryo_small.tif", anisotropy=4.0),
}
EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _steps():
    from nucseg_rt.network.predict import WorkAvoidance
    from nucseg_rt.network.engine import DEFAULT_WORK_AVOIDANCE as d

    return {"plain": WorkAvoidance.plain(),
            "native_yx": WorkAvoidance(native_yx=True),
            "compact_tiles": WorkAvoidance(compact_tiles=True),
            "background": WorkAvoidance(background_bound=d.background_bound),
            "all three": WorkAvoidance(native_yx=True, compact_tiles=True,
                                       background_bound=d.background_bound),
            "default": d,
            "default, 320 tiles": (d, 320)}


def _volume(name: str, seed: int):
    """(image, true labels) of a case: the example's files or a seeded synthetic volume."""
    c = CASES[name]
    if "file" in c:
        import tifffile

        return (tifffile.imread(EXAMPLES / c["file"]),
                tifffile.imread(EXAMPLES / c["file"].replace(".tif", "_labels.tif")))
    from nucseg_rt.eval.synth import make_volume

    img, labels, _ = make_volume(c["shape_iso"], anisotropy=c["anisotropy"], density=c["density"],
                                 seed=seed, diameter_mean=30.0)
    return img, labels


def run_case(name: str, precisions, seed: int = 0, steps=None, repeat: int = 1) -> dict:
    from nucseg_rt import Segmenter
    from nucseg_rt.eval.metrics import average_precision

    c = CASES[name]
    img, labels = _volume(name, seed)
    rows, ref, plain_net = [], None, None
    for precision in precisions:
        for step, avoid in _steps().items():
            if steps and step not in steps and step != "plain":
                continue
            avoid, bsize = avoid if isinstance(avoid, tuple) else (avoid, 224)
            seg = Segmenter("nuclei_3d", device="cpu", precision=precision, work_avoidance=avoid,
                            bsize=bsize)
            runs = [seg.segment(img, anisotropy=c["anisotropy"], diameter=30.0)
                    for _ in range(max(1, repeat))]  # keep the fastest: timing noise is +-30 %
            res = min(runs, key=lambda r: r.info["seconds_network"])
            info = res.info
            if ref is None:
                ref, plain_net = res.masks, info["seconds_network"]
            ap = lambda a, b: float(average_precision(a, b, thresholds=(0.5,))[0][0])  # noqa: E731
            row = dict(precision=precision, step=step, network=info["seconds_network"],
                       total=info["seconds_total"],
                       pixels=sum(v["pixels"] for v in info["tiles"].values()),
                       tiles_skipped=sum(v["tiles_skipped"] for v in info["tiles"].values()),
                       saved=1 - info["seconds_network"] / plain_net,
                       ap50_vs_plain=ap(ref, res.masks), ap50_vs_truth=ap(labels, res.masks))
            rows.append(row)
            print(f"{name:9s} {precision:5s} {step:14s} network {row['network']:6.2f} s "
                  f"({row['saved']:+.0%} saved) pixels {row['pixels'] / 1e6:6.1f} M "
                  f"skipped {row['tiles_skipped']:4d}  AP50 vs plain {row['ap50_vs_plain']:.3f} "
                  f"vs truth {row['ap50_vs_truth']:.3f}", flush=True)
    return dict(shape=list(img.shape), anisotropy=c["anisotropy"], density=c.get("density"),
                rows=rows)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    ap.add_argument("--precisions", nargs="+", default=["fp32", "int8"], choices=["fp32", "int8"])
    ap.add_argument("--steps", nargs="+", help="only these steps (plain always runs)")
    ap.add_argument("--repeat", type=int, default=1, help="runs per setting; the fastest is kept")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    out = {"machine": f"{platform.node()} {platform.machine()}, {os.cpu_count()} cores",
           "date": time.strftime("%Y-%m-%d"), "cases": {}}
    for case in args.cases:
        out["cases"][case] = run_case(case, args.precisions, steps=args.steps, repeat=args.repeat)
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
