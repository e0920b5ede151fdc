"""Operating modes (``config/modes.yaml``): names, order and the accuracy budget of each."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from dyn_perception.runtime.paths import data_path
import yaml

DEFAULT_MODES_FILE = data_path('config', 'modes.yaml')
MODE_KEYS = {'name', 'max_accuracy_loss'}


@dataclass(frozen=True)
class Mode:
    """
    A named operating point; ``max_accuracy_loss`` is in accuracy points (0-100).

    The budget is against the final exit of the model's default (unpruned) variant: each
    model's build picks, per mode, the variant and exit thresholds that keep it.
    """

    name: str
    max_accuracy_loss: float


def budget_fraction(max_accuracy_loss: float) -> float:
    """Return a budget in accuracy points as the largest loss bound that keeps it."""
    return max_accuracy_loss / 100.0 + 1e-12  # the slack absorbs float rounding


def load_modes(path: str | Path = DEFAULT_MODES_FILE) -> tuple[Mode, ...]:
    """Read and validate the mode list, most accurate first."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
        entries = data['modes']
        modes = tuple(Mode(str(e['name']), float(e['max_accuracy_loss'])) for e in entries)
    except (OSError, yaml.YAMLError, KeyError, TypeError, ValueError) as err:
        raise ValueError(f'{path}: not a valid modes file ({err!r})') from err
    unknown = sorted({key for e in entries for key in e} - MODE_KEYS)
    if unknown:
        raise ValueError(f'{path}: unknown mode keys {unknown} (known: {sorted(MODE_KEYS)}); '
                         'the variant a mode runs is chosen per model by its build '
                         '(manifest mode_variants), or forced with the parameter `variant`')
    names = [m.name for m in modes]
    if not modes or len(set(names)) != len(names):
        raise ValueError(f'{path}: modes must be a non-empty list of unique names, got {names}')
    if any(m.max_accuracy_loss < 0 for m in modes):
        raise ValueError(f'{path}: max_accuracy_loss must be >= 0')
    return modes
