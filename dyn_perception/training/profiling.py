"""
Timing profiles and exit curves: what the nodes and the scheduler plan with.

- Latency of every segment with LiteRT on this machine's CPU (median and p99 of single-frame
  invocations, one thread), the number the simulator and the scheduler start from.
- Exit behaviour on the validation split: for every threshold setting, the share of frames
  each exit takes, the accuracy, and the mean MACs per frame; and per mode, the thresholds of
  least mean MACs whose accuracy stays within the mode's budget.
"""

from __future__ import annotations

from dataclasses import replace
from functools import cached_property
import itertools
import os
import platform
import time
from typing import Optional, Sequence

from dyn_perception.runtime.artifacts import LatencyStats, OperatingPoint, Profile
from dyn_perception.runtime.exits import exit_index, ExitPolicy
from dyn_perception.runtime.modes import budget_fraction, Mode
from dyn_perception.runtime.segment import SegmentRunner
import numpy as np

# Above this many threshold combinations, fewer candidates per exit are tried.
MAX_COMBINATIONS = 20000


def time_invocations(runner: SegmentRunner, x: np.ndarray, repeats: int = 300,
                     warmup: int = 30) -> LatencyStats:
    """Median and p99 wall time of ``runner(x)`` over ``repeats`` runs, in milliseconds."""
    for _ in range(warmup):
        runner(x)
    times = np.empty(repeats)
    for i in range(repeats):
        start = time.perf_counter_ns()
        runner(x)
        times[i] = time.perf_counter_ns() - start
    return LatencyStats(float(np.median(times) / 1e6), float(np.percentile(times, 99) / 1e6))


def machine_description() -> dict:
    try:
        from importlib.metadata import version
        litert = version('ai-edge-litert')
    except Exception:  # noqa: B902 - a fallback interpreter has no such distribution
        litert = 'unknown'
    return {'platform': platform.platform(), 'processor': platform.processor() or 'unknown',
            'cpu_count': os.cpu_count(), 'python': platform.python_version(),
            'litert': litert}


class BudgetUnreachable(ValueError):
    """No exit thresholds keep the accuracy loss within the budget."""


class ExitEvaluation:
    """
    Per-exit confidence scores and correctness of a labelled split, for one policy.

    Mode thresholds are calibrated against an upper confidence bound of the accuracy loss,
    not its point estimate: the loss is the mean of the paired per-frame difference
    (final exit right, early exit wrong = 1; the reverse = -1), and the bound adds
    ``confidence_z`` standard errors (1.645: one-sided 95%). Without it, thresholds tuned to
    spend the whole budget on the validation split overspend it on unseen frames.

    ``reference`` (per-frame correctness, default this network's final exit) is what the loss
    is paired against: a pruned variant's exits are judged against the unpruned network.
    """

    def __init__(self, logits: Sequence[np.ndarray], labels: np.ndarray, policy: ExitPolicy,
                 cumulative_macs: Sequence[int], confidence_z: float = 1.645,
                 reference: Optional[np.ndarray] = None):
        self.policy = policy
        self.scores = [policy.score(z) for z in logits]
        self.correct = np.stack([z.argmax(1) == labels for z in logits]).astype(np.int8)
        self.reference = (self.correct[-1] if reference is None
                          else np.asarray(reference, dtype=np.int8))
        self.cumulative_macs = np.asarray(cumulative_macs, dtype=np.float64)
        self.num_classes = logits[0].shape[1]
        self.confidence_z = confidence_z

    @property
    def final_accuracy(self) -> float:
        """Accuracy of the final exit alone: the reference every mode's budget is against."""
        return float(self.correct[-1].mean())

    def _evaluate(self, thresholds: Sequence[Optional[float]],
                  mode: Optional[str] = None) -> tuple[OperatingPoint, float]:
        """Return the operating point and the upper confidence bound of its accuracy loss."""
        taken = exit_index(self.scores, self.policy, thresholds)
        n = len(taken)
        correct = self.correct[taken, np.arange(n)]
        difference = self.reference - correct
        loss_bound = difference.mean() + self.confidence_z * difference.std() / np.sqrt(n)
        rates = np.bincount(taken, minlength=len(self.scores)) / n
        point = OperatingPoint(tuple(None if t is None else float(t) for t in thresholds),
                               tuple(float(r) for r in rates), float(correct.mean()),
                               float(self.cumulative_macs[taken].mean()), mode)
        return point, float(loss_bound)

    def loss_bound(self, thresholds: Sequence[Optional[float]]) -> float:
        """Upper confidence bound of the accuracy loss at ``thresholds`` (a fraction)."""
        return self._evaluate(thresholds)[1]

    def point(self, thresholds: Sequence[Optional[float]],
              mode: Optional[str] = None) -> OperatingPoint:
        return self._evaluate(thresholds, mode)[0]

    def sweep(self, points: int = 41) -> list[OperatingPoint]:
        """One shared threshold for all early exits, from 'never exit' to 'always exit'."""
        early = len(self.scores) - 1
        thresholds = self.policy.sweep(self.num_classes, points)
        return [self.point([float(t)] * early) for t in thresholds]

    @cached_property
    def grid(self) -> list[tuple[OperatingPoint, float]]:
        """
        Every combination of per-exit candidate thresholds with its loss bound, once.

        Candidates per exit are quantiles of that exit's scores plus 'disabled'; the grid is
        coarsened so that at most MAX_COMBINATIONS combinations are evaluated.
        """
        early = len(self.scores) - 1
        per_exit = max(3, int(MAX_COMBINATIONS ** (1.0 / max(early, 1))))
        quantiles = np.linspace(0.0, 1.0, per_exit)
        candidates = [[None, *np.unique(np.quantile(s, quantiles)).tolist()]
                      for s in self.scores[:-1]]
        return [self._evaluate(t) for t in itertools.product(*candidates)]

    def calibrate(self, max_accuracy_loss: float, mode: Optional[str] = None) -> OperatingPoint:
        """Pick the grid point of least mean MACs whose loss bound is within the budget."""
        budget = budget_fraction(max_accuracy_loss)
        feasible = [(p, bound) for p, bound in self.grid if bound <= budget]
        if not feasible:
            raise BudgetUnreachable(f'no exit thresholds keep the accuracy loss within '
                                    f'{max_accuracy_loss} points at this confidence')
        best, bound = min(feasible, key=lambda pair: (pair[0].mean_macs, -pair[0].accuracy))
        return replace(best, mode=mode, loss_bound=bound)

    def calibrate_modes(self, modes: Sequence[Mode],
                        own: Optional[ExitEvaluation] = None) -> dict[str, OperatingPoint]:
        """
        Calibrate every mode against this evaluation's reference.

        ``own`` (the same exits judged against the network's own final exit) calibrates the
        modes whose budget the network cannot keep against the reference at all, so that a
        pruned variant still has thresholds for every mode; those points keep their loss
        bound against the reference, above the budget, and no mode chooses them.
        """
        points = {}
        for mode in modes:
            try:
                points[mode.name] = self.calibrate(mode.max_accuracy_loss, mode.name)
            except BudgetUnreachable:
                if own is None:
                    raise
                point = own.calibrate(mode.max_accuracy_loss, mode.name)
                points[mode.name] = replace(point, loss_bound=self.loss_bound(point.thresholds))
        return points


def choose_mode_variants(profile: Profile, modes: Sequence[Mode]) -> dict[str, dict[str, str]]:
    """
    Return policy -> mode -> the variant of least mean MACs that stays within the mode's budget.

    A variant qualifies when its own mode point, bounded against the default (first) variant's
    final exit, loses no more than the mode allows: a pruned variant runs a frugal mode only
    if pruning and exits together still keep the promise made against the unpruned network.
    Ties go to the earlier variant, so the default wins when nothing is cheaper.
    """
    budgets = {m.name: budget_fraction(m.max_accuracy_loss) for m in modes}
    chosen: dict[str, dict[str, str]] = {}
    for policy in profile.variants[0].exit_curves:
        candidates: dict[str, list] = {mode: [] for mode in budgets}
        for order, variant in enumerate(profile.variants):
            for point in variant.exit_curves.get(policy, ()):
                if (point.mode in budgets and point.loss_bound is not None
                        and point.loss_bound <= budgets[point.mode]):
                    candidates[point.mode].append((point.mean_macs, order, variant.name))
        chosen[policy] = {mode: min(found)[2] for mode, found in candidates.items() if found}
    return chosen
