"""Segmenter end to end: flows equal Cellpose 3.1's eval(do_3D=True) on the same weights."""

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("cellpose.models")

from modelfactory import cellpose_model, exported_model  # noqa: E402
from nucseg_rt import Segmenter  # noqa: E402
from nucseg_rt.errors import InvalidInputError  # noqa: E402


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return exported_model(tmp_path_factory.mktemp("seg"), ortho_seed=5, diam_mean=30.0, diam_labels=27.0)


def blobs(shape, seed=0, n=12, radius=6.0):
    """Bright blurred spheres on a noisy background, uint16."""
    rng = np.random.default_rng(seed)
    zz, yy, xx = np.indices(shape, dtype=np.float32)
    img = np.zeros(shape, np.float32)
    for _ in range(n):
        c = rng.uniform([0, 0, 0], shape)
        d2 = (zz - c[0]) ** 2 + (yy - c[1]) ** 2 + (xx - c[2]) ** 2
        img += np.exp(-d2 / (2 * radius ** 2))
    img = 1000 * img + rng.normal(100, 10, shape)
    return np.clip(img, 0, 65535).astype(np.uint16)


@pytest.mark.parametrize("anisotropy,diameter,ortho", [(1.0, 24.0, False), (2.5, 36.0, True),
                                                       (2.5, None, False)])
def test_flows_equal_cellpose(tiny, anisotropy, diameter, ortho):
    path, net, ortho_net = tiny
    vol = blobs((11, 97, 131), seed=1)
    ref = cellpose_model(net, ortho_net if ortho else None)
    _, (_, dP, cp), _ = ref.eval(vol, channels=None, z_axis=0, do_3D=True, anisotropy=anisotropy,
                                 diameter=diameter, compute_masks=False)
    seg = Segmenter(str(path), device="cpu", work_avoidance="plain")  # Cellpose's exact passes
    if not ortho:
        seg.net_ortho = None
    flows, cellprob = seg.predict_flows(vol, anisotropy=anisotropy, diameter=diameter)
    assert flows.shape == dP.shape == (3, 11, 97, 131)
    assert cellprob.shape == cp.shape
    assert np.abs(flows - dP).max() < 1e-3
    assert np.abs(cellprob - cp).max() < 1e-3


def test_resample_false_gives_network_grid(tiny):
    path, _, _ = tiny
    vol = blobs((9, 40, 50), seed=2)
    seg = Segmenter(str(path), device="cpu")
    flows, cellprob = seg.predict_flows(vol, anisotropy=2.0, diameter=15.0, resample=False)
    assert flows.shape == (3, 36, 80, 100) and cellprob.shape == (36, 80, 100)
    res = seg.segment(vol, anisotropy=2.0, diameter=15.0, resample=False)
    assert res.masks.shape == (9, 40, 50)


def test_segment_returns_labels_and_leaves_input(tiny):
    path, _, _ = tiny
    vol = blobs((10, 64, 72), seed=3)
    before = vol.copy()
    res = Segmenter(str(path), device="cpu").segment(vol, anisotropy=1.0, diameter=30.0)
    np.testing.assert_array_equal(vol, before)
    assert res.masks.shape == vol.shape and res.masks.dtype in (np.uint16, np.uint32)
    assert res.flows.shape == (3, *vol.shape) and res.flows.dtype == np.float32
    assert res.cellprob.shape == vol.shape
    labels = np.unique(res.masks)
    assert labels[0] == 0 and np.array_equal(labels[1:], np.arange(1, len(labels)))


def test_constant_volume_gives_no_masks(tiny):
    path, _, _ = tiny
    res = Segmenter(str(path), device="cpu").segment(np.full((6, 40, 40), 7, np.uint16), anisotropy=1.0)
    assert res.masks.max() == 0


@pytest.mark.parametrize("kwargs,match", [
    (dict(anisotropy=0), "`anisotropy` must be > 0"),
    (dict(anisotropy=-2.0), "`anisotropy` must be > 0"),
    (dict(diameter=-5), "`diameter` must be > 0"),
    (dict(stitch_threshold=1.5), "`stitch_threshold`"),
    (dict(dp_smooth=-1), "`dp_smooth`"),
    (dict(niter=-3), "`niter`"),
])
def test_bad_arguments(tiny, kwargs, match):
    path, _, _ = tiny
    seg = Segmenter(str(path), device="cpu")
    with pytest.raises(InvalidInputError, match=match):
        seg.segment(np.zeros((4, 32, 32), np.uint16), **{"anisotropy": 1.0, **kwargs})


def test_bad_constructor_arguments(tiny):
    path, _, _ = tiny
    with pytest.raises(InvalidInputError, match="`precision`"):
        Segmenter(str(path), precision="int4")
    with pytest.raises(InvalidInputError, match="`batch_size`"):
        Segmenter(str(path), batch_size=0)
