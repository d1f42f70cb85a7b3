"""How faithful each network engine is to onnxruntime fp32 (issue 23: the rule of ``--backend auto``).

On the held-out real-texture 3D volumes (``nucseg_rt.eval.realtex.HELDOUT_SETTINGS``, built from
BBBC007 only, seeds ``HELDOUT_SEED + k``), each run (backend, precision) segments every volume with
the model's shipped defaults and the true diameter; its masks are scored against the masks of
onnxruntime fp32 (AP@0.5, the agreement) and against the true labels (AP@0.5). The rule
``--backend auto`` follows (``nucseg_rt.network.engine.AUTO_CANDIDATES``): a run may stand in for
fp32 only if its agreement, the mean over the settings, is >= 0.99 (the worst setting is shown).

    python benchmarks/agreement.py --cache ~/.cache/nucseg-rt/packages
    python benchmarks/agreement.py --runs openvino/bf16 --settings aniso1 --n-volumes 1

bf16 runs need the openvino extra and a CPU with native bf16 (skipped with a note otherwise).
Not part of the test suite.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

RUNS = ["onnxruntime/int8", "openvino/fp32", "openvino/bf16", "openvino/int8"]


def _available(backend: str, precision: str) -> str | None:
    """Why this run cannot happen here, or None."""
    if backend != "openvino":
        return None
    try:
        from nucseg_rt.network._openvino import check_openvino_precision
    except ImportError as e:  # pragma: no cover - the extra is missing
        return str(e)
    try:
        check_openvino_precision(precision)
    except Exception as e:  # noqa: BLE001 - the refusal is the note
        return str(e).splitlines()[0]
    return None


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="nuclei_3d")
    ap.add_argument("--runs", nargs="+", default=RUNS, help="backend/precision pairs against onnxruntime/fp32")
    ap.add_argument("--settings", nargs="+", default=None, help="held-out settings (default all; also realtex.LARGE_SETTINGS)")
    ap.add_argument("--n-volumes", type=int, default=2)
    ap.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "nucseg-rt" / "packages")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)

    from evaluate_model import check_settings, realtex_volumes

    check_settings(ap, args.settings)

    from nucseg_rt import Segmenter
    from nucseg_rt.eval import realtex
    from nucseg_rt.eval.metrics import average_precision
    from nucseg_rt_export.real_data import HELDOUT_SOURCES

    def ap50(true, pred) -> float:
        return float(average_precision(true, pred, thresholds=(0.5,))[0][0])

    runs = []
    for r in args.runs:
        backend, _, precision = r.partition("/")
        why = _available(backend, precision)
        if why:
            print(f"skipped {r}: {why}")
        else:
            runs.append((r, backend, precision))
    segs = {"onnxruntime/fp32": Segmenter(args.model, device="cpu", backend="onnxruntime", threads=args.threads)}
    for r, backend, precision in runs:
        segs[r] = Segmenter(args.model, device="cpu", backend=backend, precision=precision, threads=args.threads)
    rows: dict = {}
    settings = args.settings or list(realtex.HELDOUT_SETTINGS)
    try:
        for name, k, img, lab, meta in realtex_volumes(HELDOUT_SOURCES, args.cache, settings, args.n_volumes,
                                                       realtex.HELDOUT_SEED):
            kw = dict(anisotropy=meta["anisotropy"], diameter=meta["diameter"])
            ref = segs["onnxruntime/fp32"].segment(img, **kw).masks
            out = rows.setdefault(name, {}).setdefault("onnxruntime/fp32", {"vs_fp32": [], "vs_truth": []})
            out["vs_fp32"].append(1.0)
            out["vs_truth"].append(ap50(lab, ref))
            for r, _, _ in runs:
                m = segs[r].segment(img, **kw).masks
                out = rows[name].setdefault(r, {"vs_fp32": [], "vs_truth": []})
                out["vs_fp32"].append(ap50(ref, m))
                out["vs_truth"].append(ap50(lab, m))
            print(f"{name} {k}: " + "  ".join(f"{r} {rows[name][r]['vs_fp32'][-1]:.3f}" for r, _, _ in runs),
                  flush=True)
    finally:
        for s in segs.values():
            s.close()
    names = ["onnxruntime/fp32"] + [r for r, _, _ in runs]
    table = {n: {s: {key: float(np.mean(v[key])) for key in v} for s, d in rows.items() for s2, v in d.items()
                 if s2 == n} for n in names}
    print(f"\nmodel {args.model}: AP@0.5 against onnxruntime fp32 masks (and against the true labels), "
          f"held-out real-texture volumes (BBBC007), {args.n_volumes} per setting")
    print(f"{'setting':>10s} " + " ".join(f"{n:>22s}" for n in names))
    for s in settings:
        print(f"{s:>10s} " + " ".join(f"{table[n][s]['vs_fp32']:>12.3f} ({table[n][s]['vs_truth']:.3f})" for n in names))
    overall = {n: {key: float(np.mean([table[n][s][key] for s in settings])) for key in ("vs_fp32", "vs_truth")}
               for n in names}
    worst = {n: float(min(table[n][s]["vs_fp32"] for s in settings)) for n in names}
    print(f"{'mean':>10s} " + " ".join(f"{overall[n]['vs_fp32']:>12.3f} ({overall[n]['vs_truth']:.3f})" for n in names))
    print(f"{'worst':>10s} " + " ".join(f"{worst[n]:>22.3f}" for n in names))
    res = dict(model=args.model, n_volumes=args.n_volumes, settings=table, mean=overall, worst=worst,
               faithful={n: bool(overall[n]["vs_fp32"] >= 0.99) for n in names})
    if args.json:
        args.json.write_text(json.dumps(res, indent=1))
    return res


if __name__ == "__main__":
    main()
