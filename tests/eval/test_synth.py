"""nucseg_rt.eval.synth: seeded synthetic nuclei volumes."""

import numpy as np
import pytest

from nucseg_rt.errors import InvalidInputError
from nucseg_rt.eval.synth import make_volume, subsample_z

SHAPE = (33, 70, 77)


def test_deterministic_by_seed():
    a = make_volume(SHAPE, n_nuclei=6, diameter_mean=16, seed=3)
    b = make_volume(SHAPE, n_nuclei=6, diameter_mean=16, seed=3)
    c = make_volume(SHAPE, n_nuclei=6, diameter_mean=16, seed=4)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert a[2]["faint_labels"] == b[2]["faint_labels"]
    assert not np.array_equal(a[1], c[1])


def test_labels_consecutive_and_counted():
    img, lab, meta = make_volume(SHAPE, n_nuclei=8, diameter_mean=16, seed=1, keep_iso=True)
    assert img.dtype == np.uint16 and lab.dtype == np.uint16 and img.shape == lab.shape == SHAPE
    ids = np.unique(lab)
    np.testing.assert_array_equal(ids, np.arange(meta["n_nuclei"] + 1))
    assert 1 <= meta["n_nuclei"] <= 8
    assert len(meta["kinds"]) == len(meta["diameters"]) == meta["n_nuclei"]
    assert set(meta["faint_labels"]) <= set(range(1, meta["n_nuclei"] + 1))
    # nuclei are brighter than background
    assert img[lab > 0].mean() > img[lab == 0].mean()


@pytest.mark.parametrize("aniso", [1.0, 4.0, 11.5])
def test_anisotropy_shape_and_iso_labels(aniso):
    img, lab, meta = make_volume(SHAPE, n_nuclei=6, diameter_mean=16, anisotropy=aniso, seed=2, keep_iso=True)
    nz = int(np.floor((SHAPE[0] - 1) / aniso)) + 1
    assert img.shape == lab.shape == (nz, *SHAPE[1:])
    assert meta["labels_iso"].shape == SHAPE
    np.testing.assert_array_equal(subsample_z(meta["labels_iso"], aniso, order=0), lab)


def test_subsample_z_linear():
    v = np.arange(9, dtype=np.float32)[:, None, None] * np.ones((9, 2, 2), np.float32)
    np.testing.assert_allclose(subsample_z(v, 2.5)[:, 0, 0], [0, 2.5, 5, 7.5])


def test_bad_arguments():
    with pytest.raises(InvalidInputError, match="`anisotropy`"):
        make_volume(SHAPE, anisotropy=0.5)
    with pytest.raises(InvalidInputError, match="not both"):
        make_volume(SHAPE, n_nuclei=3, density=0.2)
    with pytest.raises(InvalidInputError, match="`shape_zyx_iso`"):
        make_volume((3, 50, 50))


def test_imports_without_torch_or_scipy():
    import subprocess
    import sys

    code = ("import sys; sys.modules.update(torch=None, scipy=None, cv2=None); "
            "import nucseg_rt.masks.label_flows, nucseg_rt.eval.synth")
    subprocess.run([sys.executable, "-c", code], check=True)
