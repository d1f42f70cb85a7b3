"""The model's mask defaults (threshold, size filter, view weight) and the size-aware min_size."""

from __future__ import annotations

import math

import numpy as np
import pytest

from helpers import blob_volume, make_tiny_onnx
from nucseg_rt import Segmenter
from nucseg_rt.errors import InvalidInputError, ModelFormatError
from nucseg_rt.params import (CELLPOSE_MIN_SIZE, DEFAULT_MIN_SIZE_FRACTION, MaskDefaults,
                              MaskParams, size_aware_min_size)


@pytest.mark.parametrize("d, a, nz, fraction, want", [
    (30, 1, 20, 0.05, round(0.05 * math.pi / 6 * 30 ** 3)),       # 707 voxels
    (30, 4, 20, 0.05, round(0.05 * math.pi / 6 * 30 ** 3 / 4)),   # coarse Z: fewer voxels
    (30, 1, 1, 0.05, round(0.05 * math.pi / 4 * 30 ** 2)),        # a 2D image: the disc's area
    (30, 5, 3, 0.05, round(0.05 * math.pi / 4 * 30 ** 2 * 3)),    # a thin stack: a 3-plane slab
    (30, 15, 30, 0.05, round(0.05 * math.pi / 4 * 30 ** 2 * 4 / 3)),  # 4/3 plane deep
    (8, 1, 20, 0.05, CELLPOSE_MIN_SIZE),                          # small nuclei: Cellpose's floor
    (30, 1, 20, 0.0, CELLPOSE_MIN_SIZE),
])
def test_size_aware_min_size(d, a, nz, fraction, want):
    assert size_aware_min_size(d, a, nz, fraction) == want


def test_resolved_fills_only_what_was_not_given():
    defaults = MaskDefaults(cellprob_threshold=-1.5, min_size_fraction=0.1)
    p = MaskParams().resolved(defaults, diameter=20.0, anisotropy=2.0, n_planes=30)
    assert p.cellprob_threshold == -1.5
    assert p.min_size == round(0.1 * math.pi / 6 * 20 ** 3 / 2)
    given = MaskParams(cellprob_threshold=0.5, min_size=3)
    assert given.resolved(defaults, diameter=20.0, anisotropy=2.0, n_planes=30) == given
    stitched = MaskParams(stitch_threshold=0.5).resolved(
        MaskDefaults(cellprob_threshold=-2.0, stitch_cellprob_threshold=-0.5), diameter=20.0,
        anisotropy=1.0, n_planes=30)
    assert stitched.cellprob_threshold == -0.5  # one view's logit, not the sum of three
    plain = MaskParams().resolved(None, diameter=20.0, anisotropy=1.0, n_planes=30)
    assert plain.cellprob_threshold == 0.0  # Cellpose's, for a model without defaults
    assert plain.min_size == size_aware_min_size(20.0, 1.0, 30, DEFAULT_MIN_SIZE_FRACTION)


def test_defaults_from_metadata_and_refused_values():
    assert MaskDefaults.from_metadata({"diam_mean": "30"}) == MaskDefaults()
    got = MaskDefaults.from_metadata({"cellprob_threshold": "-1", "min_size_fraction": "0.1",
                                      "ortho_weight": "0.25"})
    assert got == MaskDefaults(-1.0, 0.1, 0.25, 0.0)
    with pytest.raises(InvalidInputError, match="ortho_weight"):
        MaskDefaults(ortho_weight=2.0)


def test_a_models_defaults_are_used_and_reported(tmp_path):
    vol = blob_volume()
    plain = Segmenter(make_tiny_onnx(tmp_path / "plain.onnx"), device="cpu")
    own = Segmenter(make_tiny_onnx(tmp_path / "own.onnx", metadata={
        "cellprob_threshold": "-2", "min_size_fraction": "0.2"}), device="cpu")
    assert own.mask_defaults == MaskDefaults(-2.0, 0.2, 1.0, 0.0)
    res = own.segment(vol, diameter=30.0)
    assert res.info["cellprob_threshold"] == -2.0 and res.info["min_size"] == 2827
    want = plain.segment(vol, diameter=30.0, cellprob_threshold=-2.0, min_size=2827)
    np.testing.assert_array_equal(res.masks, want.masks)
    mine = own.segment(vol, diameter=30.0, cellprob_threshold=0.0, min_size=15)  # given wins
    np.testing.assert_array_equal(mine.masks, plain.segment(vol, diameter=30.0,
                                                            min_size=15).masks)


def test_bad_metadata_is_a_model_format_error(tmp_path):
    with pytest.raises(ModelFormatError, match="metadata"):
        Segmenter(make_tiny_onnx(tmp_path / "bad.onnx", metadata={"ortho_weight": "lots"}),
                  device="cpu")


def test_ortho_weight_reweighs_the_side_views(tmp_path):
    """``cp = (cp_YX + w (cp_ZX + cp_ZY)) * 3 / (1 + 2 w)``: from the runs at w = 1 (the sum) and
    w = 0 (three times YX), the run at w = 0.25 is known; the flows do not change."""
    vol = blob_volume()
    runs = {}
    for w in (1.0, 0.0, 0.25):
        model = make_tiny_onnx(tmp_path / f"w{w}.onnx", metadata={"ortho_weight": str(w)})
        with Segmenter(model, device="cpu") as seg:
            runs[w] = seg.predict_flows(vol, diameter=30.0)
    s1, s0 = runs[1.0].cellprob, runs[0.0].cellprob
    yx, side = s0 / 3, s1 - s0 / 3
    np.testing.assert_allclose(runs[0.25].cellprob, (yx + 0.25 * side) * 3 / 1.5, atol=2e-4)
    np.testing.assert_array_equal(runs[0.25].flows, runs[1.0].flows)
    with Segmenter(make_tiny_onnx(tmp_path / "none.onnx"), device="cpu") as seg:
        np.testing.assert_array_equal(seg.predict_flows(vol, diameter=30.0).cellprob, s1)
