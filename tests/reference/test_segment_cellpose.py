"""Segmenter end to end: flows equal Cellpose 3.1's eval(do_3D=True) on the same weights
(reference: torch + Cellpose)."""

import shutil

import numpy as np
import pytest

pytest.importorskip("torch")

from helpers import CELLPOSE, blob_volume, cellpose_model, exported_model  # noqa: E402
from nucseg_rt import Segmenter  # noqa: E402

pytestmark = CELLPOSE


@pytest.fixture(scope="module")
def cellpose_tiny(tmp_path_factory):
    """(onnx path, CPnet, ortho CPnet) of a narrow Cellpose network with random weights."""
    return exported_model(tmp_path_factory.mktemp("seg"), ortho_seed=5, diam_mean=30.0, diam_labels=27.0)


@pytest.mark.parametrize("anisotropy,diameter,ortho", [(1.0, 24.0, False), (2.5, 36.0, True),
                                                       (2.5, None, False)])
def test_flows_equal_cellpose(cellpose_tiny, anisotropy, diameter, ortho, tmp_path):
    path, net, ortho_net = cellpose_tiny
    vol = blob_volume((9, 61, 83), n=6, sigma=6.0, seed=1, background=100.0)  # odd: padded, resized
    ref = cellpose_model(net, ortho_net if ortho else None)
    _, (_, dP, cp), _ = ref.eval(vol, channels=None, z_axis=0, do_3D=True, anisotropy=anisotropy,
                                 diameter=diameter, compute_masks=False)
    if not ortho:  # the main network alone: a copy without its ortho partner beside it
        alone = tmp_path / path.name
        shutil.copy(path, alone)
        path = alone
    seg = Segmenter(str(path), device="cpu", work_avoidance="plain")  # Cellpose's exact passes
    assert (seg.engine.nets_ortho is not None) == ortho
    flows, cellprob = seg.predict_flows(vol, anisotropy=anisotropy, diameter=diameter)
    assert flows.shape == dP.shape == (3, 9, 61, 83)
    assert cellprob.shape == cp.shape
    assert np.abs(flows - dP).max() < 1e-3
    assert np.abs(cellprob - cp).max() < 1e-3
