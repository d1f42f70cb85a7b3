"""Reading volumes and writing results: TIFF, zarr and OME-Zarr in; label TIFF, OME-Zarr labels
and flow ``.npz`` out.

- :func:`read_header`: any input's shape and :class:`VolumeInfo` (axis letters, voxel size),
  without its pixels (:func:`read_first_plane`: one stored plane, to look at the values);
  :func:`read_volume` reads a whole TIFF, :func:`open_volume` reads blocks of a TIFF / zarr /
  OME-Zarr volume larger than memory (a :class:`LazyVolume`).
- One writer per format: :func:`write_labels_tif` (an in-memory array, or a zarr array copied
  plane by plane), :func:`write_labels_zarr` / :func:`create_labels_zarr` (OME-Zarr labels, NGFF
  0.4) and :func:`write_flows_npz`. Every output is written under a temporary name in its folder
  and renamed into place on success (:func:`atomic_write`, :func:`atomic_dir`), so an interrupted
  run never leaves a half-written result; existing files are replaced only with ``overwrite``.
  :func:`existing_file` is the check before a file is read.
- :func:`tiff_problem`: why a TIFF is not whole (a file still being copied).
- :func:`parse_memory` / :func:`physical_memory`: memory budgets for blockwise runs.

zarr is needed for zarr inputs and OME-Zarr outputs only (``pip install 'nucseg-rt[large]'``;
without it a TIFF is read lazily page by page); it is imported inside the functions that need it.

>>> from nucseg_rt.io import read_volume, write_labels_tif                     # doctest: +SKIP
>>> vol, info = read_volume("embryo.tif")                                  # doctest: +SKIP
>>> write_labels_tif("embryo_masks.tif", masks, info.voxel_size_zyx)  # doctest: +SKIP
"""

from nucseg_rt.io._fs import atomic_dir, atomic_write, existing_file
from nucseg_rt.io._lazy import LazyVolume, open_volume, read_first_plane, read_header
from nucseg_rt.io._memory import parse_memory, physical_memory
from nucseg_rt.io._meta import VolumeInfo
from nucseg_rt.io._npz import write_flows_npz
from nucseg_rt.io._tiff import read_volume, tiff_problem, write_labels_tif
from nucseg_rt.io._zarr import (create_labels_zarr, import_zarr, is_zarr_path, is_zarr_store,
                                open_labels_zarr, write_labels_zarr)

__all__ = ["VolumeInfo", "read_header", "read_first_plane", "read_volume", "LazyVolume",
           "open_volume",
           "write_labels_tif", "write_labels_zarr", "create_labels_zarr", "open_labels_zarr",
           "write_flows_npz", "atomic_write", "atomic_dir", "existing_file", "is_zarr_path",
           "is_zarr_store", "import_zarr", "tiff_problem", "parse_memory", "physical_memory"]
