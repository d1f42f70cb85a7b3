"""The watch-folder service: records, the polling loop, stopping (see :mod:`nucseg_rt.watch`)."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from nucseg_rt.batch import RunSettings
from nucseg_rt.errors import InvalidInputError, NucsegError, describe_error, params_of
from nucseg_rt.params import InputSpec, MaskParams
from nucseg_rt.io import tiff_problem
from nucseg_rt.watch.detect import Snapshot, StabilityTracker, find_candidates, snapshot

__all__ = ["WatchSettings", "WatchSummary", "record_path", "read_record", "check_folders",
           "watch_folder", "stop_on_signals"]

logger = logging.getLogger("nucseg_rt.watch")

FINISHED = ("done", "failed")
RECORD_VERSION = 1


@dataclass(frozen=True)
class WatchSettings:
    """How the folder is watched (what is written per volume is the batch runner's
    :class:`nucseg_rt.batch.RunSettings`).

    Attributes
    ----------
    poll : float
        Seconds between looks at the folder (> 0).
    settle : float
        Seconds a volume must stay unchanged before it is read (>= 0).
    """

    poll: float = 1.0
    settle: float = 2.0

    def __post_init__(self):
        if not self.poll > 0:
            raise InvalidInputError(f"`poll` must be > 0 seconds, got {self.poll}")
        if not self.settle >= 0:
            raise InvalidInputError(f"`settle` must be >= 0 seconds, got {self.settle}")


@dataclass
class WatchSummary:
    """What one run of the service did (files finished in earlier runs are not counted)."""

    done: int = 0
    failed: int = 0
    abandoned: int = 0


# --- records ---------------------------------------------------------------------------------


def record_path(out_dir: str | os.PathLike, source: str | os.PathLike) -> Path:
    """``OUT/<input name>.json``."""
    return Path(out_dir) / f"{Path(source).name}.json"


def read_record(path: str | os.PathLike) -> dict | None:
    """A record written by the service, None if absent or unreadable."""
    try:
        record = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and "status" in record else None


def _write_record(path: Path, record: dict) -> None:
    from nucseg_rt.io import atomic_write

    with atomic_write(path) as fh:
        fh.write(json.dumps(record, indent=1).encode("utf-8"))


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def _why_queued(status: str | None, note: str) -> str:
    """Why an input is (again) waiting, for the log: new, changed, or left unfinished before."""
    if status in FINISHED:
        return f"changed since it was {status}"
    if status == "running":
        return "was being segmented when the service ended; segmenting it again"
    if status == "queued" and note in ("interrupted", "abandoned when the service stopped"):
        return f"{note} in an earlier run; segmenting it again"
    return "new"


def _same_input(record: dict | None, snap: Snapshot) -> bool:
    return record is not None and [record.get(k) for k in ("size", "mtime_ns", "files")] == \
        [snap.size, snap.mtime_ns, snap.files]


# --- the service -----------------------------------------------------------------------------


def _segment(runner, source: Path, out_dir: Path, *, cancel: threading.Event):
    """Segment ``source`` into ``out_dir`` with the batch runner (the one place it is used).

    Returns the :class:`nucseg_rt.batch.Job` and its :class:`nucseg_rt.batch.FileResult`
    (status "cancelled" when ``cancel`` was set meanwhile).
    """
    from nucseg_rt.batch import FileResult, plan_jobs

    run = runner.run_settings
    (job,) = plan_jobs([source], out_dir=out_dir, save_flows=run.save_flows,
                       output_format=run.output_format)
    results = runner.run([job], cancel=cancel)
    return job, (results[0] if results else FileResult(source, "cancelled"))


class _Watcher:
    """State of one service run: what was seen, what is finished."""

    def __init__(self, folder: Path, out_dir: Path, runners, settings: WatchSettings,
                 cancel: threading.Event, clock):
        self.folder, self.out_dir = folder, out_dir
        self.runners = runners  # (keeping existing outputs, replacing them)
        self.settings, self.cancel = settings, cancel
        self.tracker = StabilityTracker(settings.settle, clock)
        self.records: dict[Path, dict | None] = {}  # last record read or written, per input
        self.announced: set[Path] = set()  # recorded as queued in this run
        self.redo: set[Path] = set()  # finished in an earlier version: replace the outputs
        self.summary = WatchSummary()
        self.listing_error: str | None = None  # logged once until the folder lists again

    def scan(self) -> list[Path]:
        """Look at the folder once; return the inputs that are ready, in name order."""
        ready, present, earlier = [], set(), 0
        try:
            candidates = find_candidates(self.folder)
        except OSError as exc:  # e.g. a network share gone for a moment: try again next poll
            if str(exc) != self.listing_error:
                logger.warning("cannot list %s (%s); trying again", self.folder, exc)
            self.listing_error = str(exc)
            return []
        self.listing_error = None
        for path in candidates:
            snap = snapshot(path)
            if snap is None:
                continue
            present.add(path)
            if path not in self.records:  # first look this run: what did earlier runs do?
                self.records[path] = read_record(record_path(self.out_dir, path))
                earlier += self._finished(path, snap)
            if self._finished(path, snap):
                continue
            if path not in self.announced:
                status = (self.records[path] or {}).get("status")
                note = (self.records[path] or {}).get("note") or ""
                if status in FINISHED:  # the input changed since: replace its outputs
                    self.redo.add(path)
                self._save(path, status="queued", queued=_now())
                self.announced.add(path)
                logger.info("%s: %s, waiting until it stops changing", path.name, _why_queued(status, note))
            if self.tracker.observe(path, snap):
                ready.append(path)
        if earlier:
            logger.info("%d file(s) finished in an earlier run: not redone", earlier)
        for gone in set(self.records) - present:
            self.tracker.forget(gone)
            self.announced.discard(gone)
            self.redo.discard(gone)
            if (self.records.pop(gone) or {}).get("status") == "queued":
                with contextlib.suppress(OSError):
                    record_path(self.out_dir, gone).unlink()
        return ready

    def _finished(self, path: Path, snap: Snapshot) -> bool:
        record = self.records.get(path)
        return record is not None and record["status"] in FINISHED and _same_input(record, snap)

    def _save(self, path: Path, **fields) -> None:
        previous = self.records.get(path) or {}
        keep = {k: previous[k] for k in ("queued",) if k in previous}
        record = {"version": RECORD_VERSION, "input": str(path.resolve()), "status": None,
                  "size": None, "mtime_ns": None, "files": None, "outputs": [],
                  "n_nuclei": None, "shape": None, "seconds": None, "error": None, "note": "",
                  "queued": None, "started": None, "finished": None, **keep, **fields}
        _write_record(record_path(self.out_dir, path), record)
        self.records[path] = record

    def process(self, path: Path) -> None:
        """Segment one ready input and record the outcome; a failure is recorded, not raised."""
        snap = snapshot(path)
        if snap is None or not self.tracker.observe(path, snap):
            return  # changed (or gone) since the scan
        redo = path in self.redo
        seen = dict(size=snap.size, mtime_ns=snap.mtime_ns, files=snap.files, started=_now())
        if not snap.ready:  # settled but empty: say so instead of waiting for ever
            return self._fail(path, seen, "empty file (0 bytes); taken again when it is written"
                              if not path.is_dir() else "zarr folder without its metadata file "
                              "(.zattrs/.zgroup/.zarray/zarr.json); taken again when it changes")
        problem = None if path.is_dir() else tiff_problem(path)
        if problem is not None:
            return self._fail(path, seen, f"not a complete TIFF ({problem})")
        self._save(path, status="running", **seen)
        logger.info("%s: segmenting%s", path.name, " again (changed since)" if redo else "")
        t0 = time.perf_counter()
        try:
            job, result = _segment(self.runners[redo], path, self.out_dir, cancel=self.cancel)
        except BaseException as exc:
            if not isinstance(exc, Exception):  # KeyboardInterrupt (a second Ctrl-C), exit
                self._save(path, status="queued", note="interrupted")
                raise
            return self._fail(path, seen, describe_error(exc), exc)  # fatal for a batch
        if result.status == "cancelled":
            self._save(path, status="queued", note="abandoned when the service stopped")
            self.summary.abandoned += 1
            logger.info("%s: abandoned (stopping); segmented when the service restarts", path.name)
        elif result.status == "failed":
            self._fail(path, seen, result.error, result.exception)
        else:
            self._done(path, seen, job, result, time.perf_counter() - t0)

    def _done(self, path, seen, job, result, seconds) -> None:
        skipped = result.status == "skipped"
        note = "outputs already existed: not recomputed" if skipped else result.note.strip()
        self.announced.discard(path)
        self.redo.discard(path)
        self._save(path, status="done", **seen, outputs=[str(p) for p in job.outputs],
                   n_nuclei=None if skipped else result.n_nuclei,
                   shape=None if skipped else list(result.shape), seconds=round(seconds, 3),
                   note=note, finished=_now())
        self.summary.done += 1
        if skipped:
            logger.info("%s: done (%s)", path.name, note)
        else:
            logger.info("%s: done, %d nuclei in %.1f s -> %s", path.name, result.n_nuclei,
                        seconds, ", ".join(p.name for p in job.outputs))

    def _fail(self, path, seen, message: str, exc: BaseException | None = None) -> None:
        self.announced.discard(path)
        self._save(path, status="failed", **seen, error=message, finished=_now())
        self.summary.failed += 1
        logger.error("%s: failed: %s", path.name, message,  # the CLI says the flags
                     extra={"param": params_of(exc)})
        if exc is not None and not isinstance(exc, (NucsegError, OSError, MemoryError)):
            logger.debug("traceback of the failure of %s", path.name, exc_info=exc)


def check_folders(folder: str | os.PathLike, out_dir: str | os.PathLike) -> tuple[Path, Path]:
    """``folder`` must be a folder; ``out_dir`` is created if needed and must be writable."""
    from nucseg_rt.batch import check_writable

    folder = Path(folder)
    if not folder.is_dir():
        raise InvalidInputError(f"`folder` {folder} is not a folder")
    return folder.resolve(), check_writable(out_dir, create=True).resolve()


def watch_folder(folder: str | os.PathLike, out_dir: str | os.PathLike, segmenter, *,
                 inputs: InputSpec | None = None, params: MaskParams | None = None,
                 run: RunSettings | None = None, settings: WatchSettings | None = None,
                 cancel: threading.Event | None = None,
                 clock: Callable[[], float] = time.monotonic) -> WatchSummary:
    """Segment every volume written into ``folder`` until ``cancel`` is set.

    Parameters
    ----------
    folder : path-like
        Watched folder (not its sub-folders). Never written to.
    out_dir : path-like
        Folder for outputs and records (created if needed; may be ``folder`` itself).
    segmenter : nucseg_rt.Segmenter
        Loaded once, used for every volume.
    inputs, params, run : InputSpec, MaskParams, RunSettings, optional
        As for :class:`nucseg_rt.batch.BatchRunner` (``run.overwrite`` is decided per file:
        outputs of an input that changed are replaced).
    settings : WatchSettings, optional
        Polling and settling.
    cancel : threading.Event, optional
        Set it to stop (see the module docstring): the file in progress is abandoned
        (:class:`nucseg_rt.errors.Cancelled` inside the runner). Without one, the service runs
        until the process ends.
    clock : callable
        Monotonic seconds, for the stability check.

    Returns
    -------
    WatchSummary
        Files done, failed and abandoned in this run.

    Raises
    ------
    InvalidInputError
        ``folder`` is not a folder or ``out_dir`` cannot be written.
    """
    from nucseg_rt.batch import BatchRunner

    folder, out_dir = check_folders(folder, out_dir)
    settings = settings if settings is not None else WatchSettings()
    cancel = cancel if cancel is not None else threading.Event()
    run = run if run is not None else RunSettings()
    runners = {redo: BatchRunner(segmenter, inputs=inputs, params=params,
                                 run=dataclasses.replace(run, overwrite=run.overwrite or redo))
               for redo in (False, True)}
    watcher = _Watcher(folder, out_dir, runners, settings, cancel, clock)
    engine = getattr(segmenter, "engine", None)
    logger.info("watching %s for TIFF and OME-Zarr volumes -> %s (model %s on %s, %s, poll %g s, "
                "settle %g s)", folder, out_dir, getattr(segmenter.model, "name", "?"),
                getattr(segmenter, "device", "?"), getattr(engine, "backend", "?"),
                settings.poll, settings.settle)
    try:
        while not cancel.is_set():
            for path in watcher.scan():
                if cancel.is_set():
                    break
                watcher.process(path)
            cancel.wait(settings.poll)
    finally:
        for runner in runners.values():
            runner.close()
    return watcher.summary


@contextlib.contextmanager
def stop_on_signals(stop: threading.Event) -> Iterator[list[int]]:
    """Set ``stop`` on SIGINT or SIGTERM while the block runs (main thread only).

    Yields the list of signal numbers received. A second SIGINT raises ``KeyboardInterrupt``
    (for a file whose current step reports no progress). The previous handlers are restored.
    """
    received: list[int] = []

    def handler(signum, frame):
        if signum == signal.SIGINT and stop.is_set():
            raise KeyboardInterrupt
        received.append(signum)
        stop.set()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield received
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
