"""Has a volume been completely written? Snapshots of files and zarr folders and the stability
tracker used by :mod:`nucseg_rt.watch` (the TIFF structure check is
:func:`nucseg_rt.io.tiff_problem`)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Snapshot", "StabilityTracker", "snapshot", "find_candidates"]

TIFF_SUFFIXES = (".tif", ".tiff")
ZARR_SUFFIX = ".zarr"
ZARR_MARKERS = (".zattrs", ".zgroup", ".zarray", "zarr.json")


@dataclass(frozen=True)
class Snapshot:
    """What ``stat`` says about an input: equal snapshots mean "no change seen".

    ``files`` is 1 for a file; ``ready`` is False for an empty file or a zarr folder without
    its metadata file, which are never taken.
    """

    size: int
    mtime_ns: int
    files: int = 1
    ready: bool = True


def snapshot(path: str | os.PathLike) -> Snapshot | None:
    """The :class:`Snapshot` of a file or zarr folder, None if it is gone."""
    path = Path(path)
    try:
        if not path.is_dir():
            st = path.stat()
            return Snapshot(st.st_size, st.st_mtime_ns, 1, st.st_size > 0)
        size = files = 0
        latest = path.stat().st_mtime_ns
        for root, dirs, names in os.walk(path):
            for name in [*names, *dirs]:
                st = os.stat(os.path.join(root, name))
                latest = max(latest, st.st_mtime_ns)
                if name in names:
                    size, files = size + st.st_size, files + 1
        ready = any((path / name).is_file() for name in ZARR_MARKERS)
        return Snapshot(size, latest, files, ready)
    except FileNotFoundError:  # removed, or a file inside replaced, while we looked
        return None


class StabilityTracker:
    """Decides when an input has stopped changing: the same snapshot seen ``settle`` s apart.

    Parameters
    ----------
    settle : float
        Seconds (of ``clock``) a snapshot must stay the same; with 0, two equal looks suffice.
    clock : callable
        Seconds, monotonic (tests pass a fake one).
    """

    def __init__(self, settle: float, clock: Callable[[], float] = time.monotonic):
        self.settle, self.clock = float(settle), clock
        self._first_seen: dict[Path, tuple[Snapshot, float]] = {}

    def observe(self, path: Path, snap: Snapshot) -> bool:
        """Record a look at ``path``; True when it has been unchanged for ``settle`` s (ready
        or not: an input that stays empty is settled too, and the caller says why it is not
        taken)."""
        now = self.clock()
        previous = self._first_seen.get(path)
        if previous is None or previous[0] != snap:
            self._first_seen[path] = (snap, now)
            return False
        return now - previous[1] >= self.settle

    def forget(self, path: Path) -> None:
        self._first_seen.pop(path, None)

    def tracked(self) -> set[Path]:
        return set(self._first_seen)


def find_candidates(folder: str | os.PathLike) -> list[Path]:
    """TIFF files and ``.zarr`` folders directly in ``folder`` that could be inputs, sorted."""
    from nucseg_rt.batch._plan import OUTPUT_ENDINGS, stem

    found = []
    with os.scandir(folder) as entries:
        for entry in entries:
            name = entry.name.lower()
            if name.startswith((".", "~")) or stem(Path(entry.name)).endswith(OUTPUT_ENDINGS):
                continue
            if (name.endswith(TIFF_SUFFIXES) and entry.is_file()) or \
                    (name.endswith(ZARR_SUFFIX) and entry.is_dir()):
                found.append(Path(entry.path))
    return sorted(found)
