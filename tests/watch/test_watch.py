"""The watch-folder service: the stability detector and records in process, the service itself
(``nucseg-rt watch``) as a real subprocess with the tiny ONNX model.

Subprocess tests poll every 0.2 s; they wait for records and conditions with a timeout, never
for a fixed time. Their files appear whole (written before the service starts, or renamed into
the folder as a copy tool does), so a 0.3 s settle time is enough; the slow copy, the one test of
files that grow, keeps 1.5 s. It writes a TIFF plane pair by plane pair and, after the first pair,
waits until the service has recorded the partial file (each part written is itself a readable
TIFF, so only the size check keeps the service from segmenting a partial volume).
"""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import threading

import numpy as np
import pytest
import tifffile

from nucseg_rt.batch import RunSettings
from nucseg_rt.errors import InvalidInputError
from nucseg_rt.watch import (Snapshot, StabilityTracker, WatchSettings, find_candidates,
                             read_record, record_path, snapshot, tiff_problem, watch_folder)
from helpers import (blob_timelapse, blob_volume, cli_env, cli_help, run_cli, stopping_segmenter,
                     wait_until, watching, write_calibrated)

POLL, SETTLE, SLOW_COPY_SETTLE = "0.2", "0.3", "1.5"


class FakeClock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


# --- stability detector ------------------------------------------------------------------------


def test_tracker_needs_the_same_snapshot_for_settle_seconds(tmp_path):
    clock, path = FakeClock(), tmp_path / "a.tif"
    tracker = StabilityTracker(2.0, clock)
    snap = Snapshot(100, 1)
    assert not tracker.observe(path, snap)  # first look
    clock.now += 1.9
    assert not tracker.observe(path, snap)
    clock.now += 0.1
    assert tracker.observe(path, snap)
    clock.now += 0.5
    grown = Snapshot(150, 2)
    assert not tracker.observe(path, grown)  # a change restarts the wait
    clock.now += 1.9
    assert not tracker.observe(path, grown)
    clock.now += 0.1
    assert tracker.observe(path, grown)
    touched = Snapshot(150, 3)  # same size, newer modification time: a change too
    assert not tracker.observe(path, touched)
    tracker.forget(path)
    assert tracker.tracked() == set()


def test_tracker_settles_unready_inputs_too_and_settle_zero_needs_two_looks(tmp_path):
    clock = FakeClock()
    tracker = StabilityTracker(1.0, clock)
    empty = Snapshot(0, 1, ready=False)
    assert not tracker.observe(tmp_path / "e.tif", empty)
    clock.now += 60  # settled: the service then fails it with a reason (never queued for ever)
    assert tracker.observe(tmp_path / "e.tif", empty)
    zero = StabilityTracker(0.0, clock)
    assert not zero.observe(tmp_path / "a.tif", Snapshot(5, 1))
    assert zero.observe(tmp_path / "a.tif", Snapshot(5, 1))


def test_snapshot_of_files(tmp_path):
    path = tmp_path / "a.tif"
    path.write_bytes(b"")
    assert snapshot(path) == Snapshot(0, path.stat().st_mtime_ns, 1, False)  # empty: not ready
    with open(path, "ab") as fh:
        fh.write(b"x" * 10)
    first = snapshot(path)
    assert first.size == 10 and first.ready
    os.utime(path, ns=(first.mtime_ns + 10**9, first.mtime_ns + 10**9))
    assert snapshot(path) != first  # touched: same size, still a change
    assert snapshot(tmp_path / "gone.tif") is None


def test_snapshot_of_zarr_folder(tmp_path):
    root = tmp_path / "v.zarr"
    (root / "c" / "0").mkdir(parents=True)
    (root / "c" / "0" / "0").write_bytes(b"chunk")
    no_metadata = snapshot(root)
    assert no_metadata.files == 1 and no_metadata.size == 5 and not no_metadata.ready
    (root / "zarr.json").write_text("{}")
    with_metadata = snapshot(root)
    assert with_metadata.ready and with_metadata.files == 2
    (root / "c" / "0" / "1").write_bytes(b"more")
    assert snapshot(root).files == 3 and snapshot(root).size == 11


def _tiff(path, vol, **kwargs):
    tifffile.imwrite(path, vol, **kwargs)
    return path


@pytest.mark.parametrize("kwargs", [{}, {"compression": "zlib"}, {"imagej": True}])
@pytest.mark.parametrize("fraction", [0.003, 0.3, 0.97])
def test_tiff_problem_finds_cut_files(tmp_path, kwargs, fraction):
    vol = np.random.default_rng(0).integers(0, 1000, (6, 33, 41), dtype=np.uint16)
    path = _tiff(tmp_path / "a.tif", vol, **kwargs)
    assert tiff_problem(path) is None
    data = path.read_bytes()
    path.write_bytes(data[:int(len(data) * fraction)])
    assert tiff_problem(path) is not None


def test_tiff_problem_not_a_tiff_and_page_wise_partial(tmp_path):
    junk = tmp_path / "junk.tif"
    junk.write_bytes(b"not an image at all" * 10)
    assert "TiffFileError" in tiff_problem(junk)
    # written page by page, a file cut after a whole page is a valid smaller TIFF: the reason
    # the service waits for a settled size and does not trust readability alone
    path = tmp_path / "pages.tif"
    vol = np.arange(4 * 9 * 7, dtype=np.uint16).reshape(4, 9, 7)
    with open(path, "wb") as fh, tifffile.TiffWriter(fh) as tw:
        tw.write(vol[0], metadata=None)
        tw.write(vol[1], metadata=None)
        fh.flush()
        assert tiff_problem(path) is None
        with tifffile.TiffFile(path) as tif:
            assert tif.series[0].shape == (2, 9, 7)
        tw.write(vol[2], metadata=None)
        tw.write(vol[3], metadata=None)
    with tifffile.TiffFile(path) as tif:
        assert tif.series[0].shape == (4, 9, 7)


def test_find_candidates_filters(tmp_path):
    for name in ["b.tif", "a.TIFF", "c_masks.tif", "d_flows.tif", ".hidden.tif", "~e.tif",
                 "f.tif.part", "g.png", "h.json"]:
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "v.ome.zarr").mkdir()
    (tmp_path / "v_masks.ome.zarr").mkdir()
    (tmp_path / "folder.tif").mkdir()
    (tmp_path / "file.zarr").write_bytes(b"x")
    assert [p.name for p in find_candidates(tmp_path)] == ["a.TIFF", "b.tif", "v.ome.zarr"]


@pytest.mark.parametrize("kind, kwargs, match", [
    (WatchSettings, {"poll": 0}, "`poll` must be > 0"),
    (WatchSettings, {"settle": -1}, "`settle` must be >= 0"),
    (RunSettings, {"output_format": "png"}, "`output_format` must be 'tif' or 'zarr'")])
def test_settings_validation(kind, kwargs, match):
    with pytest.raises(InvalidInputError, match=match):
        kind(**kwargs)


def test_watch_folder_refuses_missing_folder(tmp_path):
    with pytest.raises(InvalidInputError, match="`folder` .* is not a folder"):
        watch_folder(tmp_path / "missing", tmp_path / "out", segmenter=None)


def test_read_record_tolerates_garbage(tmp_path):
    path = record_path(tmp_path, tmp_path / "in" / "a.ome.zarr")
    assert path == tmp_path / "a.ome.zarr.json"
    assert read_record(path) is None
    path.write_text("{not json")
    assert read_record(path) is None
    path.write_text('["a list"]')
    assert read_record(path) is None
    path.write_text('{"status": "done"}')
    assert read_record(path) == {"status": "done"}


# --- the library in process: stop and re-segmenting a changed input -----------------------------


def _status(out, name):
    return (read_record(out / f"{name}.json") or {}).get("status")


def test_stop_during_a_file_abandons_it_without_output(tmp_path, tiny_segmenter):
    folder, out, stop = tmp_path / "in", tmp_path / "out", threading.Event()
    folder.mkdir()
    write_calibrated(folder / "a.tif", blob_volume())

    summary = watch_folder(folder, out, stopping_segmenter(tiny_segmenter, stop),
                           run=RunSettings(diameter=30.0),
                           settings=WatchSettings(poll=0.05, settle=0.1), cancel=stop)
    assert (summary.done, summary.failed, summary.abandoned) == (0, 0, 1)
    record = read_record(out / "a.tif.json")
    assert record["status"] == "queued" and "abandoned" in record["note"]
    assert sorted(p.name for p in out.iterdir()) == ["a.tif.json"]  # no output, no temp file


def test_changed_input_is_segmented_again(tmp_path, tiny_segmenter):
    folder, out, stop = tmp_path / "in", tmp_path / "out", threading.Event()
    folder.mkdir()
    source = write_calibrated(folder / "a.tif", blob_volume())
    thread = threading.Thread(target=watch_folder, args=(folder, out, tiny_segmenter), kwargs=dict(
        run=RunSettings(diameter=30.0), settings=WatchSettings(poll=0.05, settle=0.3),
        cancel=stop))
    thread.start()
    try:
        wait_until(lambda: _status(out, "a.tif") == "done", "first result")
        first = read_record(out / "a.tif.json")
        write_calibrated(source, blob_volume((16, 64, 72), centers=[(8, 30, 36)]))
        wait_until(lambda: (read_record(out / "a.tif.json") or {}).get("size") != first["size"]
                   and _status(out, "a.tif") == "done", "second result")
    finally:
        stop.set()
        thread.join(30)
    second = read_record(out / "a.tif.json")
    assert (first["n_nuclei"], second["n_nuclei"]) == (4, 1)
    assert tifffile.imread(out / "a_masks.tif").max() == 1  # replaced


def test_time_lapse_stopped_mid_run_resumes_at_the_next_frame(tmp_path, tiny_segmenter):
    """A TZYX time-lapse: a stop during its second frame keeps the first (the service is
    stopped, the file queued); the restart segments only the frames left."""
    folder, out, stop = tmp_path / "in", tmp_path / "out", threading.Event()
    folder.mkdir()
    movie = blob_timelapse(3, (12, 48, 52))
    write_calibrated(folder / "movie.tif", movie, z_step=2.0)
    settings, run = WatchSettings(poll=0.05, settle=0.1), RunSettings(diameter=30.0, link=True)
    summary = watch_folder(folder, out, stopping_segmenter(tiny_segmenter, stop, call=2),
                           run=run, settings=settings, cancel=stop)
    assert (summary.done, summary.abandoned) == (0, 1) and _status(out, "movie.tif") == "queued"
    assert [p.name for p in (out / ".movie_masks.tif.frames").glob("t*")] == ["t000000.npy"]
    with watching(folder, out, tiny_segmenter, run=run, settings=settings):
        wait_until(lambda: _status(out, "movie.tif") == "done", "time-lapse done")
    record = read_record(out / "movie.tif.json")
    assert record["shape"] == list(movie.shape) and "1 resumed, linked" in record["note"]
    with tifffile.TiffFile(out / "movie_masks.tif") as tif:
        assert tif.series[0].axes == "TZYX" and tif.series[0].shape == movie.shape
        assert tif.imagej_metadata["spacing"] == 2.0
    assert sorted(p.name for p in out.iterdir()) == ["movie.tif.json", "movie_masks.tif"]


# --- the service as a subprocess ---------------------------------------------------------------


class Service:
    """``nucseg-rt watch`` running in the background, its log in a file."""

    def __init__(self, folder, out, model, log, *extra, settle=SETTLE):
        env = cli_env()
        self.log_path = log
        self.log_file = open(log, "w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "nucseg_rt.cli", "watch", str(folder), "--out-dir", str(out),
             "--model", str(model), "--diameter", "30", "--poll", POLL, "--settle", settle,
             *extra], stdout=self.log_file, stderr=subprocess.STDOUT, env=env)

    def log(self) -> str:
        return self.log_path.read_text()

    def stop(self, sig=signal.SIGTERM, timeout=30.0) -> int:
        self.proc.send_signal(sig)
        code = self.proc.wait(timeout)
        self.log_file.close()
        return code

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.log_file.close()


@pytest.fixture
def services():
    started = []

    def start(*args, **kwargs):
        started.append(Service(*args, **kwargs))
        return started[-1]

    yield start
    for service in started:
        service.kill()


def _wait_for(service, out, name, status, timeout=60.0):
    def ready():
        if service.proc.poll() is not None:
            raise AssertionError(f"service exited early ({service.proc.returncode}):\n"
                                 f"{service.log()}")
        return _status(out, name) == status

    wait_until(ready, f"{name} {status}", timeout)
    return read_record(out / f"{name}.json")


def _no_temporary_files(out):
    return [p.name for p in out.iterdir() if p.name.startswith(".") or ".part" in p.name]


def test_watch_help():
    proc = cli_help("watch")
    assert proc.returncode == 0, proc.stderr
    for option in ("--out-dir", "--poll", "--settle", "--model", "--anisotropy", "--precision",
                   "--time-axis", "--frames", "--link"):
        assert option in proc.stdout


def test_watch_refuses_missing_folder(tmp_path, tiny_onnx_model):
    proc = run_cli("watch", tmp_path / "missing", "--out-dir", tmp_path / "out",
                   "--model", tiny_onnx_model)
    assert proc.returncode == 1 and "is not a folder" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr


def test_slow_copy_once_complete_and_corrupt_file_skipped(tmp_path, tiny_onnx_model, services):
    folder, out = tmp_path / "in", tmp_path / "out"
    folder.mkdir()
    service = services(folder, out, tiny_onnx_model, tmp_path / "log.txt", settle=SLOW_COPY_SETTLE)
    # a damaged file: whole TIFF structure, compressed data overwritten (fails when decoded)
    corrupt = _tiff(folder / "corrupt.tif", blob_volume(), compression="zlib")
    data = bytearray(corrupt.read_bytes())
    with tifffile.TiffFile(corrupt) as tif:
        for page in tif.pages:
            data[page.dataoffsets[0]:page.dataoffsets[0] + 64] = b"\x55" * 64
    corrupt.write_bytes(bytes(data))
    corrupt_bytes = corrupt.read_bytes()

    vol = blob_volume((12, 64, 72), centers=[(4, 16, 18), (7, 44, 50)])
    slow = folder / "slow.tif"
    with open(slow, "wb") as fh, tifffile.TiffWriter(fh) as tw:
        for k in range(0, 12, 2):
            tw.write(vol[k], metadata=None)
            tw.write(vol[k + 1], metadata=None)
            fh.flush()
            if k == 0:  # the service has seen the partial file (its record) before it grows
                _wait_for(service, out, "slow.tif", "queued")
            if k == 4:  # what the service sees meanwhile is a readable, smaller TIFF
                assert tiff_problem(slow) is None
                with tifffile.TiffFile(slow) as tif:
                    assert tif.series[0].shape == (6, 64, 72)
    final_size = slow.stat().st_size

    failed = _wait_for(service, out, "corrupt.tif", "failed")
    good = write_calibrated(folder / "good.tif", blob_volume(seed=3))
    done_slow = _wait_for(service, out, "slow.tif", "done")
    done_good = _wait_for(service, out, "good.tif", "done")
    assert service.stop() == 0, service.log()
    log = service.log()
    assert "network: onnxruntime fp32 (auto: " in log  # what runs, and why, said once
    assert log.count("network: ") == 1

    assert done_slow["size"] == final_size and done_slow["shape"] == [12, 64, 72]
    assert done_slow["n_nuclei"] == 2
    assert log.count("slow.tif: segmenting") == 1 and "slow.tif: failed" not in log
    assert tifffile.imread(out / "slow_masks.tif").shape == (12, 64, 72)

    assert "DeflateError" in failed["error"] or "damaged" in failed["error"]
    failure_lines = [line for line in log.splitlines()
                     if "corrupt.tif" in line and "failed" in line]
    assert len(failure_lines) == 1 and "Traceback" not in log
    assert corrupt.read_bytes() == corrupt_bytes  # inputs are never modified
    assert not (out / "corrupt_masks.tif").exists()

    assert done_good["finished"] > failed["finished"] and done_good["n_nuclei"] == 4
    assert done_good["outputs"] == [str(out.resolve() / "good_masks.tif")]
    assert good.exists() and "stopped (SIGTERM)" in log
    assert sorted(p.name for p in out.iterdir()) == [
        "corrupt.tif.json", "good.tif.json", "good_masks.tif", "slow.tif.json", "slow_masks.tif"]


def _write_zarr(path, vol):
    import zarr

    arr = zarr.open_array(str(path), mode="w", shape=vol.shape, chunks=(8, 32, 32),
                          dtype=vol.dtype)
    arr[...] = vol
    return path


def test_restart_does_not_redo_finished_files(tmp_path, tiny_onnx_model, services):
    folder, out = tmp_path / "in", tmp_path / "out"
    folder.mkdir()
    write_calibrated(folder / "a.tif", blob_volume())
    names = ["a.tif"]
    if importlib.util.find_spec("zarr") is not None:  # the large extra (the test extra has it)
        _write_zarr(folder / "b.zarr", blob_volume(seed=2))
        names.append("b.zarr")
    first = services(folder, out, tiny_onnx_model, tmp_path / "log1.txt")
    for name in names:
        assert _wait_for(first, out, name, "done")["n_nuclei"] == 4
    assert first.stop() == 0, first.log()
    records = {name: (out / f"{name}.json").read_text() for name in names}
    outputs = {p.name: p.stat().st_mtime_ns for p in out.glob("*_masks.tif")}
    assert sorted(outputs) == sorted(f"{n.split('.')[0]}_masks.tif" for n in names)

    second = services(folder, out, tiny_onnx_model, tmp_path / "log2.txt")
    os.replace(write_calibrated(tmp_path / "c.tif", blob_volume(seed=4)), folder / "c.tif")
    assert _wait_for(second, out, "c.tif", "done")["n_nuclei"] == 4
    assert second.stop(signal.SIGINT) == 130, second.log()  # Ctrl-C: 130, documented
    log = second.log()
    assert f"{len(names)} file(s) finished in an earlier run: not redone" in log
    assert log.count(": segmenting") == 1 and "c.tif: segmenting" in log
    assert {name: (out / f"{name}.json").read_text() for name in names} == records
    assert {name: (out / name).stat().st_mtime_ns for name in outputs} == outputs
    assert "stopped (SIGINT)" in log and not _no_temporary_files(out)


def test_sigterm_during_a_file_exits_0_with_nothing_partial(tmp_path, tiny_onnx_model, services):
    folder, out = tmp_path / "in", tmp_path / "out"
    folder.mkdir()
    service = services(folder, out, tiny_onnx_model, tmp_path / "log.txt")
    big = np.tile(blob_volume(), (2, 4, 4))  # (40, 256, 288): a few seconds of network
    _tiff(tmp_path / "big.tif", big)
    os.replace(tmp_path / "big.tif", folder / "big.tif")  # appears whole, as a copy tool's rename
    _wait_for(service, out, "big.tif", "running")
    assert service.stop() == 0, service.log()
    log = service.log()
    record = read_record(out / "big.tif.json")
    assert record["status"] == "queued" and "abandoned" in record["note"], log
    assert "big.tif: abandoned" in log and "stopped (SIGTERM)" in log
    assert sorted(p.name for p in out.iterdir()) == ["big.tif.json"]  # nothing partial


def test_watch_takes_a_time_axis(tmp_path, tiny_onnx_model, services):
    """``--time-axis`` names the time points of files without axis metadata (never guessed)."""
    folder, out = tmp_path / "in", tmp_path / "out"
    folder.mkdir()
    movie = np.concatenate([blob_timelapse(4, (12, 48, 52)), blob_timelapse(1, (12, 48, 52))])
    tifffile.imwrite(folder / "raw.tif", movie)  # 5 x 12 x 48 x 52, no axes
    service = services(folder, out, tiny_onnx_model, tmp_path / "log.txt", "--time-axis", "0",
                       "--frames", "1-2", "--link")
    record = _wait_for(service, out, "raw.tif", "done")
    assert record["note"] == "(frames 1-2: 2 of 5, linked)"
    assert tifffile.imread(out / "raw_masks.tif").shape == (2, 12, 48, 52)
    assert service.stop() == 0
