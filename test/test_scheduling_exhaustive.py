"""The exhaustive checker: anomalies at early completions, agreement with the simulator."""

from dyn_perception.runtime.scheduling import (
    analyse, analyse_pooled, Dispatch, GangTask, simulate, validate)
from dyn_perception.runtime.scheduling.exhaustive import explore, InvalidReleaseModelError
from dyn_perception.runtime.scheduling.generators import random_task_set
from dyn_perception.runtime.scheduling.joblevel import job_level_analysis
import numpy as np
import pytest

RULES = list(Dispatch)


def periodic(tasks, horizon, execution=None):
    releases = [list(range(0, horizon, task.period)) for task in tasks]
    if execution is None:
        execution = [[task.wcet] * len(times) for task, times in zip(tasks, releases)]
    return releases, execution


def test_an_anomaly_the_wcet_schedule_does_not_show():
    # The simulator's anomaly, as offsets: first (C = 3) at 0, blocker (C = 4, 2 TPUs) at
    # 1, wide (C = 2, 2 TPUs) at 2.  At the WCET wide responds in 3; when first ends after
    # 1 tick the blocker grabs both TPUs and wide waits until 5, responds in 5 > D = 4.
    tasks = [GangTask(2, 4, 20, 2, 'wide'), GangTask(3, 10, 20, 1, 'first'),
             GangTask(4, 20, 20, 2, 'blocker')]
    offsets = [2, 0, 1]
    releases = [[offset] for offset in offsets]
    at_wcet = simulate(tasks, 2, Dispatch.STRICT, releases, [[2], [3], [4]])
    assert sum(at_wcet.misses) == 0
    found = explore(tasks, 2, Dispatch.STRICT, offsets=offsets)
    assert found.status == 'miss' and found.witness[0] == 0
    # With D = 5 no schedule misses, and the worst response of wide is 5.
    relaxed = [GangTask(2, 5, 20, 2, 'wide'), *tasks[1:]]
    found = explore(relaxed, 2, Dispatch.STRICT, offsets=offsets)
    assert found.schedulable and found.worst_response[0] == 5


def test_unit_jobs_reproduce_the_simulator_exactly():
    # With C = 1 everywhere there is one schedule per release pattern: the same numbers.
    rng = np.random.default_rng(11)
    for _ in range(40):
        tpus = int(rng.integers(2, 6))
        count = int(rng.integers(2, 7))
        tasks = [GangTask(1, int(t), int(t), int(rng.integers(1, tpus + 1)))
                 for t in rng.choice([2, 3, 4, 6], count)]
        for rule in RULES:
            found = explore(tasks, tpus, rule)
            result = simulate(tasks, tpus, rule, *periodic(tasks, 3 * found.hyperperiod))
            assert found.status == ('miss' if sum(result.misses) else 'schedulable')
            if found.schedulable:
                assert found.worst_response == result.worst_response


@pytest.mark.parametrize('rule', RULES)
def test_agrees_with_random_simulation_and_the_test(rule):
    # Every simulated run is one path of the graph: no worse than the search, and no miss
    # where it found none; a set the sporadic test accepts has no miss and its bounds hold.
    rng = np.random.default_rng(12 if rule is Dispatch.STRICT else 13)
    searched = 0
    for _ in range(60):
        tpus = int(rng.integers(2, 5))
        tasks = random_task_set(rng, tpus, int(rng.integers(2, 2 * tpus + 1)),
                                rng.uniform(0.2, 0.6) * tpus, period_choices=(10, 20, 40))
        found = explore(tasks, tpus, rule, budget=50_000)
        if found.status == 'gave-up':
            continue
        searched += 1
        verdict = analyse(tasks, tpus, rule)
        if verdict:
            assert found.schedulable
            assert all(w <= r for w, r in zip(found.worst_response, verdict.response_times))
        for run in range(3):
            releases, _ = periodic(tasks, 3 * found.hyperperiod)
            execution = [rng.integers(1, t.wcet + 1, len(times)).tolist()
                         for t, times in zip(tasks, releases)]
            result = simulate(tasks, tpus, rule, releases, execution)
            if found.schedulable:
                assert sum(result.misses) == 0
                assert all(s <= w for s, w in zip(result.worst_response, found.worst_response))
    assert searched > 30


def test_budget_and_hyperperiod_limits_are_reported():
    tasks = [GangTask(5, 9, 9, 1), GangTask(6, 11, 11, 1), GangTask(7, 13, 13, 1)]
    assert explore(tasks, 2, Dispatch.STRICT, budget=10).status == 'gave-up'
    too_long = explore(tasks, 2, Dispatch.STRICT, max_hyperperiod=100)
    assert too_long.status == 'too-long' and too_long.states == 0
    assert '1287' in too_long.reason


def test_jitter_is_explored_and_checked():
    # Alone, a task meets D whatever its jitter; two on one TPU with jitter can collide.
    task = GangTask(3, 5, 10, 1, 'a')
    assert explore([task], 1, Dispatch.STRICT, jitter=[5]).worst_response == (3,)
    pair = [GangTask(3, 4, 10, 1, 'a'), GangTask(3, 7, 10, 1, 'b')]
    assert explore(pair, 1, Dispatch.STRICT, offsets=[0, 5]).schedulable
    # b released at 5 + 3 = 8 at the latest, a at 10 + 0: a waits for b 1 tick, fine (R 4);
    # with a's deadline 3 that is a miss.
    jittered = explore(pair, 1, Dispatch.STRICT, offsets=[0, 5], jitter=[0, 3])
    assert jittered.schedulable and jittered.worst_response == (4, 3)
    tight = [GangTask(3, 3, 10, 1, 'a'), pair[1]]
    assert explore(tight, 1, Dispatch.STRICT, offsets=[0, 5], jitter=[0, 3]).status == 'miss'
    with pytest.raises(InvalidReleaseModelError):
        explore(pair, 1, Dispatch.STRICT, jitter=[7, 0])
    with pytest.raises(InvalidReleaseModelError):
        explore(pair, 1, Dispatch.STRICT, offsets=[10, 0])


def test_job_level_analysis_decides_or_falls_back():
    # Synchronous, small hyperperiod: decided exactly, tighter than the sporadic test.
    tasks = [GangTask(2, 5, 5, 1, 'A'), GangTask(2, 7, 7, 1, 'B'), GangTask(2, 7, 7, 1, 'C')]
    exact = job_level_analysis(tasks, 1, Dispatch.STRICT)
    assert exact and exact.method == 'job-level'
    # On one TPU the global test is the uniprocessor one: C's bound is 7, the job-level
    # worst is also 7 here (C's second job), and A's 3 (blocked by C running 4..6).
    assert exact.response_times == (3, 4, 7)
    # Too long a hyperperiod: the sporadic test decides, and says so.
    slow = job_level_analysis(tasks, 1, Dispatch.STRICT, max_hyperperiod=10)
    assert slow.method == 'sporadic' and 'hyperperiod 35 > 10' in slow.reason
    assert slow.schedulable == bool(analyse_pooled(tasks, 1, Dispatch.STRICT))
    # Out of budget: the same, with the jitter taken off the separation.
    jittered = job_level_analysis(tasks, 1, Dispatch.STRICT, jitter=[0, 0, 0], budget=3)
    assert jittered.method == 'sporadic' and 'budget' in jittered.reason


@pytest.mark.parametrize('rule', list(Dispatch))
def test_job_level_verdicts_hold_under_random_jitter(rule):
    # Periodic streams with per-job release jitter: whatever decides (the exact search or
    # the sporadic fallback with separation T - J), random runs with jitter drawn per job
    # and execution times in [1, C] never miss nor exceed the bounds.
    rng = np.random.default_rng(21)
    decided = {'job-level': 0, 'sporadic': 0}
    while min(decided.values()) < 5:
        tpus = int(rng.choice([2, 4]))
        tasks = random_task_set(rng, tpus, int(rng.integers(2, 2 * tpus + 1)),
                                rng.uniform(0.2, 0.5) * tpus, deadline_ratio=(0.6, 0.9),
                                period_choices=(10, 20, 40))
        jitter = [int(rng.integers(0, task.period - task.deadline + 1)) for task in tasks]
        # A small budget sends some sets to the fallback.
        verdict = job_level_analysis(tasks, tpus, rule, jitter=jitter,
                                     budget=int(rng.choice([300, 50_000])))
        if not verdict:
            continue
        decided[verdict.method] += 1
        assert validate(tasks, tpus, rule, verdict.response_times, rng, jitter=jitter).sound


def test_jittered_runs_find_a_jitter_miss():
    # a released up to 2 ticks late finds b (released on time) running: 2 + 3 > D = 3.
    tasks = [GangTask(3, 3, 10, 1, 'a'), GangTask(3, 7, 10, 1, 'b')]
    assert job_level_analysis(tasks, 1, Dispatch.STRICT).schedulable
    assert not job_level_analysis(tasks, 1, Dispatch.STRICT, jitter=[2, 0]).schedulable
    outcome = validate(tasks, 1, Dispatch.STRICT, (3, 6), np.random.default_rng(3),
                       jitter=[2, 0])
    assert outcome.misses > 0
