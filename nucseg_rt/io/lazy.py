"""Volumes larger than memory: read blocks of TIFF / OME-TIFF / zarr / OME-Zarr lazily, write labels
to OME-Zarr or TIFF without holding them whole.

- :func:`open_volume` opens a TIFF (through tifffile's zarr store: one page or tile is decoded at
  a time, with ordinary file reads, so nothing is memory-mapped and resident memory stays
  bounded), a zarr array, or an OME-Zarr image (its full-resolution level ``0``). The result,
  a :class:`LazyVolume`, knows which axes are Z, Y, X (and channels) and returns blocks as
  ``(Z, Y, X)`` or ``(Z, C, Y, X)`` numpy arrays.
- :func:`create_labels_zarr` makes an OME-Zarr (NGFF 0.4, zarr format 2) labels group
  ``<path>/labels/masks/0`` that blocks are painted into; :func:`write_labels_tif_streamed`
  copies such an array into a TIFF plane by plane. Both write under a temporary name and rename
  on success, like :mod:`nucseg_rt.io.tiff`.

Needs ``zarr`` (``pip install 'nucseg-rt[large]'``), imported inside the functions.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from nucseg_rt.errors import InvalidInputError, MissingDependencyError
from nucseg_rt.io.tiff import VolumeInfo, _tifffile_damage_reports, _validate_voxel_size, _volume_info
from nucseg_rt.prep.axes import resolve_axes

__all__ = ["LazyVolume", "open_volume", "read_header", "is_zarr_path", "create_labels_zarr", "write_labels_zarr", "open_labels_zarr",
           "write_labels_tif_streamed", "atomic_dir", "parse_memory", "physical_memory"]

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
    """True for a ``.zarr`` / ``.ome.zarr`` name (file or folder)."""
    return str(path).rstrip("/\\").lower().endswith(ZARR_SUFFIXES)


class LazyVolume:
    """A volume read block by block; axes resolved once.

    Attributes
    ----------
    shape_zyx : (int, int, int)
        Size of the Z, Y and X axes.
    nchan : int or None
        Number of channels, None for a single-channel (Z, Y, X) volume.
    dtype : numpy.dtype
        Pixel type.
    info : VolumeInfo
        Voxel size, axis letters and dtype (as :func:`nucseg_rt.io.tiff.read_volume` gives them).
    axes : nucseg_rt.prep.axes.AxisPlan
        The stored array's Z, Y, X (and channel) axes, decided by
        :func:`nucseg_rt.prep.axes.resolve_axes` (the rule every input follows).
    """

    def __init__(self, array, info: VolumeInfo, *, channel_axis: int | None = None,
                 z_axis: int | None = None, closer=None, what: str = "the volume"):
        self._array, self.info, self._closer = array, info, closer
        self.dtype = np.dtype(array.dtype)
        self.axes = resolve_axes(tuple(array.shape), letters=info.axes, channel_axis=channel_axis,
                                 z_axis=z_axis, what=what)
        self._index, self._order = self.axes.index(), self.axes.order
        self.shape_zyx = self.axes.shape_zyx
        self.nchan = self.axes.nchan

    @property
    def channel_axis(self) -> int | None:
        """Channel axis of the arrays :meth:`read` returns (1 or None)."""
        return None if self.nchan is None else 1

    def read(self, zyx_slices: tuple[slice, slice, slice]) -> np.ndarray:
        """The block ``zyx_slices`` as a new ``(Z, Y, X)`` or ``(Z, C, Y, X)`` array."""
        index = list(self._index)
        for k, sl in enumerate(zyx_slices):
            index[self._order[k]] = sl
        block = np.asarray(self._array[tuple(index)])
        kept = [i for i, ix in enumerate(index) if isinstance(ix, slice)]  # axes left in block
        pos = {ax: kept.index(ax) for ax in self._order}
        perm = [pos[self._order[0]]] + ([pos[self._order[3]]] if self.nchan else []) \
            + [pos[self._order[1]], pos[self._order[2]]]
        return np.ascontiguousarray(np.transpose(block, perm))

    def read_all(self) -> np.ndarray:
        return self.read((slice(None),) * 3)

    def close(self) -> None:
        if self._closer is not None:
            self._closer()
            self._closer = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def open_volume(source, *, channel_axis: int | None = None,
                z_axis: int | None = None) -> LazyVolume:
    """Open a volume for block reads without loading it.

    Parameters
    ----------
    source : path-like or array
        A TIFF / OME-TIFF file, a ``.zarr`` array or group, an ``.ome.zarr`` image, or an
        in-memory array (used as is).
    channel_axis, z_axis : int, optional
        Axes of the stored array; default from its metadata (ImageJ/OME/NGFF axes), else Z is
        the first axis and a 4th axis of size <= 4 holds channels.

    Returns
    -------
    LazyVolume
        Close it (or use ``with``) to release the file.
    """
    if not isinstance(source, (str, os.PathLike)):
        arr = np.asarray(source)
        if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
            raise InvalidInputError(f"`vol` must be real numeric, got dtype {arr.dtype}")
        return LazyVolume(arr, VolumeInfo(None, None, arr.dtype), channel_axis=channel_axis,
                          z_axis=z_axis, what="`vol`")
    path = Path(source)
    if not path.exists():
        raise InvalidInputError(f"{path}: file does not exist")
    if _is_zarr_store(path):
        array, info = _open_zarr(path)
        return LazyVolume(array, info, channel_axis=channel_axis, z_axis=z_axis, what=str(path))
    if not path.is_file():
        raise InvalidInputError(f"{path}: not a file")
    return _open_tiff(path, channel_axis, z_axis)


def _is_zarr_store(path: Path) -> bool:
    return is_zarr_path(path) or (path.is_dir() and any(
        (path / name).exists() for name in (".zarray", ".zgroup", "zarr.json")))


def read_header(source: str | os.PathLike) -> tuple[tuple[int, ...], VolumeInfo]:
    """Shape and :class:`VolumeInfo` of a TIFF or zarr / OME-Zarr volume; no pixels are read
    (zarr is needed for zarr inputs only)."""
    from nucseg_rt.io import tiff

    path = Path(source)
    if not path.exists():
        raise InvalidInputError(f"{path}: file does not exist")
    if _is_zarr_store(path):
        array, info = _open_zarr(path)
        return tuple(int(s) for s in array.shape), info
    return tiff.read_header(path)


def _open_tiff(path: Path, channel_axis, z_axis) -> LazyVolume:
    zarr = import_zarr()
    import tifffile

    try:
        with _tifffile_damage_reports() as damage:
            tif = tifffile.TiffFile(path)
            series = tif.series[0]
            info = _volume_info(tif, series, series.dtype)
            store = series.aszarr()
            array = zarr.open(store, mode="r")
    except Exception as exc:  # tifffile raises many types on bad files
        raise InvalidInputError(f"{path}: cannot read as TIFF ({type(exc).__name__}: {exc})") from exc
    if damage:
        tif.close()
        raise InvalidInputError(f"{path}: TIFF file is truncated or damaged ({damage[0]})")
    if 0 in array.shape:
        tif.close()
        raise InvalidInputError(f"{path}: image has a zero-size axis, shape {array.shape}")

    def closer():
        store.close()
        tif.close()

    try:
        return LazyVolume(array, info, channel_axis=channel_axis, z_axis=z_axis, closer=closer,
                          what=str(path))
    except BaseException:
        closer()
        raise


def _open_zarr(path: Path):
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
            axes, voxel, unit, z_known = _ngff_axes(ms, level)
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


def _ngff_axes(ms: dict, level: dict):
    """Axis letters, (Z, Y, X) voxel size, unit (of X) and whether the Z step is known (in the
    unit of X) from NGFF multiscales metadata."""
    from nucseg_rt.io.tiff import _in_unit

    names = [a["name"] if isinstance(a, dict) else a for a in ms.get("axes", [])]
    letters = "".join(n.upper()[:1] for n in names) or None
    scale = next((t["scale"] for t in level.get("coordinateTransformations", [])
                  if t.get("type") == "scale"), None)
    voxel, unit, z_known = None, None, False
    if letters and scale and all(a in letters for a in "ZYX"):
        units = {a.get("name", "").upper()[:1]: _short_unit(a.get("unit"))
                 for a in ms["axes"] if isinstance(a, dict)}
        unit = units.get("X")
        z = _in_unit(scale[letters.index("Z")], units.get("Z"), unit)
        z_known = z is not None
        voxel = (z if z_known else float(scale[letters.index("Z")]),
                 *(float(scale[letters.index(a)]) for a in "YX"))
    return letters, voxel, unit, z_known


def _short_unit(unit: str | None) -> str | None:
    return {"micrometer": "um", "nanometer": "nm", "millimeter": "mm"}.get(unit or "", unit)


# --- writing ----------------------------------------------------------------------------------


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a hidden temporary folder next to ``path``, renamed to ``path`` on success only."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.part")
    try:
        yield tmp
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _ngff_unit(unit: str | None) -> str | None:
    return {"um": "micrometer", "µm": "micrometer", "nm": "nanometer",
            "mm": "millimeter"}.get(unit or "", None)


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
    voxel_size = _validate_voxel_size(voxel_size) or (1.0, 1.0, 1.0)
    root = _open_group(zarr, path)
    labels = root.require_group("labels")
    labels.attrs.update({"labels": ["masks"]})
    group = labels.require_group("masks")
    ngff_unit = _ngff_unit(unit)
    axes = [dict(name=a, type="space", **({"unit": ngff_unit} if ngff_unit else {}))
            for a in "zyx"]
    group.attrs.update({
        "multiscales": [{"version": "0.4", "name": "masks", "axes": axes,
                         "datasets": [{"path": "0", "coordinateTransformations": [
                             {"type": "scale", "scale": list(voxel_size)}]}]}],
        "image-label": {"version": "0.4", "source": {"image": "../../"}},
    })
    shape = tuple(int(s) for s in shape_zyx)
    chunks = tuple(int(min(c, s)) for c, s in zip(chunks, shape))
    return _create_array(group, "0", shape, chunks, np.dtype(dtype))


def _open_group(zarr, path):
    return zarr.open_group(str(path), mode="w", zarr_format=2)


def _create_array(group, name, shape, chunks, dtype):
    return group.create_array(name, shape=shape, chunks=chunks, dtype=dtype, fill_value=0,
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


def write_labels_tif_streamed(path: str | os.PathLike, labels, *, voxel_size=None,
                              unit: str | None = None, dtype=None) -> Path:
    """Write a ``(Z, Y, X)`` label array (zarr or numpy) to a TIFF one plane at a time, atomically.

    ImageJ hyperstack for uint8/uint16 ``dtype``, tifffile TIFF for uint32, with the calibration
    :func:`nucseg_rt.io.tiff.write_labels_tif` writes. ``dtype`` defaults to the array's.
    """
    import tifffile

    from nucseg_rt.io.tiff import _tiff_calibration, atomic_write

    path = Path(path)
    dtype = np.dtype(dtype or labels.dtype)
    voxel_size = _validate_voxel_size(voxel_size)
    kwargs = _tiff_calibration(np.empty((1, 1, 1), dtype), voxel_size, unit)

    def planes():
        for z in range(labels.shape[0]):
            yield np.asarray(labels[z]).astype(dtype, copy=False)

    with atomic_write(path) as fh:
        tifffile.imwrite(fh, data=planes(), shape=tuple(labels.shape), dtype=dtype,
                         compression="zlib", **kwargs)
    return path


# --- memory ------------------------------------------------------------------------------------

_UNITS = {"": 1, "B": 1, "K": 1e3, "KB": 1e3, "M": 1e6, "MB": 1e6, "G": 1e9, "GB": 1e9,
          "T": 1e12, "TB": 1e12, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}


def parse_memory(text: str | int | float, name: str = "max_memory") -> int:
    """Bytes in ``"4GB"``, ``"512 MiB"``, ``"2e9"`` or a number."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        value, unit = float(text), ""
    else:
        match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([A-Za-z]*)\s*", str(text))
        if not match or match.group(2).upper() not in _UNITS:
            raise InvalidInputError(f"`{name}` must be a size such as '4GB' or '512MiB', got {text!r}")
        value, unit = float(match.group(1)), match.group(2).upper()
    nbytes = int(value * _UNITS[unit])
    if nbytes <= 0:
        raise InvalidInputError(f"`{name}` must be > 0, got {text!r}")
    return nbytes


def physical_memory() -> int:
    """Total physical memory in bytes (``/proc/meminfo`` or ``os.sysconf``; 8 GB if unknown)."""
    with contextlib.suppress(OSError, ValueError):
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    with contextlib.suppress(ValueError, OSError, AttributeError):
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    return 8 * 10**9
