"""nucseg_rt.batch (the segment command's planning), in process: inputs, outputs, axes."""

from __future__ import annotations

import numpy as np
import pytest

from nucseg_rt.batch import (Job, axes_arguments, check_writable, find_images,
                             pending_outputs, plan_jobs)
from nucseg_rt.errors import InvalidInputError
from nucseg_rt.io.tiff import VolumeInfo


def _touch(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


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
    with pytest.raises(InvalidInputError, match="is not a folder"):
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


def test_check_writable(tmp_path):
    assert check_writable(tmp_path / "new" / "deep").is_dir()
    assert list((tmp_path / "new" / "deep").iterdir()) == []  # probe removed
    blocker = _touch(tmp_path / "file")
    with pytest.raises(InvalidInputError, match="not writable"):
        check_writable(blocker / "sub")


@pytest.mark.parametrize("axes, expected", [
    ("ZYX", {"channel_axis": None, "z_axis": 0}),
    ("ZCYX", {"channel_axis": 1, "z_axis": 0}),
    ("CZYX", {"channel_axis": 0, "z_axis": 1}),
    ("ZYXS", {"channel_axis": 3, "z_axis": 0}),
    (None, {"channel_axis": None, "z_axis": None}),
])
def test_axes_from_file(axes, expected):
    assert axes_arguments(VolumeInfo(None, axes, np.dtype(np.uint16))) == expected


def test_user_axes_win_and_time_is_refused():
    info = VolumeInfo(None, "ZCYX", np.dtype(np.uint16))
    assert axes_arguments(info, channel_axis=0) == {"channel_axis": 0, "z_axis": None}
    with pytest.raises(InvalidInputError, match="time axis"):
        axes_arguments(VolumeInfo(None, "TZYX", np.dtype(np.uint16)))
