"""The OpenVINO network engine (issue 23): the same interface and outputs as onnxruntime, bf16
and int8 masks close to fp32, and clear refusals (no OpenVINO, no native bf16, bf16 on
onnxruntime).

Tolerances: fp32 OpenVINO against fp32 onnxruntime, max abs difference <= 1e-3 on the raw
outputs (flows and cell-probability logits) for the tiny model, and <= 1e-3 relative to the
largest output for the bundled model (its flows reach hundreds; seen 4.5e-4 absolute at 505).
bf16 and int8 masks against fp32 masks: AP@0.5 >= 0.95 on a seeded synthetic volume (the 0.99
rule of the issue is for the held-out benchmark, not this test).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from helpers import (assert_one_error_line, blob_volume, run_cli, summary_row, write_calibrated)
from nucseg_rt import EngineOptions, Segmenter
from nucseg_rt.errors import ClosedError, InvalidInputError
from nucseg_rt.network.engine import AUTO_FLOOR, resolve_backend
from nucseg_rt.network.predict import load_net

BUNDLED = Path(__file__).resolve().parents[2] / "models"


def _tiles(shape, seed=0):
    return np.random.default_rng(seed).normal(0.5, 0.5, shape).astype(np.float32)


# --- without OpenVINO (these run everywhere) ---------------------------------------------------


def test_auto_is_onnxruntime_and_says_why():
    choice = resolve_backend("auto", "fp32")
    assert choice.backend == "onnxruntime" and "auto" in choice.reason
    assert resolve_backend("openvino", "bf16").reason == "given"
    with pytest.raises(InvalidInputError, match="`backend` must be") as err:
        EngineOptions(backend="tensorrt")
    assert err.value.param == "backend"


def test_bf16_on_onnxruntime_is_refused_naming_the_backend():
    with pytest.raises(InvalidInputError, match="--backend openvino") as err:
        EngineOptions(precision="bf16", backend="onnxruntime").providers()
    assert err.value.param == ("precision", "backend")
    # auto with bf16 means the one engine that runs it
    assert EngineOptions(precision="bf16").backend_choice().backend == "openvino"


def test_auto_rule_needs_measured_agreement_an_engine_and_the_cpu(monkeypatch):
    """auto runs OpenVINO bf16 in place of fp32 only where the model records masks agreeing with
    fp32's at AP@0.5 >= 0.99, OpenVINO is installed and the CPU has bf16; each refusal says why."""
    import importlib.util

    from nucseg_rt.network import _openvino, engine

    assert engine.AUTO_CANDIDATES == (("openvino", "bf16"),)  # measured faster (docs/benchmarks.md)
    monkeypatch.setattr(_openvino, "cpu_supports_bf16", lambda: True)
    monkeypatch.setattr(_openvino, "cpu_flags_bf16", lambda: None)  # not Linux: OpenVINO asked
    real_find = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: object() if name == "openvino" else real_find(name, *a))
    cpu = dict(device="cpu")
    ok = resolve_backend("auto", "fp32", agreement={"openvino/bf16": 0.995}, **cpu)
    assert (ok.backend, ok.precision) == ("openvino", "bf16")
    assert "0.995 >= 0.99" in ok.reason
    for agreement, why in [(None, "not measured"), ({"openvino/bf16": 0.985}, "0.985 < 0.99"),
                           ({"onnxruntime/int8": 0.999}, "not measured")]:
        c = resolve_backend("auto", "fp32", agreement=agreement, **cpu)
        assert (c.backend, c.precision) == ("onnxruntime", "fp32") and why in c.reason
    # explicit choices and other precisions are not second-guessed
    assert resolve_backend("onnxruntime", "fp32", agreement={"openvino/bf16": 1.0}).reason == "given"
    assert resolve_backend("auto", "int8", agreement={"openvino/bf16": 1.0}, **cpu).backend == "onnxruntime"
    # CUDA: onnxruntime whatever was measured
    monkeypatch.setattr(engine, "select_providers",
                        lambda device: [("CUDAExecutionProvider", {}), "CPUExecutionProvider"])
    c = resolve_backend("auto", "fp32", agreement={"openvino/bf16": 1.0}, device="auto")
    assert c.backend == "onnxruntime" and "CUDA" in c.reason
    # no native bf16 (by OpenVINO where the CPU flags are not readable, else by the flags), or
    # no OpenVINO
    monkeypatch.setattr(_openvino, "cpu_supports_bf16", lambda: False)
    c = resolve_backend("auto", "fp32", agreement={"openvino/bf16": 1.0}, **cpu)
    assert c.backend == "onnxruntime" and "no native bf16" in c.reason
    monkeypatch.setattr(_openvino, "cpu_flags_bf16", lambda: True)
    assert resolve_backend("auto", "fp32", agreement={"openvino/bf16": 1.0}, **cpu).backend \
        == "openvino"
    monkeypatch.setattr(_openvino, "cpu_flags_bf16", lambda: False)
    c = resolve_backend("auto", "fp32", agreement={"openvino/bf16": 1.0}, **cpu)
    assert c.backend == "onnxruntime" and "no native bf16" in c.reason
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "openvino" else real_find(name, *a))
    c = resolve_backend("auto", "fp32", agreement={"openvino/bf16": 1.0}, **cpu)
    assert c.backend == "onnxruntime" and "not installed" in c.reason


def test_cpu_flags_bf16_reads_the_kernel_flags(tmp_path):
    from nucseg_rt.network._openvino import cpu_flags_bf16

    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx512f avx512_bf16 avx512_vnni\n")
    assert cpu_flags_bf16(str(info)) is True
    info.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx512f amx_bf16 amx_tile\n")
    assert cpu_flags_bf16(str(info)) is True
    info.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx512f avx512_vnni\n")
    assert cpu_flags_bf16(str(info)) is False
    assert cpu_flags_bf16(str(tmp_path / "missing")) is None


def test_model_agreement_metadata():
    from nucseg_rt.network.engine import model_agreement

    assert model_agreement({"agreement": '{"openvino/bf16": 0.996}'}) == {"openvino/bf16": 0.996}
    assert model_agreement({}) == {} and model_agreement(None) == {}
    assert model_agreement({"agreement": "not json"}) == {}


def test_cli_openvino_without_the_extra_is_one_line(tmp_path, tiny_onnx_model):
    vol = write_calibrated(tmp_path / "a.tif", blob_volume())
    proc = run_cli("segment", vol, "--model", tiny_onnx_model, "--backend", "openvino",
                   hide=("openvino",))
    line = assert_one_error_line(proc, r"--backend")
    assert "pip install 'nucseg-rt[openvino]'" in line
    assert not list(tmp_path.glob("*_masks.tif"))
    proc = run_cli("watch", tmp_path, "--out-dir", tmp_path / "out", "--model", tiny_onnx_model,
                   "--backend", "openvino", hide=("openvino",))
    assert "pip install 'nucseg-rt[openvino]'" in assert_one_error_line(proc, r"--backend")
    # everything else works as today without it
    proc = run_cli("segment", vol, "--model", tiny_onnx_model, "--diameter", "30",
                   "--out-dir", tmp_path / "out", hide=("openvino",))
    assert proc.returncode == 0, proc.stderr
    assert "network: onnxruntime fp32 (auto: " in proc.stdout
    proc = run_cli("info", hide=("openvino",))
    assert proc.returncode == 0, proc.stderr
    assert "backend (auto): onnxruntime fp32" in proc.stdout
    # the bundled model records bf16 as faithful: auto says why it does not run it here
    assert "openvino/bf16: OpenVINO is not installed" in proc.stdout
    assert "openvino bf16: no (" in proc.stdout and "nucseg-rt[openvino]" in proc.stdout


def test_cli_bf16_on_onnxruntime_is_one_line(tmp_path, tiny_onnx_model):
    vol = write_calibrated(tmp_path / "a.tif", blob_volume())
    proc = run_cli("segment", vol, "--model", tiny_onnx_model, "--precision", "bf16",
                   "--backend", "onnxruntime")
    line = assert_one_error_line(proc, r"--precision")
    assert "--backend openvino" in line


# --- with OpenVINO ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ov():
    return pytest.importorskip("openvino")


def _pair(path, precision="fp32"):
    ort_net = load_net(path, ["CPUExecutionProvider"], 1)
    ov_net = load_net(path, [], 1, backend="openvino", precision=precision)
    return ort_net, ov_net


def test_fp32_equals_onnxruntime_on_the_tiny_model(ov, tiny_onnx_model):
    ort_net, ov_net = _pair(tiny_onnx_model)
    try:
        assert ov_net.info == ort_net.info
        for shape in ((2, 2, 64, 64), (1, 2, 48, 80), (3, 2, 224, 96)):  # several tile shapes
            x = _tiles(shape)
            a, b = ort_net(x), ov_net(x)
            assert b.shape == (shape[0], 3, *shape[2:]) and b.dtype == np.float32
            assert np.abs(a - b).max() <= 1e-3
        np.testing.assert_allclose(ov_net.background((2, 64, 64)),
                                   ort_net.background((2, 64, 64)), atol=1e-3)
    finally:
        ort_net.close()
        ov_net.close()


def test_fp32_equals_onnxruntime_on_the_bundled_model(ov):
    ort_net, ov_net = _pair(BUNDLED / "nuclei_3d.onnx")
    try:
        x = _tiles((2, 2, 96, 112), seed=1)
        a, b = ort_net(x), ov_net(x)
        assert np.abs(a - b).max() <= 1e-3 * max(1.0, np.abs(a).max())
        assert np.abs(a[:, 2] - b[:, 2]).max() <= 1e-3 * max(1.0, np.abs(a[:, 2]).max())
    finally:
        ort_net.close()
        ov_net.close()


def test_close_releases_and_a_closed_net_raises(ov, tiny_onnx_model):
    net = load_net(tiny_onnx_model, [], 1, backend="openvino")
    assert not net.closed and net.providers == ["OpenVINO CPU"]
    net.close()
    net.close()  # idempotent
    assert net.closed and net._compiled is None and net.info.nchan == 2
    with pytest.raises(ClosedError, match="closed"):
        net(_tiles((1, 2, 32, 32)))
    with Segmenter(tiny_onnx_model, device="cpu", backend="openvino", use_probe=False,
                   streams=2, threads=1) as seg:
        nets = list(seg.engine.nets)
        assert len(nets) == 2 and all(type(n).__name__ == "OpenVinoNet" for n in nets)
    assert all(n.closed for n in nets)


def test_default_streams_one_on_all_cores_for_openvino(ov, tiny_onnx_model):
    """OpenVINO runs one stream on all the cores by default (measured 1.4-1.6x faster in the
    pipeline than onnxruntime's default of two single-thread streams); given settings stand."""
    import os

    cores = os.cpu_count() or 1
    with Segmenter(tiny_onnx_model, device="cpu", backend="openvino", use_probe=False) as seg:
        assert (seg.streams, seg.threads) == (1, cores)
        assert seg.engine.nets[0]._compiled.get_property("INFERENCE_NUM_THREADS") == cores
    with Segmenter(tiny_onnx_model, device="cpu", backend="openvino", use_probe=False,
                   streams=2) as seg:
        assert (seg.streams, seg.threads) == (2, max(1, cores // 2))
    with Segmenter(tiny_onnx_model, device="cpu", backend="onnxruntime", use_probe=False) as seg:
        assert seg.streams == min(2, cores)


def test_bf16_refused_without_native_support(ov, monkeypatch, tiny_onnx_model):
    from nucseg_rt.network import _openvino

    monkeypatch.setattr(_openvino, "cpu_supports_bf16", lambda: False)
    with pytest.raises(InvalidInputError, match="native bf16") as err:
        Segmenter(tiny_onnx_model, backend="openvino", precision="bf16", use_probe=False)
    assert err.value.param == ("precision", "backend")
    with pytest.raises(InvalidInputError, match="CUDA"):
        EngineOptions(backend="openvino", precision="fp16").providers()


@pytest.fixture(scope="module")
def synthetic():
    from nucseg_rt.eval.synth import make_volume

    img, _, _ = make_volume((24, 96, 96), n_nuclei=10, diameter_mean=20.0, anisotropy=1.0, seed=7)
    return img


@pytest.fixture(scope="module")
def fp32_masks(synthetic):
    with Segmenter("nuclei_3d", device="cpu", backend="onnxruntime", use_probe=False, threads=1,
                   streams=1) as seg:
        return seg.segment(synthetic, anisotropy=1.0, diameter=20.0).masks


@pytest.mark.parametrize("backend,precision", [("openvino", "fp32"), ("openvino", "int8"),
                                               ("openvino", "bf16")])
def test_masks_against_fp32(ov, synthetic, fp32_masks, backend, precision):
    from nucseg_rt.eval.metrics import average_precision
    from nucseg_rt.network._openvino import cpu_supports_bf16

    if precision == "bf16" and not cpu_supports_bf16():
        pytest.skip("this CPU has no native bf16")
    with Segmenter("nuclei_3d", device="cpu", backend=backend, precision=precision,
                   use_probe=False, threads=1, streams=1) as seg:
        assert seg.backend == backend
        result = seg.segment(synthetic, anisotropy=1.0, diameter=20.0)
    assert f"{backend} {precision} (given)" == result.info["network"]
    assert fp32_masks.max() >= 5
    ap = average_precision(fp32_masks, result.masks, thresholds=(0.5,))[0]
    assert float(np.ravel(ap)[0]) >= 0.95


def test_cli_segment_with_openvino(ov, tmp_path, tiny_onnx_model):
    vol = write_calibrated(tmp_path / "a.tif", blob_volume())
    proc = run_cli("segment", vol, "--model", tiny_onnx_model, "--diameter", "30",
                   "--backend", "openvino", "--threads", "1", "--out-dir", tmp_path / "ov")
    assert proc.returncode == 0, proc.stderr
    assert "done" in summary_row(proc.stdout, "a.tif")
    assert "network: openvino fp32 (given)" in proc.stdout
    ref = run_cli("segment", vol, "--model", tiny_onnx_model, "--diameter", "30",
                  "--threads", "1", "--out-dir", tmp_path / "ort")
    assert ref.returncode == 0, ref.stderr
    import tifffile

    a = tifffile.imread(tmp_path / "ov" / "a_masks.tif")
    b = tifffile.imread(tmp_path / "ort" / "a_masks.tif")
    assert a.max() == 4 and np.array_equal(a, b)


def test_auto_runs_bf16_for_a_model_measured_faithful(ov, tmp_path, tiny_onnx_factory):
    """OpenVINO bf16 is auto's candidate (measured faster on the project's machine): a model whose metadata records bf16
    masks agreeing with fp32's runs it under ``backend="auto"`` (on a bf16 CPU), and says why;
    ``--backend onnxruntime`` keeps exact fp32; a model without the measurement keeps fp32."""
    from nucseg_rt.network._openvino import cpu_supports_bf16

    if not cpu_supports_bf16():
        pytest.skip("this CPU has no native bf16")
    model = tiny_onnx_factory(tmp_path / "measured.onnx",
                              metadata={"agreement": '{"openvino/bf16": 0.995}'})
    vol = write_calibrated(tmp_path / "a.tif", blob_volume())
    proc = run_cli("segment", vol, "--model", model, "--diameter", "30", "--threads", "1",
                   "--out-dir", tmp_path / "out")
    assert proc.returncode == 0, proc.stderr
    assert ("network: openvino bf16 for passes of 1.5 Mpx or more, onnxruntime fp32 below (auto: "
            "faster, and its masks agree with fp32 at AP@0.5 0.995 >= 0.99") in proc.stdout
    proc = run_cli("segment", vol, "--model", tiny_onnx_factory(tmp_path / "unmeasured.onnx"),
                   "--diameter", "30", "--threads", "1", "--out-dir", tmp_path / "out2")
    assert proc.returncode == 0, proc.stderr
    assert "network: onnxruntime fp32 (auto: openvino/bf16 not measured for this model)" in proc.stdout
    with Segmenter(model, device="cpu", use_probe=False) as seg:
        assert (seg.backend, seg.precision) == ("openvino", "bf16")
        assert "0.995 >= 0.99" in seg.engine.backend.reason
        assert seg.engine.backend.floor == AUTO_FLOOR and seg.options.floor == AUTO_FLOOR
        res = seg.segment(blob_volume(), anisotropy=1.0, diameter=30.0)
        assert res.masks.max() == 4
        # a small volume's pass runs on onnxruntime: no OpenVINO net was made
        assert res.info["network"].startswith("onnxruntime fp32 (auto: a pass under 1.5 Mpx")
        assert seg.engine._large is None and seg.engine.nets[0].providers != ["OpenVINO CPU"]
    with Segmenter(model, device="cpu", backend="onnxruntime", use_probe=False) as seg:
        assert (seg.backend, seg.precision) == ("onnxruntime", "fp32")


def test_floor_runs_small_passes_on_onnxruntime_and_large_ones_on_openvino(ov, tiny_onnx_model):
    """The size rule per pass: under the floor onnxruntime fp32 (exactly its masks), at or above
    it the OpenVINO nets, made on that first pass; the diameter estimate's few planes are a
    pass of their own; close() releases both."""
    vol = blob_volume()  # (20, 64, 72): 3 x 20 x 64 x 72 = 276,480 network pixels at scale 1
    options = EngineOptions(device="cpu", backend="openvino", precision="fp32", use_probe=False)
    with Segmenter(tiny_onnx_model, engine=options.replace(floor=276_481)) as seg:
        small = seg.segment(vol, anisotropy=1.0, diameter=30.0)
        assert seg.engine._large is None
        assert small.info["network"].startswith("onnxruntime fp32 (auto: a pass under")
        assert small.run.engine == "onnxruntime fp32"  # what the napari status shows
    with Segmenter(tiny_onnx_model, device="cpu", backend="onnxruntime", use_probe=False) as ort:
        np.testing.assert_array_equal(small.masks, ort.segment(vol, anisotropy=1.0,
                                                                diameter=30.0).masks)
    with Segmenter(tiny_onnx_model, engine=options.replace(floor=276_480)) as seg:
        large = seg.segment(vol, anisotropy=1.0, diameter=30.0)
        # the pass says what ran it, not the whole rule (that is in the run's summary)
        assert large.info["network"] == "openvino fp32 (a pass of 0.27648 Mpx or more; given)"
        assert large.run.engine == "openvino fp32"
        lanes = (seg.engine._first, seg.engine._large)
        assert lanes[1] is not None and lanes[1].nets[0].providers == ["OpenVINO CPU"]
        auto = seg.segment(vol, anisotropy=1.0, diameter="auto")  # estimate: a small pass
        assert auto.info["network"].startswith("openvino fp32")
    assert all(net.closed for lane in lanes for net in lane.nets)
    with pytest.raises(ClosedError):
        seg.engine.lane_for(10**9)


def test_auto_small_run_never_imports_openvino(ov, tmp_path, tiny_onnx_factory):
    """A run whose passes are all under the floor pays nothing for OpenVINO: not even its
    import (0.2 s), in a new process."""
    from nucseg_rt.network._openvino import cpu_supports_bf16

    if not cpu_supports_bf16():
        pytest.skip("this CPU has no native bf16")
    model = tiny_onnx_factory(tmp_path / "measured.onnx",
                              metadata={"agreement": '{"openvino/bf16": 0.995}'})
    code = ("import sys, numpy as np; from nucseg_rt import Segmenter; "
            f"seg = Segmenter({str(model)!r}, device='cpu', use_probe=False); "
            "r = seg.segment(np.random.default_rng(0).random((8, 64, 64)), anisotropy=1.0, "
            "diameter=30.0); print(seg.backend, 'openvino' in sys.modules); seg.close()")
    import subprocess

    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.split() == ["openvino", "False"], out.stderr


def test_a_large_pass_falls_back_to_onnxruntime_if_openvino_will_not_start(
        ov, monkeypatch, tiny_onnx_model, caplog):
    from nucseg_rt.network import _openvino

    def refuse(precision):
        raise InvalidInputError("no bf16 after all", param="precision")

    monkeypatch.setattr(_openvino, "check_openvino_precision", refuse)
    options = EngineOptions(device="cpu", backend="openvino", precision="bf16", floor=1,
                            use_probe=False)
    with Segmenter(tiny_onnx_model, engine=options) as seg:
        with caplog.at_level("WARNING", logger="nucseg_rt"):
            res = seg.segment(blob_volume(), anisotropy=1.0, diameter=30.0)
        assert res.info["network"] == ("onnxruntime fp32 (auto: OpenVINO did not start "
                                       "(no bf16 after all))")
        assert "OpenVINO did not start" in caplog.text
        closes = []
        for net in seg.engine.nets:  # the fallback runs these: close() releases each once
            monkeypatch.setattr(net, "close", lambda net=net: closes.append(net))
    assert sorted(map(id, closes)) == sorted(map(id, seg.engine._first.nets))


def test_floor_is_for_openvino_and_part_of_the_labels_key():
    with pytest.raises(InvalidInputError, match="`floor` applies to `backend` 'openvino' only"):
        EngineOptions(backend="onnxruntime", floor=100)
    with pytest.raises(InvalidInputError, match="`floor` must be >= 0, got -1"):
        EngineOptions(backend="openvino", floor=-1)
    plain = EngineOptions(backend="openvino", precision="bf16")
    assert plain.labels_key() != plain.replace(floor=AUTO_FLOOR).labels_key()


def test_watch_service_runs_an_openvino_segmenter(ov, tmp_path, tiny_onnx_model):
    from helpers import wait_until, watching
    from nucseg_rt.batch import RunSettings
    from nucseg_rt.watch import WatchSettings, read_record

    folder, out = tmp_path / "in", tmp_path / "out"
    folder.mkdir()
    write_calibrated(folder / "a.tif", blob_volume())
    with Segmenter(tiny_onnx_model, device="cpu", backend="openvino", use_probe=False) as seg, \
            watching(folder, out, seg, run=RunSettings(diameter=30.0),
                     settings=WatchSettings(poll=0.05, settle=0.1)):
        wait_until(lambda: (read_record(out / "a.tif.json") or {}).get("status") == "done",
                   "a.tif done")
    assert read_record(out / "a.tif.json")["n_nuclei"] == 4


def test_napari_logic_passes_the_backend(ov, tiny_onnx_model):
    from nucseg_rt.napari._logic import FlowParams, SegmenterCache

    made = []

    def factory(model, precision, backend):
        made.append(backend)
        return Segmenter(model, device="cpu", precision=precision, backend=backend,
                         use_probe=False)

    cache = SegmenterCache(factory)
    fp = FlowParams(model=str(tiny_onnx_model), backend="openvino")
    seg = cache.get(fp.model, fp.precision, fp.backend)
    assert made == ["openvino"] and seg.backend == "openvino"
    cache.close()
    assert seg.engine.closed


def test_openvino_not_imported_by_default():
    code = ("import sys, nucseg_rt; from nucseg_rt import Segmenter, EngineOptions; "
            "import nucseg_rt.network; EngineOptions().providers(); "
            "print('openvino' in sys.modules)")
    import subprocess

    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.strip() == "False", out.stderr


def test_an_openvino_segmenter_reads_metadata_without_the_onnx_package(ov):
    # the model's metadata comes from OpenVINO's own reading of the file: importing `onnx` for
    # it cost 0.5 s of every OpenVINO run's start-up (2026-12-07)
    code = ("import sys; from nucseg_rt import Segmenter; "
            "seg = Segmenter('nuclei_3d', backend='openvino', precision='fp32', threads=1); "
            "print('onnx' in sys.modules); print(repr(seg.engine.info)); seg.close()")
    import subprocess

    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    ort_net = load_net(BUNDLED / "nuclei_3d.onnx", ["CPUExecutionProvider"], 1)
    try:
        assert out.stdout.splitlines() == ["False", repr(ort_net.info)], out.stderr
    finally:
        ort_net.close()


def test_engine_refuses_a_choice_that_does_not_match_its_options(tiny_onnx_model):
    from nucseg_rt.network.engine import BackendChoice, Engine

    with pytest.raises(InvalidInputError, match="`choice` openvino bf16 .* does not match") as err:
        Engine(tiny_onnx_model, options=EngineOptions(device="cpu"),
               choice=BackendChoice("openvino", "bf16", "auto: test"))
    assert err.value.param == "choice"
