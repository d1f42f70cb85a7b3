"""Time-lapses in the batch runner: frame by frame into a T,Z,Y,X label TIFF with the input's
calibration, --frames, --link, resume after an interrupt, and what time-lapses refuse."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import tifffile

from nucseg_rt.batch import RunSettings, run_batch
from nucseg_rt.errors import InvalidInputError
from nucseg_rt.params import InputSpec, MaskParams
from helpers import blob_timelapse, blob_volume, write_calibrated, write_ome_zarr_timelapse

SHAPE = (12, 48, 52)


@pytest.fixture(scope="module")
def segmenter(tiny_onnx_model):
    from nucseg_rt import Segmenter

    return Segmenter(tiny_onnx_model, device="cpu", streams=1, use_probe=False)


@pytest.fixture(scope="module")
def movie():
    return blob_timelapse(4, SHAPE)


def _read(path):
    with tifffile.TiffFile(path) as tif:
        return tif.series[0].asarray(), tif.series[0].axes, tif.imagej_metadata, \
            tif.pages[0].resolution


def test_imagej_time_lapse_end_to_end(tmp_path, segmenter, movie):
    src = write_calibrated(tmp_path / "movie.tif", movie, z_step=2.0, pixel=0.5)
    seen = []
    (res,) = run_batch([src], segmenter, run=RunSettings(diameter=30.0),
                       progress=lambda s, d, n: seen.append((s, d, n)))
    assert res.status == "done" and res.shape == movie.shape and res.anisotropy == 4.0
    assert "frames all: 4 of 4" in res.note
    masks, axes, meta, resolution = _read(tmp_path / "movie_masks.tif")
    assert axes == "TZYX" and masks.shape == movie.shape and masks.dtype == np.uint16
    assert meta["spacing"] == 2.0 and meta["unit"] == "um" and resolution == (2.0, 2.0)
    for t in (0, 3):  # each frame is its own volume: the 3D result of that frame
        np.testing.assert_array_equal(masks[t], segmenter.segment(movie[t], anisotropy=4.0,
                                                                  diameter=30.0).masks)
    assert [x for x in seen if x[0] == "frame"] == [("frame", k, 4) for k in range(5)]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["movie.tif", "movie_masks.tif"]


def test_ome_zarr_time_lapse_with_frames(tmp_path, segmenter, movie):
    src = write_ome_zarr_timelapse(tmp_path / "tl.ome.zarr", movie, z_step=1.0, pixel=0.25)
    (res,) = run_batch([src], segmenter, run=RunSettings(diameter=30.0, frames="0,2-3"))
    assert res.status == "done" and "frames 0,2-3: 3 of 4" in res.note
    masks, axes, meta, _ = _read(tmp_path / "tl_masks.tif")
    assert axes == "TZYX" and masks.shape == (3, *SHAPE) and meta["spacing"] == 1.0
    assert "frames=0,2-3" in meta["Info"]
    np.testing.assert_array_equal(masks[1], segmenter.segment(movie[2], anisotropy=4.0,
                                                              diameter=30.0).masks)


def test_link_keeps_labels_on_moving_nuclei(tmp_path, segmenter, movie):
    src = write_calibrated(tmp_path / "movie.tif", movie, z_step=2.0)
    small = MaskParams(min_size=15)  # keep the blobs leaving the volume: tracks that end
    run_batch([src], segmenter, out_dir=tmp_path / "plain", run=RunSettings(diameter=30.0),
              params=small)
    run_batch([src], segmenter, out_dir=tmp_path / "linked",
              run=RunSettings(diameter=30.0, link=True), params=small)
    plain = _read(tmp_path / "plain" / "movie_masks.tif")[0]
    linked = _read(tmp_path / "linked" / "movie_masks.tif")[0]
    assert _read(tmp_path / "linked" / "movie_masks.tif")[2]["Info"] == "frames=all\nlinked=true"
    for t in range(4):  # the same masks, relabelled
        pairs = np.unique(plain[t].astype(np.int64) * 1000 + linked[t])
        assert len(pairs) == len(np.unique(plain[t])) == len(np.unique(linked[t]))
    kept = 0
    for t in range(1, 4):
        before = set(np.unique(linked[:t])) - {0}
        for label in set(np.unique(linked[t])) - {0}:
            if label in np.unique(linked[t - 1]):  # kept: the same nucleus, moved a little
                a, b = linked[t - 1] == label, linked[t] == label
                assert (a & b).sum() / (a | b).sum() > 0.25
                kept += 1
            else:  # new: a label never used before
                assert label > max(before)
    assert kept >= 8  # 4 blobs, 3 frame steps; blobs that leave the volume end their track


@pytest.mark.parametrize("link", [False, True])
def test_interrupted_run_resumes_at_the_next_frame(tmp_path, segmenter, movie, link):
    src = write_calibrated(tmp_path / "movie.tif", movie, z_step=0.5)
    run = RunSettings(diameter=30.0, link=link)
    whole = tmp_path / "whole"
    run_batch([src], segmenter, out_dir=whole, run=run)
    cancel, out = threading.Event(), tmp_path / "out"

    def progress(stage, done, total):
        if stage == "frame" and done == 2:  # frames 0 and 1 finished
            cancel.set()

    (res,) = run_batch([src], segmenter, out_dir=out, run=run, progress=progress,
                       cancel=cancel)
    assert res.status == "cancelled" and not (out / "movie_masks.tif").exists()
    store = out / ".movie_masks.tif.frames"
    assert sorted(p.name for p in store.glob("t*.npy")) == ["t000000.npy", "t000001.npy"]
    counted = []
    (res,) = run_batch([src], segmenter, out_dir=out, run=run,
                       progress=lambda s, d, n: counted.append((s, d, n)))
    assert res.status == "done" and "2 resumed" in res.note
    assert [c for c in counted if c[0] == "frame"] == [("frame", 2, 4), ("frame", 3, 4),
                                                       ("frame", 4, 4)]
    np.testing.assert_array_equal(_read(out / "movie_masks.tif")[0],
                                  _read(whole / "movie_masks.tif")[0])
    assert not store.exists()


def test_other_settings_do_not_resume_a_store(tmp_path, segmenter, movie):
    src = write_calibrated(tmp_path / "movie.tif", movie[:2], z_step=0.5)
    cancel = threading.Event()
    run_batch([src], segmenter, run=RunSettings(diameter=30.0), cancel=cancel,
              progress=lambda s, d, n: cancel.set() if (s, d) == ("frame", 1) else None)
    assert (tmp_path / ".movie_masks.tif.frames").exists()
    (res,) = run_batch([src], segmenter, run=RunSettings(diameter=30.0, link=True))
    assert res.status == "done" and "resumed" not in res.note


def test_time_axis_given_for_a_file_without_metadata(tmp_path, segmenter, movie):
    src = tmp_path / "raw.tif"
    tifffile.imwrite(src, np.concatenate([movie, movie[:1]]))  # no axes, 5 frames: ambiguous
    (res,) = run_batch([src], segmenter, run=RunSettings(diameter=30.0))
    assert res.status == "failed" and "pass time_axis (a time-lapse)" in res.error
    (res,) = run_batch([src], segmenter, inputs=InputSpec(time_axis=0),
                       run=RunSettings(diameter=30.0, anisotropy=1.0, frames="3-4"))
    assert res.status == "done" and _read(tmp_path / "raw_masks.tif")[0].shape == (2, *SHAPE)


def test_what_time_lapses_refuse(tmp_path, segmenter, movie):
    src = write_calibrated(tmp_path / "movie.tif", movie[:2], z_step=0.5)
    one = write_calibrated(tmp_path / "one.tif", blob_volume(SHAPE), z_step=0.5)
    results = run_batch([src, one], segmenter, out_dir=tmp_path / "a",
                        run=RunSettings(diameter=30.0, save_flows=True))
    assert [r.status for r in results] == ["failed", "done"]  # the batch goes on
    assert "`save_flows` is not available for time-lapses" in results[0].error
    results = run_batch([src, one], segmenter, out_dir=tmp_path / "b",
                        run=RunSettings(diameter=30.0, frames="1"))
    assert [r.status for r in results] == ["done", "failed"]
    assert "one.tif has no time axis" in results[1].error and "`frames`" in results[1].error
    (res,) = run_batch([src], segmenter, out_dir=tmp_path / "c",
                       run=RunSettings(diameter=30.0, frames="0-5"))
    assert res.status == "failed" and "`frames` '0-5' is outside the 2 frames" in res.error
    from nucseg_rt.blockwise.run import LargeSettings

    (res,) = run_batch([src], segmenter, out_dir=tmp_path / "d", run=RunSettings(
        diameter=30.0, blockwise=LargeSettings(block_size="16")))
    assert res.status == "failed" and "would need blockwise segmentation" in res.error
    with pytest.raises(InvalidInputError, match="`frames` must be like '0-9,20'"):
        RunSettings(frames="last")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b", "movie.tif", "one.tif"]
