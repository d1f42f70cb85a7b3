"""The batch runner: files in, one :class:`FileResult` per file out.

It owns what a batch shares: the Segmenter (loaded once, only when some file needs it), the dask
cluster of ``--scheduler`` runs (started on first use, closed at the end) and the decision which
errors are one file's fault (recorded, the batch goes on) and which are fatal (raised).
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator

from nucseg_rt.batch._file import FILE_ERRORS, FilePlan, FileResult, plan_file, segment_file
from nucseg_rt.batch._plan import Job, check_output_folders, pending_outputs, plan_jobs
from nucseg_rt.batch._settings import RunSettings
from nucseg_rt.errors import (Cancelled, DeviceUnavailableError, InvalidInputError,
                              ModelIntegrityError, SettingsError, describe_error)
from nucseg_rt.params import InputSpec, MaskParams

__all__ = ["BatchRunner", "run_batch"]

logger = logging.getLogger("nucseg_rt")

Progress = Callable[[str, int, int], None]
#: Errors that end a batch: the settings, the model or the device are wrong for every file
FATAL_ERRORS = (SettingsError, DeviceUnavailableError, ModelIntegrityError)


class BatchRunner:
    """Segment files one after the other with one Segmenter and one set of typed settings.

    Parameters
    ----------
    segmenter : Segmenter or callable
        A loaded :class:`nucseg_rt.Segmenter`, or a function making one: it is then called once,
        after the settings and the files' headers were checked, and only if some file has
        outputs to write.
    inputs : InputSpec, optional
        Axes, channels, normalisation (axes not given come from each file's metadata).
    params : MaskParams, optional
        The mask step.
    run : RunSettings, optional
        Anisotropy (default: each file's calibration), diameter, outputs, blockwise settings.

    Raises
    ------
    MissingDependencyError
        The settings need the ``large`` extra (zarr output, blocks, a memory budget, a
        scheduler) and it is not installed: found here, before any file is read.

    Notes
    -----
    Errors that concern one file (unreadable, wrong axes, NaN values, a full disk, not enough
    memory; and bugs, with ``FileResult.internal``) become that file's "failed" result and the
    batch goes on. Settings that do not fit the data (:class:`nucseg_rt.errors.SettingsError`),
    a model file that changed or a missing device stop the batch: they are raised. Use it as a
    context manager (or call :meth:`close`) to stop a dask cluster it started.
    """

    def __init__(self, segmenter, *, inputs: InputSpec | None = None,
                 params: MaskParams | None = None, run: RunSettings | None = None):
        self.inputs = inputs if inputs is not None else InputSpec()
        self.params = params if params is not None else MaskParams()
        self.run_settings = run if run is not None else RunSettings()
        for name, value, kind in (("inputs", self.inputs, InputSpec),
                                  ("params", self.params, MaskParams),
                                  ("run", self.run_settings, RunSettings)):
            if not isinstance(value, kind):
                raise InvalidInputError(f"`{name}` must be a {kind.__name__}, "
                                        f"got {type(value).__name__}")
        self.run_settings.check_environment()
        loaded = hasattr(segmenter, "segment")
        if not loaded and not callable(segmenter):
            raise InvalidInputError("`segmenter` must be a Segmenter or a function making one")
        self._segmenter = segmenter if loaded else None
        self._make = None if loaded else segmenter
        self._stack = contextlib.ExitStack()
        self._client = None

    @property
    def segmenter(self):
        """The Segmenter (made on first use when a factory was given; it is then this runner's
        and :meth:`close` closes it)."""
        if self._segmenter is None:
            self._segmenter = self._make()
            self._stack.callback(self._close_made)
        return self._segmenter

    @property
    def backend(self):
        """How the network ran (:class:`nucseg_rt.network.engine.BackendChoice`: engine,
        precision, why), or None when no Segmenter was made yet."""
        return None if self._segmenter is None else self._segmenter.engine.backend

    def _close_made(self) -> None:
        self._segmenter.close()
        self._segmenter = None  # made again if the runner is used again

    def close(self) -> None:
        """Stop the dask cluster started for this runner and close the Segmenter it made, if
        any (a Segmenter given loaded stays its owner's)."""
        self._client = None
        self._stack.close()

    def __enter__(self) -> BatchRunner:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _dask_client(self):
        large = self.run_settings.blockwise
        if large is None or large.scheduler is None:
            return None
        if self._client is None:
            from nucseg_rt.blockwise.dask import LazyClient

            # one cluster for all the files, started when the first file needs it
            self._client = self._stack.enter_context(LazyClient(large.scheduler,
                                                                workers=large.workers))
        return self._client

    # -- planning ------------------------------------------------------------------------------
    def plan(self, jobs: Iterable[Job]) -> list[FilePlan | FileResult]:
        """Each job's :class:`FilePlan` from its header, or its result already: "skipped" (all
        outputs exist) or "failed" (unreadable header). Raises :class:`SettingsError`."""
        out: list[FilePlan | FileResult] = []
        for job in jobs:
            if not pending_outputs(job, overwrite=self.run_settings.overwrite):
                out.append(FileResult(job.source, "skipped"))
                continue
            try:
                out.append(plan_file(job.source, inputs=self.inputs, run=self.run_settings))
            except FATAL_ERRORS:
                raise
            except FILE_ERRORS as exc:
                out.append(_failed(job, exc, 0.0))
        return out

    # -- running -------------------------------------------------------------------------------
    def iter_results(self, jobs: Iterable[Job], *, progress: Progress | None = None,
                     cancel: threading.Event | None = None) -> Iterator[FileResult]:
        """Segment ``jobs`` in order, yielding each file's result as it is known.

        All headers are read (and the settings checked against them) before the model is loaded
        and the first file is segmented. ``progress(stage, done, total)`` receives
        ``("files", i, n)`` before file ``i`` (and ``("files", n, n)`` at the end), then the
        stages of that file. When ``cancel`` is set, the file in progress is abandoned (its
        result has status "cancelled"; nothing is written under an output's name; a blockwise
        run keeps its ``<output>.blocks`` folder to resume) and no further file is started.
        """
        jobs = list(jobs)
        plans = self.plan(jobs)
        if any(isinstance(p, FilePlan) for p in plans):
            if cancel is not None and cancel.is_set():
                return
            self.segmenter  # loaded once, before the first file; its errors are fatal
        for i, (job, planned) in enumerate(zip(jobs, plans)):
            if progress is not None:
                progress("files", i, len(jobs))
            if cancel is not None and cancel.is_set():
                return
            result = planned if isinstance(planned, FileResult) else \
                self._one(job, planned, progress, cancel)
            _log(result)
            yield result
            if result.status == "cancelled":
                return
        if progress is not None:
            progress("files", len(jobs), len(jobs))

    def run(self, jobs: Iterable[Job], *, progress: Progress | None = None,
            cancel: threading.Event | None = None) -> list[FileResult]:
        """:meth:`iter_results` as a list (shorter than ``jobs`` when cancelled)."""
        return list(self.iter_results(jobs, progress=progress, cancel=cancel))

    def _one(self, job: Job, plan: FilePlan, progress, cancel) -> FileResult:
        t0 = time.perf_counter()
        try:
            return segment_file(self.segmenter, job, inputs=self.inputs, params=self.params,
                                run=self.run_settings, plan=plan, progress=progress,
                                cancel=cancel, client=self._dask_client())
        except Cancelled:
            return FileResult(job.source, "cancelled", plan.shape,
                              seconds=time.perf_counter() - t0)
        except FATAL_ERRORS:
            raise
        except Exception as exc:  # noqa: BLE001 - one file's failure (or a bug), reported
            if cancel is not None and cancel.is_set():  # e.g. a dask worker stopped by Ctrl-C
                return FileResult(job.source, "cancelled", plan.shape,
                                  seconds=time.perf_counter() - t0)
            return _failed(job, exc, time.perf_counter() - t0, plan)


def _failed(job: Job, exc: BaseException, seconds: float, plan: FilePlan | None = None):
    extra = {} if plan is None else dict(shape=plan.shape, anisotropy=plan.anisotropy,
                                         anisotropy_source=plan.anisotropy_source)
    return FileResult(job.source, "failed", seconds=seconds, error=describe_error(exc),
                      exception=exc, **extra)


def _log(result: FileResult) -> None:
    if result.status == "done":
        logger.info("%s: %d nuclei in %.1f s (anisotropy %.4g, %s; diameter %.1f px, %s)",
                    result.source.name, result.n_nuclei, result.seconds, result.anisotropy,
                    result.anisotropy_source, result.diameter or 0.0, result.diameter_source)


def run_batch(paths: Iterable[str | os.PathLike], segmenter, *,
              out_dir: str | os.PathLike | None = None, inputs: InputSpec | None = None,
              params: MaskParams | None = None, run: RunSettings | None = None,
              progress: Progress | None = None,
              cancel: threading.Event | None = None) -> list[FileResult]:
    """Segment TIFF / zarr files and write ``<stem>_masks.tif`` (or ``.ome.zarr``) for each.

    Parameters
    ----------
    paths : iterable of path-like
        Input volumes.
    segmenter : Segmenter or callable
        See :class:`BatchRunner`.
    out_dir : path-like, optional
        Folder for the outputs (created when the first is written); default next to each input.
    inputs, params, run
        See :class:`BatchRunner`.
    progress, cancel
        See :meth:`BatchRunner.iter_results`.

    Returns
    -------
    list of FileResult
        One per distinct input, in order (fewer when cancelled).

    Examples
    --------
    >>> from nucseg_rt import Segmenter, run_batch, RunSettings          # doctest: +SKIP
    >>> results = run_batch(["a.tif", "b.tif"], Segmenter("nuclei_3d"),  # doctest: +SKIP
    ...                     out_dir="masks", run=RunSettings(diameter="auto"))
    >>> [(r.source.name, r.status, r.n_nuclei, r.anisotropy_source) for r in results]  # doctest: +SKIP
    """
    run = run if run is not None else RunSettings()
    jobs = plan_jobs(paths, out_dir=out_dir, save_flows=run.save_flows,
                     output_format=run.output_format)
    check_output_folders(jobs, out_dir)
    with BatchRunner(segmenter, inputs=inputs, params=params, run=run) as runner:
        return runner.run(jobs, progress=progress, cancel=cancel)
