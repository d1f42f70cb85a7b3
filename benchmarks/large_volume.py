"""Blockwise segmentation: peak memory independent of the volume size, vs Cellpose 3.1, and dask.

Each run is a child process (spawned, so its peak RSS is its own; read from VmHWM, as
``vs_cellpose.py`` does), one after the other in this one invocation:

1. nucseg-rt blockwise on a synthetic volume V and on one 8x larger (8V), both written as TIFF
   and read lazily, same block size: the ratio of the peaks must stay <= 1.25.
2. Cellpose 3.1 (same weights, ``eval(do_3D=True)``) on 8V, the largest volume run here:
   our blockwise peak / Cellpose's peak; nucseg-rt whole-volume on 8V for reference.
3. Throughput (voxels/s) of the blocks of V on a dask LocalCluster with 1 and 2 workers
   (cluster start-up not counted).

    python benchmarks/large_volume.py                 # defaults below, ~6 min on 2 cores
    python benchmarks/large_volume.py --no-cellpose   # skip the Cellpose run

Needs the test extra (cellpose==3.1.1.2, torch, zarr, dask, distributed). Not part of the tests.
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
from vs_cellpose import _rss_mb, in_child, run_cellpose  # noqa: E402

ANISOTROPY = 1.0
DIAMETER = 30.0


def make_tiff(shape_iso, seed, path: Path, npy: Path | None = None) -> dict:
    """Synthetic nuclei volume (nucseg_rt.eval.synth) written as an uncompressed TIFF."""
    import tifffile

    from nucseg_rt.eval.synth import make_volume

    img, _, meta = make_volume(shape_iso, anisotropy=ANISOTROPY, seed=seed, diameter_mean=30.0,
                               density=0.3)
    tifffile.imwrite(path, img, imagej=True, metadata={"axes": "ZYX"})
    if npy is not None:
        np.save(npy, img)
    return {"shape": list(img.shape), "n_nuclei": int(meta["n_nuclei"])}


def run_blockwise(src, out, block, scheduler=None, workers=None) -> dict:
    """nucseg-rt blockwise on ``src`` (lazy TIFF) -> ``out``; seconds, peak RSS, nuclei."""
    from nucseg_rt import Segmenter
    from nucseg_rt.blockwise.run import LargeSettings, segment_blockwise

    base = _rss_mb()
    seg = Segmenter("nuclei_3d", device="cpu")
    settings = LargeSettings(scheduler=scheduler, workers=workers)
    options = dict(anisotropy=ANISOTROPY, diameter=DIAMETER)  # typed keywords of segment_blockwise
    if scheduler is None:
        t = time.perf_counter()
        res = segment_blockwise(src, out, seg, **options, settings=settings,
                                block_size=block)
        seconds = time.perf_counter() - t
    else:
        from nucseg_rt.blockwise.dask import open_client

        with open_client(scheduler, workers=workers) as client:
            t = time.perf_counter()
            res = segment_blockwise(src, out, seg, **options, settings=settings,
                                    block_size=block, client=client)
            seconds = time.perf_counter() - t
    return dict(seconds=seconds, rss=_rss_mb(), rss_base=base, n=res.n_nuclei,
                blocks=res.n_blocks, voxels=int(np.prod(res.shape)))


def run_whole(npy, out_npy) -> dict:
    from nucseg_rt import Segmenter

    img = np.load(npy)
    base = _rss_mb()
    seg = Segmenter("nuclei_3d", device="cpu")
    t = time.perf_counter()
    masks = seg.segment(img, anisotropy=ANISOTROPY, diameter=DIAMETER).masks
    seconds = time.perf_counter() - t
    np.save(out_npy, masks)
    return dict(seconds=seconds, rss=_rss_mb(), rss_base=base, n=int(masks.max()))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--small", type=int, nargs=3, default=[32, 192, 192], metavar=("Z", "Y", "X"))
    ap.add_argument("--large", type=int, nargs=3, default=[32, 543, 543], metavar=("Z", "Y", "X"),
                    help="8x the voxels of --small (default 32x543x543 = 7.99x)")
    ap.add_argument("--block", default="32,64,64", help="core block size Z,Y,X")
    ap.add_argument("--no-cellpose", action="store_true")
    ap.add_argument("--no-dask", action="store_true")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    from nucseg_rt.blockwise.blocks import parse_block_size
    from nucseg_rt.eval.metrics import average_precision

    block = parse_block_size(args.block)
    res = {"machine": f"{platform.node()} {platform.processor() or platform.machine()}, "
                      f"{os.cpu_count()} cores", "date": time.strftime("%Y-%m-%d"),
           "block": list(block), "anisotropy": ANISOTROPY, "diameter": DIAMETER}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        small, big = tmp / "small.tif", tmp / "large.tif"
        res["small"] = in_child(make_tiff, tuple(args.small), 1, small)
        res["large"] = in_child(make_tiff, tuple(args.large), 2, big, tmp / "large.npy")
        print(f"V  {res['small']}\n8V {res['large']}  (x{np.prod(args.large) / np.prod(args.small):.2f})")
        bw_small = in_child(run_blockwise, small, tmp / "small_masks.tif", block)
        bw_large = in_child(run_blockwise, big, tmp / "large_masks.tif", block)
        res["blockwise"] = {"small": bw_small, "large": bw_large,
                            "rss_ratio": bw_large["rss"] / bw_small["rss"]}
        for name, r in (("V", bw_small), ("8V", bw_large)):
            print(f"blockwise {name:3s}: {r['blocks']:3d} blocks {r['seconds']:7.1f} s "
                  f"peak {r['rss']:6.0f} MB  ({r['voxels'] / r['seconds'] / 1e3:.0f} kvoxel/s, "
                  f"{r['n']} nuclei)")
        print(f"peak 8V / peak V = {res['blockwise']['rss_ratio']:.3f} (limit 1.25)")
        import tifffile

        blocks = tifffile.imread(tmp / "large_masks.tif")
        whole = in_child(run_whole, tmp / "large.npy", tmp / "whole.npy")
        ap50 = float(average_precision(np.load(tmp / "whole.npy"), blocks, thresholds=(0.5,))[0][0])
        res["whole_large"] = {**whole, "ap50_blockwise_vs_whole": ap50}
        print(f"whole-volume nucseg-rt on 8V: {whole['seconds']:.1f} s peak {whole['rss']:.0f} MB; "
              f"AP@0.5 blockwise vs whole {ap50:.3f}")
        if not args.no_cellpose:
            import torch

            from nucseg_rt_export.unet import nbase_from_state_dict

            cp_file = REPO / "models" / "nuclei_3d.pth"
            nbase = nbase_from_state_dict(torch.load(cp_file, weights_only=True))
            cp = in_child(run_cellpose, tmp / "large.npy", ANISOTROPY, cp_file, nbase,
                          tmp / "cp.npy")
            res["cellpose_large"] = {**cp, "ratio_blockwise_to_cellpose": bw_large["rss"] / cp["rss"]}
            print(f"Cellpose 3.1 on 8V: {cp['total']:.1f} s peak {cp['rss']:.0f} MB; "
                  f"blockwise peak / Cellpose peak = {bw_large['rss'] / cp['rss']:.3f}")
        if not args.no_dask:
            res["dask"] = {}
            for workers in (1, 2):
                r = in_child(run_blockwise, small, tmp / f"dask{workers}.ome.zarr", block,
                             "local", workers)
                res["dask"][workers] = {**r, "voxels_per_s": r["voxels"] / r["seconds"]}
                print(f"dask LocalCluster {workers} worker(s) on V: {r['seconds']:.1f} s, "
                      f"{r['voxels'] / r['seconds'] / 1e3:.0f} kvoxel/s")
    if args.json:
        args.json.write_text(json.dumps(res, indent=1))
    return res


if __name__ == "__main__":
    main()
