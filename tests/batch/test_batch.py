"""nucseg_rt.batch in process: planning inputs and outputs, typed run settings, the calibration
default, and the batch runner (per-file results and errors, fatal errors, cancel, blockwise
``diameter="auto"``) with the tiny ONNX model."""

from __future__ import annotations

import sys
import threading

import numpy as np
import pytest
import tifffile

from nucseg_rt.batch import (BatchRunner, Job, RunSettings, check_writable, find_images,
                             pending_outputs, plan_jobs, run_batch)
from nucseg_rt.blockwise.run import LargeSettings
from nucseg_rt.errors import InvalidInputError, MissingDependencyError, SettingsError
from nucseg_rt.io import VolumeInfo, read_header
from nucseg_rt.params import InputSpec, MaskParams
from helpers import blob_volume, write_calibrated


def _touch(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


# --- inputs and outputs -------------------------------------------------------------------------


def test_find_images_natural_order_and_filters(tmp_path):
    names = ["img10_nuc.tif", "img2_nuc.TIFF", "img1_nuc.tif", "img3_other.tif",
             "img4_nuc_masks.tif", "img5_nuc_cp_masks.tif", "img6_nuc.png", "._img7_nuc.tif"]
    for name in names:
        _touch(tmp_path / name)
    _touch(tmp_path / "sub" / "img0_nuc.ome.tif")
    found = find_images(tmp_path, img_filter="_nuc")
    assert [p.name for p in found] == ["img1_nuc.tif", "img2_nuc.TIFF", "img10_nuc.tif"]
    deeper = find_images(tmp_path, img_filter="_nuc", look_one_level_down=True)
    assert [p.name for p in deeper] == ["img1_nuc.tif", "img2_nuc.TIFF", "img10_nuc.tif",
                                        "img0_nuc.ome.tif"]


def test_find_images_errors(tmp_path):
    with pytest.raises(InvalidInputError, match="`folder` .* is not a folder"):
        find_images(tmp_path / "missing")
    _touch(tmp_path / "a.tif")
    with pytest.raises(InvalidInputError, match="no TIFF images in .* ending in '_x'"):
        find_images(tmp_path, img_filter="_x")


def test_plan_jobs_names_and_dedup(tmp_path):
    a = tmp_path / "in" / "a.ome.tif"
    jobs = plan_jobs([a, a, tmp_path / "in" / "b.tiff"], out_dir=tmp_path / "out",
                     save_flows=True)
    assert jobs == [Job(a, tmp_path / "out" / "a_masks.tif", tmp_path / "out" / "a_flows.npz"),
                    Job(tmp_path / "in" / "b.tiff", tmp_path / "out" / "b_masks.tif",
                        tmp_path / "out" / "b_flows.npz")]
    (job,) = plan_jobs([a])
    assert job.masks == a.parent / "a_masks.tif" and job.flows is None


def test_plan_jobs_refuses_overwriting(tmp_path):
    with pytest.raises(InvalidInputError, match="is also an input"):
        plan_jobs([tmp_path / "a.tif", tmp_path / "a_masks.tif"])
    with pytest.raises(InvalidInputError, match="would both write"):
        plan_jobs([tmp_path / "x" / "a.tif", tmp_path / "y" / "a.tif"], out_dir=tmp_path)


def test_pending_outputs(tmp_path):
    job = Job(tmp_path / "a.tif", tmp_path / "a_masks.tif", tmp_path / "a_flows.npz")
    assert pending_outputs(job) == [job.masks, job.flows]
    _touch(job.masks)
    assert pending_outputs(job) == [job.flows]
    assert pending_outputs(job, overwrite=True) == [job.masks, job.flows]


def test_check_writable_creates_nothing_unless_asked(tmp_path):
    assert check_writable(tmp_path / "new" / "deep") == tmp_path / "new" / "deep"
    assert list(tmp_path.iterdir()) == []  # checked, not created, no probe left
    assert check_writable(tmp_path / "new" / "deep", create=True).is_dir()
    assert list((tmp_path / "new" / "deep").iterdir()) == []
    blocker = _touch(tmp_path / "file")
    with pytest.raises(InvalidInputError, match="`out_dir` .*file is a file, not a folder"):
        check_writable(blocker)
    with pytest.raises(InvalidInputError, match="cannot be created: .*file is a file"):
        check_writable(blocker / "sub")


# --- settings ----------------------------------------------------------------------------------


@pytest.mark.parametrize("kwargs, match", [
    ({"anisotropy": 0}, "`anisotropy` must be > 0"),
    ({"anisotropy": float("nan")}, "`anisotropy` must be > 0"),
    ({"diameter": "big"}, "`diameter` must be a number > 0 or 'auto'"),
    ({"diameter": -3}, "`diameter` must be > 0"),
    ({"output_format": "png"}, "`output_format` must be 'tif' or 'zarr'"),
    ({"save_flows": True, "blockwise": {"block_size": 64}}, "`save_flows` is not"),
    ({"blockwise": {"workers": 2}}, "`workers` applies to `scheduler` 'local'"),
    ({"blockwise": {"max_memory": "lots"}}, "`max_memory` must be a size"),
    ({"blockwise": {"block_size": "4"}}, "`block_size` must be N or Z,Y,X with every size >= 8"),
])
def test_run_settings_are_checked_when_made(kwargs, match):
    with pytest.raises(InvalidInputError, match=match):
        if isinstance(kwargs.get("blockwise"), dict):
            kwargs = {**kwargs, "blockwise": LargeSettings(**kwargs["blockwise"])}
        RunSettings(**kwargs)


def test_run_settings_defaults():
    run = RunSettings()
    assert (run.anisotropy, run.diameter, run.resample, run.output_format) == \
        (None, None, True, "tif")
    assert RunSettings(diameter="auto").diameter == "auto"
    assert RunSettings(blockwise=LargeSettings(max_memory="1GB")).blockwise.max_memory == 10**9


@pytest.mark.parametrize("kwargs, named", [
    ({"output_format": "zarr"}, "`output_format` 'zarr'"),
    ({"block_size": 64}, "`block_size`"),
    ({"max_memory": "4GB"}, "`max_memory`"),
])
def test_missing_large_extra_is_found_up_front(monkeypatch, kwargs, named):
    monkeypatch.setitem(sys.modules, "zarr", None)
    RunSettings().check_environment()  # nothing asked that needs it
    run = RunSettings(**kwargs) if "output_format" in kwargs else \
        RunSettings(blockwise=LargeSettings(**kwargs))
    with pytest.raises(MissingDependencyError, match=rf"{named}.*pip install 'nucseg-rt\[large\]'"):
        BatchRunner(lambda: pytest.fail("no model before the check"), run=run)


# --- calibration ---------------------------------------------------------------------------------


def test_anisotropy_from_imagej_ome_and_missing(tmp_path):
    vol = np.zeros((4, 8, 8), np.uint16)
    tifffile.imwrite(tmp_path / "ij.tif", vol, imagej=True, resolution=(2.0, 2.0),
                     metadata={"spacing": 2.0, "unit": "um", "axes": "ZYX"})
    tifffile.imwrite(tmp_path / "ome.tif", vol, ome=True, photometric="minisblack", metadata={
        "axes": "ZYX", "PhysicalSizeX": 0.25, "PhysicalSizeY": 0.25, "PhysicalSizeZ": 1000.0,
        "PhysicalSizeZUnit": "nm"})
    tifffile.imwrite(tmp_path / "xy_only.tif", vol, imagej=True, resolution=(2.0, 2.0),
                     metadata={"unit": "um", "axes": "ZYX"})
    tifffile.imwrite(tmp_path / "plain.tif", vol, photometric="minisblack")
    values = {name: read_header(tmp_path / f"{name}.tif")[1].anisotropy()
              for name in ("ij", "ome", "xy_only", "plain")}
    assert values["ij"][0] == 4.0 and "ImageJ: Z step 2 um / pixel 0.5 um" in values["ij"][1]
    assert values["ome"][0] == pytest.approx(4.0) and "OME" in values["ome"][1]  # 1000 nm / 0.25 um
    assert values["xy_only"] == (None, "the file gives the pixel size but no Z step")
    assert values["plain"] == (None, "the file has no voxel size")
    assert VolumeInfo((3.0, 1.5, 1.5), "ZYX", np.dtype("u2"), "um", True, "x").anisotropy()[0] == 2.0


def test_ome_zarr_calibration_needs_one_unit(tmp_path):
    zarr = pytest.importorskip("zarr")
    from nucseg_rt.io import read_header as lazy_header

    for name, zunit, expected in (("same", "micrometer", 4.0), ("nm", "nanometer", 0.004),
                                  ("odd", "frames", None)):
        root = zarr.open_group(str(tmp_path / f"{name}.ome.zarr"), mode="w", zarr_format=2)
        root.create_array("0", shape=(4, 8, 8), chunks=(4, 8, 8), dtype="u2")
        axes = [{"name": "z", "type": "space", "unit": zunit},
                {"name": "y", "type": "space", "unit": "micrometer"},
                {"name": "x", "type": "space", "unit": "micrometer"}]
        root.attrs["multiscales"] = [{"version": "0.4", "axes": axes, "datasets": [
            {"path": "0", "coordinateTransformations": [{"type": "scale",
                                                          "scale": [2.0, 0.5, 0.5]}]}]}]
        value, _ = lazy_header(tmp_path / f"{name}.ome.zarr")[1].anisotropy()
        assert value == (pytest.approx(expected) if expected else None), name


# --- the runner ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def segmenter(tiny_onnx_model):
    from nucseg_rt import Segmenter

    return Segmenter(tiny_onnx_model, device="cpu", streams=1)


def test_run_batch_results_per_file(tmp_path, segmenter, caplog):
    a = write_calibrated(tmp_path / "a.tif", blob_volume(), z_step=1.0)  # anisotropy 2 in the file
    b = tmp_path / "b.tif"
    tifffile.imwrite(b, blob_volume(seed=2), photometric="minisblack")  # no calibration
    bad = tmp_path / "bad.tif"
    bad.write_text("not an image")
    out = tmp_path / "out"
    with caplog.at_level("WARNING", logger="nucseg_rt"):
        results = run_batch([a, b, bad], segmenter, out_dir=out,
                            run=RunSettings(diameter=30.0))
    ra, rb, rbad = results
    assert (ra.status, rb.status, rbad.status) == ("done", "done", "failed")
    assert (ra.anisotropy, rb.anisotropy) == (2.0, 1.0)
    assert ra.anisotropy_source.startswith("file calibration (ImageJ")
    assert rb.anisotropy_source.startswith("default")
    assert any("b.tif: the file has no voxel size; anisotropy 1.0 assumed" in r.getMessage()
               for r in caplog.records)
    assert (ra.diameter, ra.diameter_source) == (30.0, "given")
    assert ra.n_nuclei == 4 and ra.shape == (20, 64, 72)
    assert "not a TIFF" in rbad.error and not rbad.internal
    expected = segmenter.segment(tifffile.imread(a), anisotropy=2.0, diameter=30.0).masks
    np.testing.assert_array_equal(tifffile.imread(out / "a_masks.tif"), expected)
    again = run_batch([a], segmenter, out_dir=out, run=RunSettings(anisotropy=1.0))
    assert again[0].status == "skipped"
    given = run_batch([a], segmenter, out_dir=out, run=RunSettings(anisotropy=1.0, overwrite=True,
                                                                   diameter="auto"))
    assert (given[0].anisotropy, given[0].anisotropy_source) == (1.0, "given")
    assert given[0].diameter_source == "auto" and given[0].diameter > 0


def test_settings_that_do_not_fit_stop_before_the_model(tmp_path):
    src = write_calibrated(tmp_path / "a.tif", blob_volume(), z_step=0.5)
    jobs = plan_jobs([src], out_dir=tmp_path / "out")
    runner = BatchRunner(lambda: pytest.fail("the model must not load"),
                         inputs=InputSpec(channel_axis=5))
    with pytest.raises(SettingsError, match="`channel_axis` 5 is out of range for .*a.tif"):
        runner.run(jobs)
    assert not (tmp_path / "out").exists()


def test_absurd_scale_is_refused_before_any_work(tmp_path, segmenter):
    src = write_calibrated(tmp_path / "a.tif", blob_volume(), z_step=0.5)
    out = tmp_path / "out"
    for blockwise in (None, LargeSettings()):
        with pytest.raises(SettingsError, match=r"anisotropy 1e\+06 \(given\).*memory budget"):
            run_batch([src], segmenter, out_dir=out,
                      run=RunSettings(anisotropy=1e6, diameter=30.0, blockwise=blockwise))
        assert not out.exists()
    absurd_file = write_calibrated(tmp_path / "b.tif", blob_volume(), z_step=5e5)  # the file's fault
    (result,) = run_batch([absurd_file], segmenter, out_dir=out, run=RunSettings(diameter=30.0))
    assert result.status == "failed" and "file calibration" in result.error
    assert not out.exists()


def test_file_errors_are_recorded_bugs_flagged(tmp_path, segmenter, monkeypatch):
    src = write_calibrated(tmp_path / "a.tif", blob_volume(), z_step=0.5)

    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(segmenter, "segment", broken)
    (result,) = run_batch([src], segmenter, out_dir=tmp_path / "out")
    assert result.status == "failed" and result.internal
    assert result.error == "internal error (RuntimeError: boom)"

    def no_memory(*args, **kwargs):
        raise MemoryError("Unable to allocate 3 GiB")

    monkeypatch.setattr(segmenter, "segment", no_memory)
    (result,) = run_batch([src], segmenter, out_dir=tmp_path / "out")
    assert result.error.startswith("not enough memory") and not result.internal


def test_model_loaded_only_when_needed(tmp_path, segmenter):
    src = write_calibrated(tmp_path / "a.tif", blob_volume(), z_step=0.5)
    out = tmp_path / "out"
    assert run_batch([src], segmenter, out_dir=out)[0].status == "done"
    calls = []
    results = run_batch([src], lambda: calls.append(1) or segmenter, out_dir=out)
    assert results[0].status == "skipped" and calls == []


def test_cancel_abandons_the_file_and_starts_no_other(tmp_path, segmenter):
    files = [write_calibrated(tmp_path / f"{k}.tif", blob_volume(seed=k), z_step=0.5)
             for k in range(3)]
    cancel = threading.Event()
    seen = []

    def progress(stage, done, total):
        seen.append(stage)
        if stage == "ZX" and seen.count("files") == 2:  # in the network of the second file
            cancel.set()

    out = tmp_path / "out"
    results = run_batch(files, segmenter, out_dir=out, run=RunSettings(diameter=30.0),
                        progress=progress, cancel=cancel)
    assert [r.status for r in results] == ["done", "cancelled"]
    assert sorted(p.name for p in out.iterdir()) == ["0_masks.tif"]
    assert run_batch(files, segmenter, out_dir=out, cancel=cancel) == []


def test_blockwise_auto_diameter_is_estimated_once(tmp_path, segmenter, monkeypatch):
    pytest.importorskip("zarr")
    src = write_calibrated(tmp_path / "a.tif", blob_volume(), z_step=0.5)
    estimates, diameters = [], []
    real_estimate, real_segment = segmenter.estimate_diameter, segmenter.segment

    def estimate(*args, **kwargs):
        estimates.append(real_estimate(*args, **kwargs))
        return estimates[-1]

    def segment(vol, **kwargs):
        diameters.append(kwargs["diameter"])
        return real_segment(vol, **kwargs)

    monkeypatch.setattr(segmenter, "estimate_diameter", estimate)
    monkeypatch.setattr(segmenter, "segment", segment)
    (result,) = run_batch([src], segmenter, out_dir=tmp_path / "out", run=RunSettings(
        diameter="auto", blockwise=LargeSettings(block_size=(20, 32, 40))))
    assert result.status == "done", result.error
    assert "blockwise 20x32x40: 4 blocks" in result.note
    assert len(estimates) == 1 and result.diameter_source == "auto"
    assert result.diameter == estimates[0].diameter
    assert len(diameters) == 4 and set(diameters) == {result.diameter}  # one scale for all blocks


def test_mask_params_reach_the_masks(tmp_path, segmenter):
    src = write_calibrated(tmp_path / "a.tif", blob_volume(), z_step=0.5)
    (big,) = run_batch([src], segmenter, out_dir=tmp_path / "a", run=RunSettings(diameter=30.0),
                       params=MaskParams(min_size=10**6))
    assert big.status == "done" and big.n_nuclei == 0
