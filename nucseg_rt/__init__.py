"""nucseg-rt: Cellpose-3-compatible 3D nuclei segmentation on ONNX Runtime, without PyTorch.

Importing this package is cheap and side-effect free; heavy modules load on first use.

>>> from nucseg_rt import Segmenter                       # doctest: +SKIP
>>> res = Segmenter("nuclei_3d").segment(vol, anisotropy=4.0, diameter=30.0)  # doctest: +SKIP
"""

__version__ = "0.1.0"
__all__ = ["Segmenter", "SegmentationResult", "__version__"]


def __getattr__(name):
    if name in ("Segmenter", "SegmentationResult"):
        from nucseg_rt import segment

        return getattr(segment, name)
    raise AttributeError(f"module 'nucseg_rt' has no attribute {name!r}")
