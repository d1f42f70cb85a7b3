"""Blockwise peak memory at a fixed block size: volume V, 8V and 27V (issue 14, item 7).

Makes seeded synthetic nuclei volumes V = 32x192x192, 8V = 64x384x384 and 27V = 96x576x576
(uint16 TIFF in a temporary folder), then segments each with

    nucseg-rt segment FILE --block-size 96 --streams 1 --anisotropy 1 --diameter 17 --out-dir OUT

as a child process, one at a time, and prints the child's peak resident memory (``ru_maxrss``
of that child from ``os.wait4``; it starts from the parent's peak, so everything large is made
and read in other children and this process stays small) for each size, and the ratios 8V/V
and 27V/V. The goal is memory set by the block size, not by the volume: ratios <= 1.1.

A block's own work depends on its shape, and V's blocks are smaller than the others': with a
halo of 25 voxels the largest block read is 32x121x121 in V, 64x146x146 in 8V and 96x146x146 in
27V (the volumes are only 32, 64 and 96 planes deep). So each volume's largest block is also
segmented on its own (whole, same settings) and the run's peak above that is printed: what the
blockwise machinery (bounds, block reads, merge, writer) adds. ``--sizes W,27`` compares volumes
whose largest blocks are equal: W = 96x288x288, the first quarter of 27V (9 blocks, 27V has 36).

A volume with fewer than 3 blocks a side has no block with its whole halo, so its blocks are
smaller and it peaks lower (the growth above is that). ``--v-shape`` picks a V that does hold
such an interior block, so that V, 8V and 27V all have the same largest block and the ratios ask
only what the volume adds: ``--v-shape 144,144,144 --block-size 48`` (3 blocks a side, largest
block 98^3 in all three) with ``--model tiny --tiny-diam-mean 17`` (no zoom at diameter 17, so
27V's 81 M voxels run in minutes).

A first, unrecorded run on a small volume lets numba compile and cache its kernels; the
compiler's ~100 MB would otherwise count in the first measured run only.

The volumes are mosaics of ``make_volume`` pieces of V's size, each with its own seed (8V is
2x2x2 pieces, 27V is 3x3x3), so all three have the same nucleus density and size (diameter 17,
the value passed to ``--diameter``) and nuclei cross every block face; a piece's nuclei are cut
at its faces, which does not matter here.

    python benchmarks/blockwise_memory.py --model tiny     # V and 8V, ~5 min on 2 cores
    python benchmarks/blockwise_memory.py --model tiny --sizes 1,8,27   # ~15 min more
    python benchmarks/blockwise_memory.py --model tiny --sizes W,27     # same block, 4x volume
    python benchmarks/blockwise_memory.py --model tiny --tiny-diam-mean 17 --sizes 1,8,27 \
        --v-shape 144,144,144 --block-size 48                             # V with an interior block
    python benchmarks/blockwise_memory.py                  # bundled model: ~40 min with 8V
    python benchmarks/blockwise_memory.py --streams 0      # the CLI's default streams

``--model tiny`` is the tests' one-convolution network: everything but the network's own
activations is measured, quickly. Needs the test extra (zarr, onnx). Not part of the tests.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

V_SHAPE = (32, 192, 192)
DIAMETER = 17.0


def _vm_hwm_mb(pid: int | str = "self") -> float | None:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        return None
    return None


def make_tiff(factor: int, path: Path, seed: int = 0, v_shape=V_SHAPE) -> dict:
    """A ``factor``**3 mosaic of V-sized ``make_volume`` pieces written as an uncompressed TIFF."""
    import numpy as np
    import tifffile

    from nucseg_rt.eval.synth import make_volume

    shape = tuple(factor * s for s in v_shape)
    img = np.empty(shape, np.uint16)
    n = 0
    for k, ijk in enumerate(np.ndindex(factor, factor, factor)):
        piece, _, meta = make_volume(v_shape, diameter_mean=DIAMETER, seed=seed + 1000 * factor + k)
        img[tuple(slice(i * s, (i + 1) * s) for i, s in zip(ijk, v_shape))] = piece
        n += meta["n_nuclei"]
    tifffile.imwrite(path, img, imagej=True, metadata={"axes": "ZYX"})
    return {"shape": list(shape), "n_nuclei": n}


def make_warmup(path: Path) -> dict:
    """A small volume (one block) for the unrecorded first run."""
    import tifffile

    from nucseg_rt.eval.synth import make_volume

    img, _, meta = make_volume((16, 64, 64), diameter_mean=DIAMETER, seed=7)
    tifffile.imwrite(path, img, imagej=True, metadata={"axes": "ZYX"})
    return {"shape": list(img.shape), "n_nuclei": meta["n_nuclei"]}


def _largest_read(shape, block_size: int) -> list[list[int]]:
    """``[[z0, z1], [y0, y1], [x0, x1]]``: the largest halo'd block of the plan the CLI makes."""
    import numpy as np

    from nucseg_rt.blockwise.blocks import plan_blocks

    plan = plan_blocks(shape, block_size, diameter=DIAMETER, anisotropy=1.0)
    boxes = [plan.read_box(i) for i in range(len(plan))]
    box = boxes[int(np.argmax([np.prod([b - a for a, b in box]) for box in boxes]))]
    return [[int(a), int(b)] for a, b in box]


def crop_tiff(src: Path, box: str, dst: Path) -> dict:
    """Write the block ``box`` ("z0,z1,y0,y1,x0,x1") of ``src`` as a TIFF of its own."""
    import tifffile

    z0, z1, y0, y1, x0, x1 = (int(v) for v in box.split(","))
    tifffile.imwrite(dst, tifffile.imread(src)[z0:z1, y0:y1, x0:x1], imagej=True,
                     metadata={"axes": "ZYX"})
    return {"shape": [z1 - z0, y1 - y0, x1 - x0]}


FACTORS = {"1": 1, "8": 2, "27": 3}


def w_box(v_shape) -> tuple[tuple[int, int], ...]:
    """W: the first quarter of 27V (all its planes, 1.5 V in Y and X; for the default V and
    block 96, 3x3 of 27V's 6x6 block columns), whose largest block is 27V's."""
    vz, vy, vx = v_shape
    return ((0, 3 * vz), (0, 3 * vy // 2), (0, 3 * vx // 2))


def _volume(folder: Path, size: str, v_shape=V_SHAPE) -> tuple[Path, dict]:
    """The TIFF of volume ``size`` ("1", "8", "27" or "W") in ``folder``, made if missing."""
    if size == "W":
        src = folder / "volW.tif"
        box = w_box(v_shape)
        if not src.exists():
            whole, _ = _volume(folder, "27", v_shape)
            _in_child("--_crop", str(whole), ",".join(str(v) for ab in box for v in ab),
                      str(src))
        return src, {"shape": [b - a for a, b in box], "n_nuclei": None}
    src = folder / f"vol{size}V.tif"
    if not src.exists():
        return src, _in_child("--_make", str(FACTORS[size]), str(src), ",".join(map(str, v_shape)))
    return src, {"shape": [FACTORS[size] * s for s in v_shape], "n_nuclei": None}


def run_segment(cli: list[str], src: Path, out_dir: Path, args, count: bool = True,
                blockwise: bool = True) -> dict:
    """``nucseg-rt segment`` on ``src`` in a child process (blockwise, or ``src`` whole); its
    peak RSS and seconds, and the number and hash of its labels (``count``)."""
    cmd = [*cli, "segment", str(src), "--anisotropy", "1", "--diameter", str(DIAMETER),
           "--out-dir", str(out_dir), "--model", args.model, "-q", "--overwrite"]
    if blockwise:
        cmd += ["--block-size", str(args.block_size)]
    if args.streams:
        cmd += ["--streams", str(args.streams)]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)
    polled = 0.0
    while True:  # poll VmHWM too: a check on wait4's value
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        polled = max(polled, _vm_hwm_mb(proc.pid) or 0.0)
        time.sleep(0.05)
    proc.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed with exit code {proc.returncode}")
    counted = _in_child("--_count", str(out_dir / f"{src.stem}_masks.tif")) if count else {}
    return {"peak_mb": usage.ru_maxrss / 1024.0, "polled_mb": polled, "seconds": seconds,
            **counted}


def count_labels(path: Path) -> dict:
    """Number of nuclei and a hash of the label image (to compare runs voxel for voxel)."""
    import hashlib

    import numpy as np
    import tifffile

    labels = tifffile.imread(path)
    return {"nuclei": int(np.unique(labels).size - 1),
            "labels_sha256": hashlib.sha256(labels.astype(np.uint32).tobytes()).hexdigest()}


def _in_child(*argv: str) -> dict:
    """Run this script with ``argv`` in a child and parse the JSON it prints. Large arrays are
    made and read in children only: a child's ``ru_maxrss`` starts from its parent's peak."""
    done = subprocess.run([sys.executable, __file__, *argv], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv[:1])} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="1,8",
                    help="volumes: 1, 8, 27 (multiples of V) and W (a quarter of 27V)")
    ap.add_argument("--block-size", type=int, default=96)
    ap.add_argument("--v-shape", default=",".join(map(str, V_SHAPE)),
                    help="V as Z,Y,X; with at least 3 blocks a side V holds a block with its whole "
                         "halo (an interior block), as 8V and 27V do")
    ap.add_argument("--tiny-diam-mean", type=float, default=30.0,
                    help="diam_mean of --model tiny (17: no zoom at --diameter 17)")
    ap.add_argument("--streams", type=int, default=1, help="0: the CLI's default")
    ap.add_argument("--model", default="nuclei_3d",
                    help="model name or .onnx file; 'tiny': the tests' one-convolution model "
                         "(the network costs nothing, so the rest of the pipeline is measured "
                         "quickly; needs onnx)")
    ap.add_argument("--no-block-alone", action="store_true",
                    help="skip segmenting each volume's largest block on its own")
    ap.add_argument("--keep", type=Path, help="write volumes and labels here and keep them")
    ap.add_argument("--json", type=Path, help="also write the results here")
    ap.add_argument("--_make", nargs=3, metavar=("FACTOR", "PATH", "VSHAPE"), help=argparse.SUPPRESS)
    ap.add_argument("--_count", metavar="PATH", help=argparse.SUPPRESS)
    ap.add_argument("--_warmup", metavar="PATH", help=argparse.SUPPRESS)
    ap.add_argument("--_tiny", nargs=2, metavar=("PATH", "DIAM"), help=argparse.SUPPRESS)
    ap.add_argument("--_crop", nargs=3, metavar=("SRC", "BOX", "DST"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args._make:
        print(json.dumps(make_tiff(int(args._make[0]), Path(args._make[1]),
                                   v_shape=tuple(int(v) for v in args._make[2].split(",")))))
        return
    if args._count:
        print(json.dumps(count_labels(Path(args._count))))
        return
    if args._warmup:
        print(json.dumps(make_warmup(Path(args._warmup))))
        return
    if args._tiny:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
        from helpers import make_tiny_onnx

        print(json.dumps({"path": str(make_tiny_onnx(Path(args._tiny[0]),
                                                     diam_mean=float(args._tiny[1])))}))
        return
    if args._crop:
        print(json.dumps(crop_tiff(Path(args._crop[0]), args._crop[1], Path(args._crop[2]))))
        return
    try:
        v_shape = tuple(int(v) for v in args.v_shape.split(","))
    except ValueError:
        v_shape = ()
    if len(v_shape) != 3 or min(v_shape) < 16:
        raise SystemExit(f"--v-shape must be Z,Y,X (whole numbers >= 16), got {args.v_shape!r}")
    sizes = [s.strip() for s in args.sizes.split(",")]
    if not sizes or any(s not in FACTORS and s != "W" for s in sizes):
        raise SystemExit(f"--sizes must be from 1, 8, 27, W, got {args.sizes!r}")
    exe = Path(sys.executable).with_name("nucseg-rt")
    cli = [str(exe)] if exe.exists() else [shutil.which("nucseg-rt") or "nucseg-rt"]
    folder = args.keep or Path(tempfile.mkdtemp(prefix="blockmem_"))
    folder.mkdir(parents=True, exist_ok=True)
    if args.model == "tiny":
        args.model = _in_child("--_tiny", str(folder / "tiny.onnx"), str(args.tiny_diam_mean))["path"]
    results = {}
    try:
        # numba compiles the kernels on a first run and caches them next to the sources; the
        # compiler's memory (~100 MB) would count in the first measured run only
        warm = folder / "warmup.tif"
        _in_child("--_warmup", str(warm))
        (folder / "warmup_out").mkdir(exist_ok=True)
        run_segment(cli, warm, folder / "warmup_out", args, count=False)
        for size in sizes:
            src, info = _volume(folder, size, v_shape)
            name = size if size == "W" else f"{size}V"
            out_dir = folder / f"out{name}"
            shutil.rmtree(out_dir, ignore_errors=True)
            out_dir.mkdir()
            res = run_segment(cli, src, out_dir, args)
            box = _largest_read(info["shape"], args.block_size)
            res.update(info, largest_block_read=[b - a for a, b in box])
            if not args.no_block_alone:
                block = folder / f"block{name}.tif"
                _in_child("--_crop", str(src), ",".join(str(v) for ab in box for v in ab),
                          str(block))
                alone = run_segment(cli, block, out_dir, args, count=False, blockwise=False)
                res["block_alone_peak_mb"] = alone["peak_mb"]
            results[name] = res
            print(f"{name:>3} {'x'.join(map(str, info['shape'])):>12}: peak {res['peak_mb']:7.1f} MB "
                  f"(polled VmHWM {res['polled_mb']:.1f}), {res['seconds']:6.1f} s, "
                  f"{res['nuclei']} nuclei, labels sha256 {res['labels_sha256'][:12]}; largest "
                  f"block read {'x'.join(map(str, res['largest_block_read']))}, alone: "
                  f"{res.get('block_alone_peak_mb', float('nan')):.1f} MB", flush=True)
    finally:
        if args.keep is None:
            shutil.rmtree(folder, ignore_errors=True)
    parent = _vm_hwm_mb() or 0.0
    if "1V" in results:
        for key in ("8V", "27V"):
            if key in results:
                ratio = results[key]["peak_mb"] / results["1V"]["peak_mb"]
                results[key]["ratio_to_V"] = ratio
                print(f"{key}/V peak ratio: {ratio:.3f} (goal <= 1.1)")
    if "W" in results and "27V" in results:
        ratio = results["27V"]["peak_mb"] / results["W"]["peak_mb"]
        results["27V"]["ratio_to_W"] = ratio
        print(f"27V/W peak ratio (same largest block, 4x the blocks): {ratio:.3f}")
    for key, res in results.items():
        if "block_alone_peak_mb" in res:
            print(f"{key}: peak above its largest block segmented alone: "
                  f"{res['peak_mb'] - res['block_alone_peak_mb']:+.1f} MB")
    print(f"this process's own peak: {parent:.1f} MB (must be below the children's)")
    if args.json:
        meta = dict(machine=platform.processor() or platform.machine(), date=time.strftime("%Y-%m-%d"),
                    block_size=args.block_size, v_shape=list(v_shape), streams=args.streams or "default",
                    model=args.model, tiny_diam_mean=args.tiny_diam_mean,
                    parent_peak_mb=parent)
        args.json.write_text(json.dumps({"meta": meta, "results": results}, indent=2))


if __name__ == "__main__":
    main()
