"""3D dynamics: nucseg-rt's "stable" and "cellpose" methods vs Cellpose 3.1 (issue 7).

For synthetic label volumes it makes Cellpose's own flows (``masks_to_flows`` x 5, cellprob
+10 / -10) and variants with Gaussian noise and smoothing, plus flows read from files (e.g. the
network's), then runs Cellpose 3.1's ``dynamics.compute_masks(do_3D=True)`` and
``nucseg_rt.masks.dynamics.compute_masks`` with both methods one after the other on the same input.
It prints a markdown table: AP@0.5 / AP@0.75 against the true labels, AP@0.5 of the cellpose
method against Cellpose, seconds per run and the speed-up over Cellpose; and, first, the
diagnosis of issue 7 (step length, pixels oscillating at the end, what more steps or half
steps change).

    python benchmarks/dynamics_methods.py [--threads 1] [--quick] [--flows run.npz ...]

A flows file is an ``.npz`` with ``dP`` (3, Z, Y, X) float32 at network scale (x5),
``cellprob`` (Z, Y, X) and optionally ``labels`` (Z, Y, X) int (true labels for AP).
Needs the test extras (cellpose 3.1, torch, scipy). Same thread count for both sides; torch's
count is re-set before every Cellpose call because numba's OpenMP layer changes the calling
thread's OpenMP setting, which otherwise slows torch's small ops many times over.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the tests' seeded synthetic labels


def _volumes(quick: bool):
    """(name, labels) pairs: touching ellipsoids and the project's synthetic nuclei."""
    from helpers import random_ellipsoids
    from nucseg_rt.eval.synth import make_volume

    yield "ellipsoids, 60 in 32x128x128", random_ellipsoids((32, 128, 128), 60, seed=1, radius=(5, 11))
    if not quick:
        yield "ellipsoids, 250 in 64x256x256", random_ellipsoids((64, 256, 256), 250, seed=2, radius=(5, 11))
    for aniso, shape in ((1.0, (64, 192, 192)), (4.0, (96, 192, 192)), (11.5, (138, 192, 192))):
        if quick and aniso != 4.0:
            continue
        lab = make_volume(shape, anisotropy=aniso, seed=10_000 + int(aniso * 10))[1]
        yield f"synth aniso {aniso:g}, {'x'.join(map(str, lab.shape))}", lab


def _flow_variants(dP, quick: bool):
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(0)
    noisy = (dP + rng.normal(0.0, 2.5, dP.shape)).astype(np.float32)
    yield "ideal", dP
    yield "noise sd 2.5", noisy
    if not quick:
        yield "smoothed sd 1", np.stack([gaussian_filter(c, 1.0) for c in dP]).astype(np.float32)
        yield "noise + smoothed", np.stack([gaussian_filter(c, 1.0) for c in noisy]).astype(np.float32)


def _timed(fn, *args, threads=1, **kwargs):
    """(result, seconds): CPU time on one thread (robust on a shared machine), else wall clock."""
    t0, c0 = time.perf_counter(), time.process_time()
    out = fn(*args, **kwargs)
    return out, (time.process_time() - c0) if threads == 1 else (time.perf_counter() - t0)


def _run_all(dP, cellprob, threads):
    import torch
    from cellpose import dynamics as cp_dynamics

    from nucseg_rt.masks.dynamics import compute_masks

    torch.set_num_threads(threads)
    res = {"Cellpose": _timed(cp_dynamics.compute_masks, dP, cellprob, do_3D=True, min_size=15,
                              threads=threads)}
    for method in ("cellpose", "stable"):
        res[method] = _timed(compute_masks, dP, cellprob, method=method, min_size=15, threads=threads)
    return res


def _row(name, flows, labels, res):
    from nucseg_rt.eval.metrics import average_precision

    def ap(masks):
        return "- / -" if labels is None else "{:.3f} / {:.3f}".format(*average_precision(labels, masks, [0.5, 0.75])[0])

    ref, t_ref = res["Cellpose"]
    parity = average_precision(ref, res["cellpose"][0], 0.5)[0][0]
    cells = [name, flows, ap(ref), f"{t_ref:.2f}", ap(res["cellpose"][0]), f"{parity:.3f}",
             f"{res['cellpose'][1]:.2f}", ap(res["stable"][0]), f"{res['stable'][1]:.2f}",
             f"{t_ref / res['cellpose'][1]:.1f}x / {t_ref / res['stable'][1]:.1f}x",
             f"{res['stable'][1] / res['cellpose'][1]:.2f}"]
    return "| " + " | ".join(cells) + " |"


HEADER = ("| volume | flows | Cellpose 3.1 AP@0.5 / @0.75 | s | nucseg cellpose AP@0.5 / @0.75 "
          "| AP@0.5 vs Cellpose | s | nucseg stable AP@0.5 / @0.75 | s | speed-up vs Cellpose "
          "(cellpose / stable) | stable / cellpose time |\n" + "|---" * 11 + "|")


def diagnose(labels, dP, cellprob, threads):
    """Issue 7's cause on one volume: step length, oscillation at the end, more or half steps."""
    import torch
    from cellpose import dynamics as cp_dynamics

    from nucseg_rt.masks import dynamics
    from nucseg_rt.eval.metrics import average_precision

    active = cellprob > 0
    idx = np.flatnonzero(active)
    step = np.linalg.norm(dP[:, active] / 5.0, axis=0)
    print(f"- step length |dP/5| inside nuclei: median {np.median(step):.2f} px, max {step.max():.2f} px "
          "(2D Cellpose: 1 px)")
    for method in ("cellpose", "stable"):
        d200 = dynamics._follow(dP, active, idx, 200, method)
        d201 = dynamics._follow(dP, active, idx, 201, method)
        moved = np.abs(np.stack(np.unravel_index(d200, active.shape)) - np.stack(np.unravel_index(d201, active.shape)))
        print(f"- {method}: pixels whose end voxel changes between step 200 and 201: {np.mean(moved.max(0) > 0):.1%}"
              f" (by >= 2 voxels: {np.mean(moved.max(0) >= 2):.1%})")
    for label, kwargs, flows in (("niter 400", {"niter": 400}, dP), ("flows halved", {}, dP * np.float32(0.5))):
        torch.set_num_threads(threads)
        m = cp_dynamics.compute_masks(flows, cellprob, do_3D=True, min_size=15, **kwargs)
        a = average_precision(labels, m, [0.5, 0.75])[0]
        print(f"- Cellpose 3.1 with {label}: AP@0.5 {a[0]:.3f}, AP@0.75 {a[1]:.3f}")


def _warm_up(compute_masks, cp_dynamics) -> None:
    """Compile (or load from cache) every numba kernel, postprocessing included, before timing."""
    from helpers import random_ellipsoids

    lab = random_ellipsoids((12, 40, 40), 6, seed=0, radius=(5, 8))
    dP = (cp_dynamics.masks_to_flows(lab) * 5.0).astype(np.float32)
    for method in ("stable", "cellpose"):
        compute_masks(dP, np.where(lab > 0, 10.0, -10.0).astype(np.float32), method=method)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1, help="numba and torch threads (default 1)")
    ap.add_argument("--quick", action="store_true", help="two volumes, two flow variants")
    ap.add_argument("--flows", type=Path, action="append", default=[], help=".npz with dP, cellprob[, labels]")
    args = ap.parse_args(argv)

    import numba
    import torch
    from cellpose import dynamics as cp_dynamics

    from nucseg_rt.masks.dynamics import compute_masks

    numba.set_num_threads(args.threads)
    torch.set_num_threads(args.threads)
    _warm_up(compute_masks, cp_dynamics)
    print(f"numba {numba.__version__} ({numba.threading_layer()} layer), torch {torch.__version__}, "
          f"{args.threads} thread(s) each\n")
    rows, first = [], True
    for name, labels in _volumes(args.quick):
        dP = (cp_dynamics.masks_to_flows(labels) * 5.0).astype(np.float32)
        cellprob = np.where(labels > 0, 10.0, -10.0).astype(np.float32)
        if first:
            print(f"## Diagnosis on {name}, ideal flows\n")
            diagnose(labels, dP, cellprob, args.threads)
            print()
            first = False
        for flows_name, flows in _flow_variants(dP, args.quick):
            rows.append(_row(name, flows_name, labels, _run_all(flows, cellprob, args.threads)))
            print(rows[-1], file=sys.stderr, flush=True)  # progress
    for path in args.flows:
        with np.load(path) as f:
            labels = f["labels"] if "labels" in f else None
            rows.append(_row(path.stem, "file", labels, _run_all(f["dP"].astype(np.float32), f["cellprob"], args.threads)))
    clock = "CPU seconds, 1 thread" if args.threads == 1 else f"wall seconds, {args.threads} threads"
    print(f"## AP and time per method ({clock}; Cellpose includes its fill_holes, as ours)\n")
    print(HEADER)
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
