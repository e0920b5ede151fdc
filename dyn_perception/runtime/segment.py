"""
Run one int8 segment with LiteRT, and the int8 <-> float conversions at its boundaries.

Consecutive segments are exported with identical quantisation at the cut, so raw int8
feature maps pass straight from one to the next; :func:`requantize` covers the case where
they do not (a segment re-exported alone, a pruned variant mixed with another).
"""

from __future__ import annotations

from dataclasses import dataclass
import math
from pathlib import Path
from typing import Any, Optional

from dyn_perception.runtime.artifacts import SegmentSpec, TensorSpec
import numpy as np


def make_interpreter(model_path: str | Path, num_threads: int = 1) -> Any:
    """Create a LiteRT interpreter; ``tflite_runtime`` (what Coral boards ship) as a fallback."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        try:
            from tflite_runtime.interpreter import Interpreter
        except ImportError:
            raise ImportError('no TFLite interpreter: pip install ai-edge-litert') from None
    interpreter = Interpreter(model_path=str(model_path), num_threads=num_threads)
    interpreter.allocate_tensors()
    return interpreter


def quantize(x: np.ndarray, spec: TensorSpec) -> np.ndarray:
    """Float to int8 with the tensor's scale and zero point (round half to even, saturate)."""
    q = np.rint(np.asarray(x, dtype=np.float32) / spec.scale) + spec.zero_point
    return np.clip(q, -128, 127).astype(np.int8)


def dequantize(q: np.ndarray, spec: TensorSpec) -> np.ndarray:
    return (np.asarray(q, dtype=np.float32) - spec.zero_point) * np.float32(spec.scale)


def requantize(q: np.ndarray, source: TensorSpec, target: TensorSpec) -> np.ndarray:
    """Pass an int8 tensor between segments, converting only when the quantisation differs."""
    # math, not NumPy: this runs once per segment per frame, NumPy's call costs ~10 us.
    same_scale = math.isclose(source.scale, target.scale, rel_tol=1e-6)
    if same_scale and source.zero_point == target.zero_point:
        return q
    return quantize(dequantize(q, source), target)


@dataclass
class SegmentOutput:
    """What one segment produced: the int8 feature map for the next one and exit logits."""

    features: Optional[np.ndarray]
    logits: Optional[np.ndarray]


class SegmentRunner:
    """A loaded segment: int8 feature map in, int8 features and float exit logits out."""

    def __init__(self, spec: SegmentSpec, model_path: str | Path, num_threads: int = 1,
                 interpreter: Any = None):
        """Load ``model_path`` with LiteRT, or wrap an ``interpreter`` made elsewhere (pycoral)."""
        self.spec = spec
        self.interpreter = interpreter or make_interpreter(model_path, num_threads)
        inputs = {d['name']: d['index'] for d in self.interpreter.get_input_details()}
        outputs = {d['name']: d['index'] for d in self.interpreter.get_output_details()}
        self._input = self._index(inputs, spec.input, model_path)
        self._features, self._logits = (
            None if tensor is None else self._index(outputs, tensor, model_path)
            for tensor in (spec.features, spec.logits))

    @staticmethod
    def _index(indices: dict, tensor: TensorSpec, model_path: str | Path) -> int:
        if tensor.name not in indices:
            raise ValueError(f'{model_path}: no tensor named {tensor.name!r} '
                             f'(has {sorted(indices)})')
        return indices[tensor.name]

    def invoke(self, x: np.ndarray) -> Optional[np.ndarray]:
        """Run one int8 frame; return the features for the next segment (None after the last)."""
        self.interpreter.set_tensor(self._input, x)
        self.interpreter.invoke()
        return None if self._features is None else self.interpreter.get_tensor(self._features)

    def __call__(self, x: np.ndarray) -> SegmentOutput:
        """Run one frame (a batch of one, int8, shaped like the input spec)."""
        features = self.invoke(x)
        logits = (None if self._logits is None else
                  dequantize(self.interpreter.get_tensor(self._logits), self.spec.logits))
        return SegmentOutput(features, logits)
