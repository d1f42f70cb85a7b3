"""Registering a Cellpose model with the export tool as converter converts it inside the registry
(reference: torch + Cellpose)."""

from __future__ import annotations

import pytest

from nucseg_rt.models import registry
from helpers import CELLPOSE

pytest.importorskip("torch")
pytestmark = CELLPOSE


@pytest.mark.slow
def test_add_cellpose_model_converts(tmp_path):
    from helpers import make_cellpose_net
    from nucseg_rt_export.onnx_export import export_cellpose
    src = tmp_path / "my_cellpose_model"
    make_cellpose_net(seed=3).save_model(str(src))
    ortho = tmp_path / "my_cellpose_ortho"
    make_cellpose_net(seed=4).save_model(str(ortho))
    rec = registry.add_model(src, ortho=ortho, convert=export_cellpose)
    assert rec.name == "my_cellpose_model" and rec.files.ortho_path is not None
    assert rec.metadata["role"] == "main" and rec.source == str(src.resolve())
    resolved = registry.resolve_model("my_cellpose_model")
    assert resolved.ortho_metadata["role"] == "ortho"
    assert not list(tmp_path.glob("*.onnx"))  # conversion happened inside the registry
