"""Whole-pipeline time of two models on the same volumes with small nuclei (10-20 px).

A model's ``diam_mean`` sets how much a volume is zoomed before the network: nuclei of 14 px run
at zoom 30/14 = 2.1 in X and Y for a model trained at 30 px, and at 17/14 = 1.2 for one trained at
17 px. This script segments seeded synthetic volumes with nuclei of the given diameters at the
given anisotropies with both models (true diameter given, default settings, fp32 or int8), one
after the other in this process, and prints seconds per volume, the ratio, and each model's
AP@0.5 against the ground truth.

    python benchmarks/model_speed.py --old old.onnx --new nuclei_3d [--diameters 12 14 20]

Run it on an otherwise idle machine; not part of the test suite.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path


def run(old: str, new: str, diameters, anisotropies, precision: str, repeat: int,
        old_input_grid: bool = False, backend: str = "onnxruntime") -> list[dict]:
    import nucseg_rt.network.engine as engine_module  # where the passes read GRID_Z_FACTOR
    from nucseg_rt import Segmenter
    from nucseg_rt.eval.metrics import average_precision
    from nucseg_rt.eval.synth import make_volume

    segs = {"old": Segmenter(old, device="cpu", precision=precision, backend=backend),
            "new": Segmenter(new, device="cpu", precision=precision, backend=backend)}
    rows, grid = [], engine_module.GRID_Z_FACTOR
    for d in diameters:
        for a in anisotropies:
            nz = int(round(96 * (1 if a < 4 else 1.5)))
            img, labels, _ = make_volume((nz, 192, 192), anisotropy=a, seed=20_000 + int(d), diameter_mean=d)
            row = dict(diameter=d, anisotropy=a, shape=list(img.shape))
            for key, seg in segs.items():
                # the pipeline before 2026-12-05 followed coarse-Z flows on the acquired planes
                engine_module.GRID_Z_FACTOR = float("inf") if key == "old" and old_input_grid else grid
                seg.segment(img[:6], anisotropy=a, diameter=d, z_axis=0)  # warm-up (numba, sessions)
                times = []
                for _ in range(repeat):
                    t0 = time.perf_counter()
                    res = seg.segment(img, anisotropy=a, diameter=d)
                    times.append(time.perf_counter() - t0)
                row[f"{key}_seconds"] = min(times)
                row[f"{key}_ap50"] = float(average_precision(labels, res.masks, thresholds=(0.5,))[0][0])
            row["speedup"] = row["old_seconds"] / row["new_seconds"]
            rows.append(row)
            print(f"d={d:5.1f} aniso={a:5.1f} shape={tuple(img.shape)}  old {row['old_seconds']:6.2f} s "
                  f"(AP {row['old_ap50']:.3f})  new {row['new_seconds']:6.2f} s (AP {row['new_ap50']:.3f})  "
                  f"old/new {row['speedup']:.2f}x", flush=True)
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--old", required=True, help="model name or .onnx (e.g. the previous bundled model)")
    ap.add_argument("--new", default="nuclei_3d")
    ap.add_argument("--diameters", type=float, nargs="+", default=[12.0, 14.0, 20.0])
    ap.add_argument("--anisotropy", type=float, nargs="+", default=[1.0, 4.0, 11.5])
    ap.add_argument("--precision", default="fp32", choices=["fp32", "int8", "bf16"])
    ap.add_argument("--backend", default="onnxruntime", choices=["onnxruntime", "openvino"],
                    help="the same engine for both models (auto could pick different ones: it "
                         "follows each model's recorded agreement)")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--old-input-grid", action="store_true",
                    help="run the old model as the pipeline did before 2026-12-05: coarse-Z flows "
                         "followed on the acquired planes, not on the network grid")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, precision {args.precision}")
    rows = run(args.old, args.new, args.diameters, args.anisotropy, args.precision, args.repeat,
               backend=args.backend,
               old_input_grid=args.old_input_grid)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
