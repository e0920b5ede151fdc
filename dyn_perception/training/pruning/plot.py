"""
Accuracy against cost for every criterion and ratio, with and without early exits.

Energy is estimated from MACs with the Edge TPU's published efficiency: 4 TOPS at 2 W is
2 TOPS/W, i.e. 0.5 pJ per operation, and a MAC is two operations, so 1 pJ per MAC. It is
proportional to MACs, so it is drawn as a second scale on the same axis; the model ignores
memory traffic (weights beyond the 8 MB cache), which the runtime's simulator accounts for.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

from dyn_perception.runtime.artifacts import Manifest, Profile

PJ_PER_MAC = 1.0


@dataclass(frozen=True)
class FrontPoint:
    """One network setting: which variant, with exits or not, its mean MACs and accuracy."""

    criterion: str  # 'base' for the unpruned network
    ratio: float  # target share of MACs removed; 0 for the base
    macs: float  # mean MACs per frame
    accuracy: float  # percent
    exits: bool

    @property
    def energy_uj(self) -> float:
        return self.macs * PJ_PER_MAC * 1e-6


def pareto_front(points: Sequence[FrontPoint]) -> list[FrontPoint]:
    """Return the points no other point beats on both MACs and accuracy, cheapest first."""
    front: list[FrontPoint] = []
    for point in sorted(points, key=lambda p: (p.macs, -p.accuracy)):
        if not front or point.accuracy > front[-1].accuracy:
            front.append(point)
    return front


def profile_points(manifest: Manifest, profile: Profile,
                   mode: str = 'balanced') -> list[FrontPoint]:
    """
    Read the validation-split points of every variant from a built model directory.

    Without exits: the variant's no-exit network. With exits: the thresholds the build
    calibrated for ``mode`` under the manifest's default exit policy.
    """
    points = []
    for variant in manifest.variants:
        pruning = variant.pruning or {}
        criterion = pruning.get('criterion', 'base')
        ratio = float(pruning.get('target_mac_reduction', 0.0))
        measured = profile.variant(variant.name)
        if variant.no_exit is not None and measured.no_exit is not None:
            points.append(FrontPoint(criterion, ratio, variant.no_exit.macs,
                                     100 * measured.no_exit.extra['val_accuracy'], False))
        for point in measured.exit_curves.get(manifest.default_policy, ()):
            if point.mode == mode:
                points.append(FrontPoint(criterion, ratio, point.mean_macs,
                                         100 * point.accuracy, True))
    return points


def plot_front(points: Sequence[FrontPoint], path: Path, title: str,
               highlight: Optional[dict[str, FrontPoint]] = None) -> None:
    """Plot accuracy vs MACs (energy on the top axis), one colour per criterion, front marked."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    import matplotlib.ticker
    fig, ax = plt.subplots(figsize=(9.6, 6.4))
    criteria = sorted({p.criterion for p in points} - {'base'})
    colours = {name: f'C{i}' for i, name in enumerate(criteria)}
    colours['base'] = 'black'
    for criterion in ['base', *criteria]:
        for exits in (False, True):
            series = sorted((p for p in points if p.criterion == criterion and p.exits == exits),
                            key=lambda p: p.ratio)
            if series:
                ax.plot([p.macs / 1e6 for p in series], [p.accuracy for p in series],
                        ('o-' if exits else 's--'), color=colours[criterion], alpha=0.85,
                        markersize=7 if criterion == 'base' else 5,
                        label=f'{criterion}, {"early exits" if exits else "no exits"}')
                for p in series:
                    if criterion != 'base':
                        ax.annotate(f'{p.ratio:.0%}', (p.macs / 1e6, p.accuracy), fontsize=6,
                                    textcoords='offset points', xytext=(3, 3),
                                    color=colours[criterion])
    front = pareto_front(points)
    ax.step([p.macs / 1e6 for p in front], [p.accuracy for p in front], where='post',
            color='grey', linewidth=6, alpha=0.25, zorder=0, label='Pareto front')
    ax.plot([p.macs / 1e6 for p in front], [p.accuracy for p in front], 'o', markersize=11,
            markerfacecolor='none', markeredgecolor='grey', zorder=0)
    for (text, p), (marker, colour) in zip((highlight or {}).items(),
                                           [('*', 'gold'), ('D', 'magenta'), ('P', 'cyan')]):
        ax.plot(p.macs / 1e6, p.accuracy, marker, markersize=14, color=colour,
                markeredgecolor='black', label=text)
    ax.set_xscale('log')
    energy = ax.secondary_xaxis('top', functions=(lambda m: m * PJ_PER_MAC,
                                                  lambda e: e / PJ_PER_MAC))
    plain = matplotlib.ticker.FormatStrFormatter('%g')
    for axis in (ax.xaxis, energy.xaxis):
        axis.set_major_formatter(plain)
        axis.set_minor_formatter(plain)
    ax.set_xlabel('mean MACs per frame (millions, log scale)')
    ax.set_ylabel('accuracy (%)')
    energy.set_xlabel('estimated energy per frame (µJ; 1 pJ per MAC: Edge TPU 2 TOPS/W)')
    best = max(p.accuracy for p in points)
    ax.set_ylim(max(min(p.accuracy for p in points) - 1, best - 12), best + 0.8)
    ax.grid(alpha=0.3, which='both')
    ax.set_title(title)
    ax.legend(fontsize=7, loc='lower right', ncol=2)
    fig.tight_layout()
    tmp = Path(path).with_suffix('.tmp.png')
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)
