"""The small ONNX reader agrees with the ``onnx`` package on the fields a model check reads."""

import numpy as np
import onnx
import pytest

from helpers import MODELS, make_tiny_onnx
from nucseg_rt.models._onnxproto import ProtoError, read_summary


def _expected(path):
    proto = onnx.load(str(path), load_external_data=False)

    def info(v):
        t = v.type.tensor_type
        return (v.name, t.elem_type,
                tuple(d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim))

    return dict(ir_version=proto.ir_version, n_nodes=len(proto.graph.node),
                inputs=[info(v) for v in proto.graph.input],
                outputs=[info(v) for v in proto.graph.output],
                initializers={i.name for i in proto.graph.initializer},
                metadata={p.key: p.value for p in proto.metadata_props})


@pytest.mark.parametrize("name", ["nuclei_3d.onnx", "nuclei_3d.int8.onnx", "tiny"])
def test_reader_equals_onnx(name, tmp_path):
    path = make_tiny_onnx(tmp_path / "tiny.onnx") if name == "tiny" else MODELS / name
    if not path.exists():
        pytest.skip(f"{name} not bundled")
    got, want = read_summary(path.read_bytes()), _expected(path)
    assert got.ir_version == want["ir_version"] > 0
    assert got.n_nodes == want["n_nodes"] > 0
    assert [(t.name, t.elem_type, t.dims) for t in got.inputs] == want["inputs"]
    assert [(t.name, t.elem_type, t.dims) for t in got.outputs] == want["outputs"]
    assert got.initializers == want["initializers"]
    assert got.metadata == want["metadata"] and "diam_mean" in got.metadata


def test_symbolic_dims_and_external_data_are_read(tmp_path):
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.ones((2, 2), np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["flows"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["B", 2])],
        [helper.make_tensor_value_info("flows", TensorProto.FLOAT, ["B", 2])], [weight])
    model = helper.make_model(graph)
    helper.set_model_props(model, {"diam_mean": "17", "ünicode": "ß"})
    path = tmp_path / "ext.onnx"
    onnx.save(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
              location="ext.bin", size_threshold=0)
    got = read_summary(path.read_bytes())
    assert got.inputs[0].dims == (None, 2) and got.initializers == {"w"}
    assert got.metadata == {"diam_mean": "17", "ünicode": "ß"}


@pytest.mark.parametrize("data", [b"\x0a\xff\xff\xff\xff\x0f", b"\x08", b"\x0b", b"\x00\x01",
                                  b"\x0a\x05ab"])
def test_malformed_bytes_are_refused(data):
    with pytest.raises(ProtoError):
        read_summary(data)


def test_truncated_model_is_refused():
    data = (MODELS / "nuclei_3d.onnx").read_bytes()
    with pytest.raises(ProtoError):
        read_summary(data[: len(data) // 2])
