"""The whole pipeline on each network engine, side by side (issue 23): onnxruntime fp32 / int8,
OpenVINO fp32 / bf16 / int8, and Cellpose 3.1 on the same weights and the same volumes.

Each run is its own child process (its own peak RSS), one after the other, in this one
invocation (the helpers of benchmarks/vs_cellpose.py). Prints per-stage seconds, the ratio of
Cellpose's total to each run's, peak RSS, the network's GFLOP/s (on the pixels it ran) and, with
``--peak-gflops``, the share of that peak it reached (the peak is yours to state, e.g. cores x
GHz x bf16 FLOP per cycle per core; the script does not guess it), and each run's masks against
onnxruntime fp32 (AP@0.5; the rule for ``--backend auto`` is >= 0.99 on the held-out volumes).

    python benchmarks/backends.py                            # bundled model, iso64 and coarse12
    python benchmarks/backends.py --weights cp3-random       # Cellpose's full-width net
    python benchmarks/backends.py --weights cp3-widened      # the same, grown from the bundled one
    python benchmarks/backends.py --cases tiny --no-cellpose --threads 1   # smoke check

Needs the test extra (cellpose==3.1.1.2, torch) for Cellpose and the export, and the openvino
extra; bf16 runs are skipped (with a note) on CPUs without native bf16. Not part of the test
suite.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

import vs_cellpose as vc  # noqa: E402  (the side-by-side helpers: children, weights, RSS)

CASES = {**vc.CASES, "tiny": dict(shape_iso=(16, 64, 64), anisotropy=1.0)}
#: (label, backend, precision); int8 runs the QDQ file, bf16 the fp32 file in bf16 arithmetic
RUNS = [("ORT fp32", "onnxruntime", "fp32"), ("ORT int8", "onnxruntime", "int8"),
        ("OV fp32", "openvino", "fp32"), ("OV bf16", "openvino", "bf16"),
        ("OV int8", "openvino", "int8")]


def make_case(name: str, seed: int = 0):
    from nucseg_rt.eval.synth import make_volume

    c = CASES[name]
    img, labels, _ = make_volume(c["shape_iso"], anisotropy=c["anisotropy"], seed=seed,
                                 diameter_mean=30.0)
    return img, labels, c["anisotropy"]


def run_backend(img_npy, aniso, model_path, out_npy, backend, precision, threads):
    from nucseg_rt import Segmenter

    img = np.load(img_npy)
    base = vc._rss_mb()
    with Segmenter(str(model_path), device="cpu", backend=backend, precision=precision,
                   threads=threads, use_probe=False) as seg:
        res = seg.segment(img, anisotropy=aniso, diameter=30.0)
    np.save(out_npy, res.masks)
    i = res.info
    pixels = sum(v["pixels"] for v in i["tiles"].values())
    return dict(network=i["seconds_network"], dynamics=i["seconds_dynamics"],
                total=i["seconds_total"], rss=vc._rss_mb(), rss_base=base,
                n=int(res.masks.max()), pixels=pixels, ran=i.get("network", ""))


def _bf16_here() -> bool:
    try:
        from nucseg_rt.network._openvino import cpu_supports_bf16

        return cpu_supports_bf16()
    except ImportError:
        return False


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights", choices=vc.WEIGHTS, default="bundled")
    ap.add_argument("--cases", nargs="+", default=["iso64", "coarse12"], choices=list(CASES))
    ap.add_argument("--runs", nargs="+", default=[r[0] for r in RUNS],
                    choices=[r[0] for r in RUNS])
    ap.add_argument("--threads", type=int, default=None,
                    help="threads per stream for nucseg-rt (default: the engine's)")
    ap.add_argument("--repeat", type=int, default=1, help="keep the fastest of this many runs")
    ap.add_argument("--no-cellpose", action="store_true", help="skip Cellpose (no torch needed "
                    "with --weights bundled when models/nuclei_3d.onnx is used as is)")
    ap.add_argument("--peak-gflops", type=float, default=None,
                    help="the CPU's peak GFLOP/s for the share column (state how you got it)")
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args(argv)
    from nucseg_rt.eval.metrics import average_precision

    def ap50(ref, masks) -> float:
        return float(np.ravel(average_precision(ref, masks, thresholds=(0.5,))[0])[0])

    results = {"machine": f"{platform.node()} {platform.processor() or platform.machine()}, "
                          f"{os.cpu_count()} cores", "date": time.strftime("%Y-%m-%d"),
               "weights": args.weights, "peak_gflops": args.peak_gflops, "cases": {}}
    runs = [r for r in RUNS if r[0] in args.runs]
    if not _bf16_here():
        print("note: no native bf16 on this CPU (or no OpenVINO): bf16 runs skipped")
        runs = [r for r in runs if r[2] != "bf16"]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if args.no_cellpose and args.weights == "bundled":
            cp_file, onnx_path, nbase = None, REPO / "models" / "nuclei_3d.onnx", None
        else:
            cp_file, onnx_path, nbase = vc.prepare_weights(args.weights, tmp)
        int8_path = (vc.int8_model(args.weights, onnx_path, tmp)
                     if any(r[2] == "int8" for r in runs) else None)
        gflop_px = vc._flops_per_pixel(nbase) / 1e9 if nbase is not None else None
        for case in args.cases:
            img, labels, aniso = make_case(case)
            np.save(tmp / "img.npy", img)
            rows, masks = {}, {}
            for label, backend, precision in runs:
                path = int8_path if precision == "int8" else onnx_path
                out = tmp / f"{label.replace(' ', '_')}.npy"
                rows[label] = vc.best_of(args.repeat, run_backend, tmp / "img.npy", aniso, path,
                                         out, backend, precision, args.threads)
                masks[label] = np.load(out)
            if not args.no_cellpose:
                rows["Cellpose"] = vc.best_of(args.repeat, vc.run_cellpose, tmp / "img.npy",
                                              aniso, cp_file, nbase, tmp / "cp.npy")
                masks["Cellpose"] = np.load(tmp / "cp.npy")
            ref = masks.get("ORT fp32")
            base = rows.get("Cellpose", rows.get("ORT fp32"))
            print(f"\n== {case}: volume {tuple(img.shape)} anisotropy {aniso}; ratios: "
                  f"{'Cellpose' if 'Cellpose' in rows else 'ORT fp32'} total / this total ==")
            print(f"{'run':9s} {'network':>8s} {'dynamics':>8s} {'total':>8s} {'ratio':>6s} "
                  f"{'peak RSS':>9s} {'GFLOP/s':>8s} {'share':>6s} {'AP50 vs ORT fp32':>16s}")
            for label, r in rows.items():
                gf = (r["pixels"] * gflop_px / r["network"]) if gflop_px and "pixels" in r else None
                share = gf / args.peak_gflops if gf and args.peak_gflops else None
                r.update(ratio=base["total"] / r["total"], gflops=gf, share_of_peak=share,
                         ap50_vs_ort_fp32=ap50(ref, masks[label]) if ref is not None else None,
                         ap50_vs_truth=ap50(labels, masks[label]))
                agree = r["ap50_vs_ort_fp32"]
                cells = ("-" if gf is None else f"{gf:.1f}", "-" if share is None else f"{share:.0%}",
                         "-" if agree is None else f"{agree:.3f}")
                print(f"{label:9s} {r['network']:8.2f} {r['dynamics']:8.2f} {r['total']:8.2f} "
                      f"{r['ratio']:5.2f}x {r['rss']:7.0f}MB {cells[0]:>8s} {cells[1]:>6s} "
                      f"{cells[2]:>16s}")
            results["cases"][case] = dict(shape=list(img.shape), anisotropy=aniso, runs=rows)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return results


if __name__ == "__main__":
    main()
