"""diameter="auto": the estimate, where it is recorded, and its plane choice (tiny model on
seeded blobs). How close the bundled model's estimate comes to the truth:
benchmarks/diameter_auto.py."""

import logging
import threading

import numpy as np
import pytest

from helpers import blob_volume
from nucseg_rt.errors import Cancelled, InvalidInputError
from nucseg_rt.eval.synth import make_volume
from nucseg_rt.diameter import _choose_planes


@pytest.fixture(scope="module")
def seg(tiny_segmenter):
    """The tiny model's Segmenter (conftest.py), by this module's short name."""
    return tiny_segmenter


def _blobs(scale: int, planes: int) -> np.ndarray:
    """Four blobs of sigma 5 * ``scale`` in a (planes, 64, 72) * scale stack (YX scaled)."""
    centers = [(z * planes / 20, y * scale, x * scale)
               for z, y, x in [(6, 16, 18), (12, 40, 20), (10, 20, 52), (14, 46, 54)]]
    return blob_volume((planes, 64 * scale, 72 * scale), centers=centers, sigma=5.0 * scale)


@pytest.mark.parametrize("aniso", [1.0, 2.0])
def test_auto_diameter_follows_the_nucleus_size(seg, aniso, caplog):
    """Blobs twice as large in YX: an estimate twice as large (within 12 %), recorded and logged."""
    planes = int(20 / aniso)
    estimates = []
    for scale in (1, 2):
        with caplog.at_level(logging.INFO, logger="nucseg_rt"):
            f = seg.predict_flows(_blobs(scale, planes), anisotropy=aniso, diameter="auto")
        est = f.info["diameter_estimate"]
        assert f.info["diameter_source"] == "auto" and f.diameter == est["diameter"]
        assert f.rescale == pytest.approx(seg.diam_mean / f.diameter)
        assert seg.masks_from_flows(f).max() == 4
        estimates.append(f.diameter)
    assert any("estimated nucleus diameter" in r.message for r in caplog.records)
    assert 10 < estimates[0] < 20, estimates
    assert 1.76 <= estimates[1] / estimates[0] <= 2.24, estimates


def test_constant_volume_falls_back_to_model_default(seg):
    f = seg.predict_flows(np.full((5, 40, 40), 7, np.uint16), diameter="auto")
    assert f.diameter == seg.diam_labels and f.constant_input


def test_bad_diameter_values(seg):
    vol = np.zeros((3, 32, 32), np.uint16)
    for bad, match in [("big", "`diameter` must be a number > 0 or 'auto'"), (-3, "`diameter` must be > 0"),
                       (float("inf"), "`diameter` must be > 0")]:
        with pytest.raises(InvalidInputError, match=match):
            seg.predict_flows(vol, diameter=bad)


def test_auto_diameter_can_be_cancelled(seg):
    img, _, _ = make_volume((16, 96, 96), density=0.25, diameter_mean=20.0, seed=2)
    ev = threading.Event()
    stages = []

    def progress(stage, done, total):
        stages.append(stage)
        ev.set()

    with pytest.raises(Cancelled):
        seg.predict_flows(img, diameter="auto", progress=progress, cancel=ev)
    assert stages and set(stages) == {"diameter"}


def test_plane_choice_spreads_over_bright_planes():
    x = np.zeros((10, 8, 8, 1), np.float32)
    x[[1, 3, 4, 6, 8]] = 1.0
    assert _choose_planes(x, 3) == [1, 4, 8]
    assert _choose_planes(x[:1], 5) == [0]
