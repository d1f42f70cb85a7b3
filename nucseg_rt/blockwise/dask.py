"""Run the blocks of a blockwise segmentation as dask tasks (``dask.distributed``).

A task is :func:`nucseg_rt.blockwise.blocks.compute_block` on one block: it writes the same block file
an in-process run writes, and the merge is the same code over the same files, so a dask run
gives the in-process result label for label. Each worker process builds its
:class:`nucseg_rt.Segmenter` (loads the ONNX model) once and reuses it for all its blocks.

``scheduler="local"`` starts a ``LocalCluster`` of worker processes (one thread each, the
machine's cores shared between them for onnxruntime and numba); ``"tcp://HOST:PORT"`` connects
to a running cluster, e.g. one started on SLURM or LSF with dask-jobqueue. Workers read the
input path themselves, so it must be on a file system they share.

Needs ``dask`` and ``distributed`` (``pip install 'nucseg-rt[large]'``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import threading
from collections.abc import Callable, Iterator

from nucseg_rt.blockwise import blocks
from nucseg_rt.blockwise.blocks import BlockReader
from nucseg_rt.errors import InvalidInputError, MissingDependencyError, check_cancel
from nucseg_rt.params import validate_whole

__all__ = ["validate_scheduler", "check_available", "open_client", "LazyClient", "BlockWorker",
           "run_blocks"]

_ADDRESS = re.compile(r"^(tcp|tls|ucx|inproc|ws|wss)://[^\s/:]+:\d{1,5}$")
logger = logging.getLogger("nucseg_rt")
#: name of the worker plugin holding each worker's :class:`BlockWorker`
PLUGIN = "nucseg-rt-blocks"


def _import_distributed():
    try:
        import distributed
    except ImportError as exc:
        raise MissingDependencyError(
            f"`scheduler` needs dask.distributed: pip install 'nucseg-rt[large]' ({exc})") from exc
    return distributed


def validate_scheduler(scheduler: str) -> str:
    """``"local"`` or a scheduler address ``tcp://HOST:PORT``; anything else is an error."""
    if scheduler == "local" or _ADDRESS.match(str(scheduler)):
        return str(scheduler)
    raise InvalidInputError(f"`scheduler` must be 'local' or an address such as "
                            f"tcp://HOST:PORT, got {scheduler!r}")


def check_available(scheduler: str, timeout: float = 5.0) -> None:
    """dask.distributed importable and, for an address, something listening there."""
    import socket

    _import_distributed()
    if scheduler == "local":
        return
    host, port = scheduler.split("://", 1)[1].rsplit(":", 1)
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as exc:
        raise InvalidInputError(f"`scheduler` {scheduler} is not reachable "
                                f"({exc.strerror or exc})") from None


def local_threads(workers: int) -> int:
    """onnxruntime / numba threads per local worker: the machine's cores shared out."""
    return max(1, (os.cpu_count() or 1) // max(1, workers))


@contextlib.contextmanager
def open_client(scheduler: str, *, workers: int | None = None,
                timeout: float = 10.0) -> Iterator[object]:
    """A ``distributed.Client`` on a new LocalCluster (``"local"``) or an existing scheduler."""
    scheduler = validate_scheduler(scheduler)
    if workers is not None:
        validate_whole("workers", workers, 1)
    distributed = _import_distributed()
    if scheduler == "local":
        n = workers or 2
        with _workers_without_sigint():
            cluster = distributed.LocalCluster(n_workers=n, threads_per_worker=1,
                                               processes=True, dashboard_address=None)
        with cluster, distributed.Client(cluster) as client:
            client.run(_drop_heartbeat_race)
            logger.info("dask: started a LocalCluster of %d worker%s at %s", n,
                        "" if n == 1 else "s", cluster.scheduler_address)
            yield client
        return
    try:
        client = distributed.Client(scheduler, timeout=f"{timeout}s")
    except (OSError, TimeoutError) as exc:
        raise InvalidInputError(f"`scheduler` {scheduler} is not reachable "
                                f"({type(exc).__name__}: {exc})") from exc
    logger.info("dask: connected to %s (%d workers)", scheduler,
                len(client.nthreads()))
    with client:
        yield client


class _HeartbeatRace(logging.Filter):
    """Drops a local worker's "Failed to communicate with scheduler during heartbeat" record.

    When the run ends (Ctrl-C included) the LocalCluster closes its scheduler, which lives in
    this process, while a worker busy with a block may still send one heartbeat: distributed
    then logs that OSError with a full traceback on the terminal, although nothing failed (the
    worker is being closed). Only our own local workers get the filter; a ``tcp://`` cluster's
    logs are its owner's."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Failed to communicate with scheduler during heartbeat")


def _drop_heartbeat_race() -> None:
    """Run in each worker of a LocalCluster: install :class:`_HeartbeatRace` once."""
    log = logging.getLogger("distributed.worker")
    if not any(isinstance(f, _HeartbeatRace) for f in log.filters):
        log.addFilter(_HeartbeatRace())


@contextlib.contextmanager
def _workers_without_sigint() -> Iterator[None]:
    """Start the worker processes with SIGINT ignored (inherited by the processes started
    meanwhile): Ctrl-C is the main process's to handle (it cancels the tasks and closes the
    cluster). Otherwise a terminal's Ctrl-C, sent to the whole process group, also interrupts
    every worker, which prints a traceback. A Ctrl-C during these seconds is lost."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


class LazyClient:
    """One client for a batch of files, opened on first use and closed by :meth:`close`.

    ``--scheduler local`` then starts one LocalCluster for the whole batch (its workers keep
    the loaded model between files) instead of one per file.
    """

    def __init__(self, scheduler: str, *, workers: int | None = None):
        self.scheduler = validate_scheduler(scheduler)
        self.workers = workers
        self._stack = contextlib.ExitStack()
        self._client = None

    def get(self):
        if self._client is None:
            self._client = self._stack.enter_context(open_client(self.scheduler,
                                                                 workers=self.workers))
        return self._client

    def close(self) -> None:
        self._client = None
        self._stack.close()

    def __enter__(self) -> "LazyClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class BlockWorker:
    """What one process keeps between the blocks it computes: the Segmenter of one spec and
    the open input volume (:class:`nucseg_rt.blockwise.blocks.BlockReader`).

    A task cannot carry a Segmenter (its onnxruntime sessions do not pickle), and building one
    per task would load the model again for every block, so the Segmenter is built on the
    first block of a spec and kept for the following ones (and for the next files of a batch
    sharing the cluster, see :class:`LazyClient`); another spec closes it first, so a
    long-lived worker holds at most one model. numba's threads follow the spec's ``threads``
    while a block runs (restored after it). :meth:`close` releases everything.
    """

    def __init__(self):
        self._spec = None
        self._segmenter = None
        self._reader = BlockReader()

    def segmenter(self, spec):
        """The Segmenter for ``spec`` (the previous one closed when the spec changes)."""
        if self._segmenter is None or spec != self._spec:
            self._close_segmenter()
            self._segmenter, self._spec = spec.build(), spec
        return self._segmenter

    def compute(self, ctx, index: int):
        """:func:`nucseg_rt.blockwise.blocks.compute_block` with this worker's state."""
        from nucseg_rt.masks import dynamics_threads

        segmenter = self.segmenter(ctx.spec)
        with dynamics_threads(ctx.spec.engine.threads):
            return blocks.compute_block(ctx, index, segmenter, self._reader)

    def _close_segmenter(self) -> None:
        if self._segmenter is not None:
            self._segmenter.close()
        self._segmenter = self._spec = None

    def close(self) -> None:
        self._close_segmenter()
        self._reader.close()


def _plugin():
    """A worker plugin giving each worker one :class:`BlockWorker`, closed with the worker."""
    distributed = _import_distributed()

    class BlockWorkerPlugin(distributed.WorkerPlugin):
        idempotent = True  # registered once per cluster: workers keep their model between files

        def setup(self, worker) -> None:
            self.blocks = BlockWorker()

        def teardown(self, worker) -> None:
            self.blocks.close()

    return BlockWorkerPlugin()


def _task(ctx, index: int) -> tuple[int, int]:
    """Dask task: compute one block file with the worker's BlockWorker; returns (block index,
    worker pid)."""
    from distributed import get_worker

    get_worker().plugins[PLUGIN].blocks.compute(ctx, index)
    return index, os.getpid()


def run_blocks(client, ctx, todo: list[int], *,
               progress: Callable[[int], None] | None = None,
               cancel: threading.Event | None = None, poll: float = 0.25) -> dict[int, int]:
    """Compute blocks ``todo`` on the cluster; ``progress(n_done)`` as futures complete.

    Returns ``{block index: worker pid}``. A failed task raises its error here. ``cancel``
    (looked at every ``poll`` seconds): the pending tasks are cancelled and
    :class:`nucseg_rt.errors.Cancelled` is raised; block files already written stay.
    """
    import time

    _import_distributed()
    if ctx.spec is None or not isinstance(ctx.source, (str, os.PathLike)):
        raise InvalidInputError("dask runs need a file input and a SegmenterSpec")
    client.register_plugin(_plugin(), name=PLUGIN)
    tag = f"nucseg-{abs(hash((str(ctx.workdir), str(ctx.source)))) % 10**8}"
    futures = [client.submit(_task, ctx, i, key=f"{tag}-{i}", pure=False) for i in todo]
    done: dict[int, int] = {}
    pending = list(futures)
    try:
        while pending:
            check_cancel(cancel)
            finished = [fut for fut in pending if fut.done()]
            if not finished:
                time.sleep(poll)
                continue
            taken = {id(fut) for fut in finished}
            pending = [fut for fut in pending if id(fut) not in taken]
            for fut in finished:
                index, pid = fut.result()  # a failed task raises here
                done[index] = pid
                if progress is not None:
                    progress(len(done))
    finally:
        client.cancel(futures)
    return done
