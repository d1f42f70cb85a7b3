"""The tiny test model (no torch), shared by conftest.py fixtures and the tests that build their own.

The tiny model is built with the ``onnx`` helper API (no torch): one 9x9 convolution whose
first two outputs are the Y/X derivatives of a Gaussian-smoothed image (so flows point
towards the centres of bright blobs) and whose third is the image itself, scaled and shifted
(cell probability > 0 where the normalised intensity is above 0.5). It has the exporter's
interface: input ``input`` (B, nchan, H, W), outputs ``flows`` (B, 2, H, W), ``cellprob``
(B, 1, H, W), ``style`` (B, 3), and its ``metadata_props``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def make_tiny_onnx(path: Path, *, nchan: int = 2, diam_mean: float = 30.0, role: str = "main",
                   ortho_file: str = "", ortho_sha256: str = "", flow_gain: float = 40.0,
                   metadata: dict | None = None) -> Path:
    """Write a tiny segmentation model to ``path``; ``metadata`` entries override the defaults."""
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
             "source_file": "tests/_tinyonnx.py", "source_sha256": "", "exporter": "tests",
             "torch_version": "", "onnx_opset": "17", "role": role, "ortho_file": ortho_file,
             "ortho_sha256": ortho_sha256, **(metadata or {})}
    helper.set_model_props(model, props)
    onnx.checker.check_model(model)
    path = Path(path)
    onnx.save(model, str(path))
    return path
