"""diameter="auto": the estimate, where it is recorded, and its plane choice (bundled model)."""

import logging
import threading

import numpy as np
import pytest

from nucseg_rt import Segmenter
from nucseg_rt.errors import Cancelled, InvalidInputError
from nucseg_rt.eval.synth import make_volume
from nucseg_rt.network.diameter import _choose_planes


@pytest.fixture(scope="module")
def seg():
    return Segmenter("nuclei_3d", device="cpu")


@pytest.mark.parametrize("true_d,aniso", [(16.0, 1.0), (34.0, 2.0)])
def test_auto_diameter_close_to_truth(seg, true_d, aniso, caplog):
    img, labels, _ = make_volume((48, 144, 144), density=0.25, diameter_mean=true_d, anisotropy=aniso, seed=21)
    with caplog.at_level(logging.INFO, logger="nucseg_rt"):
        f = seg.predict_flows(img, anisotropy=aniso, diameter="auto")
    est = f.info["diameter_estimate"]
    assert f.info["diameter_source"] == "auto" and f.diameter == est["diameter"]
    assert 0.75 * true_d <= f.diameter <= 1.33 * true_d, est
    assert f.rescale == pytest.approx(seg.diam_mean / f.diameter)
    assert any("estimated nucleus diameter" in r.message for r in caplog.records)
    masks = seg.masks_from_flows(f)
    assert masks.max() > 0


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
