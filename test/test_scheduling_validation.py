"""Soundness evidence: the issue's counter-example, and accepted sets against the simulator."""

import itertools

from dyn_perception.runtime.scheduling import (
    analyse, assign_priorities, deadline_monotonic, Dispatch, explore, GangTask, PooledAnalysis,
    simulate, validate)
from dyn_perception.runtime.scheduling.generators import random_task_set
from dyn_perception.runtime.scheduling.naive import naive_analyse
from dyn_perception.runtime.scheduling.priority import reorder
from dyn_perception.runtime.scheduling.validation import (
    blocking_counterexample, chain_counterexample, search_counterexample)
import numpy as np
import pytest

RULES = list(Dispatch)


def counter_example(deadline):
    """Issue 6's set on 2 TPUs; the third task has D = T = `deadline` (5 in the issue)."""
    return [GangTask(1, 3, 4, 1, 'a'), GangTask(2, 3, 4, 1, 'b'),
            GangTask(2, deadline, deadline, 2, 'c')]


def worst_over_release_patterns(tasks, rule):
    """Worst response of the last task over small offsets and gaps, all jobs at the WCET."""
    def patterns(task, jobs):
        for offset in range(4):
            for gaps in itertools.product(range(task.period, task.period + 3), repeat=jobs - 1):
                yield list(itertools.accumulate(gaps, initial=offset))

    worst = 0
    for releases in itertools.product(patterns(tasks[0], 3), patterns(tasks[1], 3),
                                      patterns(tasks[2], 2)):
        execution = [[task.wcet] * len(times) for task, times in zip(tasks, releases)]
        worst = max(worst, simulate(tasks, 2, rule, releases, execution).worst_response[2])
    return worst


@pytest.mark.parametrize('rule', RULES)
def test_naive_carry_in_port_is_unsound(rule):
    tasks = counter_example(5)
    assert naive_analyse(tasks, 2, rule).response_times == (2, 3, 5)
    # c's first job holds both TPUs 5..7 and so delays b's job released at 6; at 7, when
    # c's next job arrives, b has a backlog (7..9), then a (9..10) and b again (10..12):
    # c starts at 12 and responds in 7, above the naive bound and its deadline.
    releases = [[0, 4, 9], [2, 6, 10], [2, 7]]
    execution = [[1, 1, 1], [2, 2, 2], [2, 2]]
    result = simulate(tasks, 2, rule, releases, execution)
    assert result.worst_response[2] == 7
    assert result.misses[2] == 1
    # The search used below finds that schedule too.
    assert worst_over_release_patterns(tasks, rule) == 7
    # The shipped test rejects the set, which is right: it can miss a deadline.
    verdict = analyse(tasks, 2, rule)
    assert not verdict
    assert verdict.reason.startswith('unschedulable: task 2 (c')


@pytest.mark.parametrize('rule', RULES)
def test_naive_port_forgets_jobs_running_at_the_release(rule):
    # Found by the benchmark's random validation: b needs all 8 TPUs, so the naive port
    # allows no carry-in at all (m - m_b = 0), yet a's job running at b's release must
    # finish first, and a's next job, released when it ends, goes first again.
    tasks = [GangTask(23, 25, 25, 6, 'a'), GangTask(3, 28, 37, 8, 'b')]
    assert naive_analyse(tasks, 8, rule).response_times == (25, 26)
    horizon = 30 * 37
    releases = [list(range(0, horizon, task.period)) for task in tasks]
    execution = [[task.wcet] * len(times) for task, times in zip(tasks, releases)]
    result = simulate(tasks, 8, rule, releases, execution)
    assert result.worst_response == (25, 40)
    assert result.misses[1] > 0
    assert not analyse(tasks, 8, rule)


@pytest.mark.parametrize('rule', RULES)
def test_bound_holds_when_the_counter_example_is_relaxed(rule):
    # With D = T = 8 the shipped test accepts c with R = 8; the naive port still says 5.
    tasks = counter_example(8)
    verdict = analyse(tasks, 2, rule)
    assert verdict.response_times == (2, 3, 8)
    assert naive_analyse(tasks, 2, rule).response_times[2] == 5
    worst = worst_over_release_patterns(tasks, rule)
    assert worst <= verdict.response_times[2]
    outcome = validate(tasks, 2, rule, verdict.response_times, np.random.default_rng(0),
                       random_runs=20)
    assert outcome.sound


def test_validation_reports_a_violated_bound():
    # Bounds below the WCET cannot hold: the check must say so.
    tasks = counter_example(8)
    outcome = validate(tasks, 2, Dispatch.STRICT, [1, 1, 1], np.random.default_rng(0))
    assert not outcome.sound
    assert outcome.overruns == 3
    assert max(outcome.ratios) > 1


def accepted_sample(seed, wanted, priorities):
    """Random accepted (tasks, tpus, rule, bounds), m from 2 to 8, both rules alternating."""
    rng = np.random.default_rng(seed)
    found = 0
    for draw in itertools.count():
        rule = RULES[draw % 2]
        tpus = int(rng.integers(2, 9))
        tasks = random_task_set(rng, tpus, int(rng.integers(2, 2 * tpus + 1)),
                                rng.uniform(0.05, 0.8) * tpus)
        ordered = priorities(tasks, tpus, rule)
        if ordered is None:
            continue
        verdict = analyse(ordered, tpus, rule)
        if verdict:
            yield ordered, tpus, rule, verdict.response_times, rng
            found += 1
            if found == wanted:
                return


def deadline_monotonic_order(tasks, tpus, rule):
    return reorder(tasks, deadline_monotonic(tasks))


def opa_order_where_it_differs(tasks, tpus, rule):
    assignment = assign_priorities(tasks, tpus, rule)
    if assignment.method != 'opa' or assignment.order == deadline_monotonic(tasks):
        return None
    return reorder(tasks, assignment.order)


@pytest.mark.parametrize('priorities, wanted', [(deadline_monotonic_order, 200),
                                                (opa_order_where_it_differs, 40)])
def test_accepted_sets_hold_in_simulation(priorities, wanted):
    checked = jobs = 0
    for tasks, tpus, rule, bounds, rng in accepted_sample(6, wanted, priorities):
        outcome = validate(tasks, tpus, rule, bounds, rng)
        assert outcome.sound, (tasks, tpus, rule, bounds, outcome)
        checked += 1
        jobs += outcome.jobs
    assert checked == wanted
    assert jobs > 100 * wanted


def test_chain_counterexample_finds_bypass_starvation():
    # A full-width job on 2 TPUs above two narrow 3-tick jobs: under bypass the second
    # narrow job starts while the first runs, and the wide one misses; under strict no
    # lower job starts while it waits, and the pooled test accepts (R = 3).
    tasks = [GangTask(1, 3, 10, 2, 'full'), GangTask(3, 10, 10, 1, 'a'),
             GangTask(3, 10, 10, 1, 'b')]
    witness = chain_counterexample(tasks, 2, Dispatch.BYPASS)
    assert witness is not None
    assert simulate(tasks, 2, Dispatch.BYPASS, *witness).misses[0] == 1
    assert chain_counterexample(tasks, 2, Dispatch.STRICT) is None


@pytest.mark.parametrize('rule', RULES)
def test_chain_counterexamples_are_real_and_rejected(rule):
    # Every witness misses in the simulator, and the shipped test rejects those sets.
    rng = np.random.default_rng(41)
    found = 0
    for _ in range(150):
        tpus = int(rng.choice([2, 4, 8]))
        tasks = random_task_set(rng, tpus, int(rng.integers(2, 2 * tpus + 1)),
                                rng.uniform(0.2, 0.6) * tpus, deadline_ratio=(0.6, 1.0),
                                period_choices=(10, 20, 40, 50, 100))
        witness = chain_counterexample(tasks, tpus, rule)
        if witness is not None:
            found += 1
            assert any(simulate(tasks, tpus, rule, *witness).misses)
            assert not PooledAnalysis(tasks, tpus, rule).verdict()
    assert found > 5


def test_search_counterexample_refutes_what_the_other_searches_accept():
    # A set of issue 15's population (m = 4): the synchronous search over every execution
    # time, blocking alone and one job per task see no miss; the hill climbing finds a
    # sporadic schedule with one, and the simulator confirms it.
    tasks = [GangTask(1, 25, 40, 2), GangTask(21, 25, 40, 1), GangTask(14, 40, 50, 2),
             GangTask(50, 86, 100, 1)]
    rule = Dispatch.STRICT
    assert explore(tasks, 4, rule).schedulable
    assert blocking_counterexample(tasks, 4) is None
    assert chain_counterexample(tasks, 4, rule) is None
    witness = search_counterexample(tasks, 4, rule)
    assert witness is not None
    assert any(simulate(tasks, 4, rule, *witness).misses)
    assert not PooledAnalysis(tasks, 4, rule).verdict()


@pytest.mark.parametrize('rule', RULES)
def test_search_counterexample_never_refutes_an_accepted_set(rule):
    # Soundness cross-check: on sets the shipped test accepts, no miss is found.
    rng = np.random.default_rng(43)
    accepted = 0
    while accepted < 15:
        tpus = int(rng.choice([2, 4, 8]))
        tasks = random_task_set(rng, tpus, int(rng.integers(2, 2 * tpus + 1)),
                                rng.uniform(0.2, 0.5) * tpus, deadline_ratio=(0.6, 1.0),
                                period_choices=(10, 20, 40, 50, 100))
        if PooledAnalysis(tasks, tpus, rule).verdict():
            accepted += 1
            assert search_counterexample(tasks, tpus, rule, runs=600) is None
