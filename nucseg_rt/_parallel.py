"""Python threads over nogil numba kernels, where a ``prange`` driver would cost more to compile
than it saves (each ``parallel=True`` kernel is seconds of compilation per process on first use,
per argument type)."""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["over_threads", "over_ranges", "thread_count"]


def thread_count(n: int) -> int:
    """How many threads for ``n`` tasks: numba's number (``dynamics_threads`` sets it), at most
    ``n``."""
    import numba

    return max(1, min(int(n), numba.get_num_threads()))


def over_threads(n: int, work: Callable[[int], object]) -> None:
    """``work(i)`` for ``i`` in ``range(n)``, on :func:`thread_count` threads (in this thread
    when that is one); the first exception is raised after all tasks ended."""
    threads = thread_count(n)
    if threads <= 1:
        for i in range(n):
            work(i)
        return
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(threads, thread_name_prefix="nucseg-masks") as pool:
        futures = [pool.submit(work, i) for i in range(n)]
    for future in futures:
        future.result()


def over_ranges(n: int, work: Callable[[int, int], object], *, grain: int = 1) -> None:
    """``work(lo, hi)`` over contiguous, near-equal parts of ``range(n)``, one per thread
    (numba's static ``prange`` schedule); at most one part per ``grain`` items."""
    parts = thread_count(max(1, n // max(1, grain)))
    bounds = [n * t // parts for t in range(parts + 1)]
    over_threads(parts, lambda t: work(bounds[t], bounds[t + 1]))
