"""nucseg_rt.io: reading TIFF volumes with their calibration, atomic label/flow writing."""

from __future__ import annotations

import errno

import numpy as np
import pytest
import tifffile

from nucseg_rt.errors import InvalidInputError
from nucseg_rt.io import (atomic_dir, atomic_write, read_header, read_volume, write_flows_npz,
                          write_labels_tif)


@pytest.fixture
def volume():
    return np.random.default_rng(0).integers(0, 4000, (7, 23, 31)).astype(np.uint16)


def _leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".part"))


# --- reading ---------------------------------------------------------------------------------


def test_read_imagej_volume_with_calibration(tmp_path, volume):
    path = tmp_path / "v.tif"
    tifffile.imwrite(path, volume, imagej=True, resolution=(1 / 0.25, 1 / 0.5),
                     metadata={"spacing": 2.0, "unit": "um", "axes": "ZYX"})
    data, info = read_volume(path)
    np.testing.assert_array_equal(data, volume)
    assert info.voxel_size_zyx == pytest.approx((2.0, 0.5, 0.25))
    assert (info.axes, info.dtype, info.unit) == ("ZYX", np.dtype(np.uint16), "um")


def test_read_hyperstack_axes(tmp_path):
    path = tmp_path / "zc.tif"
    tifffile.imwrite(path, np.zeros((5, 2, 9, 11), np.uint8) + 1, imagej=True,
                     metadata={"axes": "ZCYX"})
    data, info = read_volume(path)
    assert data.shape == (5, 2, 9, 11) and info.axes == "ZCYX"


def test_read_ome_calibration(tmp_path, volume):
    path = tmp_path / "v.ome.tif"
    tifffile.imwrite(path, volume, ome=True, metadata={
        "axes": "ZYX", "PhysicalSizeX": 0.3, "PhysicalSizeY": 0.4, "PhysicalSizeZ": 1.5})
    _, info = read_volume(path)
    assert info.voxel_size_zyx == pytest.approx((1.5, 0.4, 0.3))
    assert info.axes == "ZYX" and info.unit == "um"


def test_read_plain_tiff_has_no_calibration_or_axes(tmp_path, volume):
    path = tmp_path / "plain.tif"
    tifffile.imwrite(path, volume, metadata=None)
    data, info = read_volume(path)
    np.testing.assert_array_equal(data, volume)
    assert info.voxel_size_zyx is None and info.axes is None


@pytest.mark.parametrize("kwargs", [
    dict(imagej=True, resolution=(4.0, 2.0), metadata={"spacing": 2.0, "unit": "um", "axes": "ZYX"}),
    dict(ome=True, metadata={"axes": "ZYX", "PhysicalSizeX": 0.25, "PhysicalSizeY": 0.25,
                             "PhysicalSizeZ": 1.0}),
    dict()])
def test_read_header_equals_read_volume(tmp_path, volume, kwargs):
    """The one header reader gives the shape and calibration read_volume gives, from a TIFF."""
    path = tmp_path / "v.tif"
    tifffile.imwrite(path, volume, **kwargs)
    shape, info = read_header(path)
    vol, full_info = read_volume(path)
    assert shape == vol.shape == volume.shape and info == full_info


def test_read_header_errors_match_read_volume(tmp_path, volume):
    (tmp_path / "junk.tif").write_bytes(b"not a tiff at all")
    path = tmp_path / "cut.tif"
    tifffile.imwrite(path, volume, imagej=True)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    for bad, match in ((tmp_path / "none.tif", "file does not exist"),
                       (tmp_path, "not a file"),
                       (tmp_path / "junk.tif", "not a TIFF"),
                       (path, "truncated or damaged")):
        for read in (read_header, read_volume):
            with pytest.raises(InvalidInputError, match=match):
                read(bad)


def test_read_missing_path(tmp_path):
    with pytest.raises(InvalidInputError, match="does not exist"):
        read_volume(tmp_path / "nope.tif")


def test_read_folder_is_refused(tmp_path):
    with pytest.raises(InvalidInputError, match="not a file"):
        read_volume(tmp_path)


def test_read_not_a_tiff(tmp_path):
    path = tmp_path / "text.tif"
    path.write_text("hello, not an image")
    with pytest.raises(InvalidInputError, match="not a TIFF file"):
        read_volume(path)


@pytest.mark.parametrize("kwargs", [{}, {"imagej": True}, {"compression": "zlib"},
                                    {"imagej": True, "compression": "zlib"}, {"ome": True}],
                         ids=["plain", "imagej", "zlib", "imagej-zlib", "ome"])
@pytest.mark.parametrize("fraction", [0.3, 0.6, 0.9, 0.99])
def test_read_truncated_tiff(tmp_path, volume, kwargs, fraction):
    full = tmp_path / "full.tif"
    tifffile.imwrite(full, volume, **kwargs)
    data = full.read_bytes()
    cut = tmp_path / "cut.tif"
    cut.write_bytes(data[: int(len(data) * fraction)])
    # tifffile alone returns a single plane for some of these; we must refuse them all
    with pytest.raises(InvalidInputError, match="truncated or damaged"):
        read_volume(cut)


def test_read_zero_size_image(tmp_path):
    path = tmp_path / "empty.tif"
    with pytest.warns(UserWarning):
        tifffile.imwrite(path, np.zeros((0, 10, 10), np.uint16))
    with pytest.raises(InvalidInputError, match="zero-size axis"):
        read_volume(path)


# --- writing labels ----------------------------------------------------------------------------


def _labels(dtype=np.uint16, shape=(6, 17, 19)):
    labels = np.zeros(shape, dtype)
    labels[1:4, 2:9, 3:8] = 1
    labels[2:5, 10:15, 9:17] = 2
    return labels


def test_write_labels_roundtrip_imagej_compressed(tmp_path):
    labels = _labels()
    before = labels.copy()
    path = write_labels_tif(tmp_path / "m.tif", labels, (2.0, 0.5, 0.5), unit="um")
    np.testing.assert_array_equal(labels, before)  # input not modified
    with tifffile.TiffFile(path) as tif:
        assert tif.is_imagej
        assert tif.pages[0].compression == tifffile.COMPRESSION.ADOBE_DEFLATE
        assert tif.imagej_metadata["spacing"] == 2.0
    data, info = read_volume(path)
    np.testing.assert_array_equal(data, labels)
    assert info.voxel_size_zyx == pytest.approx((2.0, 0.5, 0.5)) and info.unit == "um"
    assert info.axes == "ZYX"
    assert _leftovers(tmp_path) == []


def test_write_labels_uint32_keeps_calibration(tmp_path):
    labels = _labels(np.uint32)
    labels[labels == 2] = 70_000
    path = write_labels_tif(tmp_path / "m.tif", labels, (3.0, 0.2, 0.2), unit="um")
    data, info = read_volume(path)
    assert data.dtype == np.uint32 and data.max() == 70_000
    assert info.voxel_size_zyx == pytest.approx((3.0, 0.2, 0.2))


def test_write_labels_without_voxel_size(tmp_path):
    path = write_labels_tif(tmp_path / "m.tif", _labels())
    _, info = read_volume(path)
    assert info.voxel_size_zyx is None


def test_write_labels_refuses_existing_file(tmp_path):
    path = tmp_path / "m.tif"
    path.write_bytes(b"precious")
    with pytest.raises(InvalidInputError, match="already exists"):
        write_labels_tif(path, _labels())
    assert path.read_bytes() == b"precious"
    write_labels_tif(path, _labels(), overwrite=True)
    np.testing.assert_array_equal(read_volume(path)[0], _labels())


@pytest.mark.parametrize("labels, match", [
    (np.zeros((4, 5, 6), np.float32), "uint8, uint16 or uint32"),
    (np.zeros((4, 5, 6), np.int32), "uint8, uint16 or uint32"),
    (np.zeros((2, 2, 4, 5, 6), np.uint16), r"\(T, Z, Y, X\), \(Z, Y, X\) or \(Y, X\)"),
])
def test_write_labels_bad_array(tmp_path, labels, match):
    with pytest.raises(InvalidInputError, match=match):
        write_labels_tif(tmp_path / "m.tif", labels)


@pytest.mark.parametrize("voxel", [(1.0, 0.5), (0.0, 1.0, 1.0), (1.0, -1.0, 1.0),
                                   (float("nan"), 1.0, 1.0)])
def test_write_labels_bad_voxel_size(tmp_path, voxel):
    with pytest.raises(InvalidInputError, match="`voxel_size` must be three finite values"):
        write_labels_tif(tmp_path / "m.tif", _labels(), voxel)


def test_write_labels_missing_folder(tmp_path):
    with pytest.raises(InvalidInputError, match="does not exist"):
        write_labels_tif(tmp_path / "no" / "m.tif", _labels())


def _disk_full_after_some_bytes(monkeypatch):
    def full(fh, *args, **kwargs):
        fh.write(b"II*\x00" + b"\x00" * 4096)  # a partly written file
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(tifffile, "imwrite", full)


def test_disk_full_removes_temporary_file(tmp_path, monkeypatch):
    _disk_full_after_some_bytes(monkeypatch)
    with pytest.raises(OSError, match="No space left on device"):
        write_labels_tif(tmp_path / "m.tif", _labels())
    assert list(tmp_path.iterdir()) == []


def test_disk_full_leaves_previous_output_intact(tmp_path, monkeypatch):
    path = tmp_path / "m.tif"
    write_labels_tif(path, _labels())
    before = path.read_bytes()
    _disk_full_after_some_bytes(monkeypatch)
    with pytest.raises(OSError):
        write_labels_tif(path, _labels(), overwrite=True)
    assert path.read_bytes() == before
    assert _leftovers(tmp_path) == []


def test_interrupt_removes_temporary_file(tmp_path):
    with pytest.raises(KeyboardInterrupt), atomic_write(tmp_path / "x.bin") as fh:
        fh.write(b"half")
        raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []


def test_atomic_dir_error_keeps_previous_folder_and_leaves_nothing(tmp_path):
    out = tmp_path / "m.ome.zarr"
    out.mkdir()
    (out / "kept").write_text("old")
    with pytest.raises(OSError, match="No space left"), atomic_dir(out) as tmp:
        tmp.mkdir()
        (tmp / "half").write_text("new")
        raise OSError(errno.ENOSPC, "No space left on device")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.ome.zarr"]
    assert [p.name for p in out.iterdir()] == ["kept"]


def test_atomic_dir_replaces_folder_on_success(tmp_path):
    out = tmp_path / "m.ome.zarr"
    out.mkdir()
    (out / "old").write_text("old")
    with atomic_dir(out) as tmp:
        tmp.mkdir()
        (tmp / "new").write_text("new")
    assert [p.name for p in tmp_path.iterdir()] == ["m.ome.zarr"]
    assert [p.name for p in out.iterdir()] == ["new"]


def test_failed_write_of_a_bad_label_array_leaves_nothing(tmp_path):
    with pytest.raises(InvalidInputError, match="`dtype` must be uint8, uint16 or uint32"):
        write_labels_tif(tmp_path / "m.tif", _labels(), dtype=np.int64)
    assert list(tmp_path.iterdir()) == []


# --- writing flows ---------------------------------------------------------------------------


def test_write_flows_roundtrip(tmp_path):
    rng = np.random.default_rng(1)
    flows = rng.normal(size=(3, 5, 7, 9))
    cellprob = rng.normal(size=(5, 7, 9)).astype(np.float32)
    path = write_flows_npz(tmp_path / "f.npz", flows, cellprob)
    with np.load(path) as data:
        assert data["flows"].dtype == np.float32 and data["cellprob"].dtype == np.float32
        np.testing.assert_allclose(data["flows"], flows.astype(np.float32))
        np.testing.assert_array_equal(data["cellprob"], cellprob)
    assert _leftovers(tmp_path) == []
    with pytest.raises(InvalidInputError, match="already exists"):
        write_flows_npz(path, flows, cellprob)


def test_write_flows_2d(tmp_path):
    path = write_flows_npz(tmp_path / "f.npz", np.zeros((2, 4, 5)), np.zeros((4, 5)))
    assert np.load(path)["flows"].shape == (2, 4, 5)


def test_write_flows_shape_mismatch(tmp_path):
    with pytest.raises(InvalidInputError, match="`flows` must have shape"):
        write_flows_npz(tmp_path / "f.npz", np.zeros((3, 5, 7, 9)), np.zeros((5, 7, 8)))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("dtype", [np.uint16, np.uint32])
def test_write_time_lapse_labels_plane_by_plane(tmp_path, dtype):
    """(T, Z, Y, X) labels, read one frame at a time, as a TZYX file with the calibration; a
    Z of 3 planes is not taken for RGB samples."""
    labels = np.arange(2 * 3 * 5 * 6, dtype=np.uint16).reshape(2, 3, 5, 6)
    reads = []

    class Frames:
        shape, dtype, ndim = labels.shape, labels.dtype, 4

        def __getitem__(self, t):
            reads.append(t)
            return labels[t]

    path = write_labels_tif(tmp_path / "tl.tif", Frames(), (2.0, 0.5, 0.5), unit="um",
                            dtype=dtype, note={"frames": "0,4"})
    assert reads == [0, 1]
    with tifffile.TiffFile(path) as tif:
        assert tif.series[0].axes == "TZYX" and tif.series[0].dtype == dtype
        np.testing.assert_array_equal(tif.series[0].asarray(), labels)
        meta = tif.imagej_metadata if dtype == np.uint16 else tif.shaped_metadata[0]
        assert meta["spacing"] == 2.0 and meta["unit"] == "um" and meta["Info"] == "frames=0,4"
        assert tif.pages[0].resolution == (2.0, 2.0)
