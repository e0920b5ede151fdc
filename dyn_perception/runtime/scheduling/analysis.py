"""
Response-time test for non-preemptive gang tasks under the strict and the bypass rule.

Tasks are given in priority order (index 0 highest).  For job J of task k released at r the
test bounds the time x it may wait before starting; R_k = x + C_k.  The argument, step by
step (docs/scheduling.md has it in full, with the counter-example that rules out the naive
port of the carry-in limitation):

1. Busy TPUs while J waits.  Dispatching happens at every release and completion, all on
   integer ticks.  Bypass: after dispatching, J is pending and did not fit, so fewer than
   m_k TPUs are idle: at least B_k = m - m_k + 1 are busy.  Strict: the highest-priority
   pending job h (h <= k) did not fit, so at least m - max_{h <= k} m_h + 1 are busy.
2. Weighting.  In every waiting tick the running jobs' widths sum to at least B_k, hence
   their widths capped at B_k, min(m_i, B_k), also sum to at least B_k.  So if J still
   waits after y ticks, B_k * y <= Omega(y), the capped-width work of other jobs executing
   in [r, r + y).
3. Who executes in the window.  Non-preemptive: a job executing in [r, r + y) either was
   running at r (started before r, so at most C_i - 1 left) or starts inside the window.
   - Higher priority: all of task i's work in any window of length y is at most the
     sporadic workload W_i(y) (Bertogna and Cirinei) when each job runs within R_i of its
     release; capped at y because a task's jobs run one after the other.
   - Lower priority, strict: none can start while J waits, so only the jobs running at r
     block: one per task, at most C_i - 1 each, widths summing to at most m (a knapsack).
   - Lower priority, bypass: a task at least as wide as J cannot start while J waits (J is
     scanned first and did not fit), so it only blocks as above.  A narrower one can
     overtake; its work in the window is bounded by W_j(y) with D_j in place of R_j.
4. Fixed point.  x <- floor(Omega(x + 1) / B_k) from x = 0; Omega is non-decreasing, and at
   any fixed point x the inequality of step 2 fails for y = x + 1, so J starts within x.
   The test fails when x exceeds D_k - C_k.
5. Induction.  Step 3 uses the bounds of the other tasks; take the earliest instant at which
   any job overruns its bound: every job that matters for J was within its bound before it
   (docs/scheduling.md, "Why the bounds of other tasks may be used").

`passes_with_deadlines` is the same test with D_i in place of R_i for the higher-priority
tasks: it depends only on which tasks are above and below, not on their order, which is
what Audsley's optimal priority assignment needs.
"""

from dataclasses import dataclass
from fractions import Fraction
from typing import Callable, Iterator, Sequence

import numpy as np

from .knapsack import Knapsack, knapsack_bound, most_valuable
from .tasks import check_task_set, Dispatch, GangTask

# Omega as a function of the window length; a Fraction only under the fractional knapsack.
WindowBound = Callable[[int], int | Fraction]


@dataclass(frozen=True)
class Verdict:
    """Outcome of the test: the response-time bounds, or why the set was rejected."""

    schedulable: bool
    # R_k for the tasks bounded so far, in priority order (all of them when schedulable).
    response_times: tuple[int, ...]
    reason: str = ''

    def __bool__(self) -> bool:
        return self.schedulable


def workload(length: int, wcet: np.ndarray, period: np.ndarray,
             slack: np.ndarray) -> np.ndarray:
    """
    Most work a sporadic task can execute in a window of `length` ticks.

    Each job runs within C + slack of its release (slack = R - C, or D - C).  The worst
    case (Bertogna and Cirinei) runs the first job as late as its bound allows, so that it
    ends inside the window, and the later ones at their earliest releases, a period apart;
    a task's jobs never overlap, so the window's length caps the total.
    """
    reach = length + slack
    jobs = reach // period
    return np.minimum(jobs * wcet + np.minimum(wcet, reach - jobs * period), length)


def fixed_point(omega: WindowBound, busy: int, limit: int) -> int | None:
    """Least x with x = floor(Omega(x + 1) / busy), or None once it would exceed `limit`."""
    wait = 0
    while True:
        following = int(omega(wait + 1) // busy)
        if following > limit:
            return None
        if following <= wait:
            return wait
        wait = following


class GangAnalysis:
    """The test for one task set on one platform, set up once for repeated queries."""

    # A job running at the release started at least this many ticks before it (step 3).
    started_before = 1

    def __init__(self, tasks: Sequence[GangTask], tpus: int, rule: Dispatch,
                 knapsack: Knapsack = Knapsack.EXACT) -> None:
        check_task_set(tasks, tpus)
        self.tasks = tuple(tasks)
        self.tpus = tpus
        self.rule = Dispatch(rule)
        self.knapsack = Knapsack(knapsack)
        self._wcet = np.array([task.wcet for task in tasks], dtype=np.int64)
        self._deadline = np.array([task.deadline for task in tasks], dtype=np.int64)
        self._period = np.array([task.period for task in tasks], dtype=np.int64)
        self._width = np.array([task.width for task in tasks], dtype=np.int64)

    def verdict(self) -> Verdict:
        """Bound every task in priority order, using the bounds found above it."""
        responses: list[int] = []
        for k, wait in enumerate(self._waits(overrun=0)):
            if wait is None:
                return Verdict(False, tuple(responses), self._rejection(k))
            responses.append(wait + int(self._wcet[k]))
        return Verdict(True, tuple(responses))

    def lateness(self, overrun: int) -> float:
        """
        Sum over tasks of (R_k - D_k)^+ / D_k, with waits allowed `overrun` past D - C.

        Not a test (beyond D the induction of step 5 no longer holds): a continuous
        measure of how far a rejected set is from acceptance, to guide searches.  A task
        with no fixed point within the overrun counts as finishing at D + overrun.
        """
        total = 0.0
        for k, wait in enumerate(self._waits(overrun)):
            late = overrun if wait is None else wait + self._wcet[k] - self._deadline[k]
            total += max(0, int(late)) / int(self._deadline[k])
        return total

    def _waits(self, overrun: int) -> Iterator[int | None]:
        """Start bounds in priority order; a task past its limit counts at the limit after."""
        slack = self._deadline - self._wcet + overrun
        for k in range(len(self.tasks)):
            wait = self.start_bound(k, np.arange(k), slack[:k], int(slack[k]))
            if wait is not None:
                slack[k] = wait
            yield wait

    def passes_with_deadlines(self, k: int, higher: Sequence[int]) -> bool:
        """Whether task k is accepted below `higher` and above the rest, in any order."""
        above = np.asarray(higher, dtype=np.int64)
        slack = self._deadline - self._wcet
        return self.start_bound(k, above, slack[above], int(slack[k])) is not None

    def start_bound(self, k: int, higher: np.ndarray, higher_slack: np.ndarray,
                    limit: int) -> int | None:
        """Longest wait of a job of task k before it starts, or None if beyond `limit`."""
        lower_mask = np.ones(len(self.tasks), dtype=bool)
        lower_mask[higher] = False
        lower_mask[k] = False
        lower = np.flatnonzero(lower_mask)
        width = self._width[k]
        widest = width
        if self.rule is Dispatch.STRICT:
            widest = max(width, int(self._width[higher].max(initial=0)))
            overtaking, blocking = lower[:0], lower
        else:
            narrower = self._width[lower] < width
            overtaking, blocking = lower[narrower], lower[~narrower]
        busy = self.tpus - int(widest) + 1
        interference = self._interference(k, higher, higher_slack, overtaking, busy)
        block = self._blocking(blocking, busy)
        return fixed_point(lambda length: interference(length) + block(length), busy, limit)

    def _interference(self, k: int, higher: np.ndarray, higher_slack: np.ndarray,
                      overtaking: np.ndarray, busy: int) -> WindowBound:
        """Capped-width work of the higher-priority and the overtaking tasks in a window."""
        return self._workload_term(
            np.concatenate([higher, overtaking]),
            np.concatenate([higher_slack, self._deadline[overtaking] - self._wcet[overtaking]]),
            busy)

    def _workload_term(self, tasks: np.ndarray, slack: np.ndarray, busy: int) -> WindowBound:
        """Sum over `tasks` of min(m_i, B) W_i(length)."""
        wcet, period = self._wcet[tasks], self._period[tasks]
        weight = np.minimum(self._width[tasks], busy)
        return lambda length: int(weight @ workload(length, wcet, period, slack))

    def _blocking(self, blocking: np.ndarray, busy: int) -> WindowBound:
        """Capped-width leftover work of jobs running at the release: the knapsack."""
        if self.knapsack is Knapsack.EXACT:
            # Same width means same weight, so the ranking by leftover holds for every length.
            blocking = blocking[most_valuable(self._width[blocking],
                                              self._wcet[blocking], self.tpus)]
        widths = self._width[blocking]
        leftover = np.maximum(self._wcet[blocking] - self.started_before, 0)
        weight = np.minimum(widths, busy)
        return lambda length: knapsack_bound(
            widths, weight * np.minimum(leftover, length), self.tpus, self.knapsack)

    def _rejection(self, k: int) -> str:
        task = self.tasks[k]
        return (f'unschedulable: task {k} ({task.label}, C={task.wcet}, D={task.deadline}, '
                f'T={task.period}, m={task.width}) may wait more than D - C = '
                f'{task.deadline - task.wcet} ticks before it starts ({self.rule.value} rule)')


def analyse(tasks: Sequence[GangTask], tpus: int, rule: Dispatch,
            knapsack: Knapsack = Knapsack.EXACT) -> Verdict:
    """Response-time test of `tasks` (highest priority first) on `tpus` TPUs."""
    return GangAnalysis(tasks, tpus, rule, knapsack).verdict()
