"""Python threads over nogil numba kernels, where a ``prange`` driver would cost more to compile
than it saves (each ``parallel=True`` kernel is seconds of compilation per process on first use,
per argument type).

The threads come from one pool per process, made on first use (numba's own thread pool is
process-wide in the same way), and the calling thread takes a share of the work: a call costs
microseconds, not the start of new threads.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable

__all__ = ["over_threads", "over_ranges", "thread_count"]

_pool = None
_pool_lock = threading.Lock()


def thread_count(n: int) -> int:
    """How many threads for ``n`` tasks: numba's number (``dynamics_threads`` sets it), at most
    ``n``."""
    import numba

    return max(1, min(int(n), numba.get_num_threads()))


def _shared_pool():
    """The process's helper threads (as many as numba may use; made on first use)."""
    global _pool
    with _pool_lock:
        if _pool is None:
            import numba
            from concurrent.futures import ThreadPoolExecutor

            _pool = ThreadPoolExecutor(max(1, numba.config.NUMBA_NUM_THREADS),
                                       thread_name_prefix="nucseg-kernels")
        return _pool


def over_threads(n: int, work: Callable[[int], object]) -> None:
    """``work(i)`` for ``i`` in ``range(n)``, on :func:`thread_count` threads (this one and
    helpers; tasks handed out in order as threads come free). The first exception is raised
    once every thread stopped; after it no new task starts."""
    threads = thread_count(n)
    if threads <= 1:
        for i in range(n):
            work(i)
        return
    tasks = itertools.count()  # next() is atomic under the GIL
    failed = threading.Event()

    def loop():
        for i in tasks:
            if i >= n or failed.is_set():
                return
            try:
                work(i)
            except BaseException:
                failed.set()
                raise

    pool = _shared_pool()
    helpers = [pool.submit(loop) for _ in range(threads - 1)]
    error = None
    try:
        loop()
    except BaseException as exc:
        error = exc
    for future in helpers:
        try:
            future.result()
        except BaseException as exc:
            error = error or exc
    if error is not None:
        raise error


def over_ranges(n: int, work: Callable[[int, int], object], *, grain: int = 1) -> None:
    """``work(lo, hi)`` over contiguous, near-equal parts of ``range(n)``, one per thread
    (numba's static ``prange`` schedule); at most one part per ``grain`` items."""
    parts = thread_count(max(1, n // max(1, grain)))
    bounds = [n * t // parts for t in range(parts + 1)]
    over_threads(parts, lambda t: work(bounds[t], bounds[t + 1]))
