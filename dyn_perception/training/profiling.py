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

from dyn_perception.runtime.artifacts import LatencyStats, OperatingPoint
from dyn_perception.runtime.exits import exit_index, ExitPolicy
from dyn_perception.runtime.modes import Mode
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


class ExitEvaluation:
    """Per-exit confidence scores and correctness of a labelled split, for one policy."""

    def __init__(self, logits: Sequence[np.ndarray], labels: np.ndarray, policy: ExitPolicy,
                 cumulative_macs: Sequence[int]):
        self.policy = policy
        self.scores = [policy.score(z) for z in logits]
        self.correct = np.stack([z.argmax(1) == labels for z in logits])
        self.cumulative_macs = np.asarray(cumulative_macs, dtype=np.float64)
        self.num_classes = logits[0].shape[1]

    @property
    def final_accuracy(self) -> float:
        """Accuracy of the final exit alone: the reference every mode's budget is against."""
        return float(self.correct[-1].mean())

    def point(self, thresholds: Sequence[Optional[float]],
              mode: Optional[str] = None) -> OperatingPoint:
        taken = exit_index(self.scores, self.policy, thresholds)
        n = len(taken)
        rates = np.bincount(taken, minlength=len(self.scores)) / n
        accuracy = float(self.correct[taken, np.arange(n)].mean())
        return OperatingPoint(tuple(None if t is None else float(t) for t in thresholds),
                              tuple(float(r) for r in rates), accuracy,
                              float(self.cumulative_macs[taken].mean()), mode)

    def sweep(self, points: int = 41) -> list[OperatingPoint]:
        """One shared threshold for all early exits, from 'never exit' to 'always exit'."""
        early = len(self.scores) - 1
        thresholds = self.policy.sweep(self.num_classes, points)
        return [self.point([float(t)] * early) for t in thresholds]

    @cached_property
    def grid(self) -> list[OperatingPoint]:
        """
        Every combination of per-exit candidate thresholds, evaluated once.

        Candidates per exit are quantiles of that exit's scores plus 'disabled'; the grid is
        coarsened so that at most MAX_COMBINATIONS combinations are evaluated.
        """
        early = len(self.scores) - 1
        per_exit = max(3, int(MAX_COMBINATIONS ** (1.0 / max(early, 1))))
        quantiles = np.linspace(0.0, 1.0, per_exit)
        candidates = [[None, *np.unique(np.quantile(s, quantiles)).tolist()]
                      for s in self.scores[:-1]]
        return [self.point(t) for t in itertools.product(*candidates)]

    def calibrate(self, max_accuracy_loss: float, mode: Optional[str] = None) -> OperatingPoint:
        """Pick the grid point of least mean MACs with accuracy >= final-exit accuracy - budget."""
        floor = self.final_accuracy - max_accuracy_loss / 100.0 - 1e-12
        feasible = [p for p in self.grid if p.accuracy >= floor]
        best = min(feasible, key=lambda p: (p.mean_macs, -p.accuracy))
        return replace(best, mode=mode)

    def calibrate_modes(self, modes: Sequence[Mode]) -> dict[str, OperatingPoint]:
        return {m.name: self.calibrate(m.max_accuracy_loss, m.name) for m in modes}
