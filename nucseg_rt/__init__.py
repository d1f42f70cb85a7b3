"""nucseg-rt: Cellpose-3-compatible 3D nuclei segmentation on ONNX Runtime, without PyTorch.

Importing this package is cheap and side-effect free; heavy modules load on first use.

>>> from nucseg_rt import Segmenter                       # doctest: +SKIP
>>> res = Segmenter("nuclei_3d").segment(vol, anisotropy=4.0, diameter=30.0)  # doctest: +SKIP
>>> from nucseg_rt import run_batch, RunSettings         # files in, per-file results out
>>> results = run_batch(["a.tif", "b.tif"], Segmenter("nuclei_3d"),  # doctest: +SKIP
...                     run=RunSettings(diameter="auto"))
"""

__version__ = "0.1.0"
__all__ = ["Segmenter", "SegmentationResult", "Flows", "RunInfo", "MaskParams", "InputSpec",
           "Normalization", "EngineOptions", "run_batch", "BatchRunner", "RunSettings", "FileResult",
           "__version__"]

_LAZY = {"Segmenter": "nucseg_rt.segment", "SegmentationResult": "nucseg_rt.results",
         "Flows": "nucseg_rt.results", "RunInfo": "nucseg_rt.results",
         "MaskParams": "nucseg_rt.params", "InputSpec": "nucseg_rt.params",
         "Normalization": "nucseg_rt.params", "EngineOptions": "nucseg_rt.network.engine",
         "run_batch": "nucseg_rt.batch", "BatchRunner": "nucseg_rt.batch",
         "RunSettings": "nucseg_rt.batch", "FileResult": "nucseg_rt.batch"}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'nucseg_rt' has no attribute {name!r}")
