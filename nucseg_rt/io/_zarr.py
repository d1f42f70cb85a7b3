"""zarr and OME-Zarr: open an input array with its calibration, write OME-Zarr labels.

:func:`create_labels_zarr` makes an OME-Zarr (NGFF 0.4, zarr format 2) labels group
``<path>/labels/masks/0`` that blocks are painted into; :func:`write_labels_zarr` writes an
in-memory label image into one, under a temporary name renamed on success.

Needs ``zarr`` (``pip install 'nucseg-rt[large]'``), imported inside the functions.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from nucseg_rt.errors import InvalidInputError, MissingDependencyError
from nucseg_rt.io._fs import atomic_dir
from nucseg_rt.io._meta import VolumeInfo, ngff_axes, ngff_unit, validate_voxel_size

__all__ = ["import_zarr", "is_zarr_path", "is_zarr_store", "open_zarr", "create_labels_zarr",
           "write_labels_zarr", "open_labels_zarr"]

ZARR_SUFFIXES = (".ome.zarr", ".zarr")
LABELS_PATH = "labels/masks"
_HINT = "pip install 'nucseg-rt[large]'"
ZARR_MAJOR = 3


def import_zarr():
    """The ``zarr`` module, or :class:`MissingDependencyError` with the install hint."""
    try:
        import zarr
    except ImportError as exc:
        raise MissingDependencyError(
            f"reading and writing volumes blockwise needs zarr: {_HINT}") from exc
    major = str(getattr(zarr, "__version__", "0")).split(".")[0]
    if not major.isdigit() or int(major) < ZARR_MAJOR:
        # tifffile reads TIFFs lazily only through zarr 3 stores
        raise MissingDependencyError(
            f"reading and writing volumes blockwise needs zarr >= {ZARR_MAJOR} (Python >= 3.11), "
            f"found zarr {zarr.__version__}: {_HINT}")
    return zarr


def is_zarr_path(path: str | os.PathLike) -> bool:
    """True for a ``.zarr`` / ``.ome.zarr`` name (file or folder): how outputs are told apart."""
    return str(path).rstrip("/\\").lower().endswith(ZARR_SUFFIXES)


def is_zarr_store(path: str | os.PathLike) -> bool:
    """True for a zarr input: a ``.zarr`` name, or a folder holding zarr metadata."""
    path = Path(path)
    return is_zarr_path(path) or (path.is_dir() and any(
        (path / name).exists() for name in (".zarray", ".zgroup", "zarr.json")))


def open_zarr(path: Path):
    """The full-resolution array of a zarr array / group / OME-Zarr image, and its info."""
    zarr = import_zarr()
    try:
        node = zarr.open(str(path), mode="r")
    except Exception as exc:
        raise InvalidInputError(f"{path}: cannot open as zarr ({type(exc).__name__}: {exc})") from exc
    axes, voxel, unit, z_known = None, None, None, False
    if not hasattr(node, "shape"):  # a group: OME-Zarr multiscales, else its only array
        attrs = dict(node.attrs)
        multiscales = attrs.get("multiscales") or attrs.get("ome", {}).get("multiscales")
        if multiscales:
            ms = multiscales[0]
            level = ms["datasets"][0]
            node_path = level["path"]
            axes, voxel, unit, z_known = ngff_axes(ms, level)
        else:
            names = sorted(name for name, _ in node.arrays())
            if len(names) != 1:
                raise InvalidInputError(f"{path}: a zarr group without OME-Zarr `multiscales` "
                                        f"must hold exactly one array, found {names}")
            node_path = names[0]
        node = node[node_path]
    if 0 in node.shape:
        raise InvalidInputError(f"{path}: image has a zero-size axis, shape {node.shape}")
    return node, VolumeInfo(voxel, axes, np.dtype(node.dtype), unit, z_known,
                            "OME-Zarr" if voxel is not None else None)


# --- writing ------------------------------------------------------------------------------------


def create_labels_zarr(path: str | os.PathLike, shape_zyx, *, chunks, dtype=np.uint32,
                       voxel_size=None, unit: str | None = None):
    """Create an OME-Zarr labels group (NGFF 0.4, zarr format 2) and return its level-0 array.

    Layout: ``path/.zattrs`` lists ``labels: ["masks"]`` under ``path/labels``;
    ``path/labels/masks`` carries ``multiscales`` (axes z, y, x; one level ``0`` with the voxel
    size as its scale) and ``image-label``; ``path/labels/masks/0`` is the ``(Z, Y, X)`` array,
    filled with 0.

    Parameters
    ----------
    path : path-like
        A new folder (e.g. ``stem_masks.ome.zarr``).
    shape_zyx, chunks : 3 ints
    voxel_size : 3 floats, optional
        Physical (Z, Y, X) voxel size, in ``unit``.
    """
    zarr = import_zarr()
    voxel_size = validate_voxel_size(voxel_size) or (1.0, 1.0, 1.0)
    root = zarr.open_group(str(path), mode="w", zarr_format=2)
    labels = root.require_group("labels")
    labels.attrs.update({"labels": ["masks"]})
    group = labels.require_group("masks")
    unit_name = ngff_unit(unit)
    axes = [dict(name=a, type="space", **({"unit": unit_name} if unit_name else {}))
            for a in "zyx"]
    group.attrs.update({
        "multiscales": [{"version": "0.4", "name": "masks", "axes": axes,
                         "datasets": [{"path": "0", "coordinateTransformations": [
                             {"type": "scale", "scale": list(voxel_size)}]}]}],
        "image-label": {"version": "0.4", "source": {"image": "../../"}},
    })
    shape = tuple(int(s) for s in shape_zyx)
    chunks = tuple(int(min(c, s)) for c, s in zip(chunks, shape))
    return group.create_array("0", shape=shape, chunks=chunks, dtype=np.dtype(dtype), fill_value=0,
                              chunk_key_encoding={"name": "v2", "separator": "/"})


def write_labels_zarr(path: str | os.PathLike, labels: np.ndarray, voxel_size=None, *,
                      unit: str | None = None, overwrite: bool = False,
                      chunks=(64, 256, 256)) -> Path:
    """Write an in-memory ``(Z, Y, X)`` label image as an OME-Zarr labels group, atomically.

    Layout as :func:`create_labels_zarr`; the array keeps ``labels``' dtype.
    """
    path = Path(path)
    labels = np.asarray(labels)
    if labels.ndim != 3 or not np.issubdtype(labels.dtype, np.unsignedinteger):
        raise InvalidInputError(f"`labels` must be a (Z, Y, X) unsigned integer array, got "
                                f"{labels.dtype} {labels.shape}")
    if not path.parent.is_dir():
        raise InvalidInputError(f"output folder {path.parent} does not exist")
    if path.exists() and not overwrite:
        raise InvalidInputError(f"{path} already exists (pass overwrite=True to replace it)")
    with atomic_dir(path) as tmp:
        out = create_labels_zarr(tmp, labels.shape, chunks=chunks, dtype=labels.dtype,
                                 voxel_size=voxel_size, unit=unit)
        out[...] = labels
    return path


def open_labels_zarr(path: str | os.PathLike, mode: str = "r"):
    """The ``(Z, Y, X)`` label array of an OME-Zarr written by :func:`create_labels_zarr`."""
    zarr = import_zarr()
    return zarr.open_group(str(path), mode=mode)[f"{LABELS_PATH}/0"]
