"""
Structural surgery with Torch-Pruning's dependency graph: remove filters until a MAC target.

The dependency graph knows which channels are coupled (residual additions, a body's output
read by the next segment and by an exit head), so removing a filter also removes the matching
BN channel and the input channels of every consumer, exit heads included. Exit heads are kept
whole: no filter inside them is a pruning root, and their classifiers keep one output per
class; only their inputs follow the producers.

What was removed is Torch-Pruning's pruning history (root layer, channel indices, in order).
A checkpoint stores it, and :func:`apply_history` replays it on a freshly built network, so a
pruned model is rebuilt by the same graph that pruned it and never by channel bookkeeping.
"""

from __future__ import annotations

from contextlib import contextmanager
import copy
from dataclasses import dataclass, field
from typing import Iterator, Optional

from dyn_perception.training.export import count_macs
from dyn_perception.training.models import EarlyExitNet, NHWCFlatten
from dyn_perception.training.pruning.criteria import Criterion, Group, L1Norm
import torch
from torch import nn
import torch_pruning as tp


class PruningError(ValueError):
    """A pruning request that cannot be met (target, network, criterion)."""


@dataclass
class PruningResult:
    """What one pruning run removed: the replayable history and the cost before and after."""

    history: list
    base_macs: int
    macs: int
    target_ratio: float
    channels: dict[str, int] = field(default_factory=dict)

    @property
    def removed_ratio(self) -> float:
        """Return the fraction of the MACs of the network without exits that was removed."""
        return 1.0 - self.macs / self.base_macs


def example_input(model: EarlyExitNet) -> torch.Tensor:
    h, w, c = model.input_shape
    return torch.zeros(1, c, h, w)


def network_macs(model: EarlyExitNet) -> int:
    """
    Return the MACs of the network without its early exits: every body, then the last head.

    That is the network every comparison is against ('the unpruned network without exits');
    the early heads are kept whole and cost the frames that reach them, which the exit
    curves of the build account for.
    """
    bodies = [s.body for s in model.segments]
    return count_macs(nn.Sequential(*bodies, model.segments[-1].head), example_input(model))


def check_prunable(model: EarlyExitNet) -> None:
    """
    Refuse networks whose exit heads Torch-Pruning would cut wrongly.

    A head that flattens in NHWC order (``blenet``) reads channel c at positions c, c + C,
    ...; Torch-Pruning maps a flatten as NCHW (c * H * W ...), so it would drop the wrong
    inputs of the classifier. Heads that pool (resnet_ee, mobilenetv2_ee) are exact.
    """
    if any(isinstance(m, NHWCFlatten) for m in model.modules()):
        raise PruningError(f'{model.arch}: its exit heads flatten in NHWC order, which '
                           "Torch-Pruning's flatten index mapping (NCHW) gets wrong; pruning "
                           'supports networks whose heads pool (resnet_ee, mobilenetv2_ee)')


def _exit_heads(model: EarlyExitNet) -> list[nn.Module]:
    return [s.head for s in model.segments if s.head is not None]


@contextmanager
def _eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Trace in eval mode: a one-frame batch must not touch the BN running statistics."""
    was_training = model.training
    try:
        yield model.eval()
    finally:
        model.train(was_training)


def dependency_graph(model: EarlyExitNet) -> tp.DependencyGraph:
    with _eval_mode(model):
        return tp.DependencyGraph().build_dependency(model, example_input(model))


def prunable_groups(model: EarlyExitNet) -> list[Group]:
    """Return every coupled channel group the pruner may cut (rooted outside the exit heads)."""
    check_prunable(model)
    graph = dependency_graph(model)
    ignored = [m for head in _exit_heads(model) for m in head.modules()]
    return list(graph.get_all_groups(ignored_layers=ignored,
                                     root_module_types=[nn.Conv2d, nn.Linear]))


def _pruner(model: EarlyExitNet, criterion: Criterion, max_layer_ratio: float,
            steps: int, global_ranking: bool) -> tp.pruner.BasePruner:
    with _eval_mode(model):
        return tp.pruner.BasePruner(
            model, example_input(model), importance=criterion.importance(),
            global_pruning=global_ranking, pruning_ratio=max_layer_ratio,
            max_pruning_ratio=max_layer_ratio, iterative_steps=steps,
            ignored_layers=_exit_heads(model))


def mac_floor(model: EarlyExitNet, max_layer_ratio: float) -> int:
    """
    Return the MACs left when every layer has lost ``max_layer_ratio`` of its filters.

    No MAC target below this can be met without emptying some layer. It depends on the
    shapes only (which filters go does not matter), so any criterion measures it, on a copy.
    """
    trial = copy.deepcopy(model)
    _pruner(trial, L1Norm(), max_layer_ratio, steps=1, global_ranking=False).step()
    return network_macs(trial)


def channel_counts(model: nn.Module) -> dict[str, int]:
    """Return the output channels of every convolution, by module name (for the manifest)."""
    return {name: m.out_channels for name, m in model.named_modules()
            if isinstance(m, nn.Conv2d)}


def prune_to_macs(model: EarlyExitNet, criterion: Criterion, ratio: float,
                  max_layer_ratio: float = 0.9, steps: int = 100,
                  base_macs: Optional[int] = None) -> PruningResult:
    """
    Remove filters of ``model`` in place until at least ``ratio`` of its MACs are gone.

    The pruner removes a further ``max_layer_ratio / steps`` of the channels at each step
    (ranked per layer or across the network, as the criterion says) and re-scores the rest,
    so the last step overshoots the target by at most one step's worth of channels.
    """
    check_prunable(model)
    base = base_macs or network_macs(model)
    target = (1.0 - ratio) * base
    pruner = _pruner(model, criterion, max_layer_ratio, steps, criterion.global_ranking)
    macs = network_macs(model)
    while macs > target:
        if pruner.current_step >= steps:
            raise PruningError(f'{criterion.name}: {macs} MACs left after {steps} steps, '
                               f'target {target:.0f}; every layer is at its limit of '
                               f'{max_layer_ratio:.0%} filters removed')
        with _eval_mode(model):
            pruner.step()
        macs = network_macs(model)
    return PruningResult(history=[list(h) for h in pruner.pruning_history()],
                         base_macs=base, macs=macs, target_ratio=ratio,
                         channels=channel_counts(model))


def apply_history(model: EarlyExitNet, history: list) -> EarlyExitNet:
    """Replay a recorded pruning history on a freshly built network, in place."""
    check_prunable(model)
    graph = dependency_graph(model)
    graph.load_pruning_history([list(h) for h in history])
    return model
