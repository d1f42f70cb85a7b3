"""Model files: what an ONNX segmentation model must look like.

Used by the registry on the way in (``validate_onnx_model``) and on every load
(``inspect_model``, a static check without running the model). Cellpose (PyTorch) files are
recognised (``is_torch_file``) but never converted here: converting needs the export tool
(``nucseg_rt_export``, PyTorch), which the runtime does not import.

A usable model has one float32 input (B, nchan, H, W) with nchan 1 or 2, outputs named
``flows`` (B, 2, H, W) and ``cellprob`` (B, 1, H, W), and ``metadata_props`` with at least
``diam_mean`` (see the exporter, ``nucseg_rt_export.onnx_export``).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from nucseg_rt.errors import ModelFormatError, ModelIntegrityError, ModelNotFoundError
from nucseg_rt.io import existing_file
from nucseg_rt.models._onnxproto import OnnxSummary, ProtoError, read_summary

__all__ = ["existing_model_file", "sha256_file", "is_torch_file", "read_metadata", "inspect_model",
           "validate_onnx_model", "ortho_partner", "SUPPORTED_NCHAN"]

SUPPORTED_NCHAN = (1, 2)


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def is_torch_file(path: str | os.PathLike) -> bool:
    """True if the file looks like a PyTorch save (zip archive or pickle), by content."""
    with open(path, "rb") as fh:
        head = fh.read(4)
    return head == b"PK\x03\x04" or (len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5)


def _load_summary(path: Path) -> OnnxSummary:
    """Read an ONNX file's graph signature and metadata (weights skipped, external data not
    loaded); the ``onnx`` package is not imported (see ``_onnxproto``)."""
    path = existing_model_file(path)
    if is_torch_file(path):
        raise ModelFormatError(
            f"{path} is a PyTorch/Cellpose model file, not ONNX; convert it with "
            f"`nucseg-rt export-cellpose` or register it with `nucseg-rt add-model`")
    try:
        summary = read_summary(path.read_bytes())
    except ProtoError as exc:
        raise ModelFormatError(f"{path} is not a readable ONNX model ({exc})") from exc
    if summary.ir_version <= 0 or not summary.n_nodes or not summary.outputs:
        raise ModelFormatError(f"{path} is not an ONNX model (no graph found)")
    return summary


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The ``metadata_props`` of an ONNX file as a dict of strings.

    Raises ModelNotFoundError if the file is missing, ModelFormatError if it is not a
    readable ONNX model (corrupt, truncated, a PyTorch file, any other file).
    """
    return dict(_load_summary(Path(path)).metadata)


def _check_signature(summary: OnnxSummary, path: Path) -> int:
    """Check inputs/outputs/metadata without running the model; return nchan."""
    metadata = summary.metadata
    inputs = [i for i in summary.inputs if i.name not in summary.initializers]
    outputs = [o.name for o in summary.outputs]
    if len(inputs) != 1:
        raise ModelFormatError(f"{path}: model must have one input, found {len(inputs)}")
    elem_type, dims = inputs[0].elem_type, list(inputs[0].dims)
    if elem_type != 1 or len(dims) != 4:
        raise ModelFormatError(f"{path}: model input must be float32 (B, nchan, H, W), "
                               f"found elem_type {elem_type} with {len(dims)} dims")
    if "flows" not in outputs or "cellprob" not in outputs:
        raise ModelFormatError(
            f"{path}: model outputs must include 'flows' and 'cellprob', found {outputs}")
    meta_nchan = _metadata_number(metadata, "nchan", int, path)
    nchan = dims[1] if dims[1] is not None else meta_nchan
    if dims[1] is not None and meta_nchan is not None and dims[1] != meta_nchan:
        raise ModelFormatError(
            f"{path}: model input has {dims[1]} channels but its metadata says nchan={meta_nchan}")
    if nchan is None:
        raise ModelFormatError(f"{path}: cannot tell the number of input channels (dynamic "
                               f"channel dimension and no 'nchan' metadata)")
    if nchan not in SUPPORTED_NCHAN:
        raise ModelFormatError(
            f"{path}: model input has {nchan} channels; nucseg-rt runs models with 1 or 2 "
            f"input channels (Cellpose 3 models have 2)")
    diam_mean = _metadata_number(metadata, "diam_mean", float, path)
    if diam_mean is None or not diam_mean > 0:
        raise ModelFormatError(
            f"{path}: model metadata needs 'diam_mean' > 0, found {metadata.get('diam_mean')!r} "
            f"(models converted by `nucseg-rt export-cellpose` carry it)")
    min_anisotropy = _metadata_number(metadata, "min_anisotropy", float, path)  # ortho partners
    if min_anisotropy is not None and not min_anisotropy >= 0:
        raise ModelFormatError(f"{path}: model metadata 'min_anisotropy' must be >= 0, "
                               f"found {metadata['min_anisotropy']!r}")
    return nchan


def _metadata_number(metadata: dict[str, str], key: str, kind: type, path: Path):
    """``metadata[key]`` as ``kind`` (int or float); None if absent or empty."""
    if key not in metadata or metadata[key] == "":
        return None
    try:
        value = float(metadata[key])
    except ValueError:
        value = None
    if value is None or (kind is int and not value.is_integer()):
        what = "a whole number" if kind is int else "a number"
        raise ModelFormatError(
            f"{path}: model metadata {key!r} must be {what}, found {metadata[key]!r}")
    return kind(value)


def validate_onnx_model(path: str | os.PathLike) -> int:
    """Check that a file is a usable segmentation model; return its number of input channels.

    Loads it in onnxruntime (CPU), runs a (1, nchan, 64, 64) zero input and checks the
    outputs ``flows`` (1, 2, 64, 64) and ``cellprob`` (1, 1, 64, 64).

    Raises
    ------
    ModelNotFoundError
        The file does not exist.
    ModelFormatError
        Not ONNX, corrupt, or wrong inputs/outputs/metadata; the message says what was found.
    """
    path = Path(path)
    _, nchan = inspect_model(path)
    import numpy as np
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads, options.log_severity_level = 1, 3
    try:
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        input_name = session.get_inputs()[0].name
        zeros = np.zeros((1, nchan, 64, 64), np.float32)
        flows, cellprob = session.run(["flows", "cellprob"], {input_name: zeros})
    except Exception as exc:  # onnxruntime raises its own exception types
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelFormatError(f"{path}: onnxruntime cannot run the model ({message})") from exc
    if flows.shape != (1, 2, 64, 64) or cellprob.shape != (1, 1, 64, 64):
        raise ModelFormatError(
            f"{path}: for a (1, {nchan}, 64, 64) input the model must return flows (1, 2, 64, 64) "
            f"and cellprob (1, 1, 64, 64), found {flows.shape} and {cellprob.shape}")
    return nchan


def existing_model_file(path: str | os.PathLike) -> Path:
    """``path`` as a Path; ModelNotFoundError unless it is an existing file."""
    return existing_file(path, error=ModelNotFoundError, missing="model file not found: {path}",
                         not_file="model path is not a file: {path}")


def inspect_model(path: str | os.PathLike) -> tuple[dict[str, str], int]:
    """(metadata, nchan) of an ONNX model, checked statically (inputs, outputs, metadata).

    Cheaper than ``validate_onnx_model``: the model is parsed, not run.
    """
    path = Path(path)
    summary = _load_summary(path)
    return dict(summary.metadata), _check_signature(summary, path)


def ortho_partner(path: Path, metadata: dict[str, str]) -> Path | None:
    """The ortho partner named in ``metadata["ortho_file"]`` next to ``path``, or None.

    Raises ModelIntegrityError if it exists but does not match ``metadata["ortho_sha256"]``.
    """
    name = metadata.get("ortho_file", "")
    if not name or Path(name).name != name or name in (".", ".."):
        return None
    partner = path.parent / name
    if not partner.is_file():
        return None
    expected = metadata.get("ortho_sha256", "")
    if expected and sha256_file(partner) != expected:
        raise ModelIntegrityError(
            f"{partner} does not match the ortho_sha256 recorded in {path.name}; "
            f"refusing to pair them")
    return partner
