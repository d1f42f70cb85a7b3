"""`nucseg-rt quantize`, `add-model --int8`, `segment --precision`, `info --probe` as subprocesses.

The commands quantize and time the tiny model (the bundled model is quantized once, in
tests/models/test_quantize.py)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import tifffile

from nucseg_rt.eval.synth import make_volume
from helpers import assert_one_error_line, make_tiny_onnx, run_cli



@pytest.fixture(scope="module")
def calib(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("calib")
    img, _, _ = make_volume((24, 96, 96), seed=21)
    tifffile.imwrite(folder / "a.tif", img)
    return folder


@pytest.fixture(scope="module")
def volume(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("vol") / "vol.tif"
    tifffile.imwrite(path, make_volume((20, 96, 96), seed=22)[0])
    return path


def test_quantize_then_segment_int8(calib, volume, tmp_path, tiny_onnx_model):
    assert run_cli("add-model", tiny_onnx_model, "--name", "mine").returncode == 0
    proc = run_cli("quantize", "mine", "--calibration", calib)
    assert proc.returncode == 0, proc.stderr
    assert "flow correlation with fp32" in proc.stdout and "added the int8 variant" in proc.stdout
    assert "held-out tiles (synthetic)" in proc.stdout
    # quiet about the synthetic check volumes (64x224x224): no axis or channel notes about volumes
    # the user never gave (a dozen were printed once); the calibration stack's notes stay
    said = proc.stdout + proc.stderr
    assert said.count("volume (") == 1 and "volume (24, 96, 96)" in said, said
    listed = run_cli("models")
    assert "fp32, int8" in listed.stdout
    again = run_cli("quantize", "mine", "--calibration", calib)
    assert_one_error_line(again, "already has an int8 variant")
    out = tmp_path / "out"
    proc = run_cli("segment", volume, "--model", "mine", "--precision", "int8", "--diameter", "30",
                   "--out-dir", out)
    assert proc.returncode == 0, proc.stderr
    assert tifffile.imread(out / "vol_masks.tif").max() > 0


def test_add_model_int8_on_the_way_in(calib, volume, tiny_onnx_model):
    """Calibrated on one folder and checked on another (the quantize test checks on the default
    synthetic nuclei)."""
    proc = run_cli("add-model", tiny_onnx_model, "--name", "fast", "--int8",
                   "--calibration", calib, "--check", volume.parent)
    assert proc.returncode == 0, proc.stderr
    assert "added 'fast'" in proc.stdout and "added the int8 variant" in proc.stdout
    assert f"on 9 held-out tiles of {volume.parent}" in proc.stdout  # 3 planes x 3 views
    info = run_cli("model-info", "fast")
    assert "int8" in info.stdout


def test_quantize_errors(tiny_onnx_model, volume, tmp_path):
    assert_one_error_line(run_cli("quantize", "nuclei_3d"), "bundled model")
    assert_one_error_line(run_cli("quantize", "nope"), "nope")
    proc = run_cli("quantize", "nuclei_3d", "--precision", "fp32")  # not offered
    assert_one_error_line(proc, r"--precision.*'fp32'", code=2)
    proc = run_cli("segment", volume, "--model", tiny_onnx_model, "--precision", "int8",
                   "--out-dir", tmp_path)
    assert_one_error_line(proc, "nucseg-rt quantize")
    proc = run_cli("segment", volume, "--precision", "fp16", "--device", "cpu", "--out-dir", tmp_path)
    assert_one_error_line(proc, "CUDA only")
    assert not list(tmp_path.glob("*_masks.tif"))
    proc = run_cli("add-model", tiny_onnx_model, "--calibration", tmp_path)
    assert_one_error_line(proc, "--calibration needs --int8")
    proc = run_cli("add-model", tiny_onnx_model, "--check", tmp_path)
    assert_one_error_line(proc, "--check needs --int8")


def test_segment_bundled_int8_and_plain(volume, tmp_path):
    for args in (["--precision", "int8"], ["--work-avoidance", "plain"]):
        out = tmp_path / args[-1]
        proc = run_cli("segment", volume, *args, "--diameter", "30", "--out-dir", out)
        assert proc.returncode == 0, proc.stderr
        assert tifffile.imread(out / "vol_masks.tif").max() > 0


def test_info_probe_saves_defaults(tiny_onnx_model):
    proc = run_cli("info", "--probe", "--model", tiny_onnx_model, "--seconds", "0.01", "--save")
    assert proc.returncode == 0, proc.stderr
    assert "fastest" in proc.stdout and "saved to" in proc.stdout
    assert "ms per megapixel by tile size" in proc.stdout and "tile  320:" in proc.stdout
    saved = json.loads((Path(os.environ["NUCSEG_RT_HOME"]) / "probe.json").read_text())
    assert saved["fp32"]["batch_size"] >= 1 and saved["fp32"]["threads"] >= 1
    assert saved["fp32"]["streams"] >= 1
    if (os.cpu_count() or 1) >= 2:
        assert "2 streams of" in proc.stdout
    b, t, n = (saved["fp32"][k] for k in ("batch_size", "threads", "streams"))
    assert f"--batch-size {b} --threads {t} --streams {n} are now the defaults" in proc.stdout
    assert_one_error_line(run_cli("info", "--save"), "--save needs --probe")


def _qdq_copy(src: Path, dst: Path, metadata: dict | None = None) -> Path:
    """``src`` with a QuantizeLinear/DequantizeLinear pair on its input: what an int8 export
    looks like to onnxruntime (optionally with metadata such as ``precision``)."""
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(src))
    graph = model.graph
    graph.initializer.extend([numpy_helper.from_array(np.array(0.05, np.float32), "q_scale"),
                              numpy_helper.from_array(np.array(0, np.uint8), "q_zero")])
    for node in graph.node:
        node.input[:] = ["input_dq" if name == "input" else name for name in node.input]
    graph.node.insert(0, helper.make_node("DequantizeLinear", ["input_q", "q_scale", "q_zero"],
                                          ["input_dq"], name="input_DequantizeLinear"))
    graph.node.insert(0, helper.make_node("QuantizeLinear", ["input", "q_scale", "q_zero"],
                                          ["input_q"], name="input_QuantizeLinear"))
    props = {p.key: p.value for p in model.metadata_props}
    props.update(metadata or {})
    del model.metadata_props[:]
    helper.set_model_props(model, props)
    onnx.save(model, str(dst))
    return dst


def test_int8_onnx_added_is_int8(tmp_path, volume):
    q8 = _qdq_copy(make_tiny_onnx(tmp_path / "tiny.onnx"), tmp_path / "q8.onnx",
                   {"precision": "int8"})
    proc = run_cli("add-model", q8)
    assert proc.returncode == 0 and "added 'q8' as int8 model" in proc.stdout, proc.stderr
    row = next(line for line in run_cli("models").stdout.splitlines() if "q8" in line)
    assert "int8" in row and "fp32" not in row
    out = tmp_path / "out"
    proc = run_cli("segment", volume, "--model", "q8", "--precision", "int8", "--diameter", "30",
                   "--out-dir", out)
    assert proc.returncode == 0, proc.stderr
    assert (out / "vol_masks.tif").is_file()
    proc = run_cli("segment", volume, "--model", "q8", "--out-dir", tmp_path / "fp32")
    assert_one_error_line(proc, r"'q8' was added as an int8 model.*`--precision` 'int8'")
    assert_one_error_line(run_cli("quantize", "q8"), r"'q8' is already int8")


def test_quantizing_a_quantized_file_is_a_clear_error(tmp_path):
    from nucseg_rt.errors import ModelFormatError
    from nucseg_rt.models import quantize_int8

    unlabelled = _qdq_copy(make_tiny_onnx(tmp_path / "tiny.onnx"), tmp_path / "qdq.onnx")
    with pytest.raises(ModelFormatError, match="qdq.onnx is already an int8 model"):
        quantize_int8(unlabelled, tmp_path / "again.onnx")
    assert run_cli("add-model", unlabelled, "--name", "sneaky").returncode == 0
    proc = run_cli("quantize", "sneaky")  # onnxruntime said "two nodes with same node name"
    assert_one_error_line(proc, r"model 'sneaky' is already an int8 model; make variants from its "
                                r"fp32 model$")
