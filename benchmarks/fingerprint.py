"""Masks of fixed runs, as sha256 digests: the proof that a refactoring changed no output.

    python benchmarks/fingerprint.py > before.txt      # on the old commit
    python benchmarks/fingerprint.py > after.txt       # on the new one; diff the two

Runs the README command (the shipped example, bundled model) through the CLI, the same volume
blockwise (``--block-size 48``), in stitch mode, with ``--save-flows``, and a Python-API run on
a seeded synthetic volume (stable and cellpose dynamics, int8). Prints one line per output.
Every run is pinned to onnxruntime (exact fp32, deterministic): ``--backend auto`` may pick
OpenVINO bf16 where the CPU has it, which is faithful but not bit-identical.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import tifffile

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "embryo_small.tif"
RUNS = {
    "readme": ["--anisotropy", "4", "--diameter", "30"],
    "blockwise48": ["--anisotropy", "4", "--diameter", "30", "--block-size", "48"],
    "stitch": ["--anisotropy", "4", "--diameter", "30", "--stitch-threshold", "0.25"],
    "flows": ["--anisotropy", "4", "--diameter", "30", "--save-flows", "--dynamics", "cellpose"],
}


def digest(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a).tobytes() + str((a.dtype, a.shape)).encode()).hexdigest()[:16]


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        for name, args in RUNS.items():
            out = Path(tmp) / name
            subprocess.run([sys.executable, "-m", "nucseg_rt.cli", "segment", str(EXAMPLE), "--model", "nuclei_3d",
                            "--out-dir", str(out), "--quiet", "--backend", "onnxruntime", *args], check=True, capture_output=True)
            m = tifffile.imread(out / "embryo_small_masks.tif")
            print(f"cli {name:12s} masks {digest(m)}  n={int(m.max())}")
            if (out / "embryo_small_flows.npz").exists():
                with np.load(out / "embryo_small_flows.npz") as f:
                    for k in sorted(f.files):
                        print(f"cli {name:12s} {k:5s} {digest(f[k])}")
    from nucseg_rt import Segmenter
    from nucseg_rt.eval.synth import make_volume

    img, _, _ = make_volume((48, 96, 112), anisotropy=4.0, seed=7, diameter_mean=24.0)
    for precision in ("fp32", "int8"):
        with Segmenter("nuclei_3d", device="cpu", precision=precision, backend="onnxruntime") as seg:
            f = seg.predict_flows(img, anisotropy=4.0, diameter=24.0)
            print(f"api {precision} flows {digest(f.flows)} cellprob {digest(f.cellprob)}")
            for method in ("stable", "cellpose"):
                m = seg.masks_from_flows(f, method=method)
                print(f"api {precision} {method:8s} masks {digest(m)}  n={int(m.max())}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
