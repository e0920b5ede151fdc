"""
Export an early-exit network as full-int8 TFLite segments, one file per pipeline stage.

Route (verified here, no TensorFlow): the float segment goes through ``litert_torch.convert``,
then ai-edge-quantizer's ``static_wi8_ai8`` recipe, calibrated with the float activations
that reach that segment. Segments take and give NHWC tensors so the graphs hold no TRANSPOSE,
and consecutive segments are calibrated on the same frames, so the int8 feature map one
writes has the quantisation the next one reads. Any op left touching a float tensor fails
the export with the list of offenders.
"""

from __future__ import annotations

from pathlib import Path
import tempfile
import warnings

from dyn_perception.runtime.artifacts import SegmentSpec, TensorSpec
from dyn_perception.runtime.segment import make_interpreter
from dyn_perception.training.models import EarlyExitNet, Segment
from dyn_perception.training.tflite_ops import float_ops, parameter_bytes
import numpy as np
import torch
from torch import nn


class ExportError(RuntimeError):
    """An exported model that is not what the Edge TPU pipeline needs (float ops, bad I/O)."""


class NHWCSegment(nn.Module):
    """A segment with NHWC input and output, returning (features, logits) as it has them."""

    def __init__(self, segment: Segment):
        super().__init__()
        self.segment = segment

    def forward(self, x: torch.Tensor):
        features, logits = self.segment(x.permute(0, 3, 1, 2))
        outputs = [features.permute(0, 2, 3, 1)] if self.segment.emits_features else []
        outputs += [logits] if logits is not None else []
        return tuple(outputs) if len(outputs) > 1 else outputs[0]


class NHWCWithoutExits(nn.Module):
    """The same network with its early exits removed: every body, then the final head."""

    def __init__(self, model: EarlyExitNet):
        super().__init__()
        self.bodies = nn.ModuleList(s.body for s in model.segments)
        self.head = model.segments[-1].head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 3, 1, 2)
        for body in self.bodies:
            x = body(x)
        return self.head(x)


def count_macs(module: nn.Module, example: torch.Tensor) -> int:
    """Multiply-accumulates of one forward pass (Torch-Pruning's counter)."""
    import torch_pruning as tp
    macs, _ = tp.utils.count_ops_and_params(module, example)
    return int(macs)


def convert_int8(module: nn.Module, calibration: np.ndarray, path: Path) -> None:
    """
    Convert ``module`` (NHWC float in) to a full-int8 .tflite at ``path``.

    ``calibration`` is N x H x W x C float32: the activations that reach the module.
    """
    from ai_edge_quantizer import quantizer, recipe
    import litert_torch
    litert_torch.config.show_progress = False
    module = module.eval()
    path.parent.mkdir(parents=True, exist_ok=True)
    # The converter and quantizer warn about their own internals on every call.
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter('ignore')
        float_path = Path(tmp) / 'float.tflite'
        with torch.no_grad():
            litert_torch.convert(module, (torch.from_numpy(calibration[:1]),)).export(
                str(float_path))
        signatures = make_interpreter(float_path).get_signature_list()
        (key, signature), = signatures.items()
        (input_name,) = signature['inputs']
        q = quantizer.Quantizer(str(float_path))
        q.load_quantization_recipe(recipe.static_wi8_ai8())
        qsv = q.calibrate({key: [{input_name: frame[None]} for frame in calibration]},
                          num_threads=1)
        q.quantize(qsv, enable_progress_report=False).export_model(str(path), overwrite=True)
    offenders = float_ops(path)
    if offenders:
        listed = ', '.join(f'{op.name} (v{op.version}: in {op.input_types}, '
                           f'out {op.output_types})' for op in offenders)
        raise ExportError(f'{path}: not full-int8; float ops remain: {listed}')


def _tensor(detail: dict) -> TensorSpec:
    scale, zero_point = detail['quantization']
    if detail['dtype'] != np.int8 or scale <= 0:
        raise ExportError(f'tensor {detail["name"]} is {detail["dtype"].__name__} with scale '
                          f'{scale}; every segment boundary must be int8')
    return TensorSpec(detail['name'], tuple(int(d) for d in detail['shape']), float(scale),
                      int(zero_point))


def describe(path: Path, relative: str, macs: int, has_features: bool = True,
             has_logits: bool = True) -> SegmentSpec:
    """
    Read the boundary tensors of an exported segment into its manifest entry.

    Outputs come in the order the module returns them (features, then logits); the
    signature's ``output_<i>`` names carry that order into the file.
    """
    interpreter = make_interpreter(path)
    (signature,) = interpreter._get_full_signature_list().values()
    by_index = {d['index']: d for d in interpreter.get_output_details()}
    outputs = [by_index[signature['outputs'][name]]
               for name in sorted(signature['outputs'], key=lambda n: int(n.rsplit('_', 1)[1]))]
    features = _tensor(outputs.pop(0)) if has_features else None
    logits = _tensor(outputs.pop(0)) if has_logits else None
    (input_detail,) = interpreter.get_input_details()
    return SegmentSpec(file=relative, input=_tensor(input_detail), features=features,
                       logits=logits, macs=macs, param_bytes=parameter_bytes(path))


def export_segments(model: EarlyExitNet, calibration: np.ndarray, directory: Path,
                    prefix: str = '') -> list[SegmentSpec]:
    """
    Write ``<prefix>segment<i>.tflite`` for every segment; return their manifest entries.

    ``calibration`` is the normalised float NHWC input of the network.
    """
    model = model.eval()
    specs = []
    x = calibration
    for i, segment in enumerate(model.segments):
        relative = f'{prefix}segment{i}.tflite'
        nchw = torch.from_numpy(x).permute(0, 3, 1, 2)
        macs = count_macs(segment, nchw[:1])
        convert_int8(NHWCSegment(segment), x, directory / relative)
        specs.append(describe(directory / relative, relative, macs, segment.emits_features,
                              segment.head is not None))
        with torch.no_grad():
            x = segment.body(nchw).permute(0, 2, 3, 1).contiguous().numpy()
    for spec, following in zip(specs, specs[1:]):
        if spec.features.shape != following.input.shape:
            raise ExportError(f'{spec.file} writes {spec.features.shape} but '
                              f'{following.file} reads {following.input.shape}')
    return specs


def export_without_exits(model: EarlyExitNet, calibration: np.ndarray, directory: Path,
                         relative: str) -> SegmentSpec:
    """Export the no-exit reference network as one int8 file, described like a final segment."""
    module = NHWCWithoutExits(model).eval()
    convert_int8(module, calibration, directory / relative)
    macs = count_macs(module, torch.from_numpy(calibration[:1]))
    return describe(directory / relative, relative, macs, has_features=False)


def calibration_frames(images: np.ndarray, mean: tuple, std: tuple, count: int = 256,
                       seed: int = 0) -> np.ndarray:
    """Draw a seeded sample of training frames, normalised, NHWC float32."""
    rng = np.random.default_rng(seed)
    pick = np.sort(rng.choice(len(images), size=min(count, len(images)), replace=False))
    x = images[pick].astype(np.float32) / 255.0
    return ((x - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)).astype(np.float32)
