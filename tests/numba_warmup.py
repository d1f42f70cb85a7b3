"""Compile the runtime's numba kernels into numba's cache before the test workers start.

In a fresh checkout numba has cached nothing, and each xdist worker compiled the kernels it
met (about 100 specialisations, 20 s of CPU) although the other worker was compiling the same
ones: a fresh checkout's suite took 15-20 s longer than later runs. tests/conftest.py runs this
module's two halves in two processes at once, on the controller, before the workers start,
and only when the cache is empty (:func:`cache_is_cold`); the workers then load the kernels
from the cache. A kernel the warm-up misses is compiled by the worker that meets it, as before.

    python tests/numba_warmup.py 3d|2d
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

PARTS = ("3d", "2d")


#: Kernels whose cache index shows a warm cache: one every run compiles, and Cellpose's 3D and
#: 2D dynamics, which the README's segment command (run before the tests) does not compile.
_SIGNS = ("postprocess.label_counts-*.nbi", "dynamics._follow_cellpose_3d-*.nbi",
          "dynamics._follow_cellpose_2d-*.nbi")


def cache_is_cold() -> bool:
    """True when numba's cache lacks the index of one of :data:`_SIGNS` (a fresh checkout, or
    one where only the README's segment command ran). From the files alone, without importing
    numba, so later runs pay nothing. numba keys its cache by the source's content, so an index
    stays valid across reinstalls of the same code; after an edit the warm-up may be skipped,
    and the workers compile as they go. On any error, False."""
    import importlib.util
    import os

    try:
        folder = os.environ.get("NUMBA_CACHE_DIR")
        if not folder:
            spec = importlib.util.find_spec("nucseg_rt")
            folder = Path(list(spec.submodule_search_locations)[0]) / "masks" / "__pycache__"
        return not all(any(Path(folder).rglob(sign)) for sign in _SIGNS)
    except Exception:  # noqa: BLE001 - an optimisation only
        return False


def _run(part: str) -> None:
    import numpy as np

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from helpers import blob_volume, make_tiny_onnx, random_ellipsoids
    from nucseg_rt import Segmenter
    from nucseg_rt.eval.metrics import average_precision
    from nucseg_rt.masks import masks_to_flows

    with tempfile.TemporaryDirectory() as tmp:
        model = make_tiny_onnx(Path(tmp) / "tiny.onnx")
        with Segmenter(str(model), device="cpu", backend="onnxruntime", use_probe=False) as seg:
            vol = blob_volume()
            if part == "3d":  # the default 3D path: stable dynamics, full and coarse Z
                res = seg.segment(vol, anisotropy=2.0, diameter=30.0)
                seg.segment(vol[::4], anisotropy=11.5, diameter=30.0)  # coarse Z: the network grid
            else:  # Cellpose's dynamics, stitch mode (2D dynamics), label flows, metrics
                seg.segment(vol, anisotropy=2.0, diameter=30.0, dynamics_method="cellpose")
                res = seg.segment(vol, diameter=30.0, stitch_threshold=0.25)
                masks_to_flows(random_ellipsoids((16, 40, 40), n=6, seed=0))
                masks_to_flows(random_ellipsoids((1, 40, 40), n=4, seed=0)[0])
                for dtype in (np.uint16, np.int32):
                    average_precision(res.masks.astype(dtype), res.masks.astype(dtype),
                                      thresholds=(0.5,))

if __name__ == "__main__":
    if len(sys.argv) != 2 or sys.argv[1] not in PARTS:
        raise SystemExit(f"usage: python {Path(__file__).name} {'|'.join(PARTS)}")
    _run(sys.argv[1])
