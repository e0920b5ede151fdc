"""
The recorded pruning command: from one trained network to a family of pruned variants.

Stages, each saved in the work directory so that an interrupted run resumes where it stopped:

1. the unpruned network, trained by its own config if its checkpoint is missing or
   unfinished (``train`` resumes; a finished checkpoint is used as it is);
2. per criterion with a regulariser, a short sparse training from the base weights;
3. per criterion and ratio, pruning to the MAC target with no retraining (that 'one-shot'
   accuracy is recorded), then the same fine-tune for every criterion;
4. per output directory, the build (``training.build``): the base and its variants exported
   to int8, verified, calibrated and profiled; then the accuracy-vs-cost plot.

Every check on the recipe, including whether each ratio can be reached without emptying a
layer, runs before stage 1. The test split is measured, never used to choose anything.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

from dyn_perception.runtime.artifacts import load_profile, Manifest
from dyn_perception.runtime.datasets import Dataset
from dyn_perception.training.build import build_model_dir, BuildOptions, VariantSource
from dyn_perception.training.models import EarlyExitNet
from dyn_perception.training.pruning.config import PruneConfig, variant_name
from dyn_perception.training.pruning.criteria import Criterion
from dyn_perception.training.pruning.plot import plot_front, profile_points
from dyn_perception.training.pruning.surgery import (
    check_prunable, mac_floor, network_macs, prunable_groups, prune_to_macs, PruningError
)
from dyn_perception.training.train import (
    checkpoint_state, CheckpointError, exit_accuracies, load_checkpoint, load_config_dataset,
    model_from_checkpoint, network_for, predict_logits, save_checkpoint, train, TrainConfig
)
from tqdm import tqdm


@dataclass
class PrunedVariant:
    """A pruned, fine-tuned network and what the manifest records about how it was made."""

    name: str
    model: EarlyExitNet
    pruning: dict


def check_feasible(config: PruneConfig, base: TrainConfig, dataset: Dataset) -> None:
    """
    Refuse, before any training, a ratio that would empty a layer or a network it cannot cut.

    The floor depends on the architecture only (every layer keeps ``1 - max_layer_ratio`` of
    its filters), so a freshly built network answers without the trained weights.
    """
    model = network_for(base, dataset)
    check_prunable(model)
    full = network_macs(model)
    floor = mac_floor(model, config.max_layer_ratio)
    reachable = 1.0 - floor / full
    too_far = [r for r in config.ratios if r > reachable]
    if too_far:
        raise PruningError(
            f'ratios {too_far} would remove every filter of some layer: with each layer '
            f'keeping {1 - config.max_layer_ratio:.0%} of its filters, {base.arch} keeps '
            f'{floor} of {full} MACs, so at most {reachable:.1%} of the MACs can be removed')


def _accuracy(model: EarlyExitNet, dataset: Dataset) -> dict[str, list[float]]:
    """Return float accuracy per exit on val (for choices) and test (reported only)."""
    return {name: exit_accuracies(predict_logits(model, split, dataset.mean, dataset.std),
                                  split.labels)
            for name, split in (('val', dataset.val), ('test', dataset.test))}


def _cached(path: Path, recipe: dict) -> Optional[dict]:
    """Return the stage checkpoint at ``path`` if it was made by this same ``recipe``."""
    if not path.is_file():
        return None
    state = load_checkpoint(path)
    if state.get('prune_recipe') != recipe:
        raise CheckpointError(f'{path}: made by a different pruning recipe; delete it or set '
                              'another work_dir to rebuild it')
    return state


class PruningRun:
    """The stages of one recipe; they share the data, the base network and the work folder."""

    def __init__(self, config: PruneConfig, progress: bool = True):
        self.config, self.progress = config, progress
        self.base_config = config.base_train_config()
        self.dataset = load_config_dataset(self.base_config)
        check_feasible(config, self.base_config, self.dataset)
        self.work = config.work_path
        self._base: Optional[tuple[EarlyExitNet, dict]] = None

    def _say(self, message: str) -> None:
        if self.progress:
            tqdm.write(message)

    @property
    def base(self) -> tuple[EarlyExitNet, dict]:
        """Return the unpruned network and its checkpoint (trained first if unfinished)."""
        if self._base is None:
            path = self.config.base_checkpoint_path
            self._say(f'base network: {path}')
            train(self.base_config, path, dataset=self.dataset, progress=self.progress)
            state = load_checkpoint(path)
            self._base = model_from_checkpoint(state, self.dataset), state
        return self._base

    def _save(self, path: Path, config: TrainConfig, model: EarlyExitNet, history: list,
              recipe: dict, pruning: Optional[dict] = None) -> None:
        state = checkpoint_state(config, model, self.dataset, history,
                                 history[-1]['epoch'], history[-1]['step'], pruning=pruning)
        save_checkpoint(path, {**state, 'prune_recipe': recipe})

    def _sparse(self, criterion: Criterion) -> tuple[EarlyExitNet, dict]:
        """Train ``criterion``'s regulariser into a copy of the base (the base if it has none)."""
        base, state = self.base
        recipe = {'base_checkpoint': str(self.config.base_checkpoint_path),
                  'base_step': state['step'], 'base_config': state['config']}
        if not criterion.regularised:
            return base, recipe
        recipe.update(criterion=criterion.name, strength=criterion.strength,
                      sparse_training=self.config.sparse_training)
        path = self.work / f'sparse_{criterion.name}.pt'
        cached = _cached(path, recipe)
        if cached is not None:
            return model_from_checkpoint(cached, self.dataset), recipe
        self._say(f'{criterion.name}: sparse training from the base weights -> {path}')
        model = copy.deepcopy(base)
        config = self.config.stage_config(self.base_config, 'sparse_training')
        result = train(config, None, extra_loss=criterion.regulariser(prunable_groups(model)),
                       model=model, dataset=self.dataset, progress=self.progress)
        self._save(path, config, result.model, result.history, recipe)
        return result.model, recipe

    def _variant(self, criterion: Criterion, ratio: float, start: EarlyExitNet,
                 start_recipe: dict) -> PrunedVariant:
        """Prune a copy of ``start`` to ``ratio`` of the MACs removed, then fine-tune it."""
        name = variant_name(criterion.name, ratio)
        recipe = {**start_recipe, 'criterion': criterion.name, 'ratio': ratio,
                  'max_layer_ratio': self.config.max_layer_ratio, 'steps': self.config.steps,
                  'finetune': self.config.finetune}
        if self.config.distill_from_base:  # absent means off: older stages stay valid
            recipe['distill_from_base'] = True
        path = self.work / f'{name}.pt'
        cached = _cached(path, recipe)
        if cached is not None:
            return PrunedVariant(name, model_from_checkpoint(cached, self.dataset),
                                 cached['pruning']['manifest'])
        model = copy.deepcopy(start)
        result = prune_to_macs(model, criterion, ratio, self.config.max_layer_ratio,
                               self.config.steps)
        oneshot = _accuracy(model, self.dataset)
        self._say(f'{name}: {result.removed_ratio:.1%} of MACs removed; one-shot val accuracy '
                  'per exit ' + ' '.join(f'{a:.4f}' for a in oneshot['val']))
        config = self.config.stage_config(self.base_config, 'finetune')
        teacher = self.base[0] if self.config.distill_from_base else None
        tuned = train(config, None, model=model, dataset=self.dataset, progress=self.progress,
                      teacher=teacher)
        manifest = {
            'criterion': criterion.name, 'strength': criterion.strength,
            'target_mac_reduction': ratio, 'mac_reduction': result.removed_ratio,
            'macs': result.macs, 'base_macs': result.base_macs,
            'sparse_training': self.config.sparse_training if criterion.regularised else None,
            'finetune': self.config.finetune,
            'finetune_teacher': 'base' if self.config.distill_from_base else None,
            'oneshot_float_accuracy': oneshot,
            'channels': result.channels,
        }
        self._save(path, config, tuned.model, tuned.history, recipe,
                   pruning={'history': result.history, 'manifest': manifest})
        return PrunedVariant(name, tuned.model, manifest)

    def variants(self, name: str) -> list[PrunedVariant]:
        """Return the variants of criterion ``name`` at every ratio (made, or from the cache)."""
        criterion = self.config.criterion(name)
        start, recipe = self._sparse(criterion)
        return [self._variant(criterion, ratio, start, recipe) for ratio in self.config.ratios]

    def build(self, variants: dict[str, list[PrunedVariant]],
              command: str) -> dict[str, Manifest]:
        """Build every output directory: the base and its criteria's variants, then the plot."""
        base, state = self.base
        provenance = {'command': command, 'seed': self.base_config.seed,
                      'train_config': state['config'], 'history': state.get('history', [])[-1:],
                      'pruning_config': asdict(self.config)}
        options = BuildOptions(**self.config.build, progress=self.progress)
        built = {}
        for out, names in self.config.outputs.items():
            sources = [VariantSource('base', base)] + [
                VariantSource(v.name, v.model, v.pruning)
                for name in names or [] for v in variants[name]]
            self._say(f'build {out}: ' + ', '.join(s.name for s in sources))
            manifest, _ = build_model_dir(Path(out).name, Path(out), self.dataset, sources,
                                          self.base_config.arch, provenance, options)
            plot_front(profile_points(manifest, load_profile(manifest.directory)),
                       manifest.directory / 'pruning.png', f'{manifest.name} (validation split)')
            built[out] = manifest
        return built

    def run(self, command: str) -> dict[str, Manifest]:
        needed = {c for names in self.config.outputs.values() for c in names or []}
        return self.build({name: self.variants(name) for name in self.config.criteria
                           if name in needed}, command)


def run_pruning(config: PruneConfig, command: str, progress: bool = True) -> dict[str, Manifest]:
    """Run every stage of ``config``; return the manifest of every output directory."""
    return PruningRun(config, progress).run(command)
