"""Convert Cellpose 3 model files to ONNX with their metadata, and verify the result.

The exported graph has dynamic batch, height and width. Outputs are split into ``flows``
(Y, X) and ``cellprob`` so the runtime never has to know the channel layout. Export checks
itself: onnxruntime must reproduce torch on several input sizes within ``atol``.
"""

from __future__ import annotations

import io
import json
import logging
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn

from nucseg_rt.errors import ModelFormatError
from nucseg_rt.io import atomic_write
from nucseg_rt_export.cellpose_io import LoadedModel, file_sha256, load_cellpose_model

logger = logging.getLogger("nucseg_rt")

FORMAT_VERSION = "1"
DEFAULT_OPSET = 17
VERIFY_SHAPES = ((1, 224, 224), (2, 80, 144), (1, 64, 64))
#: Relative part of the export check's tolerance (see ``_verify``).
RTOL = 1e-5


class ExportVerificationError(ModelFormatError):
    """onnxruntime output differs from torch by more than the tolerance."""


@dataclass(frozen=True)
class ExportReport:
    """What :func:`export_cellpose` wrote and measured."""

    path: Path
    ortho_path: Path | None
    max_abs_diff: float
    checked_shapes: tuple = field(default=VERIFY_SHAPES)


class _OnnxHead(nn.Module):
    """Wraps a CPnet so the graph returns ``flows``, ``cellprob`` and ``style``."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x):
        y, style = self.net(x)
        return y[:, :2], y[:, 2:3], style


def _to_onnx_bytes(net: nn.Module, nchan: int, opset: int) -> bytes:
    head = _OnnxHead(net).eval()
    dummy = torch.zeros(1, nchan, 64, 64)
    buf = io.BytesIO()
    dyn = {"input": {0: "batch", 2: "height", 3: "width"},
           "flows": {0: "batch", 2: "height", 3: "width"},
           "cellprob": {0: "batch", 2: "height", 3: "width"},
           "style": {0: "batch"}}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(head, (dummy,), buf, input_names=["input"],
                          output_names=["flows", "cellprob", "style"], dynamic_axes=dyn,
                          opset_version=opset, do_constant_folding=True, dynamo=False)
    return buf.getvalue()


def _metadata(m: LoadedModel, *, role: str, opset: int, ortho_name: str = "",
              ortho_sha: str = "", min_anisotropy: float | None = None,
              mask_defaults=None, agreement: dict[str, float] | None = None) -> dict[str, str]:
    import dataclasses
    import json

    from nucseg_rt import __version__

    extra = {} if min_anisotropy is None else {"min_anisotropy": repr(float(min_anisotropy))}
    if mask_defaults is not None:  # nucseg_rt.params.MaskDefaults: calibrated for this model
        extra.update({k: repr(float(v)) for k, v in dataclasses.asdict(mask_defaults).items()})
    if agreement:  # measured: masks of backend/precision against onnxruntime fp32's, AP@0.5
        extra["agreement"] = json.dumps({k: round(float(v), 4) for k, v in sorted(agreement.items())})
    return {
        "nucseg_rt.format": FORMAT_VERSION,
        "diam_mean": repr(float(m.diam_mean)),
        "diam_labels": repr(float(m.diam_labels)),
        "nchan": str(m.nbase[0]),
        "nclasses": str(m.nout),
        "nbase": json.dumps(m.nbase),
        "source_file": m.source.name,
        "source_sha256": m.sha256,
        "exporter": f"nucseg-rt {__version__}",
        "torch_version": torch.__version__,
        "onnx_version": onnx.__version__,
        "onnx_opset": str(opset),
        "role": role,
        "ortho_file": ortho_name,
        "ortho_sha256": ortho_sha,
        **extra,
    }


def _verify(net: nn.Module, model_bytes: bytes, nchan: int, atol: float, rtol: float = RTOL) -> float:
    """Largest |onnxruntime - torch| over ``VERIFY_SHAPES``; raises where it exceeds
    ``atol + rtol * max|torch|`` on that input. float32 rounding grows with the size of the
    terms summed, i.e. with the output's scale, not with each value (large terms cancel to small
    outputs), and a network fed signal in a channel it never saw gives logits above 100."""
    import onnxruntime as ort

    sess = ort.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    worst = 0.0
    for k, (b, h, w) in enumerate(VERIFY_SHAPES):
        # normalised-image range the runtime feeds (0..1); extra channels zero (nuclei models)
        # except on the last shape, where every channel carries signal
        x = rng.random((b, nchan, h, w), dtype=np.float32)
        if k < len(VERIFY_SHAPES) - 1:
            x[:, 1:] = 0
        flows, cellprob = sess.run(["flows", "cellprob"], {"input": x})
        with torch.no_grad():
            y, _ = net(torch.from_numpy(x))
        y = y.numpy()
        got = np.concatenate([flows, cellprob], axis=1)
        err = np.abs(got - y[:, :3])
        diff = float(err.max())
        worst = max(worst, diff)
        scale = float(np.abs(y[:, :3]).max())
        if diff > atol + rtol * scale:
            raise ExportVerificationError(
                f"onnxruntime differs from torch by {diff:.3g} (> atol {atol:g} + rtol {rtol:g} x "
                f"the largest output {scale:.4g}) on input {(b, nchan, h, w)}")
    return worst


def _write_atomic(model: onnx.ModelProto, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(out) as fh:
        fh.write(model.SerializeToString())


def _export_one(m: LoadedModel, out: Path, *, role: str, opset: int, atol: float,
                ortho_name: str = "", ortho_sha: str = "", min_anisotropy: float | None = None,
                mask_defaults=None, agreement: dict[str, float] | None = None) -> float:
    raw = _to_onnx_bytes(m.net, m.nbase[0], opset)
    diff = _verify(m.net, raw, m.nbase[0], atol)
    model = onnx.load_from_string(raw)
    onnx.checker.check_model(model)
    meta = _metadata(m, role=role, opset=opset, ortho_name=ortho_name, ortho_sha=ortho_sha,
                     min_anisotropy=min_anisotropy, mask_defaults=mask_defaults, agreement=agreement)
    del model.metadata_props[:]
    for k, v in meta.items():
        model.metadata_props.add(key=k, value=v)
    model.doc_string = f"Cellpose 3 CPnet {m.nbase} exported by nucseg-rt from {m.source.name}"
    _write_atomic(model, out)
    return diff


def ortho_path_for(out: str | os.PathLike) -> Path:
    """Where the ortho partner of ``out`` is written: ``name.onnx`` -> ``name.ortho.onnx``."""
    out = Path(out)
    return out.with_name(out.stem + ".ortho.onnx")


def export_cellpose(src: str | os.PathLike, out: str | os.PathLike, *,
                    ortho: str | os.PathLike | None = None, opset: int = DEFAULT_OPSET,
                    atol: float = 1e-4, ortho_min_anisotropy: float | None = None,
                    mask_defaults=None, agreement: dict[str, float] | None = None) -> ExportReport:
    """Export a Cellpose 3 model file (and optional ortho model) to ONNX.

    Parameters
    ----------
    src : path-like
        Cellpose 3 model file for YX planes.
    out : path-like
        Output ``.onnx`` path. With ``ortho``, the ortho network is written beside it as
        ``<stem>.ortho.onnx`` and named in the main file's metadata (``ortho_file``, ``ortho_sha256``).
    ortho : path-like, optional
        Cellpose 3 model file used for ZY and ZX planes.
    opset : int
        ONNX opset (>= 17).
    atol : float
        Allowed difference between onnxruntime and torch outputs, plus ``RTOL`` (1e-5) times
        the largest output.
    ortho_min_anisotropy : float, optional
        Stored in the ortho file's metadata (``min_anisotropy``): the runtime uses the ortho
        network only for stacks at least this anisotropic, the main network below (an ortho model
        trained on coarse-Z planes). Default: the ortho network always (as Cellpose).
    mask_defaults : nucseg_rt.params.MaskDefaults, optional
        The model's calibrated mask defaults (threshold, size-filter share, side-view weight),
        stored in the main file's metadata. Default: none stored, the runtime runs the model as
        Cellpose does (threshold 0, views summed).
    agreement : dict, optional
        ``{"backend/precision": AP@0.5}``: how well each run's masks agree with onnxruntime fp32's
        on held-out volumes (``benchmarks/agreement.py``), stored as the metadata ``agreement``;
        ``backend="auto"`` runs a faster one only where this is >= 0.99
        (``nucseg_rt.network.engine.resolve_backend``). Default: none, auto keeps fp32.

    Returns
    -------
    ExportReport
        Paths written and the largest difference measured.
    """
    if opset < 17:
        raise ValueError(f"`opset` must be >= 17, got {opset}")
    if atol <= 0:
        raise ValueError(f"`atol` must be > 0, got {atol}")
    if ortho_min_anisotropy is not None and (ortho is None or not ortho_min_anisotropy >= 1):
        raise ValueError("`ortho_min_anisotropy` needs `ortho` and must be >= 1, "
                         f"got {ortho_min_anisotropy}")
    for key, ap in (agreement or {}).items():
        backend, _, precision = key.partition("/")
        if not backend or not precision or not 0 <= float(ap) <= 1:
            raise ValueError(f"`agreement` maps 'backend/precision' to an AP@0.5 in [0, 1], got {key!r}: {ap!r}")
    out = Path(out)
    main = load_cellpose_model(src)
    ortho_out, ortho_name, ortho_sha, worst = None, "", "", 0.0
    if ortho is not None:
        om = load_cellpose_model(ortho)
        if om.nbase[0] != main.nbase[0]:
            raise ModelFormatError(
                f"ortho model takes {om.nbase[0]} channels but the main model takes {main.nbase[0]}")
        ortho_out = ortho_path_for(out)
        worst = _export_one(om, ortho_out, role="ortho", opset=opset, atol=atol,
                            min_anisotropy=ortho_min_anisotropy)
        ortho_name, ortho_sha = ortho_out.name, file_sha256(ortho_out)
    worst = max(worst, _export_one(main, out, role="main", opset=opset, atol=atol,
                                   ortho_name=ortho_name, ortho_sha=ortho_sha,
                                   mask_defaults=mask_defaults, agreement=agreement))
    logger.info("exported %s -> %s (max |onnxruntime - torch| = %.2e)", main.source.name, out, worst)
    return ExportReport(path=out, ortho_path=ortho_out, max_abs_diff=worst)
