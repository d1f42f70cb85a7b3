"""Reduced-precision variants of a model: int8 (CPU, VNNI kernels) and fp16 (CUDA).

int8 is static QDQ quantization (onnxruntime.quantization): weights int8 per output channel,
activations uint8 per tensor, calibrated (min/max) on normalised nuclei tiles cut from YX, ZX and
ZY planes, the way the segmenter feeds the network. Two exact graph rewrites come first so that
onnxruntime can keep the whole network in int8 (measured on a 2-core EPYC with AVX512-VNNI,
bundled model, 224x224 tiles: fp32 24 ms/tile, plain QDQ 18 ms, with the rewrites 14 ms):

- ``BatchNormalization`` (which Cellpose places before ReLU and conv, so it cannot be folded
  into a conv) becomes the equal depthwise 1x1 ``Conv``, which has an int8 kernel;
- the style vector added to a feature map (``x + s[:, :, None, None]``) is expanded to the full
  shape first: onnxruntime's int8 add is ~30x slower when it has to broadcast.
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Literal

import numpy as np

from nucseg_rt.errors import InvalidInputError, ModelFormatError
from nucseg_rt.params import validate_whole

__all__ = ["QuantReport", "prepare_int8_graph", "calibration_planes", "calibration_tiles",
           "quantize_int8", "convert_fp16", "compare_outputs", "make_variant",
           "quantize_registered"]

#: flows correlation (fp32 vs int8 on held-out tiles) below which a quantized model is refused
MIN_FLOW_CORRELATION = 0.98
#: fraction of pixels whose cellprob sign (inside/outside) must agree with fp32
MIN_CELLPROB_AGREEMENT = 0.98


@dataclass(frozen=True)
class QuantReport:
    """How close a reduced-precision model is to its fp32 source on held-out tiles."""
    precision: str
    n_calibration_tiles: int
    n_check_tiles: int
    flow_correlation: float
    cellprob_agreement: float
    max_abs_flow_diff: float
    seconds: float

    def as_metadata(self) -> dict[str, str]:
        return {"precision": self.precision,
                "check_flow_correlation": f"{self.flow_correlation:.5f}",
                "check_cellprob_agreement": f"{self.cellprob_agreement:.5f}",
                "check_max_abs_flow_diff": f"{self.max_abs_flow_diff:.4f}",
                "calibration_tiles": str(self.n_calibration_tiles)}


# --- graph rewrites (exact in fp32) -----------------------------------------------------------


def _constants(graph) -> dict:
    from onnx import numpy_helper

    values = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    for node in graph.node:
        if node.op_type == "Identity" and node.input[0] in values:
            values[node.output[0]] = values[node.input[0]]
        elif node.op_type == "Constant":
            attr = next((a for a in node.attribute if a.name == "value"), None)
            if attr is not None:
                values[node.output[0]] = numpy_helper.to_array(attr.t)
    return values


def _bn_as_conv(node, values, graph) -> object:
    from onnx import helper, numpy_helper

    x, scale, bias, mean, var = node.input[:5]
    missing = [k for k in (scale, bias, mean, var) if k not in values]
    if missing:
        raise ModelFormatError(f"BatchNormalization {node.name!r} has non-constant inputs {missing}")
    eps = next((a.f for a in node.attribute if a.name == "epsilon"), 1e-5)
    s = values[scale].astype(np.float64) / np.sqrt(values[var].astype(np.float64) + eps)
    b = values[bias].astype(np.float64) - values[mean].astype(np.float64) * s
    c = s.size
    w_name, b_name = f"{node.name}.dw_weight", f"{node.name}.dw_bias"
    graph.initializer.append(numpy_helper.from_array(s.reshape(c, 1, 1, 1).astype(np.float32),
                                                     w_name))
    graph.initializer.append(numpy_helper.from_array(b.astype(np.float32), b_name))
    return helper.make_node("Conv", [x, w_name, b_name], [node.output[0]],
                            name=f"{node.name}.dw", group=c, kernel_shape=[1, 1])


def prepare_int8_graph(model):
    """Rewrite an exported network so every heavy op has an int8 kernel (output unchanged).

    Parameters
    ----------
    model : onnx.ModelProto
        A network made by ``nucseg-rt export-cellpose``; not modified.

    Returns
    -------
    onnx.ModelProto
        A copy with BatchNormalization as depthwise 1x1 Conv and broadcast style additions
        expanded to full shape.
    """
    import onnx
    from onnx import helper

    model = onnx.ModelProto.FromString(model.SerializeToString())
    graph = model.graph
    values = _constants(graph)
    producer = {o: n for n in graph.node for o in n.output}
    nodes = []
    for node in graph.node:
        if node.op_type == "BatchNormalization":
            nodes.append(_bn_as_conv(node, values, graph))
            continue
        if node.op_type == "Add":
            k = next((j for j, name in enumerate(node.input)
                      if getattr(producer.get(name), "op_type", "") == "Unsqueeze"), None)
            if k is not None:
                shape, full = f"{node.name}.shape", f"{node.name}.expanded"
                nodes.append(helper.make_node("Shape", [node.input[1 - k]], [shape],
                                              name=f"{node.name}.Shape"))
                nodes.append(helper.make_node("Expand", [node.input[k], shape], [full],
                                              name=f"{node.name}.Expand"))
                inputs = list(node.input)
                inputs[k] = full
                node = helper.make_node("Add", inputs, list(node.output), name=node.name)
        nodes.append(node)
    del graph.node[:]
    graph.node.extend(nodes)
    used = {name for node in graph.node for name in node.input}
    kept = [init for init in graph.initializer if init.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    onnx.checker.check_model(model)
    return model


# --- calibration data -------------------------------------------------------------------------


#: Anisotropies of the synthetic calibration volumes: isotropic, moderate and an embryo's coarse Z
#: (whose ZY/ZX planes, blurred along one axis, have activations the others do not reach).
CALIBRATION_ANISOTROPIES = (1.0, 4.0, 11.5)


#: Activation ranges: the mean over calibration tiles of each tile's min and max (onnxruntime's
#: MinMax "moving average"), not the extremes over all tiles, which a few bright tiles stretch so
#: that every other tile is quantized coarsely. Measured on the bundled model (2026-12-05): flow
#: correlation with fp32 on held-out synthetic tiles 0.9968 -> 0.9989, cell-probability sign
#: agreement 0.9933 -> 0.9961; int8 vs fp32 masks on real 2D images AP@0.5 0.973 -> 0.983
#: (mnfinder, a training source) and 0.928 -> 0.969 (BBBC007, held out).
CALIBRATION_OPTIONS = {"CalibMovingAverage": True}


def _synthetic_volumes(seed: int, diameter: float,
                       nchan: int) -> Iterator[tuple[np.ndarray, float]]:
    """(Z, Y, X, nchan) network input and anisotropy of the seeded synthetic volumes: gray in
    channel 0, zeros after (their axes are known, so nothing is logged about them)."""
    from nucseg_rt.eval.synth import make_volume

    for k, anisotropy in enumerate(CALIBRATION_ANISOTROPIES):
        image, _, _ = make_volume((64, 224, 224), seed=seed + k, anisotropy=anisotropy,
                                  diameter_mean=diameter)
        x = np.zeros((*image.shape, nchan), np.float32)
        x[..., 0] = image
        yield x, anisotropy


def _tiff_files(folder: Path, what: str) -> list[Path]:
    """The images of a calibration or check folder (not masks or labels); refused if none."""
    files = sorted(p for p in folder.iterdir()
                   if p.suffix.lower() in (".tif", ".tiff") and not p.name.startswith("."))
    files = [p for p in files if not p.stem.endswith(("_masks", "_labels"))]
    if not files:
        raise InvalidInputError(f"`{what}` folder {folder} has no .tif/.tiff images")
    return files


def _folder_volumes(folder: Path, nchan: int, what: str) -> Iterator[tuple[np.ndarray, float]]:
    """(Z, Y, X, nchan) network input and anisotropy of the user's TIFFs (axes from each file,
    the decisions logged as for a segmentation)."""
    from nucseg_rt.io import read_volume
    from nucseg_rt.prep.axes import resolve_axes, to_zyxc

    for path in _tiff_files(folder, what):
        vol, info = read_volume(path)
        anisotropy = max(1.0, min(20.0, info.anisotropy()[0] or 1.0))
        axes = resolve_axes(vol.shape, letters=info.axes, what=str(path))
        x, _ = to_zyxc(vol, nchan=nchan, channel_axis=axes.c, z_axis=axes.z)
        yield x, anisotropy


def calibration_planes(nchan: int, *, folder: str | os.PathLike | None = None, seed: int = 0,
                       per_orientation: int = 8, diameter: float = 30.0,
                       what: str = "calibration") -> list[np.ndarray]:
    """Normalised network-input planes in YX, ZX and ZY orientation.

    Parameters
    ----------
    nchan : int
        Channels the network takes.
    folder : path, optional
        Folder of 3D TIFF z-stacks (nuclei in the first channel); default: three seeded
        synthetic volumes (anisotropy 1, 4 and 11.5). A TIFF's anisotropy comes from its voxel size.
    seed : int
        Seed of the synthetic volumes (different seeds give held-out data).
    per_orientation : int
        Planes taken per orientation from each volume, evenly spaced.
    diameter : float
        Nucleus diameter of the synthetic volumes: the model's ``diam_mean``, so that nuclei
        appear at the scale the network runs at.
    what : str
        The parameter ``folder`` came from, for messages (``calibration`` or ``check``).

    Returns
    -------
    list of (H, W, C) float32 planes, resampled isotropic as the segmenter does.
    """
    from nucseg_rt.prep import normalize
    from nucseg_rt.prep.resample import rescale_volume

    if folder is not None:
        folder = Path(folder)
        if not folder.is_dir():
            raise InvalidInputError(f"`{what}` must be a folder of TIFF images, got {folder}")
        volumes = _folder_volumes(folder, nchan, what)
    else:
        volumes = _synthetic_volumes(seed, diameter, nchan)
    planes = []
    for x, anisotropy in volumes:
        x = normalize(x)
        x = rescale_volume(x, rescale=1.0, anisotropy=anisotropy, nchan=nchan)
        for perm in ((0, 1, 2, 3), (1, 0, 2, 3), (2, 0, 1, 3)):
            view = x.transpose(perm)
            for i in np.linspace(0, view.shape[0] - 1, per_orientation).astype(int):
                planes.append(np.ascontiguousarray(view[i]))
    return planes


def calibration_tiles(planes: list[np.ndarray], nchan: int, *, bsize: int = 224) -> list[np.ndarray]:
    """Cut planes into network tiles as the segmenter does: a list of ``(nchan, h, w)`` tiles."""
    from nucseg_rt.network.predict import plane_tiles
    from nucseg_rt.network.tiling import make_grid

    tiles = []
    for plane in planes:
        grid = make_grid(*plane.shape[:2], bsize=bsize)
        out = np.zeros((grid.ntiles, nchan, *grid.tile), np.float32)
        plane_tiles(plane, grid, nchan, out)
        tiles.extend(out)
    return tiles


# --- quantization -----------------------------------------------------------------------------


def _session(path_or_bytes, threads: int | None = None):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if threads:
        opts.intra_op_num_threads = threads
    src = str(path_or_bytes) if isinstance(path_or_bytes, Path) else path_or_bytes
    return ort.InferenceSession(src, opts, providers=["CPUExecutionProvider"])


def compare_outputs(reference, candidate, tiles: np.ndarray) -> tuple[float, float, float]:
    """(flow correlation, cellprob sign agreement, max |flow difference|) over ``tiles``.

    ``reference``/``candidate`` are onnxruntime sessions; ``tiles`` a list of (nchan, h, w).
    """
    f_ref, f_new, p_ref, p_new = [], [], [], []
    for tile in tiles:
        batch = {"input": tile[np.newaxis]}
        a_flow, a_prob = reference.run(["flows", "cellprob"], batch)
        b_flow, b_prob = candidate.run(["flows", "cellprob"], batch)
        f_ref.append(a_flow.ravel()), f_new.append(b_flow.astype(np.float32).ravel())
        p_ref.append(a_prob.ravel()), p_new.append(b_prob.astype(np.float32).ravel())
    fa, fb = np.concatenate(f_ref), np.concatenate(f_new)
    pa, pb = np.concatenate(p_ref), np.concatenate(p_new)
    corr = float(np.corrcoef(fa, fb)[0, 1]) if fa.std() > 0 and fb.std() > 0 else 0.0
    return corr, float(np.mean((pa > 0) == (pb > 0))), float(np.abs(fa - fb).max())


def _copy_metadata(src_model, dst_path: Path, extra: dict[str, str]) -> None:
    import onnx

    model = onnx.load(str(dst_path))
    meta = {p.key: p.value for p in src_model.metadata_props}
    meta.update(ortho_file="", ortho_sha256="")  # the registry pairs reduced-precision files
    meta.update(extra)
    del model.metadata_props[:]
    for key, value in meta.items():
        model.metadata_props.add(key=key, value=value)
    onnx.save(model, str(dst_path))


def _validate_paths(src, dst, overwrite: bool) -> tuple[Path, Path]:
    src, dst = Path(src), Path(dst)
    if not src.is_file():
        raise InvalidInputError(f"`src` model {src} does not exist")
    _check_fp32(src)
    if dst.exists() and not overwrite:
        raise InvalidInputError(f"`dst` {dst} already exists")
    if dst.resolve() == src.resolve():
        raise InvalidInputError("`dst` must differ from `src` (the fp32 model is kept)")
    return src, dst


def _check_fp32(src: Path, name: str | None = None) -> None:
    """Refuse a source that is already reduced-precision (onnxruntime would fail obscurely,
    e.g. "two nodes with same node name"); ``name``: how the message calls it."""
    import onnx

    from nucseg_rt.models.registry import with_article

    model = onnx.load(str(src), load_external_data=False)
    meta = {p.key: p.value for p in model.metadata_props}
    quantized = {"QuantizeLinear", "DequantizeLinear", "QLinearConv"} & {
        n.op_type for n in model.graph.node}
    halves = any(i.data_type == onnx.TensorProto.FLOAT16 for i in model.graph.initializer)
    precision = meta.get("precision") or ("int8" if quantized else "fp16" if halves else "fp32")
    if precision != "fp32":
        raise ModelFormatError(f"{name or src.name} is already {with_article(precision)} model; "
                               f"make variants from its fp32 model")


def quantize_int8(src: str | os.PathLike, dst: str | os.PathLike, *,
                  calibration: str | os.PathLike | None = None, seed: int = 0,
                  overwrite: bool = False, check_planes: int = 3,
                  check: str | os.PathLike | None = None) -> QuantReport:
    """Write an int8 (QDQ) copy of an exported fp32 network, checked against it.

    Parameters
    ----------
    src : path
        fp32 ONNX network made by ``nucseg-rt export-cellpose``.
    dst : path
        Output ``.onnx`` (written atomically).
    calibration : path, optional
        Folder of representative 3D TIFFs; default: seeded synthetic nuclei volumes.
    seed : int
        Seed of the synthetic calibration volumes; the check tiles use ``seed + 100``.
    overwrite : bool
        Replace ``dst`` if it exists.
    check_planes : int
        Planes per orientation of each held-out volume the int8 outputs are checked on (3: 72
        tiles of the 3 synthetic volumes; fewer is a quicker, coarser check).
    check : path, optional
        Folder of 3D TIFFs to check on instead of the synthetic volumes: your own z-stacks, not
        the ``calibration`` folder (the check is on data the ranges were not fitted to).

    Returns
    -------
    QuantReport
        Closeness to fp32 on held-out synthetic tiles (also stored in the model's metadata).

    Raises
    ------
    ModelFormatError
        The quantized model is not close enough to fp32 (flow correlation below
        ``MIN_FLOW_CORRELATION`` or cellprob sign agreement below ``MIN_CELLPROB_AGREEMENT``).
    """
    import onnx
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat,
                                          QuantType, quantize_static)

    from nucseg_rt.io import atomic_write
    from nucseg_rt.models.modelfile import inspect_model

    src, dst = _validate_paths(src, dst, overwrite)
    validate_whole("check_planes", check_planes, 1)
    _validate_check(check, calibration)
    t0 = time.perf_counter()
    metadata, nchan = inspect_model(src)  # checked: diam_mean > 0 is required
    diam_mean = float(metadata["diam_mean"])
    source = onnx.load(str(src))
    tiles = calibration_tiles(calibration_planes(nchan, folder=calibration, seed=seed, diameter=diam_mean),
                              nchan)

    class _Reader(CalibrationDataReader):
        def __init__(self):
            self._it = iter(range(len(tiles)))

        def get_next(self):
            i = next(self._it, None)
            return None if i is None else {"input": tiles[i][np.newaxis]}

    with tempfile.TemporaryDirectory(prefix="nucseg-quant-") as work:
        prepared, out = Path(work) / "prepared.onnx", Path(work) / "int8.onnx"
        onnx.save(prepare_int8_graph(source), str(prepared))
        quantize_static(str(prepared), str(out), _Reader(), quant_format=QuantFormat.QDQ,
                        per_channel=True, activation_type=QuantType.QUInt8,
                        weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.MinMax,
                        extra_options=CALIBRATION_OPTIONS)
        held = calibration_tiles(calibration_planes(nchan, folder=check, seed=seed + 100,
                                                    per_orientation=check_planes,
                                                    diameter=diam_mean, what="check"), nchan)
        corr, agree, maxdiff = compare_outputs(_session(src), _session(out), held)
        report = QuantReport("int8", len(tiles), len(held), corr, agree, maxdiff,
                             time.perf_counter() - t0)
        _check_report(report, src)
        _copy_metadata(source, out, {**report.as_metadata(), "calibration":
                                     "synthetic" if calibration is None else Path(calibration).name,
                                     "check": "synthetic" if check is None else Path(check).name,
                                     "calibration_ranges": "mean of per-tile min/max",
                                     "fp32_sha256": _sha(src)})
        with open(out, "rb") as fin, atomic_write(dst) as fout:
            fout.write(fin.read())
    return report


def _validate_check(check, calibration) -> None:
    """``check``: None, or a folder that is not the calibration folder."""
    if check is None:
        return
    if not Path(check).is_dir():
        raise InvalidInputError(f"`check` must be a folder of TIFF images, got {check}")
    if calibration is not None and Path(check).resolve() == Path(calibration).resolve():
        raise InvalidInputError("`check` must be another folder than `calibration`: the check is on "
                                "data the int8 ranges were not fitted to")
    _tiff_files(Path(check), "check")  # refused before the work, not after it


def _sha(path: Path) -> str:
    from nucseg_rt.models.modelfile import sha256_file

    return sha256_file(path)


def _check_report(report: QuantReport, src: Path) -> None:
    if report.flow_correlation < MIN_FLOW_CORRELATION or \
            report.cellprob_agreement < MIN_CELLPROB_AGREEMENT:
        raise ModelFormatError(
            f"{report.precision} copy of {src.name} is too far from fp32 (flow correlation "
            f"{report.flow_correlation:.4f}, cellprob agreement {report.cellprob_agreement:.4f}; "
            f"need {MIN_FLOW_CORRELATION}/{MIN_CELLPROB_AGREEMENT}); try --calibration with "
            f"images like yours")


def convert_fp16(src: str | os.PathLike, dst: str | os.PathLike, *,
                 overwrite: bool = False, check: str | os.PathLike | None = None) -> QuantReport:
    """Write an fp16 copy of an exported network for CUDA (float32 input and outputs kept).

    Uses onnxruntime's float16 converter. The copy is checked on the CPU when onnxruntime can
    run it there (on seeded synthetic nuclei, or the 3D TIFFs of folder ``check``); otherwise
    only its structure is checked (``n_check_tiles`` = 0).
    """
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    from nucseg_rt.io import atomic_write
    from nucseg_rt.models.modelfile import inspect_model

    src, dst = _validate_paths(src, dst, overwrite)
    _validate_check(check, None)
    t0 = time.perf_counter()
    metadata, nchan = inspect_model(src)
    source = onnx.load(str(src))
    half = convert_float_to_float16(onnx.ModelProto.FromString(source.SerializeToString()),
                                    keep_io_types=True, op_block_list=["Resize"])
    _topological_sort(half.graph)  # the converter appends its input casts at the end
    onnx.checker.check_model(half)
    with tempfile.TemporaryDirectory(prefix="nucseg-fp16-") as work:
        out = Path(work) / "fp16.onnx"
        onnx.save(half, str(out))
        try:
            candidate = _session(out)
        except Exception:  # the CPU provider lacks some fp16 kernels; CUDA has them
            report = QuantReport("fp16", 0, 0, float("nan"), float("nan"), float("nan"),
                                 time.perf_counter() - t0)
        else:
            # held-out synthetic nuclei at the scale the network runs at, as for int8
            held = calibration_tiles(calibration_planes(nchan, folder=check, seed=100, per_orientation=2,
                                                        diameter=float(metadata["diam_mean"]),
                                                        what="check"), nchan)
            corr, agree, maxdiff = compare_outputs(_session(src), candidate, held)
            report = QuantReport("fp16", 0, len(held), corr, agree, maxdiff,
                                 time.perf_counter() - t0)
            _check_report(report, src)
        _copy_metadata(source, out, {**report.as_metadata(), "fp32_sha256": _sha(src),
                                     "check": "synthetic" if check is None else Path(check).name})
        with open(out, "rb") as fin, atomic_write(dst) as fout:
            fout.write(fin.read())
    return report


def _topological_sort(graph) -> None:
    """Reorder ``graph.node`` so every node comes after the nodes producing its inputs."""
    ready = {i.name for i in graph.input} | {i.name for i in graph.initializer} | {""}
    pending, ordered = list(graph.node), []
    while pending:
        rest = []
        for node in pending:
            if all(name in ready for name in node.input):
                ordered.append(node)
                ready.update(node.output)
            else:
                rest.append(node)
        if len(rest) == len(pending):
            raise ModelFormatError("the fp16 graph has a cycle or an undefined input")
        pending = rest
    del graph.node[:]
    graph.node.extend(ordered)


def make_variant(src: str | os.PathLike, dst: str | os.PathLike, *,
                 precision: Literal["int8", "fp16"], calibration=None, check=None,
                 overwrite: bool = False) -> QuantReport:
    """:func:`quantize_int8` or :func:`convert_fp16` by ``precision``."""
    if precision == "int8":
        return quantize_int8(src, dst, calibration=calibration, check=check, overwrite=overwrite)
    if precision == "fp16":
        if calibration is not None:
            raise InvalidInputError("`calibration` applies to int8 only")
        return convert_fp16(src, dst, overwrite=overwrite, check=check)
    raise InvalidInputError(f"`precision` must be 'int8' or 'fp16', got {precision!r}")


def quantize_registered(name: str, *, precision: Literal["int8", "fp16"] = "int8",
                        calibration: str | os.PathLike | None = None, force: bool = False,
                        home: str | os.PathLike | None = None,
                        check: str | os.PathLike | None = None):
    """Make the ``precision`` variant of registered model ``name`` (and of its ortho partner),
    calibrated on ``calibration`` and checked on ``check`` (folders of 3D TIFFs; default:
    seeded synthetic nuclei).

    Returns ``(record, reports)``: the updated registry entry and one :class:`QuantReport`
    per file (main first).
    """
    from nucseg_rt.models import registry
    from nucseg_rt.models.registry import with_article

    record = registry.model_info(name, home=home)
    if record.precision != "fp32":
        raise InvalidInputError(f"model {name!r} is already {record.precision} (it was added "
                                f"quantized): register its fp32 model and quantize that")
    if record.bundled:
        have = ", ".join(sorted(record.variants)) or "none"
        raise InvalidInputError(f"{name!r} is a bundled model and ships its variants ({have}); "
                                f"register a copy with `nucseg-rt add-model` to make others")
    if precision in record.variants and not force:
        raise InvalidInputError(f"model {name!r} already has {with_article(precision)} variant; "
                                f"use --force to make it again")
    registry.verify_model(record)
    _check_fp32(record.files.path, name=f"model {name!r}")
    with tempfile.TemporaryDirectory(prefix="nucseg-variant-") as work:
        main = Path(work) / f"{name}.{precision}.onnx"
        reports = [make_variant(record.files.path, main, precision=precision,
                                calibration=calibration, check=check)]
        ortho = None
        if record.files.ortho_path is not None:
            ortho = Path(work) / f"{name}.{precision}.ortho.onnx"
            reports.append(make_variant(record.files.ortho_path, ortho, precision=precision,
                                        calibration=calibration, check=check))
        record = registry.add_variant(name, precision, main, ortho=ortho, force=force, home=home)
    return record, reports
