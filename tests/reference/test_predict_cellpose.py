"""The network stage: ORT over YX/ZX/ZY planes equals Cellpose 3.1's run_3D / run_net on the same
weights (reference: torch + Cellpose)."""

import numpy as np
import pytest

pytest.importorskip("torch")

from helpers import CELLPOSE, as_cellpose_runner, cellpose_module, exported_model, plane_input  # noqa: E402

core = cellpose_module("cellpose.core")
pytestmark = CELLPOSE
from nucseg_rt.network.predict import load_net, run_3d, run_planes  # noqa: E402


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    path, net, ortho = exported_model(tmp_path_factory.mktemp("net"), ortho_seed=7)
    return path, as_cellpose_runner(net), as_cellpose_runner(ortho)


@pytest.mark.parametrize("use_ortho", [False, True])
def test_run_3d_equals_cellpose(models, use_ortho):
    path, net, ortho = models
    ort_net = load_net(path, ["CPUExecutionProvider"])
    ort_ortho = load_net(path.with_name("tiny.ortho.onnx"), ["CPUExecutionProvider"]) if use_ortho else None
    x = plane_input((11, 53, 75, 2))  # odd sizes: every view padded
    ref, _ = core.run_3D(net, x.copy(), batch_size=8, net_ortho=ortho if use_ortho else None)
    got = np.moveaxis(run_3d(ort_net, x[..., :1], net_ortho=ort_ortho, batch_size=8), 0, -1)
    assert got.shape == ref.shape == (11, 53, 75, 4)
    assert np.abs(got - ref).max() < 1e-3


def test_run_planes_multi_tile_equals_cellpose_run_net(models):
    path, net, _ = models
    ort_net = load_net(path, ["CPUExecutionProvider"])
    x = plane_input((2, 250, 301, 2), seed=1)
    ref, _ = core.run_net(net, x.copy(), batch_size=8)
    out = np.zeros((2, 250, 301, 3), np.float32)

    def sink(i, y):
        out[i] = y.transpose(1, 2, 0)

    run_planes(ort_net, x, batch_size=8, sink=sink)
    assert np.abs(out - ref).max() < 1e-3
