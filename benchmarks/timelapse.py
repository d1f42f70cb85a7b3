"""Time-lapses (issue 22): peak memory flat in the number of frames, and how often ``--link``
keeps a nucleus' label.

1. Peak RSS. A seeded time-lapse of ``--frames-small`` (4) and ``--frames-large`` (32) frames of
   the same frame size (4 simulated frames, repeated) is written as an ImageJ TZYX TIFF (in a
   child process), then each is
   segmented by

       nucseg-rt segment FILE --anisotropy A --diameter D --link --streams 1 --out-dir OUT

   in its own child process, one run each; the child's peak resident memory (``ru_maxrss`` from
   ``os.wait4``) is printed for both and their ratio (the goal: about 1, memory set by one frame).
2. ``--link`` accuracy on moving real-texture nuclei (``nucseg_rt.eval.realtex.make_timelapse``,
   nuclei from seeded 2D images, or BBBC007 with ``--bbbc007-cache FOLDER``): the fraction of
   true continuations (the same true nucleus in frames t and t+1, matched to a predicted mask at
   IoU >= 0.5 in both) whose predicted masks carry the same label. Run through
   ``Segmenter.segment_frames(..., link=True)``.

    python benchmarks/timelapse.py                      # bundled model, ~10 min on 2 cores
    python benchmarks/timelapse.py --model tiny         # the tests' tiny network: memory only

Times are not reported (the machine may be shared). Not part of the tests.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from datetime import date
from pathlib import Path

FRAME = (16, 160, 160)  # Z, Y, X of one frame for the memory runs
DIAMETER, ANISOTROPY = 17.0, 2.0


def _in_child(*args) -> dict:
    """Run this script with ``args`` in a child process; its JSON answer."""
    out = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True,
                         check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _bank(cache: str | None):
    from nucseg_rt.eval import realtex

    if cache:
        from nucseg_rt_export.real_data import load_source

        return realtex.nucleus_bank(load_source("bbbc007", cache)), "BBBC007"
    return realtex.nucleus_bank(realtex.seeded_images(0, 4, (160, 200))), "seeded 2D images"


def make_movie(path: str, n_frames: int, cache: str | None) -> dict:
    """A ``n_frames`` time-lapse of FRAME-sized frames as a calibrated ImageJ TZYX TIFF."""
    import numpy as np
    import tifffile

    from nucseg_rt.eval import realtex

    bank, _ = _bank(cache)
    spec = realtex.VolumeSpec((FRAME[0] * int(ANISOTROPY), *FRAME[1:]), DIAMETER,
                              anisotropy=ANISOTROPY)
    images, _, _ = realtex.make_timelapse(bank, spec, n_frames=min(n_frames, 4), seed=1)
    movie = np.concatenate([images] * -(-n_frames // len(images)))[:n_frames]
    tifffile.imwrite(path, movie, imagej=True, resolution=(1.0, 1.0),
                     metadata={"axes": "TZYX", "spacing": ANISOTROPY, "unit": "um"})
    return {"shape": list(movie.shape)}


def peak_rss_mb(movie: Path, model: str, out: Path) -> float:
    """Peak RSS of ``nucseg-rt segment movie`` run as a child process, MB."""
    cmd = [sys.executable, "-m", "nucseg_rt.cli", "segment", str(movie), "--model", model,
           "--diameter", str(DIAMETER), "--link", "--streams", "1", "--out-dir", str(out),
           "--quiet", "--overwrite"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    err = proc.stderr.read().decode()
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"segment failed ({proc.returncode}): {err}")
    return usage.ru_maxrss / 1024.0


def _matches(truth, pred):
    """{true id: predicted label} for pairs with IoU >= 0.5 (one partner each at that IoU)."""
    import numpy as np

    t, p = truth.ravel().astype(np.int64), pred.ravel().astype(np.int64)
    both = (t > 0) & (p > 0)
    n_p = int(p.max(initial=0)) + 1
    code, inter = np.unique(t[both] * n_p + p[both], return_counts=True)
    ti, pi = code // n_p, code % n_p
    at = np.bincount(t, minlength=int(t.max(initial=0)) + 1)
    ap = np.bincount(p, minlength=n_p)
    iou = inter / (at[ti] + ap[pi] - inter)
    return {int(a): int(b) for a, b, v in zip(ti, pi, iou) if v >= 0.5}


def link_accuracy(model: str, cache: str | None, n_frames: int, seed: int,
                  step: float = 1.5) -> dict:
    """Fraction of true continuations that keep their predicted label, on a synthetic movie."""
    import numpy as np

    from nucseg_rt import Segmenter
    from nucseg_rt.eval import realtex

    bank, source = _bank(cache)
    spec = realtex.VolumeSpec((48, 192, 192), DIAMETER, anisotropy=ANISOTROPY)
    images, tracks, meta = realtex.make_timelapse(bank, spec, n_frames=n_frames, seed=seed,
                                                  step=step)
    with Segmenter(model) as seg:
        pred = dict(seg.segment_frames(images, time_axis=0, link=True,
                                       anisotropy=meta["anisotropy"], diameter=meta["diameter"]))
    matched = [_matches(tracks[t], pred[t]) for t in range(n_frames)]
    kept = total = 0
    for t in range(n_frames - 1):
        for tid in set(matched[t]) & set(matched[t + 1]):
            total += 1
            kept += matched[t][tid] == matched[t + 1][tid]
    return {"source": source, "frames": n_frames, "shape": list(images.shape[1:]),
            "tracks": int(meta["n_tracks"]), "continuations": total, "kept": kept,
            "fraction": kept / total if total else float("nan"),
            "matched_per_frame": float(np.mean([len(m) for m in matched]))}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="nuclei_3d",
                    help="model name or .onnx; 'tiny': the tests' one-convolution network")
    ap.add_argument("--frames-small", type=int, default=4)
    ap.add_argument("--frames-large", type=int, default=32)
    ap.add_argument("--link-frames", type=int, default=8)
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--step", type=float, default=1.5,
                    help="sd of a nucleus' move per frame and axis, px (half in Z)")
    ap.add_argument("--skip-memory", action="store_true", help="only the --link accuracy")
    ap.add_argument("--bbbc007-cache", default=None, help="folder of the BBBC007 download")
    ap.add_argument("--_movie", nargs=2, help=argparse.SUPPRESS)
    ap.add_argument("--_tiny", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args._movie:
        print(json.dumps(make_movie(args._movie[0], int(args._movie[1]), args.bbbc007_cache)))
        return
    if args._tiny:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
        from helpers import make_tiny_onnx

        print(json.dumps({"path": str(make_tiny_onnx(Path(args._tiny), diam_mean=DIAMETER))}))
        return
    if not args.skip_memory:
        _memory(args)
    if args.model != "tiny":
        acc = link_accuracy(args.model, args.bbbc007_cache, args.link_frames, args.seed,
                            args.step)
        print(f"--link on {acc['frames']} frames of {'x'.join(map(str, acc['shape']))} "
              f"({acc['source']}, step sd {args.step} px, {acc['tracks']} tracks, "
              f"{acc['matched_per_frame']:.1f} matched per frame): {acc['kept']} of "
              f"{acc['continuations']} continuations keep their label ({acc['fraction']:.3f})")
    print(f"{date.today()} {platform.machine()} {os.cpu_count()} CPUs, {_cpu()}")


def _cpu() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            return next(line.split(":", 1)[1].strip() for line in fh
                        if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor()


def _memory(args) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        model = args.model
        if model == "tiny":
            model = _in_child("--_tiny", str(folder / "tiny.onnx"))["path"]
        rss = {}
        for n in (args.frames_small, args.frames_large):
            movie = folder / f"movie{n}.tif"
            extra = ["--bbbc007-cache", args.bbbc007_cache] if args.bbbc007_cache else []
            shape = _in_child("--_movie", str(movie), str(n), *extra)["shape"]
            rss[n] = peak_rss_mb(movie, model, folder / "out")
            print(f"{n:3d} frames {'x'.join(map(str, shape[1:]))}: peak RSS {rss[n]:.0f} MB",
                  flush=True)
        small, large = args.frames_small, args.frames_large
        print(f"peak RSS {large} / {small} frames: {rss[large] / rss[small]:.3f}")


if __name__ == "__main__":
    main()
