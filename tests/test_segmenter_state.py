"""State a Segmenter owns: its onnxruntime sessions (close / context manager) and the probe
defaults it applies (logged, and off with use_probe=False). Tiny ONNX model, no torch."""

from __future__ import annotations

import json
import logging
import os

import numpy as np
import pytest

from helpers import blob_volume
from nucseg_rt import Segmenter
from nucseg_rt.errors import ClosedError
from nucseg_rt.network.predict import load_net


def _vol():
    """One bright blob on noise: one nucleus for the tiny model."""
    return blob_volume((6, 48, 48), centers=[(3, 16, 16)], sigma=4.0)


def test_context_manager_releases_the_sessions(tiny_onnx_pair):
    with Segmenter(tiny_onnx_pair, device="cpu", streams=2, threads=1) as seg:
        nets = [*seg.engine.nets, *seg.engine.nets_ortho]
        assert len(nets) == 4 and not any(n.closed for n in nets)
        res = seg.segment(_vol(), diameter=30.0, min_size=15)  # the blob is under 30 px
    assert res.masks.max() >= 1
    assert all(n.closed for n in nets)
    for use in (lambda: seg.segment(_vol(), diameter=30.0),
                lambda: seg.predict_flows(_vol(), diameter=30.0),
                lambda: seg.segment(_vol(), diameter=30.0, stitch_threshold=0.25)):
        with pytest.raises(ClosedError, match="this Segmenter was closed"):
            use()
    seg.close()  # idempotent
    with pytest.raises(ClosedError, match="session of pair.onnx was closed"):
        nets[0](np.zeros((1, 2, 32, 32), np.float32))


def test_close_leaves_other_segmenters_running(tiny_onnx_model):
    """No module-level session cache: each Segmenter (each load_net call) has its own sessions."""
    a = Segmenter(tiny_onnx_model, device="cpu", streams=1)
    b = Segmenter(tiny_onnx_model, device="cpu", streams=1)
    assert a.net.session is not b.net.session
    first = load_net(tiny_onnx_model, ["CPUExecutionProvider"])
    assert load_net(tiny_onnx_model, ["CPUExecutionProvider"]) is not first
    expected = b.segment(_vol(), diameter=30.0).masks
    a.close()
    np.testing.assert_array_equal(b.segment(_vol(), diameter=30.0).masks, expected)
    b.close()


def _save_probe(home, **entry):
    (home / "probe.json").write_text(json.dumps({"fp32": entry}))


def test_probe_defaults_are_applied_and_logged(tiny_onnx_model, _isolated_registry, caplog):
    _save_probe(_isolated_registry, batch_size=3, threads=1, streams=1)
    with caplog.at_level(logging.INFO, logger="nucseg_rt"):
        seg = Segmenter(tiny_onnx_model, device="cpu")
    assert (seg.batch_size, seg.threads, seg.streams) == (3, 1, 1)
    probe_lines = [r.getMessage() for r in caplog.records if "probe.json" in r.getMessage()]
    assert len(probe_lines) == 1
    assert "batch_size=3, threads=1, streams=1" in probe_lines[0]
    assert str(_isolated_registry / "probe.json") in probe_lines[0]

    caplog.clear()
    with caplog.at_level(logging.INFO, logger="nucseg_rt"):
        seg = Segmenter(tiny_onnx_model, device="cpu", streams=1, threads=1)
    assert seg.batch_size == 3  # only the value not given comes from the probe, and is logged
    probe_lines = [r.getMessage() for r in caplog.records if "probe.json" in r.getMessage()]
    assert len(probe_lines) == 1 and "batch_size=3" in probe_lines[0]
    assert "threads" not in probe_lines[0] and "streams" not in probe_lines[0]


def test_use_probe_false_ignores_the_saved_probe(tiny_onnx_model, _isolated_registry, caplog):
    _save_probe(_isolated_registry, batch_size=3, threads=1, streams=1)
    with caplog.at_level(logging.INFO, logger="nucseg_rt"):
        seg = Segmenter(tiny_onnx_model, device="cpu", use_probe=False)
    assert seg.batch_size == 2 and seg.streams == min(2, os.cpu_count() or 1)  # built-in defaults
    assert not any("probe.json" in r.getMessage() for r in caplog.records)


def test_no_probe_saved_logs_nothing(tiny_onnx_model, caplog):
    with caplog.at_level(logging.INFO, logger="nucseg_rt"):
        seg = Segmenter(tiny_onnx_model, device="cpu")
    assert seg.batch_size == 2
    assert not any("probe.json" in r.getMessage() for r in caplog.records)
