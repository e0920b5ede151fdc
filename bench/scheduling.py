"""
Gang scheduling on m TPUs: schedulability ratios, analysis time, validation, configuration.

1. Schedulability ratio against total TPU utilisation for m = 8, both dispatch rules: the
   pooled test (the shipped global test, deadline-monotonic and with OPA), the baseline
   test (exact knapsack, deadline-monotonic and with OPA), the test with the fractional
   knapsack, the same test without the knapsack (the baseline: every lower-priority job
   may block), and two upper envelopes for any sound test: the sets in which the
   simulator saw no deadline miss, and a necessary utilisation condition.  The sets look
   like camera streams: periods of 33 to 100 ms in 0.1 ms ticks, D in [0.8, 1] T, 4 to 16
   streams, gangs of 1 to 4 of the 8 TPUs.
2. Analysis time for 10 to 100 tasks on 8 TPUs, on sets the baseline accepts (every task
   bounded: the most work a verdict takes), pooled and baseline.
3. Validation: random sets the pooled test accepts (m from 2 to 8, widths 1..m, utilisation
   across the range, deadline-monotonic or OPA order), each simulated synchronously at
   the WCET and under random sporadic runs with early completions; any deadline miss or
   response above the bound is reported.  To show what this check can and cannot catch,
   unsound variants (the naive carry-in port, the test without blocking, the blocking
   one tick short) are validated the same way on the sets only they accept.
4. Configuration choice: exact branch and bound against the heuristic (gap, time).
5. Issue 15: the issue's population (UUniFast-discard, periods from {10, 20, 40, 50, 100},
   D uniform in [0.6, 1] T, widths uniform 1..m, 2 to 2m tasks, deadline-monotonic) at
   m = 2, 4, 8: the global tests (pooled and baseline, with and without OPA), strict
   partitioning, the job-level analysis and the exhaustive search (synchronous periodic,
   every execution time in [1, C]) for both rules, an upper bound on any sound sporadic
   test (schedulable in that search and no miss in a schedule of blocking alone,
   `validation.blocking_counterexample`; tighter, nor by a chain of one job per task,
   `validation.chain_counterexample`; tighter still, nor by a hill climbing over
   several jobs per task, `validation.search_counterexample`), and the best of what
   ships.  Every set a shipped analysis accepts, there and in a further population, is
   checked with varying execution times: exhaustively where the state budget allows,
   else by random runs.

    python bench/scheduling.py [--json OUT] [--png OUT] [--validation-sets N] [--quick]
                               [--issue-only]

The default run validates the full 10,000 sets (about 6 minutes on 2 busy cores); --quick
divides every count by 10 (under a minute).  Work is spread over --jobs processes
(default: all cores); the timing section runs alone before the pool starts.  Exit status
1 if any accepted set missed a deadline or exceeded its bound in simulation.
"""

import argparse
from concurrent.futures import ProcessPoolExecutor
import os
from pathlib import Path
import sys
import time

import _paths  # noqa: F401 - puts the repository root on sys.path
from dyn_perception.runtime.scheduling import (
    analyse, analyse_pooled, assign_priorities, choose_exact, choose_heuristic, Dispatch,
    explore, GangTask, Knapsack, partition, PooledAnalysis, validate
)
from dyn_perception.runtime.scheduling.analysis import GangAnalysis, WindowBound
from dyn_perception.runtime.scheduling.generators import random_streams, random_task_set
from dyn_perception.runtime.scheduling.naive import NaiveCarryInAnalysis
from dyn_perception.runtime.scheduling.priority import reorder
from dyn_perception.runtime.scheduling.simulator import simulate
from dyn_perception.runtime.scheduling.validation import (
    blocking_counterexample, chain_counterexample, scenarios, search_counterexample)
import numpy as np
from report import bounded, format_table, output_file, write_json

RULES = tuple(Dispatch)
TPUS = 8
UTILISATIONS = tuple(round(0.4 * k, 1) for k in range(1, 21))
HALF_LOAD = TPUS / 2
CURVES = ('pooled', 'pooled+opa', 'exact', 'exact+opa', 'fractional', 'no-knapsack')
TIMING_SIZES = tuple(range(10, 101, 10))
RATIO_PERIODS = (330, 1000)
RATIO_DEADLINES = (0.8, 1.0)
RATIO_WIDTHS = (1, 2, 3, 4)
CONFIG_SIZES = (3, 4, 6, 8)
HEURISTIC_ONLY_SIZES = (12,)
CONFIG_TPUS = 4
# Issue 15's points (m, U), population and exhaustive-search budget (states per search).
ISSUE_POINTS = ((2, 0.8), (4, 1.6), (8, 2.4), (8, 3.2))
ISSUE_PERIODS = (10, 20, 40, 50, 100)
ISSUE_DEADLINES = (0.6, 1.0)
ISSUE_BUDGET = 20_000
ISSUE_CURVES = ('pooled', 'pooled+opa', 'test', 'test+opa', 'job-level', 'exact', 'gave-up',
                'exact-not-refuted', 'exact-not-chained', 'exact-not-searched')
# Validation work is dealt out in chunks with their own seeds: same numbers for any --jobs.
CHUNK = 250


def necessary(tasks: tuple[GangTask, ...], tpus: int) -> bool:
    """U <= m, and gangs wider than m / 2 never run two at a time, so their U/m <= 1."""
    wide = sum(task.wcet / task.period for task in tasks if 2 * task.width > tpus)
    return sum(task.utilisation for task in tasks) <= tpus and wide <= 1


def ratio_point(args: tuple[int, float, int]) -> dict:
    """Count the sets every curve accepts at one utilisation."""
    seed, utilisation, sets = args
    rng = np.random.default_rng(seed)
    counts = {'necessary': 0, **{f'{rule.value}/{curve}': 0 for rule in RULES
                                 for curve in (*CURVES, 'no-miss-seen')}}
    for _ in range(sets):
        tasks = random_task_set(rng, TPUS, int(rng.integers(4, 17)), utilisation,
                                periods=RATIO_PERIODS, deadline_ratio=RATIO_DEADLINES,
                                widths=RATIO_WIDTHS)
        counts['necessary'] += necessary(tasks, TPUS)
        for rule in RULES:
            counts[f'{rule.value}/no-miss-seen'] += all(
                not any(simulate(tasks, TPUS, rule, releases, execution).misses)
                for releases, execution in scenarios(tasks, rng))
            pooled = bool(analyse_pooled(tasks, TPUS, rule))
            counts[f'{rule.value}/pooled'] += pooled
            counts[f'{rule.value}/pooled+opa'] += pooled or bool(
                assign_priorities(tasks, TPUS, rule, test=PooledAnalysis).verdict)
            exact = bool(analyse(tasks, TPUS, rule))
            counts[f'{rule.value}/exact'] += exact
            counts[f'{rule.value}/exact+opa'] += exact or bool(
                assign_priorities(tasks, TPUS, rule).verdict)
            counts[f'{rule.value}/fractional'] += bool(
                analyse(tasks, TPUS, rule, Knapsack.FRACTIONAL))
            counts[f'{rule.value}/no-knapsack'] += bool(analyse(tasks, TPUS, rule, Knapsack.NONE))
    return {'utilisation': utilisation, 'sets': sets, **counts}


def timing(sets_per_size: int, seed: int) -> dict:
    """Median and worst ms per verdict, on sets the baseline accepts, per test, size, rule."""
    rng = np.random.default_rng(seed)
    result = {}
    for rule in RULES:
        for size in TIMING_SIZES:
            times: dict[str, list[float]] = {'baseline': [], 'pooled': []}
            while len(times['baseline']) < sets_per_size:
                tasks = random_task_set(rng, TPUS, size, 0.5, periods=(1000, 3000),
                                        deadline_ratio=(0.8, 1.0))
                start = time.perf_counter()
                verdict = analyse(tasks, TPUS, rule)
                elapsed = time.perf_counter() - start
                if verdict:
                    times['baseline'].append(1e3 * elapsed)
                    start = time.perf_counter()
                    analyse_pooled(tasks, TPUS, rule)
                    times['pooled'].append(1e3 * (time.perf_counter() - start))
            for test, values in times.items():
                result[(test, rule.value, size)] = (float(np.median(values)),
                                                    float(np.max(values)))
    return result


class WithoutBlocking(GangAnalysis):
    """Mutant for the power check: forgets the jobs running at the release (unsound)."""

    def _blocking(self, blocking: np.ndarray, busy: int) -> WindowBound:
        return lambda length: 0


class BlockingOneShort(GangAnalysis):
    """Mutant for the power check: a blocking job leaves C - 2 ticks (unsound by one)."""

    started_before = 2


# Unsound variants validated on the sets only they accept: what the check can catch.
MUTANTS = {'naive_carry_in': NaiveCarryInAnalysis, 'no_blocking': WithoutBlocking,
           'blocking_one_short': BlockingOneShort}


def validation_chunk(args: tuple[int, int, str | None]) -> dict:
    """Draw sets until `wanted` are accepted, simulate each against its bounds."""
    seed, wanted, mutant = args
    rng = np.random.default_rng(seed)
    tally = {'sets': 0, 'opa_sets': 0, 'runs': 0, 'jobs': 0, 'missed_sets': 0,
             'overrun_sets': 0, 'unsound_sets': 0, 'drawn': 0, 'ratio_sum': 0.0,
             'ratio_count': 0, 'worst_ratio': 0.0, 'examples': []}
    while tally['sets'] < wanted:
        rule = RULES[tally['drawn'] % 2]
        tally['drawn'] += 1
        tpus = int(rng.integers(2, 9))
        tasks = random_task_set(rng, tpus, int(rng.integers(2, 2 * tpus + 1)),
                                rng.uniform(0.05, 0.8) * tpus)
        if mutant is not None:
            if analyse(tasks, tpus, rule):
                continue
            verdict = MUTANTS[mutant](tasks, tpus, rule).verdict()
        else:
            verdict = analyse_pooled(tasks, tpus, rule)
        if mutant is None and not verdict:
            assignment = assign_priorities(tasks, tpus, rule, test=PooledAnalysis)
            verdict = assignment.verdict
            tasks = reorder(tasks, assignment.order)
            tally['opa_sets'] += bool(verdict)
        if not verdict:
            continue
        outcome = validate(tasks, tpus, rule, verdict.response_times, rng)
        tally['sets'] += 1
        tally['runs'] += outcome.runs
        tally['jobs'] += outcome.jobs
        tally['missed_sets'] += outcome.misses > 0
        tally['overrun_sets'] += outcome.overruns > 0
        tally['unsound_sets'] += not outcome.sound
        tally['ratio_sum'] += sum(outcome.ratios)
        tally['ratio_count'] += len(outcome.ratios)
        tally['worst_ratio'] = max(tally['worst_ratio'], max(outcome.ratios))
        if not outcome.sound and len(tally['examples']) < 3:
            tally['examples'].append((rule.value, tpus, tasks, verdict.response_times))
    return tally


def issue_set(rng: np.random.Generator, tpus: int, utilisation: float) -> tuple[GangTask, ...]:
    """One set of issue 15's population."""
    return random_task_set(rng, tpus, int(rng.integers(2, 2 * tpus + 1)), utilisation,
                           deadline_ratio=ISSUE_DEADLINES, period_choices=ISSUE_PERIODS)


def check_partitions(tasks: tuple[GangTask, ...], verdict, rng: np.random.Generator,
                     budget: int) -> tuple[bool, str]:
    """Search every partition alone (its tasks widened to it); random runs past the budget."""
    method = 'exhaustive'
    for part in verdict.partitions:
        members = [GangTask(tasks[i].wcet, tasks[i].deadline, tasks[i].period, part.width)
                   for i in part.tasks]
        found = explore(members, part.width, Dispatch.STRICT, budget=budget)
        if found.status == 'gave-up':
            method = 'random'
            if not validate(members, part.width, Dispatch.STRICT, part.response_times,
                            rng).sound:
                return False, method
        elif not found.schedulable or any(
                w > r for w, r in zip(found.worst_response, part.response_times)):
            return False, method
    return True, method


def check_global(tasks: tuple[GangTask, ...], tpus: int, rule: Dispatch, bounds,
                 found, rng: np.random.Generator) -> tuple[bool, str]:
    """Check an accepted global verdict by the exhaustive search, or random runs past it."""
    if found.status == 'gave-up':
        return validate(tasks, tpus, rule, bounds, rng).sound, 'random'
    return (found.schedulable and all(w <= r for w, r in zip(found.worst_response, bounds)),
            'exhaustive')


def judge_set(tasks: tuple[GangTask, ...], tpus: int, rng: np.random.Generator,
              budget: int, upper: bool = True) -> tuple[dict, dict]:
    """
    Every shipped analysis and the exhaustive search on one set; check what accepts.

    `upper`: also search the counter-examples of the upper bounds (the table needs them,
    the further varying-exec population does not).
    """
    accepted: dict[str, bool] = {}
    checks = {'checked': 0, 'unsound': 0, 'exhaustive': 0, 'random': 0}
    verdicts = []
    refuted = blocking_counterexample(tasks, tpus) is not None
    for rule in RULES:
        found = explore(tasks, tpus, rule, budget=budget)
        # The pooled test and the baseline ('test'), in deadline-monotonic order and OPA's.
        # A baseline verdict in the deadline-monotonic order needs no check of its own:
        # the pooled test then accepts too, with bounds no larger.
        for name, test in (('pooled', PooledAnalysis), ('test', GangAnalysis)):
            verdict = test(tasks, tpus, rule).verdict()
            accepted[f'{rule.value}/{name}'] = bool(verdict)
            accepted[f'{rule.value}/{name}+opa'] = bool(verdict)
            if verdict and name == 'pooled':
                verdicts.append((tasks, rule, verdict.response_times, found))
            elif not verdict:
                assignment = assign_priorities(tasks, tpus, rule, test=test)
                if assignment.verdict:
                    accepted[f'{rule.value}/{name}+opa'] = True
                    verdicts.append((reorder(tasks, assignment.order), rule,
                                     assignment.verdict.response_times, None))
        # On synchronous periodic releases the job-level analysis is this very search
        # (its fallback, the sporadic test, is counted as 'test').
        accepted[f'{rule.value}/job-level'] = found.schedulable
        accepted[f'{rule.value}/exact'] = found.schedulable
        accepted[f'{rule.value}/gave-up'] = found.status == 'gave-up'
        # An upper bound on any sound sporadic test in this order: schedulable in the
        # synchronous search and no schedule of blocking alone misses.
        accepted[f'{rule.value}/exact-not-refuted'] = found.schedulable and not refuted
        # Tighter: nor by a chain of one job per task (bypass starvation, hp jobs behind
        # blockers), each witness simulated (`validation.chain_counterexample`).
        accepted[f'{rule.value}/exact-not-chained'] = (
            upper and found.schedulable and not refuted
            and chain_counterexample(tasks, tpus, rule) is None)
        # Tighter still: nor by the hill climbing over several jobs per task (seeded, so
        # the shared generator and with it the population stay as they were).  Where the
        # pooled test accepts, a witness would be a soundness failure: counted apart.
        witness = (search_counterexample(tasks, tpus, rule)
                   if accepted[f'{rule.value}/exact-not-chained'] else None)
        accepted[f'{rule.value}/exact-not-searched'] = (
            accepted[f'{rule.value}/exact-not-chained'] and witness is None)
        accepted[f'{rule.value}/search-refutes-pooled'] = (
            witness is not None and accepted[f'{rule.value}/pooled'])
    split = partition(tasks, tpus)
    accepted['partitioned'] = bool(split)
    for ordered, rule, bounds, found in verdicts:
        if found is None:
            found = explore(ordered, tpus, rule, budget=budget)
        sound, method = check_global(ordered, tpus, rule, bounds, found, rng)
        checks['checked'] += 1
        checks['unsound'] += not sound
        checks[method] += 1
    if split:
        sound, method = check_partitions(tasks, split, rng, budget)
        checks['checked'] += 1
        checks['unsound'] += not sound
        checks[method] += 1
    sporadic = [accepted[f'{rule.value}/{name}+opa'] for rule in RULES
                for name in ('pooled', 'test')] + [accepted['partitioned']]
    accepted['best-sporadic'] = any(sporadic)
    accepted['best'] = any(sporadic) or any(accepted[f'{rule.value}/job-level']
                                            for rule in RULES)
    return accepted, checks


def issue_point(args: tuple[int, int, float, int, int]) -> dict:
    """Count what every curve accepts at one (m, U) point, and check the accepted sets."""
    seed, tpus, utilisation, sets, budget = args
    rng = np.random.default_rng(seed)
    counts: dict = {'tpus': tpus, 'utilisation': utilisation, 'sets': sets}
    checks = {'checked': 0, 'unsound': 0, 'exhaustive': 0, 'random': 0, 'sets_checked': 0}
    for _ in range(sets):
        accepted, checked = judge_set(issue_set(rng, tpus, utilisation), tpus, rng, budget)
        for key, value in accepted.items():
            counts[key] = counts.get(key, 0) + value
        for key, value in checked.items():
            checks[key] += value
        checks['sets_checked'] += checked['checked'] > 0
    counts['checks'] = checks
    return counts


def varying_chunk(args: tuple[int, int, int]) -> dict:
    """Draw issue-15 sets at random m and U until `wanted` are accepted by something; check."""
    seed, wanted, budget = args
    rng = np.random.default_rng(seed)
    checks = {'checked': 0, 'unsound': 0, 'exhaustive': 0, 'random': 0, 'sets_checked': 0}
    while checks['sets_checked'] < wanted:
        tpus = int(rng.choice([2, 4, 8]))
        _, checked = judge_set(issue_set(rng, tpus, rng.uniform(0.1, 0.7) * tpus), tpus, rng,
                               budget, upper=False)
        for key, value in checked.items():
            checks[key] += value
        checks['sets_checked'] += checked['checked'] > 0
    return checks


class WithoutJointStage(PooledAnalysis):
    """The pooled test before its joint stage (P8 to P10): the reference for new verdicts."""

    joint_stage = False


def newly_accepted_chunk(args: tuple[int, int, int]) -> dict:
    """
    Draw issue-15 sets until `wanted` verdicts only the joint stage accepts; check each.

    m in {2, 4, 8}, U uniform in [0.25, 0.6] m, both rules: the exhaustive search with
    every execution time in [1, C], synchronous and with random offsets (no miss, no
    response above the bound; over budget: not counted), and the random runs of `validate`.
    """
    seed, wanted, budget = args
    rng = np.random.default_rng(seed)
    tally = {'new': 0, 'drawn': 0, 'searched': 0, 'gave_up': 0, 'unsound': 0}
    while tally['new'] < wanted:
        tpus = int(rng.choice([2, 4, 8]))
        tasks = issue_set(rng, tpus, rng.uniform(0.25, 0.6) * tpus)
        tally['drawn'] += 1
        for rule in RULES:
            verdict = PooledAnalysis(tasks, tpus, rule).verdict()
            if not verdict or WithoutJointStage(tasks, tpus, rule).verdict():
                continue
            tally['new'] += 1
            tally[f'{tpus}/{rule.value}'] = tally.get(f'{tpus}/{rule.value}', 0) + 1
            bounds = verdict.response_times
            sound = validate(tasks, tpus, rule, bounds, rng).sound
            for offsets in (None, [int(rng.integers(0, task.period)) for task in tasks]):
                extra = {} if offsets is None else {'offsets': offsets,
                                                    'jitter': [0] * len(tasks)}
                found = explore(tasks, tpus, rule, budget=budget, **extra)
                tally['gave_up'] += found.status == 'gave-up'
                tally['searched'] += found.status != 'gave-up'
                sound &= found.status != 'miss' and (not found.schedulable or all(
                    w <= b for w, b in zip(found.worst_response, bounds)))
            tally['unsound'] += not sound
    return tally


def report_issue(points: list[dict], varying: dict) -> dict:
    """Print the issue's ratio table; return its flat keys."""
    columns = [f'{rule.value}/{curve}' for curve in ISSUE_CURVES for rule in RULES]
    columns += ['partitioned', 'best-sporadic', 'best']
    print()
    print(format_table(['m', 'U', *columns],
                       [[p['tpus'], p['utilisation'], *(p.get(c, 0) / p['sets'] for c in columns)]
                        for p in points]))
    keys = {}
    for p in points:
        tag = f'm{p["tpus"]}_u{round(10 * p["utilisation"])}'
        for rule in RULES:
            # The shipped global test is the pooled one; the baseline keeps its own keys.
            keys[f'accept_{tag}_{rule.value}'] = p[f'{rule.value}/pooled'] / p['sets']
            keys[f'accept_{tag}_{rule.value}_opa'] = p[f'{rule.value}/pooled+opa'] / p['sets']
            keys[f'accept_{tag}_{rule.value}_baseline'] = p[f'{rule.value}/test'] / p['sets']
            keys[f'accept_{tag}_{rule.value}_baseline_opa'] = (p[f'{rule.value}/test+opa']
                                                               / p['sets'])
            keys[f'upper_{tag}_{rule.value}'] = (p[f'{rule.value}/exact-not-refuted']
                                                 / p['sets'])
            keys[f'upper_chain_{tag}_{rule.value}'] = (p[f'{rule.value}/exact-not-chained']
                                                       / p['sets'])
            keys[f'upper_search_{tag}_{rule.value}'] = (p[f'{rule.value}/exact-not-searched']
                                                        / p['sets'])
            keys[f'exact_{tag}_{rule.value}'] = p[f'{rule.value}/exact'] / p['sets']
            keys[f'gave_up_{tag}_{rule.value}'] = p[f'{rule.value}/gave-up'] / p['sets']
        keys[f'accept_{tag}_partitioned'] = p['partitioned'] / p['sets']
        keys[f'accept_{tag}_best_sporadic'] = p['best-sporadic'] / p['sets']
        keys[f'accept_{tag}_best'] = p['best'] / p['sets']
    total = {key: varying[key] + sum(p['checks'][key] for p in points) for key in varying}
    # Accepted sets in which the counter-example search found a miss (sound: 0).
    keys['search_refuted_accepted'] = sum(p[f'{rule.value}/search-refutes-pooled']
                                          for p in points for rule in RULES)
    keys['varying_exec_validated_sets'] = total['sets_checked']
    keys['misses_on_accepted_varying'] = total['unsound']
    keys['varying_exec_verdicts_checked'] = total['checked']
    keys['varying_exec_exhaustive_share'] = total['exhaustive'] / max(1, total['checked'])
    return keys


def merge_counts(tallies: list[dict]) -> dict:
    """Add up integer tallies key by key (a key missing from a tally counts 0)."""
    keys = dict.fromkeys(key for tally in tallies for key in tally)
    return {key: sum(tally.get(key, 0) for tally in tallies) for key in keys}


def merge(tallies: list[dict]) -> dict:
    """Add up the chunks' tallies."""
    total = {key: sum(t[key] for t in tallies) for key in tallies[0]
             if key not in ('worst_ratio', 'examples')}
    total['worst_ratio'] = max(t['worst_ratio'] for t in tallies)
    total['examples'] = [e for t in tallies for e in t['examples']][:3]
    return total


def configuration_case(args: tuple[int, int, bool]) -> dict:
    """Exact and heuristic on one random instance (heuristic only when `exact` is False)."""
    seed, size, exact = args
    rng = np.random.default_rng(seed)
    # The same total load whatever the stream count.
    streams = random_streams(rng, size, CONFIG_TPUS, load=float(rng.uniform(1.2, 2.4)) / size)
    rule = RULES[seed % 2]
    case = {'size': size}
    for name, choose in (('exact', choose_exact), ('heuristic', choose_heuristic)):
        if name == 'exact' and not exact:
            continue
        start = time.perf_counter()
        selection = choose(streams, CONFIG_TPUS, rule)
        case[f'{name}_seconds'] = time.perf_counter() - start
        case[f'{name}_rate'] = (None if selection.configuration is None
                                else selection.configuration.energy_rate)
    return case


def report_ratios(ratios: list[dict]) -> dict:
    """Print the ratio table; the knapsack's gain over the baseline at U = m / 2 and at best."""
    columns = ('no-miss-seen', *CURVES)
    print()
    print(format_table(
        ['U', 'necessary', *(f'{rule.value[:6]}/{curve}' for rule in RULES for curve in columns)],
        [[p['utilisation'], p['necessary'] / p['sets'],
          *(p[f'{rule.value}/{curve}'] / p['sets'] for rule in RULES for curve in columns)]
         for p in ratios]))

    def gain(point: dict, rule: Dispatch) -> float:
        return (point[f'{rule.value}/exact'] - point[f'{rule.value}/no-knapsack']) / point['sets']

    half = next(p for p in ratios if p['utilisation'] == HALF_LOAD)

    def pooled_gain(point: dict, rule: Dispatch) -> float:
        return (point[f'{rule.value}/pooled'] - point[f'{rule.value}/exact']) / point['sets']

    keys = {'ratio_gain_vs_baseline_at_half_load':
            float(np.mean([gain(half, rule) for rule in RULES]))}
    for rule in RULES:
        best = max(ratios, key=lambda point: gain(point, rule))
        keys[f'ratio_gain_vs_baseline_at_half_load_{rule.value}'] = gain(half, rule)
        keys[f'ratio_gain_vs_baseline_peak_{rule.value}'] = gain(best, rule)
        keys[f'ratio_gain_vs_baseline_peak_{rule.value}_at_u'] = best['utilisation']
        top = max(ratios, key=lambda point: pooled_gain(point, rule))
        keys[f'ratio_gain_pooled_vs_baseline_peak_{rule.value}'] = pooled_gain(top, rule)
        keys[f'ratio_gain_pooled_vs_baseline_peak_{rule.value}_at_u'] = top['utilisation']
        for curve in columns:
            keys[f'ratio_at_half_load_{rule.value}_{curve}'] = (
                half[f'{rule.value}/{curve}'] / half['sets'])
    return keys


def report_validation(checked: dict, mutants: dict[str, dict]) -> dict:
    """Print the validation table (shipped test and unsound variants), any counter-example."""
    print()
    print(format_table(
        ['validated', 'sets', 'via OPA', 'runs', 'jobs', 'sets with miss', 'sets over bound',
         'mean obs/bound', 'max obs/bound'],
        [[name, tally['sets'], tally['opa_sets'], tally['runs'], tally['jobs'],
          tally['missed_sets'], tally['overrun_sets'],
          tally['ratio_sum'] / tally['ratio_count'], tally['worst_ratio']]
         for name, tally in (('shipped test', checked), *mutants.items())]))
    for example in checked['examples']:
        print('COUNTER-EXAMPLE to the shipped test:', example)
    for name, tally in mutants.items():
        if tally['examples']:
            print(f'first counter-example to {name}:', tally['examples'][0])
    return {'validated_jobs': checked['jobs'], 'validated_runs': checked['runs'],
            'validated_via_opa': checked['opa_sets'],
            'mean_observed_over_bound': checked['ratio_sum'] / checked['ratio_count'],
            **{f'power_{name}': tally['unsound_sets'] / tally['sets']
               for name, tally in mutants.items()}}


def report_configurations(configs: list[dict]) -> dict:
    """Print exact against heuristic per stream count; the gap over the instances both solved."""
    rows = []
    for size in CONFIG_SIZES + HEURISTIC_ONLY_SIZES:
        cases = [c for c in configs if c['size'] == size]
        row = [size, len(cases), sum(c['heuristic_rate'] is not None for c in cases),
               float(np.mean([c['heuristic_seconds'] for c in cases]))]
        if size in CONFIG_SIZES:
            gaps = [c['heuristic_rate'] / c['exact_rate'] - 1 for c in cases
                    if c['exact_rate'] and c['heuristic_rate']]
            row += [sum(c['exact_rate'] is not None for c in cases),
                    float(np.mean([c['exact_seconds'] for c in cases])),
                    float(np.mean(gaps)) if gaps else 0.0, float(max(gaps, default=0.0))]
        else:
            row += ['-', '-', '-', '-']
        rows.append(row)
    print()
    print(format_table(['streams', 'cases', 'heur found', 'heur s', 'exact found', 'exact s',
                        'mean gap', 'max gap'], rows))
    exact_cases = [c for c in configs if c['size'] in CONFIG_SIZES]
    gaps = [c['heuristic_rate'] / c['exact_rate'] - 1 for c in exact_cases
            if c['exact_rate'] and c['heuristic_rate']]
    return {'heuristic_mean_gap': float(np.mean(gaps)) if gaps else 0.0,
            'heuristic_max_gap': float(max(gaps, default=0.0)),
            'heuristic_found_of_exact': sum(c['heuristic_rate'] is not None for c in exact_cases)
            / max(1, sum(c['exact_rate'] is not None for c in exact_cases)),
            'exact_mean_seconds': float(np.mean([c['exact_seconds'] for c in exact_cases])),
            'heuristic_mean_seconds_same_cases': float(np.mean(
                [c['heuristic_seconds'] for c in exact_cases]))}


def plot(path: str, ratios: list[dict], times: dict, configs: list[dict]) -> None:
    """Ratio curves for both rules, analysis time, configuration gap."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(2, 2, figsize=(12, 9))
    utilisations = [point['utilisation'] for point in ratios]
    for axis, rule in zip(axes[0], RULES):
        axis.plot(utilisations, [p['necessary'] / p['sets'] for p in ratios], 'k:',
                  label='necessary condition')
        axis.plot(utilisations, [p[f'{rule.value}/no-miss-seen'] / p['sets'] for p in ratios],
                  'k-', alpha=0.4, label='no miss seen in simulation')
        for curve, style in zip(CURVES, ('-', '--', '-', '--', '-.', ':')):
            axis.plot(utilisations, [p[f'{rule.value}/{curve}'] / p['sets'] for p in ratios],
                      style, marker='.', label=curve)
        axis.set(title=f'{rule.value} dispatch, m = {TPUS}', xlabel='total TPU utilisation',
                 ylabel='accepted fraction', ylim=(-0.02, 1.02))
        axis.legend()
    for test in ('pooled', 'baseline'):
        for rule in RULES:
            axes[1][0].plot(TIMING_SIZES, [times[(test, rule.value, n)][0] for n in TIMING_SIZES],
                            marker='o', label=f'{test}, {rule.value} (median)')
    axes[1][0].axhline(100, color='grey', linestyle=':', label='target 100 ms')
    axes[1][0].set(title='analysis time, accepted sets, m = 8', xlabel='tasks', ylabel='ms')
    axes[1][0].legend()
    sizes = sorted({case['size'] for case in configs})
    axis = axes[1][1]
    axis.plot(sizes, [np.mean([c['heuristic_seconds'] for c in configs if c['size'] == n])
                      for n in sizes], marker='o', label='heuristic')
    exact_sizes = [n for n in sizes if any('exact_seconds' in c and c['size'] == n
                                           for c in configs)]
    axis.plot(exact_sizes, [np.mean([c['exact_seconds'] for c in configs
                                     if c['size'] == n and 'exact_seconds' in c])
                            for n in exact_sizes], marker='s', label='exact (B&B)')
    axis.set(title=f'configuration choice, {CONFIG_TPUS} TPUs', xlabel='streams',
             ylabel='mean seconds', yscale='log')
    axis.legend()
    figure.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    print(f'wrote {path}')


def plot_issue(path: str, points: list[dict]) -> None:
    """Plot the accepted fraction per analysis at issue 15's points, both rules."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    labels = [f'm={p["tpus"]}\nU={p["utilisation"]}' for p in points]
    curves = [f'{rule.value}/{curve}' for rule in RULES
              for curve in ('test', 'pooled', 'pooled+opa', 'exact-not-searched', 'exact')]
    curves += ['partitioned', 'best-sporadic', 'best']
    figure, axis = plt.subplots(figsize=(12, 5))
    width = 0.8 / len(curves)
    for k, curve in enumerate(curves):
        axis.bar(np.arange(len(points)) + (k - len(curves) / 2) * width,
                 [p.get(curve, 0) / p['sets'] for p in points], width, label=curve)
    axis.set_xticks(np.arange(len(points)), labels)
    axis.set(ylabel='accepted fraction', ylim=(0, 1.05),
             title='issue 15 population: global tests (baseline, pooled), upper bound for '
                   'sporadic, exhaustive (synchronous periodic = job-level), best of shipped')
    axis.legend(ncol=3, fontsize='small')
    figure.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    print(f'wrote {path}')


def issue_section(pool: ProcessPoolExecutor, args: argparse.Namespace) -> tuple[list, dict]:
    """Issue 15's table and the further varying-exec population, on the pool."""
    points = list(pool.map(issue_point, [
        (args.seed + 20_000 + i, m, u, args.issue_sets, args.exhaustive_budget)
        for i, (m, u) in enumerate(ISSUE_POINTS)]))
    varying_sizes = [CHUNK // 5] * (args.varying_sets // (CHUNK // 5))
    if args.varying_sets % (CHUNK // 5):
        varying_sizes.append(args.varying_sets % (CHUNK // 5))
    varying = merge_counts(list(pool.map(varying_chunk, [
        (args.seed + 30_000 + i, size, args.exhaustive_budget)
        for i, size in enumerate(varying_sizes)])))
    return points, varying


def issue_only(args: argparse.Namespace, times: dict, began: float) -> int:
    """Run `--issue-only`: the timing (done), the issue-15 section; write its keys."""
    with ProcessPoolExecutor(args.jobs) as pool:
        points, varying = issue_section(pool, args)
        sizes = [50] * (args.newly_accepted // 50) + (
            [args.newly_accepted % 50] if args.newly_accepted % 50 else [])
        fresh = merge_counts(list(pool.map(newly_accepted_chunk, [
            (args.seed + 40_000 + i, size, args.exhaustive_budget)
            for i, size in enumerate(sizes)]))) if sizes else {}
    issue_keys = report_issue(points, varying)
    if fresh:
        issue_keys.update({f'joint_new_{key.replace("/", "_")}': value
                           for key, value in fresh.items()})
        print('only the joint stage accepts:', fresh)
    results = {
        'analysis_ms_100_tasks': max(times[('pooled', rule.value, 100)][0] for rule in RULES),
        'analysis_ms_100_tasks_baseline': max(times[('baseline', rule.value, 100)][0]
                                              for rule in RULES),
        **issue_keys, 'bench_seconds': time.perf_counter() - began, 'issue_points': points,
        'analysis_ms': {f'{test}/{rule}/{size}': value
                        for (test, rule, size), value in times.items()}}
    print(f'analysis_ms_100_tasks={results["analysis_ms_100_tasks"]:.1f} '
          f'(baseline {results["analysis_ms_100_tasks_baseline"]:.1f}) '
          f'misses_on_accepted_varying={issue_keys["misses_on_accepted_varying"]} '
          f'({results["bench_seconds"]:.0f} s)')
    plot_issue(str(Path(args.png).with_name(Path(args.png).stem + '_issue15.png')), points)
    write_json(args.json, results)
    return 0 if (issue_keys['misses_on_accepted_varying'] == 0 and not fresh.get('unsound')
                 and issue_keys['search_refuted_accepted'] == 0) else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    COUNT = bounded(int, 1)  # noqa: N806 - one check for every count below
    parser.add_argument('--json', type=output_file, default='out/bench/scheduling.json',
                        help='results file')
    parser.add_argument('--png', type=output_file, default='out/bench/scheduling.png',
                        help='figure file')
    parser.add_argument('--validation-sets', type=COUNT, default=10_000,
                        help='accepted sets to simulate (the issue asks for 10,000)')
    parser.add_argument('--mutant-sets', type=COUNT, default=500,
                        help='sets only an unsound variant accepts, simulated against it')
    parser.add_argument('--ratio-sets', type=COUNT, default=200, help='sets per utilisation')
    parser.add_argument('--timing-sets', type=COUNT, default=20, help='accepted sets per size')
    parser.add_argument('--config-cases', type=COUNT, default=30, help='instances per size')
    parser.add_argument('--issue-sets', type=COUNT, default=200,
                        help='sets per point of the issue-15 ratio table')
    parser.add_argument('--varying-sets', type=COUNT, default=1800,
                        help='further accepted sets checked with varying execution times')
    parser.add_argument('--exhaustive-budget', type=COUNT, default=ISSUE_BUDGET,
                        help='states per exhaustive search before random runs take over')
    parser.add_argument('--quick', action='store_true', help='a smoke run: 10x fewer sets')
    parser.add_argument('--newly-accepted', type=bounded(int, 0), default=0,
                        help='verdicts only the joint stage gives, checked (with --issue-only)')
    parser.add_argument('--issue-only', action='store_true',
                        help='only the timing, the issue-15 table and the varying-exec checks')
    parser.add_argument('--jobs', type=COUNT, default=os.cpu_count() or 1)
    parser.add_argument('--seed', type=int, default=2026)
    args = parser.parse_args()
    if args.quick:
        for name in ('validation_sets', 'mutant_sets', 'ratio_sets', 'timing_sets',
                     'config_cases', 'issue_sets', 'varying_sets'):
            setattr(args, name, max(2, getattr(args, name) // 10))
    began = time.perf_counter()

    times = timing(args.timing_sets, args.seed)
    print(format_table(['test, rule', *map(str, TIMING_SIZES)],
                       [[f'{test} {rule.value} median/max ms',
                         *(f'{times[(test, rule.value, n)][0]:.1f}/'
                           f'{times[(test, rule.value, n)][1]:.1f}' for n in TIMING_SIZES)]
                        for test in ('pooled', 'baseline') for rule in RULES]))

    def chunks(total: int, offset: int,
               mutant: str | None) -> list[tuple[int, int, str | None]]:
        sizes = [CHUNK] * (total // CHUNK) + ([total % CHUNK] if total % CHUNK else [])
        return [(args.seed + offset + i, size, mutant) for i, size in enumerate(sizes)]

    if args.issue_only:
        return issue_only(args, times, began)

    with ProcessPoolExecutor(args.jobs) as pool:
        ratios = list(pool.map(ratio_point, [(args.seed + 100 + i, u, args.ratio_sets)
                                             for i, u in enumerate(UTILISATIONS)]))
        checked = merge(list(pool.map(validation_chunk,
                                      chunks(args.validation_sets, 1000, None))))
        mutants = {name: merge(list(pool.map(validation_chunk,
                                             chunks(args.mutant_sets, 5000 + 1000 * i, name))))
                   for i, name in enumerate(MUTANTS)}
        points, varying = issue_section(pool, args)
        configs = list(pool.map(configuration_case, [
            (args.seed + 9000 + 100 * size + i, size, size in CONFIG_SIZES)
            for size in CONFIG_SIZES + HEURISTIC_ONLY_SIZES for i in range(args.config_cases)]))

    summary = {
        'validated_sets': checked['sets'],
        'misses_on_accepted': checked['missed_sets'],
        'overruns_on_accepted': checked['overrun_sets'],
        # The shipped global test (pooled); the baseline's beside it.
        'analysis_ms_100_tasks': max(times[('pooled', rule.value, 100)][0] for rule in RULES),
        'analysis_ms_100_tasks_baseline': max(times[('baseline', rule.value, 100)][0]
                                              for rule in RULES),
    }
    ratio_keys = report_ratios(ratios)
    validation_keys = report_validation(checked, mutants)
    config_keys = report_configurations(configs)
    issue_keys = report_issue(points, varying)
    results = {**summary, **issue_keys, **ratio_keys, **validation_keys, **config_keys,
               'bench_seconds': time.perf_counter() - began, 'ratios': ratios,
               'issue_points': points,
               'analysis_ms': {f'{test}/{rule}/{size}': value
                               for (test, rule, size), value in times.items()}}
    print()
    print(f'validated_sets={results["validated_sets"]} '
          f'misses_on_accepted={results["misses_on_accepted"]} '
          f'overruns_on_accepted={results["overruns_on_accepted"]} '
          f'analysis_ms_100_tasks={results["analysis_ms_100_tasks"]:.1f} '
          f'ratio_gain_vs_baseline_at_half_load='
          f'{results["ratio_gain_vs_baseline_at_half_load"]:.3f} '
          f'({results["bench_seconds"]:.0f} s)')
    plot(args.png, ratios, times, configs)
    plot_issue(str(Path(args.png).with_name(Path(args.png).stem + '_issue15.png')), points)
    write_json(args.json, results)
    return 0 if checked['unsound_sets'] == 0 and issue_keys['misses_on_accepted_varying'] == 0 \
        else 1


if __name__ == '__main__':
    sys.exit(main())
