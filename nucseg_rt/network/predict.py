"""Run the ONNX network over YX, ZY and ZX planes and combine the flows (Cellpose ``run_3D``).

The expensive stage of the pipeline. Input is a normalised ``(Z, Y, X, C)`` float32 volume on
the network grid; output is ``(4, Z, Y, X)`` float32: Z flow, Y flow, X flow, cell probability,
each flow component summed over the two plane orientations that contain it and the cell
probability summed over all three, exactly as Cellpose 3.1 does.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from nucseg_rt.errors import (ClosedError, DeviceUnavailableError, InvalidInputError,
                              ModelFormatError, check_cancel)
from nucseg_rt.network.tiling import TileGrid, blend_weights, grid_taper, make_grid
from nucseg_rt.params import DEVICES, Device, MaskDefaults, validate_choice

logger = logging.getLogger("nucseg_rt")

Progress = Callable[[str, int, int], None]
_CUDA = "CUDAExecutionProvider"
_CPU = "CPUExecutionProvider"

# (plane axes permutation of a ZYXC array, flow components the two in-plane outputs add to)
# (order as Cellpose adds them, so sums round the same way)
ORIENTATIONS = {
    "YX": ((0, 1, 2, 3), (1, 2)),
    "ZX": ((1, 0, 2, 3), (0, 2)),
    "ZY": ((2, 0, 1, 3), (0, 1)),
}


def uses_cuda(providers: Sequence) -> bool:
    """Whether a provider list (names, or ``(name, options)`` pairs) includes CUDA."""
    return any((p[0] if isinstance(p, tuple) else p) == _CUDA for p in providers)


def select_providers(device: Device, available: Sequence[str] | None = None) -> list:
    """Execution providers for ``device``.

    ``"auto"`` takes CUDA when this onnxruntime offers it, else the CPU; ``"cuda"`` without CUDA
    is an error, never a silent fallback.
    """
    validate_choice("device", device, DEVICES)
    if available is None:
        import onnxruntime as ort

        available = ort.get_available_providers()
    if device == "cpu":
        return [_CPU]
    if _CUDA in available:
        return [(_CUDA, {"cudnn_conv_algo_search": "HEURISTIC"}), _CPU]
    if device == "cuda":
        raise DeviceUnavailableError(
            "`device` 'cuda' requested but onnxruntime offers no CUDAExecutionProvider "
            f"(available: {', '.join(available)}); the GPU build replaces the CPU package: "
            "pip install 'nucseg-rt[gpu]' && pip uninstall -y onnxruntime onnxruntime-gpu && "
            "pip install 'onnxruntime-gpu[cuda,cudnn]' (README, GPU), or use `device` 'cpu'")
    return [_CPU]


@dataclass(frozen=True)
class NetInfo:
    """What the runtime needs to know about a network, read from its ONNX metadata."""

    nchan: int
    diam_mean: float
    diam_labels: float
    nbase: tuple
    mask_defaults: MaskDefaults = MaskDefaults()


def net_info(metadata: dict) -> NetInfo:
    """Parse a model's ``metadata_props`` (see ``nucseg_rt_export.onnx_export``)."""
    try:
        return NetInfo(nchan=int(metadata["nchan"]), diam_mean=float(metadata["diam_mean"]),
                       diam_labels=float(metadata.get("diam_labels", metadata["diam_mean"])),
                       nbase=tuple(json.loads(metadata.get("nbase", "[]"))),
                       mask_defaults=MaskDefaults.from_metadata(metadata))
    except (KeyError, ValueError) as exc:
        raise ModelFormatError(f"model metadata is missing or malformed: {exc}") from exc


class NetBase:
    """What every network engine (:class:`OnnxNet`, the OpenVINO one) shares: calling a closed
    net raises ``ClosedError``, and the output of an all-zero tile is cached per tile shape.

    A subclass sets ``path``, ``info`` and ``providers`` and implements ``_handle()`` (its
    session or request, None once closed), ``_run(handle, batch)`` and ``close()`` (which calls
    :meth:`_forget`).
    """

    def __init__(self):
        self._background: dict = {}

    def _handle(self):
        raise NotImplementedError

    def _run(self, handle, batch: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    @property
    def closed(self) -> bool:
        return self._handle() is None

    def _forget(self) -> None:
        self._background.clear()

    def background(self, tile_shape: tuple) -> np.ndarray:
        """The network's ``(3, ly, lx)`` output for an all-zero ``(nchan, ly, lx)`` tile (cached)."""
        key = tuple(int(s) for s in tile_shape)
        if key not in self._background:
            self._background[key] = self(np.zeros((1, *key), np.float32))[0]
        return self._background[key]

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        """Run ``(B, nchan, H, W)`` float32 -> ``(B, 3, H, W)`` (Y flow, X flow, cellprob)."""
        handle = self._handle()  # read once: close() from another thread cannot race the run
        if handle is None:
            raise ClosedError(f"the network session of {self.path.name} was closed")
        return self._run(handle, batch)


class OnnxNet(NetBase):
    """An onnxruntime session for one network file.

    Parameters
    ----------
    path : path-like
        ONNX file made by ``nucseg-rt export-cellpose`` (input ``input``, outputs ``flows``,
        ``cellprob``).
    providers : list
        From :func:`select_providers`.
    threads : int, optional
        Intra-op threads (default: onnxruntime's choice, one per physical core).

    Notes
    -----
    The session belongs to this object: :meth:`close` releases it (a :class:`nucseg_rt.Segmenter`
    closes the networks it loaded); calling a closed network raises ``ClosedError``.
    """

    def __init__(self, path: str | os.PathLike, providers: list, threads: int | None = None):
        import onnxruntime as ort

        super().__init__()
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Tiles come in several shapes (plane sizes differ between orientations and blocks).
        # A memory pattern is one arena block per input shape, and the arena keeps them all:
        # off, the same calls took 22-27 MB less and grew less from shape to shape, at the
        # same speed and with identical outputs (docs/benchmarks.md, blockwise memory).
        opts.enable_mem_pattern = False
        if threads:
            opts.intra_op_num_threads = int(threads)
        opts.log_severity_level = 3
        self.path = Path(path)
        try:
            self.session = ort.InferenceSession(str(path), sess_options=opts, providers=providers)
        except Exception as exc:
            raise ModelFormatError(f"onnxruntime cannot load {self.path.name}: {exc}") from exc
        meta = self.session.get_modelmeta().custom_metadata_map
        self.info = net_info(meta)
        self.providers = self.session.get_providers()

    def _handle(self):
        return self.session

    def _run(self, session, batch: np.ndarray) -> np.ndarray:
        flows, cellprob = session.run(["flows", "cellprob"], {"input": batch})
        return np.concatenate((flows, cellprob), axis=1)

    def close(self) -> None:
        """Release the onnxruntime session (idempotent); ``info`` and ``path`` stay readable."""
        self.session = None
        self._forget()


def load_net(path: str | os.PathLike, providers: list, threads: int | None = None, *,
             backend: str = "onnxruntime", precision: str = "fp32"):
    """A new network for ``path``: an :class:`OnnxNet` (its own onnxruntime session), or with
    ``backend`` "openvino" an :class:`nucseg_rt.network._openvino.OpenVinoNet` (its own compiled
    model, run in ``precision``; ``providers`` then unused). Both have the same interface; the
    caller owns the net and closes it (``close()``). Every call makes a separate session:
    streams running side by side need one each. ``backend`` is a resolved one (not "auto")."""
    if backend == "openvino":
        from nucseg_rt.network._openvino import OpenVinoNet

        return OpenVinoNet(Path(path).resolve(), precision, threads)
    if backend != "onnxruntime":
        raise InvalidInputError(f"`backend` must be 'onnxruntime' or 'openvino' here, got "
                                f"{backend!r}", param="backend")
    return OnnxNet(Path(path).resolve(), providers, threads)


def plane_tiles(plane: np.ndarray, grid: TileGrid, nchan: int, out: np.ndarray) -> None:
    """Write the tiles of one ``(H, W, C)`` plane into ``out (ntiles, nchan, ly, lx)``."""
    y0, _, x0, _ = grid.pads
    h, w = plane.shape[:2]
    padded = np.zeros((nchan, *grid.shape), np.float32)
    padded[:plane.shape[2], y0:y0 + h, x0:x0 + w] = plane.transpose(2, 0, 1)
    ly, lx = grid.tile
    for k, (ys, xs) in enumerate(grid.starts):
        out[k] = padded[:, ys:ys + ly, xs:xs + lx]


def _blend(tiles_out: np.ndarray, grid: TileGrid, inv_navg: np.ndarray, h: int, w: int) -> np.ndarray:
    """Average ``(ntiles, 3, ly, lx)`` outputs into the plane; returns ``(3, h, w)``."""
    acc = np.zeros((3, *grid.shape), np.float32)
    m = grid_taper(grid)
    ly, lx = grid.tile
    for k, (ys, xs) in enumerate(grid.starts):
        acc[:, ys:ys + ly, xs:xs + lx] += tiles_out[k] * m
    acc *= inv_navg
    y0, _, x0, _ = grid.pads
    return acc[:, y0:y0 + h, x0:x0 + w]


@dataclass(frozen=True)
class WorkAvoidance:
    """Ways to run the network on fewer pixels (all off = Cellpose 3.1's exact computation).

    Attributes
    ----------
    native_yx : bool
        With anisotropy > 1, run YX planes on the acquired planes only and interpolate their
        outputs in Z (linearly, as the input is interpolated), instead of on interpolated planes.
    compact_tiles : bool
        Tile each plane with the fewest, smallest tiles that keep the overlap
        (:func:`nucseg_rt.network.tiling.compact_starts`) instead of Cellpose's 224-pixel tiles.
    background_bound : float or None
        Tiles whose normalised intensity, averaged over 8x8 blocks, nowhere exceeds this bound
        are not run; they get the network's answer for an all-zero tile (exact for all-zero
        tiles). None: off.
    max_anisotropy : float or None
        Above this anisotropy only ``background_bound`` applies (None: no limit).
    """

    native_yx: bool = False
    compact_tiles: bool = False
    background_bound: float | None = None
    max_anisotropy: float | None = None

    def __post_init__(self):
        b = self.background_bound
        if b is not None and not (np.isfinite(b) and b >= 0):
            raise InvalidInputError(f"`background_bound` must be >= 0 or None, got {b!r}")
        a = self.max_anisotropy
        if a is not None and not (np.isfinite(a) and a >= 1):
            raise InvalidInputError(f"`max_anisotropy` must be >= 1 or None, got {a!r}")

    def at(self, anisotropy: float) -> "WorkAvoidance":
        """The steps that apply at ``anisotropy``: above ``max_anisotropy`` only background."""
        if self.max_anisotropy is None or anisotropy <= self.max_anisotropy:
            return self
        return WorkAvoidance(background_bound=self.background_bound)

    @classmethod
    def plain(cls) -> "WorkAvoidance":
        """Everything off: the network sees exactly what Cellpose's network sees."""
        return cls()


class _Counter:
    """Tiles run and tiles skipped, for reporting the work saved."""

    def __init__(self):
        self.run = self.skipped = self.pixels = 0

    def add(self, other: "_Counter") -> None:
        self.run += other.run
        self.skipped += other.skipped
        self.pixels += other.pixels


def _background(tiles: np.ndarray, bound: float, block: int = 8) -> np.ndarray:
    """Which of ``tiles (N, C, ly, lx)`` have every ``block`` x ``block`` mean <= ``bound``.

    Block means, not single pixels, so camera noise in an empty region does not count as
    content while any nucleus (tens of pixels across) does.
    """
    n, c, ly, lx = tiles.shape
    by, bx = ly // block, lx // block
    if by == 0 or bx == 0:
        return tiles.reshape(n, -1).max(axis=1) <= bound
    means = tiles[:, :, :by * block, :bx * block].reshape(n, c, by, block, bx, block).mean((3, 5))
    edge = np.zeros(n, bool)
    if by * block < ly or bx * block < lx:  # the strips left over by the blocks: pixel max
        edge = np.maximum(tiles[:, :, by * block:, :].reshape(n, -1).max(axis=1, initial=-np.inf),
                          tiles[:, :, :, bx * block:].reshape(n, -1).max(axis=1, initial=-np.inf)) > bound
    return (means.reshape(n, -1).max(axis=1) <= bound) & ~edge


def _run_tiles(net: OnnxNet, tiles: np.ndarray, batch_size: int, bound: float | None,
               count: _Counter) -> np.ndarray:
    """Network outputs ``(N, 3, ly, lx)`` for ``tiles (N, nchan, ly, lx)``, skipping background."""
    keep = np.arange(len(tiles)) if bound is None else np.flatnonzero(~_background(tiles, bound))
    count.run += len(keep)
    count.skipped += len(tiles) - len(keep)
    count.pixels += len(keep) * tiles[0, 0].size
    if len(keep) == len(tiles):
        return np.concatenate([net(tiles[b:b + batch_size]) for b in range(0, len(tiles), batch_size)])
    out = np.empty((len(tiles), 3, *tiles.shape[2:]), np.float32)
    out[:] = net.background(tiles.shape[1:])
    for b in range(0, len(keep), batch_size):
        idx = keep[b:b + batch_size]
        out[idx] = net(np.ascontiguousarray(tiles[idx]))
    return out


def run_planes(net: OnnxNet | Sequence[OnnxNet], planes: np.ndarray, *, batch_size: int = 8,
               bsize: int = 224, tile_overlap: float = 0.1,
               sink: Callable[[int, np.ndarray], None], progress: Progress | None = None,
               label: str = "", avoid: WorkAvoidance | None = None,
               counter: _Counter | None = None, cancel: threading.Event | None = None,
               pool: Executor | None = None) -> None:
    """Run the network over every plane of ``planes (N, H, W, C)`` (C <= nchan, zero-filled).

    Planes are batched as Cellpose batches them (``batch_size // ntiles`` planes per group).
    ``sink(i, out)`` receives each plane's ``(3, H, W)`` float32 output (Y flow, X flow, cellprob);
    each plane once, so sinks writing plane ``i`` only need no lock.
    ``avoid`` selects compact tiling and background skipping (default: neither).
    ``net`` may be a sequence of sessions of the same model (streams): groups of planes then run
    side by side, one stream each, in threads (onnxruntime releases the GIL); the outputs are the
    same, only the order in which ``sink`` is called changes.
    ``cancel``: when set, :class:`nucseg_rt.errors.Cancelled` is raised before the next group of
    planes (one batch of tiles), in every stream.
    ``pool``: the threads running the streams (those of a :class:`nucseg_rt.network.engine.Engine`);
    default: threads started for this call and joined before it returns.
    """
    nets = list(net) if isinstance(net, (list, tuple)) else [net]
    if not nets:
        raise InvalidInputError("`net` must be a network or a non-empty sequence of them")
    avoid = avoid or WorkAvoidance()
    counter = counter if counter is not None else _Counter()
    n, h, w, c = planes.shape
    nchan = nets[0].info.nchan
    if c > nchan:
        raise InvalidInputError(f"planes have {c} channels but the model takes {nchan}")
    grid = make_grid(h, w, bsize=bsize, tile_overlap=tile_overlap, compact=avoid.compact_tiles)
    inv_navg = blend_weights(grid)
    per_group = max(1, batch_size // grid.ntiles)
    groups = [range(g0, min(n, g0 + per_group)) for g0 in range(0, n, per_group)]

    def run_group(one: OnnxNet, idx: range, count: _Counter) -> None:
        check_cancel(cancel)
        tiles = np.empty((len(idx) * grid.ntiles, nchan, *grid.tile), np.float32)
        for j, i in enumerate(idx):
            plane_tiles(planes[i], grid, nchan, tiles[j * grid.ntiles:(j + 1) * grid.ntiles])
        outs = _run_tiles(one, tiles, batch_size, avoid.background_bound, count)
        for j, i in enumerate(idx):
            sink(i, _blend(outs[j * grid.ntiles:(j + 1) * grid.ntiles], grid, inv_navg, h, w))

    if len(nets) == 1 or len(groups) == 1:
        for idx in groups:
            run_group(nets[0], idx, counter)
            if progress is not None:
                progress(label, idx[-1] + 1, n)
        return
    if pool is not None:
        _run_groups_streamed(nets, groups, run_group, counter, progress, label, n, pool)
        return
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(len(nets), thread_name_prefix="nucseg-stream") as own:
        _run_groups_streamed(nets, groups, run_group, counter, progress, label, n, own)


def _run_groups_streamed(nets, groups, run_group, counter: _Counter, progress, label: str,
                         n: int, pool: Executor) -> None:
    """``run_group(net, idx, counter)`` for every group, ``len(nets)`` at a time on ``pool``;
    returns (or raises the first error) once no task of this call runs any more."""
    import queue
    from concurrent.futures import wait

    free: queue.SimpleQueue = queue.SimpleQueue()
    for one in nets:
        free.put(one)
    lock = threading.Lock()
    done = [0]

    def task(idx: range) -> None:
        one, count = free.get(), _Counter()
        try:
            run_group(one, idx, count)
        finally:
            free.put(one)
        with lock:
            counter.add(count)
            done[0] += len(idx)
            if progress is not None:
                progress(label, done[0], n)

    futures = [pool.submit(task, idx) for idx in groups]
    try:
        for fut in futures:
            fut.result()  # the first error, raised here
    finally:
        for fut in futures:
            fut.cancel()
        wait(futures)  # the groups already running finish their batch of tiles


def run_3d(net: OnnxNet | Sequence[OnnxNet], x: np.ndarray, *,
           net_ortho: OnnxNet | Sequence[OnnxNet] | None = None, batch_size: int = 8,
           bsize: int = 224, tile_overlap: float = 0.1, progress: Progress | None = None,
           avoid: WorkAvoidance | None = None, yx_native: np.ndarray | None = None,
           stats: dict | None = None, cancel: threading.Event | None = None,
           pool: Executor | None = None, ortho_weight: float = 1.0) -> np.ndarray:
    """Network outputs over YX, ZX and ZY planes of ``x (Z, Y, X, C)``, combined.

    Parameters
    ----------
    yx_native : (Zn, Y, X, C) float32, optional
        The acquired planes (YX-resampled like ``x``, Z not interpolated). When given, the YX
        pass runs on these and its outputs are linearly interpolated in Z onto ``x``'s grid.
    stats : dict, optional
        Filled with tiles run / skipped and network pixels per orientation.
    cancel : threading.Event, optional
        Raises :class:`nucseg_rt.errors.Cancelled` within one batch of tiles once set.
    pool : concurrent.futures.Executor, optional
        The threads running the streams (see :func:`run_planes`).
    ortho_weight : float
        ``w``: the cell probability is ``(cp_YX + w (cp_ZX + cp_ZY)) * 3 / (1 + 2 w)``, the sum of
        the three views for ``w = 1`` (Cellpose's; then no weight is applied at all).

    Returns
    -------
    yf : (4, Z, Y, X) float32
        Z flow, Y flow, X flow (each the sum of two views) and cell probability (the three views'
        weighted sum).
        Channel-first, so ``yf[:3]`` and ``yf[3]`` are views, not copies.
    """
    if x.ndim != 4:
        raise InvalidInputError(f"`x` must be (Z, Y, X, C), got shape {x.shape}")
    if yx_native is not None and (yx_native.ndim != 4 or yx_native.shape[1:] != x.shape[1:]):
        raise InvalidInputError(f"`yx_native` must be (Zn, {x.shape[1]}, {x.shape[2]}, "
                                f"{x.shape[3]}), got shape {yx_native.shape}")
    yf = np.zeros((4, *x.shape[:3]), np.float32)
    w = float(ortho_weight)
    for name, (perm, comps) in ORIENTATIONS.items():
        counter = _Counter()
        common = dict(batch_size=batch_size, bsize=bsize, tile_overlap=tile_overlap,
                      progress=progress, label=name, avoid=avoid, counter=counter, cancel=cancel,
                      pool=pool)
        gain = None if w == 1.0 else np.float32((1.0 if name == "YX" else w) * 3.0 / (1.0 + 2.0 * w))
        if name == "YX" and yx_native is not None:
            _yx_interpolated(net, yx_native, yf, common, gain)
        else:
            planes = x.transpose(perm)
            logger.info("running %s: %d planes of size (%d, %d)", name, *planes.shape[:3])
            target = yf.transpose(0, 1 + perm[0], 1 + perm[1], 1 + perm[2])
            a, b = comps

            def sink(i: int, out: np.ndarray, target=target, a=a, b=b, gain=gain) -> None:
                target[a, i] += out[0]
                target[b, i] += out[1]
                target[3, i] += out[2] if gain is None else gain * out[2]

            run_planes(net if name == "YX" or net_ortho is None else net_ortho, planes,
                       sink=sink, **common)
        if stats is not None:
            stats[name] = {"tiles_run": counter.run, "tiles_skipped": counter.skipped,
                           "pixels": counter.pixels}
    return yf


def _yx_interpolated(net: OnnxNet | Sequence[OnnxNet], native: np.ndarray, yf: np.ndarray,
                     common: dict, gain=None) -> None:
    """Add YX-pass outputs computed on ``native`` planes, linearly interpolated in Z, to ``yf``
    (the cell probability times ``gain`` unless None)."""
    from nucseg_rt.prep.resample import z_interpolation

    logger.info("running YX on %d acquired planes of size (%d, %d)", *native.shape[:3])
    out = np.zeros((native.shape[0], 3, *native.shape[1:3]), np.float32)

    def sink(i: int, o: np.ndarray) -> None:
        out[i] = o

    run_planes(net, native, sink=sink, **common)
    z0, z1, w0, w1 = z_interpolation(native.shape[0], yf.shape[1])
    for z in range(yf.shape[1]):
        plane = out[z0[z]] * w0[z] + out[z1[z]] * w1[z]
        yf[1, z] += plane[0]
        yf[2, z] += plane[1]
        yf[3, z] += plane[2] if gain is None else gain * plane[2]
