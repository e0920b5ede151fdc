# Copyright 2026 dyn_perception maintainers. Apache-2.0.
"""Manifest and profile validation: every error names the file and the key."""

import copy
from pathlib import Path

from dyn_perception.runtime.artifacts import (
    ArtifactError, atomic_write_text, load_manifest, load_profile, replace_directory, write_yaml
)
import pytest


def tensor(name, shape):
    return {'name': name, 'shape': shape, 'scale': 0.02, 'zero_point': -128}


MANIFEST = {
    'name': 'toy', 'network': 'resnet_ee', 'dataset': 'fashion_mnist',
    'input': {'height': 28, 'width': 28, 'channels': 1, 'mean': [0.3], 'std': [0.35]},
    'labels': [str(i) for i in range(10)],
    'variants': [{
        'name': 'base',
        'segments': [
            {'file': 'base/segment0.tflite', 'input': tensor('in', [1, 28, 28, 1]),
             'features': tensor('f', [1, 14, 14, 8]), 'logits': tensor('l', [1, 10]),
             'macs': 100, 'param_bytes': 10},
            {'file': 'base/segment1.tflite', 'input': tensor('in', [1, 14, 14, 8]),
             'logits': tensor('l', [1, 10]), 'macs': 900, 'param_bytes': 90},
        ],
        'thresholds': {'entropy': {'balanced': [0.4], 'performance': [None]}},
    }],
}


def write_model(root, data):
    (root / 'base').mkdir(parents=True, exist_ok=True)
    for name in ('segment0.tflite', 'segment1.tflite'):
        (root / 'base' / name).write_bytes(b'')
    write_yaml(root / 'manifest.yaml', data)
    return root


def test_valid_manifest_loads(tmp_path):
    manifest = load_manifest(write_model(tmp_path, MANIFEST))
    variant = manifest.variant()
    assert variant.num_exits == 2
    assert variant.cumulative_macs_at_exits() == [100, 1000]
    assert variant.thresholds['entropy']['performance'] == [None]
    assert manifest.default_policy == 'entropy'
    assert manifest.mode_variant('eco') == 'base', 'no choice recorded: the default runs'


@pytest.mark.parametrize('edit, message', [
    (lambda d: d['input'].pop('height'), r'input.height is missing'),
    (lambda d: d['variants'][0]['segments'][0].update(macs='lots'), r'segments\[0\].macs must be'),
    (lambda d: d['variants'][0]['segments'][1]['input'].update(shape=[1, 7, 7, 8]),
     r'does not match the next input'),
    (lambda d: d['variants'][0]['thresholds']['entropy'].update(eco=[0.1, 0.2]),
     r'thresholds.entropy.eco must list one threshold per non-final exit \(1\)'),
    (lambda d: d['variants'][0]['thresholds'].update(vibes={}), r'not a known exit policy'),
    (lambda d: d.update(labels=['a', 'b']), r'10 classes but there are 2 labels'),
    (lambda d: d['variants'][0]['segments'][0].update(file='base/nope.tflite'),
     r'names base/nope.tflite, which does not exist'),
    (lambda d: d.update(default_variant='pruned50'), r"no variant 'pruned50'"),
    (lambda d: d.update(mode_variants={'entropy': {'eco': 'pruned50'}}),
     r"mode_variants.entropy must map modes to variants of \['base'\]"),
    (lambda d: d.update(mode_variants={'vibes': {}}), r'mode_variants.vibes is not a known'),
])
def test_bad_manifest_is_rejected_with_file_and_key(tmp_path, edit, message):
    data = copy.deepcopy(MANIFEST)
    edit(data)
    with pytest.raises(ArtifactError, match=message) as err:
        load_manifest(write_model(tmp_path, data))
    assert 'manifest.yaml' in str(err.value)


def test_unreadable_yaml_and_missing_model(tmp_path):
    (tmp_path / 'manifest.yaml').write_text('schema_version: 1\nname: [unclosed\n')
    with pytest.raises(ArtifactError, match='not valid YAML'):
        load_manifest(tmp_path)
    with pytest.raises(ArtifactError, match="model 'no_such_model'"):
        load_manifest('no_such_model')


def test_atomic_writes_leave_no_partial_files(tmp_path):
    atomic_write_text(tmp_path / 'a.yaml', 'one')
    with pytest.raises(TypeError):
        atomic_write_text(tmp_path / 'a.yaml', None)
    assert [p.name for p in tmp_path.iterdir()] == ['a.yaml']
    assert (tmp_path / 'a.yaml').read_text() == 'one'
    staging, target = tmp_path / 'new', tmp_path / 'model'
    staging.mkdir()
    (staging / 'x').write_text('new')
    target.mkdir()
    (target / 'x').write_text('old')
    replace_directory(staging, target)
    assert (target / 'x').read_text() == 'new'
    assert sorted(p.name for p in tmp_path.iterdir()) == ['a.yaml', 'model']


SHIPPED = sorted(p.parent for p in (Path(__file__).parents[1] / 'models').glob('*/manifest.yaml'))


@pytest.mark.parametrize('model', SHIPPED, ids=lambda p: p.name)
def test_every_shipped_model_loads_and_records_how_it_was_made(model):
    manifest, profile = load_manifest(model), load_profile(model)
    assert manifest.name == model.name
    assert manifest.provenance['command'].startswith('python -m dyn_perception.training')
    assert 'seed' in manifest.provenance
    for variant in manifest.variants:
        assert profile.variant(variant.name).segments, variant.name
        for segment in variant.segments:
            assert manifest.path(segment.file).stat().st_size > 0
