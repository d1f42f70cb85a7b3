"""Where OpenVINO bf16 starts to pay: ``--backend auto``'s size rule (issue 23).

OpenVINO's start-up in a new process (its import, compiling the model, the first call of each
tile shape) is a fixed cost; bf16 arithmetic then runs the network faster than onnxruntime fp32.
So a small volume in a fresh process can be slower on OpenVINO, a large one faster. This script
runs ``nucseg-rt segment`` as a new process per run (the worst case for OpenVINO: nothing
compiled yet) on synthetic volumes of increasing size, alternating

    --backend onnxruntime --precision fp32      (today's default before issue 23)
    --backend openvino --precision bf16         (auto's candidate, without the size rule)
    --backend auto                              (with the rule, AUTO_FLOOR)

and prints each size's network pixels (3 views x the network grid at the model's diameter),
the median wall time of each, the ratios, and the smallest floor above which every measured
size ran faster on OpenVINO than on onnxruntime (the rule must never be slower than
onnxruntime fp32, so the floor is set at or above it).

    python benchmarks/auto_floor.py                 # the default sizes, 3 runs each
    python benchmarks/auto_floor.py --repeats 1 --sizes 16x64x64 48x128x128

Needs the openvino extra and a CPU with native bf16. Not part of the test suite; run it on an
idle machine.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import tifffile

DEFAULT_SIZES = ("16x64x64", "24x96x96", "32x128x128", "48x128x128", "48x192x192",
                 "64x192x192", "64x256x256", "96x256x256")
RUNS = (("onnxruntime fp32", ["--backend", "onnxruntime", "--precision", "fp32"]),
        ("openvino bf16", ["--backend", "openvino", "--precision", "bf16"]),
        ("auto", ["--backend", "auto"]))


def _volume(shape, diameter: float, seed: int = 0) -> np.ndarray:
    from nucseg_rt.eval.synth import make_volume

    return make_volume(shape, diameter_mean=diameter, seed=seed)[0]


def _run(path: Path, out: Path, diameter: float, extra: list[str]) -> float:
    cmd = [sys.executable, "-m", "nucseg_rt.cli", "segment", str(path), "--model", "nuclei_3d",
           "--anisotropy", "1", "--diameter", str(diameter), "--out-dir", str(out),
           "--overwrite", "--quiet", *extra]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{proc.stderr[-2000:]}")
    return seconds


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", nargs="+", default=list(DEFAULT_SIZES), metavar="ZxYxX")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)

    from nucseg_rt import Segmenter
    from nucseg_rt.network._openvino import cpu_supports_bf16
    from nucseg_rt.network.engine import AUTO_FLOOR

    if not cpu_supports_bf16():
        raise SystemExit("this CPU has no native bf16: auto never picks OpenVINO here")
    with Segmenter("nuclei_3d", backend="onnxruntime") as seg:
        diameter = float(seg.diam_mean)  # rescale 1: the network grid is the volume's
    print(f"# {time.strftime('%Y-%m-%d %H:%M')} {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cores; bundled model at its diameter {diameter:g} px, anisotropy 1; "
          f"one new process per run; median of {args.repeats}; AUTO_FLOOR {AUTO_FLOOR:,}")
    print(f"{'volume':>12} {'Mpx':>6} " + " ".join(f"{name:>17}" for name, _ in RUNS)
          + f" {'ORT/OV':>7} {'ORT/auto':>8}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for size in args.sizes:
            shape = tuple(int(s) for s in size.split("x"))
            path = tmp / f"v{size}.tif"
            tifffile.imwrite(path, _volume(shape, diameter))
            pixels = 3 * int(np.prod(shape))
            times = {name: [] for name, _ in RUNS}
            _run(path, tmp / "warm", diameter, RUNS[0][1])  # file cache, numba cache
            for _ in range(args.repeats):
                for name, extra in RUNS:
                    times[name].append(_run(path, tmp / "out", diameter, extra))
            med = {name: statistics.median(v) for name, v in times.items()}
            rows.append((pixels, med))
            print(f"{size:>12} {pixels / 1e6:6.2f} "
                  + " ".join(f"{med[name]:15.2f} s" for name, _ in RUNS)
                  + f" {med['onnxruntime fp32'] / med['openvino bf16']:7.2f}"
                  + f" {med['onnxruntime fp32'] / med['auto']:8.2f}", flush=True)
    slower = [p for p, med in rows if med["openvino bf16"] >= med["onnxruntime fp32"]]
    if not slower:
        print("OpenVINO bf16 was faster at every measured size")
    else:
        above = [p for p, _ in rows if p > max(slower)]
        print(f"OpenVINO bf16 slower up to {max(slower) / 1e6:.2f} Mpx; faster at every measured "
              f"size from {min(above) / 1e6:.2f} Mpx" if above else
              "OpenVINO bf16 was never faster at the measured sizes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
