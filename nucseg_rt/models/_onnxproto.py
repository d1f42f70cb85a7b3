"""Read the few fields of an ONNX file that a model check needs, without the ``onnx`` package.

Importing ``onnx`` costs about 0.65 s on our machines (most of it in ``ml_dtypes``), on every
``nucseg-rt segment`` start. A model check needs only the IR version, whether the graph has
nodes, the graph's inputs (name, element type, dims) and outputs, the initializer names and
``metadata_props``, all of which sit at known field numbers of ONNX's protobuf messages
(onnx/onnx.proto3): this module walks the protobuf wire format for those and skips the rest
(weights are skipped by length, never copied). ``onnx`` stays the tool of the model writers
(quantize, export), which need the whole message.

Field numbers used (from onnx.proto3):

- ModelProto: ir_version 1, graph 7, metadata_props 14 (StringStringEntryProto: key 1, value 2)
- GraphProto: node 1, initializer 5 (TensorProto: name 8), input 11, output 12
- ValueInfoProto: name 1, type 2; TypeProto: tensor_type 1; TypeProto.Tensor: elem_type 1,
  shape 2; TensorShapeProto: dim 1; Dimension: dim_value 1, dim_param 2
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["OnnxSummary", "TensorInfo", "ProtoError", "read_summary"]

_VARINT, _FIXED64, _BYTES, _FIXED32 = 0, 1, 2, 5


class ProtoError(ValueError):
    """The bytes are not a well-formed protobuf message."""


@dataclass(frozen=True)
class TensorInfo:
    """A graph input or output: its name, element type (1 = float32) and dims (None if symbolic)."""

    name: str
    elem_type: int = 0
    dims: tuple[int | None, ...] = ()


@dataclass(frozen=True)
class OnnxSummary:
    """What a model check reads from an ONNX file."""

    ir_version: int = 0
    n_nodes: int = 0
    inputs: tuple[TensorInfo, ...] = ()
    outputs: tuple[TensorInfo, ...] = ()
    initializers: frozenset[str] = field(default_factory=frozenset)
    metadata: dict[str, str] = field(default_factory=dict)


def _varint(buf: memoryview, pos: int, end: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= end or shift > 63:
            raise ProtoError("truncated or overlong varint")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7


def _fields(buf: memoryview, start: int, end: int):
    """Yield (field number, wire type, value) of one message: an int for varints, the
    (start, end) span for length-delimited fields, None for fixed-width ones."""
    pos = start
    while pos < end:
        key, pos = _varint(buf, pos, end)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise ProtoError("field number 0")
        if wire == _VARINT:
            value, pos = _varint(buf, pos, end)
            yield number, wire, value
        elif wire == _BYTES:
            length, pos = _varint(buf, pos, end)
            if pos + length > end:
                raise ProtoError("length-delimited field runs past the end of its message")
            yield number, wire, (pos, pos + length)
            pos += length
        elif wire in (_FIXED64, _FIXED32):
            pos += 8 if wire == _FIXED64 else 4
            if pos > end:
                raise ProtoError("fixed-width field runs past the end of its message")
            yield number, wire, None
        else:  # groups (3, 4) are not used by ONNX; 6 and 7 do not exist
            raise ProtoError(f"unsupported wire type {wire}")


def _text(buf: memoryview, span: tuple[int, int]) -> str:
    try:
        return bytes(buf[span[0]:span[1]]).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ProtoError("a string field is not UTF-8") from exc


def _tensor_info(buf: memoryview, span: tuple[int, int]) -> TensorInfo:
    name, elem_type, dims = "", 0, []
    for number, wire, value in _fields(buf, *span):
        if number == 1 and wire == _BYTES:
            name = _text(buf, value)
        elif number == 2 and wire == _BYTES:  # TypeProto
            for n2, w2, v2 in _fields(buf, *value):
                if n2 != 1 or w2 != _BYTES:  # tensor_type only
                    continue
                for n3, w3, v3 in _fields(buf, *v2):
                    if n3 == 1 and w3 == _VARINT:
                        elem_type = v3
                    elif n3 == 2 and w3 == _BYTES:  # TensorShapeProto
                        for n4, w4, v4 in _fields(buf, *v3):
                            if n4 == 1 and w4 == _BYTES:  # Dimension
                                dim = None
                                for n5, w5, v5 in _fields(buf, *v4):
                                    if n5 == 1 and w5 == _VARINT:
                                        dim = v5
                                dims.append(dim)
    return TensorInfo(name, elem_type, tuple(dims))


def _graph(buf: memoryview, span: tuple[int, int]) -> dict:
    n_nodes, inputs, outputs, initializers = 0, [], [], set()
    for number, wire, value in _fields(buf, *span):
        if wire != _BYTES:
            continue
        if number == 1:
            n_nodes += 1
        elif number == 5:
            for n2, w2, v2 in _fields(buf, *value):
                if n2 == 8 and w2 == _BYTES:
                    initializers.add(_text(buf, v2))
        elif number == 11:
            inputs.append(_tensor_info(buf, value))
        elif number == 12:
            outputs.append(_tensor_info(buf, value))
    return dict(n_nodes=n_nodes, inputs=tuple(inputs), outputs=tuple(outputs),
                initializers=frozenset(initializers))


def read_summary(data: bytes) -> OnnxSummary:
    """The :class:`OnnxSummary` of the bytes of an ONNX file.

    Raises ProtoError if the bytes are not a well-formed protobuf message (a malformed message
    can still be well-formed protobuf: the caller checks the fields it needs).
    """
    buf = memoryview(data)
    ir_version, graph, metadata = 0, {}, {}
    for number, wire, value in _fields(buf, 0, len(buf)):
        if number == 1 and wire == _VARINT:
            ir_version = value
        elif number == 7 and wire == _BYTES:
            graph = _graph(buf, value)
        elif number == 14 and wire == _BYTES:
            key = val = ""
            for n2, w2, v2 in _fields(buf, *value):
                if n2 == 1 and w2 == _BYTES:
                    key = _text(buf, v2)
                elif n2 == 2 and w2 == _BYTES:
                    val = _text(buf, v2)
            metadata[key] = val
    return OnnxSummary(ir_version=ir_version, metadata=metadata, **graph)
