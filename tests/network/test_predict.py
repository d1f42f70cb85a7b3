"""The network stage on a tiny ONNX model: batch size, inputs, providers, bad input (equality with
Cellpose 3.1's run_3D / run_net: tests/reference/test_predict_cellpose.py)."""

import numpy as np
import pytest

from helpers import plane_input
from nucseg_rt.errors import DeviceUnavailableError, InvalidInputError
from nucseg_rt.network.predict import load_net, run_3d, run_planes, select_providers


@pytest.fixture(scope="module")
def nets(tiny_onnx_pair):
    """(main, ortho) networks of the tiny model pair."""
    return (load_net(tiny_onnx_pair, ["CPUExecutionProvider"]),
            load_net(tiny_onnx_pair.with_name("pair.ortho.onnx"), ["CPUExecutionProvider"]))


def test_batch_size_does_not_change_result(nets):
    x = plane_input((5, 40, 60, 1), seed=2)
    a = run_3d(nets[0], x, net_ortho=nets[1], batch_size=1)
    b = run_3d(nets[0], x, net_ortho=nets[1], batch_size=32)
    assert a.shape == (4, 5, 40, 60)
    assert np.abs(a - b).max() < 1e-4


def test_input_not_modified(nets):
    x = plane_input((4, 33, 35, 1), seed=3)
    before = x.copy()
    run_3d(nets[0], x, net_ortho=nets[1])
    np.testing.assert_array_equal(x, before)


def test_provider_selection_mocked():
    cuda = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    cpu = ["CPUExecutionProvider"]
    assert select_providers("auto", cuda)[0][0] == "CUDAExecutionProvider"
    assert select_providers("auto", cpu) == ["CPUExecutionProvider"]
    assert select_providers("cpu", cuda) == ["CPUExecutionProvider"]
    assert select_providers("cuda", cuda)[0][0] == "CUDAExecutionProvider"
    with pytest.raises(DeviceUnavailableError, match="no CUDAExecutionProvider"):
        select_providers("cuda", cpu)
    with pytest.raises(InvalidInputError, match="`device` must be"):
        select_providers("gpu", cpu)


def test_too_many_channels_rejected(nets):
    with pytest.raises(InvalidInputError, match="channels"):
        run_planes(nets[0], np.zeros((1, 16, 16, 3), np.float32), sink=lambda i, y: None)
