"""
The pruning recipe of a model family, read from YAML and validated once, before any work.

Everything that determines the pruned variants is here, so the recorded command (``prune
--config C``) rebuilds them: the unpruned network's training config, the criteria and their
regulariser strengths, the MAC ratios, the training of the sparse and fine-tuning stages (as
overrides of the base training config) and which model directories carry which variants.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

from dyn_perception.training.pruning.criteria import Criterion, get_criterion
from dyn_perception.training.train import (
    refuse_unknown_keys, refuse_wrong_types, TrainConfig
)
import yaml

# BuildOptions fields a recipe may set (the rest, such as the modes, come from their files).
BUILD_KEYS = ('calibration_frames', 'min_agreement', 'latency_repeats', 'eval_limit', 'seed')


def _read_yaml_mapping(path: Path, what: str) -> dict:
    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as err:
        raise ValueError(f'{path}: cannot read {what} ({err})') from err
    if not isinstance(data, dict):
        raise ValueError(f'{path}: a {what} is a mapping of options')
    return data


def variant_name(criterion: str, ratio: float) -> str:
    """Name a variant after its criterion and the share of MACs removed: ``l1l2_70``."""
    return f'{criterion}_{round(100 * ratio)}'


@dataclass
class PruneConfig:
    """
    A pruning recipe; see ``config/training/fmnist_eenet_pruning.yaml`` for every field.

    ``criteria`` maps a criterion name to its options (``strength`` of its regulariser);
    ``outputs`` maps a model directory to the criteria whose variants it carries (every
    directory also carries the unpruned ``base``). ``sparse_training`` and ``finetune`` are
    overrides of the base training config (epochs, lr, ...). With ``distill_from_base`` the
    fine-tune distils every exit from the unpruned network's final exit (weight: the fine-tune
    config's ``distill_weight``) instead of from the pruned network's own final exit.
    """

    base_config: str
    criteria: dict
    ratios: list
    outputs: dict
    base_checkpoint: Optional[str] = None
    work_dir: Optional[str] = None
    sparse_training: dict = field(default_factory=lambda: {'epochs': 4, 'lr': 0.02})
    finetune: dict = field(default_factory=lambda: {'epochs': 3, 'lr': 0.01})
    distill_from_base: bool = False
    max_layer_ratio: float = 0.9
    steps: int = 100
    build: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        problems = []
        if not isinstance(self.criteria, dict) or not self.criteria:
            problems.append('criteria must map at least one criterion name to its options')
        else:
            for name, options in self.criteria.items():
                if options is not None and (not isinstance(options, dict)
                                            or set(options) - {'strength'}):
                    problems.append(f'criterion {name}: options are a mapping with at most '
                                    f'"strength", got {options!r}')
                    continue
                try:
                    get_criterion(name, **(options or {}))
                except ValueError as err:
                    problems.append(str(err))
        if not isinstance(self.ratios, list) or not self.ratios:
            problems.append('ratios must be a non-empty list')
        else:
            for ratio in self.ratios:
                if isinstance(ratio, bool) or not isinstance(ratio, (int, float)):
                    problems.append(f'ratio {ratio!r} is not a number')
                elif not 0 < ratio < 1:
                    problems.append(f'ratio {ratio} must be a fraction of MACs removed, '
                                    'strictly between 0 and 1')
            names = [variant_name('x', r) for r in self.ratios if isinstance(r, (int, float))]
            if len(set(names)) != len(names):
                problems.append(f'ratios {self.ratios} must differ by at least one percent')
        if not 0 < self.max_layer_ratio < 1:
            problems.append('max_layer_ratio must be strictly between 0 and 1 (a layer keeps '
                            'at least one filter)')
        if self.steps < 1:
            problems.append('steps must be >= 1')
        if not isinstance(self.outputs, dict) or not self.outputs:
            problems.append('outputs must map at least one model directory to criteria')
        else:
            for out, names in self.outputs.items():
                unknown = set(names or []) - set(self.criteria or {})
                if unknown:
                    problems.append(f'output {out} lists criteria not configured: '
                                    f'{sorted(unknown)}')
        unknown_build = set(self.build) - set(BUILD_KEYS)
        if unknown_build:
            problems.append(f'unknown build options {sorted(unknown_build)}; '
                            f'known: {list(BUILD_KEYS)}')
        if problems:
            raise ValueError('bad pruning configuration: ' + '; '.join(problems))
        # Fail now, not after the sparse training, on a stage override TrainConfig refuses.
        for stage in ('sparse_training', 'finetune'):
            self.stage_config(TrainConfig(), stage)

    @classmethod
    def from_dict(cls, data: dict) -> 'PruneConfig':
        refuse_unknown_keys(cls, data, 'pruning options')
        refuse_wrong_types(cls, data, 'pruning options')
        missing = sorted({'base_config', 'criteria', 'ratios', 'outputs'} - set(data))
        if missing:
            raise ValueError(f'pruning configuration lacks {missing}')
        return cls(**data)

    @classmethod
    def from_yaml(cls, path: str | Path) -> 'PruneConfig':
        return cls.from_dict(_read_yaml_mapping(Path(path), 'pruning configuration'))

    def base_train_config(self) -> TrainConfig:
        return TrainConfig.from_dict(_read_yaml_mapping(Path(self.base_config),
                                                        'training configuration'))

    @property
    def base_checkpoint_path(self) -> Path:
        """Return the base checkpoint; by default where ``train --config`` puts it."""
        stem = Path(self.base_config).stem
        return Path(self.base_checkpoint or Path('runs') / stem / 'checkpoint.pt')

    @property
    def work_path(self) -> Path:
        return Path(self.work_dir or Path('runs') / f'{Path(self.base_config).stem}_pruning')

    def criterion(self, name: str) -> Criterion:
        return get_criterion(name, **(self.criteria[name] or {}))

    def stage_config(self, base: TrainConfig, stage: str) -> TrainConfig:
        """Return the base training config with the ``stage`` overrides applied."""
        return TrainConfig.from_dict({**asdict(base), **getattr(self, stage)})
