"""Plots people would rather look at than read: accuracy against cost as exits move."""

from __future__ import annotations

from pathlib import Path

from dyn_perception.runtime.artifacts import Manifest, Profile


def _figure():
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    return plt


def plot_exit_curves(manifest: Manifest, profile: Profile, path: Path) -> None:
    """
    Plot validation accuracy vs mean MACs per frame per policy; modes and no-exit marked.

    The modes a variant runs (``manifest.mode_variants``, default policy) are named in its
    title and their labels are bold.
    """
    plt = _figure()
    variants = manifest.variants
    chosen = manifest.mode_variants.get(manifest.default_policy, {})
    fig, axes = plt.subplots(1, len(variants), figsize=(6.4 * len(variants), 4.8), squeeze=False)
    for ax, variant in zip(axes[0], variants):
        vp = profile.variant(variant.name)
        runs = [mode for mode, name in chosen.items() if name == variant.name]
        for policy, points in vp.exit_curves.items():
            sweep = [p for p in points if p.mode is None]
            line, = ax.plot([p.mean_macs / 1e6 for p in sweep],
                            [100 * p.accuracy for p in sweep], '.-', label=f'{policy} sweep')
            for p in (p for p in points if p.mode is not None):
                ax.plot(p.mean_macs / 1e6, 100 * p.accuracy, 'o', color=line.get_color(),
                        markeredgecolor='black')
                if policy == manifest.default_policy:
                    ax.annotate(p.mode, (p.mean_macs / 1e6, 100 * p.accuracy),
                                textcoords='offset points', xytext=(4, -10), fontsize=8,
                                fontweight='bold' if p.mode in runs else 'normal')
        if variant.no_exit is not None and vp.no_exit is not None:
            ax.plot(variant.no_exit.macs / 1e6, 100 * vp.no_exit.extra['val_accuracy'], 's',
                    color='black', label='same network, no exits')
        ax.set_xlabel('mean MACs per frame (millions)')
        ax.set_ylabel('validation accuracy (%)')
        ax.set_title(f'{manifest.name} / {variant.name}: '
                     + (f'runs {", ".join(runs)} ({manifest.default_policy})' if runs
                        else 'runs no mode (force with variant)'))
        ax.grid(alpha=0.3)
        low = min(100 * p.accuracy for pts in vp.exit_curves.values() for p in pts
                  if p.mode is not None)
        ax.set_ylim(max(0.0, low - 8), None)
        ax.legend(fontsize=8, loc='lower right')
    fig.tight_layout()
    tmp = Path(path).with_suffix('.tmp.png')
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)
