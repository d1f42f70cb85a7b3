"""Load Cellpose 3 model files safely and build a matching :class:`CPnet`.

Cellpose saves models with ``torch.save(net.state_dict(), path)``, usually without a file
extension, so files are recognised by content. Loading always uses ``weights_only=True``:
a model file can hold tensors, never code.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from nucseg_rt.errors import InvalidInputError, ModelFormatError, ModelNotFoundError
from nucseg_rt.models import sha256_file as file_sha256
from nucseg_rt_export.unet import CPnet, nbase_from_state_dict

logger = logging.getLogger("nucseg_rt")

_ZIP_MAGIC = b"PK\x03\x04"
_PICKLE_MAGIC = b"\x80"
_REQUIRED_KEYS = ("downsample.down.res_down_0.proj.1.weight", "output.2.weight")
# Cellpose 4 (Cellpose-SAM) state dicts hold a ViT encoder and a linear readout.
_CP4_MARKERS = ("encoder.patch_embed", "encoder.blocks", "W2")


@dataclass(frozen=True)
class LoadedModel:
    """A Cellpose 3 network loaded from a file.

    Attributes
    ----------
    net : CPnet
        The network in eval mode, on the CPU.
    nbase : list of int
        Channel widths ``[nchan, c1, ..., cK]`` inferred from the file.
    diam_mean, diam_labels : float
        Diameters stored in the file (Cellpose semantics).
    source : Path
        The file it came from.
    sha256 : str
        Hex digest of the file's bytes.
    """

    net: CPnet
    nbase: list
    nout: int
    diam_mean: float
    diam_labels: float
    source: Path
    sha256: str


def _read_state_dict(path: Path) -> dict:
    if not path.exists():
        raise ModelNotFoundError(f"model file not found: {path}")
    if path.is_dir():
        raise InvalidInputError(f"model path is a folder, expected a file: {path}")
    with open(path, "rb") as f:
        head = f.read(4)
    if not (head.startswith(_ZIP_MAGIC) or head.startswith(_PICKLE_MAGIC)):
        raise ModelFormatError(
            f"{path.name} is not a PyTorch/Cellpose model file (starts with {head!r}); "
            "ONNX files can be added directly with `nucseg-rt add-model`")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle errors, truncated zip, objects that are not weights
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ModelFormatError(
            f"cannot load {path.name} as weights only (no code is ever run from a model file): {msg}"
        ) from exc
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ModelFormatError(
            f"{path.name} does not hold a state dict of tensors (found {type(obj).__name__})")
    return obj


def _check_cellpose3(state: dict, name: str) -> None:
    keys = list(state)
    if any(k.startswith(m) for k in keys for m in _CP4_MARKERS):
        raise ModelFormatError(
            f"{name} is a Cellpose 4 (Cellpose-SAM) model; nucseg-rt runs Cellpose 3 CPnet models")
    missing = [k for k in _REQUIRED_KEYS if k not in state]
    if missing:
        raise ModelFormatError(
            f"{name} is not a Cellpose 3 CPnet state dict: missing {missing[0]!r} "
            f"({len(keys)} tensors, first: {keys[0] if keys else 'none'!r})")


def load_cellpose_model(path: str | os.PathLike, *, diam_mean: float | None = None) -> LoadedModel:
    """Load a Cellpose 3 model file into a :class:`CPnet`.

    Parameters
    ----------
    path : path-like
        Cellpose 3.0-3.1 model file (``torch.save(state_dict)``), any extension.
    diam_mean : float, optional
        Only used when the file carries no ``diam_mean`` (very old files).

    Raises
    ------
    ModelNotFoundError, ModelFormatError
        Missing file; not a torch file; Cellpose 4 file; wrong keys or shapes.
    """
    path = Path(path)
    state = _read_state_dict(path)
    _check_cellpose3(state, path.name)
    nbase = nbase_from_state_dict(state)
    nout = int(state["output.2.weight"].shape[0])
    sz = int(state["downsample.down.res_down_0.conv.conv_0.2.weight"].shape[-1]) \
        if "downsample.down.res_down_0.conv.conv_0.2.weight" in state else 3
    for key in ("diam_mean", "diam_labels"):
        if key not in state:
            default = 30.0 if diam_mean is None else float(diam_mean)
            logger.warning("%s has no %s; using %.1f", path.name, key, default)
            state[key] = torch.ones(1) * default
    net = CPnet(nbase, nout, sz, diam_mean=float(state["diam_mean"].item()))
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = [ln.strip() for ln in str(exc).splitlines() if ln.strip()][1:2]
        raise ModelFormatError(
            f"{path.name} does not match a CPnet with nbase={nbase}: {first[0] if first else exc}"
        ) from exc
    net.eval()
    return LoadedModel(net=net, nbase=nbase, nout=nout,
                       diam_mean=float(state["diam_mean"].item()),
                       diam_labels=float(state["diam_labels"].item()),
                       source=path, sha256=file_sha256(path))
