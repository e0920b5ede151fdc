# Copyright 2026 dyn_perception maintainers. Apache-2.0.
"""Exit threshold calibration: the loss bound, its budget, and the reference it is paired with."""

from dyn_perception.runtime.exits import get_policy
from dyn_perception.training.profiling import ExitEvaluation
import numpy as np
import pytest

RNG = np.random.default_rng(0)
N, CLASSES = 2000, 4
LABELS = RNG.integers(0, CLASSES, N)


def _logits(accuracy: float, sharpness: float) -> np.ndarray:
    """Frames answered right with probability ``accuracy``; confident ones are right more."""
    right = RNG.random(N) < accuracy
    predicted = np.where(right, LABELS, (LABELS + 1) % CLASSES)
    logits = RNG.normal(0, 1, (N, CLASSES))
    logits[np.arange(N), predicted] += sharpness * (1 + right)
    return logits


EARLY, FINAL = _logits(0.8, 2.0), _logits(0.95, 4.0)


def _evaluation(**kwargs) -> ExitEvaluation:
    return ExitEvaluation([EARLY, FINAL], LABELS, get_policy('max_softmax'), [1, 10], **kwargs)


def test_the_calibrated_point_spends_at_most_its_budget():
    evaluation = _evaluation()
    final = evaluation.final_accuracy
    for budget in (0.0, 1.0, 5.0):
        point = evaluation.calibrate(budget)
        assert 100 * (final - point.accuracy) <= budget + 1e-9
    costs = [evaluation.calibrate(budget).mean_macs for budget in (0.0, 1.0, 5.0)]
    assert costs == sorted(costs, reverse=True) and costs[-1] < costs[0] < 10


def test_the_loss_is_paired_with_the_reference():
    own = _evaluation()
    same = _evaluation(reference=own.correct[-1])
    assert same.calibrate(1.0) == own.calibrate(1.0)
    # A reference that is right on every frame charges every early mistake (and the final
    # exit's own): with no budget nothing qualifies, with a large one exits are bought dearer.
    perfect = _evaluation(reference=np.ones(N, dtype=np.int8))
    with pytest.raises(ValueError):
        perfect.calibrate(0.0)
    assert perfect.calibrate(10.0).mean_macs > own.calibrate(10.0).mean_macs - 1e-9
