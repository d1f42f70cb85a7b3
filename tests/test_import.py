"""The runtime imports and runs without torch, and importing it does nothing heavy."""

import pkgutil
import subprocess
import sys

import nucseg_rt
from helpers import make_tiny_onnx

#: Modules that need an optional extra to import, with the reason; the import test skips them.
#: The dask/zarr code (blockwise.dask, io.lazy) imports its extras inside the functions that
#: need them, so only the napari dock widget is here.
NEEDS_EXTRA: dict[str, str] = {
    "nucseg_rt.napari._widget": "the napari dock widget is GUI code: magicgui, napari and Qt "
                                "(the [napari] extra) at module level; napari imports it on docking",
}

#: every module of the package, found on disk: new modules are covered without editing this file
ALL_MODULES = sorted(m.name for m in pkgutil.walk_packages(nucseg_rt.__path__, "nucseg_rt."))
#: ``__main__`` modules run a program when imported (``python -m nucseg_rt.cli``): not imported here
RUNTIME_MODULES = ["nucseg_rt"] + [m for m in ALL_MODULES
                                   if m not in NEEDS_EXTRA and not m.endswith(".__main__")]

#: not core dependencies of the runtime: blocked in the subprocess that imports it
BLOCKED = ("torch", "cellpose", "cv2", "fastremap", "fill_voids", "scipy", "zarr", "dask",
           "distributed", "napari", "magicgui", "qtpy", "nucseg_rt_export")


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)


def test_every_module_is_listed():
    """walk_packages found the subpackages and their modules (not just the top level)."""
    assert {"nucseg_rt.segment", "nucseg_rt.cli", "nucseg_rt.blockwise.dask", "nucseg_rt.io._lazy",
            "nucseg_rt.network.predict", "nucseg_rt.models.probe", "nucseg_rt.eval.synth",
            "nucseg_rt.napari._logic"} <= set(RUNTIME_MODULES)
    assert set(NEEDS_EXTRA) <= set(ALL_MODULES)  # no stale exceptions


def test_runtime_imports_with_torch_blocked():
    code = ("import sys\n"
            f"for m in {BLOCKED!r}:\n"
            "    sys.modules[m] = None\n"
            f"import importlib\nfor m in {RUNTIME_MODULES!r}:\n    importlib.import_module(m)\n"
            "from nucseg_rt import Segmenter\nprint('ok')\n")
    r = _run(code)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "ok"


def test_import_is_quiet_and_light():
    r = _run("import sys, nucseg_rt\n"
             "heavy = [m for m in ('torch', 'onnxruntime', 'numba', 'nucseg_rt.segment') if m in sys.modules]\n"
             "print(heavy)")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]" and r.stderr == ""


def test_segmenter_runs_without_torch(tmp_path):
    """A full segmentation with torch unimportable (the tiny ONNX model has no torch origin),
    without importing ``onnx`` either (0.65 s of start-up: the model check reads the file itself)."""
    model = make_tiny_onnx(tmp_path / "tiny.onnx")
    code = ("import sys\nsys.modules['torch'] = None\n"
            "import numpy as np\nfrom nucseg_rt import Segmenter\n"
            "rng = np.random.default_rng(0)\nvol = (rng.random((6, 48, 48)) * 100).astype(np.uint16)\n"
            "vol[2:5, 10:22, 10:22] += 2000\n"
            f"res = Segmenter({str(model)!r}, device='cpu').segment(vol, anisotropy=1.0, diameter=30.0, min_size=15)\n"
            "assert 'torch' not in sys.modules or sys.modules['torch'] is None\n"
            "assert 'onnx' not in sys.modules, 'onnx imported'\n"
            "print(res.masks.shape, res.masks.max() >= 1)\n")
    r = _run(code)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "(6, 48, 48) True"
