"""Operating modes (``config/modes.yaml``): names, order and the accuracy budget of each."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from dyn_perception.runtime.paths import data_path
import yaml

DEFAULT_MODES_FILE = data_path('config', 'modes.yaml')


@dataclass(frozen=True)
class Mode:
    """
    A named operating point; ``max_accuracy_loss`` is in accuracy points (0-100).

    ``variant`` names the model variant the mode prefers (a pruned one for the frugal
    modes); a model without that variant runs its default one.
    """

    name: str
    max_accuracy_loss: float
    variant: Optional[str] = None


def load_modes(path: str | Path = DEFAULT_MODES_FILE) -> tuple[Mode, ...]:
    """Read and validate the mode list, most accurate first."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
        entries = data['modes']
        modes = tuple(Mode(str(e['name']), float(e['max_accuracy_loss']),
                           None if e.get('variant') is None else str(e['variant']))
                      for e in entries)
    except (OSError, yaml.YAMLError, KeyError, TypeError, ValueError) as err:
        raise ValueError(f'{path}: not a valid modes file ({err!r})') from err
    names = [m.name for m in modes]
    if not modes or len(set(names)) != len(names):
        raise ValueError(f'{path}: modes must be a non-empty list of unique names, got {names}')
    if any(m.max_accuracy_loss < 0 for m in modes):
        raise ValueError(f'{path}: max_accuracy_loss must be >= 0')
    return modes
