"""Strict partitioning: the NP-FP analysis by hand and against the simulator, the heuristic."""

import dataclasses
from fractions import Fraction
import itertools

from dyn_perception.runtime.scheduling import (
    assign_widths, Dispatch, GangTask, InvalidTaskSetError, np_fp_response_times, partition,
    simulate, validate)
from dyn_perception.runtime.scheduling.generators import random_task_set
from dyn_perception.runtime.scheduling.partitioned import partition_priorities, utilisation_sign
import numpy as np
import pytest


def davis_example(deadline_c):
    """Davis et al. 2007's refuting example on integer time: A (2, 5, 5), B and C (2, 7, 7)."""
    return [GangTask(2, 5, 5, 1, 'A'), GangTask(2, 7, 7, 1, 'B'),
            GangTask(2, deadline_c, 7, 1, 'C')]


def periodic_at_wcet(tasks, horizon):
    releases = [list(range(0, horizon, task.period)) for task in tasks]
    return releases, [[task.wcet] * len(times) for task, times in zip(tasks, releases)]


def test_hand_computed_bounds_of_the_refuting_example():
    # A: blocked by C - 1 = 1 tick, R = 3.  B: 1 + 2 (A) then itself, R = 5.  C, job 0:
    # w = (floor(w/5) + 1) 2 + (floor(w/7) + 1) 2 = 4, R = 6; but C's busy period
    # (t = 2 ceil(t/5) + 4 ceil(t/7) = 14) holds a second job: w = 2 + 2 x 3 (A at 0, 5,
    # 10) + 2 x 2 (B at 0, 7) = 12, R = 12 + 2 - 7 = 7.
    assert np_fp_response_times(davis_example(7)).response_times == (3, 5, 7)
    # The simulator: C's second job, released at 7, waits for A (released at 5, starting 6
    # after C's first job: A's 3), B (7) and A (10), and completes at 14.
    releases, execution = periodic_at_wcet(davis_example(7), 35)
    assert simulate(davis_example(7), 1, Dispatch.STRICT, releases, execution
                    ).worst_response == (3, 4, 7)


def test_first_job_only_analysis_would_be_unsound():
    # With D_C = 6 the first job (R = 6) is fine, the second misses: the test must reject.
    tasks = davis_example(6)
    verdict = np_fp_response_times(tasks)
    assert not verdict
    assert (verdict.failing, verdict.excess) == (2, 1)
    assert 'C (C=2, D=6, T=7)' in verdict.reason
    releases, execution = periodic_at_wcet(tasks, 35)
    assert simulate(tasks, 1, Dispatch.STRICT, releases, execution).misses[2] >= 1


def test_blocking_by_a_lower_priority_job_is_c_minus_one():
    # The low job starts one tick before the high one's release: R_high = 4 - 1 + 3.
    tasks = [GangTask(3, 10, 10, 1, 'high'), GangTask(4, 20, 20, 1, 'low')]
    assert np_fp_response_times(tasks).response_times == (6, 7)
    result = simulate(tasks, 1, Dispatch.STRICT, [[1], [0]], [[3], [4]])
    assert result.worst_response == (6, 4)


def test_overload_is_rejected_with_a_reason():
    tasks = [GangTask(3, 5, 5, 1, 'a'), GangTask(3, 5, 5, 1, 'b')]
    verdict = np_fp_response_times(tasks)
    assert not verdict and verdict.failing == 1 and verdict.excess is None
    assert 'unbounded' in verdict.reason


def test_the_bound_is_reached_by_the_synchronous_release():
    # Exactness on one processor: the lowest-priority task (no blocking) reaches its bound
    # when everything is released together at the WCET.
    rng = np.random.default_rng(1)
    checked = 0
    for _ in range(150):
        tasks = random_task_set(rng, 1, int(rng.integers(2, 6)), rng.uniform(0.3, 0.95),
                                periods=(10, 60))
        verdict = np_fp_response_times(tasks)
        if not verdict:
            continue
        releases, execution = periodic_at_wcet(tasks, 2400)
        worst = simulate(tasks, 1, Dispatch.STRICT, releases, execution).worst_response
        assert worst[-1] == verdict.response_times[-1]
        assert all(w <= r for w, r in zip(worst, verdict.response_times))
        checked += 1
    assert checked > 50


def test_partitions_are_disjoint_and_one_width_each_when_possible():
    tasks = [GangTask(4, 10, 10, 2, 'w2a'), GangTask(4, 10, 10, 2, 'w2b'),
             GangTask(3, 10, 10, 1, 'w1a'), GangTask(3, 10, 10, 1, 'w1b')]
    verdict = partition(tasks, 6)
    assert verdict
    tpus = [tpu for part in verdict.partitions for tpu in part.tpus]
    assert sorted(tpus) == list(range(len(tpus))) and len(tpus) <= 6
    for part in verdict.partitions:
        assert {tasks[i].width for i in part.tasks} == {part.width}
    # Two jobs of 4 ticks in 10 fit one partition: w2a and w2b share (R = 3 + 4, 4 + 4).
    shared = verdict.partitions[verdict.partition_of[0]]
    assert shared.tasks == (0, 1) and shared.response_times == (7, 8)
    assert verdict.response_times[:2] == (7, 8)


def test_a_narrow_task_joins_a_wider_partition_when_tpus_run_out():
    # 2 TPUs: the wide task takes both; the narrow one must share them, holding both.
    tasks = [GangTask(2, 10, 10, 2, 'wide'), GangTask(3, 10, 10, 1, 'narrow')]
    verdict = partition(tasks, 2)
    assert verdict and len(verdict.partitions) == 1
    assert verdict.partitions[0].tasks == (0, 1)
    assert verdict.response_times == (4, 5)


def test_rejection_names_the_task_and_the_lateness():
    tasks = [GangTask(6, 10, 10, 2, 'a'), GangTask(6, 10, 10, 2, 'b')]
    verdict = partition(tasks, 3)
    assert not verdict
    assert verdict.rejected_task == 1 and verdict.free_tpus == 1
    assert verdict.reason.startswith('unschedulable: task 1 (b')
    assert 'only 1 TPUs are left' in verdict.reason
    assert partition(tasks, 4)


def test_bad_input_is_refused():
    with pytest.raises(InvalidTaskSetError):
        partition([], 4)
    with pytest.raises(InvalidTaskSetError):
        partition([GangTask(1, 5, 5, 5)], 4)
    with pytest.raises(InvalidTaskSetError):
        assign_widths([[GangTask(1, 5, 5, 1)], []], 4)


@pytest.mark.parametrize('rule', list(Dispatch))
def test_accepted_partitions_hold_in_simulation(rule):
    # Each partition runs alone: its tasks, widened to the partition, on its TPUs; early
    # completions and sporadic releases included (validation.scenarios).
    rng = np.random.default_rng(7 if rule is Dispatch.STRICT else 8)
    accepted = 0
    for _ in range(120):
        tpus = int(rng.integers(2, 9))
        tasks = random_task_set(rng, tpus, int(rng.integers(2, 2 * tpus + 1)),
                                rng.uniform(0.1, 0.8) * tpus)
        verdict = partition(tasks, tpus)
        if not verdict:
            continue
        accepted += 1
        for part in verdict.partitions:
            members = [dataclasses.replace(tasks[i], width=part.width) for i in part.tasks]
            assert validate(members, part.width, rule, part.response_times, rng,
                            random_runs=1).sound
    assert accepted > 20


def test_width_assignment_finds_a_width_that_fits():
    # Two tasks on 4 TPUs; each offers width 1 (C = 8) or width 2 (C = 3).  The least
    # volume (1 x 8 > 2 x 3) is width 2 for both: 2 + 2 TPUs, each alone, accepted.
    options = [[GangTask(8, 10, 10, 1, 'a'), GangTask(3, 10, 10, 2, 'a')],
               [GangTask(8, 10, 10, 1, 'b'), GangTask(3, 10, 10, 2, 'b')]]
    result = assign_widths(options, 4)
    assert result and result.choices == (1, 1)
    # On 3 TPUs two width-2 partitions do not fit, but both jobs of 3 ticks share one:
    # R_a = 2 (b blocks) + 3, R_b = 3 + 3.  Width 1 (8 ticks) for either would not do.
    result = assign_widths(options, 3)
    assert result and result.choices == (1, 1)
    assert result.verdict.response_times == (5, 6)
    assert len(result.verdict.partitions) == 1


def fraction_sign(tasks):
    """Give the obvious reference: the sign of sum C/T - 1 in exact fractions."""
    load = sum(Fraction(t.wcet, t.period) for t in tasks)
    return (load > 1) - (load < 1)


def test_a_utilisation_of_exactly_one_is_told_apart_from_one_plus_a_trillionth():
    # Ten tasks of C/T = 1/10: exactly 1, though the float sum is 0.9999999999999999.
    tenths = [GangTask(1, 10, 10, 1, f't{k}') for k in range(10)]
    assert utilisation_sign([t.wcet for t in tenths], [t.period for t in tenths]) == 0
    # Blocking 0: the busy period ends (at 10), every task is bounded.
    assert np_fp_response_times(tenths).response_times == tuple(range(1, 11))
    # Blocking 1 (a job of C = 2 below): the tenth task's busy period never ends.
    blocked = np_fp_response_times([*tenths, GangTask(2, 10 ** 6, 10 ** 6, 1, 'low')])
    assert not blocked and (blocked.failing, blocked.excess) == (9, None)
    assert 'utilisation of it and the tasks above is 1.000 with blocking' in blocked.reason
    # 1/2 + 1/2 + 10^-12: above 1 by far less than the float tolerance, still unbounded.
    over = [GangTask(1, 2, 2, 1, 'a'), GangTask(1, 2, 2, 1, 'b'),
            GangTask(1, 10 ** 12, 10 ** 12, 1, 'c')]
    assert utilisation_sign([1, 1, 1], [2, 2, 10 ** 12]) == 1 == fraction_sign(over)
    verdict = np_fp_response_times(over)
    assert not verdict and (verdict.failing, verdict.excess) == (2, None)
    assert 'unbounded' in verdict.reason and 'with blocking' not in verdict.reason


def test_utilisation_sign_is_the_exact_one_near_one():
    # Sets summing to exactly 1, to 1 + 10^-15 or to 1 - 1 / (T 10^9): within the float
    # tolerance of 1, where only exact arithmetic tells them apart.
    rng = np.random.default_rng(3)
    for _ in range(300):
        period = int(rng.integers(12, 10 ** 6))
        cuts = sorted(rng.choice(np.arange(1, period), size=5, replace=False).tolist())
        parts = np.diff([0, *cuts, period]).tolist()
        tasks = [GangTask(c, period, period, 1) for c in parts]
        nudge = int(rng.integers(-1, 2))
        if nudge > 0:
            tasks.append(GangTask(1, 10 ** 15, 10 ** 15, 1))
        elif nudge < 0:
            # One tick less on the largest part, nearly all of it back in another task.
            big = max(range(len(parts)), key=parts.__getitem__)
            tasks[big] = GangTask(parts[big] - 1, period, period, 1)
            tasks.append(GangTask(10 ** 9 - 1, period * 10 ** 9, period * 10 ** 9, 1))
        wcets, periods = [t.wcet for t in tasks], [t.period for t in tasks]
        assert utilisation_sign(wcets, periods) == fraction_sign(tasks) == nudge


def test_periods_beyond_int64_are_analysed_in_python_integers():
    # (2 MAX_BUSY_JOBS + n) T overflows int64 here: the sums fall back to Python ints.
    tasks = [GangTask(3, 10 ** 18, 10 ** 18, 1, 'a'), GangTask(2, 10 ** 18, 10 ** 18, 1, 'b'),
             GangTask(5, 10 ** 30, 10 ** 30, 1, 'c')]
    assert np_fp_response_times(tasks).response_times == (3 + 4, 3 + 2 + 4, 10)


def test_opa_is_optimal_against_every_priority_order():
    # Small sets, many near utilisation 1: partition_priorities finds an order whenever one
    # of all the permutations passes, and it is one that passes.
    rng = np.random.default_rng(5)
    found = 0
    for k in range(250):
        tasks = random_task_set(rng, 1, int(rng.integers(2, 6)), rng.uniform(0.6, 1.05),
                                periods=(5, 40), widths=(1,), deadline_ratio=(0.3, 1.0))
        tasks = [tasks[i] for i in rng.permutation(len(tasks))]
        feasible = any(np_fp_response_times([tasks[i] for i in order])
                       for order in itertools.permutations(range(len(tasks))))
        order, verdict = partition_priorities(tasks)
        assert bool(verdict) == feasible
        assert verdict == np_fp_response_times([tasks[i] for i in order])
        found += feasible and order != tuple(range(len(tasks)))
    assert found > 10
