"""CLI commands that run the PyTorch export tools, as real subprocesses (reference: torch, and
Cellpose for export-cellpose). Their torch-free error paths are in tests/cli/test_cli.py."""

from __future__ import annotations

import pytest

from helpers import run_cli

pytest.importorskip("torch")


@pytest.mark.slow
def test_export_cellpose_then_segment_ready(tmp_path):
    pytest.importorskip("cellpose")
    from helpers import make_cellpose_net
    src = tmp_path / "cp_main"
    make_cellpose_net(seed=5).save_model(str(src))
    out = tmp_path / "exported.onnx"
    proc = run_cli("export-cellpose", src, "-o", out)
    assert proc.returncode == 0, proc.stderr
    assert f"wrote {out}" in proc.stdout and "max |onnxruntime - torch|" in proc.stdout
    assert run_cli("add-model", out).returncode == 0
    from nucseg_rt.models import read_metadata

    assert "cellprob_threshold" not in read_metadata(out)  # a Cellpose model runs as Cellpose's
    calibrated = tmp_path / "calibrated.onnx"
    proc = run_cli("export-cellpose", src, "-o", calibrated, "--default-cellprob-threshold", "-1.5",
                   "--default-min-size-fraction", "0.1", "--ortho-weight", "0.5",
                   "--agreement", "openvino/bf16=0.996", "--agreement", "onnxruntime/int8=0.97")
    assert proc.returncode == 0, proc.stderr
    meta = read_metadata(calibrated)
    assert (meta["cellprob_threshold"], meta["min_size_fraction"], meta["ortho_weight"]) == (
        "-1.5", "0.1", "0.5")
    from nucseg_rt.network.engine import model_agreement

    assert model_agreement(meta) == {"openvino/bf16": 0.996, "onnxruntime/int8": 0.97}
    bad = run_cli("export-cellpose", src, "-o", tmp_path / "bad.onnx", "--ortho-weight", "3")
    assert bad.returncode == 1 and "`--ortho-weight` must be in [0, 1]" in bad.stderr
    assert not (tmp_path / "bad.onnx").exists()


def test_train_passes_arguments_through():
    proc = run_cli("train", "--", "--help")
    assert proc.returncode == 0, proc.stderr
    assert "--epochs" in proc.stdout  # the trainer's own argparse help


def test_make_crops_passes_arguments_through():
    proc = run_cli("make-crops", "--", "--help")
    assert proc.returncode == 0, proc.stderr
    assert "--anisotropy" in proc.stdout and "--crop-size" in proc.stdout


@pytest.mark.slow
def test_export_cellpose_ortho_min_anisotropy(tmp_path):
    pytest.importorskip("cellpose")
    from helpers import make_cellpose_net

    from nucseg_rt.models import read_metadata
    main, ortho = tmp_path / "cp_main", tmp_path / "cp_ortho"
    make_cellpose_net(seed=5).save_model(str(main))
    make_cellpose_net(seed=6).save_model(str(ortho))
    out = tmp_path / "pair.onnx"
    proc = run_cli("export-cellpose", main, "--ortho", ortho, "--ortho-min-anisotropy", "6", "-o", out)
    assert proc.returncode == 0, proc.stderr
    assert read_metadata(tmp_path / "pair.ortho.onnx")["min_anisotropy"] == "6.0"
    assert "min_anisotropy" not in read_metadata(out)
    bad = run_cli("export-cellpose", main, "--ortho-min-anisotropy", "6", "-o", tmp_path / "x.onnx")
    assert bad.returncode != 0 and "--ortho-min-anisotropy needs --ortho" in bad.stderr
    assert not (tmp_path / "x.onnx").exists()


@pytest.mark.slow
def test_add_model_converts_a_cellpose_file(tmp_path):
    """``add-model FILE --ortho FILE`` with Cellpose files: the CLI hands the export tool to the
    registry as its converter; nothing is written next to the inputs."""
    pytest.importorskip("cellpose")
    from helpers import make_cellpose_net

    main, ortho = tmp_path / "cp_main", tmp_path / "cp_ortho"
    make_cellpose_net(seed=5).save_model(str(main))
    make_cellpose_net(seed=6).save_model(str(ortho))
    proc = run_cli("add-model", main, "--name", "converted", "--ortho", ortho)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("added 'converted' (diam_mean ") and "ortho yes" in proc.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cp_main", "cp_ortho"]


@pytest.mark.parametrize("value", ["openvino/bf16", "openvino/bf16=1.5", "tensorrt/fp32=0.99",
                                   "openvino/fp64=0.99", "auto/bf16=0.99"])
def test_agreement_values_are_checked(value):
    from nucseg_rt.cli._models import _parse_agreement
    from nucseg_rt.errors import InvalidInputError

    with pytest.raises(InvalidInputError, match="--agreement must be BACKEND/PRECISION=AP") as err:
        _parse_agreement([value])
    assert err.value.param == "agreement"
    assert _parse_agreement(None) is None
