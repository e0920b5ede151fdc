"""
Admission: which variant, thresholds and gang width each stream runs, and whether the set fits.

A stream becomes a ``scheduling.Stream`` in ticks: T = floor(T / tick), D = floor(D / tick) - 1
(the latching tick), and one ``Option`` per (model point, width) whose point keeps the stream's
floor in the current mode, with C = ceil(WCET / tick) from its ``GangPlan`` and the expected
energy per job at the point's exit rates. Dominated options (same width, no faster and no
cheaper) are dropped before the search.

Global dispatch: ``scheduling.choose_heuristic`` (or ``choose_exact``) with the global test
only, on the options planned ``resident`` when every segment the configuration runs fits one
device's cache together, else on options planned ``swap`` (the worst swap in C). Partitioned
dispatch: ``admit_partitioned``.

Rejections say which stream and by how much: a floor above every point's accuracy, a stream
whose fastest option cannot meet its deadline alone, a set whose TPU demand exceeds the pool
even at every stream's least-demand option (checked before any search), or, for a set, the
stream whose bound overshoots most with every stream at its fastest option
(deadline-monotonic order).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from fractions import Fraction
import itertools
import math
from typing import Optional, Sequence

from dyn_perception.runtime.devices.base import Device, SegmentRef
from dyn_perception.runtime.scheduling import (
    analyse, choose_exact, choose_heuristic, Dispatch, GangAnalysis, GangTask,
    InvalidStreamError, np_fp_response_times, Option, Stream
)
from dyn_perception.runtime.scheduling.partitioned import partition_priorities, utilisation_sign
from dyn_perception.runtime.scheduling.priority import deadline_monotonic, reorder
from dyn_perception.runtime.serving.dispatcher import Lane
from dyn_perception.runtime.serving.plans import (
    fits_together, GangPlan, plan, RESIDENT, ServedModel, SWAP, unique_refs
)
from dyn_perception.runtime.serving.streams import ServingError, StreamSpec
import numpy as np

_EPS = 1e-9
# Analyses the global search may run before it answers (25-50 ms each for 25-40 streams on
# these shared cores): a set it must refuse kept the greedy repair going for minutes, and an
# admission answers a parameter change. What it returns is accepted all the same.
GLOBAL_SEARCH_BUDGET = 100


def ticks_up(seconds: float, tick_s: float) -> int:
    return max(1, math.ceil(seconds / tick_s - _EPS))


def ticks_down(seconds: float, tick_s: float) -> int:
    return math.floor(seconds / tick_s + _EPS)


@dataclass(frozen=True)
class Served:
    """A stream with its model, as admission sees it."""

    spec: StreamSpec
    model: ServedModel


@dataclass(frozen=True)
class Admitted:
    """An accepted configuration: lanes in priority order, plans and analysed bounds."""

    mode: str
    dispatch: str
    residency: str
    lanes: tuple[Lane, ...]
    plans: dict[str, GangPlan]
    # Analysed response bound per stream in ticks (latching excluded) and in seconds
    # (latching included: (R + 1) ticks, what a frame can observe).
    bound_ticks: dict[str, int]
    energy_rate_w: float
    tick_s: float
    # The gang tasks in lane order (what the analysis saw) and, partitioned, each lane's
    # partition as (first device, width).
    tasks: tuple[GangTask, ...] = ()
    # What each device must hold under this configuration (empty: whatever it ran last).
    residents: tuple[tuple[SegmentRef, ...], ...] = ()

    def bound_s(self, stream: str) -> float:
        return (self.bound_ticks[stream] + 1) * self.tick_s

    @property
    def streams(self) -> tuple[str, ...]:
        return tuple(lane.stream for lane in self.lanes)


class Planner:
    """Plans, options and the searches on one pool (devices alike, a probe for swaps)."""

    def __init__(self, device: Device, probe: Device, tpus: int, rule: Dispatch, tick_s: float,
                 modes: Sequence[str], exact: bool = False):
        self.device, self.probe = device, probe
        self.tpus, self.rule, self.tick_s = tpus, Dispatch(rule), tick_s
        self.modes = tuple(modes)
        self.exact = exact
        self._plans: dict[tuple, GangPlan] = {}

    # -- options ---------------------------------------------------------------------------

    def max_width(self, served: Served) -> int:
        return min(self.tpus, max(len(p.refs) for p in served.model.points))

    def gang_plan(self, point, width: int, residency: str,
                  unions: Optional[Sequence[Sequence[SegmentRef]]] = None) -> GangPlan:
        key = (point.model, point.label, width, residency,
               None if unions is None else tuple(tuple(r.key for r in u) for u in unions))
        if key not in self._plans:
            self._plans[key] = plan(point, width, residency, self.device, self.probe, unions)
        return self._plans[key]

    def floor_check(self, served: Served, mode: str) -> None:
        """Refuse a floor that no point of the model reaches, naming the stream."""
        floor = served.spec.floor(mode, self.modes)
        best = served.model.best_accuracy()
        if floor > best + _EPS:
            raise refusal(served.spec.name,
                          f'accuracy floor {floor:.4f} in mode {mode} is above what any variant '
                          f'of {served.model.name} reaches ({best:.4f}), short by '
                          f'{floor - best:.4f}')

    def options(self, served: Served, mode: str, residency: str,
                union: Optional[tuple[SegmentRef, ...]] = None,
                widths: Optional[Sequence[int]] = None,
                points=None) -> tuple[list[Option], dict[tuple[str, int], GangPlan]]:
        """
        List the useful admissible options of a stream in ``mode`` and the plans behind them.

        ``points`` and ``widths`` restrict the choice (baselines); None allows everything.
        """
        floor = served.spec.floor(mode, self.modes)
        chosen = [p for p in (points or served.model.points) if p.accuracy >= floor - _EPS]
        plans: dict[tuple[str, int], GangPlan] = {}
        options: list[Option] = []
        for point in chosen:
            for width in widths or range(1, self.max_width(served) + 1):
                gang = self.gang_plan(point, width, residency,
                                      None if union is None else (union,) * width)
                plans[point.label, width] = gang
                options.append(_option(gang, self.tick_s))
        return _undominated(options), plans

    def stream(self, served: Served, options: Sequence[Option]) -> Stream:
        """
        Return the stream in ticks, or its refusal when its times do not fit the tick grid.

        The stream file cannot check this (the tick is the pool's): a deadline must leave at
        least one tick after the latching one, and a period of 1e300 s that rounds below its
        deadline in ticks is refused as well. A ServingError, not the task model's own error,
        so that the stream is rejected like any other and a live change is refused.
        """
        spec = served.spec
        deadline = ticks_down(spec.deadline_s, self.tick_s) - 1
        if deadline < 1:
            raise refusal(spec.name, f'deadline {1e3 * spec.deadline_s:g} ms is shorter than '
                                     f'two ticks of the pool ({1e3 * self.tick_s:g} ms each, '
                                     'one latches the frame)')
        try:
            return Stream(spec.name, ticks_down(spec.period_s, self.tick_s), deadline,
                          0.0, tuple(options))
        except InvalidStreamError as err:  # its message leads with 'stream <name>: '
            raise ServingError(str(err), spec.name) from None

    # -- global dispatch ---------------------------------------------------------------------

    def admit_global(self, streams: Sequence[Served], mode: str,
                     points=None, widths=None) -> Admitted:
        """Least-energy accepted configuration under global dispatch, or ServingError."""
        for served in streams:
            self.floor_check(served, mode)
        union = unique_refs([ref for served in streams for p in served.model.points
                             for ref in p.refs])
        # Resident when everything the streams may run fits one cache together; else swaps.
        residency = RESIDENT if fits_together(self.device, union) else SWAP
        held = union if residency == RESIDENT else None
        built = [self.options(served, mode, residency, held, *_limits(served, widths, points))
                 for served in streams]
        tasks = [self.stream(served, options) for served, (options, _) in zip(streams, built)]
        self._check_alone(streams, tasks)
        self._check_demand(streams, tasks, mode)
        search = choose_exact if self.exact else choose_heuristic
        # Only the global test: the dispatcher runs these bounds globally, so a set that
        # only strict partitioning accepts must not be admitted here.
        selection = search(tasks, self.tpus, self.rule, analyses=('global',),
                           budget=GLOBAL_SEARCH_BUDGET)
        if selection.configuration is None:
            stopped = (f'; the search stopped at its budget of {GLOBAL_SEARCH_BUDGET} analyses'
                       if selection.budget_spent else '')
            name, reason = self._overshoot(streams, tasks, mode)
            raise refusal(name, reason + stopped)
        config = selection.configuration
        lanes, plans, bounds = [], {}, {}
        for index in config.priorities:
            option = config.choices[index]
            name = streams[index].spec.name
            lanes.append(Lane(name, option.width))
            plans[name] = built[index][1][option.variant, option.width]
            bounds[name] = config.response_times[index]
        residents = (held,) * self.tpus if residency == RESIDENT else ()
        tasks = tuple(tasks[i].task(config.choices[i].width, config.choices[i].wcet)
                      for i in config.priorities)
        return Admitted(mode, 'global', residency, tuple(lanes), plans, bounds,
                        config.energy_rate / self.tick_s, self.tick_s, tasks, residents)

    # -- partitioned dispatch ----------------------------------------------------------------

    def necessary(self, streams: Sequence[Served], mode: str, points=None, widths=None):
        """
        Apply the necessary conditions of any admission; the options and tasks, or ServingError.

        Options are planned resident and alone, the least C any dispatch can see (a
        partition adds co-resident streaming, global dispatch adds swaps or nothing): every
        floor is reachable, every stream alone meets its deadline, and the least-demand
        options fit the pool.  A set refused here is refused by every admission.
        """
        for served in streams:
            self.floor_check(served, mode)
        built = [self.options(served, mode, RESIDENT, None, *_limits(served, widths, points))
                 for served in streams]
        tasks = [self.stream(served, options) for served, (options, _) in zip(streams, built)]
        self._check_alone(streams, tasks)
        self._check_demand(streams, tasks, mode)
        return built, tasks

    def admit_partitioned(self, streams: Sequence[Served], mode: str,
                          points=None, widths=None, reserve_s: float = 0.0) -> Admitted:
        """
        Strict partitioning: disjoint partitions, one gang width each, least energy greedily.

        Streams are placed by decreasing TPU demand of their fastest option: into an existing
        partition of an option's width where the partition stays schedulable (cheapest such
        option), else into a new partition of the cheapest option's width, if TPUs are left.
        Device k of a partition holds stage k of every member, so no swap ever happens; a
        partition is checked with the segment times of those co-resident stages.  If that
        strands a stream, the packing is tried once more with options in order of least TPU
        demand (width x C), then into fixed layouts of partitions (``_pack_layout``).  Then
        each stream in turn moves to a cheaper option of its partition's width where that
        passes.  A partition's verdict is memoised for the admission: the packings and the
        descent ask for the same member sets again.  With ``reserve_s``, every partition must
        also absorb that much of model loads (a mode change's switch, ``with_loading``).
        """
        built, tasks = self.necessary(streams, mode, points, widths)
        checks = _Checks(ticks_up(reserve_s, self.tick_s) if reserve_s > 0 else 0)
        parts = self._pack(streams, built, tasks, checks, mode, lambda o: o.energy_per_job)
        if isinstance(parts, ServingError):
            # Cheapest first can strand TPUs; least TPU demand first packs tighter.
            parts = self._pack(streams, built, tasks, checks, mode,
                               lambda o: (o.width * o.wcet, o.energy_per_job))
        # Both greedy packings open partitions as they go; fixed layouts, sized by the
        # streams' least demand per width first (see _layouts), are packed next, each with
        # streams grouped by period, then without (either admits sets the other refuses).
        layouts = self._layouts(tasks) if isinstance(parts, ServingError) else ()
        for layout, grouped in itertools.product(layouts, (True, False)):
            packed = self._pack_layout(streams, built, tasks, checks, mode, layout,
                                       group_periods=grouped)
            if not isinstance(packed, ServingError):
                parts = packed
                break
        if isinstance(parts, ServingError):
            raise parts
        for part in parts:
            for i in list(part):
                for option in sorted(tasks[i].admissible(self.tpus),
                                     key=lambda o: o.energy_per_job):
                    if option.energy_per_job >= part[i].energy_per_job:
                        break
                    if option.width == part[i].width and self._partition(
                            checks, built, tasks, {**part, i: option}):
                        part[i] = option
                        break
        return self._partitioned(streams, built, tasks, checks, parts, mode)

    def _pack(self, streams, built, tasks, checks, mode: str,
              key) -> list[dict[int, Option]] | ServingError:
        """Greedy placement trying options in ``key`` order; the partitions or why not."""
        parts: list[dict[int, Option]] = []
        free = self.tpus
        demand = self._least_demand(tasks)
        for i in sorted(range(len(tasks)), key=lambda i: -demand[i]):
            options = sorted(tasks[i].admissible(self.tpus), key=key)
            placed = next(((part, option) for option in options for part in parts
                           if _width(part) == option.width
                           and self._partition(checks, built, tasks, {**part, i: option})),
                          None)
            if placed is not None:
                placed[0][i] = placed[1]
                continue
            fresh = next((o for o in options if o.width <= free), None)
            if fresh is None:
                return refusal(streams[i].spec.name,
                               f'no partition has room for it in mode {mode} and {free} of '
                               f'{self.tpus} TPUs are free, fewer than its narrowest option '
                               f'needs ({min(o.width for o in options)})')
            parts.append({i: fresh})
            free -= fresh.width
        return parts

    def _least_demand(self, tasks: Sequence[Stream]) -> list[float]:
        """Give the TPUs each stream needs at its least-demand option (width x C / T)."""
        return [min(o.width * o.wcet for o in t.admissible(self.tpus)) / t.period for t in tasks]

    def _layouts(self, tasks) -> list[tuple[int, ...]]:
        """
        Partition widths to try: first from the least-demand option of every stream, then all.

        At its least-demand option a stream needs C / T of one partition of that width: a
        width whose streams need U in total gets floor(U) or ceil(U) partitions (a fraction
        left over goes to another width's partitions, at another option), and TPUs left over
        become partitions of width 1; layouts over the pool are skipped.  Then every other
        split of the pool into the widths the options offer (15 for 8 TPUs and widths 1 to
        4): a partition's busy window, not only its utilisation, limits what it holds
        (D < T, jobs of C up to 15 ms), so the least-demand sizing is a guess.
        """
        need: dict[int, Fraction] = {}
        for t in tasks:
            least = min(t.admissible(self.tpus), key=lambda o: (o.width * o.wcet, o.width))
            need[least.width] = need.get(least.width, 0) + Fraction(least.wcet, t.period)
        widths = sorted(need, reverse=True)
        layouts = []
        for counts in itertools.product(*({math.floor(need[w]), math.ceil(need[w])}
                                          for w in widths)):
            layout = [w for w, n in zip(widths, counts) for _ in range(n)]
            if sum(layout) <= self.tpus and layout:
                layout += [1] * (self.tpus - sum(layout))
                if layout not in layouts:
                    layouts.append(layout)
        offered = sorted({o.width for t in tasks for o in t.admissible(self.tpus)}, reverse=True)
        for layout in _splits(self.tpus, offered):
            if list(layout) not in layouts:
                layouts.append(list(layout))
        return [tuple(layout) for layout in layouts]

    def _pack_layout(self, streams, built, tasks, checks, mode: str, layout: Sequence[int],
                     group_periods: bool) -> list[dict[int, Option]] | ServingError:
        """
        Place streams into fixed partitions of ``layout``'s widths; the partitions or why not.

        Streams by decreasing least TPU demand, each at its options in order of demand
        (width x C), first fit over the partitions of that width; with ``group_periods``,
        those holding only streams of its period first, then those holding some, then
        empty ones. A partition is one non-preemptive processor, and jobs of one period
        fill its busy windows tighter than a mix: on 108 benchmark sets at loads 1.0 to 1.2
        (seeds 0 to 2) the grouping admitted 6 sets plain first fit refuses, and refused 1
        it admits. Empty partitions are dropped (their TPUs stay idle).
        """
        slots: list[tuple[int, dict[int, Option]]] = [(w, {}) for w in layout]
        demand = self._least_demand(tasks)

        def period_match(slot: tuple[int, dict[int, Option]], period: int) -> int:
            """Rank a partition: only this period, some of it, empty, none of it."""
            members = slot[1]
            same = sum(tasks[j].period == period for j in members)
            if same:
                return 0 if same == len(members) else 1
            return 3 if members else 2

        for i in sorted(range(len(tasks)), key=lambda i: -demand[i]):
            options = sorted(tasks[i].admissible(self.tpus),
                             key=lambda o: (o.width * o.wcet, o.energy_per_job))
            ranked = (sorted(slots, key=lambda slot: period_match(slot, tasks[i].period))
                      if group_periods else slots)
            placed = next(((part, option) for option in options for width, part in ranked
                           if width == option.width
                           and self._partition(checks, built, tasks, {**part, i: option})),
                          None)
            if placed is None:
                return refusal(streams[i].spec.name,
                               f'no partition of the layout {"+".join(map(str, layout))} '
                               f'takes it in mode {mode}')
            placed[0][i] = placed[1]
        return [part for _, part in slots if part]

    def _partition(self, checks: _Checks, built, tasks, members: dict[int, Option]):
        """Plans, tasks and verdict of one partition's members (None: rejected), memoised."""
        key = tuple(sorted((i, o.variant, o.width) for i, o in members.items()))
        if key not in checks.verdicts:
            checks.verdicts[key] = self._check_partition(built, tasks, members, checks.reserve)
        return checks.verdicts[key]

    def _check_partition(self, built, tasks, members: dict[int, Option], reserve: int = 0):
        width = _width(members)
        # Necessary: a partition is one processor, its utilisation at the members' C alone
        # (co-residence only adds streaming) cannot exceed 1; skips planning the unions.
        if utilisation_sign([o.wcet for o in members.values()],
                            [tasks[i].period for i in members]) > 0:
            return None
        order = sorted(members, key=lambda i: (tasks[i].deadline, tasks[i].period, i))
        alone = {i: built[i][1][members[i].variant, width] for i in order}
        # Streams on one model point share its plans (gang_plan's cache): with hundreds of
        # members, each point's segments are listed and its plan looked up once.
        point_of = {i: (alone[i].point.model, alone[i].point.label) for i in order}
        shared = {point_of[i]: alone[i] for i in order}
        unions = [unique_refs([ref for plan in shared.values() if k < len(plan.stages)
                               for ref in plan.stage_refs(k)]) for k in range(width)]
        together = {point: self.gang_plan(plan.point, width, RESIDENT, unions)
                    for point, plan in shared.items()}
        plans = {i: together[point_of[i]] for i in order}
        wcets = [ticks_up(plans[i].wcet_s, self.tick_s) for i in order]
        if any(c > tasks[i].deadline for c, i in zip(wcets, order)):
            return None
        gang_tasks = [tasks[i].task(width, c) for c, i in zip(wcets, order)]
        # A partition runs one job at a time on all its devices: non-preemptive fixed
        # priority on one processor. Deadline-monotonic order first, then Audsley's OPA,
        # optimal for that exact busy-period analysis (issue 15), which accepts whatever
        # the gang test on `width` TPUs accepts (test_partition_check_...).
        positions, verdict = partition_priorities(
            [*gang_tasks, _loader(reserve, gang_tasks, width)] if reserve else gang_tasks)
        if reserve:
            # Room for a switch's model loads, a job at the lowest priority (with_loading):
            # the order found with it is kept, the bounds are those without it.
            if not verdict or positions[-1] != len(gang_tasks):
                return None
            positions = positions[:-1]
            verdict = np_fp_response_times([gang_tasks[j] for j in positions])
        if not verdict:
            return None
        return ([order[j] for j in positions], plans, unions,
                [gang_tasks[j] for j in positions], verdict.response_times)

    def _partitioned(self, streams, built, tasks, checks, parts, mode: str) -> Admitted:
        lanes, plans, bounds, gang_tasks = [], {}, {}, []
        residents: list[tuple[SegmentRef, ...]] = [()] * self.tpus
        first = 0
        for part in parts:
            ranked, part_plans, unions, part_tasks, responses = self._partition(
                checks, built, tasks, part)
            devices = tuple(range(first, first + _width(part)))
            for k, device in enumerate(devices):
                residents[device] = tuple(unions[k])
            for i, task, response in zip(ranked, part_tasks, responses):
                name = streams[i].spec.name
                lanes.append(Lane(name, len(devices), devices))
                plans[name] = part_plans[i]
                bounds[name] = response
                gang_tasks.append(task)
            first += len(devices)
        rate = sum(plans[lane.stream].expected_energy_j() / spec.period_s
                   for lane in lanes for spec in [self._spec(streams, lane.stream)])
        return Admitted(mode, 'partitioned', RESIDENT, tuple(lanes), plans, bounds, rate,
                        self.tick_s, tuple(gang_tasks), tuple(residents))

    @staticmethod
    def _spec(streams: Sequence[Served], name: str) -> StreamSpec:
        return next(s.spec for s in streams if s.spec.name == name)

    # -- switching -------------------------------------------------------------------------

    def with_loading(self, admitted: Admitted, load_s: float,
                     loaded: Sequence[int] = ()) -> Admitted:
        """
        Bound ``admitted`` through a switch whose model loads take ``load_s``.

        The switch happens at a tick where no job runs or waits; the loads then hold the
        devices they touch (``loaded``) for L ticks.  That is one job of C = L + 1 (it may
        start the tick a job is released) and full width at the lowest priority: it only
        blocks (strict: no lower job starts while J waits; bypass: it is not narrower than
        J), so the test with that task appended bounds every stream through the switch.  The
        same bounds hold for the steady state after it, so they are the ones published.  A
        switch that loads nothing starts the new configuration at an idle instant, which its
        own analysis already covers: no blocking job is added; nor to a partition none of
        whose devices loads (partitions do not interact; until 2026-12-07 every partition
        was given the loads of the busiest device, and most mode changes were refused).
        """
        if load_s <= 0:
            return admitted
        load_ticks = ticks_up(load_s, self.tick_s)
        groups = _groups(admitted)
        bounds = {}
        for devices, members in groups.items():
            tasks = [admitted.tasks[i] for i in members]
            if devices and not set(devices) & set(loaded):
                bounds.update((t.name, admitted.bound_ticks[t.name]) for t in tasks)
                continue
            width = len(devices) if devices else self.tpus
            loader = _loader(load_ticks, tasks, width)
            verdict = analyse([*tasks, loader], width, self.rule)
            if devices:
                exact = np_fp_response_times([*tasks, loader])
                if len(exact.response_times) >= len(verdict.response_times):
                    verdict = exact
            if len(verdict.response_times) < len(tasks):
                late = tasks[len(verdict.response_times)]
                raise refusal(late.name,
                              f'the switch to mode {admitted.mode} loads models for '
                              f'{load_s * 1e3:.2f} ms, longer than this stream can wait '
                              f'({verdict.reason})')
            bounds.update(zip((t.name for t in tasks), verdict.response_times))
        return replace(admitted, bound_ticks=bounds)

    def in_place(self, admitted: Admitted, streams: Sequence[Served], mode: str) -> Admitted:
        """
        Re-tune ``admitted`` for ``mode`` on its lanes, or raise ServingError naming a stream.

        Same lanes, partitions and widths; each stream takes the least-energy point of its
        running variant that keeps the mode's floor.  A point's C covers every stage
        whatever its thresholds (``GangPlan.wcet_s``), so when every running variant keeps
        its floor the tasks and bounds stay those of ``admitted`` and nothing is loaded.
        Under partitioned dispatch a stream whose variant falls short takes the least-energy
        option of its width in ``mode`` instead; its partition is re-planned and re-checked,
        and the caller costs the loads (``with_loading``).  Under global dispatch it is refused.
        """
        plans, short = {}, []
        for served in streams:
            name = served.spec.name
            running = admitted.plans[name]
            floor = served.spec.floor(mode, self.modes)
            keeping = [replace(running, point=p) for p in served.model.points
                       if p.variant.name == running.point.variant.name
                       and p.accuracy >= floor - _EPS]
            if keeping:
                plans[name] = min(keeping, key=lambda plan: plan.expected_energy_j())
            else:
                short.append(served)
        if not short:
            rate = sum(plans[s.spec.name].expected_energy_j() / s.spec.period_s
                       for s in streams)
            return replace(admitted, mode=mode, plans=plans, energy_rate_w=rate)
        if admitted.dispatch != 'partitioned':
            name = short[0].spec.name
            raise refusal(name, f'its variant {admitted.plans[name].point.variant.name} '
                                f'cannot keep its floor in mode {mode}')
        return self._repartition(admitted, streams, mode, plans)

    def _repartition(self, admitted: Admitted, streams: Sequence[Served], mode: str,
                     kept: dict[str, GangPlan]) -> Admitted:
        """Check ``admitted``'s partitions with ``kept`` plans and new options for the rest."""
        built, tasks = self.necessary(streams, mode)
        index = {served.spec.name: i for i, served in enumerate(streams)}
        parts: dict[tuple[int, ...], dict[int, Option]] = {}
        for lane in admitted.lanes:
            i = index[lane.stream]
            plan = kept.get(lane.stream)
            if plan is not None:  # the same point, planned alone as the options are
                option = _option(built[i][1][plan.point.label, lane.width], self.tick_s)
            else:
                option = min((o for o in tasks[i].options if o.width == lane.width),
                             key=lambda o: o.energy_per_job, default=None)
                if option is None:
                    raise refusal(lane.stream, f'no option on {lane.width} TPUs keeps its '
                                               f'floor in mode {mode}')
            parts.setdefault(lane.devices, {})[i] = option
        checks = _Checks()
        for devices, part in parts.items():
            if not self._partition(checks, built, tasks, part):
                raise refusal(streams[next(iter(part))].spec.name,
                              f'its partition (TPUs {devices[0]} to {devices[-1]}) does not '
                              f'pass in mode {mode} with the variants that keep the floors')
        return self._partitioned(streams, built, tasks, checks,
                                 [parts[devices] for devices in sorted(parts)], mode)

    # -- reasons ---------------------------------------------------------------------------

    def _check_alone(self, streams: Sequence[Served], tasks: Sequence[Stream]) -> None:
        """Refuse alone a stream with no option that meets its deadline on an empty pool."""
        for served, task in zip(streams, tasks):
            if task.admissible(self.tpus):
                continue
            fastest = min(task.options, key=lambda o: o.wcet, default=None)
            if fastest is None:
                raise refusal(served.spec.name, 'no option keeps its floor')
            raise refusal(
                served.spec.name,
                f'even its fastest option ({fastest.variant} on '
                f'{fastest.width} TPUs) needs {fastest.wcet * self.tick_s * 1e3:.2f} ms, over '
                f'its deadline less one tick ({task.deadline * self.tick_s * 1e3:.2f} ms) by '
                f'{(fastest.wcet - task.deadline) * self.tick_s * 1e3:.2f} ms')

    def _check_demand(self, streams: Sequence[Served], tasks: Sequence[Stream], mode: str) -> None:
        """
        Refuse a set whose TPU demand exceeds the pool even at every stream's least demand.

        Necessary for both dispatches (the global search refuses any configuration above
        the pool, partitions hold at most their width in demand), so it changes no verdict;
        it only spares the searches. Names the stream of the largest least demand.
        """
        least = self._least_demand(tasks)
        total = sum(least)
        if total <= self.tpus:
            return
        worst = max(range(len(tasks)), key=least.__getitem__)
        raise refusal(
            streams[worst].spec.name,
            f'the {len(streams)} streams cannot all be admitted in mode {mode}; even at their '
            f'least-demand options they need {total:.2f} TPUs of {self.tpus}, '
            f'{total - self.tpus:.2f} too many (this stream alone {least[worst]:.2f})')

    def _overshoot(self, streams: Sequence[Served], tasks: Sequence[Stream],
                   mode: str) -> tuple[str, str]:
        """Name the stream whose bound overshoots most at the fastest options, and by how much."""
        gang_tasks = []
        for task in tasks:
            fastest = min(task.admissible(self.tpus), key=lambda o: (o.wcet, o.energy_per_job))
            gang_tasks.append(GangTask(fastest.wcet, task.deadline, task.period,
                                       fastest.width, task.name))
        demand = sum(t.utilisation for t in gang_tasks)
        order = deadline_monotonic(gang_tasks)
        ordered = reorder(gang_tasks, order)
        analysis = GangAnalysis(ordered, self.tpus, self.rule)
        limit = 4 * max(t.period for t in gang_tasks)
        worst, name = 0, ordered[-1].name
        slack = [t.deadline - t.wcet for t in ordered]
        for k, task in enumerate(ordered):
            wait = analysis.start_bound(k, np.arange(k), np.asarray(slack[:k], dtype=np.int64),
                                        limit)
            over = limit if wait is None else wait + task.wcet - task.deadline
            if over > worst:
                worst, name = over, task.name
            if wait is not None:
                slack[k] = wait
        ms = worst * self.tick_s * 1e3
        return name, (f'the {len(streams)} streams cannot all be admitted in mode {mode} '
                      f'({self.rule.value} rule, {self.tpus} TPUs); at their fastest options '
                      f'its response bound exceeds its deadline by '
                      f'{"more than " if worst >= limit else ""}{ms:.2f} ms (TPU demand '
                      f'{demand:.2f} of {self.tpus})')


def refusal(stream: str, reason: str) -> ServingError:
    """Build a refusal that leads with the stream it names (and keeps the name apart)."""
    return ServingError(f'stream {stream}: {reason}', stream)


def _splits(total: int, widths: Sequence[int]) -> list[tuple[int, ...]]:
    """List the ways to cut ``total`` TPUs into partitions of ``widths`` (widest first)."""
    if total < min(widths, default=1):
        return [()]  # fewer TPUs left than any partition needs: they stay idle
    return [(w, *rest) for k, w in enumerate(widths) if w <= total
            for rest in _splits(total - w, widths[k:])]


def _limits(served: Served, widths: Optional[dict], points: Optional[dict]) -> tuple:
    """Look up a stream's restrictions in maps by stream name (None: no restriction)."""
    name = served.spec.name
    return ((widths or {}).get(name), (points or {}).get(name))


def _loader(ticks: int, tasks: Sequence[GangTask], width: int) -> GangTask:
    """
    Model loads of ``ticks`` as the job the analysis sees: C = L + 1, the whole ``width``.

    One more tick because the loads may start the tick a job is released; the deadline and
    period are far beyond the tasks' so that it takes the lowest priority and recurs never
    within a busy period.
    """
    horizon = 10 * max(t.period for t in tasks)
    return GangTask(ticks + 1, horizon, horizon, width, 'model loads')


@dataclass
class _Checks:
    """Partition verdicts of one admission, memoised by members, and the room they keep."""

    # Ticks of model loads every partition must absorb (a mode change's switch), else 0.
    reserve: int = 0
    verdicts: dict = field(default_factory=dict)


def _option(gang: GangPlan, tick_s: float) -> Option:
    """Offer a plan as an option: its point on its width, C in ticks, energy per job."""
    return Option(gang.point.label, gang.width, ticks_up(gang.wcet_s, tick_s),
                  gang.expected_energy_j(), gang.point.accuracy)


def _width(members: dict[int, Option]) -> int:
    return next(iter(members.values())).width


def _groups(admitted: Admitted) -> dict[tuple[int, ...], list[int]]:
    """Lane indices per partition (one group keyed () under global dispatch)."""
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, lane in enumerate(admitted.lanes):
        groups.setdefault(lane.devices or (), []).append(i)
    return groups


def _undominated(options: Sequence[Option]) -> list[Option]:
    """
    Drop options another of the same width makes useless: no slower and no dearer.

    Every option listed keeps the floor and the searches minimise energy, so accuracy above
    the floor decides nothing; the search loses nothing as long as the test does not reject
    a set for a shorter C (checked against the exhaustive search:
    test_pruned_options_keep_the_exhaustive_choice). Across widths this does not hold: a
    narrower, faster, cheaper option can fail the gang test where a wider one passes (that
    test finds such sets), and a wider option may join a partition a narrower one cannot.
    Of exact ties the most accurate is kept.
    """
    ranked = sorted(options, key=lambda o: (o.width, o.wcet, o.energy_per_job, -o.accuracy))
    kept: list[Option] = []
    for option in ranked:
        if not any(other.width == option.width and other.wcet <= option.wcet
                   and other.energy_per_job <= option.energy_per_job for other in kept):
            kept.append(option)
    return kept
