"""
``python -m dyn_perception.training front``: a model's front, its mode mapping and the plot.

Reads the model's manifest and profile only (no torch), computes the front with
``runtime.energy.front``, records it (manifest ``mode_configs``, profile ``front``) and draws
energy per frame against validation accuracy, p99 latency as colour, with the modes marked.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from dyn_perception.runtime.artifacts import load_manifest, load_profile
from dyn_perception.runtime.energy.front import (
    compute_front, configurations, Front, write_front
)
from dyn_perception.runtime.modes import Mode


def build_front(model: str, modes: Sequence[Mode], fps: float, max_tpus: int,
                command: str, plot_path: Path) -> Front:
    """Compute, record and plot the front of ``model``; return it."""
    manifest, profile = load_manifest(model), load_profile(model)
    front = compute_front(manifest, profile, modes, fps, max_tpus)
    write_front(manifest.directory, front, command)
    everything = configurations(manifest, profile, manifest.default_policy, max_tpus)
    plot_front(front, manifest.default_policy, everything, plot_path, manifest.name)
    return front


def plot_front(front: Front, policy: str, everything: list, path: Path, title: str) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fps = front.fps
    fig, ax = plt.subplots(figsize=(8, 5.5))
    for on_host, colour, label in ((False, '0.8', 'all configurations on TPUs'),
                                   (True, 'tab:orange', 'all on the host core (TPUs off)')):
        shown = [c for c in everything if (c.num_tpus == 0) == on_host]
        ax.scatter([100 * c.accuracy for c in shown],
                   [1e3 * c.energy_per_frame_j(fps) for c in shown],
                   s=8, color=colour, alpha=0.6, label=label)
    points = front.points[policy]
    shown = ax.scatter([100 * c.accuracy for c in points],
                       [1e3 * c.energy_per_frame_j(fps) for c in points],
                       c=[c.p99_ms for c in points], cmap='viridis', s=22,
                       marker='o', label='Pareto front')
    fig.colorbar(shown, ax=ax, label='p99 latency (ms)')
    for mode, c in front.modes[policy].items():
        x, y = 100 * c.accuracy, 1e3 * c.energy_per_frame_j(fps)
        ax.scatter([x], [y], s=120, facecolors='none', edgecolors='tab:red', linewidths=1.5)
        where = f'{c.num_tpus} TPU' if c.num_tpus else 'host, 0 TPU'
        ax.annotate(f'{mode}\n{c.variant}, {where}', (x, y), fontsize=8,
                    xytext=(6, 6), textcoords='offset points', fontweight='bold')
    ax.set_xlabel('validation accuracy (%)')
    ax.set_ylabel(f'energy per frame at {fps:g} fps (mJ, log)')
    ax.set_yscale('log')
    ax.set_title(f'{title}: accuracy / energy / latency front ({policy} exits, '
                 f'0-{front.max_tpus} powered TPUs)', fontsize=10)
    ax.legend(loc='upper left', fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
