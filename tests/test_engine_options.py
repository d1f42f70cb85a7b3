"""One way to pass settings (an object or keywords, the mix refused), EngineOptions validated once,
the Engine joining its own threads, errors carrying their parameter, owned numba threads, and the
CLI saying flags from ``err.param``. Tiny ONNX model, no torch."""

from __future__ import annotations

import threading

import numba
import numpy as np
import pytest

from nucseg_rt import EngineOptions, InputSpec, MaskParams, Segmenter
from nucseg_rt.cli._report import say_flags
from nucseg_rt.errors import Cancelled, InvalidInputError, check_cancel, describe_error, params_of
from nucseg_rt.masks import dynamics_threads
from nucseg_rt.network.engine import DEFAULT_WORK_AVOIDANCE
from nucseg_rt.network.predict import WorkAvoidance
from nucseg_rt.params import PRECISIONS, settings_or_keywords


def _vol():
    rng = np.random.default_rng(0)
    vol = (rng.random((6, 48, 48)) * 100).astype(np.uint16)
    vol[2:5, 10:22, 10:22] += 2000
    return vol


@pytest.fixture(scope="module")
def seg(tiny_onnx_pair):
    with Segmenter(tiny_onnx_pair, device="cpu", streams=2, threads=1) as s:
        yield s


# --- a settings object or keywords, never both -----------------------------------------------


def test_segment_refuses_params_with_mask_keywords(seg):
    with pytest.raises(InvalidInputError, match=r"either as `params` or as keywords, not both: "
                                                r"`min_size` would be ignored") as err:
        seg.segment(_vol(), diameter=30.0, params=MaskParams(), min_size=100000)
    assert err.value.param == ("params", "min_size")


def test_segment_refuses_inputs_with_channel_keywords(seg):
    with pytest.raises(InvalidInputError, match=r"`inputs` or as keywords.*`z_axis`, `chan`"):
        seg.segment(_vol(), diameter=30.0, inputs=InputSpec(), chan=1, z_axis=0)
    with pytest.raises(InvalidInputError, match=r"`inputs` or as keywords.*`channel_axis`"):
        seg.predict_flows(_vol(), diameter=30.0, inputs=InputSpec(), channel_axis=1)


def test_masks_from_flows_refuses_params_with_keywords(seg):
    f = seg.predict_flows(_vol(), diameter=30.0)
    with pytest.raises(InvalidInputError, match="`params` or as keywords, not both: `niter`"):
        seg.masks_from_flows(f, MaskParams(), niter=10)


def test_keywords_and_objects_give_the_same_masks(seg):
    vol = _vol()
    by_keywords = seg.segment(vol, diameter=30.0, min_size=5, cellprob_threshold=-1.0, chan=0)
    by_objects = seg.segment(vol, diameter=30.0, inputs=InputSpec(chan=0),
                             params=MaskParams(min_size=5, cellprob_threshold=-1.0))
    np.testing.assert_array_equal(by_keywords.masks, by_objects.masks)
    assert by_keywords.n_masks == by_objects.n_masks >= 1
    assert by_keywords.run.diameter == 30.0 and by_keywords.run.diameter_source == "given"


def test_segmenter_refuses_engine_with_keywords(tiny_onnx_model):
    with pytest.raises(InvalidInputError, match=r"`engine` or as keywords.*`device`, `threads`"):
        Segmenter(tiny_onnx_model, device="cpu", threads=1, engine=EngineOptions())
    with pytest.raises(InvalidInputError, match="`engine` must be a EngineOptions, got dict"):
        Segmenter(tiny_onnx_model, engine={"device": "cpu"})


def test_settings_or_keywords_none_means_not_given():
    assert settings_or_keywords(None, "params", MaskParams, {"min_size": None}) == MaskParams()
    p = MaskParams(min_size=3)
    assert settings_or_keywords(p, "params", MaskParams, {"min_size": None}) is p


# --- EngineOptions --------------------------------------------------------------------------


@pytest.mark.parametrize("kwargs,match", [
    (dict(precision="fp64"), r"`precision` must be 'fp32', 'int8', 'fp16' or 'bf16', got 'fp64'"),
    (dict(device="tpu"), r"`device` must be 'auto', 'cpu' or 'cuda', got 'tpu'"),
    (dict(batch_size=0), r"`batch_size` must be >= 1, got 0"),
    (dict(threads=1.5), r"`threads` must be a whole number >= 1, got 1.5"),
    (dict(streams=65), r"`streams` must be from 1 to 64, got 65"),
    (dict(streams=True), r"`streams` must be a whole number from 1 to 64, got True"),
    (dict(bsize=100), r"`bsize` must be a multiple of 16 from 64 to 1024, got 100"),
    (dict(tile_overlap=0.9), r"`tile_overlap` must be in \[0.05, 0.5\], got 0.9"),
    (dict(work_avoidance="some"), r"`work_avoidance` must be a WorkAvoidance, 'default' or 'plain'"),
])
def test_engine_options_validated_once(kwargs, match):
    with pytest.raises(InvalidInputError, match=match) as err:
        EngineOptions(**kwargs)
    assert params_of(err.value) == (next(iter(kwargs)),)


def test_engine_options_normalise_and_compare():
    opts = EngineOptions(work_avoidance="plain", bsize=256.0, threads=2.0)
    assert opts.work_avoidance == WorkAvoidance.plain() and opts.bsize == 256 and opts.threads == 2
    assert EngineOptions().work_avoidance == DEFAULT_WORK_AVOIDANCE
    assert hash(opts) == hash(EngineOptions(work_avoidance="plain", bsize=256, threads=2))
    assert opts.labels_key() == EngineOptions(work_avoidance="plain", bsize=256, threads=1).labels_key()
    assert opts.labels_key() != EngineOptions(bsize=256).labels_key()
    assert set(PRECISIONS) == {"fp32", "int8", "fp16", "bf16"}
    # the backend changes the labels key only when it is not onnxruntime (old resumes still match)
    assert EngineOptions(backend="onnxruntime").labels_key() == EngineOptions().labels_key()
    assert EngineOptions(backend="openvino").labels_key() != EngineOptions().labels_key()
    with pytest.raises(InvalidInputError, match="`precision` 'fp16' runs on CUDA only"):
        EngineOptions(device="cpu", precision="fp16").providers()


def test_segmenter_from_engine_options(tiny_onnx_model):
    with Segmenter(tiny_onnx_model, engine=EngineOptions(device="cpu", batch_size=3, streams=1,
                                                         threads=1, use_probe=False)) as s:
        assert (s.batch_size, s.streams, s.threads, s.device) == (3, 1, 1, "cpu")
        assert s.options.batch_size == 3


# --- the Engine owns its threads --------------------------------------------------------------


def test_engine_close_joins_its_stream_threads(tiny_onnx_pair):
    before = set(threading.enumerate())
    s = Segmenter(tiny_onnx_pair, device="cpu", streams=2, threads=1)
    s.segment(_vol(), diameter=30.0)
    started = [t for t in threading.enumerate() if t not in before]
    assert started and all(t.is_alive() for t in started)  # kept between calls
    s.close()
    assert not any(t.is_alive() for t in started)  # joined by close(), found by no name
    assert s.engine.closed


# --- errors carry their parameter; the CLI says the flag ---------------------------------------


def test_errors_carry_their_parameter(seg):
    with pytest.raises(InvalidInputError, match=r"`anisotropy` must be > 0, got -2.0") as err:
        seg.segment(_vol(), anisotropy=-2.0, diameter=30.0)
    assert err.value.param == "anisotropy"
    both = InvalidInputError("`channel_axis` and `z_axis` must differ, both are 1")
    assert params_of(both) == ("channel_axis", "z_axis")
    assert params_of(InvalidInputError("no parameter here")) == ()
    assert params_of(ValueError("x")) == () and params_of(type("E", (), {"param": object()})) == ()


def test_cli_says_the_flags_of_the_params():
    flags = {"anisotropy": "--anisotropy", "z_axis": "--z-axis", "channel_axis": "--channel-axis"}
    assert say_flags("`anisotropy` must be > 0, got -2.0", ("anisotropy",), flags) == \
        "`--anisotropy` must be > 0, got -2.0"
    assert say_flags("ambiguous; pass z_axis=0 (or channel_axis)", ("z_axis", "channel_axis"),
                     flags) == "ambiguous; pass --z-axis 0 (or --channel-axis)"
    # a name inside a longer word or a path is left alone; names not in .param too
    assert say_flags("/tmp/test_z_axis0/a.tif: pass z_axis", ("z_axis",), flags) == \
        "/tmp/test_z_axis0/a.tif: pass --z-axis"
    assert say_flags("`anisotropy` given", (), flags) == "`anisotropy` given"
    assert say_flags("`bsize` must be", ("bsize",), {}) == "`--tile-size` must be"


def test_one_cancel_check_and_one_describer():
    check_cancel(None)
    event = threading.Event()
    check_cancel(event)
    event.set()
    with pytest.raises(Cancelled):
        check_cancel(event)
    assert describe_error(MemoryError("x")) == "not enough memory (x)"
    assert describe_error(InvalidInputError("a\n  b")) == "a b"
    assert describe_error(KeyError("k")) == "internal error (KeyError: 'k')"


# --- numba's threads change only inside an owner that restores them ----------------------------


def test_dynamics_threads_restores_the_previous_number():
    before = numba.get_num_threads()
    with dynamics_threads(1):
        assert numba.get_num_threads() == 1
    assert numba.get_num_threads() == before
    with dynamics_threads(None):
        assert numba.get_num_threads() == before


def test_batch_runner_closes_the_segmenter_it_made(tiny_onnx_model):
    from nucseg_rt import BatchRunner

    with BatchRunner(lambda: Segmenter(tiny_onnx_model, device="cpu", streams=1)) as runner:
        made = runner.segmenter
    assert made.engine.closed  # the runner made it: the runner closed it
    given = Segmenter(tiny_onnx_model, device="cpu", streams=1)
    with BatchRunner(given) as runner:
        assert runner.segmenter is given
    assert not given.engine.closed  # given loaded: its owner's to close
    given.close()


@pytest.mark.parametrize("value, low, high, message", [
    (True, 1, None, "`n` must be a whole number >= 1, got True"),
    (1.5, None, None, "`n` must be a whole number, got 1.5"),
    (float("inf"), 1, None, "`n` must be a whole number >= 1, got inf"),
    (float("nan"), 1, 4, "`n` must be a whole number from 1 to 4, got nan"),
    ("3", 1, None, "`n` must be a whole number >= 1, got '3'"),
    (0, 1, None, "`n` must be >= 1, got 0"),
    (5, 1, 4, "`n` must be from 1 to 4, got 5"),
])
def test_one_whole_number_rule(value, low, high, message):
    """Every whole-number setting (engine threads/streams/batch, mask min_size/niter, axes,
    dask workers, quantize check_planes) goes through params.validate_whole."""
    from nucseg_rt.params import validate_whole

    with pytest.raises(InvalidInputError) as err:
        validate_whole("n", value, low, high)
    assert str(err.value) == message and err.value.param == "n"
    assert validate_whole("n", 4.0, 1, 4) == 4 and type(validate_whole("n", 4.0)) is int
    # numpy's numbers are numbers (engine threads/streams, dask workers took them before)
    assert validate_whole("n", np.int64(3), 1) == 3 and validate_whole("n", np.float32(2.0)) == 2
    with pytest.raises(InvalidInputError, match="`n` must be a whole number, got"):
        validate_whole("n", np.float64(2.5))
    with pytest.raises(InvalidInputError, match="`n` must be a whole number, got"):
        validate_whole("n", np.bool_(True))


def test_workers_and_check_planes_use_the_rule(tiny_onnx_model, tmp_path):
    from nucseg_rt.blockwise import LargeSettings
    from nucseg_rt.models import quantize_int8

    with pytest.raises(InvalidInputError, match=r"`workers` must be a whole number >= 1, got 1.5"):
        LargeSettings(scheduler="local", workers=1.5)
    with pytest.raises(InvalidInputError, match=r"`check_planes` must be >= 1, got 0") as err:
        quantize_int8(tiny_onnx_model, tmp_path / "q.onnx", check_planes=0)
    assert err.value.param == "check_planes"
