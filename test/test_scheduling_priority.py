"""Priority assignment: deadline-monotonic order, and OPA's optimality for its test."""

import itertools

from dyn_perception.runtime.scheduling import (
    analyse, assign_priorities, audsley, deadline_monotonic, Dispatch, GangAnalysis, GangTask)
from dyn_perception.runtime.scheduling.generators import random_task_set
from dyn_perception.runtime.scheduling.priority import reorder
import numpy as np
import pytest

RULES = list(Dispatch)


def test_deadline_monotonic_breaks_ties_by_period_then_position():
    tasks = [GangTask(1, 9, 9, 1), GangTask(1, 5, 20, 1), GangTask(1, 5, 10, 1),
             GangTask(1, 5, 10, 1)]
    assert deadline_monotonic(tasks) == (2, 3, 1, 0)


@pytest.mark.parametrize('rule', RULES)
def test_opa_puts_the_zero_slack_task_on_top(rule):
    # c has C = D: it cannot wait a single tick, so any task above it breaks it, while
    # the others have slack to absorb its 6 ticks.  Deadline-monotonic puts a above c.
    tasks = [GangTask(1, 3, 6, 1, 'a'), GangTask(3, 10, 11, 2, 'b'), GangTask(6, 6, 11, 1, 'c')]
    assert not analyse(reorder(tasks, deadline_monotonic(tasks)), 3, rule)
    assignment = assign_priorities(tasks, 3, rule)
    assert assignment.method == 'opa'
    assert assignment.order == (2, 0, 1)
    assert assignment.verdict.response_times == (6, 3, 4)


def passes_everywhere(analysis, order):
    return all(analysis.passes_with_deadlines(k, order[:level]) for level, k in enumerate(order))


@pytest.mark.parametrize('rule', RULES)
def test_opa_is_optimal_for_the_deadline_based_test(rule):
    rng = np.random.default_rng(7)
    found = 0
    for _ in range(120):
        tpus = int(rng.integers(2, 5))
        tasks = random_task_set(rng, tpus, int(rng.integers(2, 6)), rng.uniform(0.3, 1.2) * tpus)
        analysis = GangAnalysis(tasks, tpus, rule)
        exists = any(passes_everywhere(analysis, order)
                     for order in itertools.permutations(range(len(tasks))))
        order = audsley(tasks, tpus, rule)
        assert (order is not None) == exists
        if order is not None:
            found += 1
            assert passes_everywhere(analysis, order)
            # The response-time test is at least as tight for a fixed order.
            assert analyse(reorder(tasks, order), tpus, rule)
    # Both outcomes occur, so the equivalence above was exercised both ways.
    assert 0 < found < 120


def test_assign_priorities_falls_back_to_deadline_monotonic_with_a_reason():
    tasks = [GangTask(3, 3, 10, 2, 'x'), GangTask(3, 3, 10, 2, 'y')]
    assignment = assign_priorities(tasks, 2, Dispatch.STRICT)
    assert assignment.method == 'deadline-monotonic'
    assert not assignment.verdict
    assert assignment.verdict.reason.startswith('unschedulable: task 0 (x')
