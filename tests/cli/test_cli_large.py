"""``nucseg-rt segment`` on large-volume options, as a real subprocess: blockwise TIFF and OME-Zarr
output, automatic blocks from --max-memory, zarr input, and one clear error line for bad options."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile

zarr = pytest.importorskip("zarr")

from helpers import (assert_one_error_line, block_tiff, block_volume, blockwise_masks,  # noqa: E402
                     run_cli, run_cli_here, summary_row, whole_masks)

from nucseg_rt.io import open_labels_zarr  # noqa: E402

#: The runs compare with the bundled model's labels from helpers (onnxruntime, exact fp32):
#: ``--backend auto`` would run OpenVINO bf16 where the CPU has it (faithful, not identical).
ORT = ("--backend", "onnxruntime")


# The CLI runs below write exactly the labels of the in-process blockwise run (helpers), made in
# another process: they are also the check that a blockwise run is deterministic. How blockwise
# labels compare with the whole volume's (seams, halos) is tests/blockwise's.


def test_block_size_writes_the_blockwise_labels(tmp_path):
    _, expected = blockwise_masks("pair", "64")
    proc = run_cli("segment", block_tiff("pair"), *ORT, "--diameter", "30", "--block-size", "64",
                   "--out-dir", tmp_path)
    assert proc.returncode == 0, proc.stderr
    row = summary_row(proc.stdout, "pair.tif")
    assert "blockwise 24x64x64: 2 blocks" in row and "24x64x128" in row
    with tifffile.TiffFile(tmp_path / "pair_masks.tif") as tif:
        assert tif.is_imagej and tif.imagej_metadata["spacing"] == 0.5
        np.testing.assert_array_equal(tif.asarray(), expected)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pair_masks.tif"]  # no work folder left


def test_max_memory_picks_blocks_and_zarr_output(tmp_path):
    # 300 MB of libraries + 13.4 MB for the whole volume (nucseg_rt.blockwise.plan): 313 MB fits
    # blocks of 24x48x48 (6 blocks, interior seams) and not the whole volume
    proc = run_cli("segment", block_tiff("pair"), *ORT, "--diameter", "30", "--max-memory", "313MB",
                   "--output-format", "zarr", "--out-dir", tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "blockwise 24x48x48: 6 blocks" in summary_row(proc.stdout, "pair.tif")
    out = tmp_path / "pair_masks.ome.zarr"
    meta = json.loads((out / "labels" / "masks" / ".zattrs").read_text())
    assert meta["multiscales"][0]["datasets"][0]["coordinateTransformations"][0]["scale"] == \
        [0.5, 0.5, 0.5]
    np.testing.assert_array_equal(open_labels_zarr(out)[:], blockwise_masks("pair", "24,48,48")[1])


def test_zarr_input_segmented_whole(tmp_path):
    img, _ = block_volume("iso")
    src = zarr.create_array(str(tmp_path / "vol.zarr"), shape=img.shape, chunks=(8, 64, 64),
                            dtype=img.dtype)
    src[...] = img
    proc = run_cli("segment", tmp_path / "vol.zarr", *ORT, "--diameter", "30", "--out-dir",
                   tmp_path / "out")
    assert proc.returncode == 0, proc.stderr
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "out" / "vol_masks.tif"),
                                  whole_masks("iso"))


@pytest.mark.parametrize("args, pattern", [
    (["--block-size", "0"], r"--block-size.*got '0'"),
    (["--block-size", "big"], r"--block-size.*got 'big'"),
    (["--block-size", "8,8"], r"--block-size"),
    (["--max-memory", "lots"], r"--max-memory.*'lots'"),
    (["--scheduler", "cluster"], r"--scheduler.*'cluster'"),
    (["--scheduler", "tcp://127.0.0.1:9"], r"tcp://127.0.0.1:9 is not reachable"),
    (["--workers", "2"], r"`--workers` applies to `--scheduler` 'local' only"),
    (["--scheduler", "local", "--workers", "0"], r"--workers.*>= 1"),
])
def test_bad_large_options(tmp_path, args, pattern):
    proc = run_cli_here("segment", block_tiff("iso"), "--out-dir", tmp_path / "out", *args)
    assert_one_error_line(proc, pattern)
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


def test_scheduler_without_dask(tmp_path):
    proc = run_cli("segment", block_tiff("iso"), *ORT, "--scheduler", "local", "--out-dir", tmp_path,
                   hide=("distributed",))
    assert_one_error_line(proc, r"pip install 'nucseg-rt\[large\]'")
    assert not list(tmp_path.iterdir())


def test_blockwise_refuses_save_flows(tmp_path):
    proc = run_cli("segment", block_tiff("iso"), *ORT, "--block-size", "64", "--save-flows",
                   "--out-dir", tmp_path)
    assert_one_error_line(proc, r"`--save-flows` is not available for blockwise runs "
                                r"\(`--block-size`\)")
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("args, flag", [
    (["--output-format", "zarr"], "`--output-format` 'zarr'"), (["--block-size", "64"], "`--block-size`"),
    (["--max-memory", "4GB"], "`--max-memory`"), (["--scheduler", "local"], "`--scheduler`")])
def test_missing_large_extra_is_found_before_any_file(tmp_path, args, flag):
    # the input does not exist: the extra must be asked for before any file is looked at
    proc = run_cli("segment", tmp_path / "missing.tif", *ORT, *args, "--out-dir", tmp_path / "out",
                   hide=("zarr",))
    line = assert_one_error_line(proc, r"pip install 'nucseg-rt\[large\]'")
    assert line.startswith(f"error: {flag}") and "missing.tif" not in proc.stderr
    assert "nucseg-rt segment" not in proc.stdout and not (tmp_path / "out").exists()


def test_without_zarr_tiffs_still_segment_whole_and_blocks_ask_for_the_extra(tmp_path):
    hide = ("zarr",)
    proc = run_cli("segment", block_tiff("iso"), *ORT, "--diameter", "30", "--out-dir", tmp_path,
                   hide=hide)
    assert proc.returncode == 0, proc.stderr
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "iso_masks.tif"),
                                  whole_masks("iso"))
    proc = run_cli("segment", block_tiff("iso"), *ORT, "--block-size", "64", "--out-dir",
                   tmp_path / "b", hide=hide)
    assert_one_error_line(proc, r"`--block-size`: .*pip install 'nucseg-rt\[large\]'")
    assert not (tmp_path / "b").exists()


def test_scheduler_local_runs_a_batch_on_one_cluster(tmp_path):
    pytest.importorskip("distributed")
    import shutil

    _, expected = blockwise_masks("pair", "64")
    for name in ("a.tif", "c.tif"):
        shutil.copy(block_tiff("pair"), tmp_path / name)
    (tmp_path / "b.tif").write_bytes(b"not a tiff")
    proc = run_cli("segment", tmp_path / "a.tif", tmp_path / "b.tif", tmp_path / "c.tif", *ORT,
                   "--diameter", "30", "--block-size", "64", "--scheduler", "local",
                   "--workers", "1", "--out-dir", tmp_path / "out")
    assert proc.returncode == 1  # b.tif failed, the others were done
    assert "failed" in summary_row(proc.stdout, "b.tif")
    assert proc.stderr.count("started a LocalCluster of 1 worker at") == 1, proc.stderr
    for stem in ("a", "c"):
        assert "blockwise 24x64x64: 2 blocks" in summary_row(proc.stdout, f"{stem}.tif")
        np.testing.assert_array_equal(tifffile.imread(tmp_path / "out" / f"{stem}_masks.tif"),
                                      expected)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a_masks.tif", "c_masks.tif"]
