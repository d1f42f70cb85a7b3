"""The watch service never leaves an input waiting for ever and says why an input is queued
again after a restart (in process, with the tiny ONNX model; no sleeps: events and records)."""

from __future__ import annotations

import logging
import threading

import numpy as np
import pytest
import tifffile

from helpers import stopping_segmenter, wait_until, watching
from nucseg_rt.batch import RunSettings
from nucseg_rt.watch import WatchSettings, read_record, watch_folder

RUN = RunSettings(anisotropy=1.0, diameter=30.0)
FAST = WatchSettings(poll=0.02, settle=0.1)


def _volume(seed=0):
    from nucseg_rt.eval.synth import make_volume

    return make_volume((16, 48, 48), n_nuclei=3, diameter_mean=14.0, seed=seed)[0]


def _status(out, name):
    return (read_record(out / f"{name}.json") or {}).get("status")


def test_an_empty_file_fails_with_a_reason_and_is_taken_when_written(tmp_path, tiny_segmenter):
    folder, out, stop = tmp_path / "in", tmp_path / "out", threading.Event()
    folder.mkdir()
    (folder / "empty.tif").write_bytes(b"")
    tifffile.imwrite(folder / "a.tif", _volume())
    thread = threading.Thread(target=watch_folder, args=(folder, out, tiny_segmenter),
                              kwargs=dict(run=RUN, settings=FAST, cancel=stop))
    thread.start()
    try:
        wait_until(lambda: _status(out, "empty.tif") == "failed" and _status(out, "a.tif") == "done",
                   "empty.tif failed and a.tif done")
        assert "empty file (0 bytes)" in read_record(out / "empty.tif.json")["error"]
        tifffile.imwrite(folder / "empty.tif", _volume(1))
        wait_until(lambda: _status(out, "empty.tif") == "done", "empty.tif done once written")
    finally:
        stop.set()
        thread.join(30)
    assert not thread.is_alive()
    assert (out / "empty_masks.tif").exists()


def test_an_input_abandoned_in_an_earlier_run_is_logged_as_such(tmp_path, tiny_segmenter, caplog):
    folder, out, stop = tmp_path / "in", tmp_path / "out", threading.Event()
    folder.mkdir()
    tifffile.imwrite(folder / "a.tif", _volume())

    first = watch_folder(folder, out, stopping_segmenter(tiny_segmenter, stop), run=RUN,
                         settings=FAST, cancel=stop)
    assert first.abandoned == 1 and _status(out, "a.tif") == "queued"
    with caplog.at_level(logging.INFO, logger="nucseg_rt.watch"), \
            watching(folder, out, tiny_segmenter, run=RUN, settings=FAST):
        wait_until(lambda: _status(out, "a.tif") == "done", "a.tif done after the restart")
    text = caplog.text
    assert "a.tif: abandoned when the service stopped in an earlier run; segmenting it again" in text
    assert "a.tif: new" not in text
    assert np.asarray(tifffile.imread(out / "a_masks.tif")).ndim == 3
