"""The pooled test's joint stage (P8 to P10): its arithmetic, dominance and soundness."""

import itertools

from dyn_perception.runtime.scheduling import (
    Dispatch, explore, GangTask, PooledAnalysis, validate)
from dyn_perception.runtime.scheduling.generators import random_task_set
from dyn_perception.runtime.scheduling.pooled import pool_with_starters, started_after
import numpy as np
import pytest

RULES = list(Dispatch)


class PreviousPooled(PooledAnalysis):
    """The pooled test without the joint stage: what shipped before it."""

    joint_stage = False


def issue_sets(seed: int, count: int, tpus_choices=(2, 4, 8), load=(0.25, 0.6)):
    """Draw sets of issue 15's population (periods from {10, ..., 100}, D in [0.6, 1] T)."""
    rng = np.random.default_rng(seed)
    for _ in range(count):
        tpus = int(rng.choice(tpus_choices))
        yield tpus, random_task_set(rng, tpus, int(rng.integers(2, 2 * tpus + 1)),
                                    rng.uniform(*load) * tpus, deadline_ratio=(0.6, 1.0),
                                    period_choices=(10, 20, 40, 50, 100))


def test_pool_with_starters_matches_brute_force():
    # Every subset of items that fits: capped busy count over the window minus penalties.
    rng = np.random.default_rng(31)
    for _ in range(120):
        capacity = int(rng.integers(1, 9))
        count = int(rng.integers(0, 6))
        widths = rng.integers(1, capacity + 1, count).tolist()
        leftovers = sorted(rng.integers(1, 12, count).tolist(), reverse=True)
        busy = int(rng.integers(1, capacity + 1))
        penalties = np.cumsum(rng.integers(0, 3, (count, 13)), axis=1)
        penalties[:, 0] = 0
        profile = pool_with_starters(widths, leftovers, penalties.reshape(count, 13), busy,
                                     capacity)
        for length in (0, 1, 4, 12):
            best = 0
            for chosen in itertools.product([False, True], repeat=count):
                picked = [i for i in range(count) if chosen[i]]
                if sum(widths[i] for i in picked) <= capacity:
                    value = sum(min(busy, sum(widths[i] for i in picked if leftovers[i] > t))
                                for t in range(length))
                    best = max(best, value - sum(int(penalties[i, length]) for i in picked))
            assert profile[length] == best


def worst_chain(wcet, useful, period, earliest, bound, length):
    """Largest work after o over every release sequence (gaps >= T) from o - earliest on."""
    def amount(release):
        if release + bound >= 0:
            return max(0, min(useful, length - max(0, release)))
        return max(0, min(useful, wcet + release + bound, length))

    def best_from(first):
        if first >= length:
            return 0
        return max(amount(release) + best_from(release + period)
                   for release in range(first, length + 1))
    return min(best_from(-earliest), length)


def test_started_after_is_the_worst_of_all_release_sequences():
    # Not only the chains a period apart: every sporadic sequence, searched exhaustively.
    rng = np.random.default_rng(32)
    for _ in range(200):
        period = int(rng.integers(3, 7))
        wcet = int(rng.integers(1, period + 1))
        bound = int(rng.integers(0, period - wcet + 1))
        useful = wcet - int(rng.integers(0, 2)) if wcet > 1 else wcet
        earliest = int(rng.integers(0, 10))
        column = np.arange(13)[:, None]
        got = started_after(column, np.array([wcet]), np.array([period]), np.array([earliest]),
                            np.array([bound]), np.array([useful]))[:, 0]
        for length in range(13):
            assert got[length] == worst_chain(wcet, useful, period, earliest, bound, length)


def test_joint_stage_dominates_the_previous_pooled_test():
    # Every set the previous pooled test accepts, with bounds no larger; and more sets.
    gained = 0
    for tpus, tasks in issue_sets(33, 250):
        for rule in RULES:
            previous = PreviousPooled(tasks, tpus, rule).verdict()
            verdict = PooledAnalysis(tasks, tpus, rule).verdict()
            gained += bool(verdict) and not previous
            if previous:
                assert verdict
                assert all(n <= p for n, p in zip(verdict.response_times,
                                                  previous.response_times))
    assert gained > 0


@pytest.mark.parametrize('rule, draws', [(Dispatch.STRICT, 700), (Dispatch.BYPASS, 3000)])
def test_newly_accepted_sets_hold_with_varying_execution_times(rule, draws):
    # Sets only the joint stage accepts: searched exhaustively (every execution time in
    # [1, C], synchronous and with random offsets) and simulated: no miss, no response
    # above its bound; the first three also stay accepted when a task is removed or a job
    # shortened.  (Bypass gains less: more draws for a few such sets.)
    rng = np.random.default_rng(34)
    checked = 0
    for tpus, tasks in issue_sets(35 + len(rule.value), draws, (4, 8), (0.3, 0.5)):
        verdict = PooledAnalysis(tasks, tpus, rule).verdict()
        if not verdict or PreviousPooled(tasks, tpus, rule).verdict():
            continue
        checked += 1
        bounds = verdict.response_times
        for offsets in (None, [int(rng.integers(0, task.period)) for task in tasks]):
            extra = {} if offsets is None else {'offsets': offsets, 'jitter': [0] * len(tasks)}
            found = explore(tasks, tpus, rule, budget=20_000, **extra)
            assert found.status != 'miss'
            if found.schedulable:
                assert all(w <= b for w, b in zip(found.worst_response, bounds))
        assert validate(tasks, tpus, rule, bounds, rng).sound
        if checked <= 3:
            assert_monotone(tasks, tpus, rule)
    assert checked >= 2


def assert_monotone(tasks, tpus, rule):
    """Check that removing a task or shortening a job keeps the set accepted."""
    for dropped in range(len(tasks)):
        rest = tasks[:dropped] + tasks[dropped + 1:]
        if rest:
            assert PooledAnalysis(rest, tpus, rule).verdict()
        task = tasks[dropped]
        if task.wcet > 1:
            shorter = list(tasks)
            shorter[dropped] = GangTask(task.wcet - 1, task.deadline, task.period, task.width)
            assert PooledAnalysis(shorter, tpus, rule).verdict()


def test_a_running_job_and_its_successor_are_not_both_in_the_window():
    # P8, strict, 3 TPUs: a = (7, 8, 10) on 2 TPUs above b = (6, 10, 15) on 1.  The
    # previous test let a's job run at b's release (2 TPUs busy) and a's next job start
    # at once (2 more, weight-capped at 3): 3 TPUs busy, b waits.  But a's next job is
    # released 1 + T - R = 4 ticks after b's release at the earliest, and a alone never
    # fills the third TPU: b never waits, R = C = 6, which every schedule reaches.
    tasks = [GangTask(7, 8, 10, 2, 'a'), GangTask(6, 10, 15, 1, 'b')]
    assert not PreviousPooled(tasks, 3, Dispatch.STRICT).verdict()
    verdict = PooledAnalysis(tasks, 3, Dispatch.STRICT).verdict()
    assert verdict.response_times == (7, 6)
    assert explore(tasks, 3, Dispatch.STRICT).worst_response == (7, 6)
