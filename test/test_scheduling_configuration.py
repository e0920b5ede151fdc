"""Least-energy configuration: exact against brute force, heuristic against exact."""

import itertools

from dyn_perception.runtime.scheduling import (
    analyse_pooled, assign_priorities, choose_exact, choose_heuristic, deadline_monotonic,
    Dispatch, InvalidStreamError, Option, partition, PooledAnalysis, Stream)
from dyn_perception.runtime.scheduling.generators import random_streams
from dyn_perception.runtime.scheduling.priority import reorder
import numpy as np
import pytest

RULES = list(Dispatch)


GLOBAL = ('global',)


def partitioned_accepts(tasks, tpus):
    return bool(partition(reorder(tasks, deadline_monotonic(tasks)), tpus))


def brute_force(streams, tpus, rule, with_partitioning=False):
    """Cheapest accepted energy rate over every combination of admissible options."""
    best = None
    for picks in itertools.product(*(stream.admissible(tpus) for stream in streams)):
        tasks = [stream.task(option.width, option.wcet) for stream, option in zip(streams, picks)]
        if assign_priorities(tasks, tpus, rule, test=PooledAnalysis).verdict or (
                with_partitioning and partitioned_accepts(tasks, tpus)):
            rate = sum(stream.energy_rate(option) for stream, option in zip(streams, picks))
            best = rate if best is None else min(best, rate)
    return best


def check_configuration(streams, tpus, rule, configuration):
    """Check that the choice keeps every floor and passes its analysis in its own order."""
    for stream, option in zip(streams, configuration.choices):
        assert option in stream.admissible(tpus)
    tasks = [stream.task(option.width, option.wcet)
             for stream, option in zip(streams, configuration.choices)]
    if configuration.analysis == 'partitioned':
        split = partition(reorder(tasks, configuration.priorities), tpus)
        assert split
        assert split.response_times == tuple(configuration.response_times[i]
                                             for i in configuration.priorities)
        assert sorted(i for part in configuration.partitions for i in part.tasks) == \
            list(range(len(streams)))
        return
    assert configuration.analysis == 'global' and configuration.test == 'pooled'
    verdict = analyse_pooled(reorder(tasks, configuration.priorities), tpus, rule)
    assert verdict
    assert verdict.response_times == tuple(configuration.response_times[i]
                                           for i in configuration.priorities)
    assert configuration.energy_rate == pytest.approx(
        sum(stream.energy_rate(option) for stream, option in zip(streams, configuration.choices)))


@pytest.mark.parametrize('rule', RULES)
def test_exact_search_matches_brute_force(rule):
    rng = np.random.default_rng(8)
    feasible = 0
    for _ in range(12):
        streams = random_streams(rng, 3, 3, load=float(rng.uniform(0.3, 0.8)))
        expected = brute_force(streams, 3, rule)
        selection = choose_exact(streams, 3, rule, analyses=GLOBAL)
        if expected is None:
            assert selection.configuration is None
            assert selection.reason.startswith('unschedulable')
            continue
        feasible += 1
        assert selection.configuration.energy_rate == pytest.approx(expected)
        check_configuration(streams, 3, rule, selection.configuration)
    assert 0 < feasible < 12


@pytest.mark.parametrize('rule', RULES)
def test_partitioning_widens_the_choice(rule):
    # With partitioning allowed the search finds configurations at least as cheap as with
    # the global test alone, never cheaper than the brute force over either analysis (its
    # pruning on rejected partial sets may miss some: the heuristic is not monotone).
    rng = np.random.default_rng(10)
    improved = 0
    for _ in range(12):
        streams = random_streams(rng, 3, 3, load=float(rng.uniform(0.3, 0.8)))
        alone = choose_exact(streams, 3, rule, analyses=GLOBAL).configuration
        both = choose_exact(streams, 3, rule).configuration
        floor = brute_force(streams, 3, rule, with_partitioning=True)
        if alone is not None:
            assert both is not None and both.energy_rate <= alone.energy_rate + 1e-12
        if both is not None:
            check_configuration(streams, 3, rule, both)
            assert both.energy_rate >= floor - 1e-12
            improved += alone is None or both.energy_rate < alone.energy_rate - 1e-12
    assert improved > 0


def test_unknown_analysis_is_refused():
    stream = Stream('cam', 40, 40, 0.0, (Option('full', 1, 10, 1.0, 0.9),))
    with pytest.raises(InvalidStreamError):
        choose_exact([stream], 2, Dispatch.STRICT, analyses=('magic',))


def test_job_level_analysis_is_recorded_when_it_decides():
    # Two streams on one TPU, periodic and synchronous: A (C 3, T 10, D 4) and B (C 3,
    # T 10, D 6).  Global and partitioned: A may be blocked by B's job started a tick
    # earlier (R_A = 2 + 3 = 5 > 4); synchronous releases cannot do that: A runs first.
    streams = [Stream('A', 10, 4, 0.0, (Option('full', 1, 3, 1.0, 0.9),)),
               Stream('B', 10, 6, 0.0, (Option('full', 1, 3, 1.0, 0.9),))]
    assert choose_exact(streams, 1, Dispatch.STRICT).configuration is None
    chosen = choose_exact(streams, 1, Dispatch.STRICT,
                          analyses=('global', 'partitioned', 'job-level')).configuration
    assert chosen.analysis == 'job-level' and chosen.response_times == (3, 6)


@pytest.mark.parametrize('rule', RULES)
def test_heuristic_is_accepted_and_never_beats_exact(rule):
    rng = np.random.default_rng(9)
    found = 0
    for _ in range(12):
        streams = random_streams(rng, 5, 4, load=float(rng.uniform(0.3, 0.6)))
        exact = choose_exact(streams, 4, rule)
        heuristic = choose_heuristic(streams, 4, rule)
        if heuristic.configuration is None:
            continue
        found += 1
        check_configuration(streams, 4, rule, heuristic.configuration)
        assert exact.configuration is not None
        assert heuristic.configuration.energy_rate >= exact.configuration.energy_rate - 1e-12
    assert found >= 6


@pytest.mark.parametrize('choose', [choose_exact, choose_heuristic])
def test_non_monotone_profile_picks_the_middle_width(choose):
    # Two TPUs hold the weights on chip; more adds pipeline hops: C = 30, 12, 14, 20.
    # Energy ~ m C: 60, 48, 84, 160, so two TPUs is the cheapest; the pruned variant
    # would be cheaper still but misses the accuracy floor.
    options = tuple(Option('full', width, wcet, 2.0 * width * wcet, 0.9)
                    for width, wcet in zip(range(1, 5), (30, 12, 14, 20)))
    pruned = Option('pruned', 1, 6, 12.0, 0.7)
    stream = Stream('cam', 40, 40, 0.8, options + (pruned,))
    configuration = choose([stream], 4, Dispatch.BYPASS).configuration
    assert configuration.choices == (options[1],)
    assert configuration.response_times == (12,)
    assert configuration.energy_rate == pytest.approx(48 / 40)


@pytest.mark.parametrize('choose', [choose_exact, choose_heuristic])
def test_deadline_forces_a_dearer_wider_gang(choose):
    # Alone, width 1 is cheapest; the short-deadline stream cannot wait behind a 30-tick
    # job, so the long job must be split over two TPUs.
    long_job = Stream('long', 100, 100, 0.0,
                      (Option('full', 1, 30, 60.0, 0.9), Option('full', 2, 16, 64.0, 0.9)))
    urgent = Stream('urgent', 20, 18, 0.0, (Option('full', 2, 2, 8.0, 0.9),))
    configuration = choose([long_job, urgent], 2, Dispatch.STRICT).configuration
    assert configuration.choices[0].width == 2
    assert configuration.priorities == (1, 0)


@pytest.mark.parametrize('choose', [choose_exact, choose_heuristic])
@pytest.mark.parametrize('rule', RULES)
def test_a_search_budget_bounds_the_work_and_what_it_returns_is_accepted(choose, rule):
    rng = np.random.default_rng(12)
    stopped = answered = 0
    for _ in range(6):
        streams = random_streams(rng, 5, 4, load=float(rng.uniform(0.3, 0.7)))
        free = choose(streams, 4, rule, analyses=GLOBAL)
        for budget in sorted({1, max(1, free.analyses - 1)}):
            capped = choose(streams, 4, rule, analyses=GLOBAL, budget=budget)
            assert capped.analyses <= budget
            assert capped.budget_spent == (budget < free.analyses)
            if capped.configuration is None:
                if capped.budget_spent:
                    stopped += 1
                    assert f'budget of {budget} analyses' in capped.reason
                continue
            answered += capped.budget_spent
            check_configuration(streams, 4, rule, capped.configuration)
            assert free.configuration is not None
            if choose is choose_exact:  # the exact search's incumbent is never cheaper
                assert capped.configuration.energy_rate >= \
                    free.configuration.energy_rate - 1e-12
        generous = choose(streams, 4, rule, analyses=GLOBAL, budget=free.analyses + 1)
        assert generous.configuration == free.configuration and not generous.budget_spent
    assert stopped and answered  # both ways of stopping happened


@pytest.mark.parametrize('budget', [0, -3, 1.5, True])
def test_a_bad_search_budget_is_refused(budget):
    streams = random_streams(np.random.default_rng(1), 2, 2)
    with pytest.raises(InvalidStreamError, match='budget'):
        choose_heuristic(streams, 2, Dispatch.STRICT, budget=budget)
