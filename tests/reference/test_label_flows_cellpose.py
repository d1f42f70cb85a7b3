"""nucseg_rt.masks.label_flows: heat-diffusion flows equal Cellpose 3.1's CPU masks_to_flows."""

import numpy as np
import pytest

from nucseg_rt.masks.label_flows import masks_to_flows
from test_label_flows import _blobs

torch = pytest.importorskip("torch")
dynamics = pytest.importorskip("cellpose.dynamics")


def _cellpose_flows(lab):
    return dynamics.masks_to_flows(lab, device=torch.device("cpu"))


@pytest.mark.parametrize("seed", [0, 1])
def test_2d_equals_cellpose(seed):
    lab = _blobs((53, 47), 14, seed)
    lab[lab == 3] = 0  # gap in ids
    lab[0:3, 0:3] = 5  # second component of label 5
    np.testing.assert_allclose(masks_to_flows(lab), _cellpose_flows(lab), atol=1e-4)


def test_3d_equals_cellpose():
    lab = _blobs((11, 27, 30), 9, 3)
    ours = masks_to_flows(lab.astype(np.uint16))
    assert ours.shape == (3, 11, 27, 30) and ours.dtype == np.float32
    np.testing.assert_allclose(ours, _cellpose_flows(lab), atol=1e-4)
