"""The helpers module of the test suite: test data, the tiny models and the CLI runner (whose
fork server is ``cli_server.py``).

Fixtures are in conftest.py; everything else a test needs more than once is here, one way to
make each kind of data (test modules never import each other):

- CLI: :func:`run_cli` (forked from a pre-imported server, ``cli_server.py``), :func:`cli_help`
  (each ``--help`` spawned once per session), :func:`assert_one_error_line`,
  :func:`summary_row`; services: :func:`wait_until` (a condition
  with a timeout, never a fixed sleep), :func:`stopping_segmenter`, :func:`watching`.
- Images: :func:`blob_volume` (Gaussian blobs the tiny model finds one nucleus each),
  :func:`blob_timelapse` (those blobs moving from frame to frame), :func:`noise_volume`,
  :func:`zyxc_input`, :func:`plane_input`, :func:`write_calibrated` (a calibrated ImageJ TIFF,
  3D or a T,Z,Y,X time-lapse), :func:`write_ome_zarr_timelapse`. Realistic nuclei come from
  ``nucseg_rt.eval.synth.make_volume``.
- Labels: :func:`random_ellipsoids` (touching nuclei), :func:`ball_lattice` (a jittered grid
  of balls, fast for large volumes), :func:`ideal_flows`, :func:`cellpose_flows`.
- Known label cases that a unit test and its Cellpose reference test share:
  :func:`stitch_planes`, :func:`quirk_planes`, :func:`split_merge_planes`, :func:`holey_labels`,
  :func:`cavity_labels`, :func:`ring_labels`.
- Models: :func:`make_tiny_onnx` (no torch); Cellpose-format networks with random weights
  (:func:`make_cellpose_net`, :func:`exported_model`, :func:`cellpose_model`; torch, reference
  tests only).
- Blockwise data with the bundled model, cached per session: :func:`block_volume`,
  :func:`block_tiff`, :func:`whole_masks`, :func:`blockwise_masks`, :func:`split_nuclei`.

All data is seeded; numpy only unless a function says otherwise.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "models"
EXAMPLE = ROOT / "examples" / "embryo_small.tif"

# --- the command line -----------------------------------------------------------------------


def cli_env() -> dict[str, str]:
    """The environment of a spawned CLI: no colour, and wide enough that a long temporary path
    keeps a summary row on one line (pytest-xdist's folder names are long)."""
    return {**os.environ, "COLUMNS": "400", "NO_COLOR": "1"}


def run_cli(*args, prelude: str = "", hide: tuple[str, ...] = (), fresh: bool = False,
            timeout: float = 300) -> subprocess.CompletedProcess:
    """Run ``nucseg-rt ARGS`` in a separate process; its exit status and output.

    The process is forked from this test worker's :class:`cli_server.CliServer` (the CLI's
    modules imported once), unless ``fresh`` or a ``prelude`` (code run before the import, e.g. a
    patched writer) asks for a new interpreter (``python -m nucseg_rt.cli``), as do all runs
    with ``NUCSEG_TEST_FRESH=1``. ``hide``: modules the run sees as not installed (an extra
    missing; forked when the server has not imported them, else fresh)."""
    env = cli_env()
    forked = not (prelude or fresh or os.environ.get("NUCSEG_TEST_FRESH") == "1")
    if forked:
        proc = _cli_server().run([str(a) for a in args], env, timeout, hide=tuple(hide))
        if proc is not None:
            return proc
    prelude = "".join(f"sys.modules[{name!r}] = None; " for name in hide) + prelude
    code = f"import sys; {prelude}from nucseg_rt.cli import main; sys.exit(main(sys.argv[1:]))"
    cmd = [sys.executable, "-c", code] if prelude else [sys.executable, "-m", "nucseg_rt.cli"]
    return subprocess.run([*cmd, *map(str, args)], capture_output=True, text=True, env=env,
                          timeout=timeout)


_SERVER = []


def _cli_server():
    """This process's CLI fork server, started on first use (closed by conftest at the end)."""
    from cli_server import CliServer

    if _SERVER and not _SERVER[0].alive():
        _SERVER.pop().close()
    if not _SERVER:
        _SERVER.append(CliServer())
    return _SERVER[0]


def close_cli_server() -> None:
    """End this process's CLI fork server, if one was started."""
    while _SERVER:
        _SERVER.pop().close()


def run_cli_here(*args) -> subprocess.CompletedProcess:
    """The command line run in this process (``nucseg_rt.cli._main.run``), its output captured:
    for the matrices of refused settings, where a spawn per case costs 0.7 s of start-up and
    checks nothing more. Every command also has subprocess tests (``run_cli``)."""
    import contextlib
    import io

    from nucseg_rt.cli._main import run

    out, err = io.StringIO(), io.StringIO()
    saved = {k: os.environ.get(k) for k in ("COLUMNS", "NO_COLOR")}
    os.environ.update(COLUMNS="400", NO_COLOR="1")
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = run([str(a) for a in args])
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return subprocess.CompletedProcess(list(args), code, out.getvalue(), err.getvalue())


#: modules ``--help`` must not import (the CLI imports them after parsing)
HEAVY_MODULES = ("numpy", "onnxruntime", "onnx", "numba", "tifffile", "torch")
_HELP_CODE = ("import sys; from nucseg_rt.cli import main; code = main(sys.argv[1:]); "
              f"print('HEAVY', *[m for m in {HEAVY_MODULES!r} if m in sys.modules], "
              "file=sys.stderr); sys.exit(code)")


@functools.lru_cache(maxsize=None)
def cli_help(command: str = "") -> subprocess.CompletedProcess:
    """``nucseg-rt [COMMAND] --help``, spawned once per command and session.

    The result's ``heavy`` attribute lists the :data:`HEAVY_MODULES` the help imported (its
    last stderr line, removed from ``stderr``).
    """
    env = cli_env()
    proc = subprocess.run([sys.executable, "-c", _HELP_CODE, *([command] if command else []),
                           "--help"], capture_output=True, text=True, env=env, timeout=300)
    lines = proc.stderr.splitlines()
    assert lines and lines[-1].startswith("HEAVY"), proc.stderr
    proc.heavy = lines[-1].split()[1:]
    proc.stderr = "\n".join(lines[:-1])
    return proc


def assert_one_error_line(proc: subprocess.CompletedProcess, pattern: str, code: int = 1) -> str:
    """Exit ``code``, no traceback, exactly one ``error:`` line on stderr, matching ``pattern``."""
    assert proc.returncode == code, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, proc.stderr
    assert re.search(pattern, errors[0]), errors[0]
    return errors[0]


def wait_until(predicate, what: str, timeout: float = 60.0) -> None:
    """Return once ``predicate()`` is true (checked every 20 ms); AssertionError naming ``what``
    after ``timeout`` seconds. For conditions only visible in files (records, outputs)."""
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        threading.Event().wait(0.02)


@contextlib.contextmanager
def watching(folder, out, segmenter, **kwargs):
    """``nucseg_rt.watch.watch_folder`` running in a thread while the block runs, then stopped
    and joined."""
    from nucseg_rt.watch import watch_folder

    stop = threading.Event()
    thread = threading.Thread(target=watch_folder, args=(folder, out, segmenter),
                              kwargs=dict(kwargs, cancel=stop))
    thread.start()
    try:
        yield stop
    finally:
        stop.set()
        thread.join(30)


def stopping_segmenter(segmenter, stop: threading.Event, *, call: int = 1):
    """``segmenter`` whose ``segment`` sets ``stop`` first from its ``call``-th call on (e.g. 2:
    while the second frame of a time-lapse runs): a stop that arrives while the network runs
    (everything else is passed through)."""
    calls = []

    class StopsWhileSegmenting:
        def __getattr__(self, name):
            return getattr(segmenter, name)

        def segment(self, *args, **kwargs):
            calls.append(1)
            if len(calls) >= call:
                stop.set()
            return segmenter.segment(*args, **kwargs)

    return StopsWhileSegmenting()


def summary_row(stdout: str, name: str) -> str:
    """The row of the batch summary table that names ``name``."""
    return next(line for line in stdout.splitlines() if name in line and "│" in line)


# --- images ---------------------------------------------------------------------------------

#: four well separated blobs in the default (20, 64, 72) volume
CENTERS = ((6, 16, 18), (12, 40, 20), (10, 20, 52), (14, 46, 54))


def blob_volume(shape=(20, 64, 72), centers=CENTERS, sigma=5.0, seed=0, *, n: int | None = None,
                background: float = 0.0) -> np.ndarray:
    """uint16 (Z, Y, X) volume of Gaussian blobs (peak 1000) plus noise (sd 10).

    ``centers`` are (z, y, x) blob centres; with ``n`` instead, ``n`` centres are drawn uniformly
    from the seeded generator (blobs may then touch). The tiny model finds one nucleus per
    well separated blob.
    """
    rng = np.random.default_rng(seed)
    if n is not None:
        centers = [rng.uniform((0, 0, 0), shape) for _ in range(n)]
    grid = np.indices(shape, dtype=np.float32)
    vol = np.zeros(shape, np.float32)
    for c in centers:
        d2 = sum((g - ci) ** 2 for g, ci in zip(grid, c))
        vol += np.exp(-d2 / (2 * sigma**2))
    noise = rng.normal(0, 0.01, shape)
    return ((vol + noise + background / 1000).clip(0) * 1000).astype(np.uint16)


def blob_timelapse(n_frames: int = 4, shape=(20, 64, 72), step=(0.0, 2.0, 1.5),
                   seed=0) -> np.ndarray:
    """uint16 (T, Z, Y, X) time-lapse of the :data:`CENTERS` blobs of :func:`blob_volume`, each
    frame moved by ``step`` (z, y, x) px from the last (a nucleus overlaps itself in the next
    frame); new noise in every frame."""
    return np.stack([blob_volume(shape, [tuple(c + t * s for c, s in zip(cen, step))
                                         for cen in CENTERS], seed=seed + t)
                     for t in range(n_frames)])


def noise_volume(shape=(23, 97, 131), seed=0, dtype=np.uint16, scale=1000) -> np.ndarray:
    """Uniform noise in [0, ``scale``), cast to ``dtype``: pixels with no structure."""
    return (np.random.default_rng(seed).random(shape) * scale).astype(dtype)


def zyxc_input(seed=3, two=False) -> np.ndarray:
    """(23, 97, 131, 2) float32 network input from :func:`noise_volume`: nuclei channel + zeros,
    or (``two``) nuclei + a flipped, dimmer second channel."""
    from nucseg_rt.prep.axes import to_zyxc

    vol = noise_volume(seed=seed).astype(np.float32)
    if two:
        vol = np.stack([vol, noise_volume(seed=seed + 1)[::-1].astype(np.float32) * 0.3], axis=1)
        return to_zyxc(vol, chan=1, chan2=2)[0]
    return to_zyxc(vol)[0]


def plane_input(shape, seed=0) -> np.ndarray:
    """float32 planes (N, H, W, C) of uniform noise in channel 0, zeros in the others (Cellpose 3
    nuclei models: nuclei channel + zeros)."""
    x = np.random.default_rng(seed).random(shape, dtype=np.float32)
    x[..., 1:] = 0
    return x


def write_calibrated(path, vol, z_step: float = 0.5, pixel: float = 0.5) -> Path:
    """``vol`` (Z, Y, X), or a (T, Z, Y, X) time-lapse, as an ImageJ TIFF with ``pixel`` um
    pixels and ``z_step`` um planes."""
    import tifffile

    tifffile.imwrite(path, vol, imagej=True, resolution=(1 / pixel, 1 / pixel),
                     metadata={"spacing": z_step, "unit": "um", "axes": "TZYX"[4 - vol.ndim:]})
    return Path(path)


def write_ome_zarr_timelapse(path, movie, z_step: float = 2.0, pixel: float = 0.5) -> Path:
    """``movie`` (T, Z, Y, X) as an OME-Zarr image (NGFF 0.4, zarr v2) whose first axis is of
    type "time" (named "frame", not "t"), calibrated in um."""
    import zarr

    group = zarr.open_group(str(path), mode="w", zarr_format=2)
    group.create_array("0", data=movie, chunks=(1, *movie.shape[1:]))
    axes = [{"name": "frame", "type": "time"}] + [{"name": a, "type": "space", "unit":
                                                   "micrometer"} for a in "zyx"]
    scale = [1.0, z_step, pixel, pixel]
    group.attrs.update({"multiscales": [{"version": "0.4", "axes": axes, "datasets": [
        {"path": "0", "coordinateTransformations": [{"type": "scale", "scale": scale}]}]}]})
    return Path(path)


# --- labels and their flows -----------------------------------------------------------------


def _largest_piece(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """(largest face-connected piece of ``mask``, number of pieces); of equal pieces the first
    in raster order, as ``scipy.ndimage.label`` numbering + ``argmax`` picks it."""
    where = np.nonzero(mask)
    if not where[0].size:
        return mask, 0
    box = tuple(slice(int(i.min()), int(i.max()) + 1) for i in where)
    sub = mask[box]
    none = np.iinfo(np.int64).max
    # every voxel takes the smallest raster index of its piece (= the piece's first voxel)
    lab = np.where(sub, np.arange(sub.size).reshape(sub.shape), none)
    while True:
        new = lab.copy()
        for ax in range(sub.ndim):
            head = tuple(slice(1, None) if a == ax else slice(None) for a in range(sub.ndim))
            tail = tuple(slice(None, -1) if a == ax else slice(None) for a in range(sub.ndim))
            np.minimum(new[head], lab[tail], out=new[head])
            np.minimum(new[tail], lab[head], out=new[tail])
        new[~sub] = none
        if np.array_equal(new, lab):
            break
        lab = new
    roots, counts = np.unique(lab[sub], return_counts=True)
    piece = np.zeros_like(mask)
    piece[box] = lab == roots[np.argmax(counts)]
    return piece, len(roots)


def random_ellipsoids(shape, n, *, radius=(4.0, 9.0), aniso=1.0, seed=0, min_size=40):
    """Label image with up to ``n`` touching ellipsoids, renumbered 1..N in drawing order.

    Nuclei are drawn one after another onto free voxels only, so later nuclei are clipped by
    earlier ones and neighbours touch, as in real tissue.

    Parameters
    ----------
    shape : (Z, Y, X) or (Y, X)
    n : int, number of nuclei to try to place
    radius : (low, high) range of the YX semi-axes in pixels
    aniso : float, Z semi-axis = YX semi-axis / aniso (3D only)
    seed : int
    min_size : int, drawn nuclei smaller than this (after clipping) are dropped
    """
    rng = np.random.default_rng(seed)
    shape = tuple(shape)
    lab = np.zeros(shape, np.int32)
    grids = np.indices(shape, dtype=np.float32)
    k = 0
    for _ in range(n):
        r = rng.uniform(*radius, size=len(shape)).astype(np.float32)
        if len(shape) == 3:
            r[0] = r[0] / aniso
        c = np.array([rng.uniform(0, s) for s in shape], np.float32)
        # random rotation in the YX plane
        th = rng.uniform(0, np.pi)
        dy = grids[-2] - c[-2]
        dx = grids[-1] - c[-1]
        u = np.cos(th) * dy + np.sin(th) * dx
        v = -np.sin(th) * dy + np.cos(th) * dx
        d = (u / r[-2]) ** 2 + (v / r[-1]) ** 2
        if len(shape) == 3:
            d = d + ((grids[0] - c[0]) / r[0]) ** 2
        inside = (d <= 1.0) & (lab == 0)
        largest, pieces = _largest_piece(inside)
        if pieces > 1:  # clipped into pieces by earlier nuclei: keep the largest piece
            inside = largest
        if inside.sum() < min_size:
            continue
        k += 1
        lab[inside] = k
    return lab


def ball_lattice(shape, seed: int, spacing: int = 9, radius: float = 3.6) -> np.ndarray:
    """Labels ``shape`` (Z, Y, X) uint32: a jittered grid of balls, ids 1..n (fast for large
    volumes: thousands of labels in known places)."""
    rng = np.random.default_rng(seed)
    labels = np.zeros(shape, np.uint32)
    r = int(np.ceil(radius)) + 2
    offsets = np.mgrid[-r:r + 1, -r:r + 1, -r:r + 1].reshape(3, -1).T
    for n, c in enumerate(np.ndindex(*(s // spacing for s in shape)), 1):
        centre = (np.array(c) + 0.5) * spacing + rng.uniform(-1.5, 1.5, 3)
        voxels = np.round(centre).astype(int) + offsets
        voxels = voxels[((voxels - centre) ** 2).sum(1) <= radius ** 2]
        voxels = voxels[np.all((voxels >= 0) & (voxels < shape), axis=1)]
        labels[tuple(voxels.T)] = n
    return labels


def ideal_flows(lab):
    """Ideal network output for ``lab``: the runtime's flows (equal to Cellpose 3.1's
    ``masks_to_flows`` within 1e-4, tests/reference/test_label_flows_cellpose.py) at network
    scale (x5), and cellprob +10 / -10."""
    from nucseg_rt.masks.label_flows import masks_to_flows

    return _at_network_scale(masks_to_flows(lab), lab)


def cellpose_flows(lab):
    """As :func:`ideal_flows`, with Cellpose 3.1's own ``masks_to_flows`` (needs cellpose)."""
    from cellpose import dynamics as cp_dynamics

    return _at_network_scale(cp_dynamics.masks_to_flows(lab), lab)


def _at_network_scale(flows, lab):
    dP = (flows * 5.0).astype(np.float32)
    cellprob = np.where(lab > 0, 10.0, -10.0).astype(np.float32)
    return dP, cellprob


# --- known label cases shared by a unit test and its reference test ---------------------------


def stitch_planes():
    """Per-plane labels of 3D nuclei with shuffled ids, an empty gap and a cut corner."""
    lab = random_ellipsoids((20, 97, 131), 40, seed=4, radius=(5.0, 11.0))
    rng = np.random.default_rng(0)
    out = np.zeros(lab.shape, np.uint16)
    for z in range(lab.shape[0]):
        ids = np.unique(lab[z])[1:]
        lut = np.zeros(lab.max() + 1, np.int64)
        lut[ids] = rng.permutation(len(ids)) + 1
        out[z] = lut[lab[z]]
    out[8:10] = 0
    out[0, :20, :20] = 0
    out[12][out[12] == 2] = 0  # a gap in the ids of one plane
    return out


def quirk_planes():
    """Five planes where Cellpose's stitching keeps plane 2's own ids."""
    # plane 1 is empty before any two planes were stitched: plane 2 keeps its own ids,
    # so its mask 1 gets the same id as the unrelated mask 1 of plane 0 (as in Cellpose)
    m = np.zeros((5, 20, 20), np.uint16)
    m[0, 2:5, 2:5] = 1
    m[2, 12:16, 12:16] = 1
    m[2, 5:9, 5:9] = 2
    m[3, 12:16, 12:16] = 1
    m[4, 13:17, 12:16] = 3
    return m


def split_merge_planes():
    """Two planes where one mask overlaps two: the best IoU wins."""
    m = np.zeros((2, 10, 20), np.uint16)
    m[0, :, :10] = 1
    m[0, :, 10:] = 2
    m[1, :, 2:16] = 5  # overlaps 1 (8 px wide) more than 2 (6 px wide)
    m[1, :, 16:] = 3
    return m


def holey_labels():
    """3D labels with punched holes, enclosed cavities and tiny masks."""
    lab = random_ellipsoids((23, 97, 131), 70, seed=3, radius=(4.0, 10.0)).astype(np.uint16)
    rng = np.random.default_rng(0)
    for k in range(1, lab.max() + 1, 2):
        zz, yy, xx = np.nonzero(lab == k)
        c = rng.integers(len(zz))
        lab[zz[c], yy[c], xx[c]] = 0  # a one-voxel hole (or a dent at the surface)
    n = lab.max()
    lab[0, :3, :3] = n + 1  # small masks
    lab[5:7, 50:52, 0:2] = n + 2
    return lab


def cavity_labels():
    """A cube with an enclosed cavity holding a second mask."""
    lab = np.zeros((9, 9, 9), np.uint16)
    lab[1:8, 1:8, 1:8] = 1
    lab[3:6, 3:6, 3:6] = 0  # cavity
    lab[4, 4, 4] = 2  # a mask inside the cavity
    return lab


def ring_labels():
    """A 2D ring whose hole touches a corner gap only diagonally."""
    ring = np.zeros((7, 7), np.uint8)
    ring[1:6, 1:6] = 3
    ring[2:5, 2:5] = 0  # hole
    ring[1, 1] = 0  # a corner gap only touches the hole diagonally: still a hole
    return ring



# --- the tiny ONNX model (no torch) ---------------------------------------------------------


def make_tiny_onnx(path: Path, *, nchan: int = 2, diam_mean: float = 30.0, role: str = "main",
                   ortho_file: str = "", ortho_sha256: str = "", flow_gain: float = 40.0,
                   metadata: dict | None = None) -> Path:
    """Write a tiny segmentation model to ``path``; ``metadata`` entries override the defaults.

    Built with the ``onnx`` helper API: one 9x9 convolution whose first two outputs are the Y/X
    derivatives of a Gaussian-smoothed image (so flows point towards the centres of bright
    blobs) and whose third is the image itself, scaled and shifted (cell probability > 0 where
    the normalised intensity is above 0.5). It has the exporter's interface: input ``input``
    (B, nchan, H, W), outputs ``flows`` (B, 2, H, W), ``cellprob`` (B, 1, H, W), ``style``
    (B, 3), and its ``metadata_props``.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    r, sigma = 4, 2.0
    yy, xx = np.mgrid[-r:r + 1, -r:r + 1].astype(np.float64)
    gauss = np.exp(-(yy**2 + xx**2) / (2 * sigma**2))
    gauss /= gauss.sum()
    weight = np.zeros((3, nchan, 2 * r + 1, 2 * r + 1), np.float32)
    weight[0, 0] = flow_gain * yy * gauss / sigma**2  # d/dy of the smoothed image
    weight[1, 0] = flow_gain * xx * gauss / sigma**2  # d/dx
    weight[2, 0, r, r] = 12.0
    bias = np.array([0.0, 0.0, -6.0], np.float32)
    nodes = [
        helper.make_node("Conv", ["input", "W", "B"], ["y"], pads=[r, r, r, r]),
        helper.make_node("Split", ["y", "split"], ["flows", "cellprob"], axis=1),
        helper.make_node("ReduceMean", ["y"], ["style"], axes=[2, 3], keepdims=0),
    ]
    graph = helper.make_graph(
        nodes, "tiny_nucseg",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["B", nchan, "H", "W"])],
        [helper.make_tensor_value_info("flows", TensorProto.FLOAT, ["B", 2, "H", "W"]),
         helper.make_tensor_value_info("cellprob", TensorProto.FLOAT, ["B", 1, "H", "W"]),
         helper.make_tensor_value_info("style", TensorProto.FLOAT, ["B", 3])],
        initializer=[numpy_helper.from_array(weight, "W"), numpy_helper.from_array(bias, "B"),
                     numpy_helper.from_array(np.array([2, 1], np.int64), "split")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    props = {"nucseg_rt.format": "1", "diam_mean": str(diam_mean), "diam_labels": str(diam_mean),
             "nchan": str(nchan), "nclasses": "3", "nbase": f"[{nchan}, 3]",
             "source_file": "tests/helpers.py", "source_sha256": "", "exporter": "tests",
             "torch_version": "", "onnx_opset": "17", "role": role, "ortho_file": ortho_file,
             "ortho_sha256": ortho_sha256, **(metadata or {})}
    helper.set_model_props(model, props)
    onnx.checker.check_model(model)
    path = Path(path)
    onnx.save(model, str(path))
    return path


# --- Cellpose itself, imported by one test worker only -----------------------------------------

class _LazyModule:
    def __init__(self, name: str):
        self._name = name

    def __getattr__(self, attr):
        import importlib

        return getattr(importlib.import_module(self._name), attr)


def cellpose_module(name: str):
    """Cellpose's module ``name`` (e.g. ``"cellpose.dynamics"``), imported on first use.

    Importing Cellpose compiles its numba functions eagerly (about 5 s). The reference tests
    run together on one test worker (tests/conftest.py), so with these stand-ins for
    module-level imports only that worker pays it; modules using them set
    ``pytestmark = CELLPOSE`` (skipped without Cellpose)."""
    return _LazyModule(name)


def _cellpose_marks():
    import importlib.util

    import pytest

    return [pytest.mark.skipif(importlib.util.find_spec("cellpose") is None,
                               reason="needs cellpose (the test extra)")]


CELLPOSE = _cellpose_marks()


# --- Cellpose-format networks with random weights (torch + cellpose: reference tests) --------

#: narrow widths so parity tests run in seconds; same architecture and code paths as 32-256
TINY_NBASE = [2, 8, 16, 32, 64]


def make_cellpose_net(nbase=TINY_NBASE, seed=0, diam_mean=30.0, diam_labels=None):
    """A cellpose.resnet_torch.CPnet with random weights and BatchNorm statistics (eval mode)."""
    import torch
    from cellpose.resnet_torch import CPnet

    torch.manual_seed(seed)
    net = CPnet(list(nbase), 3, 3, mkldnn=False, diam_mean=diam_mean)
    g = torch.Generator().manual_seed(seed + 1)
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    # make cellprob positive in bright regions so dynamics has something to do
    with torch.no_grad():
        net.output[2].bias[2] += 0.5
    if diam_labels is not None:
        net.diam_labels.data[:] = diam_labels
    return net.eval()


def exported_model(folder: Path, *, name="tiny", seed=0, ortho_seed=None, diam_mean=30.0,
                   diam_labels=None, nbase=TINY_NBASE):
    """Save a Cellpose file (and optional ortho file), export to ONNX; return (onnx, net, ortho_net)."""
    from nucseg_rt_export.onnx_export import export_cellpose

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    net = make_cellpose_net(nbase, seed, diam_mean, diam_labels)
    src = folder / f"{name}_cp"
    net.save_model(str(src))
    ortho_net, ortho_src = None, None
    if ortho_seed is not None:
        ortho_net = make_cellpose_net(nbase, ortho_seed, diam_mean, diam_labels)
        ortho_src = folder / f"{name}_cp_ortho"
        ortho_net.save_model(str(ortho_src))
    out = folder / f"{name}.onnx"
    export_cellpose(src, out, ortho=ortho_src)
    return out, net, ortho_net


def as_cellpose_runner(net):
    """Wrap a narrow CPnet so Cellpose's run_net (which hard-codes 256 style features) accepts it."""
    import torch

    class Runner(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner
            self.nout = inner.nout
            self.mkldnn = False

        @property
        def device(self):
            return next(self.inner.parameters()).device

        def forward(self, x):
            y, style = self.inner(x)[:2]
            return y, torch.nn.functional.pad(style, (0, 256 - style.shape[1]))

    return Runner(net).eval()


def cellpose_model(net, ortho_net=None):
    """A cellpose.models.CellposeModel (CPU) running ``net`` (and ``ortho_net``) of any width."""
    from cellpose import models

    m = models.CellposeModel(gpu=False, pretrained_model=False)
    m.net = as_cellpose_runner(net)
    m.net_ortho = as_cellpose_runner(ortho_net) if ortho_net is not None else None
    m.diam_mean = float(net.diam_mean.item())
    m.diam_labels = float(net.diam_labels.item())
    return m


def cellpose_file_model(path, nbase):
    """A CellposeModel running a Cellpose-format file of width ``nbase`` (Cellpose hard-codes 32-256)."""
    import torch
    from cellpose.resnet_torch import CPnet

    net = CPnet(list(nbase), 3, 3, mkldnn=False)
    net.load_state_dict(torch.load(path, weights_only=True))
    return cellpose_model(net.eval())


# --- blockwise data with the bundled model, cached per session ------------------------------

#: name -> (iso shape, anisotropy, seed, density): ~30 px nuclei, small enough to run whole.
#: "pair" is two blocks of 64 side by side (8 nuclei): the CLI and scheduler tests, which check
#: plumbing, not seams, run on it.
BLOCK_CASES = {"iso": ((24, 128, 128), 1.0, 3, 0.4), "aniso2": ((48, 112, 112), 2.0, 5, 0.4),
               "pair": ((24, 64, 128), 1.0, 3, 0.5)}
_BLOCK_TMP = Path(tempfile.mkdtemp(prefix="nucseg-blockdata-"))


@functools.lru_cache(maxsize=None)
def block_volume(case: str = "iso") -> tuple[np.ndarray, float]:
    """(image (Z, Y, X) uint16, anisotropy) of a blockwise case, read-only."""
    from nucseg_rt.eval.synth import make_volume

    shape, aniso, seed, density = BLOCK_CASES[case]
    img, _, _ = make_volume(shape, anisotropy=aniso, seed=seed, diameter_mean=30.0, density=density)
    img.setflags(write=False)
    return img, aniso


@functools.lru_cache(maxsize=None)
def block_tiff(case: str = "iso") -> Path:
    """The case's volume as a calibrated ImageJ TIFF (0.5 um pixels, Z step 0.5 * aniso)."""
    img, aniso = block_volume(case)
    return write_calibrated(_BLOCK_TMP / f"{case}.tif", img, z_step=0.5 * aniso)


@functools.lru_cache(maxsize=None)
def bundled_segmenter():
    """One Segmenter of the bundled model shared by the blockwise tests, on onnxruntime.

    ``backend="auto"`` would run OpenVINO bf16 here (the test extra has it): the blockwise
    determinism test took 12.2 s on it against 5.1 s on onnxruntime (2026-12-07; why, not yet
    measured apart: OpenVINO compiles kernels on the first call for each tile shape, but a CLI
    run with 12x64x64 blocks was faster on it). OpenVINO's masks against onnxruntime's:
    tests/network/test_openvino.py."""
    from nucseg_rt import Segmenter

    return Segmenter("nuclei_3d", device="cpu", backend="onnxruntime")


@functools.lru_cache(maxsize=None)
def whole_masks(case: str = "iso") -> np.ndarray:
    """Masks of the case's volume segmented whole (read-only)."""
    img, aniso = block_volume(case)
    masks = bundled_segmenter().segment(img, anisotropy=aniso, diameter=30.0).masks
    masks.setflags(write=False)
    return masks


@functools.lru_cache(maxsize=None)
def blockwise_masks(case: str, block: str):
    """(BlockwiseResult, labels) of the in-process blockwise run of ``case`` with ``block``."""
    import tifffile

    from nucseg_rt.blockwise import blocks
    from nucseg_rt.blockwise import run as large

    _, aniso = block_volume(case)
    out = _BLOCK_TMP / f"{case}_{block.replace(',', 'x')}_masks.tif"
    res = large.segment_blockwise(block_tiff(case), out, bundled_segmenter(),
                                  diameter=30.0, anisotropy=aniso,
                                  settings=large.LargeSettings(),
                                  block_size=blocks.parse_block_size(block))
    masks = tifffile.imread(res.path)
    masks.setflags(write=False)
    return res, masks


def split_nuclei(whole: np.ndarray, blocks: np.ndarray, fraction: float = 0.1) -> list[int]:
    """Whole-volume nuclei covered by two blockwise labels with pieces >= ``fraction`` of them."""
    split = []
    for label in range(1, int(whole.max()) + 1):
        inside = blocks[whole == label]
        ids, counts = np.unique(inside[inside > 0], return_counts=True)
        if (counts >= fraction * inside.size).sum() > 1:
            split.append(label)
    return split
