"""The bundled nuclei_3d model: same masks as Cellpose 3.1 running the same weights, and accurate.

models/nuclei_3d.pth is the Cellpose-format checkpoint the bundled ONNX file was exported from.
"""

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")

from helpers import CELLPOSE, cellpose_file_model  # noqa: E402
from nucseg_rt import Segmenter  # noqa: E402
from nucseg_rt.eval.metrics import average_precision  # noqa: E402
from nucseg_rt.eval.synth import make_volume  # noqa: E402

pytestmark = CELLPOSE

MODELS = Path(__file__).resolve().parents[2] / "models"


def ap50(a, b):
    return float(average_precision(a, b, thresholds=(0.5,))[0][0])


@pytest.fixture(scope="module")
def bundled():
    from nucseg_rt_export.unet import nbase_from_state_dict
    import torch

    pth = MODELS / "nuclei_3d.pth"
    nbase = nbase_from_state_dict(torch.load(pth, weights_only=True))
    return (Segmenter("nuclei_3d", device="cpu", backend="onnxruntime", work_avoidance="plain"),
            cellpose_file_model(pth, nbase))


@pytest.fixture(scope="module")
def volume():
    img, labels, _ = make_volume((48, 112, 112), anisotropy=2.0, seed=123, diameter_mean=30.0)
    return img, labels


def test_bundled_registry_entry_matches_shipped_file(bundled):
    seg, _ = bundled
    assert seg.model.bundled and seg.model.name == "nuclei_3d"
    assert seg.net.info.nchan == 2


def test_3d_masks_agree_with_cellpose_and_truth(bundled, volume):
    seg, ref = bundled
    img, labels = volume
    # Cellpose first: numba's OpenMP layer sets the process's OpenMP thread count back to the
    # core count, and PyTorch (one thread in tests, conftest) would then wait on the other
    # test worker's core (52 s instead of 2.5 s)
    theirs = ref.eval(img, channels=None, z_axis=0, do_3D=True, anisotropy=2.0, diameter=30.0)[0]
    flows = seg.predict_flows(img, anisotropy=2.0, diameter=30.0)  # one network run, two mask rules
    assert ap50(theirs, seg.masks_from_flows(flows, dynamics_method="cellpose")) >= 0.95
    assert ap50(labels, seg.masks_from_flows(flows, dynamics_method="stable")) >= 0.8


def test_stitch_mode_agrees_with_cellpose(bundled, volume):
    seg, ref = bundled
    img, _ = volume
    theirs = ref.eval(img, channels=None, z_axis=0, do_3D=False, stitch_threshold=0.3, diameter=30.0)[0]
    ours = seg.segment(img, diameter=30.0, stitch_threshold=0.3, min_size=15)  # Cellpose's
    assert theirs.shape == ours.masks.shape
    assert ap50(theirs, ours.masks) >= 0.95
