"""Blockwise segmentation of volumes larger than memory, with seamless labels.

The volume is cut into core blocks that tile it; each block is read with a halo of about one
nucleus diameter (network context, and room for flows to converge) and segmented on its own by
:meth:`nucseg_rt.Segmenter.segment`, every block normalised with the same global bounds
(:func:`global_bounds`). A block keeps the masks whose centre of mass lies in its core
("owned") and, as a safety net, complete masks whose centre lies just outside it
("candidates"), and writes them to its own file in a work folder (:func:`compute_block`). That
file is the unit of work for dask and the resume mechanism: a block whose file exists is done.

A sequential merge (:mod:`nucseg_rt.blockwise.merge`) then paints the owned masks in block order,
then the candidates, into a chunked zarr array, reconciling each mask with the labels already
painted under it by overlap: a mask whose voxels are mostly taken (IoU >= ``iou_threshold``
with a painted mask, or less than half of it free) is the same nucleus seen from a neighbour
and is not painted again. Label ids are handed out in that order, so they are consecutive and
the result depends only on the input and the block plan. Memory is bounded by the block size.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nucseg_rt.errors import InvalidInputError
from nucseg_rt.params import InputSpec, MaskParams
from nucseg_rt.prep import axes

__all__ = ["BlockPlan", "SegmenterSpec", "BlockContext", "plan_blocks", "global_bounds",
           "compute_block", "block_file", "estimate_bytes", "choose_block_size",
           "parse_block_size"]

logger = logging.getLogger("nucseg_rt")

#: Rough peak bytes per voxel on the network grid of a whole-volume run (input, resampled
#: input, 4 output channels, resized flows, dynamics): 407 MB measured for 64x256x256 minus
#: ~150 MB of libraries and model is ~61 B/voxel (docs/benchmarks.md).
BYTES_PER_VOXEL = 64
#: Memory taken by the libraries and the loaded model, whatever the volume.
BASE_BYTES = 300 * 10**6
#: Smallest core block side accepted (input voxels).
MIN_BLOCK = 8
BLOCK_FILE_VERSION = 1


# --- the plan ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class BlockPlan:
    """Core blocks tiling a volume and the halo read around each.

    Attributes
    ----------
    shape : (Z, Y, X)
        Volume size in input voxels.
    core : (Z, Y, X)
        Core block size (the last block along an axis may be smaller).
    halo : (Z, Y, X)
        Voxels read beyond the core on each side (clipped at the volume's faces).
    """

    shape: tuple[int, int, int]
    core: tuple[int, int, int]
    halo: tuple[int, int, int]

    @property
    def grid(self) -> tuple[int, int, int]:
        return tuple(math.ceil(s / c) for s, c in zip(self.shape, self.core))

    def __len__(self) -> int:
        return int(np.prod(self.grid))

    def core_box(self, index: int) -> tuple[tuple[int, int], ...]:
        """``((z0, z1), (y0, y1), (x0, x1))`` of block ``index`` (C order over the grid)."""
        ijk = np.unravel_index(index, self.grid)
        return tuple((int(i * c), int(min((i + 1) * c, s)))
                     for i, c, s in zip(ijk, self.core, self.shape))

    def read_box(self, index: int) -> tuple[tuple[int, int], ...]:
        """The core box grown by the halo, clipped to the volume."""
        return tuple((max(0, a - h), min(s, b + h))
                     for (a, b), h, s in zip(self.core_box(index), self.halo, self.shape))


def parse_block_size(value) -> tuple[int, int, int] | None:
    """``"N"``, ``"Z,Y,X"``, an int or 3 ints -> ``(Z, Y, X)``; None stays None."""
    if value is None:
        return None
    parts = str(value).replace("x", ",").split(",") if isinstance(value, str) else (
        [value] if np.isscalar(value) else list(value))
    try:
        sizes = [int(str(p).strip()) for p in parts]
        if any(float(str(p).strip()) != s for p, s in zip(parts, sizes)):
            raise ValueError
    except (TypeError, ValueError):
        raise InvalidInputError(f"`block_size` must be a positive whole number N or Z,Y,X, "
                                f"got {value!r}") from None
    if len(sizes) == 1:
        sizes *= 3
    if len(sizes) != 3 or min(sizes) < MIN_BLOCK:
        raise InvalidInputError(f"`block_size` must be N or Z,Y,X with every size >= {MIN_BLOCK}, "
                                f"got {value!r}")
    return tuple(sizes)


def default_halo(diameter: float, anisotropy: float) -> tuple[int, int, int]:
    """One diameter plus 8 voxels in Y and X; the same physical distance in Z."""
    hxy = int(math.ceil(diameter)) + 8
    return int(math.ceil(hxy / anisotropy)), hxy, hxy


def plan_blocks(shape_zyx, block_size, *, diameter: float, anisotropy: float,
                halo=None) -> BlockPlan:
    """The :class:`BlockPlan` for a volume; ``block_size`` from :func:`parse_block_size`."""
    shape = tuple(int(s) for s in shape_zyx)
    core = tuple(min(int(b), s) for b, s in zip(parse_block_size(block_size), shape))
    halo = default_halo(diameter, anisotropy) if halo is None else tuple(int(h) for h in halo)
    if len(halo) != 3 or min(halo) < 0:
        raise InvalidInputError(f"`halo` must be 3 whole numbers >= 0, got {halo!r}")
    return BlockPlan(shape, core, halo)


def estimate_bytes(shape_zyx, *, anisotropy: float, rescale: float, nchan: int = 1) -> int:
    """Rough peak memory of segmenting a ``shape_zyx`` volume whole (see ``BYTES_PER_VOXEL``)."""
    z, y, x = shape_zyx
    net = max(z * anisotropy, 1) * rescale * y * rescale * x * rescale
    return int(BYTES_PER_VOXEL * max(net, z * y * x) + 4 * nchan * z * y * x)


def choose_block_size(shape_zyx, budget: int, *, anisotropy: float, rescale: float,
                      halo, nchan: int = 1) -> tuple[int, int, int] | None:
    """Largest core block (sides multiples of 16 in XY) whose halo'd block fits ``budget`` bytes.

    Returns None when the whole volume fits (no blocks needed).
    """
    avail = budget - BASE_BYTES
    if estimate_bytes(shape_zyx, anisotropy=anisotropy, rescale=rescale, nchan=nchan) <= avail:
        return None
    z, y, x = shape_zyx
    side = 16 * (max(y, x) // 16 + 1)
    while side > 32:
        side -= 16
        bz = min(z, max(MIN_BLOCK, int(round(side / anisotropy))))
        read = (min(z, bz + 2 * halo[0]), min(y, side + 2 * halo[1]), min(x, side + 2 * halo[2]))
        if estimate_bytes(read, anisotropy=anisotropy, rescale=rescale, nchan=nchan) <= avail:
            return bz, min(y, side), min(x, side)
    bz = min(z, max(MIN_BLOCK, int(round(32 / anisotropy))))
    return bz, min(y, 32), min(x, 32)


# --- global normalisation --------------------------------------------------------------------


def global_bounds(volume, *, percentile=(1.0, 99.0), chan: int = 0, chan2: int = 0,
                  nchan: int = 2, slab_bytes: int = 16 * 2**20) -> np.ndarray:
    """Per network channel ``(C, 2)`` normalisation bounds, equal to a whole-volume run's.

    ``nucseg_rt.prep.normalize.normalize`` takes the 1st/99th percentile (``np.percentile``,
    linear interpolation, in float32) of each channel over the whole volume, or over a strided
    subsample (every ``Z//50``-th plane, ``Y//224``-th row, ``X//224``-th column) when the
    volume has more than 224**3 voxels. The same voxels are visited here slab by slab through
    the same channel conversion (:func:`nucseg_rt.prep.axes.to_zyxc`), so the bounds are identical:

    - 8/16-bit integer input whose channels are selected, not averaged: a streamed histogram
      per channel, and the percentile computed from it exactly as ``np.percentile`` does
      (memory: the histogram);
    - otherwise (float input, gray mean of channels): the visited values are gathered (at most
      about 224**3 per channel) and passed to the same function whole-volume runs use.

    A channel whose values are all equal gets ``(v, v + 1)``, so it normalises to 0 as a
    whole-volume run makes it. ``volume`` is a :class:`nucseg_rt.io.LazyVolume`.
    """
    from nucseg_rt.prep.normalize import _DOWNSAMPLE_SIZE

    zn, yn, xn = volume.shape_zyx
    steps = (1, 1, 1)
    if zn * yn * xn > _DOWNSAMPLE_SIZE:
        steps = (max(1, zn // 50), max(1, yn // 224), max(1, xn // 224))
    planes = list(range(0, zn, steps[0]))
    dt = np.dtype(volume.dtype)
    integral = dt.kind in "ui" and dt.itemsize <= 2 and (volume.nchan in (None, 1) or chan != 0)
    stats = _HistogramStats(nchan, dt) if integral else _ValueStats(nchan)
    per_plane = max(1, yn * xn * max(volume.nchan or 1, nchan) * 4)
    chunk = max(1, slab_bytes // per_plane)
    for start in range(0, len(planes), chunk):
        zs = planes[start:start + chunk]
        slab = np.concatenate([volume.read((slice(z, z + 1), slice(None), slice(None)))
                               for z in zs])
        x, _ = axes.to_zyxc(slab, channel_axis=volume.channel_axis, z_axis=0, chan=chan,
                            chan2=chan2, nchan=nchan)
        del slab
        stats.add(x[:, ::steps[1], ::steps[2]])
    return stats.bounds(*percentile)


def _finish_bounds(vmin, vmax, lo, hi) -> tuple[float, float]:
    if not (np.isfinite(vmin) and np.isfinite(vmax)):
        raise InvalidInputError("the volume contains NaN or Inf values")
    if vmin == vmax:
        return float(vmin), float(vmin) + 1.0
    return float(lo), float(hi) if hi - lo > 1e-3 else float(lo) + 1e30  # flat: ~0, as whole runs


class _ValueStats:
    """Gathers the visited values of each channel (float input)."""

    def __init__(self, nchan: int):
        self.parts: list[list[np.ndarray]] = [[] for _ in range(nchan)]

    def add(self, x: np.ndarray) -> None:
        for c, part in enumerate(self.parts):
            part.append(np.ascontiguousarray(x[..., c]).ravel())

    def bounds(self, low: float, high: float) -> np.ndarray:
        from nucseg_rt.prep.normalize import _percentile_bounds

        out = np.zeros((len(self.parts), 2))
        for c in range(len(self.parts)):
            values = np.concatenate(self.parts[c])
            self.parts[c] = []
            vmin, vmax = values.min(), values.max()
            lo, hi = (vmin, vmax) if vmin == vmax or not np.isfinite(vmin + vmax) \
                else _percentile_bounds(values, low, high)
            out[c] = _finish_bounds(vmin, vmax, lo, hi)
        return out


class _HistogramStats:
    """A histogram per channel of integer-valued float32 input (8/16-bit sources)."""

    def __init__(self, nchan: int, dtype: np.dtype):
        self.offset = -int(np.iinfo(dtype).min)
        self.hist = np.zeros((nchan, int(np.iinfo(dtype).max) + self.offset + 1), np.int64)

    def add(self, x: np.ndarray) -> None:
        for c in range(self.hist.shape[0]):
            idx = x[..., c].astype(np.int64).ravel() + self.offset
            self.hist[c] += np.bincount(idx, minlength=self.hist.shape[1])

    def bounds(self, low: float, high: float) -> np.ndarray:
        out = np.zeros((self.hist.shape[0], 2))
        for c, hist in enumerate(self.hist):
            nz = np.flatnonzero(hist)
            vmin, vmax = nz[0] - self.offset, nz[-1] - self.offset
            cum = np.cumsum(hist)
            out[c] = _finish_bounds(vmin, vmax, _hist_percentile(cum, low, self.offset),
                                    _hist_percentile(cum, high, self.offset))
        return out


def _hist_percentile(cum: np.ndarray, q: float, offset: int) -> np.float32:
    """``np.percentile(values_float32, q)`` from the cumulative histogram of the values.

    Same arithmetic as the installed numpy's linear method on float32 data. numpy < 2.1 works
    in float32 (``q / float32(100)``, virtual index ``(n - 1) * q`` in float32); numpy >= 2.1
    keeps a Python-float ``q`` in float64 (virtual index and weight in float64) and passes the
    weight to the lerp as a Python float, so the lerp runs in float32. Both use numpy's two-sided
    lerp.
    """
    n = int(cum[-1])

    def order_stat(k: int) -> np.float32:
        return np.float32(int(np.searchsorted(cum, k, side="right")) - offset)

    if _FLOAT64_Q:
        qq = np.true_divide(float(q), 100)
        vi = np.asarray((n - 1) * qq)
    else:
        qq = np.true_divide(q, np.float32(100))
        vi = np.asarray(np.float32(n - 1) * qq)
    k = int(np.floor(vi))
    # numpy >= 2.1: the weight is a Python float (weak), so the lerp itself runs in float32
    gamma = float(vi - k) if _FLOAT64_Q else np.asarray(vi - k, dtype=vi.dtype)
    a = np.asarray(order_stat(k))
    b = np.asarray(order_stat(min(k + 1, n - 1)))
    diff = np.subtract(b, a)
    res = np.asanyarray(np.add(a, diff * gamma))
    if gamma >= 0.5:
        res = np.asanyarray(np.subtract(b, diff * (1 - gamma)), dtype=res.dtype)
    return np.float32(res[()])


#: numpy >= 2.1 computes percentiles of float32 data with a float64 ``q`` (NEP 50 weak scalars)
_FLOAT64_Q = np.lib.NumpyVersion(np.__version__) >= "2.1.0"


# --- one block -------------------------------------------------------------------------------


@dataclass(frozen=True)
class SegmenterSpec:
    """How to build a :class:`nucseg_rt.Segmenter` in another process (dask workers).

    ``extra`` holds further ``Segmenter`` keywords as ``(name, value)`` pairs (picklable,
    hashable); they are part of a run's fingerprint, ``threads`` and ``batch_size`` are not
    (they do not change the labels).
    """

    model: str
    ortho: str | None = None
    device: str = "auto"
    precision: str = "fp32"
    threads: int | None = None
    batch_size: int | None = None
    extra: tuple = ()

    #: Segmenter attributes carried over by :meth:`from_segmenter` when present -> keyword
    _EXTRA_ATTRIBUTES = (("avoid", "work_avoidance"), ("bsize", "bsize"),
                         ("tile_overlap", "tile_overlap"))

    @classmethod
    def from_segmenter(cls, seg, threads: int | None = None) -> SegmenterSpec:
        """The spec of a loaded Segmenter: its resolved model file(s), device and settings."""
        ortho = seg.model.ortho_path
        extra = tuple((kw, getattr(seg, attr)) for attr, kw in cls._EXTRA_ATTRIBUTES
                      if hasattr(seg, attr))
        return cls(model=str(seg.model.path), ortho=None if ortho is None else str(ortho),
                   device=seg.device, precision=getattr(seg, "precision", "fp32"),
                   threads=threads, batch_size=seg.batch_size, extra=extra)

    def build(self):
        from nucseg_rt import Segmenter

        return Segmenter(self.model, ortho=self.ortho, device=self.device,
                         precision=self.precision, threads=self.threads,
                         batch_size=self.batch_size, **dict(self.extra))

    def labels_key(self) -> str:
        """What in this spec can change the labels (for the resume fingerprint)."""
        return repr((self.precision, self.extra))


@dataclass(frozen=True)
class BlockContext:
    """Everything a process needs to compute any block of a run (picklable).

    ``source`` is a path (or, in-process only, an array); ``inputs`` the user's axes (of the
    stored array), channels and normalisation, whose ``lowhigh`` is replaced by ``bounds``
    (``(C, 2)``, the global bounds); ``params``, ``anisotropy``, ``diameter`` (resolved: a
    number) and ``resample`` are the settings every block runs with.
    """

    source: object
    inputs: InputSpec
    params: MaskParams
    anisotropy: float
    diameter: float
    resample: bool
    plan: BlockPlan
    bounds: tuple
    workdir: str
    spec: SegmenterSpec | None = None

    def fingerprint(self, model_sha256: str) -> str:
        """Hash of what determines the labels: input, plan, typed settings, bounds, model."""
        src = self.source
        if isinstance(src, (str, os.PathLike)):
            st = Path(src).stat()
            src = [str(Path(src).resolve()), st.st_size, st.st_mtime_ns]
        else:
            src = hashlib.sha256(np.ascontiguousarray(src).tobytes()).hexdigest()
        doc = dict(version=BLOCK_FILE_VERSION, source=src,
                   inputs=repr(dataclasses.asdict(self.inputs)),
                   params=repr(dataclasses.asdict(self.params)),
                   scale=repr((float(self.anisotropy), float(self.diameter), bool(self.resample))),
                   plan=dataclasses.asdict(self.plan), bounds=repr(self.bounds), model=model_sha256,
                   segmenter=None if self.spec is None else self.spec.labels_key())
        return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


def block_file(workdir: str | os.PathLike, index: int) -> Path:
    return Path(workdir) / f"block_{index:06d}.npz"


#: The input volume :func:`compute_block` reads from, kept open in this process between blocks:
#: at most one entry, by (path, channel_axis, z_axis). Opening a TIFF / zarr store parses its
#: metadata, which every block of a run (and every task a dask worker runs) would otherwise
#: repeat. Another volume closes it first; an in-process run closes it at its end
#: (:func:`release_volumes`); a dask worker keeps it until its next run on another file.
_VOLUMES: dict = {}


def _open_cached(ctx: BlockContext):
    """The context's volume, opened once per process (see ``_VOLUMES``)."""
    from nucseg_rt.io import open_volume

    axes = dict(channel_axis=ctx.inputs.channel_axis, z_axis=ctx.inputs.z_axis)
    if not isinstance(ctx.source, (str, os.PathLike)):
        return open_volume(ctx.source, **axes)
    key = (str(ctx.source), axes["channel_axis"], axes["z_axis"])
    if key not in _VOLUMES:
        release_volumes()
        _VOLUMES[key] = open_volume(ctx.source, **axes)
    return _VOLUMES[key]


def release_volumes() -> None:
    """Close the files :func:`compute_block` keeps open in this process."""
    while _VOLUMES:
        _VOLUMES.popitem()[1].close()


def compute_block(ctx: BlockContext, index: int, segmenter) -> Path:
    """Segment block ``index`` and write its owned and candidate masks to its block file.

    The file (written atomically, so its presence means the block is done) holds ``offset``
    (3,) of the crop in volume coordinates, ``labels`` (z, y, x) the crop with local ids 1..k,
    ``owned`` (k,) bool, and ``core`` (3, 2) the block's core box.
    """
    from nucseg_rt.io import atomic_write

    path = block_file(ctx.workdir, index)
    box = ctx.plan.read_box(index)
    vol = _open_cached(ctx)
    block = vol.read(tuple(slice(a, b) for a, b in box))
    norm = dataclasses.replace(ctx.inputs.normalize, lowhigh=np.asarray(ctx.bounds))
    inputs = dataclasses.replace(ctx.inputs, channel_axis=vol.channel_axis, z_axis=0,
                                 normalize=norm)
    res = segmenter.segment(block, anisotropy=ctx.anisotropy, diameter=ctx.diameter,
                            resample=ctx.resample, params=ctx.params, inputs=inputs)
    del block
    offset, labels, owned = select_masks(res.masks, box, ctx.plan.core_box(index),
                                         ctx.plan.shape, ctx.plan.halo)
    with atomic_write(path) as fh:
        np.savez_compressed(fh, offset=offset, labels=labels, owned=owned,
                            core=np.array(ctx.plan.core_box(index)))
    del res, labels
    release_freed_memory()
    return path


def release_freed_memory() -> bool:
    """Return the memory freed by the last block to the operating system (glibc only).

    glibc keeps freed heap memory for reuse, fragmented over the heaps of the threads that
    used it (numpy, numba, onnxruntime, zarr), so the resident memory left after a block
    depended on the blocks before it (251-312 MB between the blocks of one run);
    ``malloc_trim`` hands the free pages back. Returns False where there is no ``malloc_trim``.
    """
    import ctypes

    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (AttributeError, OSError):
        return False
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    trim(0)
    return True


def select_masks(masks: np.ndarray, read_box, core_box, shape, halo):
    """Owned masks (centre of mass in the core) and candidates (centre within half a halo of
    the core, not cut by the block's inner faces), cropped and renumbered 1..k in id order.

    Returns
    -------
    offset : (3,) int64, crop start in volume coordinates
    labels : (z, y, x) uint16/uint32 crop
    owned : (k,) bool
    """
    starts = np.array([a for a, _ in read_box])
    n = int(masks.max()) if masks.size else 0
    if n == 0:
        return starts, np.zeros((0, 0, 0), np.uint16), np.zeros(0, bool)
    flat = masks.ravel()
    counts = np.bincount(flat, minlength=n + 1).astype(np.float64)
    com = np.empty((n + 1, 3))
    lo = np.empty((n + 1, 3), np.int64)
    hi = np.empty((n + 1, 3), np.int64)
    for ax in range(3):
        coord = np.broadcast_to(np.arange(masks.shape[ax]).reshape(
            [-1 if i == ax else 1 for i in range(3)]), masks.shape).ravel()
        with np.errstate(invalid="ignore", divide="ignore"):
            com[:, ax] = np.bincount(flat, weights=coord, minlength=n + 1) / counts + starts[ax]
        lo[:, ax] = _label_extreme(flat, coord, n, np.minimum, masks.shape[ax])
        hi[:, ax] = _label_extreme(flat, coord, n, np.maximum, -1)
    present = counts > 0
    present[0] = False
    core_lo = np.array([a for a, _ in core_box])
    core_hi = np.array([b for _, b in core_box])
    margin = np.array(halo) / 2.0
    cell = np.floor(com)
    owned = present & np.all((cell >= core_lo) & (cell < core_hi), axis=1)
    # a candidate must not touch a face of the read block that is inside the volume
    cut = np.zeros(n + 1, bool)
    for ax in range(3):
        if read_box[ax][0] > 0:
            cut |= lo[:, ax] == 0
        if read_box[ax][1] < shape[ax]:
            cut |= hi[:, ax] == masks.shape[ax] - 1
    near = np.all((com >= core_lo - margin) & (com < core_hi + margin), axis=1)
    candidate = present & ~owned & near & ~cut
    keep = np.flatnonzero(owned | candidate)
    if keep.size == 0:
        return starts, np.zeros((0, 0, 0), np.uint16), np.zeros(0, bool)
    clo, chi = lo[keep].min(axis=0), hi[keep].max(axis=0) + 1
    crop = masks[tuple(slice(a, b) for a, b in zip(clo, chi))]
    dtype = np.uint16 if keep.size < 2**16 else np.uint32
    lut = np.zeros(n + 1, dtype)
    lut[keep] = np.arange(1, keep.size + 1)
    return starts + clo, lut[crop], owned[keep]


def _label_extreme(flat, coord, n, ufunc, fill):
    out = np.full(n + 1, fill, np.int64)
    ufunc.at(out, flat, coord)
    return out
