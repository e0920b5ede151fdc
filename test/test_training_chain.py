# Copyright 2026 dyn_perception maintainers. Apache-2.0.
"""
The whole training chain in small: train, export, verify, profile, load back, run.

A few hundred steps on a subset of Fashion-MNIST, then every stage runs for real (litert-torch
conversion, ai-edge-quantizer int8, LiteRT verification and timing), so CI exercises each one.
"""

import shutil

from dyn_perception.runtime.artifacts import ArtifactError, load_manifest, load_profile
from dyn_perception.runtime.chain import SegmentChain
from dyn_perception.runtime.exits import exit_index, get_policy
from dyn_perception.training import cli
from dyn_perception.training.build import build_model_dir, BuildOptions, VariantSource
from dyn_perception.training.export import ExportError
from dyn_perception.training.tflite_ops import float_ops, list_ops
from dyn_perception.training.train import (
    CheckpointError, load_checkpoint, load_config_dataset, model_from_checkpoint, train,
    TrainConfig
)
import numpy as np
import pytest
import torch

SMALL = {'arch': 'resnet_ee', 'dataset': 'fashion_mnist', 'epochs': 1, 'max_steps': 300,
         'train_subset': 8192, 'batch_size': 64, 'lr': 0.05, 'threads': 1, 'seed': 3}


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    checkpoint = tmp_path_factory.mktemp('run') / 'checkpoint.pt'
    result = train(TrainConfig(**SMALL), checkpoint, progress=False)
    return result, checkpoint


@pytest.fixture(scope='module')
def built(trained, tmp_path_factory):
    result, checkpoint = trained
    out = tmp_path_factory.mktemp('models') / 'tiny_eenet'
    # A few hundred steps leave small logit margins, so int8 rounding flips more top-1
    # decisions than in a trained model; the shipped model is held to the default 98%.
    options = BuildOptions(calibration_frames=256, latency_repeats=20, eval_limit=600,
                           min_agreement=0.9, progress=False)
    manifest, reports = build_model_dir(
        out.name, out, result.dataset, [VariantSource('base', result.model)], 'resnet_ee',
        {'command': 'test', 'seed': SMALL['seed']}, options)
    return manifest, reports, result


def test_training_learns_and_checkpoint_resumes(trained):
    result, checkpoint = trained
    final = result.history[-1]['val_accuracy']
    assert len(final) == 3
    assert final[-1] > 0.7, f'300 steps should beat 70% on Fashion-MNIST, got {final}'
    state = load_checkpoint(checkpoint)
    assert state['step'] == SMALL['max_steps']
    # Resuming a finished run trains nothing more and returns the same weights.
    again = train(TrainConfig(**SMALL), checkpoint, progress=False)
    for a, b in zip(again.model.state_dict().values(), result.model.state_dict().values()):
        assert torch.equal(a, b)
    rebuilt = model_from_checkpoint(state, result.dataset)
    x = torch.randn(2, 1, 28, 28)
    for a, b in zip(rebuilt(x), result.model.eval()(x)):
        assert torch.allclose(a, b)


def test_resume_refuses_a_different_configuration(trained):
    _, checkpoint = trained
    with pytest.raises(CheckpointError, match='different configuration'):
        train(TrainConfig(**{**SMALL, 'lr': 0.01}), checkpoint, progress=False)


def test_corrupt_checkpoint_is_named(tmp_path):
    bad = tmp_path / 'broken.pt'
    bad.write_bytes(b'not a checkpoint at all')
    with pytest.raises(CheckpointError, match='broken.pt'):
        load_checkpoint(bad)


def test_segments_are_full_int8_and_chain_to_the_manifest(built):
    manifest, _, _ = built
    variant = manifest.variant()
    assert [s.has_exit for s in variant.segments] == [True, True, True]
    for spec in (*variant.segments, variant.no_exit):
        path = manifest.path(spec.file)
        assert float_ops(path) == []
        assert 'TRANSPOSE' not in {op.name for op in list_ops(path)}
        assert spec.param_bytes > 0 and spec.macs > 0
    first, last = variant.segments[0], variant.segments[-1]
    assert first.input.shape == (1, 28, 28, 1)
    assert last.logits.shape == (1, 10) and last.features is None
    assert variant.no_exit.macs < variant.macs  # no exit heads


def test_verification_and_calibrated_modes(built):
    manifest, reports, _ = built
    (report,) = reports
    assert report.agreement >= 0.9
    assert abs(report.int8_accuracy[-1] - report.float_accuracy[-1]) < 0.05
    variant = manifest.variant()
    profile = load_profile(manifest.directory).variant('base')
    for policy in ('entropy', 'max_softmax', 'margin'):
        modes = {p.mode: p for p in profile.exit_curves[policy] if p.mode}
        assert list(modes) == ['performance', 'balanced', 'eco', 'critical']
        costs = [modes[m].mean_macs for m in modes]
        assert costs == sorted(costs, reverse=True), 'a looser budget never costs more'
        final_only = profile.final_exit_accuracy
        for name, budget in (('balanced', 0.005), ('critical', 0.04)):
            assert modes[name].accuracy >= final_only - budget - 1e-9
        for point in profile.exit_curves[policy]:
            assert abs(sum(point.exit_rates) - 1) < 1e-9
        assert variant.thresholds[policy]['eco'] == list(modes['eco'].thresholds)
    for seg in profile.segments:
        stats = seg.latency['litert_cpu']
        assert 0 < stats.median_ms <= stats.p99_ms
    assert (manifest.directory / 'exit_curves.png').stat().st_size > 10_000


def test_early_exit_chain_matches_all_exit_evaluation(built):
    manifest, _, result = built
    chain = SegmentChain(manifest)
    policy = get_policy('entropy')
    thresholds = chain.variant.thresholds['entropy']['critical']
    inputs = chain.quantize_frames(result.dataset.test.images[:40])
    logits = chain.all_exit_logits(inputs)
    expected = exit_index([policy.score(z) for z in logits], policy, thresholds)
    for i, x in enumerate(inputs):
        decision = chain.run(x[None], policy, thresholds)
        assert decision.exit_index == expected[i]
        np.testing.assert_array_equal(decision.logits, logits[decision.exit_index][i])
    assert len(set(expected.tolist())) > 1, 'critical mode should use more than one exit'


def test_failed_build_leaves_the_old_artifact(built, tmp_path):
    manifest, _, result = built
    target = tmp_path / 'kept'
    shutil.copytree(manifest.directory, target)
    before = (target / 'manifest.yaml').read_text()
    with pytest.raises(ExportError, match='agree'):
        build_model_dir('kept', target, result.dataset, [VariantSource('base', result.model)],
                        'resnet_ee', {}, BuildOptions(calibration_frames=16, latency_repeats=2,
                                                      eval_limit=50, min_agreement=1.01,
                                                      progress=False))
    assert (target / 'manifest.yaml').read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ['kept']


def test_corrupt_manifest_names_file_and_key(built, tmp_path):
    manifest, _, _ = built
    target = tmp_path / 'broken'
    shutil.copytree(manifest.directory, target)
    text = (target / 'manifest.yaml').read_text()
    (target / 'manifest.yaml').write_text(text.replace('zero_point: ', 'zero_point: 300 #', 1))
    with pytest.raises(ArtifactError, match=r'broken/manifest.yaml: .*zero_point'):
        load_manifest(target)
    (target / 'manifest.yaml').write_text('schema_version: 99\n')
    with pytest.raises(ArtifactError, match='version 1'):
        load_manifest(target)
    (target / 'manifest.yaml').write_text(text)
    (target / 'base' / 'segment1.tflite').unlink()
    with pytest.raises(ArtifactError, match='segment1.tflite'):
        load_manifest(target)


def test_cli_reports_bad_input_without_a_stack_trace(tmp_path, capsys):
    config = tmp_path / 'c.yaml'
    config.write_text('arch: resnet_ee\nno_such_option: 1\n')
    assert cli.main(['train', '--config', str(config)]) == 2
    assert 'no_such_option' in capsys.readouterr().err
    missing = tmp_path / 'missing.pt'
    assert cli.main(['build', '--checkpoint', str(missing), '--out', str(tmp_path / 'm')]) == 2
    assert 'missing.pt' in capsys.readouterr().err


def test_dataset_splits_are_seeded():
    dataset = load_config_dataset(TrainConfig(**SMALL))
    again = load_config_dataset(TrainConfig(**SMALL))
    other = load_config_dataset(TrainConfig(**{**SMALL, 'seed': 4}))
    assert (len(dataset.train), len(dataset.val), len(dataset.test)) == (54000, 6000, 10000)
    np.testing.assert_array_equal(dataset.val.images, again.val.images)
    assert not np.array_equal(dataset.val.labels, other.val.labels)
    np.testing.assert_array_equal(dataset.test.labels, other.test.labels)  # official split


def test_missing_dataset_says_how_to_install(tmp_path, monkeypatch):
    from dyn_perception.runtime.datasets import DatasetError, load_dataset
    monkeypatch.setenv('DYN_PERCEPTION_FMNIST_DIR', str(tmp_path))
    with pytest.raises(DatasetError, match='apt-get install dataset-fashion-mnist'):
        load_dataset('fashion_mnist')
