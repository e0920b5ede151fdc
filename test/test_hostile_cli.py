# Copyright 2026 dyn_perception maintainers. Apache-2.0.
"""
The benchmark and training command lines as the README writes them, with bad arguments.

Each must stop before any work with one ``error:`` line and exit 2, as argparse does, never
with a traceback or, worse, a run whose results cannot be written or mean nothing.
"""

import os
from pathlib import Path
import re
import shlex
import shutil
import subprocess
import sys

import pytest

ROOT = Path(__file__).resolve().parents[1]
SERVING = '.venv/bin/python bench/serving.py --json out/bench/serving.json'
SCHEDULING = '.venv/bin/python bench/scheduling.py --json out/bench/scheduling.json'
BATTERY = '.venv/bin/python bench/battery.py --json out/bench/battery.json --plot '
TRAIN = '.venv/bin/python -m dyn_perception.training all --out models/fmnist_eenet --config '


def run(command: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    """Run a README command as written; ``.venv/bin/python`` is the interpreter of the tests."""
    words = shlex.split(command)
    words[0] = sys.executable
    env = {**os.environ, 'PYTHONPATH': os.pathsep.join(
        filter(None, (str(ROOT), os.environ.get('PYTHONPATH'))))}
    return subprocess.run(words, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def refused(result: subprocess.CompletedProcess, says: str) -> None:
    errors = [line for line in result.stderr.splitlines() if 'error:' in line]
    assert result.returncode == 2, result.stderr
    assert 'Traceback' not in result.stderr and len(errors) == 1, result.stderr
    assert says in errors[0], errors[0]
    assert not result.stdout, 'work started before the arguments were checked'


@pytest.mark.parametrize('extra, says', [
    ('--sets 0', 'argument --sets: must be an integer >= 1, got 0'),
    ('--sets -5', 'argument --sets: must be an integer >= 1, got -5'),
    ('--seconds 0', 'argument --seconds: must be a number > 0'),
    ('--seconds nan', 'argument --seconds: must be a number > 0'),
    ('--tpus 0', 'argument --tpus: must be an integer from 1 to 64, got 0'),
    ('--tpus 1000', 'argument --tpus: must be an integer from 1 to 64, got 1000'),
    ('--png README.md/serving.png', 'README.md is not a directory'),
])
def test_serving_bench_refuses_bad_arguments_before_the_run(extra, says):
    refused(run(f'{SERVING} {extra}'), says)


def test_scheduling_bench_refuses_counts_that_mean_nothing():
    refused(run(f'{SCHEDULING} --jobs 0'), 'argument --jobs: must be an integer >= 1')
    refused(run(f'{SCHEDULING} --validation-sets -1'), 'argument --validation-sets')


def test_a_result_file_that_cannot_be_written_is_refused_before_the_run(tmp_path):
    """The JSON and the figure were written after a run of up to 30 minutes, or never."""
    blocker = tmp_path / 'a_file'
    blocker.write_text('')
    refused(run(f'{SCHEDULING.replace("out/bench", str(blocker))} --quick'),
            f'argument --json: cannot write {blocker}/scheduling.json')
    refused(run(BATTERY + str(blocker / 'battery.png')), 'argument --plot: cannot write')
    refused(run(f'{SERVING.replace("out/bench/serving.json", str(tmp_path))}'),
            'is a directory, not a file')


def test_a_missing_json_directory_is_made_up_front(tmp_path):
    target = tmp_path / 'new' / 'deeper' / 'serving.json'
    refused(run(f'{SERVING.replace("out/bench/serving.json", str(target))} --tpus 0'),
            'argument --tpus')
    assert target.parent.is_dir() and not target.exists()


def test_a_training_config_value_of_the_wrong_type_is_named(tmp_path):
    """``epochs: lots`` ended in a TypeError traceback from the range checks."""
    config = tmp_path / 'typo.yaml'
    original = (ROOT / 'config' / 'training' / 'fmnist_eenet.yaml').read_text()
    config.write_text(re.sub(r'^epochs:.*$', 'epochs: lots', original, flags=re.MULTILINE))
    refused(run(TRAIN + str(config)), "epochs: 'lots' is not an integer")


def test_training_refuses_a_missing_config_and_an_unknown_key(tmp_path):
    refused(run(TRAIN + str(tmp_path / 'missing.yaml')), 'cannot read training config')
    config = tmp_path / 'unknown.yaml'
    config.write_text('epochz: 3\n')
    refused(run(TRAIN + str(config)), "unknown training options ['epochz']")


def test_a_front_plot_that_cannot_be_written_is_refused_before_the_front(tmp_path):
    """``front --plot <file>/front.png``: the manifest was rewritten, then a traceback, exit 1."""
    model = tmp_path / 'mnist_blenet'
    shutil.copytree(ROOT / 'models' / 'mnist_blenet', model)
    manifest = (model / 'manifest.yaml').read_text()
    blocker = tmp_path / 'a_file'
    blocker.write_text('')
    refused(run(f'.venv/bin/python -m dyn_perception.training front --model {model} '
                f'--plot {blocker}/front.png'), f'argument --plot: cannot write {blocker}')
    assert (model / 'manifest.yaml').read_text() == manifest
