"""
Networks as the Edge TPU timing model sees them: a list of layers, from a TFLite graph or built.

One representation serves two sources: the package's own int8 segments (read from the
``.tflite`` file with LiteRT's interpreter, no TensorFlow) and the standard architectures of
Coral's benchmark table (written layer by layer with :class:`LayerBuilder`, since their int8
graphs are not available here). The timing model (``timing``) needs, per layer, what kind of
work it is (a matrix op on the systolic array, a depthwise op, a vector op, free, or host
work), the shapes, the kernel and the weight bytes; that is all a layer holds.

A graph with an op this module does not know, or a file LiteRT cannot open, raises
:class:`UnreadableModel` naming the op or the problem: an op the model does not cost would
otherwise count as zero time.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from math import prod
from pathlib import Path
from typing import Optional, Sequence

Shape = tuple[int, int, int]  # (height, width, channels) of one image, batch of one

# What each TFLite op is for the timing model. 'matrix' ops run on the systolic array,
# 'depthwise' on its lanes without the channel reduction, 'vector' ops touch each output
# element once (pooling: each window element), 'free' ops only relabel a buffer, 'host' ops
# run on the host CPU (the compiler leaves them out of the Edge TPU subgraph).
OP_KINDS = {
    'CONV_2D': 'matrix', 'FULLY_CONNECTED': 'matrix', 'TRANSPOSE_CONV': 'matrix',
    'DEPTHWISE_CONV_2D': 'depthwise',
    'ADD': 'vector', 'SUB': 'vector', 'MUL': 'vector', 'MAXIMUM': 'vector',
    'MINIMUM': 'vector', 'RELU': 'vector', 'RELU6': 'vector', 'LOGISTIC': 'vector',
    'TANH': 'vector', 'HARD_SWISH': 'vector', 'PAD': 'vector', 'CONCATENATION': 'vector',
    'MAX_POOL_2D': 'vector', 'AVERAGE_POOL_2D': 'vector', 'MEAN': 'vector',
    'SOFTMAX': 'vector', 'RESIZE_BILINEAR': 'vector', 'RESIZE_NEAREST_NEIGHBOR': 'vector',
    'QUANTIZE': 'vector', 'DEQUANTIZE': 'vector', 'SUM': 'vector',
    'RESHAPE': 'free', 'SQUEEZE': 'free', 'EXPAND_DIMS': 'free',
    'TFLite_Detection_PostProcess': 'host',
}
KINDS = ('matrix', 'depthwise', 'vector', 'free', 'host')


class UnreadableModel(ValueError):
    """A model the timing model cannot cost: unknown op, unreadable file, odd tensor."""


@dataclass(frozen=True)
class Layer:
    """
    One op of a network, reduced to what its Edge TPU time depends on.

    ``kernel`` is (kh, kw) for convolutions and pooling windows, (1, 1) otherwise;
    ``in_channels`` is the reduction depth per kernel position for matrix ops.
    ``elements`` is the work of a vector or host op in output elements (pooling: times the
    window). ``weight_bytes`` are int8 weights plus int32 biases, as stored in the file.
    """

    op: str
    kind: str
    out_shape: Shape
    in_channels: int = 0
    kernel: tuple[int, int] = (1, 1)
    weight_bytes: int = 0
    elements: int = 0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise UnreadableModel(f'layer {self.op}: unknown kind {self.kind!r}')
        if any(d < 1 for d in self.out_shape):
            raise UnreadableModel(f'layer {self.op}: empty output shape {self.out_shape}')

    @property
    def out_pixels(self) -> int:
        return self.out_shape[0] * self.out_shape[1]

    @property
    def macs(self) -> int:
        """Multiply-accumulates: matrix ops reduce over channels and kernel positions."""
        taps = self.kernel[0] * self.kernel[1]
        if self.kind == 'matrix':
            return self.out_pixels * self.out_shape[2] * self.in_channels * taps
        if self.kind == 'depthwise':
            return self.out_pixels * self.out_shape[2] * taps
        return 0


@dataclass(frozen=True)
class Network:
    """A whole model: its layers in execution order and the bytes crossing the host link."""

    name: str
    layers: tuple[Layer, ...]
    input_bytes: int
    output_bytes: int

    @property
    def macs(self) -> int:
        return sum(layer.macs for layer in self.layers)

    @property
    def weight_bytes(self) -> int:
        return sum(layer.weight_bytes for layer in self.layers)

    @property
    def io_bytes(self) -> int:
        return self.input_bytes + self.output_bytes


def _hwc(shape: Sequence[int], what: str) -> Shape:
    """Read a TFLite activation shape ([1, h, w, c], [1, n] or [n]) as (h, w, c)."""
    dims = [int(d) for d in shape]
    if len(dims) == 4 and dims[0] == 1:
        return dims[1], dims[2], dims[3]
    if len(dims) in (2, 3) and dims[0] == 1:
        return 1, 1, prod(dims[1:])
    if len(dims) == 1:
        return 1, 1, dims[0]
    raise UnreadableModel(f'{what}: cannot read tensor shape {dims} as one image '
                          '(batch of one expected)')


def _layer_from_op(op: dict, tensors: dict[int, dict], where: str) -> Layer:
    name = op['op_name']
    kind = OP_KINDS.get(name)
    if kind is None:
        raise UnreadableModel(f'{where}: op {name} is not in the Edge TPU timing model '
                              f'(known: {", ".join(sorted(OP_KINDS))})')
    inputs = [tensors[i] for i in op['inputs'] if i >= 0]
    outputs = [tensors[i] for i in op['outputs'] if i >= 0]
    if not outputs:
        raise UnreadableModel(f'{where}: op {name} has no output tensor')
    out = _hwc(outputs[0]['shape'], f'{where} {name} output')
    if kind == 'host':
        return Layer(name, kind, out, elements=sum(prod(int(d) for d in t['shape'])
                                                   for t in outputs))
    if kind in ('matrix', 'depthwise'):
        if len(inputs) < 2:
            raise UnreadableModel(f'{where}: op {name} has no weight tensor')
        weights = inputs[1]['shape']
        weight_bytes = sum(int(t['dtype'](0).itemsize) * prod(int(d) for d in t['shape'])
                           for t in inputs[1:])
        if name == 'FULLY_CONNECTED':
            return Layer(name, kind, out, int(weights[-1]), (1, 1), weight_bytes)
        if len(weights) != 4:
            raise UnreadableModel(f'{where}: op {name} has weights of shape '
                                  f'{list(weights)}, 4-D expected')
        in_channels = int(weights[3]) if kind == 'matrix' else 1
        return Layer(name, kind, out, in_channels, (int(weights[1]), int(weights[2])),
                     weight_bytes)
    if kind == 'free':
        return Layer(name, kind, out)
    elements = prod(out)
    if name in ('MAX_POOL_2D', 'AVERAGE_POOL_2D', 'MEAN', 'SUM'):
        source = _hwc(inputs[0]['shape'], f'{where} {name} input')
        elements = max(elements, prod(source))  # every input element is read once
    return Layer(name, kind, out, elements=elements)


@lru_cache(maxsize=256)
def read_tflite(path: Path) -> Network:
    """
    Read an int8 TFLite graph into layers with LiteRT's interpreter (ops and tensor shapes).

    Raises UnreadableModel naming the file and the problem (missing, corrupt, unknown op).
    """
    from ai_edge_litert.interpreter import Interpreter  # LiteRT: the runtime's only engine

    path = Path(path)
    if not path.is_file():
        raise UnreadableModel(f'{path}: no such model file')
    try:
        interpreter = Interpreter(model_path=str(path))
        ops = interpreter._get_ops_details()
        tensors = {t['index']: t for t in interpreter.get_tensor_details()}
        inputs = interpreter.get_input_details()
        outputs = interpreter.get_output_details()
    except (RuntimeError, ValueError) as err:
        raise UnreadableModel(f'{path}: LiteRT cannot read it ({err})') from err
    if not ops:
        raise UnreadableModel(f'{path}: the graph has no ops')
    layers = tuple(_layer_from_op(op, tensors, f'{path.name} op #{op["index"]}') for op in ops)

    def size(details: list[dict]) -> int:
        return sum(int(d['dtype'](0).itemsize) * prod(int(x) for x in d['shape'])
                   for d in details)

    return Network(path.stem, layers, size(inputs), size(outputs))


class LayerBuilder:
    """
    Write an architecture layer by layer; the builder tracks the current activation shape.

    Weights are int8 with int32 biases (what full-int8 quantisation stores). Branches (for
    Inception-style blocks) start from a saved shape and are joined by :meth:`concat`.
    """

    def __init__(self, height: int, width: int, channels: int = 3):
        self.shape: Shape = (height, width, channels)
        self.layers: list[Layer] = []

    @staticmethod
    def _out(size: int, stride: int) -> int:
        return -(-size // stride)  # 'same' padding; 'valid' shapes are passed explicitly

    def conv(self, channels: int, kernel: int | tuple[int, int] = 1, stride: int = 1,
             valid: bool = False) -> 'LayerBuilder':
        kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
        h, w, c = self.shape
        if valid:
            h, w = (h - kh) // stride + 1, (w - kw) // stride + 1
        else:
            h, w = self._out(h, stride), self._out(w, stride)
        self.shape = (h, w, channels)
        self.layers.append(Layer('CONV_2D', 'matrix', self.shape, c, (kh, kw),
                                 kh * kw * c * channels + 4 * channels))
        return self

    def depthwise(self, kernel: int = 3, stride: int = 1) -> 'LayerBuilder':
        h, w, c = self.shape
        self.shape = (self._out(h, stride), self._out(w, stride), c)
        self.layers.append(Layer('DEPTHWISE_CONV_2D', 'depthwise', self.shape, 1,
                                 (kernel, kernel), kernel * kernel * c + 4 * c))
        return self

    def fc(self, units: int) -> 'LayerBuilder':
        c = prod(self.shape)
        self.shape = (1, 1, units)
        self.layers.append(Layer('FULLY_CONNECTED', 'matrix', self.shape, c, (1, 1),
                                 c * units + 4 * units))
        return self

    def pool(self, kernel: int, stride: int, op: str = 'MAX_POOL_2D',
             valid: bool = False) -> 'LayerBuilder':
        h, w, c = self.shape
        if valid:
            h, w = (h - kernel) // stride + 1, (w - kernel) // stride + 1
        else:
            h, w = self._out(h, stride), self._out(w, stride)
        self.shape = (h, w, c)
        self.layers.append(Layer(op, 'vector', self.shape, elements=h * w * c * kernel ** 2))
        return self

    def mean(self) -> 'LayerBuilder':
        elements = prod(self.shape)
        self.shape = (1, 1, self.shape[2])
        self.layers.append(Layer('MEAN', 'vector', self.shape, elements=elements))
        return self

    def vector(self, op: str = 'ADD') -> 'LayerBuilder':
        """Add an element-wise op on the current shape (a residual ADD, an activation)."""
        self.layers.append(Layer(op, 'vector', self.shape, elements=prod(self.shape)))
        return self

    def concat(self, branches: Sequence[Shape]) -> 'LayerBuilder':
        """Join branch outputs along channels (they share height and width)."""
        h, w = branches[0][:2]
        self.shape = (h, w, sum(b[2] for b in branches))
        self.layers.append(Layer('CONCATENATION', 'vector', self.shape,
                                 elements=prod(self.shape)))
        return self

    def host(self, op: str, elements: int) -> 'LayerBuilder':
        self.layers.append(Layer(op, 'host', self.shape, elements=elements))
        return self

    def network(self, name: str, input_bytes: int,
                output_bytes: Optional[int] = None) -> Network:
        out = prod(self.shape) if output_bytes is None else output_bytes
        return Network(name, tuple(self.layers), input_bytes, out)
