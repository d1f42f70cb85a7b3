"""Shared fixtures: an isolated registry folder for every test, and tiny ONNX models.

The tiny model itself is ``_tinyonnx.make_tiny_onnx`` (a module, not this conftest, so tests
import it by a name no other conftest.py shadows).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from _tinyonnx import make_tiny_onnx


@pytest.fixture(autouse=True)
def _isolated_registry(tmp_path_factory, monkeypatch):
    """Every test (and every subprocess it starts) uses a fresh, empty registry folder."""
    home = tmp_path_factory.mktemp("nucseg_rt_home")
    monkeypatch.setenv("NUCSEG_RT_HOME", str(home))
    return home


@pytest.fixture(scope="session")
def tiny_onnx_factory():
    """``make_tiny_onnx(path, *, nchan=2, diam_mean=30.0, role="main", ...) -> path``."""
    return make_tiny_onnx


@pytest.fixture(scope="session")
def tiny_onnx_model(tmp_path_factory) -> Path:
    """A tiny valid 2-channel model, ``tiny.onnx`` (diam_mean 30, no ortho partner)."""
    return make_tiny_onnx(tmp_path_factory.mktemp("tiny_model") / "tiny.onnx")


@pytest.fixture(scope="session")
def tiny_onnx_pair(tmp_path_factory) -> Path:
    """``pair.onnx`` naming its ortho partner ``pair.ortho.onnx`` (same folder, sha recorded)."""
    folder = tmp_path_factory.mktemp("tiny_pair")
    ortho = make_tiny_onnx(folder / "pair.ortho.onnx", role="ortho", flow_gain=30.0)
    sha = hashlib.sha256(ortho.read_bytes()).hexdigest()
    return make_tiny_onnx(folder / "pair.onnx", ortho_file=ortho.name, ortho_sha256=sha)
