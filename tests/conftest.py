"""Shared fixtures: an isolated registry folder for every test, the tiny ONNX models and one
Segmenter of each (session-scoped), and the label cases a unit test shares with its reference.

Plain helpers (data, models, the CLI runner) are in ``helpers.py``: test folders have no
``__init__.py``, pytest puts tests/ on ``sys.path`` for this conftest, and every test module
imports ``from helpers import ...`` (never from another test module).
"""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

import pytest

from helpers import make_tiny_onnx

#: Idle OpenMP threads (numba's ``omp`` layer) sleep instead of spinning: with one test worker per
#: core (``-n auto``), a worker's spinning threads took the core the other worker was computing on
#: (the suite's CPU time fell from 360 s to 333 s, its wall time from 203 s to 188 s). What runs in
#: parallel is unchanged. Set before any OpenMP runtime starts; inherited by every spawned CLI.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def pytest_collection_modifyitems(config, items):
    """The reference tests (tests/reference: torch and Cellpose) come first, so that with xdist
    they start at once on one worker (:func:`pytest_xdist_make_scheduler`)."""
    items.sort(key=lambda item: "reference" not in item.path.parts)  # stable: order kept within


#: Tests that run as one unit on one xdist worker: the reference tests (Cellpose and torch are
#: imported by one worker only), and a module whose tests share an 11 s module fixture (one int8
#: quantization), which split over two workers was built twice.
_TOGETHER = ("tests/reference/", "tests/models/test_quantize.py")


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """With ``-n`` (xdist's default ``load``), each of :data:`_TOGETHER` runs as one unit on one
    worker, everything else test by test on whichever worker is free (as ``load``). So only one
    worker imports Cellpose (about 5 s: its numba functions compile at import) and torch. xdist's own
    ``--dist loadgroup`` does not group under pytest 9 (it renames ``item._nodeid``, which pytest
    9 no longer reads), hence this scheduler; an explicit ``--dist`` is left as given."""
    if config.option.dist != "load":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class Together(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return next((unit for unit in _TOGETHER if nodeid.startswith(unit)), nodeid)

    return Together(config, log)


@pytest.fixture(autouse=True)
def _one_torch_thread(request, monkeypatch):
    """PyTorch runs on one thread in the test processes, and the reference tests' subprocesses
    (export-cellpose) get ``OMP_NUM_THREADS=1``. With one test worker per core, PyTorch's default
    of one thread per core waits on the other worker's core at every operation: Cellpose's 3D
    eval of a (24, 112, 112) volume took 52 s instead of 2.5 s."""
    torch = sys.modules.get("torch")
    if "reference" in request.node.path.parts:
        monkeypatch.setenv("OMP_NUM_THREADS", "1")
        if torch is None:
            try:
                import torch
            except ImportError:
                torch = None
    if torch is not None and torch.get_num_threads() != 1:
        torch.set_num_threads(1)


@pytest.fixture(scope="session", autouse=True)
def _cli_server_closed():
    """The CLI fork server of this test process (``helpers.run_cli``) ends with the session."""
    yield
    from helpers import close_cli_server

    close_cli_server()


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


@pytest.fixture(scope="module")
def planes():
    """Per-plane labels of 3D nuclei (stitching tests and their Cellpose reference)."""
    from helpers import stitch_planes

    return stitch_planes()


@pytest.fixture(scope="module")
def holey():
    """3D labels with holes, cavities and tiny masks (postprocess tests and their reference)."""
    from helpers import holey_labels

    return holey_labels()


@pytest.fixture(scope="session")
def tiny_segmenter(tiny_onnx_model):
    """A Segmenter of the tiny model alone (no ortho partner), diam_mean 30. Made before the
    per-test registry folder exists and with ``use_probe=False``: it reads no saved probe."""
    from nucseg_rt import Segmenter

    with Segmenter(tiny_onnx_model, device="cpu", use_probe=False) as seg:
        yield seg


@pytest.fixture(scope="session")
def tiny_pair_segmenter(tiny_onnx_pair):
    """A Segmenter of the tiny model pair (main + ortho partner), diam_mean 30, no saved probe."""
    from nucseg_rt import Segmenter

    with Segmenter(tiny_onnx_pair, device="cpu", use_probe=False) as seg:
        yield seg
