"""nucseg_rt.masks.label_flows: heat-diffusion flows equal Cellpose 3.1's CPU masks_to_flows."""

import numpy as np
import pytest

from nucseg_rt.masks.label_flows import masks_to_flows
from helpers import CELLPOSE, cellpose_module, random_ellipsoids

torch = pytest.importorskip("torch")
dynamics = cellpose_module("cellpose.dynamics")
pytestmark = CELLPOSE


def _cellpose_flows(lab):
    return dynamics.masks_to_flows(lab, device=torch.device("cpu"))


@pytest.mark.parametrize("seed", [0, 1])
def test_2d_equals_cellpose(seed):
    lab = random_ellipsoids((53, 47), 14, radius=(2.5, 8.0), seed=seed, min_size=4)
    lab[lab == 3] = 0  # gap in ids
    lab[0:3, 0:3] = 5  # second component of label 5
    np.testing.assert_allclose(masks_to_flows(lab), _cellpose_flows(lab), atol=1e-4)


def test_3d_equals_cellpose():
    lab = random_ellipsoids((11, 27, 30), 9, radius=(2.5, 8.0), seed=3, min_size=4)
    ours = masks_to_flows(lab.astype(np.uint16))
    assert ours.shape == (3, 11, 27, 30) and ours.dtype == np.float32
    np.testing.assert_allclose(ours, _cellpose_flows(lab), atol=1e-4)
