"""Has a volume been completely written? Snapshots of files and zarr folders, the stability
tracker, and the TIFF structure check used by :mod:`nucseg_rt.watch`."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Snapshot", "StabilityTracker", "snapshot", "tiff_problem", "find_candidates"]

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


def tiff_problem(path: str | os.PathLike) -> str | None:
    """Why a TIFF is not whole (unreadable structure, data past its end), or None.

    Reads the header and every IFD, not the pixels. A file cut after a complete page can pass
    (it is a valid, smaller TIFF): only an unchanged size tells that writing has ended.
    """
    import tifffile

    from nucseg_rt.io.tiff import _strip_repr, _tifffile_damage_reports

    try:
        with _tifffile_damage_reports() as damage, tifffile.TiffFile(path) as tif:
            size = tif.filehandle.size
            series = tif.series[0] if tif.series else None
            if series is None or not series.shape or 0 in series.shape:
                return "no image in the file"
            for page in tif.pages:  # every IFD: a cut-off tail may hide behind good pages
                ends = [o + n for o, n in zip(page.dataoffsets, page.databytecounts) if n]
                if ends and max(ends) > size:
                    return f"page {page.index} ends past the end of the file ({size} bytes)"
            offset = series.dataoffset
            if offset is not None and offset + series.nbytes > size:
                return f"image data ends past the end of the file ({size} bytes)"
    except Exception as exc:  # tifffile raises many types on partial or bad files
        return f"{type(exc).__name__}: {_strip_repr(str(exc))}"
    return _strip_repr(damage[0]) if damage else None


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
