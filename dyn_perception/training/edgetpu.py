"""
Edge TPU readiness of exported int8 segments: which ops map to the TPU, which fall back.

There is no Edge TPU compiler on the development machines, so the static check reads the
flatbuffer and applies what Coral documents: the supported-operations table with its known
limitations, the general model requirements (8-bit tensors, static shapes, only the three
innermost dimensions above 1), the op versions edgetpu_compiler 16 (the last release) is known
to refuse, and the compiler's partitioning rule. The rule: the compiler maps one contiguous
run of supported ops; ops before it that it cannot map stay on the CPU (a float-input QUANTIZE
at the start is the usual case), and once an op inside the graph falls back, everything after
it runs on the CPU too, even ops the TPU supports ("More than one subgraph is not supported"
in the compiler's log).

Op versions: an op version newer than the TFLite schema built into the compiler makes it refuse
the whole model ("Didn't find op for builtin opcode ... Model could not be parsed"). Limits
are recorded only where a public report shows edgetpu_compiler 16 refusing a version; every
other op is treated as supported at any version, which the report says (``version_unchecked``).

Where ``edgetpu_compiler`` is installed, ``compile_segments`` runs it (co-compiling the
segments that share a TPU) and ``compiled_readiness`` reads the mapping it logged into the same
report. Sources and what is not checked: docs/edgetpu.md.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
import re
import shlex
import shutil
import subprocess
from types import MappingProxyType
from typing import Callable, Mapping, Optional

from dyn_perception.training.tflite_ops import list_op_details, OpDetail, TensorInfo
import numpy as np

COMPILER = 'edgetpu_compiler'
MAPPED = 'Mapped to Edge TPU'
_MAPPED_UNCHECKED = f'{MAPPED} (no known compiler limit for this op version)'
# The compiler's status for a supported op that comes after the first CPU op.
AFTER_FALLBACK = 'More than one subgraph is not supported'
# The Edge TPU holds only 8-bit activations; int32 appears as constants (biases, axes, shapes).
_ACTIVATION_TYPES = frozenset({'INT8', 'UINT8'})
_CONSTANT_TYPES = _ACTIVATION_TYPES | {'INT32'}
# Coral's documented install on Debian/Ubuntu x86_64 (coral.ai/docs/edgetpu/compiler/).
_INSTALL = (
    'curl https://packages.cloud.google.com/apt/doc/apt-key.gpg | sudo apt-key add -',
    'echo "deb https://packages.cloud.google.com/apt coral-edgetpu-stable main" '
    '| sudo tee /etc/apt/sources.list.d/coral-edgetpu.list',
    'sudo apt-get update',
    'sudo apt-get install edgetpu-compiler',
)

Limitation = Callable[[OpDetail], Optional[str]]


class EdgeTpuCompileError(RuntimeError):
    """edgetpu_compiler failed or did not write what it should; carries its output."""


@dataclass(frozen=True)
class OpRule:
    """
    What the Edge TPU accepts of one op: a version bound and a documented limitation.

    ``max_version`` is None where no refusal by edgetpu_compiler 16 is on record: the op is
    then treated as supported at any version. ``limitation`` returns why one instance cannot
    be mapped (None when it can); None when the table lists no limitation that the flatbuffer
    shows.
    """

    max_version: Optional[int] = None
    limitation: Optional[Limitation] = None


@dataclass(frozen=True)
class OpMapping:
    """Where one op of a segment runs, and why."""

    index: int
    op: str
    version: int
    on_edgetpu: bool
    reason: str


@dataclass(frozen=True)
class SegmentReadiness:
    """The op-by-op Edge TPU mapping of one segment file."""

    file: str
    ops: tuple[OpMapping, ...]

    @property
    def fully_mapped(self) -> bool:
        """Tell whether every op runs on the Edge TPU: one TPU call, no CPU round trip."""
        return all(op.on_edgetpu for op in self.ops)

    @property
    def cpu_ops(self) -> list[OpMapping]:
        """Return the ops that fall back to the CPU, in graph order."""
        return [op for op in self.ops if not op.on_edgetpu]

    def summary(self) -> dict:
        """
        Return plain data for the manifest and profile.

        ``version_unchecked`` lists the mapped ops whose version no known compiler limit
        covers, so a reader sees which part of "fully mapped" rests on that assumption.
        """
        cpu = self.cpu_ops
        unchecked = sorted({f'{op.op} v{op.version}' for op in self.ops
                            if op.on_edgetpu and op.reason == _MAPPED_UNCHECKED})
        return {'fully_mapped': self.fully_mapped,
                'ops_on_edgetpu': len(self.ops) - len(cpu),
                'ops_on_cpu': len(cpu),
                'cpu_fallback': [f'{op.op} v{op.version}: {op.reason}' for op in cpu],
                'version_unchecked': unchecked}


# --- limitation checks: each returns why an op instance cannot be mapped, or None -------------

def _all_of(*checks: Limitation) -> Limitation:
    def check(op: OpDetail) -> Optional[str]:
        return next((reason for reason in (c(op) for c in checks) if reason), None)
    return check


def _no_fused_activation(op: OpDetail) -> Optional[str]:
    activation = op.options.get('fusedActivationFunction', 'NONE')
    return None if activation == 'NONE' else f'fused activation {activation} (none allowed)'


def _same_dilation(op: OpDetail) -> Optional[str]:
    y, x = op.options.get('dilationHFactor', 1), op.options.get('dilationWFactor', 1)
    return None if x == y else f'dilation differs in y ({y}) and x ({x})'


def _constant_inputs(*positions: int) -> Limitation:
    """Model parameters (weights, biases) must be compile-time constants."""
    def check(op: OpDetail) -> Optional[str]:
        for i in positions:
            tensor = op.inputs[i] if i < len(op.inputs) else None
            if tensor is not None and not tensor.is_constant:
                return f'parameter input {i} ({tensor.name}) is not a compile-time constant'
        return None
    return check


def _constant(op: OpDetail, position: int, what: str) -> tuple[Optional[np.ndarray], str]:
    tensor = op.inputs[position] if position < len(op.inputs) else None
    if tensor is None or not tensor.is_constant:
        return None, f'{what} are not a compile-time constant'
    return np.asarray(tensor.data), ''


def _reduction(z_multiple_of_4: bool) -> Limitation:
    """No reduction over the batch; the current table adds a z rule for MEAN only."""
    def check(op: OpDetail) -> Optional[str]:
        axes, problem = _constant(op, 1, 'reduction axes')
        if axes is None:
            return problem
        shape = op.inputs[0].shape
        reduced = sorted({int(a) % len(shape) for a in axes.ravel()}) if shape else []
        if len(shape) >= 2 and 0 in reduced:
            return f'reduces the batch dimension (axes {reduced} of {shape})'
        if z_multiple_of_4 and shape and len(shape) - 1 in reduced and shape[-1] % 4:
            return f'reduces z (innermost, size {shape[-1]}), which must be a multiple of 4'
        return None
    return check


def _pad(op: OpDetail) -> Optional[str]:
    paddings, problem = _constant(op, 1, 'paddings')
    if paddings is None:
        return problem
    batch = paddings.reshape(-1, 2)[0]
    if len(op.inputs[0].shape) >= 2 and batch.any():
        return f'pads the batch dimension ({batch.tolist()})'
    return None


def _pack(op: OpDetail) -> Optional[str]:
    rank = len(op.outputs[0].shape)
    return 'packs along the batch dimension' if rank and op.options['axis'] % rank == 0 \
        else None


def _prelu(op: OpDetail) -> Optional[str]:
    alpha = op.inputs[1].shape
    if any(d != 1 for d in alpha[:-1]):
        return f'alpha has shape {alpha}; only its innermost dimension may exceed 1'
    return None


def _concatenation(op: OpDetail) -> Optional[str]:
    constants = [t for t in op.inputs if t is not None and t.is_constant]
    if constants and (len(op.inputs) != 2 or not all(_all_zero(t) for t in constants)):
        return ('a constant input is allowed only as one of exactly two inputs and all zeros '
                '(a zero padding)')
    return None


def _all_zero(tensor: TensorInfo) -> bool:
    zero = tensor.zero_points[0] if len(set(tensor.zero_points)) == 1 else 0
    return bool(np.all(np.asarray(tensor.data) == zero))


def _fully_connected(op: OpDetail) -> Optional[str]:
    if op.options.get('weightsFormat', 'DEFAULT') != 'DEFAULT':
        return f'weights format {op.options["weightsFormat"]} (only DEFAULT)'
    shape = op.outputs[0].shape
    return None if len(shape) <= 2 else f'output {shape} is not one-dimensional per batch'


def _softmax(op: OpDetail) -> Optional[str]:
    shape = op.inputs[0].shape
    if len(shape) > 2:
        return f'input {shape} is not one-dimensional per batch'
    elements = shape[-1] if shape else 1
    return None if elements <= 16000 else f'{elements} elements (at most 16,000)'


def _squeeze(op: OpDetail) -> Optional[str]:
    shape = op.inputs[0].shape
    if not shape:
        return None
    dims = op.options.get('squeezeDims')
    dims = dims if dims is not None and len(dims) else [i for i, d in enumerate(shape) if d == 1]
    first_wide = next((i for i, d in enumerate(shape) if d != 1), len(shape))
    late = sorted(int(d) % len(shape) for d in dims if int(d) % len(shape) > first_wide)
    return f'squeezes {late} of {shape}, after a dimension above 1 (a relayout)' if late \
        else None


def _strided_slice(op: OpDetail) -> Optional[str]:
    strides, problem = _constant(op, 3, 'strides')
    if strides is None:
        return problem
    if np.any(strides != 1):
        return f'strides {strides.tolist()} (all must be 1)'
    masks = {k: op.options.get(k, 0) for k in ('ellipsisMask', 'newAxisMask')}
    return next((f'{k} {v} (must be 0)' for k, v in masks.items() if v), None)


# One row per op the Edge TPU maps; an op not listed falls back to the CPU.
# Rows ADD..RESIZE_NEAREST_NEIGHBOR and their limitations: Coral's current table
# (coral.ai/docs/edgetpu/models-intro/#supported-operations, runtime 14 = compiler 16), read
# in Axis' copy (developer.axis.com/computer-vision/on-device/system-on-chip/artpec-7/
# supported-ops/). SLICE..TANH: the earlier revision of Coral's table. The current page's
# remaining rows could not be read, so ops only they list (Rsqrt, Squared-difference, Sum)
# are left out: reported as CPU, the conservative side (docs/edgetpu.md).
# Version bounds: google-coral/edgetpu issues where edgetpu_compiler 16.0.384591198 reports
# "Didn't find op for builtin opcode '<OP>' version '<N>'" and refuses the model; the bound is
# N - 1, a ceiling, not a proof that N - 1 is accepted.
SUPPORTED_OPS: Mapping[str, OpRule] = MappingProxyType({
    'ADD': OpRule(),
    'AVERAGE_POOL_2D': OpRule(limitation=_no_fused_activation),
    'CONCATENATION': OpRule(limitation=_all_of(_no_fused_activation, _concatenation)),
    # v6 (grouped convolution) refused: google-coral/edgetpu#631.
    'CONV_2D': OpRule(max_version=5, limitation=_all_of(_same_dilation, _constant_inputs(1, 2))),
    'DEPTHWISE_CONV_2D': OpRule(limitation=_all_of(_same_dilation, _constant_inputs(1, 2))),
    'EXPAND_DIMS': OpRule(),
    'FULLY_CONNECTED': OpRule(limitation=_all_of(_fully_connected, _constant_inputs(1, 2))),
    'L2_NORMALIZATION': OpRule(),
    'LOGISTIC': OpRule(),
    # The table's "LSTM, unidirectional only"; whether UNIDIRECTIONAL_SEQUENCE_LSTM is the op
    # meant is not stated, so it stays off the table (CPU, the conservative side).
    'LSTM': OpRule(),
    'MAXIMUM': OpRule(),
    'MAX_POOL_2D': OpRule(limitation=_no_fused_activation),
    'MEAN': OpRule(limitation=_reduction(z_multiple_of_4=True)),
    'MINIMUM': OpRule(),
    'MUL': OpRule(),
    'PACK': OpRule(limitation=_pack),
    'PAD': OpRule(limitation=_pad),
    'PRELU': OpRule(limitation=_prelu),
    # v3 refused: google-coral/edgetpu#879.
    'QUANTIZE': OpRule(max_version=2),
    'REDUCE_MAX': OpRule(limitation=_reduction(z_multiple_of_4=False)),
    'REDUCE_MIN': OpRule(limitation=_reduction(z_multiple_of_4=False)),
    'RELU': OpRule(),
    'RELU6': OpRule(),
    'RELU_N1_TO_1': OpRule(),
    # "Certain reshapes might not be mapped for large tensor sizes": no size is given.
    'RESHAPE': OpRule(),
    # 3-D input/output (the general shape rule); the precision-based refusal is not stated.
    'RESIZE_BILINEAR': OpRule(),
    'RESIZE_NEAREST_NEIGHBOR': OpRule(),
    'SLICE': OpRule(),
    'SOFTMAX': OpRule(limitation=_softmax),
    'SPACE_TO_DEPTH': OpRule(),
    'SPLIT': OpRule(),
    'SQUEEZE': OpRule(limitation=_squeeze),
    'STRIDED_SLICE': OpRule(limitation=_strided_slice),
    'SUB': OpRule(),
    'TANH': OpRule(),
    # "Mapped to Edge TPU" in an edgetpu_compiler 16.0.384591198 log (a yolov5s export).
    'TRANSPOSE': OpRule(),
    # Listed from runtime 13 in a third-party Coral developer guide (compiler 16 targets 14);
    # v4 (fused activation) refused: google-coral/edgetpu#845.
    'TRANSPOSE_CONV': OpRule(max_version=3, limitation=_constant_inputs(1, 3)),
})


# --- the static check ------------------------------------------------------------------------

def _tensor_problem(tensor: TensorInfo) -> Optional[str]:
    """Apply the model requirements that hold for every op to one tensor it touches."""
    if 'FLOAT' in tensor.type_name:
        return f'works on a float tensor ({tensor.name}: {tensor.type_name})'
    allowed = _CONSTANT_TYPES if tensor.is_constant else _ACTIVATION_TYPES
    if tensor.type_name not in allowed:
        return f'works on an unsupported data type ({tensor.name}: {tensor.type_name})'
    if tensor.is_constant:
        return None
    if tensor.is_dynamic:
        return f'tensor {tensor.name} has a dynamic size {tensor.shape_signature}'
    if any(d != 1 for d in tensor.shape[:-3]):
        return (f'tensor {tensor.name} has shape {tensor.shape}: only the 3 innermost '
                'dimensions may exceed 1 (batch must be 1)')
    return None


def _refused_version(op: OpDetail) -> bool:
    rule = SUPPORTED_OPS.get(op.name)
    return rule is not None and rule.max_version is not None and op.version > rule.max_version


def op_problem(op: OpDetail) -> Optional[str]:
    """Return why this op cannot be mapped to the Edge TPU on its own, or None."""
    if op.subgraph:
        return f'in subgraph {op.subgraph}: only the main graph is checked, counted as CPU'
    rule = SUPPORTED_OPS.get(op.name)
    if rule is None:
        return 'Operation not supported (not in the Edge TPU operations table)'
    if _refused_version(op):
        return (f'op version v{op.version} is newer than edgetpu_compiler 16 parses '
                f'(v{rule.max_version} at most): the compiler refuses the whole model')
    tensors = [t for t in op.inputs if t is not None] + list(op.outputs)
    problem = next((p for p in map(_tensor_problem, tensors) if p), None)
    if problem is None and rule.limitation is not None:
        limitation = rule.limitation(op)
        problem = f'known limitation: {limitation}' if limitation else None
    return problem


def map_ops(ops: list[OpDetail]) -> tuple[OpMapping, ...]:
    """
    Apply the per-op rules, then the compiler's one-contiguous-run partitioning.

    An op version the compiler cannot parse stops the compilation, so then no op is mapped.
    """
    problems = [op_problem(op) for op in ops]
    refused = next((i for i, op in enumerate(ops) if _refused_version(op)), None)
    if refused is not None:
        stop = (f'not compiled: edgetpu_compiler 16 refuses the model over '
                f'{ops[refused].name} v{ops[refused].version} (#{refused})')
        problems = [p or stop for p in problems]
    start = next((i for i, p in enumerate(problems) if p is None), len(ops))
    end = next((i for i in range(start, len(ops)) if problems[i] is not None), len(ops))
    mappings = []
    for i, (op, problem) in enumerate(zip(ops, problems)):
        rule = SUPPORTED_OPS.get(op.name)
        if problem is None and i < end:
            reason = _MAPPED_UNCHECKED if rule.max_version is None else MAPPED
            mappings.append(OpMapping(i, op.name, op.version, True, reason))
        elif problem is None:
            reason = (f'otherwise supported, but comes after {ops[end].name} (#{end}) fell '
                      f'back: the compiler maps one contiguous run of ops ("{AFTER_FALLBACK}")')
            mappings.append(OpMapping(i, op.name, op.version, False, reason))
        else:
            mappings.append(OpMapping(i, op.name, op.version, False, problem))
    return tuple(mappings)


def check_segment(path: Path) -> SegmentReadiness:
    """Predict the Edge TPU mapping of a .tflite segment from its flatbuffer alone."""
    return SegmentReadiness(str(path), map_ops(list_op_details(path)))


# --- the compiler ----------------------------------------------------------------------------

def compiler_available() -> Optional[str]:
    """Return the path of ``edgetpu_compiler`` on PATH, or None."""
    return shutil.which(COMPILER)


def _command(compiler: str, models: list[Path], out_dir: Path) -> list[str]:
    # -s prints (and logs) the op mapping; one invocation with several models co-compiles
    # them: they share the TPU's parameter cache instead of evicting each other.
    return [compiler, '-s', '-o', str(out_dir), *(str(m) for m in models)]


def compiled_path(source: Path, out_dir: Path) -> Path:
    """Return where edgetpu_compiler writes the Edge TPU model for ``source``."""
    return Path(out_dir) / f'{Path(source).stem}_edgetpu.tflite'


def compile_segments(groups: list[list[Path]], out_dir: Path,
                     compiler: str = COMPILER) -> dict[Path, Path]:
    """
    Compile each group of segments in one co-compilation; map source -> _edgetpu.tflite.

    Segments that will share a TPU belong in one group. Raises EdgeTpuCompileError with the
    compiler's output when it fails or leaves out a model or its log.
    """
    out_dir = Path(out_dir)
    sources = [Path(p) for group in groups for p in group]
    clashes = sorted({p.stem for p in sources if sum(q.stem == p.stem for q in sources) > 1})
    if clashes:
        raise ValueError(f'segments {clashes} share a file name; their {COMPILER} outputs '
                         f'would overwrite each other in {out_dir}')
    out_dir.mkdir(parents=True, exist_ok=True)
    compiled = {}
    for group in groups:
        command = _command(compiler, [Path(p) for p in group], out_dir)
        try:
            result = subprocess.run(command, capture_output=True, text=True, check=False)
        except OSError as error:
            raise EdgeTpuCompileError(f'{shlex.join(command)} could not start: {error}') \
                from error
        output = f'stdout:\n{result.stdout}\nstderr:\n{result.stderr}'
        if result.returncode != 0:
            raise EdgeTpuCompileError(
                f'{shlex.join(command)} exited with {result.returncode}\n{output}')
        for source in map(Path, group):
            model = compiled_path(source, out_dir)
            missing = [p.name for p in (model, _log_path(model)) if not p.is_file()]
            if missing:
                raise EdgeTpuCompileError(f'{shlex.join(command)} succeeded but wrote no '
                                          f'{", ".join(missing)} for {source}\n{output}')
            compiled[source] = model
    return compiled


def compile_instructions(paths: list[Path], model_dir: Path) -> str:
    """
    How to compile ``paths`` on a machine that has the compiler, when this one has not.

    The commands run in ``model_dir`` and write into ``edgetpu/<variant>/``, where the build
    puts what it compiles itself (segment file names repeat across variants).
    """
    model_dir = Path(model_dir)
    relative = [Path(p).relative_to(model_dir) for p in paths]
    commands = [shlex.join(_command(COMPILER, [p], Path('edgetpu') / p.parent))
                for p in relative]
    return '\n'.join([
        f'{COMPILER} is not on PATH here, so no Edge TPU models were compiled; the Edge TPU '
        'readiness report is the static check of the op table.',
        "Install Coral's compiler on a Debian/Ubuntu x86_64 machine:",
        *(f'  {line}' for line in _INSTALL),
        'then run, in the model directory:',
        *(f'  {line}' for line in commands),
        'Segments that will share one TPU go into a single invocation (co-compilation), so '
        'they share its parameter cache. The compiler writes <name>_edgetpu.tflite and '
        '<name>_edgetpu.log (the op mapping) into edgetpu/<variant>/.',
    ])


# --- the compiler's log ----------------------------------------------------------------------

_TABLE_HEADER = re.compile(r'^\s*Operator\s+Count\s+Status\s*$')
_TABLE_ROW = re.compile(r'^(?P<op>[A-Za-z][\w-]*)\s+(?P<count>\d+)\s+(?P<status>\S.*?)\s*$')
# 'Input: <path>' in the log, 'Input model: <path>' on stdout (not 'Input size: ...').
_INPUT = re.compile(r'^Input(?: model)?:\s*(?P<path>.+?)\s*$')


def _log_path(compiled: Path) -> Path:
    return compiled.with_suffix('.log')


def operator_table(log: str, source: Optional[Path] = None) -> list[tuple[str, int, str]]:
    """
    Return the (operator, count, status) rows of an edgetpu_compiler log or ``-s`` output.

    With ``source``, only the table that follows its ``Input:`` line counts, for an output
    that reports several models.
    """
    rows: list[tuple[str, int, str]] = []
    current, in_table = None, False
    for line in log.splitlines():
        if named := _INPUT.match(line):
            current, in_table = named['path'], False
        elif _TABLE_HEADER.match(line):
            in_table = True
        elif in_table and (row := _TABLE_ROW.match(line)):
            if source is None or current is None or Path(current).name == Path(source).name:
                rows.append((row['op'], int(row['count']), row['status']))
        elif in_table and line.strip():
            in_table = False
    return rows


def compiled_readiness(source: Path, compiled: Path) -> SegmentReadiness:
    """
    Read the mapping edgetpu_compiler logged for ``source`` into the static report's form.

    The log counts ops per (operator, status), not per op, so which instance got which
    status follows the static prediction where it agrees; the counts are the compiler's.
    """
    log = _log_path(Path(compiled))
    rows = operator_table(log.read_text(), source)
    predicted = check_segment(Path(source)).ops
    statuses: dict[str, list[str]] = defaultdict(list)
    for op, count, status in rows:
        statuses[op] += [status] * count
    by_op: dict[str, list[OpMapping]] = defaultdict(list)
    for mapping in predicted:
        by_op[mapping.op].append(mapping)
    logged = {op: len(s) for op, s in statuses.items()}
    present = {op: len(m) for op, m in by_op.items()}
    if logged != present:
        raise EdgeTpuCompileError(
            f'{log} does not describe {source}: it counts {logged}, the model has {present}')
    assigned = {}
    for op, instances in by_op.items():
        mapped = statuses[op].count(MAPPED)
        others = iter([s for s in statuses[op] if s != MAPPED])
        order = sorted(instances, key=lambda m: not m.on_edgetpu)
        for rank, mapping in enumerate(order):
            status = MAPPED if rank < mapped else next(others)
            assigned[mapping.index] = OpMapping(mapping.index, mapping.op, mapping.version,
                                                status == MAPPED, status)
    return SegmentReadiness(str(source), tuple(assigned[m.index] for m in predicted))
