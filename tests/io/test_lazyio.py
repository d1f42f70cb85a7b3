"""Lazy reading (TIFF, zarr, OME-Zarr), OME-Zarr and streamed TIFF label writing, size parsing."""

from __future__ import annotations

import json
import subprocess
import sys
import tracemalloc

import numpy as np
import pytest
import tifffile

zarr = pytest.importorskip("zarr")

import nucseg_rt.io as lazyio  # noqa: E402
from nucseg_rt.errors import InvalidInputError  # noqa: E402
from nucseg_rt.io import write_labels_tif  # noqa: E402


def _ramp(shape, seed=0):
    return np.random.default_rng(seed).integers(0, 4000, shape, dtype=np.uint16)


def test_tiff_block_read_matches_array(tmp_path):
    vol = _ramp((7, 45, 53))
    path = tmp_path / "v.tif"
    tifffile.imwrite(path, vol, imagej=True, resolution=(2.0, 2.0),
                     metadata={"axes": "ZYX", "spacing": 1.5, "unit": "um"})
    with lazyio.open_volume(path) as lazy:
        assert lazy.shape_zyx == (7, 45, 53) and lazy.nchan is None
        assert lazy.info.voxel_size_zyx == (1.5, 0.5, 0.5) and lazy.info.unit == "um"
        block = lazy.read((slice(2, 5), slice(10, 31), slice(0, 17)))
        np.testing.assert_array_equal(block, vol[2:5, 10:31, 0:17])


def test_tiff_channels_come_back_zcyx(tmp_path):
    vol = _ramp((5, 2, 30, 40))
    path = tmp_path / "c.tif"
    tifffile.imwrite(path, vol, imagej=True, metadata={"axes": "ZCYX"})
    with lazyio.open_volume(path) as lazy:
        assert lazy.shape_zyx == (5, 30, 40) and lazy.nchan == 2 and lazy.channel_axis == 1
        np.testing.assert_array_equal(lazy.read((slice(1, 3), slice(0, 9), slice(4, 8))),
                                      vol[1:3, :, 0:9, 4:8])
    yxz = np.ascontiguousarray(np.moveaxis(vol[:, 0], 0, -1))  # (Y, X, Z), axes given
    tifffile.imwrite(tmp_path / "yxz.tif", yxz)
    with lazyio.open_volume(tmp_path / "yxz.tif", z_axis=2) as lazy:
        np.testing.assert_array_equal(lazy.read_all(), vol[:, 0])


def test_tiff_block_read_does_not_load_the_volume(tmp_path):
    vol = _ramp((64, 256, 256))  # 8 MB
    path = tmp_path / "big.tif"
    tifffile.imwrite(path, vol, compression="zlib")
    with lazyio.open_volume(path) as lazy:
        tracemalloc.start()
        block = lazy.read((slice(10, 14), slice(100, 132), slice(0, 32)))
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    np.testing.assert_array_equal(block, vol[10:14, 100:132, 0:32])
    assert peak < 2 * 2**20, peak  # a few 128 kB planes, not the 8 MB volume


def test_zarr_and_ome_zarr_inputs(tmp_path):
    vol = _ramp((6, 20, 24))
    plain = zarr.create_array(str(tmp_path / "plain.zarr"), shape=vol.shape, chunks=(2, 8, 8),
                              dtype=vol.dtype)
    plain[...] = vol
    with lazyio.open_volume(tmp_path / "plain.zarr") as lazy:
        np.testing.assert_array_equal(lazy.read((slice(1, 4), slice(3, 19), slice(0, 24))),
                                      vol[1:4, 3:19])
    group = zarr.open_group(str(tmp_path / "img.ome.zarr"), mode="w", zarr_format=2)
    arr = group.create_array("0", shape=(1, 1, *vol.shape), chunks=(1, 1, 3, 10, 10),
                             dtype=vol.dtype)
    arr[...] = vol[None, None]
    axes = [{"name": "t", "type": "time"}, {"name": "c", "type": "channel"}] + [
        {"name": a, "type": "space", "unit": "micrometer"} for a in "zyx"]
    group.attrs.update({"multiscales": [{"version": "0.4", "axes": axes, "datasets": [
        {"path": "0", "coordinateTransformations": [
            {"type": "scale", "scale": [1, 1, 2.0, 0.25, 0.25]}]}]}]})
    with lazyio.open_volume(tmp_path / "img.ome.zarr") as lazy:
        assert lazy.shape_zyx == vol.shape and lazy.nchan is None
        assert lazy.info.voxel_size_zyx == (2.0, 0.25, 0.25) and lazy.info.unit == "um"
        np.testing.assert_array_equal(lazy.read_all(), vol)


def test_ome_zarr_time_axis_by_type(tmp_path):
    """An NGFF axis of type "time" is T whatever its name: a time-lapse, refused as one volume,
    read frame by frame with ``allow_time``."""
    group = zarr.open_group(str(tmp_path / "tl.ome.zarr"), mode="w", zarr_format=2)
    group.create_array("0", shape=(3, 4, 16, 16), dtype="u2")
    axes = [{"name": "frame", "type": "time"}] + [{"name": a, "type": "space"} for a in "zyx"]
    group.attrs.update({"multiscales": [{"version": "0.4", "axes": axes, "datasets": [
        {"path": "0", "coordinateTransformations": [{"type": "scale", "scale": [1, 2, 1, 1]}]}]}]})
    shape, info = lazyio.read_header(tmp_path / "tl.ome.zarr")
    assert info.axes == "TZYX"
    with pytest.raises(InvalidInputError, match="has a time axis.*file axes TZYX"):
        lazyio.open_volume(tmp_path / "tl.ome.zarr")
    group["0"][2] = 7
    with lazyio.open_volume(tmp_path / "tl.ome.zarr", allow_time=True) as lazy:
        assert lazy.n_frames == 3 and lazy.shape_zyx == (4, 16, 16)
        assert lazy.read_all(frame=2).max() == 7 and lazy.read_all(frame=1).max() == 0


def test_read_header_of_zarr_inputs_matches_open_volume(tmp_path):
    """One header reader for every input: a zarr group with one array and an OME-Zarr image."""
    vol = _ramp((6, 20, 24))
    path = lazyio.write_labels_zarr(tmp_path / "m.ome.zarr", vol.astype(np.uint16),
                                    (2.0, 0.5, 0.5), unit="um")
    shape, info = lazyio.read_header(path / "labels" / "masks")
    assert shape == vol.shape and info.voxel_size_zyx == (2.0, 0.5, 0.5)
    assert info.calibration == "OME-Zarr" and info.axes == "ZYX" and info.z_step_known
    with lazyio.open_volume(path / "labels" / "masks") as lazy:
        assert lazy.info == info
    group = zarr.open_group(str(tmp_path / "g.zarr"), mode="w")
    group.create_array("only", shape=(3, 4, 5), dtype="u2")
    assert lazyio.read_header(tmp_path / "g.zarr") == ((3, 4, 5), lazyio.VolumeInfo(
        None, None, np.dtype("u2")))
    with pytest.raises(InvalidInputError, match="does not exist"):
        lazyio.read_header(tmp_path / "none.ome.zarr")


def test_read_header_of_a_tiff_needs_no_zarr(tmp_path):
    path = tmp_path / "v.tif"
    tifffile.imwrite(path, _ramp((3, 8, 9)), imagej=True)
    code = ("import sys; sys.modules['zarr'] = None\n"
            "from nucseg_rt.io import read_header\n"
            f"print(read_header({str(path)!r})[0])\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "(3, 8, 9)"


def test_open_volume_errors(tmp_path):
    with pytest.raises(InvalidInputError, match="does not exist"):
        lazyio.open_volume(tmp_path / "nope.tif")
    (tmp_path / "bad.tif").write_text("not an image")
    with pytest.raises(InvalidInputError, match="cannot read as TIFF"):
        lazyio.open_volume(tmp_path / "bad.tif")
    with pytest.raises(InvalidInputError, match="channel_axis"):
        lazyio.open_volume(np.zeros((6, 3, 3, 8), np.uint16))  # two axes could be channels
    with pytest.raises(InvalidInputError, match="2D image.*3D segmentation needs a Z axis"):
        lazyio.open_volume(np.zeros((8, 8), np.uint16))


def test_ome_zarr_labels_metadata_and_atomic_write(tmp_path):
    labels = np.zeros((5, 30, 40), np.uint16)
    labels[1:4, 5:15, 5:20] = 7
    path = lazyio.write_labels_zarr(tmp_path / "m.ome.zarr", labels, (2.0, 0.5, 0.5), unit="um")
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    root = json.loads((path / "labels" / ".zattrs").read_text())
    assert root == {"labels": ["masks"]}
    meta = json.loads((path / "labels" / "masks" / ".zattrs").read_text())
    ms = meta["multiscales"][0]
    assert ms["version"] == "0.4" and [a["name"] for a in ms["axes"]] == ["z", "y", "x"]
    assert ms["axes"][0]["unit"] == "micrometer"
    assert ms["datasets"] == [{"path": "0", "coordinateTransformations": [
        {"type": "scale", "scale": [2.0, 0.5, 0.5]}]}]
    assert meta["image-label"]["version"] == "0.4"
    assert json.loads((path / "labels" / "masks" / "0" / ".zarray").read_text())["zarr_format"] == 2
    np.testing.assert_array_equal(lazyio.open_labels_zarr(path)[:], labels)
    with lazyio.open_volume(path / "labels" / "masks") as lazy:  # readable as an image, too
        assert lazy.info.voxel_size_zyx == (2.0, 0.5, 0.5)
    with pytest.raises(InvalidInputError, match="already exists"):
        lazyio.write_labels_zarr(path, labels)


def test_streamed_tiff_equals_in_memory_tiff(tmp_path):
    labels = np.random.default_rng(1).integers(0, 300, (6, 33, 41)).astype(np.uint32)
    store = lazyio.create_labels_zarr(tmp_path / "s.zarr", labels.shape, chunks=(3, 16, 16))
    store[...] = labels
    lazyio.write_labels_tif(tmp_path / "a.tif", store, (1.0, 0.5, 0.5), unit="um",
                            dtype=np.uint16)
    write_labels_tif(tmp_path / "b.tif", labels.astype(np.uint16), (1.0, 0.5, 0.5), unit="um")
    assert (tmp_path / "a.tif").read_bytes() == (tmp_path / "b.tif").read_bytes()
    with tifffile.TiffFile(tmp_path / "a.tif") as a, tifffile.TiffFile(tmp_path / "b.tif") as b:
        np.testing.assert_array_equal(a.asarray(), b.asarray())
        assert a.is_imagej and a.imagej_metadata["spacing"] == b.imagej_metadata["spacing"]


@pytest.mark.parametrize("text, nbytes", [("4GB", 4 * 10**9), ("512 MiB", 512 * 2**20),
                                          ("2e9", 2 * 10**9), (1000, 1000)])
def test_parse_memory(text, nbytes):
    assert lazyio.parse_memory(text) == nbytes


@pytest.mark.parametrize("text", ["lots", "4 parsecs", "-1GB", "0"])
def test_parse_memory_bad(text):
    with pytest.raises(InvalidInputError, match="max_memory"):
        lazyio.parse_memory(text)


def test_physical_memory_is_plausible():
    assert 2**28 < lazyio.physical_memory() < 2**50


def test_zarr_2_is_refused_with_the_reason(monkeypatch):
    import zarr

    from nucseg_rt.errors import MissingDependencyError
    from nucseg_rt.io import import_zarr

    monkeypatch.setattr(zarr, "__version__", "2.18.7")
    with pytest.raises(MissingDependencyError, match=r"zarr >= 3 .*found zarr 2\.18\.7"):
        import_zarr()
