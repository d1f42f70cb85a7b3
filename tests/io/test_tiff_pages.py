"""TIFFs read page by page without zarr (``_TiffPages``): the same blocks and frames as the whole
array, for every layout a microscope writes; a time-lapse segmented through the CLI without zarr
equals the run with it."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import tifffile

from helpers import blob_timelapse, run_cli, write_calibrated
from nucseg_rt.io import open_volume
from nucseg_rt.io._lazy import _TiffPages

HIDE_ZARR = "import sys; sys.modules['zarr'] = None; "


def _data(shape, seed=0):
    return np.random.default_rng(seed).integers(0, 4000, shape, dtype=np.uint16)


@pytest.mark.parametrize("layout", ["zyx", "tzyx", "tzcyx", "rgb", "tiled", "ome-tczyx"])
def test_pages_index_like_the_array(tmp_path, layout):
    path = tmp_path / f"{layout}.tif"
    if layout == "rgb":
        arr = _data((4, 30, 41, 3)).astype(np.uint8)
        tifffile.imwrite(path, arr, photometric="rgb")
    elif layout == "tiled":  # one volumetric page in 3D tiles: decoded whole on each read
        arr = _data((8, 32, 48))
        tifffile.imwrite(path, arr, tile=(4, 16, 16), volumetric=True)
    elif layout == "ome-tczyx":
        arr = _data((3, 2, 5, 20, 22))
        tifffile.imwrite(path, arr, ome=True, metadata={"axes": "TCZYX"})
    else:
        arr = _data({"zyx": (6, 33, 47), "tzyx": (3, 5, 21, 26), "tzcyx": (2, 4, 2, 19, 23)}[layout])
        tifffile.imwrite(path, arr, imagej=True, metadata={"axes": layout.upper()})
    with tifffile.TiffFile(path) as tif:
        series = tif.series[0]
        want = series.asarray()
        pages = _TiffPages(series)
        assert pages.shape == want.shape and pages.dtype == want.dtype
        rng = np.random.default_rng(1)
        for _ in range(12):
            index = []
            for n in want.shape:
                if rng.random() < 0.3:
                    index.append(int(rng.integers(n)))
                else:
                    a = int(rng.integers(n))
                    index.append(slice(a, int(rng.integers(a + 1, n + 1))))
            np.testing.assert_array_equal(pages[tuple(index)], want[tuple(index)])
        np.testing.assert_array_equal(pages[(slice(None),) * want.ndim], want)


def test_time_lapse_frames_without_zarr(tmp_path):
    movie = blob_timelapse(3, (6, 30, 34))
    path = write_calibrated(tmp_path / "movie.tif", movie, z_step=2.0)
    code = (HIDE_ZARR + "import numpy as np; from nucseg_rt.io import open_volume\n"
            f"with open_volume({str(path)!r}, allow_time=True) as v:\n"
            "    assert type(v._array).__name__ == '_TiffPages'\n"
            "    print(v.n_frames, [int(v.read_all(frame=t).sum()) for t in range(v.n_frames)])\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().split(maxsplit=1) == ["3", str([int(f.sum()) for f in movie])]
    with open_volume(path, allow_time=True) as v:  # with zarr: the same frames
        np.testing.assert_array_equal(v.read_all(frame=2), movie[2])


def test_cli_time_lapse_without_zarr_equals_with_it(tmp_path, tiny_onnx_model):
    movie = write_calibrated(tmp_path / "movie.tif", blob_timelapse(2, (12, 48, 52)), z_step=2.0)
    args = ("segment", movie, "--model", tiny_onnx_model, "--diameter", "30", "--link")
    without = run_cli(*args, "--out-dir", tmp_path / "a", hide=("zarr",))
    assert without.returncode == 0, without.stderr
    pytest.importorskip("zarr")
    assert run_cli(*args, "--out-dir", tmp_path / "b").returncode == 0
    a = tifffile.imread(tmp_path / "a" / "movie_masks.tif")
    assert a.shape == (2, 12, 48, 52) and a.max() >= 1
    np.testing.assert_array_equal(a, tifffile.imread(tmp_path / "b" / "movie_masks.tif"))
