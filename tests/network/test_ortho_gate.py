"""An ortho partner with metadata ``min_anisotropy`` runs only for stacks at least that anisotropic;
below it the main network takes the ZY/ZX planes (flows equal to the model without a partner)."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from helpers import blob_volume, make_tiny_onnx
from nucseg_rt import Segmenter
from nucseg_rt.errors import ModelFormatError


def _pair(folder, min_anisotropy: str):
    ortho = make_tiny_onnx(folder / "gate.ortho.onnx", role="ortho", flow_gain=25.0,
                           metadata={"min_anisotropy": min_anisotropy})
    sha = hashlib.sha256(ortho.read_bytes()).hexdigest()
    return make_tiny_onnx(folder / "gate.onnx", ortho_file=ortho.name, ortho_sha256=sha)


def test_ortho_partner_runs_from_its_min_anisotropy(tmp_path):
    pair = _pair(tmp_path, "3")
    plain = make_tiny_onnx(tmp_path / "plain.onnx")  # the same main network, no partner
    vol = blob_volume((12, 48, 48), n=5, sigma=4.0, seed=3)
    with Segmenter(pair, device="cpu") as seg, Segmenter(plain, device="cpu") as ref:
        assert seg.engine.ortho_min_anisotropy == 3.0
        low = seg.predict_flows(vol, anisotropy=2.0, diameter=30.0)
        np.testing.assert_array_equal(low.flows, ref.predict_flows(vol, anisotropy=2.0, diameter=30.0).flows)
        assert low.info["ortho"] is None
        high = seg.predict_flows(vol, anisotropy=3.0, diameter=30.0)
        plain_high = ref.predict_flows(vol, anisotropy=3.0, diameter=30.0)
        assert high.info["ortho"] == "gate.ortho.onnx"
        assert np.abs(high.flows[0] - plain_high.flows[0]).max() > 1e-3  # Z flow from the partner


def test_bad_min_anisotropy_is_a_model_error(tmp_path):
    with pytest.raises(ModelFormatError, match="'min_anisotropy' must be a number, found 'steep'"):
        Segmenter(_pair(tmp_path, "steep"), device="cpu")
    with pytest.raises(ModelFormatError, match="'min_anisotropy' must be >= 0, found '-2'"):
        Segmenter(_pair(tmp_path, "-2"), device="cpu")
