"""The nucseg-rt command line, run as a real subprocess: help, registry commands, info, export.

Segmentation runs (which need the whole pipeline) are in test_cli_segment.py.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import tifffile

from helpers import assert_one_error_line, cli_help, run_cli, run_cli_here

COMMANDS = ["segment", "watch", "add-model", "models", "remove-model", "model-info", "info",
            "export-cellpose", "train", "make-crops", "quantize"]
NO_TORCH = ("torch",)


# --- help ----------------------------------------------------------------------------------------


def test_top_level_help_lists_every_command():
    proc = cli_help()
    assert proc.returncode == 0, proc.stderr
    for command in COMMANDS:
        assert command in proc.stdout


@pytest.mark.parametrize("command", COMMANDS)
def test_command_help(command):
    proc = cli_help(command)
    assert proc.returncode == 0, proc.stderr
    assert "Usage" in proc.stdout and command in proc.stdout


_TYPE_TAG = re.compile(r"<(?:list\[\w+\]|bool|str|int|float|path|Path|[a-z0-9]+\|[a-z0-9|]+)>")


@pytest.mark.parametrize("command", ["", *COMMANDS])
def test_help_shows_no_python_type_tags(command):
    proc = cli_help(command)
    assert proc.returncode == 0, proc.stderr
    assert not _TYPE_TAG.search(proc.stdout), _TYPE_TAG.search(proc.stdout).group(0)


def test_version():
    from nucseg_rt import __version__

    proc = run_cli("--version")
    assert proc.returncode == 0 and proc.stdout.strip() == f"nucseg-rt {__version__}"


@pytest.mark.parametrize("theirs, ours", [
    ("--stitch_threshold", "--stitch-threshold"), ("--pretrained_model", "--model"),
    ("--use_gpu", "--device cuda"), ("--savedir", "--out-dir"), ("--diam", "--diameter"),
    ("--cellprob_threshold", "--cellprob-threshold"), ("--channel_axis", "--channel-axis")])
def test_cellpose_spellings_point_at_ours(tmp_path, theirs, ours):
    proc = run_cli_here("segment", tmp_path / "x.tif", theirs, "1")
    line = assert_one_error_line(proc, "Cellpose's spelling", code=2)
    assert f"nucseg-rt: {ours}" in line


@pytest.mark.parametrize("args, pattern", [
    (["segment", "x.tif", "--anisotropy", "abc"], r"'--anisotropy'.*abc|--anisotropy"),
    (["segment", "x.tif", "--precision", "fp64"], r"--precision"),
    (["segment", "x.tif", "--no-such-thing"], r"--no-such-thing.*nucseg-rt segment --help"),
    (["quantize"], None), (["add-model", "x.onnx", "--calibration", "d"], "--calibration needs --int8"),
    (["quantize", "m", "--precision", "fp32"], r"'fp32'.*int8.*fp16"),
    (["no-such-command"], "no-such-command"),
])
def test_usage_errors_take_the_one_error_path(args, pattern):
    proc = run_cli_here(*args)
    if pattern is None:  # a command without its arguments shows its help
        assert proc.returncode == 0 and "Usage" in proc.stdout, proc.stderr
        return
    assert_one_error_line(proc, pattern, code=1 if "--calibration" in args else 2)
    assert "╭" not in proc.stderr  # not Typer's own error box


def test_quantize_offers_only_what_it_accepts():
    proc = cli_help("quantize")
    line = next(l for l in proc.stdout.splitlines() if l.lstrip("│ ").startswith("--precision"))
    assert "int8|fp16" in line and "fp32" not in line


@pytest.mark.parametrize("command", ["", *COMMANDS])
def test_help_imports_nothing_heavy(command):
    proc = cli_help(command)
    assert proc.returncode == 0 and proc.heavy == [], (proc.heavy, proc.stderr)


def test_console_script_installed():
    script = Path(sys.executable).with_name("nucseg-rt")
    if not script.exists():
        pytest.skip("console script not installed next to this interpreter")
    from nucseg_rt import __version__

    proc = subprocess.run([str(script), "--version"], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.strip() == f"nucseg-rt {__version__}"


# --- registry commands -------------------------------------------------------------------------------


def test_registry_roundtrip(tiny_onnx_pair, _isolated_registry):
    proc = run_cli("add-model", tiny_onnx_pair, "--name", "lab_nuclei")
    assert proc.returncode == 0, proc.stderr
    assert "added 'lab_nuclei' (diam_mean 30.0, nchan 2, ortho yes)" in proc.stdout

    proc = run_cli("models")
    assert proc.returncode == 0, proc.stderr
    row = next(line for line in proc.stdout.splitlines() if "lab_nuclei" in line)
    for cell in ("30.0", "2", "yes", "fp32", str(tiny_onnx_pair)):
        assert cell in row
    assert f"registry: {_isolated_registry}" in proc.stdout

    proc = run_cli("model-info", "lab_nuclei")
    assert proc.returncode == 0, proc.stderr
    assert "integrity: ok" in proc.stdout and "metadata diam_mean: 30.0" in proc.stdout

    proc = run_cli("remove-model", "lab_nuclei")
    assert proc.returncode == 0 and "removed 'lab_nuclei'" in proc.stdout
    assert "lab_nuclei" not in run_cli("models").stdout


def test_model_info_of_a_file(tiny_onnx_model):
    proc = run_cli("model-info", tiny_onnx_model)
    assert proc.returncode == 0, proc.stderr
    assert "metadata nchan: 2" in proc.stdout and "sha256:" in proc.stdout


def test_model_info_reports_tampering(tiny_onnx_model, _isolated_registry):
    assert run_cli("add-model", tiny_onnx_model, "--name", "m").returncode == 0
    stored = next((_isolated_registry / "models").glob("m.*.onnx"))
    stored.write_bytes(stored.read_bytes() + b"\x00")
    proc = run_cli("model-info", "m")
    assert proc.returncode == 0 and "integrity: FAILED, loading will be refused" in proc.stdout


def test_add_model_refuses_duplicate_without_force(tiny_onnx_model):
    assert run_cli("add-model", tiny_onnx_model, "--name", "m").returncode == 0
    assert_one_error_line(run_cli("add-model", tiny_onnx_model, "--name", "m"),
                          "already registered; use --force")
    assert run_cli("add-model", tiny_onnx_model, "--name", "m", "--force").returncode == 0


@pytest.mark.parametrize("name", ["../evil", "a/b", "..", "nuclei_3d"])
def test_add_model_bad_name(tiny_onnx_model, name):
    assert_one_error_line(run_cli("add-model", tiny_onnx_model, "--name", name), "`--name`")


def test_add_model_reserved_file_name_blames_the_file(tmp_path, tiny_onnx_model):
    path = tmp_path / "nuclei_3d.onnx"
    path.write_bytes(tiny_onnx_model.read_bytes())
    line = assert_one_error_line(run_cli("add-model", path), "the file's name 'nuclei_3d' is reserved")
    assert "with `--name`" in line and "`name`" not in line


def test_add_model_non_onnx(tmp_path):
    path = tmp_path / "notes.onnx"
    path.write_text("not a model at all\n" * 20)
    assert_one_error_line(run_cli("add-model", path), "not (a readable|an) ONNX model")


def test_add_model_truncated_onnx(tmp_path, tiny_onnx_model):
    path = tmp_path / "cut.onnx"
    path.write_bytes(tiny_onnx_model.read_bytes()[:1200])
    assert_one_error_line(run_cli("add-model", path), "ONNX")


def test_add_model_wrong_channels(tmp_path, tiny_onnx_factory):
    path = tiny_onnx_factory(tmp_path / "three.onnx", nchan=3)
    assert_one_error_line(run_cli("add-model", path), "model input has 3 channels")


def test_add_model_missing_file(tmp_path):
    assert_one_error_line(run_cli("add-model", tmp_path / "none.onnx"), "model file not found")


def test_add_cellpose_model_without_torch(tmp_path):
    path = tmp_path / "cellpose_model"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", b"\x80\x02}q\x00.")
    proc = run_cli("add-model", path, hide=NO_TORCH)
    assert_one_error_line(proc, r"needs PyTorch.*pip install 'nucseg-rt\[export\]'")


def test_remove_unknown_model_lists_names(tiny_onnx_model):
    assert run_cli("add-model", tiny_onnx_model, "--name", "kept").returncode == 0
    assert_one_error_line(run_cli("remove-model", "gone"), "unknown model name 'gone'; available: kept")


def test_remove_bundled_model_refused():
    assert_one_error_line(run_cli("remove-model", "nuclei_3d"), "bundled model and cannot be removed")


def test_debug_shows_traceback():
    proc = run_cli("remove-model", "gone", "--debug")
    assert proc.returncode == 1 and "Traceback" in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("error: unknown model name")


# --- info, quantize, export, train -----------------------------------------------------------------


def test_info(_isolated_registry):
    proc = run_cli("info")
    assert proc.returncode == 0, proc.stderr
    for text in ("nucseg-rt", "onnxruntime providers", "CPUExecutionProvider",
                 f"registry: {_isolated_registry}", "mask-stage threads", "numpy"):
        assert text in proc.stdout


def test_quantize_bundled_model_is_refused():
    proc = run_cli("quantize", "nuclei_3d")
    assert_one_error_line(proc, "bundled model and ships its variants \\(int8\\)")


def test_export_cellpose_without_torch(tmp_path):
    src = tmp_path / "cp_model"
    src.write_bytes(b"PK\x03\x04 pretend zip")
    proc = run_cli("export-cellpose", src, "-o", tmp_path / "out.onnx", hide=NO_TORCH)
    assert_one_error_line(proc, r"pip install 'nucseg-rt\[export\]'")
    assert not (tmp_path / "out.onnx").exists()


def test_export_cellpose_refuses_existing_output(tmp_path):
    src = tmp_path / "cp_model"
    src.write_bytes(b"PK\x03\x04")
    out = tmp_path / "out.onnx"
    out.write_bytes(b"keep me")
    assert_one_error_line(run_cli("export-cellpose", src, "-o", out), "already exists; use --force")
    assert out.read_bytes() == b"keep me"


def test_train_without_torch():
    assert_one_error_line(run_cli("train", "--epochs", "1", hide=NO_TORCH),
                          r"training needs PyTorch.*pip install 'nucseg-rt\[export\]'")


def test_make_crops_without_torch():
    assert_one_error_line(run_cli("make-crops", "x.tif", hide=NO_TORCH),
                          r"making training crops needs PyTorch.*pip install 'nucseg-rt\[export\]'")


# --- segment errors caught before any model is loaded ---------------------------------------------


@pytest.fixture
def small_tif(tmp_path):
    path = tmp_path / "vol.tif"
    tifffile.imwrite(path, np.zeros((4, 16, 16), np.uint16), photometric="minisblack")
    return path


@pytest.mark.parametrize("option, value", [("--anisotropy", "0"), ("--anisotropy", "-2"),
                                           ("--diameter", "0"), ("--diameter", "-5")])
def test_segment_nonpositive_numbers(small_tif, option, value):
    proc = run_cli("segment", small_tif, option, value)
    assert_one_error_line(proc, f"`{option}` must be > 0, got {float(value)}")


@pytest.mark.parametrize("value", ["0", "100", "48", "2048"])
def test_segment_bad_tile_size(small_tif, value):
    proc = run_cli("segment", small_tif, "--tile-size", value)
    assert_one_error_line(proc, f"`--tile-size` must be a multiple of 16 from 64 to 1024, "
                                f"got {value}")


@pytest.mark.parametrize("value", ["0", "65"])
def test_segment_bad_streams(small_tif, value):
    assert_one_error_line(run_cli("segment", small_tif, "--streams", value),
                          f"`--streams` must be from 1 to 64, got {value}")


def test_segment_tile_size_reaches_the_network(tmp_path, tiny_onnx_model):
    """A 290 x 310 plane is tiled differently by 320-px tiles: the saved flows are those of
    ``Segmenter(bsize=320)``, not those of 224-px tiles."""
    from helpers import blob_volume
    from nucseg_rt import Segmenter

    vol = blob_volume((5, 290, 310), n=10, seed=1)
    src = tmp_path / "vol.tif"
    tifffile.imwrite(src, vol, photometric="minisblack")
    proc = run_cli("segment", src, "--model", tiny_onnx_model, "--anisotropy", "1",
                   "--diameter", "30", "--tile-size", "320", "--save-flows", "--out-dir", tmp_path)
    assert proc.returncode == 0, proc.stderr
    runs = {bs: Segmenter(tiny_onnx_model, device="cpu", bsize=bs, use_probe=False).segment(
        vol, anisotropy=1.0, diameter=30.0) for bs in (224, 320)}
    with np.load(tmp_path / "vol_flows.npz") as saved:
        np.testing.assert_array_equal(saved["flows"], runs[320].flows)
        assert not np.array_equal(saved["flows"], runs[224].flows)
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "vol_masks.tif"), runs[320].masks)


def test_segment_without_input():
    assert_one_error_line(run_cli("segment", "--model", "x"), "no input")


def test_segment_dir_missing(tmp_path):
    assert_one_error_line(run_cli("segment", "--dir", tmp_path / "nope"), "`--dir` .* is not a folder")


def test_segment_dir_without_images(tmp_path):
    (tmp_path / "readme.txt").write_text("no images here")
    assert_one_error_line(run_cli("segment", "--dir", tmp_path), "no TIFF images")


def test_segment_out_dir_under_a_file(small_tif, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    proc = run_cli("segment", small_tif, "--out-dir", blocker / "sub")
    assert_one_error_line(proc, r"`--out-dir` .*sub cannot be created: .*a_file is a file")


def test_segment_file_as_out_dir(small_tif, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    proc = run_cli("segment", small_tif, "--out-dir", blocker)
    assert_one_error_line(proc, r"`--out-dir` .*a_file is a file, not a folder$")
    assert blocker.read_text() == "x"


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0,
                    reason="root can write into read-only folders")
def test_segment_read_only_out_dir(small_tif, tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        assert_one_error_line(run_cli("segment", small_tif, "--out-dir", folder), "not writable")
    finally:
        folder.chmod(0o700)


def test_segment_refuses_to_overwrite_an_input(small_tif):
    masks_named_input = small_tif.with_name("vol_masks.tif")
    masks_named_input.write_bytes(small_tif.read_bytes())
    before = masks_named_input.read_bytes()
    proc = run_cli("segment", small_tif, masks_named_input)
    assert_one_error_line(proc, "is also an input; refusing to overwrite it")
    assert masks_named_input.read_bytes() == before


def test_segment_refuses_two_inputs_with_one_output(tmp_path):
    for sub in ("a", "b"):
        (tmp_path / sub).mkdir()
        tifffile.imwrite(tmp_path / sub / "vol.tif", np.zeros((3, 8, 8), np.uint8),
                         photometric="minisblack")
    proc = run_cli("segment", tmp_path / "a" / "vol.tif", tmp_path / "b" / "vol.tif",
                   "--out-dir", tmp_path / "out")
    assert_one_error_line(proc, "would both write")


def test_run_in_process_gives_the_logging_back():
    """A program calling the command line gets the ``nucseg_rt`` logger back as it was (the
    command's handlers rewrite parameter names into flags)."""
    import logging

    log = logging.getLogger("nucseg_rt")
    before = (list(log.handlers), log.level, log.propagate)
    proc = run_cli_here("segment", "missing.tif", "--niter", "-1")
    assert proc.returncode == 1 and "`--niter` must be >= 0" in proc.stderr
    assert (list(log.handlers), log.level, log.propagate) == before
