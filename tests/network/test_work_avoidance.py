"""Work avoidance: compact tiles, background tiles, YX on acquired planes; exact where it must
be, the same masks as the plain run on seeded blobs (tiny model), and the probe that tunes
batch/threads. Masks AP and time saved with the bundled model: benchmarks/work_avoidance.py."""

from __future__ import annotations

import json

import numpy as np
import pytest

from helpers import blob_volume
from nucseg_rt import Segmenter
from nucseg_rt.models import probe
from nucseg_rt.errors import InvalidInputError
from nucseg_rt.network.predict import WorkAvoidance, _Counter, load_net, run_3d, run_planes
from nucseg_rt.prep.resample import z_interpolation
from nucseg_rt.network.tiling import blend_weights, compact_starts, make_grid, tile_starts


@pytest.mark.parametrize("n", [40, 224, 225, 272, 400, 528, 1040, 3000])
def test_compact_tiles_cover_with_overlap_and_fewer_pixels(n):
    starts, size = compact_starts(n, 224, 0.1)
    assert size <= 224 and (size % 16 == 0 or size == n)
    assert starts[0] == 0 and starts[-1] + size == n
    if len(starts) > 1:
        assert np.min(np.diff(starts)) > 0
        assert size - np.max(np.diff(starts)) >= int(np.ceil(0.1 * 224))  # overlap kept
    cellpose = tile_starts(n, 224, 0.1)
    assert len(starts) * size <= len(cellpose) * min(224, n)


def test_compact_grid_blend_weights_cover_every_pixel():
    grid = make_grid(256, 300, compact=True)
    w = blend_weights(grid)
    assert np.isfinite(w).all() and (w > 0).all()
    assert grid.ntiles * grid.tile[0] * grid.tile[1] < make_grid(256, 300).ntiles * 224 * 224


def test_background_tiles_are_exact_on_empty_regions(tiny_onnx_model):
    net = load_net(tiny_onnx_model, ["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    planes = np.zeros((3, 300, 260, 1), np.float32)
    planes[1, 20:60, 30:70] = rng.random((40, 40, 1), dtype=np.float32) + 0.5  # one bright blob
    outs = {}
    for key, avoid in (("plain", WorkAvoidance.plain()),
                       ("skip", WorkAvoidance(background_bound=0.05))):
        got = np.zeros((3, 3, 300, 260), np.float32)
        counter = _Counter()

        def sink(i, out, got=got):
            got[i] = out

        run_planes(net, planes, batch_size=2, sink=sink, avoid=avoid, counter=counter)
        outs[key] = (got, counter)
    np.testing.assert_allclose(outs["skip"][0], outs["plain"][0], atol=1e-5)
    assert outs["skip"][1].skipped > 0 and outs["plain"][1].skipped == 0
    assert outs["skip"][1].run >= 1  # the tile with the blob ran


def test_native_yx_plumbing_is_exact_without_interpolation(tiny_onnx_model):
    net = load_net(tiny_onnx_model, ["CPUExecutionProvider"])
    x = np.random.default_rng(1).random((6, 40, 48, 1), dtype=np.float32)
    plain = run_3d(net, x)
    native = run_3d(net, x, yx_native=x)
    np.testing.assert_allclose(native, plain, atol=1e-6)
    with pytest.raises(InvalidInputError, match="`yx_native`"):
        run_3d(net, x, yx_native=x[:, :20])


def test_streams_give_the_same_outputs(tiny_onnx_model):
    nets = [load_net(tiny_onnx_model, ["CPUExecutionProvider"], threads=1)
            for k in range(3)]
    assert len({id(n) for n in nets}) == 3  # a session per stream
    x = np.random.default_rng(2).random((7, 300, 40, 1), dtype=np.float32)
    x[2] = 0  # a background plane: skipped tiles are counted in every stream
    avoid = WorkAvoidance(compact_tiles=True, background_bound=0.05)
    one = run_3d(nets[0], x, batch_size=2, avoid=avoid, stats=(s1 := {}))
    seen = []
    many = run_3d(nets, x, batch_size=2, avoid=avoid, stats=(s3 := {}),
                  progress=lambda label, done, total: seen.append((label, done, total)))
    np.testing.assert_array_equal(many, one)
    assert s3 == s1 and s1["YX"]["tiles_skipped"] > 0
    for label, total in (("YX", 7), ("ZX", 300), ("ZY", 40)):
        done = [d for lab, d, t in seen if lab == label]
        assert done == sorted(done) and done[-1] == total


def test_an_error_in_a_stream_is_raised(tiny_onnx_model):
    nets = [load_net(tiny_onnx_model, ["CPUExecutionProvider"], threads=1)
            for k in range(2)]

    def sink(i, out):
        if i == 3:
            raise MemoryError("plane 3")

    with pytest.raises(MemoryError, match="plane 3"):
        run_planes(nets, np.ones((6, 32, 32, 1), np.float32), batch_size=1, sink=sink)


def test_segmenter_streams(tiny_onnx_model):
    import os

    img = blob_volume((12, 96, 96), n=6, seed=4)
    runs = {k: Segmenter(tiny_onnx_model, device="cpu", streams=k, use_probe=False).segment(
        img, anisotropy=2.0, diameter=30.0) for k in (1, 2)}
    assert runs[1].masks.max() > 0
    np.testing.assert_array_equal(runs[2].flows, runs[1].flows)
    np.testing.assert_array_equal(runs[2].masks, runs[1].masks)
    seg = Segmenter("nuclei_3d", device="cpu", backend="onnxruntime")
    assert seg.streams == min(2, os.cpu_count() or 1) and len(seg.engine.nets) == seg.streams
    assert Segmenter("nuclei_3d", device="cpu", backend="onnxruntime", threads=1).streams == 1
    for bad in (0, 65, 1.5, True):
        with pytest.raises(InvalidInputError, match="`streams`"):
            Segmenter("nuclei_3d", device="cpu", streams=bad)


def test_z_interpolation_weights():
    i0, i1, w0, w1 = z_interpolation(5, 5)
    assert (i0 == np.arange(5)).all() and np.allclose(w0, 1)
    i0, i1, w0, w1 = z_interpolation(3, 12)
    np.testing.assert_allclose(w0 + w1, 1, atol=1e-6)
    assert i0.min() == 0 and i1.max() == 2


def _pixels(result) -> int:
    return sum(v["pixels"] for v in result.info["tiles"].values())


def test_default_work_avoidance_keeps_masks(tiny_onnx_model):
    """At anisotropy 4 the default steps run YX on the 8 acquired planes, not on 32, and give
    the plain run's masks: the four blobs."""
    vol = blob_volume((8, 64, 72), centers=[(2, 16, 18), (4, 40, 20), (3, 20, 52), (5, 46, 54)])
    runs = {key: Segmenter(tiny_onnx_model, device="cpu", work_avoidance=key, use_probe=False)
            .segment(vol, anisotropy=4.0, diameter=30.0) for key in ("plain", "default")}
    assert runs["plain"].masks.max() == 4
    np.testing.assert_array_equal(runs["default"].masks, runs["plain"].masks)
    assert _pixels(runs["default"]) < 0.85 * _pixels(runs["plain"])


def test_other_tile_sizes_keep_masks(tiny_onnx_model):
    """320-pixel tiles (Cellpose's are 224) tile a 290 x 310 plane differently (other flows)
    and give the masks of 224 tiles."""
    vol = blob_volume((5, 290, 310), n=10, seed=1)
    runs = {bs: Segmenter(tiny_onnx_model, device="cpu", bsize=bs, use_probe=False).segment(
        vol, anisotropy=1.0, diameter=30.0) for bs in (224, 320)}
    assert runs[224].info["tiles"]["YX"]["pixels"] != runs[320].info["tiles"]["YX"]["pixels"]
    assert not np.array_equal(runs[224].flows, runs[320].flows)
    assert runs[224].masks.max() >= 5
    np.testing.assert_array_equal(runs[320].masks, runs[224].masks)


@pytest.mark.parametrize("bsize", [0, 100, 48, 2048, 224.5, True])
def test_tile_size_validation(bsize):
    with pytest.raises(InvalidInputError, match="`bsize`"):
        Segmenter("nuclei_3d", device="cpu", bsize=bsize)


def test_work_avoidance_validation():
    with pytest.raises(InvalidInputError, match="`work_avoidance`"):
        Segmenter("nuclei_3d", work_avoidance="fast")
    with pytest.raises(InvalidInputError, match="`background_bound`"):
        WorkAvoidance(background_bound=-1)


def test_probe_times_settings_and_saved_defaults_are_used():
    result = probe.run_probe("nuclei_3d", batch_sizes=(1, 2), threads=[1], seconds=0.01,
                             tile_sizes=(160, 224))
    assert set(result.timings) == {(1, 1), (2, 1)} and all(v > 0 for v in result.timings.values())
    assert set(result.tile_timings) == {160, 224} and result.best_tile in (160, 224)
    assert all(v > 0 for v in result.tile_timings.values())
    assert all(v > 0 for v in result.stream_timings.values())
    path = probe.save_probe(result)
    assert path.is_file()
    best = result.best_setting
    assert best["ms_per_tile"] == min([*result.timings.values(), *result.stream_timings.values()])
    saved = {k: best[k] for k in ("batch_size", "threads", "streams")}
    assert probe.load_probe("fp32") == saved
    assert probe.load_probe("int8") == {}
    # the probe times onnxruntime: its settings apply where onnxruntime runs
    seg = Segmenter("nuclei_3d", device="cpu", backend="onnxruntime")
    assert (seg.batch_size, seg.threads, seg.streams) == (saved["batch_size"], saved["threads"],
                                                          saved["streams"])
    assert Segmenter("nuclei_3d", device="cpu", backend="onnxruntime",
                     batch_size=5).batch_size == 5
    with pytest.raises(InvalidInputError, match="`batch_sizes`"):
        probe.run_probe("nuclei_3d", batch_sizes=(0,))
    with pytest.raises(InvalidInputError, match="`tile_sizes`"):
        probe.run_probe("nuclei_3d", tile_sizes=(200,))
    assert "tile_size" not in json.loads(path.read_text())["fp32"]  # tile sizes are not saved


def test_default_limits_approximate_steps_by_anisotropy():
    from nucseg_rt.network.engine import DEFAULT_WORK_AVOIDANCE as d

    assert d.at(4.0) == d
    high = d.at(11.5)
    assert not high.native_yx and not high.compact_tiles
    assert high.background_bound == d.background_bound
    assert WorkAvoidance(native_yx=True).at(20.0).native_yx
    with pytest.raises(InvalidInputError, match="`max_anisotropy`"):
        WorkAvoidance(max_anisotropy=0.5)
