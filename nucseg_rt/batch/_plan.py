"""Which files are read and which are written: inputs from paths or a folder, one :class:`Job` per
input, outputs that would overwrite data refused, output folders checked (not yet created)."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from nucseg_rt.errors import InvalidInputError

__all__ = ["Job", "find_images", "plan_jobs", "pending_outputs", "check_writable",
           "check_output_folders"]

IMAGE_SUFFIXES = (".tif", ".tiff")
# name endings of files written by nucseg-rt or Cellpose; never taken as inputs from a folder
OUTPUT_ENDINGS = ("_masks", "_flows", "_cp_masks", "_cp_output", "_cellprob", "_seg")


@dataclass(frozen=True)
class Job:
    """One input file and where its results go (``flows`` None: not requested)."""

    source: Path
    masks: Path
    flows: Path | None = None

    @property
    def outputs(self) -> list[Path]:
        return [p for p in (self.masks, self.flows) if p is not None]


def stem(path: Path) -> str:
    """The file name without its image extension (``.ome.tif``, ``.zarr``, ...)."""
    name = path.name
    for suffix in (".ome.tiff", ".ome.tif", ".tiff", ".tif", ".ome.zarr", ".zarr"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def _natural_key(path: Path):
    return [int(part) if part.isdigit() else part.lower()
            for part in re.split(r"(\d+)", str(path))]


def find_images(folder: str | os.PathLike, *, img_filter: str = "",
                look_one_level_down: bool = False) -> list[Path]:
    """TIFF files in ``folder`` (and its sub-folders if asked), in natural order.

    Only files whose name without extension ends in ``img_filter`` are taken; hidden
    files and files whose name ends in a known output ending (``_masks``, ``_flows``, ...)
    never are.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InvalidInputError(f"`folder` {folder} is not a folder")
    folders = [folder]
    if look_one_level_down:
        folders += sorted((p for p in folder.iterdir() if p.is_dir()), key=_natural_key)
    found = []
    for sub in folders:
        for path in sub.iterdir():
            name = stem(path)
            if (path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES
                    and not path.name.startswith(".")  # hidden, e.g. macOS "._x.tif"
                    and name.endswith(img_filter) and not name.endswith(OUTPUT_ENDINGS)):
                found.append(path)
    if not found:
        raise InvalidInputError(
            f"no TIFF images in {folder}" + (f" ending in {img_filter!r}" if img_filter else "")
            + (" or its sub-folders" if look_one_level_down else ""))
    return sorted(found, key=_natural_key)


def plan_jobs(paths: Iterable[str | os.PathLike], *, out_dir: str | os.PathLike | None = None,
              save_flows: bool = False, output_format: str = "tif") -> list[Job]:
    """One :class:`Job` per distinct input; refuses plans that would overwrite data.

    ``output_format`` "tif" writes ``<stem>_masks.tif``, "zarr" ``<stem>_masks.ome.zarr``.

    Raises
    ------
    InvalidInputError
        An output path equals an input path, or two inputs would write the same output.
    """
    if output_format not in ("tif", "zarr"):
        raise InvalidInputError(f"`output_format` must be 'tif' or 'zarr', got {output_format!r}")
    suffix = "_masks.tif" if output_format == "tif" else "_masks.ome.zarr"
    jobs, seen = [], set()
    for path in map(Path, paths):
        key = os.path.abspath(path)
        if key in seen:
            continue
        seen.add(key)
        folder = Path(out_dir) if out_dir is not None else path.parent
        name = stem(path)
        flows = folder / f"{name}_flows.npz" if save_flows else None
        jobs.append(Job(path, folder / f"{name}{suffix}", flows))
    producers: dict[str, Path] = {}
    for job in jobs:
        for out in job.outputs:
            key = os.path.abspath(out)
            if key in seen:
                raise InvalidInputError(f"output {out} of {job.source} is also an input; "
                                        f"refusing to overwrite it (choose another `out_dir`)")
            if key in producers:
                raise InvalidInputError(f"{producers[key]} and {job.source} would both write "
                                        f"{out}; rename one or use separate `out_dir` runs")
            producers[key] = job.source
    return jobs


def pending_outputs(job: Job, *, overwrite: bool = False) -> list[Path]:
    """The outputs of ``job`` still to write (all of them with ``overwrite``)."""
    return list(job.outputs) if overwrite else [p for p in job.outputs if not p.exists()]


def check_writable(folder: str | os.PathLike, *, create: bool = False) -> Path:
    """Prove that files can be written in ``folder``; create it only if ``create``.

    A folder that does not exist yet must be creatable: its nearest existing parent must be a
    writable folder (it is created when the first output is written).

    Raises
    ------
    InvalidInputError
        ``folder`` (or a parent) is a file, or nothing can be written there.
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise InvalidInputError(f"`out_dir` {folder} is a file, not a folder")
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise InvalidInputError(f"`out_dir` {folder} cannot be created: {existing} is a file, "
                                f"not a folder")
    try:
        if create:
            folder.mkdir(parents=True, exist_ok=True)
            existing = folder
        probe = existing / f".nucseg-rt-write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        where = "" if existing == folder else f" (cannot write in {existing})"
        raise InvalidInputError(f"output folder {folder} is not writable{where} "
                                f"({exc.strerror or exc})") from exc
    return folder


def check_output_folders(jobs: list[Job], out_dir: str | os.PathLike | None = None) -> None:
    """:func:`check_writable` on ``out_dir``, or on the folders of the inputs (when outputs go
    next to them); nothing is created."""
    folders = {Path(out_dir)} if out_dir is not None else {
        j.masks.parent for j in jobs if j.source.exists()}
    for folder in sorted(folders):
        try:
            check_writable(folder)
        except InvalidInputError as exc:
            hint = "" if out_dir is not None else "; write elsewhere with `out_dir`"
            raise InvalidInputError(f"{exc}{hint}") from exc
