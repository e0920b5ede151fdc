"""
Exhaustive exploration of periodic gang task sets: every execution time, every release.

The schedule of periodic tasks is decided by a handful of facts per task at each instant
(is the current period's job released, pending or running, how long ago was it released,
how long has it still to run), plus the time modulo the hyperperiod H.  So the set of all
schedules, with every integer execution time in [1, C] per job and every release in the
jitter window [k T + o, k T + o + J] per job, is a finite graph of such states, and a search
that never expands a state twice visits all of it.  Each state's future depends only on the
state, so the largest response of each task over the graph is its largest response over
all schedules: an exact answer where the graph fits the budget.  That serves twice:
- as the exhaustive checker of the sporadic tests (synchronous periodic releases, no
  jitter: a subset of the sporadic behaviours, so a sporadic test that accepts a set in
  which this finds a miss is unsound), including the execution-time anomalies that a
  simulation at the WCET cannot see;
- as the job-level analysis of periodic camera streams with release jitter (`joblevel`),
  in the spirit of the schedule-abstraction graphs of Nasri and Brandenburg (RTSS 2017),
  which merge similar states; this one merges only identical states, so it is exact but
  affordable only for small hyperperiods and few tasks, hence the budget.

Semantics are the simulator's: integer ticks; at an instant, completions free their TPUs,
then period boundaries and releases, then one dispatch pass (strict or bypass).  With
D + J <= T a task has at most one unfinished job in any schedule without a miss: a job
still unfinished at its next period boundary has missed its deadline.
"""

from dataclasses import dataclass
import itertools
import math
from typing import Sequence

from .tasks import check_task_set, Dispatch, GangTask, SchedulingError

# Default number of states expanded before giving up.  A state costs a few microseconds
# to tens of them in pure Python; 200,000 is seconds, not minutes, on one core.
DEFAULT_BUDGET = 200_000
# Longest hyperperiod explored (ticks): beyond it the job-level analysis falls back.
DEFAULT_MAX_HYPERPERIOD = 100_000

# Phases of the current period's job of a task.
_WAITING, _PENDING, _RUNNING, _DONE = range(4)


class InvalidReleaseModelError(SchedulingError):
    """Offsets or jitter that the periodic model of the exploration cannot take."""


@dataclass(frozen=True)
class Exploration:
    """What the search found."""

    # 'schedulable': every schedule meets every deadline; 'miss': some schedule misses
    # one (see `witness`); 'gave-up': the state budget ran out first; 'too-long': the
    # hyperperiod exceeds the limit and nothing was explored.
    status: str
    # Per task, the largest response seen (over all schedules when 'schedulable').
    worst_response: tuple[int, ...]
    states: int
    hyperperiod: int
    reason: str = ''
    # On a miss: (task index, absolute time at which it was seen).
    witness: tuple[int, int] | None = None

    @property
    def schedulable(self) -> bool:
        """Say whether the whole graph was searched without a deadline miss."""
        return self.status == 'schedulable'


def hyperperiod(tasks: Sequence[GangTask]) -> int:
    """Least common multiple of the periods."""
    return math.lcm(*(task.period for task in tasks))


def check_release_model(tasks: Sequence[GangTask], offsets: Sequence[int],
                        jitter: Sequence[int]) -> None:
    """Refuse offsets outside [0, T) and jitter with D + J > T (two jobs unfinished)."""
    if len(offsets) != len(tasks) or len(jitter) != len(tasks):
        raise InvalidReleaseModelError('need one offset and one jitter per task')
    for task, offset, spread in zip(tasks, offsets, jitter):
        if not isinstance(offset, int) or not 0 <= offset < task.period:
            raise InvalidReleaseModelError(
                f'{task.label}: offset {offset!r} outside [0, T={task.period})')
        if not isinstance(spread, int) or spread < 0 or task.deadline + spread > task.period:
            raise InvalidReleaseModelError(
                f'{task.label}: jitter {spread!r} must be an integer in [0, T - D = '
                f'{task.period - task.deadline}]')


def explore(tasks: Sequence[GangTask], tpus: int, rule: Dispatch,
            offsets: Sequence[int] | None = None, jitter: Sequence[int] | None = None,
            budget: int = DEFAULT_BUDGET,
            max_hyperperiod: int = DEFAULT_MAX_HYPERPERIOD) -> Exploration:
    """
    Search every schedule of the periodic set (tasks highest priority first).

    Job k of task i is released at k T_i + o_i + j with any j in [0, J_i] (default: all
    offsets and jitter 0, the synchronous case) and runs for any integer time in [1, C_i].
    Stops at the first deadline miss, after `budget` states, or at once when the
    hyperperiod exceeds `max_hyperperiod`: the status says which.
    """
    check_task_set(tasks, tpus)
    rule = Dispatch(rule)
    count = len(tasks)
    offsets = [0] * count if offsets is None else list(offsets)
    jitter = [0] * count if jitter is None else list(jitter)
    check_release_model(tasks, offsets, jitter)
    length = hyperperiod(tasks)
    if length > max_hyperperiod:
        return Exploration('too-long', (0,) * count, 0, length,
                           f'hyperperiod {length} > {max_hyperperiod} ticks: not explored')
    return _Search(tasks, tpus, rule, offsets, jitter, length).run(budget)


class _Search:
    """Depth-first search over states (time mod H, per task phase, age, remaining)."""

    def __init__(self, tasks: Sequence[GangTask], tpus: int, rule: Dispatch,
                 offsets: list[int], jitter: list[int], length: int) -> None:
        self.tasks = tuple(tasks)
        self.tpus = tpus
        self.strict = rule is Dispatch.STRICT
        self.offsets = offsets
        self.jitter = jitter
        self.length = length
        self.wcet = [task.wcet for task in tasks]
        self.period = [task.period for task in tasks]
        self.deadline = [task.deadline for task in tasks]
        self.width = [task.width for task in tasks]
        self.worst = [0] * len(tasks)

    def run(self, budget: int) -> Exploration:
        count = len(self.tasks)
        # Before its first period a task counts as done: nothing is released until o_i.
        start = (0, (_DONE,) * count, (0,) * count, (0,) * count)
        seen = {start}
        stack = [(0, start[1], start[2], start[3])]
        states = 0
        while stack:
            states += 1
            if states > budget:
                return Exploration('gave-up', tuple(self.worst), states - 1, self.length,
                                   f'state budget of {budget} exhausted before the whole '
                                   'schedule graph was searched')
            now, phase, age, left = stack.pop()
            for successor in self._successors(now, phase, age, left):
                if isinstance(successor[1], int):
                    task, moment = successor
                    return Exploration(
                        'miss', tuple(self.worst), states, self.length,
                        f'{self.tasks[task].label} misses its deadline in some schedule '
                        f'(seen at t={moment})', (task, moment))
                key = (successor[0] % self.length, *successor[1:])
                if key not in seen:
                    seen.add(key)
                    stack.append(successor)
        return Exploration('schedulable', tuple(self.worst), states, self.length)

    def _successors(self, now, phase, age, left):
        """States at the next event instant, or (task, time) tuples for misses."""
        count = len(self.tasks)
        phase, age, left = list(phase), list(age), list(left)
        idle = self.tpus - sum(self.width[i] for i in range(count) if phase[i] == _RUNNING)
        for i in range(count):
            if phase[i] == _RUNNING and left[i] == 0:
                if age[i] > self.deadline[i]:
                    return [(i, now)]
                self.worst[i] = max(self.worst[i], age[i])
                phase[i], idle = _DONE, idle + self.width[i]
        position = [(now - self.offsets[i]) % self.period[i] for i in range(count)]
        optional = []
        for i in range(count):
            if position[i] == 0:
                if phase[i] in (_PENDING, _RUNNING):
                    return [(i, now)]
                phase[i] = _WAITING
            if phase[i] == _WAITING and position[i] <= self.jitter[i]:
                if position[i] == self.jitter[i]:
                    phase[i], age[i] = _PENDING, 0
                else:
                    optional.append(i)
        result = []
        for released in itertools.product((False, True), repeat=len(optional)):
            branch = phase.copy()
            branch_age = age.copy()
            for i, release in zip(optional, released):
                if release:
                    branch[i], branch_age[i] = _PENDING, 0
            result.extend(self._dispatch(now, branch, branch_age, left, idle, position))
        return result

    def _dispatch(self, now, phase, age, left, idle, position):
        """Start what the rule starts, then branch on their execution times and advance."""
        started = []
        for i in range(len(self.tasks)):
            if phase[i] != _PENDING:
                continue
            if self.width[i] <= idle:
                started.append(i)
                idle -= self.width[i]
            elif self.strict:
                break
        for i in started:
            phase[i] = _RUNNING
        result = []
        for times in itertools.product(*(range(1, self.wcet[i] + 1) for i in started)):
            remaining = left.copy()
            for i, time in zip(started, times):
                remaining[i] = time
            result.append(self._advance(now, phase, age, remaining, position))
        return result

    def _advance(self, now, phase, age, left, position):
        """Move to the next instant at which anything can happen."""
        step = min(self.period[i] - position[i] for i in range(len(self.tasks)))
        for i, current in enumerate(phase):
            if current == _RUNNING:
                step = min(step, left[i])
            elif current == _WAITING and position[i] < self.jitter[i]:
                step = 1
        new_age = tuple(a + step if p in (_PENDING, _RUNNING) else 0
                        for p, a in zip(phase, age))
        new_left = tuple(r - step if p == _RUNNING else 0 for p, r in zip(phase, left))
        return (now + step, tuple(phase), new_age, new_left)
