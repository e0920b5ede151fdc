"""
Structured pruning of early-exit networks: one pruner, several criteria.

Torch-Pruning's dependency graph does the surgery (:mod:`.surgery`); each criterion is an
importance estimator plus an optional sparsity regulariser (:mod:`.criteria`); the recorded
command that turns a trained network into a family of pruned variants is :mod:`.pipeline`,
driven by a :class:`PruneConfig` (:mod:`.config`).
"""

from dyn_perception.training.pruning.config import PruneConfig, variant_name
from dyn_perception.training.pruning.criteria import (
    channel_norms, CRITERIA, Criterion, get_criterion
)
from dyn_perception.training.pruning.pipeline import run_pruning
from dyn_perception.training.pruning.surgery import (
    apply_history, mac_floor, network_macs, prunable_groups, prune_to_macs, PruningError,
    PruningResult
)

__all__ = [
    'apply_history', 'channel_norms', 'CRITERIA', 'Criterion', 'get_criterion', 'mac_floor',
    'network_macs', 'prunable_groups', 'prune_to_macs', 'PruneConfig', 'PruningError',
    'PruningResult', 'run_pruning', 'variant_name',
]
