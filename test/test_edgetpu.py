"""
Edge TPU readiness: the static op check on real int8 models, and the compiler driver.

The real edgetpu_compiler is not available on this machine (and no Edge TPU is): the
compiler tests put a fake ``edgetpu_compiler`` first on PATH that writes its outputs and a
log in the real compiler's format, so the invocation, the co-compilation grouping, the
failure handling and the log parsing are exercised; what the real compiler decides is not.
"""

import json
import os
from pathlib import Path
import shutil
import sys

from dyn_perception.training.edgetpu import (
    AFTER_FALLBACK, check_segment, compile_instructions, compile_segments, compiled_readiness,
    compiler_available, EdgeTpuCompileError, map_ops, MAPPED, op_problem, operator_table,
    SUPPORTED_OPS
)
from dyn_perception.training.tflite_ops import OpDetail, TensorInfo
import numpy as np
import pytest
import torch
from torch import nn


class _Mapped(nn.Module):
    """conv + relu, global mean, linear: every op is in the Edge TPU table."""

    def __init__(self, channels: int = 3, groups: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(channels, 8, 3, padding=1, groups=groups)
        self.fc = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.conv(x.permute(0, 3, 1, 2)))
        return self.fc(x.mean(dim=(2, 3)))


class _HardSwish(nn.Module):
    """A MobileNetV3-style activation the Edge TPU lacks, between two supported convs."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.fc = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.functional.hardswish(self.conv1(x.permute(0, 3, 1, 2)))
        x = torch.relu(self.conv2(x))
        return self.fc(x.mean(dim=(2, 3)))


@pytest.fixture(scope='module')
def models(tmp_path_factory) -> dict[str, Path]:
    """Three real full-int8 models, converted once (a few seconds each)."""
    from dyn_perception.training.export import convert_int8
    torch.manual_seed(0)
    root = tmp_path_factory.mktemp('edgetpu_models')
    rng = np.random.default_rng(0)
    built = {}
    for name, module, channels in (('mapped', _Mapped(), 3), ('hardswish', _HardSwish(), 3),
                                   ('grouped', _Mapped(channels=4, groups=2), 4)):
        built[name] = root / f'{name}.tflite'
        calibration = rng.normal(size=(4, 8, 8, channels)).astype(np.float32)
        convert_int8(module, calibration, built[name])
    return built


# --- the static check on real models ---------------------------------------------------------

def test_conv_relu_mean_linear_is_fully_mapped(models):
    readiness = check_segment(models['mapped'])
    assert [op.op for op in readiness.ops] == ['CONV_2D', 'TRANSPOSE', 'MEAN', 'FULLY_CONNECTED']
    assert readiness.fully_mapped and readiness.cpu_ops == []
    summary = readiness.summary()
    assert summary['fully_mapped'] is True
    assert (summary['ops_on_edgetpu'], summary['ops_on_cpu']) == (4, 0)
    assert summary['cpu_fallback'] == []
    # CONV_2D has a known version bound; the others are mapped on the no-limit assumption.
    assert 'MEAN v1' in summary['version_unchecked']
    assert not any(entry.startswith('CONV_2D') for entry in summary['version_unchecked'])


def test_unsupported_op_and_every_later_op_fall_back(models):
    readiness = check_segment(models['hardswish'])
    ops = readiness.ops
    assert [op.op for op in ops[:3]] == ['CONV_2D', 'HARD_SWISH', 'CONV_2D']
    assert ops[0].on_edgetpu and ops[0].reason.startswith(MAPPED)
    assert not ops[1].on_edgetpu and ops[1].reason.startswith('Operation not supported')
    assert len(ops) > 3
    for op in ops[2:]:
        assert not op.on_edgetpu
        assert 'HARD_SWISH (#1)' in op.reason and AFTER_FALLBACK in op.reason
    summary = readiness.summary()
    assert not summary['fully_mapped']
    assert (summary['ops_on_edgetpu'], summary['ops_on_cpu']) == (1, len(ops) - 1)
    assert summary['cpu_fallback'][0].startswith('HARD_SWISH v1: Operation not supported')


def test_refused_op_version_stops_the_whole_model(models):
    """A grouped conv makes the file's CONV_2D code v6, which compiler 16 cannot parse."""
    readiness = check_segment(models['grouped'])
    assert (readiness.ops[0].op, readiness.ops[0].version) == ('CONV_2D', 6)
    assert 'newer than edgetpu_compiler 16 parses' in readiness.ops[0].reason
    assert readiness.cpu_ops == list(readiness.ops)
    assert all('refuses the model over CONV_2D v6 (#0)' in op.reason
               for op in readiness.ops[1:])


# --- the rule table on synthetic ops ---------------------------------------------------------

def _tensor(shape, type_name='INT8', data=None, signature=None, zero_points=(0,)):
    return TensorInfo('t', type_name, tuple(shape), tuple(signature or shape),
                      None if data is None else np.asarray(data), zero_points)


def _const(values, type_name='INT32'):
    values = np.asarray(values)
    return _tensor(values.shape, type_name, values)


def _op(name, inputs, outputs, version=1, **options):
    return OpDetail(name, version, 0, tuple(inputs), tuple(outputs), options)


def _conv(version=1, weights=None, **options):
    weights = weights or _const(np.ones((8, 3, 3, 3)), 'INT8')
    return _op('CONV_2D', [_tensor((1, 8, 8, 3)), weights, _const(np.zeros(8))],
               [_tensor((1, 8, 8, 8))], version, **options)


def _mean(shape, axes):
    return _op('MEAN', [_tensor(shape), _const(axes)], [_tensor((1, 8))])


def test_table_names_are_tflite_builtins():
    from ai_edge_litert import schema_py_generated as schema
    assert set(SUPPORTED_OPS) <= set(vars(schema.BuiltinOperator))


@pytest.mark.parametrize('op, expected', [
    (_conv(version=5), None),
    (_conv(version=6), 'newer than edgetpu_compiler 16 parses (v5 at most)'),
    (_op('QUANTIZE', [_tensor((1, 8))], [_tensor((1, 8))], version=3), 'v2 at most'),
    (_op('HARD_SWISH', [_tensor((1, 8))], [_tensor((1, 8))]), 'Operation not supported'),
    (_op('ADD', [_tensor((1, 8)), _tensor((1, 8), 'FLOAT32')], [_tensor((1, 8))]),
     'float tensor'),
    (_op('ADD', [_tensor((1, 8)), _tensor((1, 8))], [_tensor((1, 8), 'INT16')]),
     'unsupported data type'),
    (_op('RELU', [_tensor((1, 8), signature=(-1, 8))], [_tensor((1, 8))]), 'dynamic size'),
    (_op('RELU', [_tensor((2, 4, 4, 8))], [_tensor((2, 4, 4, 8))]), 'batch must be 1'),
    (_conv(dilationHFactor=2, dilationWFactor=1), 'dilation differs'),
    (_conv(weights=_tensor((1, 3, 3, 3))), 'not a compile-time constant'),
    (_mean((1, 8, 8, 16), [1, 2]), None),
    (_mean((1, 8, 8, 16), [0, 1, 2]), 'reduces the batch dimension'),
    (_mean((1, 8, 8, 16), [-1]), None),
    (_mean((1, 8, 8, 6), [3]), 'multiple of 4'),
    (_op('PAD', [_tensor((1, 8, 8, 3)), _const([[0, 0], [1, 1], [1, 1], [0, 0]])],
         [_tensor((1, 10, 10, 3))]), None),
    (_op('PAD', [_tensor((1, 8, 8, 3)), _const([[1, 0], [0, 0], [0, 0], [0, 0]])],
         [_tensor((1, 8, 8, 3))]), 'pads the batch dimension'),
    (_op('MAX_POOL_2D', [_tensor((1, 8, 8, 3))], [_tensor((1, 4, 4, 3))],
         fusedActivationFunction='RELU'), 'fused activation RELU'),
    (_op('CONCATENATION', [_tensor((1, 8, 8, 3)), _const(np.full((1, 8, 8, 1), 5), 'INT8')],
         [_tensor((1, 8, 8, 4))], fusedActivationFunction='NONE'), 'all zeros'),
    (_op('CONCATENATION', [_tensor((1, 8, 8, 3)),
                           _tensor((1, 8, 8, 1), data=np.full((1, 8, 8, 1), -3),
                                   zero_points=(-3,))],
         [_tensor((1, 8, 8, 4))], fusedActivationFunction='NONE'), None),
    (_op('FULLY_CONNECTED', [_tensor((1, 2, 8)), _const(np.ones((4, 8)), 'INT8'), None],
         [_tensor((1, 2, 4))], weightsFormat='DEFAULT'), 'not one-dimensional'),
    (_op('SOFTMAX', [_tensor((1, 20000))], [_tensor((1, 20000))]), 'at most 16,000'),
    (_op('SQUEEZE', [_tensor((5, 1, 10))], [_tensor((5, 10))], squeezeDims=[1]), 'relayout'),
    (_op('SQUEEZE', [_tensor((1, 1, 10))], [_tensor((10,))], squeezeDims=[]), None),
    (_op('STRIDED_SLICE', [_tensor((1, 8, 8, 3)), _const([0] * 4), _const([1, 8, 8, 3]),
                           _const([1, 2, 2, 1])], [_tensor((1, 4, 4, 3))]), 'strides'),
    (_op('PRELU', [_tensor((1, 8, 8, 3)), _const(np.ones((8, 1, 3)), 'INT8')],
         [_tensor((1, 8, 8, 3))]), 'innermost dimension'),
])
def test_op_rules(op, expected):
    problem = op_problem(op)
    if expected is None:
        assert problem is None
    else:
        assert problem is not None and expected in problem


def test_leading_fallback_keeps_the_following_run_on_the_tpu():
    """A float-input QUANTIZE ahead of the graph stays on the CPU, the run after it maps."""
    ops = [_op('QUANTIZE', [_tensor((1, 8, 8, 3), 'FLOAT32')], [_tensor((1, 8, 8, 3))]),
           _conv(),
           _op('HARD_SWISH', [_tensor((1, 8, 8, 8))], [_tensor((1, 8, 8, 8))]),
           _op('RELU', [_tensor((1, 8, 8, 8))], [_tensor((1, 8, 8, 8))])]
    mapped = map_ops(ops)
    assert [m.on_edgetpu for m in mapped] == [False, True, False, False]
    assert 'float tensor' in mapped[0].reason
    assert mapped[1].reason == MAPPED
    assert AFTER_FALLBACK in mapped[3].reason and 'HARD_SWISH (#2)' in mapped[3].reason


# --- the compiler driver, with a fake compiler ----------------------------------------------

_FAKE = """
import json
from pathlib import Path
import shutil
import sys

config = json.loads(Path(__file__).with_name('fake_config.json').read_text())
args = sys.argv[1:]
with open(config['record'], 'a') as record:
    record.write(json.dumps(args) + '\\n')
print('Edge TPU Compiler version 16.0.384591198')
if config['exit']:
    print(config['stderr'], file=sys.stderr)
    sys.exit(config['exit'])
out = Path(args[args.index('-o') + 1])
for model in map(Path, args[args.index('-o') + 2:]):
    if not config['write']:
        continue
    compiled = out / f'{model.stem}_edgetpu.tflite'
    shutil.copy(model, compiled)
    rows = ''.join(f'{op:<31}{count:<11}{status}\\n'
                   for op, count, status in config['tables'][model.stem])
    table = f'Operator                       Count      Status\\n\\n{rows}'
    compiled.with_suffix('.log').write_text(
        f'Edge TPU Compiler version 16.0.384591198\\nInput: {model}\\nOutput: {compiled}\\n\\n'
        + table)
    print(f'Input model: {model}\\nOutput model: {compiled}\\n\\n' + table)
"""


@pytest.fixture
def fake_compiler(tmp_path, monkeypatch):
    """Put a fake edgetpu_compiler first on PATH; return a function that configures it."""
    bin_dir = tmp_path / 'bin'
    bin_dir.mkdir()
    script = bin_dir / 'edgetpu_compiler'
    script.write_text(f'#!{sys.executable}\n{_FAKE}')
    script.chmod(0o755)
    monkeypatch.setenv('PATH', f'{bin_dir}{os.pathsep}{os.environ.get("PATH", "")}')
    record = tmp_path / 'invocations.jsonl'

    def configure(tables=None, exit_code=0, stderr='', write=True) -> Path:
        (bin_dir / 'fake_config.json').write_text(json.dumps(
            {'record': str(record), 'exit': exit_code, 'stderr': stderr, 'write': write,
             'tables': tables or {}}))
        return record
    return configure


def _segments(models, directory: Path) -> list[Path]:
    directory.mkdir()
    names = ('mapped', 'hardswish', 'mapped')
    paths = [directory / f'segment{i}.tflite' for i in range(len(names))]
    for name, path in zip(names, paths):
        shutil.copy(models[name], path)
    return paths


_MAPPED_TABLE = [['CONV_2D', 1, MAPPED], ['TRANSPOSE', 1, MAPPED], ['MEAN', 1, MAPPED],
                 ['FULLY_CONNECTED', 1, MAPPED]]
# What compiler 16 would log for the hard-swish model if it partitions as documented.
_HARDSWISH_TABLE = [['CONV_2D', 1, MAPPED], ['CONV_2D', 1, AFTER_FALLBACK],
                    ['HARD_SWISH', 1, 'Operation not supported'],
                    ['TRANSPOSE', 1, AFTER_FALLBACK], ['MEAN', 1, AFTER_FALLBACK],
                    ['FULLY_CONNECTED', 1, AFTER_FALLBACK]]


def test_compiler_is_found_on_path_only_when_there(fake_compiler, tmp_path, monkeypatch):
    assert compiler_available() == str(tmp_path / 'bin' / 'edgetpu_compiler')
    monkeypatch.setenv('PATH', str(tmp_path / 'empty'))
    assert compiler_available() is None


def test_groups_are_co_compiled_and_logs_parsed(models, fake_compiler, tmp_path):
    s0, s1, s2 = _segments(models, tmp_path / 'model')
    record = fake_compiler({'segment0': _MAPPED_TABLE, 'segment1': _HARDSWISH_TABLE,
                            'segment2': _MAPPED_TABLE})
    out = tmp_path / 'model' / 'edgetpu'
    compiled = compile_segments([[s0, s1], [s2]], out)
    invocations = [json.loads(line) for line in record.read_text().splitlines()]
    assert invocations == [['-s', '-o', str(out), str(s0), str(s1)],
                           ['-s', '-o', str(out), str(s2)]]
    assert compiled == {s: out / f'{s.stem}_edgetpu.tflite' for s in (s0, s1, s2)}
    assert all(path.is_file() for path in compiled.values())

    readiness = compiled_readiness(s1, compiled[s1])
    assert readiness.file == str(s1)
    assert [(m.op, m.on_edgetpu) for m in readiness.ops[:3]] == [
        ('CONV_2D', True), ('HARD_SWISH', False), ('CONV_2D', False)]
    assert readiness.ops[1].reason == 'Operation not supported'
    assert readiness.ops[2].reason == AFTER_FALLBACK
    assert compiled_readiness(s0, compiled[s0]).fully_mapped


def test_log_for_another_model_is_rejected(models, fake_compiler, tmp_path):
    s0, _, _ = _segments(models, tmp_path / 'model')
    fake_compiler({'segment0': _HARDSWISH_TABLE})
    compiled = compile_segments([[s0]], tmp_path / 'out')
    with pytest.raises(EdgeTpuCompileError, match='does not describe'):
        compiled_readiness(s0, compiled[s0])


def test_failing_compiler_raises_with_its_output(models, fake_compiler, tmp_path):
    s0, _, _ = _segments(models, tmp_path / 'model')
    message = "ERROR: Didn't find op for builtin opcode 'CONV_2D' version '6'"
    fake_compiler(exit_code=1, stderr=message)
    with pytest.raises(EdgeTpuCompileError) as error:
        compile_segments([[s0]], tmp_path / 'out')
    assert 'exited with 1' in str(error.value)
    assert message in str(error.value) and 'Edge TPU Compiler version' in str(error.value)


def test_missing_outputs_raise(models, fake_compiler, tmp_path):
    s0, _, _ = _segments(models, tmp_path / 'model')
    fake_compiler(write=False)
    with pytest.raises(EdgeTpuCompileError, match='wrote no segment0_edgetpu.tflite'):
        compile_segments([[s0]], tmp_path / 'out')


def test_same_file_names_are_refused_before_compiling(tmp_path):
    a, b = tmp_path / 'a' / 'segment0.tflite', tmp_path / 'b' / 'segment0.tflite'
    with pytest.raises(ValueError, match='share a file name'):
        compile_segments([[a], [b]], tmp_path / 'out', compiler='/nonexistent')


def test_operator_table_picks_the_named_model():
    stdout = '\n'.join([
        'Edge TPU Compiler version 16.0.384591198',
        'Input model: /x/segment0.tflite', '', 'Operator                       Count      Status',
        '', f'CONV_2D                        2          {MAPPED}',
        'Input model: /x/segment1.tflite', 'Input size: 1.00KiB', '',
        'Operator                       Count      Status',
        '', 'MEAN                           1          More than one subgraph is not supported',
        f'MEAN                           3          {MAPPED}',
        'Compilation child process completed within timeout period.'])
    assert operator_table(stdout, Path('segment1.tflite')) == [
        ('MEAN', 1, 'More than one subgraph is not supported'), ('MEAN', 3, MAPPED)]
    assert len(operator_table(stdout)) == 3


def test_instructions_give_install_and_one_command_per_segment(tmp_path):
    paths = [tmp_path / 'v0' / 'segment0.tflite', tmp_path / 'v1' / 'segment0.tflite']
    text = compile_instructions(paths, tmp_path)
    assert 'not on PATH' in text
    assert 'sudo apt-get install edgetpu-compiler' in text
    assert 'coral-edgetpu-stable main' in text
    lines = [line.strip() for line in text.splitlines()]
    # the same file name in two variants: two output folders, nothing overwritten
    assert 'edgetpu_compiler -s -o edgetpu/v0 v0/segment0.tflite' in lines
    assert 'edgetpu_compiler -s -o edgetpu/v1 v1/segment0.tflite' in lines
