# Copyright 2026 dyn_perception maintainers. Apache-2.0.
"""Exit policies: scores, directions, validation and the first-accepting-exit rule."""

from dyn_perception.runtime.exits import exit_index, get_policy, POLICIES, softmax
import numpy as np
import pytest

CONFIDENT = np.array([[8.0, 0.0, 0.0]])
UNSURE = np.array([[1.0, 1.0, 0.9]])


@pytest.mark.parametrize('name', sorted(POLICIES))
def test_confident_logits_score_as_more_confident(name):
    policy = get_policy(name)
    confident, unsure = policy.score(CONFIDENT)[0], policy.score(UNSURE)[0]
    if policy.higher_is_confident:
        assert confident > unsure
    else:
        assert confident < unsure
    threshold = (confident + unsure) / 2
    assert policy.accepts(policy.score(CONFIDENT), threshold)[0]
    assert not policy.accepts(policy.score(UNSURE), threshold)[0]
    assert not policy.accepts(policy.score(CONFIDENT), None)[0]


def test_scores_have_their_textbook_values():
    p = softmax(np.array([[2.0, 1.0, 0.0]]))[0]
    assert get_policy('max_softmax').score(np.log(p)[None])[0] == pytest.approx(p.max())
    assert get_policy('margin').score(np.log(p)[None])[0] == pytest.approx(p[0] - p[1])
    uniform = np.zeros((1, 10))
    assert get_policy('entropy').score(uniform)[0] == pytest.approx(np.log(10))
    assert softmax(np.array([[1000.0, 0.0]]))[0, 0] == pytest.approx(1.0)


def test_threshold_validation_gives_reasons():
    assert get_policy('max_softmax').validate(1.5) is not None
    assert get_policy('entropy').validate(-0.1) is not None
    assert get_policy('margin').validate(float('nan')) is not None
    assert get_policy('entropy').validate(0.3) is None
    assert get_policy('entropy').validate(None) is None
    with pytest.raises(ValueError, match='known: entropy'):
        get_policy('confidence')


def test_exit_index_takes_the_first_exit_that_accepts():
    policy = get_policy('max_softmax')
    scores = [np.array([0.95, 0.5, 0.5, 0.99]), np.array([0.2, 0.9, 0.5, 0.99]),
              np.array([0.1, 0.1, 0.1, 0.1])]
    np.testing.assert_array_equal(exit_index(scores, policy, [0.9, 0.8]), [0, 1, 2, 0])
    np.testing.assert_array_equal(exit_index(scores, policy, [None, 0.8]), [2, 1, 2, 1])
    with pytest.raises(ValueError, match='need 2 thresholds'):
        exit_index(scores, policy, [0.9])


@pytest.mark.parametrize('name', sorted(POLICIES))
def test_sweep_goes_from_never_to_always(name):
    policy = get_policy(name)
    rng = np.random.default_rng(0)
    scores = policy.score(rng.normal(size=(500, 10)) * 3)
    sweep = policy.sweep(10, 11)
    rates = [policy.accepts(scores, t).mean() for t in sweep]
    assert rates == sorted(rates)
    assert rates[0] < 0.05 and rates[-1] == 1.0


@pytest.mark.parametrize('name', sorted(POLICIES))
def test_single_frame_decision_matches_the_batch_scores(name):
    policy = get_policy(name)
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(300, 10)) * rng.uniform(0.1, 8.0, size=(300, 1))
    scores = policy.score(logits)
    for threshold in np.quantile(scores, [0.1, 0.5, 0.9]):
        batch = policy.accepts(scores, threshold)
        single = [policy.confident(row, threshold) for row in logits]
        assert np.count_nonzero(batch != np.array(single)) == 0
    assert not policy.confident(logits[0], None)
