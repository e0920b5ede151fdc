"""The response-time tests (baseline and pooled): hand-computed cases, properties, soundness."""

import itertools

from dyn_perception.runtime.scheduling import (
    analyse, analyse_pooled, assign_priorities, Dispatch, explore, GangAnalysis, GangTask,
    Knapsack, PooledAnalysis, simulate)
from dyn_perception.runtime.scheduling.analysis import workload
from dyn_perception.runtime.scheduling.generators import random_task_set
from dyn_perception.runtime.scheduling.knapsack import knapsack_bound, most_valuable
from dyn_perception.runtime.scheduling.pooled import pool_profile, started_in_window
from dyn_perception.runtime.scheduling.validation import blocking_counterexample
import numpy as np
import pytest

RULES = list(Dispatch)


def brute_force_knapsack(widths, values, capacity):
    best = 0
    for chosen in itertools.product([False, True], repeat=len(widths)):
        mask = np.array(chosen, dtype=bool)
        if widths[mask].sum() <= capacity:
            best = max(best, int(values[mask].sum()))
    return best


def test_knapsack_matches_brute_force():
    rng = np.random.default_rng(1)
    for _ in range(300):
        count, capacity = int(rng.integers(0, 10)), int(rng.integers(1, 9))
        widths = rng.integers(1, capacity + 2, count)
        values = rng.integers(0, 30, count)
        best = brute_force_knapsack(widths, values, capacity)
        kept = most_valuable(widths, values, capacity)
        assert knapsack_bound(widths[kept], values[kept], capacity, Knapsack.EXACT) == best
        assert knapsack_bound(widths, values, capacity, Knapsack.EXACT) == best
        assert knapsack_bound(widths, values, capacity, Knapsack.FRACTIONAL) >= best
        assert knapsack_bound(widths, values, capacity, Knapsack.NONE) == values.sum()


def test_most_valuable_keeps_few_items():
    # 100 items of widths 1..8: only sum_w 8 // w = 20 can ever matter.
    rng = np.random.default_rng(2)
    widths = rng.integers(1, 9, 100)
    kept = most_valuable(widths, rng.integers(0, 50, 100), 8)
    assert len(kept) <= 20
    assert all(np.sum(widths[kept] == w) <= 8 // w for w in range(1, 9))


def test_fractional_bound_is_exact_rational():
    # Two items of width 2 worth 3 in room 3: 3 + 3 / 2 exactly, no float rounding.
    bound = knapsack_bound(np.array([2, 2]), np.array([3, 3]), 3, Knapsack.FRACTIONAL)
    assert bound * 2 == 9


def test_workload_function():
    wcet, period = np.array([2]), np.array([5])
    # Released every 5 ticks, each job within 2 + slack of its release.
    assert workload(1, wcet, period, np.array([0]))[0] == 1
    assert workload(5, wcet, period, np.array([0]))[0] == 2
    assert workload(6, wcet, period, np.array([0]))[0] == 3
    # slack 3: a job ending late in the window and the next released 5 ticks later.
    assert workload(4, wcet, period, np.array([3]))[0] == 4
    assert workload(7, wcet, period, np.array([3]))[0] == 4
    assert workload(9, wcet, period, np.array([3]))[0] == 6
    # Capped by the window: jobs of one task never overlap.
    assert workload(1, np.array([4]), np.array([10]), np.array([6]))[0] == 1


@pytest.mark.parametrize('rule', RULES)
def test_lone_task_responds_in_its_wcet(rule):
    assert analyse([GangTask(7, 9, 10, 3)], 4, rule).response_times == (7,)


@pytest.mark.parametrize('rule', RULES)
def test_blocking_by_a_wider_lower_priority_job(rule):
    # narrow: B = 2, the wide job may have started a tick earlier: value 2 min(4, y), so
    # Omega(y) = 2 y up to y = 4, then 8: x = 4, R = 6.
    # wide: B = 1, narrow's jobs run within R = 6 (slack 4): W(1) = 1, W(2) = 2, W(3) = 2,
    # so x = 2, R = 7.
    verdict = analyse([GangTask(2, 10, 10, 1, 'narrow'), GangTask(5, 20, 20, 2, 'wide')], 2,
                      rule)
    assert verdict.response_times == (6, 7)


def test_bypass_counts_narrow_lower_priority_overtakers():
    # A wide high-priority task and two narrow low-priority ones on 2 TPUs, B = 1.
    tasks = [GangTask(2, 20, 20, 2, 'wide'), GangTask(3, 10, 10, 1, 'a'),
             GangTask(3, 10, 10, 1, 'b')]
    # strict: the narrow jobs only block, both fit in the knapsack: Omega(y) = 2 min(2, y),
    # x = 4, R = 6.
    assert analyse(tasks, 2, Dispatch.STRICT).response_times[0] == 6
    # bypass: they may overtake, each W(y) with slack D - C = 7, capped at y:
    # Omega(1) = 2 -> x = 2, Omega(3) = 6 -> x = 6, Omega(7) = 12 -> x = 12,
    # Omega(13) = 12: R = 14.
    assert analyse(tasks, 2, Dispatch.BYPASS).response_times[0] == 14


def test_knapsack_limits_blocking_to_what_fits():
    # Three lower-priority full-width jobs: only one can be running at the release.
    tasks = [GangTask(1, 10, 10, 1, 'top')] + [GangTask(4, 50, 50, 4, f'w{i}') for i in range(3)]
    with_knapsack = analyse(tasks, 4, Dispatch.STRICT, Knapsack.EXACT)
    without = analyse(tasks, 4, Dispatch.STRICT, Knapsack.NONE)
    assert with_knapsack.response_times[0] == 1 + 3
    assert without.response_times[0] == 1 + 9


def random_sets(seed, count):
    rng = np.random.default_rng(seed)
    for _ in range(count):
        tpus = int(rng.integers(2, 9))
        yield tpus, random_task_set(rng, tpus, int(rng.integers(2, 2 * tpus + 1)),
                                    rng.uniform(0.05, 0.7) * tpus)


def test_weaker_blocking_bounds_only_lose_sets():
    # The fractional relaxation and no knapsack are upper bounds of the exact knapsack:
    # whatever they accept, the exact version accepts with bounds no larger.
    for tpus, tasks in random_sets(3, 150):
        for rule in RULES:
            exact = analyse(tasks, tpus, rule, Knapsack.EXACT)
            for weaker in (Knapsack.FRACTIONAL, Knapsack.NONE):
                loose = analyse(tasks, tpus, rule, weaker)
                if loose:
                    assert exact
                    assert all(e <= w for e, w in zip(exact.response_times,
                                                      loose.response_times))


def test_removing_a_task_never_hurts():
    # The configuration search prunes on this property.
    for tpus, tasks in random_sets(4, 100):
        for rule in RULES:
            full = analyse(tasks, tpus, rule)
            if not full:
                continue
            for dropped in range(len(tasks)):
                rest = tasks[:dropped] + tasks[dropped + 1:]
                if not rest:
                    continue
                bounds = analyse(rest, tpus, rule)
                assert bounds
                kept = full.response_times[:dropped] + full.response_times[dropped + 1:]
                assert all(r <= f for r, f in zip(bounds.response_times, kept))


def test_strict_busy_count_uses_widest_higher_task():
    tasks = [GangTask(3, 10, 10, 4, 'wide'), GangTask(1, 10, 10, 1, 'narrow')]
    # strict, narrow: it waits behind a pending full-width job, so only
    # B = 4 - 4 + 1 = 1 TPU is surely busy; W_wide with slack 0 and weight min(4, 1) = 1:
    # Omega(y) = min(3, y): x = 3, R = 4.  wide: the narrow job leaves 0 ticks, R = 3.
    assert analyse(tasks, 4, Dispatch.STRICT).response_times == (3, 4)
    # bypass, wide: the narrow task counts as an overtaker (pessimistic here: it cannot
    # actually start while wide waits), W with slack 9: Omega = 1, 2, 2: R = 3 + 2.
    # narrow: B = 4, weight 4, W_wide with slack 2: Omega(y) = 4 min(3, y): x = 3, R = 4.
    assert analyse(tasks, 4, Dispatch.BYPASS).response_times == (5, 4)


def test_lateness_is_zero_exactly_when_the_test_accepts():
    # The configuration heuristic steers by lateness and stops when the test accepts.
    for tpus, tasks in random_sets(5, 150):
        for rule in RULES:
            lateness = GangAnalysis(tasks, tpus, rule).lateness(overrun=200)
            assert (lateness == 0) == bool(analyse(tasks, tpus, rule))
            assert lateness >= 0


# The pooled test (runtime/scheduling/pooled.py): the global test the package ships.

def brute_force_pool(widths, leftovers, length, busy, capacity):
    best = 0
    for chosen in itertools.product([False, True], repeat=len(widths)):
        picked = [(w, c) for w, c, keep in zip(widths, leftovers, chosen) if keep]
        if sum(w for w, _ in picked) <= capacity:
            best = max(best, sum(min(busy, sum(w for w, c in picked if c > t))
                                 for t in range(length)))
    return best


def test_pool_profile_matches_brute_force():
    rng = np.random.default_rng(11)
    for _ in range(150):
        capacity = int(rng.integers(1, 9))
        count = int(rng.integers(0, 7))
        widths = rng.integers(1, capacity + 1, count).tolist()
        leftovers = sorted(rng.integers(0, 12, count).tolist(), reverse=True)
        busy = int(rng.integers(1, capacity + 1))
        profile = pool_profile(widths, leftovers, 12, busy, capacity)
        for length in (0, 1, 3, 7, 12):
            assert profile[length] == brute_force_pool(widths, leftovers, length, busy,
                                                       capacity)


def test_started_in_window_matches_job_by_job_sum():
    # Job n released at r - slack + n T starts no earlier than r and r + n T - slack.
    rng = np.random.default_rng(12)
    for _ in range(300):
        wcet, period = int(rng.integers(1, 10)), int(rng.integers(10, 30))
        slack, length = int(rng.integers(0, 2 * period)), int(rng.integers(1, 80))
        by_job = sum(min(wcet, max(0, length - max(0, n * period - slack)))
                     for n in range(length + slack + 1))
        assert started_in_window(length, np.array([wcet]), np.array([period]),
                                 np.array([slack]))[0] == min(by_job, length)


@pytest.mark.parametrize('rule', RULES)
def test_pooled_waits_for_the_longest_blocker_not_their_sum(rule):
    # A full-width job on 2 TPUs and two narrow lower-priority jobs of 3 ticks, which may
    # both run (2 ticks left each) at its release.  The baseline charges both: B = 1,
    # Omega(3) = 2 + 2, x = 4 > D - C = 2, rejected.  They run side by side: the pooled
    # test waits for one, x = 2, R = 3 under strict; the exhaustive search (synchronous,
    # every execution time) agrees the set is schedulable.  Under bypass one of them can
    # start while the other runs and starve the full job for 4 ticks: rejected.
    tasks = [GangTask(1, 3, 10, 2, 'full'), GangTask(3, 10, 10, 1, 'a'),
             GangTask(3, 10, 10, 1, 'b')]
    assert not analyse(tasks, 2, rule)
    assert explore(tasks, 2, rule).schedulable
    verdict = analyse_pooled(tasks, 2, rule)
    if rule is Dispatch.STRICT:
        assert verdict.response_times[0] == 3
        # The bound is reached: a released at 0, full at 1, which waits until 3.
        assert simulate(tasks, 2, rule, [[1], [0], []], [[1], [3], []]).worst_response[0] == 3
    else:
        assert not verdict
        releases, execution = [[1], [0], [2]], [[1], [3], [3]]
        assert simulate(tasks, 2, rule, releases, execution).misses[0] == 1


def test_pooled_overtakers_count_one_tick_less():
    # Bypass, the set of test_bypass_counts_narrow_lower_priority_overtakers: a (2 ticks
    # left at the release) and b overtaking, whose first tick is never needed: wide
    # waits 4, R = 6, against the baseline's 14.  Reached: b starts one tick after wide's
    # release, a's job ends at 2, b's at 4.
    tasks = [GangTask(2, 20, 20, 2, 'wide'), GangTask(3, 10, 10, 1, 'a'),
             GangTask(3, 10, 10, 1, 'b')]
    assert analyse_pooled(tasks, 2, Dispatch.BYPASS).response_times[0] == 6
    run = simulate(tasks, 2, Dispatch.BYPASS, [[1], [0], [2]], [[2], [3], [3]])
    assert run.worst_response[0] == 6


def test_pooled_head_width_caps():
    # Strict, narrow below a full-width task: the baseline's B = 1 holds only while wide
    # is pending; the pooled bound is 4 as well (wide's 3 ticks, then narrow starts).
    # Bypass, wide: narrow only blocks for C - 1 = 0 ticks when it overtakes: R = 3.
    tasks = [GangTask(3, 10, 10, 4, 'wide'), GangTask(1, 10, 10, 1, 'narrow')]
    assert analyse_pooled(tasks, 4, Dispatch.STRICT).response_times == (3, 4)
    assert analyse_pooled(tasks, 4, Dispatch.BYPASS).response_times == (3, 4)


@pytest.mark.parametrize('rule', RULES)
def test_pooled_rejects_sets_with_a_known_miss(rule):
    # The naive port's counter-examples (docs/scheduling.md) ...
    for tasks, tpus in (([GangTask(1, 3, 4, 1), GangTask(2, 3, 4, 1), GangTask(2, 5, 5, 2)], 2),
                        ([GangTask(23, 25, 25, 6), GangTask(3, 28, 37, 8)], 8)):
        assert not analyse_pooled(tasks, tpus, rule)
    # ... and every random set with a schedule of blocking alone that misses.
    refuted = 0
    for tpus, tasks in random_sets(13, 200):
        witness = blocking_counterexample(tasks, tpus)
        if witness is not None:
            refuted += 1
            assert any(simulate(tasks, tpus, rule, *witness).misses)
            assert not analyse_pooled(tasks, tpus, rule)
    assert refuted > 20


def test_pooled_dominates_the_baseline():
    # Every set the baseline accepts, with bounds no larger; and more sets.
    gained = 0
    for tpus, tasks in random_sets(14, 150):
        for rule in RULES:
            baseline, pooled = analyse(tasks, tpus, rule), analyse_pooled(tasks, tpus, rule)
            gained += bool(pooled) and not baseline
            if baseline:
                assert pooled
                assert all(p <= b for p, b in zip(pooled.response_times,
                                                  baseline.response_times))
    assert gained > 10


def test_pooled_monotone_in_tasks_and_wcet():
    # Removing a task or shortening a job never turns an accepted set into a rejected one
    # (the configuration search prunes on the first).
    for tpus, tasks in random_sets(15, 80):
        for rule in RULES:
            full = analyse_pooled(tasks, tpus, rule)
            if not full:
                continue
            for dropped in range(len(tasks)):
                rest = tasks[:dropped] + tasks[dropped + 1:]
                if rest:
                    assert analyse_pooled(rest, tpus, rule)
                shorter = list(tasks)
                task = tasks[dropped]
                if task.wcet > 1:
                    shorter[dropped] = GangTask(task.wcet - 1, task.deadline, task.period,
                                                task.width)
                    assert analyse_pooled(shorter, tpus, rule)


@pytest.mark.parametrize('rule', RULES)
def test_pooled_holds_in_the_exhaustive_search(rule):
    # Issue 15's population on 2 and 4 TPUs: every accepted set is schedulable under every
    # execution time in [1, C] (synchronous periodic) with responses within its bounds,
    # including sets only the pooled test accepts.
    rng = np.random.default_rng(16)
    accepted = only_pooled = 0
    while accepted < 40:
        tpus = int(rng.choice([2, 4]))
        tasks = random_task_set(rng, tpus, int(rng.integers(2, 2 * tpus + 1)),
                                rng.uniform(0.2, 0.6) * tpus, deadline_ratio=(0.6, 1.0),
                                period_choices=(10, 20, 40, 50, 100))
        verdict = analyse_pooled(tasks, tpus, rule)
        if not verdict:
            continue
        found = explore(tasks, tpus, rule, budget=20_000)
        if found.status == 'gave-up':
            continue
        accepted += 1
        only_pooled += not analyse(tasks, tpus, rule)
        assert found.schedulable
        assert all(w <= r for w, r in zip(found.worst_response, verdict.response_times))
    assert only_pooled > 0


@pytest.mark.parametrize('rule', RULES)
def test_pooled_opa_order_passes_the_response_time_test(rule):
    for tpus, tasks in random_sets(17, 60):
        assignment = assign_priorities(tasks, tpus, rule, test=PooledAnalysis)
        if assignment.method == 'opa':
            assert assignment.verdict
