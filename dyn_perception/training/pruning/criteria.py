"""
Pruning criteria: how filters are ranked, and what (if anything) makes them sparse first.

As in Torch-Pruning, a criterion is an importance estimator plugged into one pruner; here it
also carries the training-time regulariser that prepares the network for it (none for the
one-shot criteria). The surgery in :mod:`.surgery` never branches on the criterion: a new
criterion is a new class in :data:`CRITERIA`.

- ``l1``: l1 norm of each filter of the group's first layer, ranked per layer (Li et al.,
  "Pruning Filters for Efficient ConvNets", ICLR 2017): prune, then fine-tune.
- ``l1l2``: the l1/l2 pseudo-norm of the vector of channel norms of every group, added to the
  training loss (Berthelier et al., ICPR CADL 2020); it is scale-invariant, so it does not
  shrink every filter like an l1 penalty does but concentrates each layer's energy on a few
  filters. Channels whose norm falls under a threshold relative to the largest of their group
  are then removed, the threshold ranked across the whole network.
- ``bn_scale``: network slimming (Liu et al., ICCV 2017): l1 on the BatchNorm scales during
  training, then the channels of smallest |gamma| removed across the network.
- ``group_norm``: Torch-Pruning's group criterion (Fang et al., DepGraph, CVPR 2023): l2 norm
  of every parameter a channel couples, over the whole group, normalised per group.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Callable, ClassVar, Optional, Sequence

import torch
from torch import nn
import torch_pruning as tp

Regulariser = Callable[[nn.Module], torch.Tensor]
Group = tp.dependency.Group

# Adds a floor under a norm so its gradient stays finite when a channel reaches zero.
_NORM_EPS = 1e-12


def _squared_rows(param: torch.Tensor, idxs: Sequence[int]) -> torch.Tensor:
    rows = param[torch.as_tensor(idxs, dtype=torch.long)]
    return rows.reshape(len(idxs), -1).pow(2).sum(1)


def channel_norms(group: Group) -> torch.Tensor:
    """
    Return the differentiable l2 norm of every channel of a coupled group (root order).

    In a BatchNorm network a convolution filter has no scale of its own (BN divides it by the
    batch std), so its weights can shrink without changing the network. What decides whether
    a channel matters is its BN affine pair: a channel whose gamma and beta are zero outputs
    zero and can go with no change to the function. So a channel's norm is taken over the
    (gamma, beta) of every BN of the group, and over the filter weights and biases only in
    groups without BN. The group (coupled layers, indices) comes from the dependency graph.
    """
    channels = len(group[0].idxs)
    bn = [item for item in group if item.dep.pruning_fn == tp.prune_batchnorm_out_channels]
    producers = (tp.prune_conv_out_channels, tp.prune_linear_out_channels)
    members = bn or [item for item in group if item.dep.pruning_fn in producers]
    terms = [torch.zeros(channels, dtype=param.dtype).index_add(
                 0, torch.as_tensor(item.root_idxs, dtype=torch.long),
                 _squared_rows(param, item.idxs))
             for item in members
             for param in (item.dep.target.module.weight, item.dep.target.module.bias)
             if param is not None]
    if not terms:
        raise ValueError(f'group rooted at {group[0].dep.target.name} has no filters')
    squares = torch.stack(terms).sum(0)
    return (squares + _NORM_EPS).sqrt()


class RelativeChannelNorm(tp.importance.Importance):
    """Importance of each channel: its :func:`channel_norms` over the largest of its group."""

    @torch.no_grad()
    def __call__(self, group: Group) -> torch.Tensor:
        norms = channel_norms(group)
        return norms / norms.max()


@dataclass(frozen=True)
class Criterion(abc.ABC):
    """
    A filter ranking (a Torch-Pruning importance) and an optional sparsity regulariser.

    ``global_ranking``: rank filters across the whole network (one threshold) rather than
    remove the same share of each layer. ``regularised``: the network is first trained with
    :meth:`regulariser`, scaled by ``strength``.
    """

    strength: float = 0.0
    name: ClassVar[str]
    global_ranking: ClassVar[bool]
    regularised: ClassVar[bool] = False

    def __post_init__(self) -> None:
        if self.regularised and not self.strength > 0:
            raise ValueError(f'criterion {self.name} needs a positive regulariser strength')
        if not self.regularised and self.strength:
            raise ValueError(f'criterion {self.name} trains no regulariser; drop its strength')

    @abc.abstractmethod
    def importance(self) -> tp.importance.Importance:
        """Return the estimator the pruner ranks channels with."""

    def regulariser(self, groups: Sequence[Group]) -> Optional[Regulariser]:
        """Return the extra training loss over the prunable ``groups``, or None."""
        return None


@dataclass(frozen=True)
class L1Norm(Criterion):
    name: ClassVar[str] = 'l1'
    global_ranking: ClassVar[bool] = False

    def importance(self) -> tp.importance.Importance:
        return tp.importance.GroupMagnitudeImportance(p=1, group_reduction='first',
                                                      normalizer=None)


@dataclass(frozen=True)
class L1L2(Criterion):
    name: ClassVar[str] = 'l1l2'
    global_ranking: ClassVar[bool] = True
    regularised: ClassVar[bool] = True

    def importance(self) -> tp.importance.Importance:
        return RelativeChannelNorm()

    def regulariser(self, groups: Sequence[Group]) -> Regulariser:
        groups = list(groups)

        def l1_over_l2(model: nn.Module) -> torch.Tensor:
            total = sum(norms.sum() / norms.norm() for norms in map(channel_norms, groups))
            return self.strength * total

        return l1_over_l2


@dataclass(frozen=True)
class BNScale(Criterion):
    name: ClassVar[str] = 'bn_scale'
    global_ranking: ClassVar[bool] = True
    regularised: ClassVar[bool] = True

    def importance(self) -> tp.importance.Importance:
        # Raw |gamma|, not normalised per group: slimming ranks scales across the network.
        return tp.importance.BNScaleImportance(normalizer=None)

    def regulariser(self, groups: Sequence[Group]) -> Regulariser:
        scales = list({item.dep.target.module: None for group in groups for item in group
                       if item.dep.pruning_fn == tp.prune_batchnorm_out_channels})

        def l1_on_gamma(model: nn.Module) -> torch.Tensor:
            return self.strength * sum(bn.weight.abs().sum() for bn in scales)

        return l1_on_gamma


@dataclass(frozen=True)
class GroupNorm(Criterion):
    name: ClassVar[str] = 'group_norm'
    global_ranking: ClassVar[bool] = True

    def importance(self) -> tp.importance.Importance:
        return tp.importance.GroupMagnitudeImportance(p=2, group_reduction='mean',
                                                      normalizer='mean')


CRITERIA: dict[str, type[Criterion]] = {c.name: c for c in (L1Norm, L1L2, BNScale, GroupNorm)}


def get_criterion(name: str, strength: float = 0.0) -> Criterion:
    """Return the criterion called ``name``; an unknown name is an error listing the known."""
    if name not in CRITERIA:
        raise ValueError(f'unknown pruning criterion {name!r}; known: {", ".join(CRITERIA)}')
    return CRITERIA[name](strength=strength)
