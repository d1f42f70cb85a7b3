"""``nucseg-rt segment`` end to end (subprocess) with a tiny ONNX model: outputs, resume, bad input.

The tiny model (tests/helpers.py) makes flows that point to the centres of bright blobs, so
well separated Gaussian blobs come out as one nucleus each.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
import tifffile

from helpers import (CENTERS, assert_one_error_line, blob_timelapse, blob_volume, run_cli,
                     run_cli_here, summary_row, write_calibrated)


@pytest.fixture
def good(tmp_path):
    return write_calibrated(tmp_path / "good.tif", blob_volume())


# --- happy path, resume ------------------------------------------------------------------------------


def test_segment_writes_masks_and_flows(tmp_path, good, tiny_onnx_model):
    second = write_calibrated(tmp_path / "second.tif", blob_volume(seed=1))
    before = good.read_bytes()
    out = tmp_path / "out"
    proc = run_cli("segment", good, second, "--model", tiny_onnx_model, "--diameter", "30",
                   "--out-dir", out, "--save-flows")
    assert proc.returncode == 0, proc.stderr
    assert good.read_bytes() == before
    row = summary_row(proc.stdout, "good.tif")
    assert "20x64x72" in row and "done" in row
    assert "707 (size)" in row  # 5 % of a 30-px sphere at anisotropy 1
    assert re.search(r"│\s*4\s*│", row), row  # four blobs, four nuclei
    assert "2 done, 0 skipped, 0 failed" in proc.stdout

    with tifffile.TiffFile(out / "good_masks.tif") as tif:
        masks = tif.asarray()
        assert tif.is_imagej and tif.imagej_metadata["spacing"] == 0.5
        assert tif.pages[0].compression == tifffile.COMPRESSION.ADOBE_DEFLATE
    assert masks.shape == (20, 64, 72) and masks.dtype == np.uint16
    assert sorted(np.unique(masks)) == [0, 1, 2, 3, 4]
    assert len({masks[c] for c in CENTERS}) == 4  # each blob centre in its own nucleus
    with np.load(out / "good_flows.npz") as flows:
        assert flows["flows"].shape == (3, 20, 64, 72) and flows["cellprob"].shape == (20, 64, 72)
    assert not list(out.glob("*.part")) and not list(out.glob(".*"))


def test_segment_skips_done_files_and_overwrites_on_request(tmp_path, good, tiny_onnx_model):
    args = ("segment", good, "--model", tiny_onnx_model, "--diameter", "30")
    assert run_cli(*args).returncode == 0
    masks = tmp_path / "good_masks.tif"  # default: next to the input
    stamp = masks.stat().st_mtime_ns
    proc = run_cli(*args)
    assert proc.returncode == 0 and "skipped (outputs exist)" in summary_row(proc.stdout, "good.tif")
    assert masks.stat().st_mtime_ns == stamp
    proc = run_cli(*args, "--save-flows")  # only the missing output is written
    assert proc.returncode == 0 and "done" in summary_row(proc.stdout, "good.tif")
    assert masks.stat().st_mtime_ns == stamp and (tmp_path / "good_flows.npz").is_file()
    proc = run_cli(*args, "--overwrite")
    assert proc.returncode == 0 and "done" in summary_row(proc.stdout, "good.tif")
    assert masks.stat().st_mtime_ns != stamp


def test_segment_dir_filter_and_subfolders(tmp_path, tiny_onnx_model):
    vol = blob_volume(shape=(8, 40, 40), centers=[(4, 20, 20)])
    (tmp_path / "sub").mkdir()
    write_calibrated(tmp_path / "a_nuc.tif", vol)
    write_calibrated(tmp_path / "sub" / "b_nuc.tif", vol)
    write_calibrated(tmp_path / "c_other.tif", vol)
    write_calibrated(tmp_path / "old_nuc_masks.tif", vol)  # an output, never an input
    (tmp_path / "._a_nuc.tif").write_bytes(b"\x00\x05\x16\x07")  # macOS metadata file
    proc = run_cli("segment", "--dir", tmp_path, "--img-filter", "_nuc", "--look-one-level-down",
                   "--model", tiny_onnx_model, "--out-dir", tmp_path / "out")
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a_nuc_masks.tif",
                                                                     "b_nuc_masks.tif"]


# --- bad input files: one batch, one line per bad file ------------------------------------------------


def _bad_files(folder):
    files = {"missing": folder / "missing.tif", "not_tiff": folder / "not_tiff.tif"}
    files["not_tiff"].write_text("this is not an image")
    full = write_calibrated(folder / "full.tif", blob_volume(shape=(8, 32, 32)))
    files["truncated"] = folder / "truncated.tif"
    files["truncated"].write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    full.unlink()
    files["image_2d"] = folder / "image_2d.tif"
    tifffile.imwrite(files["image_2d"], blob_volume(shape=(1, 32, 32))[0])
    files["array_5d"] = folder / "array_5d.tif"
    tifffile.imwrite(files["array_5d"], np.ones((2, 3, 5, 16, 16), np.uint16))
    files["zero_size"] = folder / "zero_size.tif"
    with pytest.warns(UserWarning):
        tifffile.imwrite(files["zero_size"], np.zeros((0, 16, 16), np.uint16))
    nan = blob_volume(shape=(6, 32, 32)).astype(np.float32)
    nan[2, 5, 5] = np.nan
    files["nan"] = folder / "nan.tif"
    tifffile.imwrite(files["nan"], nan, photometric="minisblack")
    inf = blob_volume(shape=(6, 32, 32)).astype(np.float32)
    inf[3, 7, 7] = np.inf
    files["inf"] = folder / "inf.tif"
    tifffile.imwrite(files["inf"], inf, photometric="minisblack")
    return files


BAD = {"missing": "does not exist", "not_tiff": "not a TIFF file",
       "truncated": "truncated or damaged", "image_2d": "2D", "array_5d": "axes|dimensions",
       "zero_size": "zero-size", "nan": "NaN", "inf": "Inf"}


@pytest.fixture(scope="module")
def bad_batch(tmp_path_factory, tiny_onnx_model):
    folder = tmp_path_factory.mktemp("bad")
    files = _bad_files(folder)
    zeros = folder / "all_zero.tif"
    tifffile.imwrite(zeros, np.zeros((6, 32, 32), np.uint16), photometric="minisblack")
    good = write_calibrated(folder / "good.tif", blob_volume())
    inputs = [*files.values(), zeros, good]
    before = {p: p.read_bytes() for p in inputs if p.exists()}
    proc = run_cli("segment", *inputs, "--model", tiny_onnx_model, "--out-dir", folder / "out")
    return proc, files, folder, before


def test_bad_batch_exit_code_and_good_files(bad_batch):
    proc, _, folder, before = bad_batch
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert f"2 done, 0 skipped, {len(BAD)} failed" in proc.stdout
    assert "done" in summary_row(proc.stdout, "good.tif")
    assert all(p.read_bytes() == data for p, data in before.items())  # inputs untouched
    produced = sorted(p.name for p in (folder / "out").iterdir())
    assert produced == ["all_zero_masks.tif", "good_masks.tif"]


def test_all_zero_volume_gives_empty_labels(bad_batch):
    proc, _, folder, _ = bad_batch
    masks = tifffile.imread(folder / "out" / "all_zero_masks.tif")
    assert masks.shape == (6, 32, 32) and not masks.any()
    assert re.search(r"│\s*0\s*│", summary_row(proc.stdout, "all_zero.tif"))


@pytest.mark.parametrize("kind", sorted(BAD))
def test_bad_input_file(bad_batch, kind):
    proc, files, _, _ = bad_batch
    lines = [line for line in proc.stderr.splitlines()
             if line.startswith(f"error: {files[kind]}: ")]
    assert len(lines) == 1, proc.stderr
    assert re.search(BAD[kind], lines[0]), lines[0]
    assert "failed" in summary_row(proc.stdout, files[kind].name)


def test_axis_out_of_range(good, tiny_onnx_model, tmp_path):
    proc = run_cli("segment", good, "--model", tiny_onnx_model, "--channel-axis", "7", "--out-dir",
                   tmp_path / "out")
    assert_one_error_line(proc, r"`--channel-axis` 7 is out of range for .*good\.tif \(3 axes")
    assert "nucseg-rt segment" not in proc.stdout and not (tmp_path / "out").exists()


def test_time_lapse_end_to_end(tmp_path, tiny_onnx_model):
    """A TZYX ImageJ time-lapse: frame by frame into a TZYX label TIFF with its calibration;
    --frames picks frames, --link is said in the summary and the file's Info."""
    movie = write_calibrated(tmp_path / "movie.tif", blob_timelapse(3, (12, 48, 52)),
                             z_step=2.0, pixel=0.5)
    proc = run_cli("segment", movie, "--model", tiny_onnx_model, "--frames", "0,2", "--link",
                   "--diameter", "30", "--out-dir", tmp_path / "out")
    assert proc.returncode == 0, proc.stderr
    assert "done (frames 0,2: 2 of 3, linked)" in summary_row(proc.stdout, "movie.tif")
    with tifffile.TiffFile(tmp_path / "out" / "movie_masks.tif") as tif:
        assert tif.series[0].axes == "TZYX" and tif.series[0].shape == (2, 12, 48, 52)
        meta = tif.imagej_metadata
        assert (meta["spacing"], meta["unit"], meta["Info"]) == (2.0, "um",
                                                                 "frames=0,2\nlinked=true")
        assert tif.pages[0].resolution == (2.0, 2.0)
        assert tif.series[0].asarray().max() >= 1
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["movie_masks.tif"]


def test_time_lapses_are_not_averaged_and_bad_settings_said(tmp_path, tiny_onnx_model):
    """Issue 22: an ambiguous 4D file names --time-axis first, --channel-axis on its 20 time
    points does not average them (it did, with exit 0); --time-axis segments it; what
    time-lapses do not have is one error line naming the flag."""
    out = tmp_path / "out"
    raw = tmp_path / "embryo_tl.tif"
    tifffile.imwrite(raw, np.ones((20, 5, 44, 51), np.uint16))
    assert_one_error_line(run_cli("segment", raw, "--model", tiny_onnx_model, "--out-dir", out),
                          r"ambiguous.*pass --time-axis \(a time-lapse\) or --channel-axis "
                          r"\(and --z-axis\)")
    proc = run_cli("segment", raw, "--model", tiny_onnx_model, "--channel-axis", "0",
                   "--z-axis", "1", "--out-dir", out)
    assert_one_error_line(proc, r"`--chan` 0 \(gray\) would average the 20 entries of axis 0.*"
                                r"pass --time-axis \(a time-lapse\)")
    assert not out.exists()
    proc = run_cli("segment", raw, "--model", tiny_onnx_model, "--time-axis", "0", "--frames",
                   "3-4", "--out-dir", out)
    assert proc.returncode == 0, proc.stderr
    assert tifffile.imread(out / "embryo_tl_masks.tif").shape == (2, 5, 44, 51)
    movie = write_calibrated(tmp_path / "movie.tif", blob_timelapse(2, (12, 48, 52)))
    for flags, said in ((["--save-flows"], r"`--save-flows` is not available for time-lapses"),
                        (["--frames", "2-9"], r"`--frames` '2-9' is outside the 2 frames"),
                        (["--frames", "x"], r"`--frames` must be like '0-9,20'")):
        proc = run_cli("segment", movie, "--model", tiny_onnx_model, "--out-dir", out, *flags)
        assert_one_error_line(proc, said)
    assert sorted(p.name for p in out.iterdir()) == ["embryo_tl_masks.tif"]


def test_axes_from_the_file_are_not_reported_as_flags_and_nan_is_said(tmp_path, tiny_onnx_model):
    """Issue 22 item 4: channels read from the file's axes are not said as `--channel-axis 2`
    (the user passed no flag); an all-NaN float file is a NaN problem whatever the flags."""
    rgb = tmp_path / "rgb2d.tif"
    tifffile.imwrite(rgb, np.zeros((64, 64, 3), np.uint8), photometric="rgb")
    line = assert_one_error_line(run_cli("segment", rgb, "--model", tiny_onnx_model),
                                 r"rgb2d\.tif: .*whose axis 2 \(size 3\) holds channels \(file axes "
                                 r"YXS\) leaves a 2D image")
    assert "--channel-axis 2" not in line
    nan = tmp_path / "nan.tif"
    tifffile.imwrite(nan, np.full((4, 64, 64), np.nan, np.float32), photometric="minisblack")
    for flags in ([], ["--channel-axis", "0"], ["--z-axis", "0"]):
        assert_one_error_line(run_cli("segment", nan, "--model", tiny_onnx_model, *flags),
                              r"nan\.tif: the image contains NaN or Inf values")


def test_the_summary_says_flags_as_the_error_lines_do(tmp_path, good, tiny_onnx_model):
    """Issue 22 item 3: not `pass z_axis=0` nor `rescale`=0.0003 in the summary table."""
    thin = tmp_path / "thin.tif"
    tifffile.imwrite(thin, np.ones((2, 64, 64), np.uint16), photometric="minisblack")
    proc = run_cli("segment", good, thin, "--model", tiny_onnx_model, "--diameter", "100000",
                   "--out-dir", tmp_path / "out")
    assert proc.returncode == 1, proc.stderr
    table = proc.stdout  # the summary (the error lines are on stderr)
    assert "failed" in summary_row(table, "good.tif") and "failed" in summary_row(table, "thin.tif")
    assert "`--diameter`" in table and "--z-axis" in table, table
    assert "rescale" not in table and "z_axis" not in table, table


# --- bad models and settings ------------------------------------------------------------------------


def test_unknown_model_name(good, tiny_onnx_model, tmp_path):
    assert run_cli("add-model", tiny_onnx_model, "--name", "lab").returncode == 0
    proc = run_cli("segment", good, "--model", "nope", "--out-dir", tmp_path / "out")
    assert_one_error_line(proc, "unknown model name 'nope'; available: lab")
    assert not good.with_name("good_masks.tif").exists()
    assert not (tmp_path / "out").exists()  # not created for a run that failed before any file


def test_corrupt_model_file(good, tmp_path):
    bad = tmp_path / "broken.onnx"
    bad.write_bytes(b"\x08\x07garbage" * 50)
    assert_one_error_line(run_cli("segment", good, "--model", bad), "ONNX")


def test_wrong_channel_model(good, tmp_path, tiny_onnx_factory):
    model = tiny_onnx_factory(tmp_path / "three.onnx", nchan=3)
    assert_one_error_line(run_cli("segment", good, "--model", model), "3 channels")


def test_tampered_registered_model(good, tiny_onnx_model, _isolated_registry):
    assert run_cli("add-model", tiny_onnx_model, "--name", "lab").returncode == 0
    stored = next((_isolated_registry / "models").glob("lab.*.onnx"))
    stored.write_bytes(stored.read_bytes()[:-1] + b"\x01")
    proc = run_cli("segment", good, "--model", "lab")
    assert_one_error_line(proc, "changed since it was registered.*refusing to load it")


def test_int8_without_variant(good, tiny_onnx_model):
    assert run_cli("add-model", tiny_onnx_model, "--name", "lab").returncode == 0
    proc = run_cli("segment", good, "--model", "lab", "--precision", "int8")
    assert_one_error_line(proc, "no int8 variant.*nucseg-rt quantize lab")


def test_cuda_unavailable(good, tiny_onnx_model, tmp_path):
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("CUDA is available here")
    proc = run_cli("segment", good, "--model", tiny_onnx_model, "--device", "cuda", "--out-dir",
                   tmp_path / "out")
    line = assert_one_error_line(proc, "`--device` 'cuda' requested")
    assert "pip uninstall -y onnxruntime onnxruntime-gpu" in line and "onnxruntime-gpu[cuda" in line
    assert not (tmp_path / "out").exists()


DISK_FULL = """import errno, tifffile
def _full(fh, *args, **kwargs):
    fh.write(b"II*\\x00" + bytes(4096))
    raise OSError(errno.ENOSPC, "No space left on device")
tifffile.imwrite = _full
"""


def test_disk_full_during_write(tmp_path, good, tiny_onnx_model):
    before = good.read_bytes()
    out = tmp_path / "out"
    proc = run_cli("segment", good, "--model", tiny_onnx_model, "--out-dir", out, prelude=DISK_FULL)
    assert_one_error_line(proc, r"good\.tif: .*No space left on device")
    assert list(out.iterdir()) == []  # no result, no temporary file
    assert good.read_bytes() == before


# --- issue 14: what a new user hit ------------------------------------------------------------------


def test_file_names_and_hints_are_printed_literally(tmp_path, tiny_onnx_model):
    odd = write_calibrated(tmp_path / "embryo[red]_t1.tif", blob_volume())
    gone = tmp_path / "gone[large].tif"
    proc = run_cli("segment", odd, gone, "--model", tiny_onnx_model, "--diameter", "30", "--out-dir",
                   tmp_path / "out")
    assert proc.returncode == 1, proc.stderr
    assert "done" in summary_row(proc.stdout, "embryo[red]_t1.tif")
    assert "failed" in summary_row(proc.stdout, "gone[large].tif")
    assert (tmp_path / "out" / "embryo[red]_t1_masks.tif").is_file()


def test_the_files_calibration_is_the_default_anisotropy(tmp_path, tiny_onnx_model):
    from nucseg_rt import Segmenter

    vol = blob_volume((12, 64, 72), centers=[(3, 16, 18), (7, 44, 50)], sigma=4.0)
    src = write_calibrated(tmp_path / "cal.tif", vol, z_step=2.0)  # 2 um / 0.5 um: anisotropy 4
    plain = tmp_path / "plain.tif"
    tifffile.imwrite(plain, vol, photometric="minisblack")
    proc = run_cli("segment", src, plain, "--model", tiny_onnx_model, "--diameter", "30", "--out-dir",
                   tmp_path / "a")
    assert proc.returncode == 0, proc.stderr
    assert "4 (file)" in summary_row(proc.stdout, "cal.tif")
    assert "1 (default)" in summary_row(proc.stdout, "plain.tif")
    warnings = [line for line in proc.stderr.splitlines() if "WARNING" in line]
    assert len(warnings) == 1 and "plain.tif" in warnings[0] and "`--anisotropy`" in warnings[0]
    seg = Segmenter(tiny_onnx_model, device="cpu")
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "a" / "cal_masks.tif"),
                                  seg.segment(vol, anisotropy=4.0, diameter=30.0).masks)
    proc = run_cli("segment", src, "--model", tiny_onnx_model, "--diameter", "30", "--anisotropy", "1",
                   "--out-dir", tmp_path / "b")  # a given anisotropy wins
    assert proc.returncode == 0 and "1 (given)" in summary_row(proc.stdout, "cal.tif")
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "b" / "cal_masks.tif"),
                                  seg.segment(vol, anisotropy=1.0, diameter=30.0).masks)


def test_diameter_auto_or_a_number(tmp_path, good, tiny_onnx_model):
    proc = run_cli("segment", good, "--model", tiny_onnx_model, "--diameter", "auto", "--out-dir", tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert re.search(r"\d+\.\d \(auto\)", summary_row(proc.stdout, "good.tif"))
    assert_one_error_line(run_cli("segment", good, "--model", tiny_onnx_model, "--diameter", "big"),
                          r"`--diameter` must be a number > 0 or 'auto', got 'big'")


@pytest.mark.parametrize("args, pattern", [
    (["--niter", "-1"], r"`--niter` must be >= 0, got -1"),
    (["--cellprob-threshold", "nan"], r"`--cellprob-threshold` must be finite"),
    (["--chan", "5"], r"`--chan` must be 0 \(gray/none\), 1, 2 or 3, got 5"),
    (["--channel-axis", "1", "--z-axis", "1"], r"`--channel-axis` and `--z-axis` must differ"),
    (["--stitch-threshold", "1.5"], r"`--stitch-threshold` must be in \[0, 1\)"),
    (["--min-size", "10", "--dp-smooth", "-1"], r"`--dp-smooth` must be >= 0"),
])
def test_settings_are_checked_before_any_file_is_read(tmp_path, args, pattern):
    # the input does not exist and the model is unknown: only the setting may be reported
    proc = run_cli_here("segment", tmp_path / "missing.tif", "--model", "no-such-model", *args,
                   "--out-dir", tmp_path / "out")
    assert_one_error_line(proc, pattern)
    assert not (tmp_path / "out").exists()


def test_implausible_anisotropy_is_said_before_the_work(tmp_path, tiny_onnx_model):
    """Issue 22 item 5: a warning naming the flags, before the network runs (the file is small
    enough that the run itself is short)."""
    path = write_calibrated(tmp_path / "thin.tif", blob_volume((3, 40, 40), centers=[(1, 20, 20)]))
    proc = run_cli("segment", path, "--model", tiny_onnx_model, "--anisotropy", "120",
                   "--diameter", "30", "-q", "--out-dir", tmp_path / "out")
    assert proc.returncode == 0, proc.stderr
    warned = [line for line in proc.stderr.splitlines() if "beyond any microscope" in line]
    assert len(warned) == 1 and "`--anisotropy` 120" in warned[0], proc.stderr


def test_4d_without_axes_metadata_warns_also_when_quiet(tmp_path, tiny_onnx_model):
    path = tmp_path / "two.tif"
    vol = np.stack([blob_volume(), blob_volume(seed=3)], axis=1)  # (Z, 2, Y, X), no metadata
    tifffile.imwrite(path, vol, photometric="minisblack")
    proc = run_cli("segment", path, "--model", tiny_onnx_model, "--diameter", "30", "-q", "--out-dir",
                   tmp_path / "out")
    assert proc.returncode == 0, proc.stderr
    warnings = [line for line in proc.stderr.splitlines() if "WARNING" in line]
    assert any("treating axis 1 (size 2) as channels" in w and "--channel-axis" in w
               for w in warnings), proc.stderr
    # issue 22 item 7: quiet prints no summary table (nor progress), only warnings and errors
    assert proc.stdout == "", proc.stdout
    assert "files" not in proc.stderr and (tmp_path / "out" / "two_masks.tif").is_file()


@pytest.mark.parametrize("extra", [[], ["--block-size", "64"]])
def test_absurd_anisotropy_is_refused_before_any_work(tmp_path, good, tiny_onnx_model, extra):
    if extra:
        pytest.importorskip("zarr")
    out = tmp_path / "out"
    proc = run_cli("segment", good, "--model", tiny_onnx_model, "--anisotropy", "1e6", "--diameter", "30",
                   *extra, "--out-dir", out)
    line = assert_one_error_line(proc, r"anisotropy 1e\+06 \(given\).*network grid of 20000000 x")
    assert "memory budget" in line and "check `--anisotropy`" in line
    assert not out.exists()  # no output, no <output>.blocks/run.json
