"""
BranchyNet joint training of early-exit networks, with checkpoints, resume and seeds.

The loss is the weighted sum of the cross-entropy at every exit (Teerapittayanon et al. 2016),
optionally plus knowledge distillation from the final exit to the earlier ones (or, given a
teacher network, from the teacher's final exit to every exit), and plus any extra term a caller
supplies (the pruning regularisers use that hook).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
import os
from pathlib import Path
import random
import tempfile
from typing import Any, Callable, get_args, get_origin, get_type_hints, Optional

from dyn_perception.runtime.datasets import Dataset, load_dataset, Split
from dyn_perception.training.models import build_network, EarlyExitNet
import numpy as np
import torch
from torch import nn
import torch.nn.functional as F
from tqdm import tqdm

CHECKPOINT_FORMAT = 'dyn_perception.checkpoint/1'
AUGMENTATIONS = ('none', 'crop', 'crop_flip')


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be read or does not hold what training needs."""


@dataclass
class TrainConfig:
    """Everything that determines a training run; stored in every checkpoint."""

    arch: str = 'resnet_ee'
    arch_options: dict = field(default_factory=dict)
    dataset: str = 'fashion_mnist'
    data_root: Optional[str] = None
    image_size: int = 96
    channels: int = 3
    epochs: int = 15
    max_steps: Optional[int] = None
    train_subset: Optional[int] = None
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    exit_weights: Optional[list] = None
    distill_weight: float = 0.0
    distill_temperature: float = 3.0
    augment: str = 'crop_flip'
    seed: int = 0
    threads: int = 2

    def __post_init__(self) -> None:
        problems = []
        if self.augment not in AUGMENTATIONS:
            problems.append(f'augment must be one of {AUGMENTATIONS}')
        for name in ('epochs', 'batch_size', 'threads'):
            if getattr(self, name) < 1:
                problems.append(f'{name} must be >= 1')
        if self.lr <= 0:
            problems.append('lr must be positive')
        if self.max_steps is not None and self.max_steps < 1:
            problems.append('max_steps must be >= 1')
        if self.exit_weights is not None and any(w < 0 for w in self.exit_weights):
            problems.append('exit_weights must be non-negative')
        if problems:
            raise ValueError('bad training configuration: ' + '; '.join(problems))

    @classmethod
    def from_dict(cls, data: dict) -> 'TrainConfig':
        refuse_unknown_keys(cls, data, 'training options')
        refuse_wrong_types(cls, data, 'training options')
        return cls(**data)


def refuse_unknown_keys(config_class: type, data: dict, what: str) -> None:
    """Raise ValueError naming the keys of ``data`` that ``config_class`` has no field for."""
    known = {f.name for f in fields(config_class)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f'unknown {what} {unknown}; known: {sorted(known)}')


def refuse_wrong_types(config_class: type, data: dict, what: str) -> None:
    """
    Raise ValueError naming the values of ``data`` of a type their field does not take.

    A YAML slip (``epochs: lots``) reached the range checks as a string and ended in a
    TypeError traceback; ``batch_size: '128'`` would have failed only inside the run.
    """
    hints = get_type_hints(config_class)
    wrong = [f'{key}: {value!r} is not {_type_name(hints[key])}'
             for key, value in data.items() if key in hints and not _is_a(value, hints[key])]
    if wrong:
        raise ValueError(f'bad {what}: ' + '; '.join(wrong))


def _kinds(hint: Any) -> tuple:
    """Return the classes a field's type admits (``Optional[list]``: list and NoneType)."""
    return tuple(get_origin(a) or a for a in (get_args(hint) or (hint,)))


def _is_a(value: Any, hint: Any) -> bool:
    kinds = _kinds(hint)
    if Any in kinds:
        return True
    if isinstance(value, bool):  # YAML's yes/no are not numbers here
        return bool in kinds
    return isinstance(value, kinds) or (float in kinds and isinstance(value, int))


def _type_name(hint: Any) -> str:
    names = {int: 'an integer', float: 'a number', str: 'a string', bool: 'true or false',
             dict: 'a mapping', list: 'a list', type(None): 'null'}
    return ' or '.join(names.get(k, getattr(k, '__name__', str(k))) for k in _kinds(hint))


@dataclass
class TrainResult:
    model: EarlyExitNet
    dataset: Dataset
    history: list[dict]


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def load_config_dataset(config: TrainConfig) -> Dataset:
    root = Path(config.data_root) if config.data_root else None
    return load_dataset(config.dataset, root, seed=config.seed, image_size=config.image_size,
                        channels=config.channels)


def network_for(config: TrainConfig, dataset: Dataset) -> EarlyExitNet:
    return build_network(config.arch, len(dataset.labels), dataset.image_shape,
                         **config.arch_options)


def to_tensor(images: np.ndarray, mean: tuple, std: tuple) -> torch.Tensor:
    """uint8 NHWC to normalised float NCHW, the layout the torch model trains in."""
    # A copy: the data sets are read-only arrays, which torch will not wrap. In NCHW strides,
    # not the channels-last ones of a permuted NHWC array (which .contiguous() keeps when C is
    # 1), since every later layer inherits them: in channels-last, oneDNN's AVX2 kernel for the
    # weight gradient of a strided 1x1 convolution with fewer than 8 input channels (a pruned
    # layer) writes past its workspace (uxlfoundation/oneDNN#6035), i.e. heap corruption or
    # wrong gradients on AVX2-only CPUs (an abort here on an AMD EPYC, 2026-12-07).
    x = torch.tensor(images).permute(0, 3, 1, 2).to(
        torch.float32, memory_format=torch.contiguous_format).div_(255.0)
    mean_t = torch.tensor(mean).view(1, -1, 1, 1)
    std_t = torch.tensor(std).view(1, -1, 1, 1)
    return (x - mean_t) / std_t


def augment_batch(x: torch.Tensor, mode: str, generator: torch.Generator) -> torch.Tensor:
    """Random shifts of up to 2 px (zero padded) and, for 'crop_flip', horizontal flips."""
    if mode == 'none':
        return x
    n, _, h, w = x.shape
    padded = F.pad(x, (2, 2, 2, 2))
    dy, dx = (torch.randint(0, 5, (2,), generator=generator)).tolist()
    x = padded[:, :, dy:dy + h, dx:dx + w]
    if mode == 'crop_flip':
        flip = torch.rand(n, generator=generator) < 0.5
        x = torch.where(flip.view(-1, 1, 1, 1), x.flip(3), x)
    return x


def joint_loss(logits: list[torch.Tensor], target: torch.Tensor, weights: list[float],
               distill_weight: float = 0.0, temperature: float = 3.0,
               teacher_logits: Optional[torch.Tensor] = None) -> torch.Tensor:
    """
    Weighted sum of the exits' cross-entropies, plus distillation.

    Without ``teacher_logits`` the final exit teaches the earlier ones (self-distillation);
    with them (a bigger network's final exit, e.g. the unpruned one) every exit learns from
    that teacher, the final one included.
    """
    loss = sum(w * F.cross_entropy(z, target) for w, z in zip(weights, logits))
    source, students = ((logits[-1].detach(), logits[:-1]) if teacher_logits is None
                        else (teacher_logits, logits))
    if distill_weight > 0 and students:
        teacher = F.softmax(source / temperature, dim=1)
        for z in students:
            kd = F.kl_div(F.log_softmax(z / temperature, dim=1), teacher, reduction='batchmean')
            loss = loss + distill_weight * temperature ** 2 * kd
    return loss


@torch.no_grad()
def predict_logits(model: EarlyExitNet, split: Split, mean: tuple, std: tuple,
                   batch_size: int = 512) -> list[np.ndarray]:
    """Float logits of every exit for a whole split (eval mode), as numpy arrays."""
    model.eval()
    outputs: list[list[np.ndarray]] = [[] for _ in range(model.num_exits)]
    for start in range(0, len(split), batch_size):
        x = to_tensor(split.images[start:start + batch_size], mean, std)
        for i, z in enumerate(model(x)):
            outputs[i].append(z.numpy())
    return [np.concatenate(o) for o in outputs]


def exit_accuracies(logits: list[np.ndarray], labels: np.ndarray) -> list[float]:
    return [float((z.argmax(1) == labels).mean()) for z in logits]


def save_checkpoint(path: Path, state: dict) -> None:
    """torch.save through a temporary file and a rename: never a half-written checkpoint."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f'.{path.name}.', dir=path.parent)
    os.close(fd)
    try:
        torch.save({'format': CHECKPOINT_FORMAT, **state}, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_checkpoint(path: Path) -> dict:
    """Load a checkpoint, with an error naming the file and the problem when it is bad."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f'{path}: checkpoint not found')
    try:
        state = torch.load(path, map_location='cpu', weights_only=False)
    except Exception as err:  # noqa: B902 - torch raises many types for a corrupt file
        raise CheckpointError(f'{path}: corrupt or unreadable checkpoint ({err})') from err
    if not isinstance(state, dict) or state.get('format') != CHECKPOINT_FORMAT:
        raise CheckpointError(f'{path}: not a dyn_perception checkpoint '
                              f'(expected format {CHECKPOINT_FORMAT})')
    missing = {'config', 'model', 'labels', 'mean', 'std'} - set(state)
    if missing:
        raise CheckpointError(f'{path}: checkpoint lacks {sorted(missing)}')
    return state


def model_from_checkpoint(state: dict, dataset: Optional[Dataset] = None) -> EarlyExitNet:
    """
    Rebuild the network a checkpoint describes and load its weights.

    A pruned network is rebuilt by replaying its recorded pruning history on the full
    architecture (the same dependency graph surgery that pruned it), then loading weights.
    """
    config = TrainConfig.from_dict(state['config'])
    shape = tuple(state.get('input_shape') or dataset.image_shape)
    model = build_network(config.arch, len(state['labels']), shape, **config.arch_options)
    if state.get('pruning'):
        from dyn_perception.training.pruning.surgery import apply_history
        apply_history(model, state['pruning']['history'])
    try:
        model.load_state_dict(state['model'])
    except RuntimeError as err:
        raise CheckpointError(f'checkpoint weights do not fit {config.arch}: {err}') from err
    return model.eval()


def train(config: TrainConfig, checkpoint: Optional[Path] = None, resume: bool = True,
          extra_loss: Optional[Callable[[nn.Module], torch.Tensor]] = None,
          model: Optional[EarlyExitNet] = None, dataset: Optional[Dataset] = None,
          progress: bool = True, teacher: Optional[EarlyExitNet] = None) -> TrainResult:
    """
    Train (or continue training) an early-exit network.

    With ``checkpoint``, the state is saved after every epoch and, when ``resume`` is true and
    the file exists, training continues from it (same config required). ``model`` starts from
    given weights instead of a fresh network (fine-tuning after pruning); ``teacher`` (frozen,
    eval mode) replaces the final exit as the distillation source of ``distill_weight``.
    """
    torch.set_num_threads(config.threads)
    seed_everything(config.seed)
    dataset = dataset or load_config_dataset(config)
    model = model or network_for(config, dataset)
    weights = list(config.exit_weights or [1.0] * model.num_exits)
    if teacher is not None:
        teacher.eval()
    if len(weights) != model.num_exits:
        raise ValueError(f'exit_weights has {len(weights)} values; '
                         f'{config.arch} has {model.num_exits} exits')
    train_split = dataset.train.subset(config.train_subset, config.seed)
    steps_per_epoch = max(1, len(train_split) // config.batch_size)
    total_steps = config.max_steps or config.epochs * steps_per_epoch
    epochs = -(-total_steps // steps_per_epoch)

    optimizer = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum,
                                weight_decay=config.weight_decay, nesterov=True)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, config.lr, total_steps=total_steps,
                                                    pct_start=0.15)
    history: list[dict] = []
    start_epoch, step = 0, 0
    if checkpoint is not None and resume and Path(checkpoint).is_file():
        state = load_checkpoint(checkpoint)
        if state['config'] != asdict(config):
            raise CheckpointError(f'{checkpoint}: saved with a different configuration; '
                                  'use a new checkpoint path or resume=False')
        model.load_state_dict(state['model'])
        optimizer.load_state_dict(state['optimizer'])
        scheduler.load_state_dict(state['scheduler'])
        start_epoch, step, history = state['epoch'], state['step'], state['history']

    for epoch in range(start_epoch, epochs):
        if step >= total_steps:
            break
        generator = torch.Generator().manual_seed(config.seed * 1000 + epoch)
        order = torch.randperm(len(train_split), generator=generator).numpy()
        model.train()
        bar = tqdm(range(steps_per_epoch), desc=f'epoch {epoch + 1}/{epochs}',
                   disable=not progress, leave=False, unit='batch')
        running = 0.0
        for b in bar:
            if step >= total_steps:
                break
            idx = np.sort(order[b * config.batch_size:(b + 1) * config.batch_size])
            x = to_tensor(train_split.images[idx], dataset.mean, dataset.std)
            x = augment_batch(x, config.augment, generator)
            y = torch.from_numpy(train_split.labels[idx])
            with torch.no_grad():
                teacher_logits = None if teacher is None else teacher(x)[-1]
            loss = joint_loss(model(x), y, weights, config.distill_weight,
                              config.distill_temperature, teacher_logits)
            if extra_loss is not None:
                loss = loss + extra_loss(model)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            step += 1
            running = 0.9 * running + 0.1 * loss.item() if b else loss.item()
            bar.set_postfix(loss=f'{running:.3f}', lr=f'{scheduler.get_last_lr()[0]:.3g}')
        val_acc = exit_accuracies(predict_logits(model, dataset.val, dataset.mean, dataset.std),
                                  dataset.val.labels)
        history.append({'epoch': epoch + 1, 'step': step, 'loss': running,
                        'val_accuracy': val_acc})
        if progress:
            accs = ' '.join(f'{a:.4f}' for a in val_acc)
            tqdm.write(f'epoch {epoch + 1}/{epochs} step {step} loss {running:.4f} '
                       f'val accuracy per exit {accs}')
        if checkpoint is not None:
            save_checkpoint(checkpoint, checkpoint_state(
                config, model, dataset, history, epoch + 1, step, optimizer, scheduler))
    return TrainResult(model.eval(), dataset, history)


def checkpoint_state(config: TrainConfig, model: EarlyExitNet, dataset: Dataset, history: list,
                     epoch: int, step: int, optimizer: Any = None, scheduler: Any = None,
                     pruning: Optional[dict] = None) -> dict:
    """
    Everything needed to resume training or to export the model without the data set.

    ``pruning`` (with the Torch-Pruning ``history`` that made a pruned network) lets
    :func:`model_from_checkpoint` rebuild the pruned shapes.
    """
    return {
        'config': asdict(config), 'model': model.state_dict(), 'labels': list(dataset.labels),
        'mean': list(dataset.mean), 'std': list(dataset.std),
        'input_shape': list(dataset.image_shape), 'dataset': dataset.name,
        'history': history, 'epoch': epoch, 'step': step,
        'optimizer': optimizer.state_dict() if optimizer else None,
        'scheduler': scheduler.state_dict() if scheduler else None,
        'pruning': pruning,
    }
