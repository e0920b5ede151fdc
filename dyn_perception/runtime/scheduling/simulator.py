"""
Discrete-event simulator of the two dispatch rules, written independently of the analysis.

It is the analysis' referee, so it shares nothing with it but the task model.  Semantics:
- time is integer ticks; at each instant, completions free their TPUs first, then the
  jobs released at that instant join, then the dispatcher runs once;
- a job needs `width` TPUs at once and holds them for its execution time, unpreempted;
- a task's jobs run in release order, one at a time: its next job becomes pending when the
  previous one completes (a stream's frames go through its model in order);
- priorities are the task order (index 0 highest);
- strict: start the highest-priority pending job while it fits, stop at the first that
  does not;
- bypass: scan the pending jobs from the highest priority down and start each one that fits
  in the TPUs still idle (one pass suffices: starting jobs only shrinks the idle count).
"""

from collections import deque
from dataclasses import dataclass
import heapq
import sys
from typing import Sequence

from .tasks import check_task_set, Dispatch, GangTask, SchedulingError

_NEVER = sys.maxsize


class InvalidScenarioError(SchedulingError):
    """Release or execution times that the sporadic task model does not allow."""


@dataclass(frozen=True)
class SimulationResult:
    """What one run observed, per task in priority order."""

    worst_response: tuple[int, ...]
    # Jobs that completed after release + deadline.
    misses: tuple[int, ...]
    jobs: int


def simulate(tasks: Sequence[GangTask], tpus: int, rule: Dispatch,
             releases: Sequence[Sequence[int]],
             execution: Sequence[Sequence[int]]) -> SimulationResult:
    """Run every released job to completion; releases[i][j] is job j of task i."""
    check_task_set(tasks, tpus)
    rule = Dispatch(rule)
    _check_scenario(tasks, releases, execution)
    count = len(tasks)
    widths = [task.width for task in tasks]
    arrivals = sorted((time, i, j) for i, times in enumerate(releases)
                      for j, time in enumerate(times))
    pending: list[deque] = [deque() for _ in range(count)]
    running = [False] * count
    finishing: list[tuple[int, int, int]] = []
    worst = [0] * count
    misses = [0] * count
    idle = tpus
    cursor = 0
    while cursor < len(arrivals) or finishing:
        now = min(arrivals[cursor][0] if cursor < len(arrivals) else _NEVER,
                  finishing[0][0] if finishing else _NEVER)
        while finishing and finishing[0][0] == now:
            _, i, j = heapq.heappop(finishing)
            running[i] = False
            idle += widths[i]
            response = now - releases[i][j]
            worst[i] = max(worst[i], response)
            misses[i] += response > tasks[i].deadline
        while cursor < len(arrivals) and arrivals[cursor][0] == now:
            _, i, j = arrivals[cursor]
            pending[i].append(j)
            cursor += 1
        for i in range(count):
            if running[i] or not pending[i]:
                continue
            if widths[i] <= idle:
                j = pending[i].popleft()
                running[i] = True
                idle -= widths[i]
                heapq.heappush(finishing, (now + execution[i][j], i, j))
            elif rule is Dispatch.STRICT:
                break
    return SimulationResult(tuple(worst), tuple(misses), len(arrivals))


def _check_scenario(tasks: Sequence[GangTask], releases: Sequence[Sequence[int]],
                    execution: Sequence[Sequence[int]]) -> None:
    """Insist on releases a period apart and times in [1, WCET]: else a run proves nothing."""
    if len(releases) != len(tasks) or len(execution) != len(tasks):
        raise InvalidScenarioError('need one release list and one execution list per task')
    for task, times, runs in zip(tasks, releases, execution):
        if len(times) != len(runs):
            raise InvalidScenarioError(f'{task.label}: {len(times)} releases, {len(runs)} runs')
        if any(later - earlier < task.period for earlier, later in zip(times, times[1:])):
            raise InvalidScenarioError(f'{task.label}: releases closer than T={task.period}')
        if any(not 1 <= run <= task.wcet for run in runs):
            raise InvalidScenarioError(f'{task.label}: execution times outside [1, C={task.wcet}]')
