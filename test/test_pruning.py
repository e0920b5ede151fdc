# Copyright 2026 dyn_perception maintainers. Apache-2.0.
"""
Structured pruning: every criterion through the one pruner, checkpoints, bad input, export.

Small networks and a few steps: the surgery, the rebuild from the pruning history and the
regulariser are checked exactly; the end-to-end test runs the recorded command on a tiny
recipe and loads the exported int8 segments of the pruned variant in the runtime.
"""

import copy

from dyn_perception.runtime.artifacts import EXIT_POLICIES, load_manifest, load_profile
from dyn_perception.runtime.chain import SegmentChain
from dyn_perception.runtime.datasets import Dataset, load_dataset, Split
from dyn_perception.runtime.exits import get_policy
from dyn_perception.runtime.modes import load_modes
from dyn_perception.training import cli
from dyn_perception.training.models import build_network
from dyn_perception.training.pruning import (
    channel_norms, CRITERIA, get_criterion, network_macs, prunable_groups, prune_to_macs,
    PruneConfig, PruningError, run_pruning
)
from dyn_perception.training.train import (
    checkpoint_state, joint_loss, load_checkpoint, model_from_checkpoint, save_checkpoint,
    TrainConfig
)
import numpy as np
import pytest
import torch
from torch import nn
import yaml

WIDTHS = [8, 16, 16, 32]
STRENGTH = {'l1l2': 0.01, 'bn_scale': 1e-4}


def tiny_network(seed: int = 0) -> nn.Module:
    """Return a small resnet_ee whose BN affine parameters differ, as after training."""
    torch.manual_seed(seed)
    model = build_network('resnet_ee', 10, (28, 28, 1), widths=WIDTHS)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            nn.init.uniform_(module.weight, 0.2, 1.0)
            nn.init.uniform_(module.bias, -0.1, 0.1)
    return model.eval()


def criterion(name: str):
    return get_criterion(name, STRENGTH.get(name, 0.0))


def frames(count: int = 4) -> torch.Tensor:
    return torch.randn(count, 1, 28, 28, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize('name', sorted(CRITERIA))
def test_every_criterion_reaches_the_mac_target_and_keeps_the_exits(name):
    model = tiny_network()
    base_macs = network_macs(model)
    heads_before = [[m.out_channels for m in s.head.modules() if isinstance(m, nn.Conv2d)]
                    for s in model.segments]
    result = prune_to_macs(model, criterion(name), 0.5, steps=20)
    assert result.macs == network_macs(model) <= 0.5 * base_macs
    assert result.removed_ratio >= 0.5 and result.base_macs == base_macs
    assert result.history, 'the pruning history is what rebuilds the network'
    outputs = model.eval()(frames())
    assert [tuple(o.shape) for o in outputs] == [(4, 10)] * 3
    heads_after = [[m.out_channels for m in s.head.modules() if isinstance(m, nn.Conv2d)]
                   for s in model.segments]
    assert heads_after == heads_before, 'exit heads are kept whole; only their inputs shrink'
    assert sum(result.channels.values()) < sum(
        m.out_channels for m in tiny_network().modules() if isinstance(m, nn.Conv2d))


def test_pruned_checkpoint_rebuilds_with_identical_outputs(tmp_path):
    model = tiny_network()
    result = prune_to_macs(model, criterion('l1l2'), 0.6, steps=20)
    split = Split(np.zeros((2, 28, 28, 1), np.uint8), np.zeros(2, np.int64))
    dataset = Dataset('synthetic', tuple('0123456789'), split, split, split, (0.5,), (0.25,))
    config = TrainConfig(arch='resnet_ee', arch_options={'widths': WIDTHS})
    path = tmp_path / 'pruned.pt'
    save_checkpoint(path, checkpoint_state(config, model, dataset, [], 0, 0,
                                           pruning={'history': result.history}))
    rebuilt = model_from_checkpoint(load_checkpoint(path))
    x = frames()
    for a, b in zip(rebuilt(x), model.eval()(x)):
        assert torch.equal(a, b)
    assert network_macs(rebuilt) == result.macs


def test_l1l2_regulariser_drives_group_norms_down():
    model = tiny_network()
    groups = prunable_groups(model)
    regulariser = get_criterion('l1l2', 1.0).regulariser(groups)

    def sparsity() -> tuple[float, int]:
        with torch.no_grad():
            norms = [channel_norms(g) for g in groups]
        ratio = float(sum(n.sum() / n.norm() for n in norms))
        return ratio, sum(int((n < 0.05 * n.max()).sum()) for n in norms)

    ratio_before, small_before = sparsity()
    optimiser = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    for _ in range(150):
        optimiser.zero_grad()
        regulariser(model).backward()
        optimiser.step()
    ratio_after, small_after = sparsity()
    assert small_before == 0
    assert ratio_after < 0.8 * ratio_before, (ratio_before, ratio_after)
    channels = sum(len(g[0].idxs) for g in groups)
    assert small_after >= 0.2 * channels, f'{small_after} of {channels} channels near zero'


def _recipe(tmp_path, **changes) -> dict:
    base = tmp_path / 'base.yaml'
    base.write_text(yaml.safe_dump({
        'arch': 'resnet_ee', 'arch_options': {'widths': WIDTHS}, 'dataset': 'fashion_mnist',
        'epochs': 1, 'max_steps': 40, 'train_subset': 2048, 'batch_size': 64, 'lr': 0.05,
        'augment': 'none', 'seed': 2, 'threads': 1}))
    recipe = {
        'base_config': str(base), 'base_checkpoint': str(tmp_path / 'runs' / 'base.pt'),
        'work_dir': str(tmp_path / 'runs' / 'pruning'),
        'criteria': {'l1l2': {'strength': 0.01}}, 'ratios': [0.5], 'steps': 20,
        'sparse_training': {'max_steps': 5, 'train_subset': 512, 'lr': 0.01},
        'finetune': {'max_steps': 5, 'train_subset': 512, 'lr': 0.01},
        'outputs': {str(tmp_path / 'models' / 'tiny'): ['l1l2']},
        'build': {'eval_limit': 100, 'min_agreement': 0.5, 'latency_repeats': 3,
                  'calibration_frames': 32},
    }
    return {**recipe, **changes}


@pytest.mark.parametrize('changes, message', [
    ({'ratios': [1.0]}, 'strictly between 0 and 1'),
    ({'ratios': [-0.1]}, 'strictly between 0 and 1'),
    ({'criteria': {'l3': None}}, "unknown pruning criterion 'l3'; known: l1, l1l2"),
    ({'criteria': {'l1l2': None}}, 'needs a positive regulariser strength'),
    ({'criteria': {'l1': {'strength': 0.1}}}, 'trains no regulariser'),
    ({'outputs': {'x': ['bn_scale']}}, 'not configured'),
])
def test_bad_recipe_is_refused_with_a_reason(tmp_path, changes, message):
    with pytest.raises(ValueError, match=message):
        PruneConfig.from_dict(_recipe(tmp_path, **changes))


def test_ratio_that_empties_a_layer_fails_before_any_training(tmp_path, capsys):
    recipe = _recipe(tmp_path, ratios=[0.5, 0.995])
    with pytest.raises(PruningError, match=r'ratios \[0.995\] would remove every filter'):
        run_pruning(PruneConfig.from_dict(recipe), 'test', progress=False)
    assert not (tmp_path / 'runs').exists(), 'nothing may be trained or written first'
    path = tmp_path / 'prune.yaml'
    path.write_text(yaml.safe_dump(recipe))
    assert cli.main(['prune', '--config', str(path)]) == 2
    assert 'would remove every filter' in capsys.readouterr().err


def test_networks_whose_heads_flatten_are_refused():
    with pytest.raises(PruningError, match='NHWC'):
        prune_to_macs(build_network('blenet', 10, (28, 28, 1)), criterion('l1'), 0.3)


def test_recorded_command_exports_a_pruned_variant_the_runtime_runs(tmp_path):
    recipe = _recipe(tmp_path, distill_from_base=True)
    (manifest,) = run_pruning(PruneConfig.from_dict(recipe), 'test', progress=False).values()
    assert [v.name for v in manifest.variants] == ['base', 'l1l2_50']
    manifest = load_manifest(manifest.directory)
    base, pruned = manifest.variant('base'), manifest.variant('l1l2_50')
    assert pruned.no_exit.macs <= 0.5 * base.no_exit.macs
    assert pruned.param_bytes < base.param_bytes
    assert pruned.pruning['criterion'] == 'l1l2'
    assert pruned.pruning['mac_reduction'] >= 0.5
    assert pruned.pruning['finetune_teacher'] == 'base'
    assert len(pruned.pruning['oneshot_float_accuracy']['val']) == 3
    chain = SegmentChain(manifest, 'l1l2_50')
    images = load_dataset('fashion_mnist').test.images[:8]
    policy = get_policy('entropy')
    for x in chain.quantize_frames(images):
        decision = chain.run(x[None], policy, pruned.thresholds['entropy']['eco'])
        assert decision.logits.shape == (10,)
    logits = chain.all_exit_logits(chain.quantize_frames(images))
    assert [z.shape for z in logits] == [(8, 10)] * 3
    assert (manifest.directory / 'pruning.png').stat().st_size > 10_000
    # Every mode runs a variant whose point keeps the mode's budget against the unpruned
    # network's final exit (the unpruned one always does, so no mode is left without).
    profile = load_profile(manifest.directory)
    assert set(manifest.mode_variants) == set(EXIT_POLICIES)
    for policy, chosen in manifest.mode_variants.items():
        for mode in load_modes():
            point, = (p for p in profile.variant(chosen[mode.name]).exit_curves[policy]
                      if p.mode == mode.name)
            assert point.loss_bound <= mode.max_accuracy_loss / 100 + 1e-9
    # The stage checkpoints rebuild the same pruned network without pruning again.
    state = load_checkpoint(tmp_path / 'runs' / 'pruning' / 'l1l2_50.pt')
    rebuilt = model_from_checkpoint(state)
    assert network_macs(rebuilt) == state['pruning']['manifest']['macs']
    assert copy.deepcopy(rebuilt)(frames())[0].shape == (4, 10)


def test_a_teacher_distils_into_every_exit():
    torch.manual_seed(0)
    logits = [torch.randn(8, 10) for _ in range(3)]
    teacher = torch.randn(8, 10)
    target = torch.randint(0, 10, (8,))
    weights, temperature = [1.0, 1.0, 1.0], 3.0
    plain = joint_loss(logits, target, weights)

    def kd(z, source):
        return temperature ** 2 * torch.nn.functional.kl_div(
            torch.log_softmax(z / temperature, 1), torch.softmax(source / temperature, 1),
            reduction='batchmean')

    own = joint_loss(logits, target, weights, 0.5, temperature)
    assert torch.allclose(own - plain, 0.5 * (kd(logits[0], logits[2]) + kd(logits[1], logits[2])))
    taught = joint_loss(logits, target, weights, 0.5, temperature, teacher)
    assert torch.allclose(taught - plain, 0.5 * sum(kd(z, teacher) for z in logits))
