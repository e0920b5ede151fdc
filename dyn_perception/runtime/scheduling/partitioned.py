"""
Strict partitioning of rigid gang tasks: disjoint TPU partitions, one job at a time in each.

Sun, Kloda and Caccamo (RTAS 2024, arXiv 2403.10726) split the TPUs into disjoint
partitions and the tasks among them, so that no job ever waits for a job of another
partition; Sun, Kloda, Wu and Caccamo (DAC 2024) give every task of a partition one
parallelism level.  Here a partition of w TPUs runs one job at a time on all of its w
TPUs, whatever the width of the task (a narrower task placed there holds the whole
partition: the heuristic only does that when no same-width place exists).  Each partition
is then exactly a uniprocessor with non-preemptive fixed priorities, and the analysis is
the sound one of Davis, Burns, Bril and Lukkien (Real-Time Systems 35(3), 2007, "CAN
schedulability analysis: refuted, revisited and revised"): the worst response may be that
of a later job of the level-i busy period (a job pushed by its own predecessor), so every
job of that busy period is checked, not just the first.  docs/scheduling.md has the
derivation on this package's integer time line.

The partitioning is a first-fit heuristic (widest tasks first); `assign_widths` chooses a
width per task among its options (a DNN's WCET depends on its gang width) by local search
around the least-volume choice.  Both papers' full texts were not available here: the
heuristics are this package's, in their spirit (tasks of similar width share partitions).
"""

from dataclasses import dataclass
from fractions import Fraction
from typing import Sequence

import numpy as np

from .tasks import check_task_set, GangTask, InvalidTaskSetError

# Jobs of one busy period examined before giving up on a task (only a total utilisation
# of exactly 1 with a hyperperiod this long gets here): rejection, never an unbounded run.
MAX_BUSY_JOBS = 100_000


@dataclass(frozen=True)
class UniprocessorVerdict:
    """NP-FP response-time analysis of one partition's tasks (priority order)."""

    schedulable: bool
    # R_k of every task in priority order when schedulable, else of those bounded so far.
    response_times: tuple[int, ...]
    # When rejected: position of the failing task, and how far its bound exceeds D: the
    # response of the first job found late minus D (a lower bound of the true excess), or
    # None when the busy period is unbounded (utilisation above 1, or 1 with blocking).
    failing: int | None = None
    excess: int | None = None
    reason: str = ''

    def __bool__(self) -> bool:
        return self.schedulable


@dataclass(frozen=True)
class Partition:
    """TPUs that only ever run the jobs of `tasks`, one job at a time on all of them."""

    tpus: tuple[int, ...]
    # Indices into the analysed task list, highest priority first within the partition.
    tasks: tuple[int, ...]
    # R_k of each task of `tasks`, same order.
    response_times: tuple[int, ...]

    @property
    def width(self) -> int:
        """Count the TPUs of the partition: every one of its jobs holds them all."""
        return len(self.tpus)


@dataclass(frozen=True)
class PartitionedVerdict:
    """Outcome of strict partitioning: the partitions, or which task could not be placed."""

    schedulable: bool
    partitions: tuple[Partition, ...]
    # Per input task: its partition's index (None if not placed) and its bound R.
    partition_of: tuple[int | None, ...]
    response_times: tuple[int | None, ...]
    reason: str = ''
    # When rejected: the input index of the task that found no place, and, over the
    # partitions it could join, the least lateness of the first late job found there
    # (None: none had a bounded busy period, or there was none to try).
    rejected_task: int | None = None
    excess: int | None = None
    # Free TPUs when the task was rejected (its width was more than these).
    free_tpus: int = 0

    def __bool__(self) -> bool:
        return self.schedulable


def np_fp_response_times(tasks: Sequence[GangTask]) -> UniprocessorVerdict:
    """
    Sound response-time bounds for non-preemptive fixed priorities on one processor.

    `tasks` in priority order (index 0 highest); widths are ignored: every job holds the
    whole processor.  Integer time, dispatch at every release and completion, a job
    released at a dispatch instant takes part in it (as in `simulator`).  For task i:
    - blocking B_i = max over lower-priority tasks of C_j - 1: a lower-priority job that
      blocks started at least one tick before the release (at the release it would lose);
    - the level-i busy period starts with that blocking and lasts while work of priority
      >= i is pending; its length t is the least fixed point of
      t = B_i + sum_{j <= i} ceil(t / T_j) C_j;
    - job q (q = 0, 1, ... while q T_i < t) starts by the least fixed point of
      w = B_i + q C_i + sum_{j < i} (floor(w / T_j) + 1) C_j (higher-priority jobs released
      at or before the start instant go first), and responds in w + C_i - q T_i;
    - R_i is the largest such response (Davis et al. 2007, eqs. 12 to 16, discrete form).
    """
    wcets, periods = _columns(tasks)
    # Utilisation of each task and those above it: one float pass (exact near 1, see
    # `_exact_sign`).
    loads = np.cumsum(wcets / periods)
    responses: list[int] = []
    for i, (task, blocking) in enumerate(zip(tasks, _blockings(tasks))):
        outcome = (_unbounded(float(loads[i]), wcets[:i + 1], periods[:i + 1], task, blocking)
                   or _task_bound(wcets[:i], periods[:i], task, blocking))
        if isinstance(outcome, str):
            return UniprocessorVerdict(False, tuple(responses), i, None, outcome)
        if outcome > task.deadline:
            return UniprocessorVerdict(
                False, tuple(responses), i, outcome - task.deadline,
                f'{task.label} (C={task.wcet}, D={task.deadline}, T={task.period}) has a job '
                f'responding in {outcome} > D, {outcome - task.deadline} ticks late')
        responses.append(outcome)
    return UniprocessorVerdict(True, tuple(responses))


def _columns(tasks: Sequence[GangTask]) -> tuple[np.ndarray, np.ndarray]:
    """
    C and T of `tasks` as arrays, for the fixed-point sums over a higher-priority set.

    int64 when no value `_task_bound` forms can overflow it: every start, busy-period
    length and sum term stays below (2 MAX_BUSY_JOBS + n + 4) max T (a start that passes
    D + q T_i - C_i is final, utilisation is at most 1, job q < MAX_BUSY_JOBS).  Else
    Python ints in object arrays: slower, as exact.
    """
    longest = max((task.period for task in tasks), default=1)
    fits = (2 * MAX_BUSY_JOBS + len(tasks) + 4) * longest < 2 ** 63
    dtype = np.int64 if fits else object
    return (np.array([task.wcet for task in tasks], dtype=dtype),
            np.array([task.period for task in tasks], dtype=dtype))


def _blockings(tasks: Sequence[GangTask]) -> list[int]:
    """B_i per task: the largest C_j - 1 below it (0 for the lowest), one pass upwards."""
    blockings = [0] * len(tasks)
    for i in range(len(tasks) - 2, -1, -1):
        blockings[i] = max(blockings[i + 1], tasks[i + 1].wcet - 1)
    return blockings


def utilisation_sign(wcets: Sequence[int], periods: Sequence[int]) -> int:
    """Sign of sum C/T - 1, exactly (-1, 0 or 1)."""
    return _exact_sign(float(np.sum(np.asarray(wcets) / np.asarray(periods))), wcets, periods)


def _exact_sign(approx: float, wcets: Sequence[int], periods: Sequence[int]) -> int:
    """
    Sign of sum C/T - 1 given `approx`, that sum in floats.

    The times are integers, so the sum is rational and may be exactly 1 (where blocking
    decides boundedness): the float sum, off by less than n 1e-16 for n tasks, decides
    when it is further than 1e-9 from 1, and `Fraction`s, 100 times slower, otherwise.
    """
    if abs(approx - 1) > _FLOAT_MARGIN:
        return 1 if approx > 1 else -1
    exact = _utilisation(wcets, periods)
    return (exact > 1) - (exact < 1)


# Far above the float error of a utilisation sum of up to a million tasks.
_FLOAT_MARGIN = 1e-9


def _utilisation(wcets: Sequence[int], periods: Sequence[int]) -> Fraction:
    """Sum C/T as an exact fraction."""
    return sum((Fraction(int(c), int(t)) for c, t in zip(wcets, periods)), Fraction(0))


def _unbounded(load: float, wcets: np.ndarray, periods: np.ndarray, task: GangTask,
               blocking: int) -> str:
    """
    Why the busy period of `task` has no end ('' if it ends).

    `wcets` and `periods` are those of `task` and the tasks above it, `load` their sum
    C/T in floats.
    """
    sign = _exact_sign(load, wcets, periods)
    if sign < 0 or (sign == 0 and blocking == 0):
        return ''
    exact = _utilisation(wcets, periods)
    return (f'{task.label}: utilisation of it and the tasks above is {float(exact):.3f}'
            f'{" with blocking" if exact == 1 else ""}, its busy period is unbounded')


def _task_bound(wcets: np.ndarray, periods: np.ndarray, task: GangTask,
                blocking: int) -> int | str:
    """
    R of `task` below tasks of C `wcets`, T `periods`, or the first late response found.

    Only for a bounded busy period (`_unbounded`); a string if it is too long to analyse.
    """
    worst = 0
    busy = blocking + task.wcet + int(wcets.sum())
    start = blocking
    job = 0
    while True:
        # Start of job `job`: least fixed point, iterated up from the previous job's start.
        start = max(start, blocking + job * task.wcet)
        while True:
            following = blocking + job * task.wcet + int((start // periods + 1) @ wcets)
            if following == start:
                break
            start = following
            if start + task.wcet - job * task.period > task.deadline:
                # Already late: the fixed point can only be later.
                break
        response = start + task.wcet - job * task.period
        if response > task.deadline:
            return response
        worst = max(worst, response)
        job += 1
        # Does the busy period reach the next release?  Iterate its length up to there.
        release = job * task.period
        while busy <= release:
            following = (blocking + int(-(-busy // periods) @ wcets)
                         + -(-busy // task.period) * task.wcet)
            if following == busy:
                return worst
            busy = following
        if job >= MAX_BUSY_JOBS:
            return (f'{task.label}: busy period longer than {MAX_BUSY_JOBS} of its jobs; '
                    'not analysed')


def partition_priorities(tasks: Sequence[GangTask]) -> tuple[tuple[int, ...], UniprocessorVerdict]:
    """
    Find a priority order for one partition's tasks, and return it with its verdict.

    The given order first (the caller's, e.g. deadline-monotonic), then Audsley's OPA,
    which is optimal for this analysis: task i's bound depends only on the set above it
    (their C and T) and the set below (their largest C), and a task only gains when moved
    up (George, Rivierre and Spuri, INRIA RR-2966, 1996, for non-preemptive FP).
    """
    given = tuple(range(len(tasks)))
    verdict = np_fp_response_times(tasks)
    if verdict or len(tasks) < 2:
        return given, verdict
    wcets, periods = _columns(tasks)
    unassigned = list(given)
    lowest_first: list[int] = []
    while unassigned:
        below = max((tasks[i].wcet - 1 for i in lowest_first), default=0)
        # Every candidate of a level has the same tasks at or above it, the unassigned ones:
        # if their busy period is unbounded, none fits.
        level_wcets, level_periods = wcets[unassigned], periods[unassigned]
        if _unbounded(float(np.sum(level_wcets / level_periods)), level_wcets, level_periods,
                      tasks[unassigned[0]], below):
            return given, verdict
        # Latest deadline first for the lowest levels: any task that fits is optimal.
        for candidate in sorted(unassigned, key=lambda i: (-tasks[i].deadline, -i)):
            others = [i for i in unassigned if i != candidate]
            bound = _task_bound(wcets[others], periods[others], tasks[candidate], below)
            if not isinstance(bound, str) and bound <= tasks[candidate].deadline:
                lowest_first.append(candidate)
                unassigned.remove(candidate)
                break
        else:
            return given, verdict
    order = tuple(reversed(lowest_first))
    return order, np_fp_response_times([tasks[i] for i in order])


# Where a task goes when no partition of its own width takes it: a new partition first
# ('spread') or a wider existing one first ('pack').  The heuristic tries both.
_STRATEGIES = ('spread', 'pack')


def partition(tasks: Sequence[GangTask], tpus: int) -> PartitionedVerdict:
    """
    Strictly partition rigid gang tasks (highest priority first) over `tpus` TPUs.

    Tasks are placed widest first (then by utilisation C/T, largest first), each into the
    first partition that still passes the NP-FP analysis with it: partitions of its own
    width, then either a new partition of its width if the TPUs allow or a wider one
    (the task then holds the whole partition), in both orders.  Within a partition the
    input order is the priority order, or OPA's if that fails.  Raises InvalidTaskSetError
    (or InvalidTaskError from GangTask) for input no analysis can take.
    """
    check_task_set(tasks, tpus)
    first: PartitionedVerdict | None = None
    for strategy in _STRATEGIES:
        verdict = _place_all(tuple(tasks), tpus, strategy)
        if verdict:
            return verdict
        first = first or verdict
    assert first is not None
    return first


def _place_all(tasks: tuple[GangTask, ...], tpus: int, strategy: str) -> PartitionedVerdict:
    """One first-fit pass with the given preference (see `partition`)."""
    order = sorted(range(len(tasks)),
                   key=lambda i: (-tasks[i].width, -Fraction(tasks[i].wcet, tasks[i].period), i))
    # Per partition: width and member task indices (kept in input order = priority order).
    widths: list[int] = []
    members: list[list[int]] = []
    analyses: list[tuple[tuple[int, ...], UniprocessorVerdict]] = []
    free = tpus
    for index in order:
        task = tasks[index]
        same = [p for p in range(len(widths)) if widths[p] == task.width]
        wider = sorted((p for p in range(len(widths)) if widths[p] > task.width),
                       key=lambda p: (widths[p], p))
        candidates = same + ([None] + wider if strategy == 'spread' else wider + [None])
        placed = False
        excess: int | None = None
        for place in candidates:
            if place is None:
                if task.width <= free:
                    widths.append(task.width)
                    members.append([index])
                    analyses.append(partition_priorities([task]))
                    free -= task.width
                    placed = True
                    break
                continue
            trial = sorted(members[place] + [index])
            result = partition_priorities([tasks[i] for i in trial])
            if result[1]:
                members[place] = trial
                analyses[place] = result
                placed = True
                break
            if result[1].excess is not None:
                excess = result[1].excess if excess is None else min(excess, result[1].excess)
        if not placed:
            return _rejected(tasks, index, excess, free, len(same) + len(wider))
    return _accepted(tasks, widths, members, analyses)


def _accepted(tasks: tuple[GangTask, ...], widths: list[int], members: list[list[int]],
              analyses: list[tuple[tuple[int, ...], UniprocessorVerdict]]) -> PartitionedVerdict:
    """Lay the partitions out on consecutive TPUs and index the bounds by input task."""
    partitions = []
    partition_of: list[int | None] = [None] * len(tasks)
    bounds: list[int | None] = [None] * len(tasks)
    first_tpu = 0
    for p, (width, chosen, (order, verdict)) in enumerate(zip(widths, members, analyses)):
        ordered = tuple(chosen[position] for position in order)
        partitions.append(Partition(tuple(range(first_tpu, first_tpu + width)), ordered,
                                    verdict.response_times))
        first_tpu += width
        for index, bound in zip(ordered, verdict.response_times):
            partition_of[index] = p
            bounds[index] = bound
    return PartitionedVerdict(True, tuple(partitions), tuple(partition_of), tuple(bounds))


def _rejected(tasks: tuple[GangTask, ...], index: int, excess: int | None, free: int,
              tried: int) -> PartitionedVerdict:
    """Say which task found no place and by how much it missed."""
    task = tasks[index]
    if excess is not None:
        late = (f'in each of the {tried} partitions it could join, some job would respond at '
                f'least {excess} ticks after its deadline')
    elif tried:
        late = f'in each of the {tried} partitions it could join, a busy period is unbounded'
    else:
        late = 'no partition of its width or wider exists'
    reason = (f'unschedulable: task {index} ({task.label}, C={task.wcet}, D={task.deadline}, '
              f'T={task.period}, m={task.width}) fits in no partition: {late}; only {free} '
              f'TPUs are left for a new one (strict partitioning)')
    return PartitionedVerdict(False, (), (None,) * len(tasks), (None,) * len(tasks), reason,
                              index, excess, free)


@dataclass(frozen=True)
class WidthAssignment:
    """Chosen option per task (index into its alternatives) and the partitioned verdict."""

    choices: tuple[int, ...]
    tasks: tuple[GangTask, ...]
    verdict: PartitionedVerdict

    def __bool__(self) -> bool:
        return bool(self.verdict)


def assign_widths(alternatives: Sequence[Sequence[GangTask]], tpus: int,
                  max_rounds: int = 50) -> WidthAssignment:
    """
    Choose one width per task (its alternatives: same task, other widths and WCETs).

    Start from each task's least volume m C (the TPU time a job occupies), ties to the
    narrower gang; while `partition` rejects, try every other option of every task and take
    the change that places the most tasks (the rejected one's alternatives first, which
    decides ties); stop when accepted, when no change helps or after `max_rounds`.
    Tasks are in priority order, as for `partition`.
    """
    if not alternatives:
        raise InvalidTaskSetError('empty task set: nothing to analyse')
    for position, options in enumerate(alternatives):
        if not options:
            raise InvalidTaskSetError(f'task {position} offers no width to choose from')
        check_task_set(options, tpus)
    choices = [min(range(len(options)), key=lambda o: (options[o].width * options[o].wcet,
                                                       options[o].width))
               for options in alternatives]

    def evaluate(picks: Sequence[int]) -> tuple[PartitionedVerdict, tuple[GangTask, ...]]:
        chosen = tuple(options[o] for options, o in zip(alternatives, picks))
        return partition(chosen, tpus), chosen

    verdict, chosen = evaluate(choices)
    for _ in range(max_rounds):
        if verdict:
            break
        best = (_progress(verdict), None, verdict, chosen)
        rejected = verdict.rejected_task
        order = [rejected] + [i for i in range(len(alternatives)) if i != rejected]
        for i in order:
            for o in range(len(alternatives[i])):
                if o == choices[i]:
                    continue
                trial = choices.copy()
                trial[i] = o
                result, tasks = evaluate(trial)
                if _progress(result) > best[0]:
                    best = (_progress(result), trial, result, tasks)
        if best[1] is None:
            break
        choices, verdict, chosen = best[1], best[2], best[3]
    return WidthAssignment(tuple(choices), chosen, verdict)


def _progress(verdict: PartitionedVerdict) -> tuple[int, int]:
    """How close a verdict is to acceptance: accepted first, then least excess."""
    if verdict:
        return (1, 0)
    return (0, -(verdict.excess if verdict.excess is not None else 10 ** 9))
