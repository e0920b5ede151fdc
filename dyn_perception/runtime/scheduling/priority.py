"""
Priority assignment: deadline-monotonic, and Audsley's optimal priority assignment (OPA).

OPA fills the priority levels from the lowest up, placing at each level any task that
passes there whatever the order of the tasks above it.  It is optimal for a test that (1)
looks only at the sets of higher- and lower-priority tasks, not at their order, and (2)
never rejects a task that it accepted one level lower.  The test with the deadlines of
the higher-priority tasks in place of their response times (`passes_with_deadlines`) has
both: (1) by construction, (2) because a task moving down from above k to below it trades
its workload term for at most one knapsack item worth no more (min(C - 1, y) <= W(y)), or
keeps the same workload term under bypass if it is narrower, and under strict the busy
count B_k can only shrink as the set above grows.  The test with response times is at
least as tight for any fixed order, so whatever OPA returns is also accepted by it.
Both take the test as a class (`GangAnalysis`, the baseline, or `PooledAnalysis`); the
pooled test keeps (1) and (2) except for its extended window under bypass, where OPA
stays sound (the returned order is checked by the response-time test) but may miss an
order.
"""

from dataclasses import dataclass
from typing import Sequence

from .analysis import GangAnalysis, Verdict
from .knapsack import Knapsack
from .tasks import Dispatch, GangTask


@dataclass(frozen=True)
class PriorityAssignment:
    """A priority order (task indices, highest first), how it was found and its verdict."""

    order: tuple[int, ...]
    method: str
    verdict: Verdict


def deadline_monotonic(tasks: Sequence[GangTask]) -> tuple[int, ...]:
    """Shorter deadline first; ties by shorter period, then by position (stable)."""
    return tuple(sorted(range(len(tasks)),
                        key=lambda i: (tasks[i].deadline, tasks[i].period, i)))


def reorder(tasks: Sequence[GangTask], order: Sequence[int]) -> tuple[GangTask, ...]:
    """List the tasks in `order`, i.e. give them those priorities."""
    return tuple(tasks[i] for i in order)


def audsley(tasks: Sequence[GangTask], tpus: int, rule: Dispatch,
            knapsack: Knapsack = Knapsack.EXACT,
            test: type[GangAnalysis] = GangAnalysis) -> tuple[int, ...] | None:
    """Find an order the deadline-based test accepts if one exists, else return None."""
    analysis = test(tasks, tpus, rule, knapsack)
    # Trying long deadlines first for the low levels keeps OPA close to deadline-monotonic
    # when several tasks fit a level; any choice is optimal.
    unassigned = list(reversed(deadline_monotonic(tasks)))
    lowest_first: list[int] = []
    while unassigned:
        for candidate in unassigned:
            others = [i for i in unassigned if i != candidate]
            if analysis.passes_with_deadlines(candidate, others):
                lowest_first.append(candidate)
                unassigned.remove(candidate)
                break
        else:
            return None
    return tuple(reversed(lowest_first))


def assign_priorities(tasks: Sequence[GangTask], tpus: int, rule: Dispatch,
                      knapsack: Knapsack = Knapsack.EXACT,
                      test: type[GangAnalysis] = GangAnalysis) -> PriorityAssignment:
    """
    OPA where it succeeds, else deadline-monotonic with the response-time test.

    OPA is optimal only for the deadline-based test; the response-time test can still
    accept a deadline-monotonic order that no order passes with deadlines.
    """
    order = audsley(tasks, tpus, rule, knapsack, test)
    method = 'opa'
    if order is None:
        order, method = deadline_monotonic(tasks), 'deadline-monotonic'
    return PriorityAssignment(order, method,
                              test(reorder(tasks, order), tpus, rule, knapsack).verdict())
