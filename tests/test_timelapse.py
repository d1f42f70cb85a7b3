"""Time-lapses in the Python API: ``Segmenter.segment`` with ``InputSpec(time_axis=...)`` gives
masks (T, Z, Y, X); ``Segmenter.segment_frames`` streams them one frame at a time."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from nucseg_rt.errors import Cancelled, InvalidInputError
from nucseg_rt.params import InputSpec
from helpers import blob_timelapse

SHAPE = (12, 48, 52)


@pytest.fixture(scope="module")
def movie():
    return blob_timelapse(3, SHAPE)


def test_segment_returns_t_z_y_x_and_leaves_input(tiny_segmenter, movie):
    before = movie.copy()
    res = tiny_segmenter.segment(movie, anisotropy=4.0, diameter=30.0,
                                 inputs=InputSpec(time_axis=0))
    assert res.masks.shape == movie.shape and res.flows is None and res.cellprob is None
    assert res.info["n_frames"] == 3
    for t in range(3):
        np.testing.assert_array_equal(res.masks[t], tiny_segmenter.segment(
            movie[t], anisotropy=4.0, diameter=30.0).masks)
    np.testing.assert_array_equal(movie, before)


def test_segment_frames_streams_the_same_frames_in_any_layout(tiny_segmenter, movie):
    zcyx = np.moveaxis(movie, 0, 2)  # (Z, Y, T, X): time in the middle
    got = list(tiny_segmenter.segment_frames(zcyx, time_axis=2, frames="0,2", anisotropy=4.0,
                                             diameter=30.0))
    assert [t for t, _ in got] == [0, 2]
    whole = tiny_segmenter.segment(movie, anisotropy=4.0, diameter=30.0,
                                   inputs=InputSpec(time_axis=0)).masks
    np.testing.assert_array_equal(got[1][1], whole[2])


def test_segment_frames_link_keeps_labels(tiny_segmenter, movie):
    linked = dict(tiny_segmenter.segment_frames(movie, time_axis=0, link=True, anisotropy=4.0,
                                                diameter=30.0))
    for t in (1, 2):
        for label in set(np.unique(linked[t])) & set(np.unique(linked[t - 1])) - {0}:
            a, b = linked[t - 1] == label, linked[t] == label
            assert (a & b).sum() / (a | b).sum() > 0.25
    assert len(set(np.unique(linked[2])) & set(np.unique(linked[0])) - {0}) >= 2


def test_segment_frames_errors_and_cancel(tiny_segmenter, movie):
    with pytest.raises(InvalidInputError, match="has no time axis: pass `time_axis`"):
        next(tiny_segmenter.segment_frames(movie[0]))
    with pytest.raises(InvalidInputError, match="`time_axis` 1 and `inputs.time_axis` 0 differ"):
        next(tiny_segmenter.segment_frames(movie, time_axis=1, inputs=InputSpec(time_axis=0)))
    with pytest.raises(InvalidInputError, match="`frames` '7' is outside the 3 frames"):
        next(tiny_segmenter.segment_frames(movie, time_axis=0, frames="7"))
    with pytest.raises(InvalidInputError, match="z_axis"):  # a settings object or keywords
        tiny_segmenter.segment(movie, z_axis=1, inputs=InputSpec(time_axis=0))
    with pytest.raises(InvalidInputError, match="has a time axis.*takes one volume"):
        tiny_segmenter.predict_flows(movie, inputs=InputSpec(time_axis=0))
    cancel = threading.Event()
    frames = tiny_segmenter.segment_frames(movie, time_axis=0, diameter=30.0, cancel=cancel)
    next(frames)
    cancel.set()
    with pytest.raises(Cancelled):
        next(frames)
