"""`nucseg-rt quantize`, `add-model --int8`, `segment --precision`, `info --probe` as subprocesses."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import tifffile

from nucseg_rt.eval.synth import make_volume
from test_cli import assert_one_error_line, run_cli

MODELS = Path(__file__).resolve().parents[1] / "models"


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


def test_quantize_then_segment_int8(calib, volume, tmp_path):
    assert run_cli("add-model", MODELS / "nuclei_3d.onnx", "--name", "mine").returncode == 0
    proc = run_cli("quantize", "mine", "--calibration", calib)
    assert proc.returncode == 0, proc.stderr
    assert "flow correlation with fp32" in proc.stdout and "added the int8 variant" in proc.stdout
    listed = run_cli("models")
    assert "fp32, int8" in listed.stdout
    again = run_cli("quantize", "mine", "--calibration", calib)
    assert_one_error_line(again, "already has an int8 variant")
    out = tmp_path / "out"
    proc = run_cli("segment", volume, "--model", "mine", "--precision", "int8", "--diameter", "30",
                   "--out-dir", out)
    assert proc.returncode == 0, proc.stderr
    assert tifffile.imread(out / "vol_masks.tif").max() > 0


def test_add_model_int8_on_the_way_in(calib):
    proc = run_cli("add-model", MODELS / "nuclei_3d.onnx", "--name", "fast", "--int8",
                   "--calibration", calib)
    assert proc.returncode == 0, proc.stderr
    assert "added 'fast'" in proc.stdout and "added the int8 variant" in proc.stdout
    info = run_cli("model-info", "fast")
    assert "int8" in info.stdout


def test_quantize_errors(tiny_onnx_model, volume, tmp_path):
    assert_one_error_line(run_cli("quantize", "nuclei_3d"), "bundled model")
    assert_one_error_line(run_cli("quantize", "nope"), "nope")
    proc = run_cli("quantize", "nuclei_3d", "--precision", "fp32")
    assert proc.returncode != 0 and "int8 or fp16" in proc.stderr
    proc = run_cli("segment", volume, "--model", tiny_onnx_model, "--precision", "int8",
                   "--out-dir", tmp_path)
    assert_one_error_line(proc, "nucseg-rt quantize")
    proc = run_cli("segment", volume, "--precision", "fp16", "--device", "cpu", "--out-dir", tmp_path)
    assert_one_error_line(proc, "CUDA only")
    assert not list(tmp_path.glob("*_masks.tif"))
    proc = run_cli("add-model", tiny_onnx_model, "--calibration", tmp_path)
    assert proc.returncode != 0 and "--calibration needs --int8" in proc.stderr


def test_segment_bundled_int8_and_plain(volume, tmp_path):
    for args in (["--precision", "int8"], ["--work-avoidance", "plain"]):
        out = tmp_path / args[-1]
        proc = run_cli("segment", volume, *args, "--diameter", "30", "--out-dir", out)
        assert proc.returncode == 0, proc.stderr
        assert tifffile.imread(out / "vol_masks.tif").max() > 0


def test_info_probe_saves_defaults():
    proc = run_cli("info", "--probe", "--seconds", "0.01", "--save")
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
