"""One axis rule for every input: one table of cases, run through each consumer.

The consumers are the rule itself (``resolve_axes``), in-memory arrays (``to_zyxc``, which has no
axis letters), lazily read volumes (``LazyVolume``: TIFF / zarr / OME-Zarr) and the batch
runner's look at a file's header (``plan_file`` on an OME-TIFF carrying the letters). All must
agree on the Z, Y, X size and the channel count, or fail with the same message.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest
import tifffile

from nucseg_rt.batch import RunSettings, plan_file
from nucseg_rt.errors import InvalidInputError
from nucseg_rt.io import LazyVolume
from nucseg_rt.io import VolumeInfo
from nucseg_rt.params import InputSpec
from nucseg_rt.prep.axes import resolve_axes, to_zyxc

# id: (shape, axis letters of the file or None, channel_axis, z_axis,
#      (z, y, x, c) axis numbers expected, or the error message expected)
CASES = {
    "zyx": ((5, 16, 17), None, None, None, (0, 1, 2, None)),
    "zyx named": ((5, 16, 17), "ZYX", None, None, (0, 1, 2, None)),
    "4D guessed channels": ((5, 2, 16, 17), None, None, None, (0, 2, 3, 1)),
    "zcyx named": ((5, 2, 16, 17), "ZCYX", None, None, (0, 2, 3, 1)),
    "czyx named": ((2, 5, 16, 17), "CZYX", None, None, (1, 2, 3, 0)),
    "samples named": ((5, 16, 17, 3), "ZYXS", None, None, (0, 1, 2, 3)),
    "one channel named": ((5, 1, 16, 17), "ZCYX", None, None, (0, 2, 3, None)),
    "T of 1 dropped": ((1, 5, 16, 17), "TZYX", None, None, (1, 2, 3, None)),
    "T of 1, channels": ((1, 5, 2, 16, 17), "TZCYX", None, None, (1, 3, 4, 2)),
    "T > 1 refused": ((3, 5, 16, 17), "TZYX", None, None, "has a time axis.*takes one volume"),
    "hyperstack TZCYX refused": ((3, 5, 2, 16, 17), "TZCYX", None, None, "has a time axis"),
    "T > 1 unnamed: channels": ((3, 5, 16, 17), None, None, None, (1, 2, 3, 0)),
    "user axes win": ((5, 2, 16, 17), "ZCYX", 0, 1, (1, 2, 3, 0)),
    "user channels, file Z": ((2, 5, 16, 17), "CZYX", 0, None, (1, 2, 3, 0)),
    "user Z, file channels": ((5, 2, 16, 17), "ZCYX", None, 0, (0, 2, 3, 1)),
    "user names T": ((3, 5, 16, 17), "TZYX", 0, None, (1, 2, 3, 0)),
    "thin stack unnamed": ((3, 16, 17), None, None, None, "looks like channels"),
    "thin stack named": ((3, 16, 17), "ZYX", None, None, (0, 1, 2, None)),
    "thin stack, user Z": ((3, 16, 17), None, None, 0, (0, 1, 2, None)),
    "letters of other length ignored": ((5, 16, 17), "ZCYX", None, None, (0, 1, 2, None)),
    "2D": ((16, 17), None, None, None, "2D"),
    "5 axes": ((2, 3, 5, 16, 17), None, None, None, "5 non-singleton axes"),
    "4 big axes": ((5, 9, 16, 17), None, None, None,
                   r"none of size <= 4 to be channels; pass time_axis \(a time-lapse\) or "
                   r"channel_axis \(and z_axis\)"),
    "tied small axes": ((3, 3, 16, 17), None, None, None, "all have size 3"),
    "axis out of range": ((5, 16, 17), None, 3, None, r"`channel_axis`=3 is out of range"),
    "same axis twice": ((5, 2, 16, 17), None, 1, -3, "same axis"),
    "channels leave 2D": ((2, 16, 17), None, 0, None, "leaves a 2D image"),
}


def _expected_sizes(shape, expected):
    z, y, x, c = expected
    return (shape[z], shape[y], shape[x]), (None if c is None else shape[c])


@pytest.fixture(params=sorted(CASES), ids=lambda k: k.replace(" ", "-"))
def case(request):
    return CASES[request.param]


def test_resolve_axes(case):
    shape, letters, c, z, expected = case
    if isinstance(expected, str):
        with pytest.raises(InvalidInputError, match=expected):
            resolve_axes(shape, letters=letters, channel_axis=c, z_axis=z)
        return
    plan = resolve_axes(shape, letters=letters, channel_axis=c, z_axis=z)
    assert (plan.z, plan.y, plan.x, plan.c) == expected
    assert (plan.shape_zyx, plan.nchan) == _expected_sizes(shape, expected)


def test_in_memory_arrays(case):
    shape, letters, c, z, expected = case
    if letters is not None:
        pytest.skip("arrays carry no axis letters")
    vol = np.arange(int(np.prod(shape)), dtype=np.float32).reshape(shape)
    if isinstance(expected, str):
        with pytest.raises(InvalidInputError, match=expected):
            to_zyxc(vol, channel_axis=c, z_axis=z, nchan=4)
        return
    x, _ = to_zyxc(vol, channel_axis=c, z_axis=z, chan=1 if expected[3] is not None else 0,
                   nchan=4)
    zyx, nchan = _expected_sizes(shape, expected)
    assert x.shape == (*zyx, 4)
    zt, yt, xt, ct = expected
    order = (zt, yt, xt) + ((ct,) if ct is not None else ())
    ref = np.transpose(vol, order + tuple(i for i in range(vol.ndim) if i not in order))
    ref = ref.reshape(ref.shape[:len(order)])
    np.testing.assert_array_equal(x[..., 0], ref[..., 0] if ct is not None else ref)


def test_lazy_volumes(case):
    shape, letters, c, z, expected = case
    arr = np.arange(int(np.prod(shape)), dtype=np.uint16).reshape(shape)
    info = VolumeInfo(None, letters, arr.dtype)
    if isinstance(expected, str):
        with pytest.raises(InvalidInputError, match=expected):
            LazyVolume(arr, info, channel_axis=c, z_axis=z)
        return
    vol = LazyVolume(arr, info, channel_axis=c, z_axis=z)
    assert (vol.shape_zyx, vol.nchan) == _expected_sizes(shape, expected)
    block = vol.read_all()
    assert block.shape == (vol.shape_zyx[0], *([vol.nchan] if vol.nchan else []),
                           *vol.shape_zyx[1:])


def test_batch_header(case, tmp_path):
    shape, letters, c, z, expected = case
    arr = np.zeros(shape, np.uint16)
    if len(shape) < 3 or (letters is not None and len(letters) != len(shape)):
        pytest.skip("not a volume TIFF can hold with these letters")
    path = tmp_path / "v.tif"
    kwargs = {} if letters is None else dict(ome=True, metadata={"axes": letters})
    kwargs["photometric"] = "rgb" if letters and "S" in letters else "minisblack"
    tifffile.imwrite(path, arr, **kwargs)
    with tifffile.TiffFile(path) as tif:
        if tif.series[0].shape != shape and (c is not None or z is not None):
            pytest.skip("tifffile dropped a singleton axis: the user's axis numbers differ")
    run = RunSettings(anisotropy=1.0)
    # one channel chosen, as for in-memory arrays (gray over more than 4 channels is refused)
    inputs = InputSpec(channel_axis=c, z_axis=z, chan=1)
    if isinstance(expected, str) and "has a time axis" in expected:  # the batch reads frames
        assert plan_file(path, inputs=inputs, run=run).axes.t == letters.index("T")
        return
    if isinstance(expected, str):
        with pytest.raises(InvalidInputError, match=expected.replace("`channel_axis`=3",
                                                                     "`channel_axis` 3")):
            plan_file(path, inputs=inputs, run=run)
        return
    plan = plan_file(path, inputs=inputs, run=run)
    assert (plan.axes.shape_zyx, plan.axes.nchan) == _expected_sizes(shape, expected)


def test_guessed_channels_are_a_warning(caplog):
    with caplog.at_level(logging.INFO, logger="nucseg_rt"):
        to_zyxc(np.zeros((5, 2, 16, 17), np.uint16))
        to_zyxc(np.zeros((5, 2, 16, 17), np.uint16), channel_axis=1)
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warned == ["treating axis 1 (size 2) as channels (smallest axis; pass channel_axis "
                      "to override)"]


# --- time axes (issue 22): from the file's letters or time_axis, never guessed ------------------


@pytest.mark.parametrize("shape, letters, time_axis, expected", [
    ((20, 5, 16, 17), "TZYX", None, (0, 1, 2, 3, None)),
    ((20, 5, 2, 16, 17), "TZCYX", None, (0, 1, 3, 4, 2)),
    ((5, 20, 16, 17), "ZTYX", None, (1, 0, 2, 3, None)),
    ((20, 5, 16, 17), None, 0, (0, 1, 2, 3, None)),
    ((5, 16, 17, 20), None, -1, (3, 0, 1, 2, None)),
])
def test_time_axis_from_letters_or_given(shape, letters, time_axis, expected):
    plan = resolve_axes(shape, letters=letters, time_axis=time_axis, allow_time=True)
    assert (plan.t, plan.z, plan.y, plan.x, plan.c) == expected
    assert plan.n_frames == shape[expected[0]]
    assert plan.index(frame=7)[plan.t] == 7


def test_time_axis_is_never_guessed_and_refused_unless_allowed():
    from nucseg_rt.errors import SettingsError

    with pytest.raises(InvalidInputError, match=r"ambiguous.*pass time_axis \(a time-lapse\)"):
        resolve_axes((20, 5, 443, 512), allow_time=True)
    with pytest.raises(SettingsError, match=r"has a time axis \(axis 0, 20 time points; "
                                            r"time_axis\): this step takes one volume"):
        resolve_axes((20, 5, 44, 51), time_axis=0)
    with pytest.raises(InvalidInputError, match="2 time points.*segmented frame by frame"):
        to_zyxc(np.zeros((2, 5, 16, 17), np.float32), time_axis=0)
    with pytest.raises(InvalidInputError, match="`channel_axis` and `time_axis` are the same"):
        resolve_axes((20, 5, 44, 51), time_axis=0, channel_axis=-4, allow_time=True)
    with pytest.raises(InvalidInputError, match="`time_axis` and `z_axis` must differ"):
        InputSpec(time_axis=1, z_axis=1)


def test_gray_never_averages_a_long_axis():
    """`chan` 0 over an axis of 20 entries (time points taken for channels) is refused."""
    vol = np.random.default_rng(0).random((20, 5, 16, 17), np.float32)
    with pytest.raises(InvalidInputError, match=r"`chan` 0 \(gray\) would average the 20 entries "
                                                r"of axis 0.*pass time_axis"):
        to_zyxc(vol, channel_axis=0, z_axis=1)
    x, _ = to_zyxc(vol[:4], channel_axis=0, z_axis=1)  # 4 channels: averaged, as Cellpose
    np.testing.assert_allclose(x[..., 0], vol[:4].mean(axis=0), rtol=1e-6)
    x, _ = to_zyxc(vol, channel_axis=0, z_axis=1, chan=3)  # one channel chosen: taken
    np.testing.assert_array_equal(x[..., 0], vol[2])
