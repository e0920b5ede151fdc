"""
Pruned variants per criterion and ratio against the unpruned network, in the same run.

Reads a model directory made by the recorded pruning command (the default holds the base and
every criterion x ratio; the shipped models/fmnist_eenet holds the base and the l1l2 family):

    python -m dyn_perception.training prune --config config/training/fmnist_eenet_pruning.yaml

and measures int8 with LiteRT on the Fashion-MNIST test split: per variant without exits, its
parameter bytes, MACs, accuracy and single-frame latency (in alternating blocks with the base,
so machine noise hits both alike); with early exits, its accuracy and mean MACs per frame.
Every choice (which ratio stays within a loss budget, which exit thresholds) is made on the
validation split and then measured on test. Energy: 1 pJ per MAC (Edge TPU, 2 TOPS/W).

    python bench/pruning.py [--model DIR] [--json OUT] [--plot PNG] [--frames N]
"""

import argparse
from dataclasses import dataclass
import sys
from typing import Optional

import _paths  # noqa: F401 - puts the repository root on sys.path
from dyn_perception.runtime.artifacts import (
    ArtifactError, EXIT_POLICIES, load_manifest, load_profile, Manifest, OperatingPoint, Variant
)
from dyn_perception.runtime.chain import SegmentChain
from dyn_perception.runtime.datasets import load_dataset, Split
from dyn_perception.runtime.exits import get_policy
from dyn_perception.runtime.preprocess import to_int8_input
from dyn_perception.runtime.segment import SegmentRunner
from dyn_perception.training.profiling import (
    BudgetUnreachable, ExitEvaluation, time_invocations
)
from dyn_perception.training.pruning.plot import FrontPoint, pareto_front, plot_front
import numpy as np
from report import bounded, format_table, output_file, write_json

DEFAULT_MODEL = 'out/pruning/fmnist_eenet_all'
RECORDED = ('python -m dyn_perception.training prune '
            '--config config/training/fmnist_eenet_pruning.yaml')
PRUNING_BUDGET = 0.5  # accuracy points, the target for l1l2 alone
COMBINED_BUDGET = 1.0  # accuracy points, pruning + early exits


@dataclass
class Measured:
    """One variant: cost and int8 test accuracy without exits, exit logits on val and test."""

    variant: Variant
    criterion: str
    ratio: float
    val_accuracy: float  # no exits, int8, from the build's profile
    test_accuracy: float  # no exits, int8, measured here
    latency_ms: float
    base_latency_ms: float
    val_logits: list
    test_logits: list


def _no_exit_predictions(manifest: Manifest, variant: Variant, images: np.ndarray) -> np.ndarray:
    runner = SegmentRunner(variant.no_exit, manifest.path(variant.no_exit.file))
    inputs = to_int8_input(images, manifest.input, variant.no_exit.input)
    return np.array([int(np.argmax(runner(x[None]).logits)) for x in inputs])


def _latencies(manifest: Manifest, base: Variant, variant: Variant, frame: np.ndarray,
               rounds: int = 5, repeats: int = 200) -> tuple[float, float]:
    """Return the median single-frame latency (ms) of the base and the variant, interleaved."""
    runners = [SegmentRunner(v.no_exit, manifest.path(v.no_exit.file)) for v in (base, variant)]
    inputs = [to_int8_input(frame[None], manifest.input, v.no_exit.input) for v in (base, variant)]
    times: list[list[float]] = [[], []]
    for _ in range(rounds):
        for i, (runner, x) in enumerate(zip(runners, inputs)):
            times[i].append(time_invocations(runner, x, repeats).median_ms)
    return float(np.median(times[0])), float(np.median(times[1]))


def measure(manifest: Manifest, variant: Variant, val: Split, test: Split) -> Measured:
    profile = load_profile(manifest.directory).variant(variant.name)
    pruning = variant.pruning or {}
    base = manifest.variant('base')
    chain = SegmentChain(manifest, variant.name)
    predictions = _no_exit_predictions(manifest, variant, test.images)
    base_ms, variant_ms = _latencies(manifest, base, variant, test.images[0])
    return Measured(
        variant, pruning.get('criterion', 'base'), float(pruning.get('target_mac_reduction', 0)),
        100 * profile.no_exit.extra['val_accuracy'],
        100 * float((predictions == test.labels).mean()), variant_ms, base_ms,
        chain.all_exit_logits(chain.quantize_frames(val.images)),
        chain.all_exit_logits(chain.quantize_frames(test.images)))


def test_point(m: Measured, policy_name: str, thresholds: list,
               labels: np.ndarray) -> OperatingPoint:
    """Return accuracy and mean MACs on test of ``m`` with exits at ``thresholds``."""
    return ExitEvaluation(m.test_logits, labels, get_policy(policy_name),
                          m.variant.cumulative_macs_at_exits()).point(thresholds)


def choose_combined(measured: list[Measured], reference: np.ndarray,
                    labels: np.ndarray) -> Optional[tuple[Measured, str, OperatingPoint]]:
    """
    Pick on val the variant, exit policy and thresholds of least mean MACs per frame.

    The loss of every candidate is paired frame by frame with ``reference`` (the unpruned
    network without exits, correct or not on each val frame) and must stay within the budget
    with 95% confidence: the pruning loss and the exits' loss are bounded together, so a
    variant that is lucky on val does not lend its luck to the exits.
    """
    best = None
    for m in measured:
        for policy in EXIT_POLICIES:
            evaluation = ExitEvaluation(m.val_logits, labels, get_policy(policy),
                                        m.variant.cumulative_macs_at_exits(), reference=reference)
            try:
                point = evaluation.calibrate(COMBINED_BUDGET)
            except BudgetUnreachable:  # not even the final exit alone is within the budget
                continue
            if best is None or point.mean_macs < best[2].mean_macs:
                best = (m, policy, point)
    return best


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--model', default=DEFAULT_MODEL, help='model directory with variants')
    parser.add_argument('--json', type=output_file, help='write results here')
    parser.add_argument('--plot', type=output_file, default='out/bench/pruning.png',
                        help='accuracy-vs-MACs PNG')
    parser.add_argument('--frames', type=bounded(int, 0), default=0,
                        help='val and test frames (0: all)')
    args = parser.parse_args()
    try:
        manifest = load_manifest(args.model)
    except ArtifactError as err:
        print(f'error: {err}\nbuild it with: {RECORDED}', file=sys.stderr)
        return 2
    dataset = load_dataset(manifest.dataset)
    val, test = (s if not args.frames else s.subset(args.frames, 0)
                 for s in (dataset.val, dataset.test))
    measured = []
    for variant in manifest.variants:
        measured.append(measure(manifest, variant, val, test))
        print(f'measured {variant.name}', file=sys.stderr)
    base = measured[0]
    base_macs = float(base.variant.no_exit.macs)

    def reduction(m: Measured) -> float:
        return base_macs / m.variant.no_exit.macs

    # Pruning alone: the largest l1l2 reduction within budget on val, then its test loss.
    within = [m for m in measured if m.criterion == 'l1l2'
              and m.val_accuracy >= base.val_accuracy - PRUNING_BUDGET]
    l1l2 = max(within, key=reduction, default=base)
    by_name = {(m.criterion, m.ratio): m for m in measured}
    gaps = {f'{r:.0%}': by_name[('l1l2', r)].test_accuracy - by_name[('l1', r)].test_accuracy
            for (c, r) in by_name if c == 'l1l2' and ('l1', r) in by_name}

    # Pruning + exits: chosen on val against the unpruned network without exits.
    base_val_correct = _no_exit_predictions(manifest, base.variant, val.images) == val.labels
    chosen = choose_combined(measured, base_val_correct, val.labels)
    combined = None
    if chosen is not None:
        m, policy, val_point = chosen
        point = test_point(m, policy, list(val_point.thresholds), test.labels)
        combined = {'variant': m.variant.name, 'policy': policy,
                    'thresholds': list(val_point.thresholds),
                    'val_accuracy': 100 * val_point.accuracy, 'val_mean_macs': val_point.mean_macs,
                    'test_accuracy': 100 * point.accuracy, 'mean_macs': point.mean_macs,
                    'exit_rates': list(point.exit_rates),
                    'mac_reduction': base_macs / point.mean_macs,
                    'accuracy_loss_points': base.test_accuracy - 100 * point.accuracy}

    rows, details, points = [], [], []
    for m in measured:
        balanced = m.variant.thresholds[manifest.default_policy].get('balanced')
        exits = test_point(m, manifest.default_policy, balanced, test.labels)
        oneshot = (m.variant.pruning or {}).get('oneshot_float_accuracy', {}).get('test')
        row = {
            'variant': m.variant.name, 'criterion': m.criterion, 'target_ratio': m.ratio,
            'macs': m.variant.no_exit.macs, 'mac_reduction': reduction(m),
            'energy_uj': m.variant.no_exit.macs * 1e-6,
            'param_bytes': m.variant.no_exit.param_bytes, 'test_accuracy': m.test_accuracy,
            'loss_points': base.test_accuracy - m.test_accuracy, 'val_accuracy': m.val_accuracy,
            'oneshot_test_accuracy': 100 * oneshot[-1] if oneshot else None,
            'latency_ms': m.latency_ms, 'speedup': m.base_latency_ms / m.latency_ms,
            'exits_test_accuracy': 100 * exits.accuracy, 'exits_mean_macs': exits.mean_macs,
            'exits_mac_reduction': base_macs / exits.mean_macs,
        }
        details.append(row)
        rows.append([row['variant'], row['macs'] / 1e6, row['mac_reduction'],
                     row['param_bytes'] / 1e3, row['test_accuracy'], row['loss_points'],
                     '-' if oneshot is None else row['oneshot_test_accuracy'],
                     row['latency_ms'], row['speedup'], row['exits_test_accuracy'],
                     row['exits_mean_macs'] / 1e6, row['exits_mac_reduction']])
        points += [FrontPoint(m.criterion, m.ratio, m.variant.no_exit.macs, m.test_accuracy,
                              False),
                   FrontPoint(m.criterion, m.ratio, exits.mean_macs, 100 * exits.accuracy, True)]
    print(format_table(['variant', 'MACs (M)', 'MAC red.', 'int8 kB', 'test acc %',
                        'loss pts', 'one-shot %', 'latency ms', 'speed-up', 'exits acc %',
                        'exits MACs (M)', 'exits MAC red.'], rows))
    print('(no exits unless marked; one-shot: float, pruned before fine-tuning; exits: the '
          "variant's 'balanced' thresholds; energy = MACs x 1 pJ)")

    highlight = {f'l1l2 within {PRUNING_BUDGET} pt (val)': FrontPoint(
        'l1l2', l1l2.ratio, l1l2.variant.no_exit.macs, l1l2.test_accuracy, False)}
    if combined:
        print(f"\npruning + exits (chosen on val, <= {COMBINED_BUDGET} pt): {combined['variant']} "
              f"{combined['policy']} thresholds {combined['thresholds']} exit rates "
              + ' '.join(f'{r:.2f}' for r in combined['exit_rates']))
        highlight[f'pruning + exits within {COMBINED_BUDGET} pt (val)'] = FrontPoint(
            'chosen', 0, combined['mean_macs'], combined['test_accuracy'], True)
    plot_front(points, args.plot, f'{manifest.name}: Fashion-MNIST test, int8', highlight)
    print(f'wrote {args.plot}')

    flat = {
        'l1l2_mac_reduction': reduction(l1l2),
        'l1l2_accuracy_loss_points': base.test_accuracy - l1l2.test_accuracy,
        'l1l2_minus_l1_accuracy_points': min(gaps.values()) if gaps else float('nan'),
        'combined_mac_reduction': combined['mac_reduction'] if combined else 1.0,
        'combined_accuracy_loss_points': (combined['accuracy_loss_points'] if combined
                                          else 0.0),
    }
    print('\n' + '\n'.join(f'{k}: {v:.4g}' for k, v in flat.items()))
    print(f'l1l2 variant: {l1l2.variant.name}; l1l2 - l1 accuracy points per ratio: '
          + ', '.join(f'{r} {g:+.2f}' for r, g in gaps.items()))
    write_json(args.json, {
        **flat, 'model': str(manifest.directory), 'frames': {'val': len(val), 'test': len(test)},
        'base_test_accuracy': base.test_accuracy, 'base_val_accuracy': base.val_accuracy,
        'base_macs': base_macs, 'l1l2_variant': l1l2.variant.name,
        'l1l2_minus_l1_per_ratio': gaps, 'combined': combined, 'variants': details,
        'pareto_front': [vars(p) for p in pareto_front(points)],
        'energy_model': '1 pJ per MAC: Edge TPU 4 TOPS at 2 W (2 TOPS/W), 2 ops per MAC',
    })
    return 0


if __name__ == '__main__':
    sys.exit(main())
