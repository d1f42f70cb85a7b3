"""A new user's first run: how much of it is numba compiling the mask stage (issue 21).

numba compiles every kernel on its first use and caches the machine code (next to the package,
or in ``NUMBA_CACHE_DIR``); a new install, a new CPU or an updated package starts with an empty
cache. This script runs ``nucseg-rt segment`` on the shipped example in new processes, first with
an empty numba cache, then with the cache it left, for this checkout and optionally for other
checkouts (``--repo``, e.g. an older commit in a ``git worktree``), side by side in one run, and
prints each one's seconds, the difference (the compilation), and the ratios.

    python benchmarks/first_use.py
    git worktree add /tmp/old <rev> && python benchmarks/first_use.py --repo /tmp/old

Runs onnxruntime fp32 (``--backend onnxruntime``) so that only the mask stage differs. Not part
of the test suite; run it on an idle machine.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "embryo_small.tif"


def _segment(repo: Path, cache: Path, out: Path, extra: list[str]) -> float:
    env = dict(os.environ, NUMBA_CACHE_DIR=str(cache), PYTHONPATH=str(repo))
    cmd = [sys.executable, "-m", "nucseg_rt.cli", "segment", str(EXAMPLE), "--model", "nuclei_3d",
           "--backend", "onnxruntime", "--out-dir", str(out), "--overwrite", "--quiet", *extra]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=str(repo))
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"failed in {repo}: {proc.stderr[-2000:]}")
    return seconds


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repo", type=Path, action="append", default=[],
                    help="another checkout to compare (repeatable)")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--stitch", action="store_true", help="also a stitch-mode run (2D dynamics)")
    args = ap.parse_args(argv)
    repos = [REPO, *args.repo]
    runs = [[]] + ([["--stitch-threshold", "0.3"]] if args.stitch else [])
    print(f"# {time.strftime('%Y-%m-%d %H:%M')}, {os.cpu_count()} cores; {EXAMPLE.name}; "
          f"median of {args.repeats}; each run a new process")
    print(f"{'checkout':40s} {'empty cache':>12} {'cached':>8} {'compiling':>10}")
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for repo in repos:
            cold, warm = [], []
            for k in range(args.repeats):
                cache = Path(tmp) / f"cache-{repos.index(repo)}-{k}"
                cold.append(sum(_segment(repo, cache, Path(tmp) / "out", extra) for extra in runs))
                warm.append(sum(_segment(repo, cache, Path(tmp) / "out", extra) for extra in runs))
            c, w = statistics.median(cold), statistics.median(warm)
            rows[repo] = (c, w)
            print(f"{str(repo)[-40:]:40s} {c:10.2f} s {w:6.2f} s {c - w:8.2f} s", flush=True)
    if len(repos) > 1:
        c0, w0 = rows[REPO]
        for repo in repos[1:]:
            c, w = rows[repo]
            print(f"{str(repo)[-40:]}: first run {c / c0:.2f}x this checkout's time, compilation "
                  f"{(c - w) / max(c0 - w0, 1e-9):.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
