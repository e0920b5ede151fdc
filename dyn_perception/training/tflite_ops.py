"""
What is inside a .tflite file: operators (code, version, tensors, options), parameter bytes.

Read straight from the flatbuffer with LiteRT's schema, so no interpreter (and no delegate
rewriting the graph) stands between the file and the check.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping, Optional

import numpy as np

# Tensor types whose constant contents the checks read (axes, paddings, strides, weights);
# other constants keep their raw bytes.
_DTYPES = {'FLOAT32': np.float32, 'FLOAT16': np.float16, 'FLOAT64': np.float64,
           'INT8': np.int8, 'UINT8': np.uint8, 'INT16': np.int16, 'UINT16': np.uint16,
           'INT32': np.int32, 'UINT32': np.uint32, 'INT64': np.int64, 'UINT64': np.uint64,
           'BOOL': np.bool_}


@lru_cache(maxsize=1)
def _schema() -> tuple:
    from ai_edge_litert import schema_py_generated as schema

    def names(enum) -> dict[int, str]:
        return {v: k for k, v in vars(enum).items() if not k.startswith('_')}

    # Option fields stored as enum codes, given by name so rules need not know the codes.
    enum_fields = {'fusedActivationFunction': names(schema.ActivationFunctionType),
                   'weightsFormat': names(schema.FullyConnectedOptionsWeightsFormat)}
    return names(schema.BuiltinOperator), names(schema.TensorType), enum_fields


@dataclass(frozen=True)
class OpInfo:
    """One operator of a TFLite graph, with the types of the tensors it reads and writes."""

    name: str
    version: int
    input_types: tuple[str, ...]
    output_types: tuple[str, ...]

    @property
    def is_integer_only(self) -> bool:
        """Tell whether no tensor the op touches is floating point (int32 biases are fine)."""
        return not any(t.startswith('FLOAT') for t in self.input_types + self.output_types)


@dataclass(frozen=True, eq=False)
class TensorInfo:
    """
    A tensor as the file declares it: what an accelerator compiler judges it by.

    ``shape_signature`` holds -1 for a dimension only known at run time. ``data`` is the
    contents of a constant (weights, axes, paddings), None for an activation.
    ``zero_points`` are the quantisation zero points (one per channel for per-axis
    quantisation, empty for an unquantised tensor): the stored value that means 0.0.
    """

    name: str
    type_name: str
    shape: tuple[int, ...]
    shape_signature: tuple[int, ...]
    data: Optional[np.ndarray]
    zero_points: tuple[int, ...] = ()

    @property
    def is_constant(self) -> bool:
        """Tell whether the value is in the file (known at compile time)."""
        return self.data is not None

    @property
    def is_dynamic(self) -> bool:
        """Tell whether a dimension is only known at run time."""
        return any(d < 0 for d in self.shape_signature)


@dataclass(frozen=True, eq=False)
class OpDetail:
    """
    One operator with its tensors and builtin options, for checks beyond the op's name.

    ``inputs`` keeps the schema's positions, with None where an optional input is left out
    (a FULLY_CONNECTED without bias), because rules address inputs by position. ``options``
    maps the builtin options' field names (``fusedActivationFunction``, ``dilationWFactor``,
    ...) to their values, enum codes given by name (``'RELU'``).
    """

    name: str
    version: int
    subgraph: int
    inputs: tuple[Optional[TensorInfo], ...]
    outputs: tuple[TensorInfo, ...]
    options: Mapping[str, Any]

    @property
    def info(self) -> OpInfo:
        """Return the short form: name, version and tensor types."""
        return OpInfo(self.name, self.version,
                      tuple(t.type_name for t in self.inputs if t is not None),
                      tuple(t.type_name for t in self.outputs))


def _read(path: Path):
    from ai_edge_litert.tools import flatbuffer_utils
    return flatbuffer_utils.read_model(str(path))


def _tensor(model, tensor, type_names: dict[int, str]) -> TensorInfo:
    type_name = type_names[tensor.type]
    shape = tuple(int(d) for d in (tensor.shape if tensor.shape is not None else ()))
    signature = (tuple(int(d) for d in tensor.shapeSignature)
                 if tensor.shapeSignature is not None else shape)
    # Buffer 0 is the schema's empty sentinel; data stored past the 2 GB flatbuffer limit
    # (buffer offsets) is not loaded here, which no segment comes near.
    raw = model.buffers[tensor.buffer].data
    data = None
    if raw is not None and len(raw):
        raw = np.asarray(raw, dtype=np.uint8)
        dtype = _DTYPES.get(type_name)
        data = raw if dtype is None else np.frombuffer(raw.tobytes(), dtype).reshape(shape)
    quantization = tensor.quantization
    zero_points = (tuple(int(z) for z in quantization.zeroPoint)
                   if quantization is not None and quantization.zeroPoint is not None else ())
    name = tensor.name.decode() if isinstance(tensor.name, bytes) else str(tensor.name)
    return TensorInfo(name, type_name, shape, signature, data, zero_points)


def _options(op, enum_fields: dict[str, dict[int, str]]) -> Mapping[str, Any]:
    fields = vars(op.builtinOptions) if op.builtinOptions is not None else {}
    return MappingProxyType({k: enum_fields[k].get(v, v) if k in enum_fields else v
                             for k, v in fields.items()})


def list_op_details(path: str | Path) -> list[OpDetail]:
    """Return every operator of every subgraph in graph (execution) order, tensors included."""
    op_names, type_names, enum_fields = _schema()
    model = _read(Path(path))
    ops = []
    for index, subgraph in enumerate(model.subgraphs):
        tensors = [_tensor(model, t, type_names) for t in subgraph.tensors]
        for op in subgraph.operators:
            code = model.operatorCodes[op.opcodeIndex]
            builtin = max(code.builtinCode, code.deprecatedBuiltinCode)
            name = op_names.get(builtin, f'BUILTIN_{builtin}')
            if name == 'CUSTOM' and code.customCode:
                name = code.customCode.decode() if isinstance(code.customCode, bytes) \
                    else str(code.customCode)
            inputs = tuple(tensors[i] if i >= 0 else None
                           for i in (op.inputs if op.inputs is not None else []))
            outputs = tuple(tensors[i] for i in (op.outputs if op.outputs is not None else [])
                            if i >= 0)
            ops.append(OpDetail(name, int(code.version), index, inputs, outputs,
                                _options(op, enum_fields)))
    return ops


def list_ops(path: str | Path) -> list[OpInfo]:
    """Return every operator of every subgraph, in graph order."""
    return [op.info for op in list_op_details(path)]


def parameter_bytes(path: str | Path) -> int:
    """Return the bytes of constant data (weights, biases): what a TPU must cache or stream."""
    model = _read(Path(path))
    return int(sum(np.asarray(b.data).nbytes for b in model.buffers if b.data is not None))


def float_ops(path: str | Path) -> list[OpInfo]:
    """Return the ops that read or write a float tensor: a full-int8 segment has none."""
    return [op for op in list_ops(path) if not op.is_integer_only]
