"""The runtime imports and runs without torch, and importing it does nothing heavy."""

import subprocess
import sys

RUNTIME_MODULES = ["nucseg_rt", "nucseg_rt.segment", "nucseg_rt.network.predict", "nucseg_rt.masks.dynamics",
                   "nucseg_rt.prep.normalize", "nucseg_rt.prep.axes", "nucseg_rt.prep.resample", "nucseg_rt.network.tiling",
                   "nucseg_rt.masks.postprocess", "nucseg_rt.masks.stitch", "nucseg_rt.eval.metrics", "nucseg_rt.io.tiff",
                   "nucseg_rt.models.registry", "nucseg_rt.cli", "nucseg_rt.masks.label_flows", "nucseg_rt.prep.filters",
                   "nucseg_rt.batch", "nucseg_rt.models.modelfile"]


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)


def test_runtime_imports_with_torch_blocked():
    code = ("import sys\n"
            "for m in ('torch', 'cellpose', 'cv2', 'fastremap', 'fill_voids', 'nucseg_rt_export'):\n"
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
    """A full segmentation with torch unimportable (the tiny ONNX model has no torch origin)."""
    from conftest import make_tiny_onnx

    model = make_tiny_onnx(tmp_path / "tiny.onnx")
    code = ("import sys\nsys.modules['torch'] = None\n"
            "import numpy as np\nfrom nucseg_rt import Segmenter\n"
            "rng = np.random.default_rng(0)\nvol = (rng.random((6, 48, 48)) * 100).astype(np.uint16)\n"
            "vol[2:5, 10:22, 10:22] += 2000\n"
            f"res = Segmenter({str(model)!r}, device='cpu').segment(vol, anisotropy=1.0, diameter=30.0)\n"
            "assert 'torch' not in sys.modules or sys.modules['torch'] is None\n"
            "print(res.masks.shape, res.masks.max() >= 1)\n")
    r = _run(code)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "(6, 48, 48) True"
