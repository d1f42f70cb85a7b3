"""The OpenVINO network engine: :class:`OpenVinoNet`, the same interface as
:class:`nucseg_rt.network.predict.OnnxNet` on the same ONNX files (CPU only).

OpenVINO is an optional dependency (``pip install 'nucseg-rt[openvino]'``); it is imported when a
net is made or the CPU is asked about, never on import of this module.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np

from nucseg_rt.errors import InvalidInputError, MissingDependencyError, ModelFormatError
from nucseg_rt.network.predict import NetBase

__all__ = ["OpenVinoNet", "openvino_core", "cpu_supports_bf16", "cpu_flags_bf16",
           "check_openvino_precision",
           "INSTALL_HINT", "OPENVINO_PROVIDERS"]

INSTALL_HINT = "pip install 'nucseg-rt[openvino]'"
#: what an OpenVINO net reports as its providers (the engine's device is then "cpu")
OPENVINO_PROVIDERS = ("OpenVINO CPU",)
#: INFERENCE_PRECISION_HINT per precision; int8 runs the QDQ file with the rest in f32
_HINTS = {"fp32": "f32", "bf16": "bf16", "int8": "f32"}
_core = None
_core_lock = threading.Lock()


def openvino_core():
    """The process's ``openvino.Core`` (made once); MissingDependencyError with the install hint
    when OpenVINO is not installed."""
    global _core
    with _core_lock:
        if _core is None:
            try:
                import openvino
            except ImportError:
                raise MissingDependencyError(
                    f"`backend` 'openvino' needs OpenVINO: {INSTALL_HINT} (or use `backend` "
                    "'onnxruntime')", param="backend") from None
            _core = openvino.Core()
        return _core


def cpu_supports_bf16() -> bool:
    """Whether OpenVINO reports native bf16 arithmetic on this CPU (``BF16`` in the CPU
    plugin's ``OPTIMIZATION_CAPABILITIES``: AVX-512 BF16 or AMX)."""
    return "BF16" in openvino_core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def cpu_flags_bf16(cpuinfo: str = "/proc/cpuinfo") -> bool | None:
    """Whether the kernel lists a native bf16 instruction set (``avx512_bf16`` or ``amx_bf16``
    in the CPU flags), without importing OpenVINO (0.2 s: ``auto`` asks on every run); None
    where there is no such file (not Linux)."""
    try:
        with open(cpuinfo, encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("flags"):
                    flags = line.split(":", 1)[-1].split()
                    return "avx512_bf16" in flags or "amx_bf16" in flags
    except OSError:
        return None
    return None


def check_openvino_precision(precision: str) -> None:
    """Refuse what the OpenVINO engine does not run here: fp16 (CUDA/onnxruntime only) and bf16
    on a CPU without native bf16."""
    if precision == "fp16":
        raise InvalidInputError("`precision` 'fp16' runs on CUDA with `backend` 'onnxruntime' "
                                "only; with `backend` 'openvino' use 'fp32', 'bf16' or 'int8'",
                                param=("precision", "backend"))
    if precision == "bf16" and not cpu_supports_bf16():
        raise InvalidInputError("`precision` 'bf16' needs a CPU with native bf16 (AVX-512 BF16 "
                                "or AMX; OpenVINO reports none here); use 'fp32' or 'int8'",
                                param=("precision", "backend"))


def _metadata(model) -> dict:
    """The ONNX file's ``metadata_props`` as OpenVINO read them (``rt_info["framework"]``):
    reading them with the ``onnx`` package would import it, 0.5 s of every run's start-up."""
    framework = model.get_rt_info()["framework"] if model.has_rt_info("framework") else {}
    return {str(k): (v.astype(str) if hasattr(v, "astype") else str(v))
            for k, v in framework.items()}


class OpenVinoNet(NetBase):
    """An OpenVINO compiled model (CPU) for one network file, with one infer request.

    Parameters
    ----------
    path : path-like
        The same ONNX file :class:`nucseg_rt.network.predict.OnnxNet` runs (fp32, or the int8
        QDQ variant, read as-is).
    precision : {"fp32", "bf16", "int8"}
        ``INFERENCE_PRECISION_HINT``: f32 for fp32 and int8 (the QDQ nodes run in int8, the
        rest in f32), bf16 for bf16 (the fp32 file with bf16 arithmetic; check the CPU with
        :func:`check_openvino_precision` first).
    threads : int, optional
        ``INFERENCE_NUM_THREADS`` (default: OpenVINO's choice).

    Notes
    -----
    Shapes: the model is compiled once with its dynamic input ``(?, nchan, ?, ?)`` (tiles come
    in several shapes); the CPU plugin keeps its own per-shape kernel cache, so no compiled model
    per shape is kept here. ``PERFORMANCE_HINT`` is LATENCY with one infer request: the
    engine's streams already give each thread its own net. :meth:`close` releases the request
    and the compiled model; calling a closed net raises ``ClosedError``.
    """

    providers = list(OPENVINO_PROVIDERS)

    def __init__(self, path: str | os.PathLike, precision: str = "fp32",
                 threads: int | None = None):
        from nucseg_rt.network.predict import net_info

        super().__init__()
        if precision not in _HINTS:
            raise InvalidInputError(f"`precision` {precision!r} does not run on `backend` "
                                    "'openvino' (fp32, bf16 or int8)", param=("precision", "backend"))
        core = openvino_core()
        self.path = Path(path)
        self.precision = precision
        config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": _HINTS[precision],
                  "NUM_STREAMS": "1"}
        if threads:
            config["INFERENCE_NUM_THREADS"] = int(threads)
        try:
            model = core.read_model(str(self.path))
            self._compiled = core.compile_model(model, "CPU", config)
        except Exception as exc:
            raise ModelFormatError(f"OpenVINO cannot load {self.path.name}: {exc}") from exc
        self.info = net_info(_metadata(model))
        del model
        self._request = self._compiled.create_infer_request()
        self._flows = self._compiled.output("flows")
        self._cellprob = self._compiled.output("cellprob")

    def _handle(self):
        return self._request

    def close(self) -> None:
        """Release the infer request and the compiled model (idempotent); ``info`` and ``path``
        stay readable."""
        self._request = None
        self._compiled = None
        self._forget()

    def _run(self, request, batch: np.ndarray) -> np.ndarray:
        out = request.infer({0: np.ascontiguousarray(batch, np.float32)})
        # the request's output tensors are reused by the next call: concatenate copies them
        return np.concatenate((out[self._flows], out[self._cellprob]), axis=1)
