"""
Least-energy configuration: a model variant and a gang width per stream.

Each stream offers options (variant, width) with a WCET, an energy per job and an accuracy;
an option is admissible if it keeps the stream's accuracy floor, fits the platform and
has C <= D.  A configuration picks one admissible option per stream; its cost is the
energy rate sum_i E_i / T_i; it is feasible if one of the analyses allowed accepts it, tried
in this order and recorded in `Configuration.analysis`:
- 'global': some priority order passes the global test (`assign_priorities`: OPA, else
  deadline-monotonic); the test is `GLOBAL_TEST`, the pooled one, which accepts every
  set the baseline accepts (so the baseline is never tried), recorded in
  `Configuration.test`;
- 'partitioned': strict partitioning (`partitioned.partition`, deadline-monotonic within);
- 'job-level': the exact search of synchronous periodic releases (`joblevel`), only if
  asked for, since it is valid only where the dispatcher enforces those release instants.
Removing a task can hurt the partitioning heuristic and the exact search (first-fit and
execution-time anomalies), so with them the pruning on rejected partial sets below may
miss a cheaper configuration: it never accepts a rejected one.

Both searches rely on one property of that acceptance: removing a task never turns an
accepted set into a rejected one (fewer tasks above or below only shrink Omega, and
under strict can only raise B_k; an OPA order or the deadline-monotonic order of the full
set, restricted to the subset, still passes).  So a partial configuration that is
rejected can be pruned with everything below it.

- `choose_exact`: depth-first branch and bound over streams, options cheapest first,
  pruned by the energy lower bound (cost so far + cheapest option of each remaining
  stream) and by the test on the partial set.  Exponential in the worst case: for a few
  streams (the benchmark uses up to 6 with 12 options each).
- `choose_heuristic`: greedy repair, then descent.  Start from the cheapest option of
  every stream (and if the repair gets stuck, once more from the fastest).  While the
  test rejects, make the single-stream change that reduces the lateness
  (`lateness` of the global test: how far past their deadlines the bounds of the
  deadline-monotonic order overshoot) at the least extra energy per unit of lateness
  removed; give up when no change reduces it.  Then, while some stream can move to a
  cheaper option and stay accepted, take the largest such saving.  Each step costs
  streams x options analyses.  TPU demand (m C / T) is no guide: the cheapest options
  already have the least demand, and what a rejected set usually needs is shorter
  jobs on wider gangs, which costs demand.

Both searches take an optional budget of analyses: a search that spends it stops, and
answers with the best configuration it has accepted so far (every one it returns is
accepted, so the answer stays sound) or, if none, refuses saying that the budget ran out.
Without one, a large set that must be refused can keep the greedy repair going for minutes.
"""

from dataclasses import dataclass
import math
from typing import Sequence

from .joblevel import job_level_analysis
from .knapsack import Knapsack
from .partitioned import Partition, partition
from .pooled import PooledAnalysis
from .priority import assign_priorities, deadline_monotonic, reorder
from .tasks import Dispatch, GangTask, SchedulingError


class InvalidStreamError(SchedulingError):
    """A stream or option description that cannot be turned into gang tasks."""


class _BudgetSpent(Exception):
    """The search has run as many analyses as it was allowed."""


ANALYSES = ('global', 'partitioned', 'job-level')
# Job-level needs enforced synchronous releases: opt in.
DEFAULT_ANALYSES = ('global', 'partitioned')
# The global test behind 'global': the pooled test dominates the baseline.
GLOBAL_TEST = PooledAnalysis


@dataclass(frozen=True)
class Option:
    """One way to run a stream: a model variant on a gang of `width` TPUs."""

    variant: str
    width: int
    wcet: int
    energy_per_job: float
    accuracy: float

    def __post_init__(self) -> None:
        for field in ('width', 'wcet'):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidStreamError(
                    f'option {self.variant}: {field} must be a positive integer, got {value!r}')
        if not math.isfinite(self.energy_per_job) or self.energy_per_job < 0:
            raise InvalidStreamError(
                f'option {self.variant}: energy per job must be finite and >= 0, '
                f'got {self.energy_per_job!r}')
        if not math.isfinite(self.accuracy):
            raise InvalidStreamError(f'option {self.variant}: accuracy {self.accuracy!r}')


@dataclass(frozen=True)
class Stream:
    """A periodic camera stream with its timing constraint, accuracy floor and options."""

    name: str
    period: int
    deadline: int
    accuracy_floor: float
    options: tuple[Option, ...]

    def __post_init__(self) -> None:
        if not self.options:
            raise InvalidStreamError(f'stream {self.name}: no options to choose from')
        try:
            # The task model checks period and deadline: fail here, at the edge, not later.
            self.task(1, 1)
        except SchedulingError as error:
            raise InvalidStreamError(f'stream {error}') from None

    def admissible(self, tpus: int) -> tuple[Option, ...]:
        """Options that keep the accuracy floor, fit the platform and can meet D alone."""
        return tuple(option for option in self.options
                     if option.accuracy >= self.accuracy_floor and option.width <= tpus
                     and option.wcet <= self.deadline)

    def energy_rate(self, option: Option) -> float:
        """Energy per tick spent by this stream with `option`."""
        return option.energy_per_job / self.period

    def task(self, width: int, wcet: int) -> GangTask:
        """Build the gang task this stream becomes with the given width and WCET."""
        return GangTask(wcet, self.deadline, self.period, width, self.name)


@dataclass(frozen=True)
class Configuration:
    """An accepted choice: one option per stream, a priority order and its cost."""

    choices: tuple[Option, ...]
    # Stream indices, highest priority first.
    priorities: tuple[int, ...]
    # R_i per stream, in stream order.
    response_times: tuple[int, ...]
    energy_rate: float
    # Which analysis accepted it ('global', 'partitioned', 'job-level').
    analysis: str = 'global'
    # For 'partitioned': the partitions, their `tasks` as stream indices.
    partitions: tuple[Partition, ...] = ()
    # For 'global': which global test ('pooled'; 'baseline' is never needed).
    test: str = ''


@dataclass(frozen=True)
class Selection:
    """The answer of a search: a configuration, or None and the reason."""

    configuration: Configuration | None
    reason: str
    # Analyses run (tests and lateness evaluations): the unit that dominates the cost.
    analyses: int
    # The search stopped at its budget: a configuration is the best found so far.
    budget_spent: bool = False


class _Problem:
    """Streams, platform and test, with the acceptance check the searches share."""

    def __init__(self, streams: Sequence[Stream], tpus: int, rule: Dispatch,
                 knapsack: Knapsack, analyses: Sequence[str],
                 budget: int | None = None) -> None:
        unknown = [name for name in analyses if name not in ANALYSES]
        if unknown or not analyses:
            raise InvalidStreamError(f'analyses must be a non-empty subset of {ANALYSES}, '
                                     f'got {tuple(analyses)!r}')
        self.analyses_allowed = tuple(analyses)
        self.streams = tuple(streams)
        self.tpus = tpus
        self.rule = Dispatch(rule)
        self.knapsack = Knapsack(knapsack)
        self.options = [sorted(stream.admissible(tpus), key=stream.energy_rate)
                        for stream in streams]
        if budget is not None and (isinstance(budget, bool) or not isinstance(budget, int)
                                   or budget < 1):
            raise InvalidStreamError(f'search budget must be a positive number of analyses, '
                                     f'got {budget!r}')
        self.budget = budget
        self.spent = False  # a search was stopped by the budget
        self.analyses = 0
        # Overshoot allowed when measuring lateness: enough to rank rejected sets.
        self.overrun = 2 * max((stream.deadline for stream in streams), default=0)

    def infeasibility(self) -> str:
        """Why no configuration can exist before any test is run, or ''."""
        if not self.streams:
            return 'unschedulable: no streams to configure'
        for stream, options in zip(self.streams, self.options):
            if not options:
                return (f'unschedulable: stream {stream.name} has no option with accuracy '
                        f'>= {stream.accuracy_floor}, width <= {self.tpus} and C <= '
                        f'D={stream.deadline}')
        return ''

    def accepted(self, picks: dict[int, Option]) -> Configuration | None:
        """Return the configuration of the streams in `picks` if the test accepts it."""
        indices = sorted(picks)
        tasks = [self.streams[i].task(picks[i].width, picks[i].wcet) for i in indices]
        if sum(task.utilisation for task in tasks) > self.tpus:
            return None
        self._spend()
        for name in self.analyses_allowed:
            found = self._accepts(name, tasks)
            if found is None:
                continue
            order, bounds, partitions = found
            priorities = tuple(indices[position] for position in order)
            by_stream = dict(zip(priorities, bounds))
            return Configuration(
                tuple(picks[i] for i in indices), priorities,
                tuple(by_stream[i] for i in indices),
                sum(self.streams[i].energy_rate(picks[i]) for i in indices), name,
                tuple(Partition(part.tpus, tuple(indices[t] for t in part.tasks),
                                part.response_times) for part in partitions),
                'pooled' if name == 'global' else '')
        return None

    def _accepts(self, name: str, tasks: list[GangTask]
                 ) -> tuple[tuple[int, ...], tuple[int, ...], tuple[Partition, ...]] | None:
        """Priority order (positions in `tasks`), bounds in that order, partitions; or None."""
        if name == 'global':
            assignment = assign_priorities(tasks, self.tpus, self.rule, self.knapsack,
                                           GLOBAL_TEST)
            if not assignment.verdict:
                return None
            return assignment.order, assignment.verdict.response_times, ()
        order = deadline_monotonic(tasks)
        ordered = reorder(tasks, order)
        if name == 'partitioned':
            split = partition(ordered, self.tpus)
            if not split:
                return None
            parts = tuple(Partition(part.tpus, tuple(order[t] for t in part.tasks),
                                    part.response_times) for part in split.partitions)
            return order, tuple(split.response_times), parts
        verdict = job_level_analysis(ordered, self.tpus, self.rule)
        if not verdict or verdict.method != 'job-level':
            return None
        return order, verdict.response_times, ()

    def lateness(self, picks: dict[int, Option]) -> float:
        """How far the deadline-monotonic bounds overshoot; 0 when that order passes."""
        self._spend()
        tasks = [self.streams[i].task(option.width, option.wcet) for i, option in picks.items()]
        ordered = reorder(tasks, deadline_monotonic(tasks))
        return GLOBAL_TEST(ordered, self.tpus, self.rule, self.knapsack).lateness(self.overrun)

    def _spend(self) -> None:
        if self.budget is not None and self.analyses >= self.budget:
            self.spent = True
            raise _BudgetSpent
        self.analyses += 1

    def cost(self, picks: dict[int, Option]) -> float:
        """Energy rate of the picked options."""
        return sum(self.streams[i].energy_rate(option) for i, option in picks.items())

    def selection(self, best: Configuration | None) -> Selection:
        """Wrap a search's result with its cost and, if it failed, the reason."""
        if best is None and self.spent:
            return Selection(None, f'unschedulable as far as searched: no configuration '
                             f'accepted within the search budget of {self.budget} analyses',
                             self.analyses, True)
        if best is None:
            return Selection(None, 'unschedulable: the test rejects every configuration '
                             'tried', self.analyses)
        return Selection(best, '', self.analyses, self.spent)


def choose_exact(streams: Sequence[Stream], tpus: int, rule: Dispatch,
                 knapsack: Knapsack = Knapsack.EXACT,
                 analyses: Sequence[str] = DEFAULT_ANALYSES,
                 budget: int | None = None) -> Selection:
    """Find the least-energy accepted configuration by branch and bound (few streams)."""
    problem = _Problem(streams, tpus, rule, knapsack, analyses, budget)
    reason = problem.infeasibility()
    if reason:
        return Selection(None, reason, 0)
    # Streams with the fewest options first: the tree narrows where it is cheapest.
    order = sorted(range(len(streams)), key=lambda i: len(problem.options[i]))
    floor_after = [sum(streams[i].energy_rate(problem.options[i][0]) for i in order[depth:])
                   for depth in range(len(order) + 1)]
    best: Configuration | None = None

    def explore(depth: int, picks: dict[int, Option]) -> None:
        nonlocal best
        if depth == len(order):
            # The bound check on the way down guarantees it beats the incumbent.
            best = problem.accepted(picks) or best
            return
        stream = order[depth]
        for option in problem.options[stream]:
            trial = {**picks, stream: option}
            bound = problem.cost(trial) + floor_after[depth + 1]
            # Options are sorted by cost, so once one is too dear all the later ones are.
            if best is not None and bound >= best.energy_rate:
                return
            if depth + 1 == len(order) or problem.accepted(trial) is not None:
                explore(depth + 1, trial)

    try:
        explore(0, {})
    except _BudgetSpent:
        pass  # the incumbent, if any, is accepted
    return problem.selection(best)


def choose_heuristic(streams: Sequence[Stream], tpus: int, rule: Dispatch,
                     knapsack: Knapsack = Knapsack.EXACT,
                     analyses: Sequence[str] = DEFAULT_ANALYSES,
                     budget: int | None = None) -> Selection:
    """Find a low-energy accepted configuration by greedy repair and descent (any size)."""
    problem = _Problem(streams, tpus, rule, knapsack, analyses, budget)
    reason = problem.infeasibility()
    if reason:
        return Selection(None, reason, 0)
    cheapest = {i: options[0] for i, options in enumerate(problem.options)}
    # Lateness has local minima; the fastest option of every stream is the second start.
    fastest = {i: min(options, key=lambda option: option.wcet)
               for i, options in enumerate(problem.options)}
    try:
        for start in (cheapest, fastest):
            repaired = _repair(problem, start)
            if repaired is not None:
                return problem.selection(_descend(problem, *repaired))
    except _BudgetSpent:
        pass  # spent while repairing: nothing accepted yet
    return problem.selection(None)


def _repair(problem: _Problem,
            picks: dict[int, Option]) -> tuple[dict[int, Option], Configuration] | None:
    """Greedy changes from `picks` until the test accepts, or None when stuck."""
    current = problem.accepted(picks)
    while current is None:
        picks = _cheapest_repair(problem, picks)
        if picks is None:
            return None
        current = problem.accepted(picks)
    return picks, current


def _descend(problem: _Problem, picks: dict[int, Option],
             current: Configuration) -> Configuration:
    """Take the largest accepted saving until none is left or the budget is spent."""
    while True:
        try:
            saving = _best_saving(problem, picks)
        except _BudgetSpent:
            return current
        if saving is None:
            return current
        picks, current = saving


def _cheapest_repair(problem: _Problem, picks: dict[int, Option]) -> dict[int, Option] | None:
    """Pick the single-stream change that removes lateness at the least energy per unit."""
    lateness = problem.lateness(picks)
    best: tuple[float, dict[int, Option]] | None = None
    for i, current in picks.items():
        stream = problem.streams[i]
        for option in problem.options[i]:
            if option == current:
                continue
            trial = {**picks, i: option}
            relief = lateness - problem.lateness(trial)
            if relief <= 0:
                continue
            price = (stream.energy_rate(option) - stream.energy_rate(current)) / relief
            if best is None or price < best[0]:
                best = (price, trial)
    return None if best is None else best[1]


def _best_saving(problem: _Problem,
                 picks: dict[int, Option]) -> tuple[dict[int, Option], Configuration] | None:
    """Pick the accepted single-stream change that saves the most energy, if any."""
    candidates = sorted(
        ((problem.streams[i].energy_rate(option) - problem.streams[i].energy_rate(current),
          i, option)
         for i, current in picks.items() for option in problem.options[i]),
        key=lambda candidate: candidate[0])
    for change, i, option in candidates:
        if change >= 0:
            return None
        trial = {**picks, i: option}
        accepted = problem.accepted(trial)
        if accepted is not None:
            return trial, accepted
    return None
