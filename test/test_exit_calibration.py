# Copyright 2026 dyn_perception maintainers. Apache-2.0.
"""Exit threshold calibration: the loss bound, its budget, its reference; variants per mode."""

from dyn_perception.runtime.artifacts import OperatingPoint, Profile, VariantProfile
from dyn_perception.runtime.exits import get_policy
from dyn_perception.runtime.modes import Mode
from dyn_perception.training.profiling import (
    BudgetUnreachable, choose_mode_variants, ExitEvaluation
)
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


def test_modes_keep_the_reference_budget_where_they_can_and_their_own_elsewhere():
    own = _evaluation()
    modes = (Mode('balanced', 0.5), Mode('loose', 10.0))
    points = own.calibrate_modes(modes)
    assert all(0 < p.loss_bound <= m.max_accuracy_loss / 100 + 1e-12
               for m, p in zip(modes, points.values()))
    # Against a reference right on every frame the final exit alone loses ~5 points: the
    # 0.5-point mode is out of reach and falls back to the network's own final exit, with its
    # bound against the reference (above budget, so no mode would choose it); the loose mode
    # is kept against the reference.
    perfect = _evaluation(reference=np.ones(N, dtype=np.int8))
    with pytest.raises(BudgetUnreachable):
        perfect.calibrate_modes(modes)
    mixed = perfect.calibrate_modes(modes, own)
    assert mixed['balanced'].thresholds == points['balanced'].thresholds
    assert mixed['balanced'].loss_bound > 0.005
    assert mixed['loose'] == perfect.calibrate(10.0, 'loose')
    assert mixed['loose'].loss_bound <= 0.1 + 1e-12


def _variant(name: str, **points: tuple[float, float]) -> VariantProfile:
    """Return a profile entry whose mode points have the given (mean MACs, loss bound)."""
    return VariantProfile(name, (), {'entropy': tuple(
        OperatingPoint((0.5,), (0.5, 0.5), 0.9, macs, mode, bound)
        for mode, (macs, bound) in points.items())})


def test_each_mode_runs_the_cheapest_variant_that_keeps_its_budget():
    modes = (Mode('performance', 0.0), Mode('eco', 1.5), Mode('critical', 4.0))
    profile = Profile('m', {}, (
        _variant('base', performance=(10, 0.0), eco=(6, 0.015), critical=(4, 0.03)),
        _variant('half', performance=(5, 0.02), eco=(3, 0.014), critical=(2, 0.05)),
        _variant('tiny', performance=(2, 0.05), eco=(1, 0.016), critical=(4, 0.01))))
    assert choose_mode_variants(profile, modes) == {
        'entropy': {'performance': 'base', 'eco': 'half', 'critical': 'base'}}
    # A tie in MACs goes to the earlier variant; points without a bound never qualify.
    tied = Profile('m', {}, (_variant('base', eco=(3, 0.01)), _variant('half', eco=(3, 0.0)),
                             _variant('old', eco=(1, None))))
    assert choose_mode_variants(tied, modes) == {'entropy': {'eco': 'base'}}
