"""
Random task sets, shared by the tests and the benchmark so both draw from one population.

Per-task TPU utilisations come from UUniFast (Bini and Buttazzo), which samples the simplex
uniformly; a draw with some C > D is thrown away and redrawn (UUniFast-discard), which
keeps the population unbiased at the cost of a few retries.
"""

import math
from typing import Sequence

import numpy as np

from .configuration import Option, Stream
from .priority import deadline_monotonic, reorder
from .tasks import GangTask, SchedulingError

# Draws before giving up: running out means a (nearly) impossible request, such as a
# utilisation close to m shared by a few tasks.
_MAX_ATTEMPTS = 1000


def uunifast(rng: np.random.Generator, count: int, total: float) -> np.ndarray:
    """`count` non-negative shares summing to `total`, uniform over the simplex."""
    shares = np.empty(count)
    remaining = total
    for i in range(count - 1):
        following = remaining * rng.random() ** (1.0 / (count - 1 - i))
        shares[i] = remaining - following
        remaining = following
    shares[-1] = remaining
    return shares


def random_task_set(rng: np.random.Generator, tpus: int, count: int, utilisation: float,
                    periods: tuple[int, int] = (10, 100),
                    deadline_ratio: tuple[float, float] = (0.5, 1.0),
                    widths: Sequence[int] | None = None,
                    period_choices: Sequence[int] | None = None) -> tuple[GangTask, ...]:
    """
    `count` gang tasks of total TPU utilisation about `utilisation`, deadline-monotonic.

    Periods are log-uniform in `periods` (ticks), deadlines uniform in deadline_ratio * T,
    widths uniform over `widths` (default 1..tpus); C = max(1, round(u T / m)) must be <= D.
    With `period_choices` the periods are drawn uniformly from them instead (issue 15's
    population: {10, 20, 40, 50, 100}, a hyperperiod of 200 the exhaustive search can take).
    """
    choices = np.arange(1, tpus + 1) if widths is None else np.asarray(widths)
    for _ in range(_MAX_ATTEMPTS):
        shares = uunifast(rng, count, utilisation)
        width = rng.choice(choices, size=count)
        if period_choices is None:
            period = np.rint(np.exp(rng.uniform(*np.log(periods), size=count))).astype(int)
        else:
            period = rng.choice(np.asarray(period_choices), size=count)
        deadline = np.rint(period * rng.uniform(*deadline_ratio, size=count)).astype(int)
        # A job takes at least one tick, which nudges the tiniest shares up a little.
        wcet = np.maximum(np.rint(shares * period / width).astype(int), 1)
        if np.all(wcet <= deadline):
            tasks = [GangTask(int(c), int(d), int(t), int(m), f'task{i}')
                     for i, (c, d, t, m) in enumerate(zip(wcet, deadline, period, width))]
            return reorder(tasks, deadline_monotonic(tasks))
    raise SchedulingError(
        f'no task set of {count} tasks at utilisation {utilisation} on {tpus} TPUs '
        f'after {_MAX_ATTEMPTS} draws; lower the utilisation or widen the periods')


# Pruned variants as (name, fraction of the full model's work and weights, accuracy drop).
VARIANTS = (('full', 1.0, 0.0), ('pruned-50', 0.55, 0.02), ('pruned-75', 0.3, 0.06))


def random_streams(rng: np.random.Generator, count: int, tpus: int,
                   load: float = 0.5) -> tuple[Stream, ...]:
    """
    Camera streams with a profile shaped like a pipelined Edge TPU model.

    Per variant and width m: C(m) = work / m + streaming + hop (m - 1), where `streaming`
    is the weight traffic of parameters beyond the m x 8 MB of on-chip memory and each
    pipeline hop adds a transfer, so C(m) falls and then rises again (not monotone).
    Energy per job is 2 W per busy TPU times m C(m) plus the host's share of the weight
    streaming.  `load` scales the work against the periods.
    """
    streams = []
    for index in range(count):
        period = int(rng.integers(40, 200))
        deadline = int(rng.integers(period // 2, period + 1))
        work = load * period * rng.uniform(0.3, 1.5)
        weights_mb = rng.uniform(4.0, 30.0)
        hop = rng.uniform(0.5, 3.0)
        base_accuracy = rng.uniform(0.7, 0.9)
        options = []
        for name, scale, drop in VARIANTS:
            for width in range(1, min(tpus, 4) + 1):
                spill = max(0.0, weights_mb * scale - 8.0 * width)
                wcet = max(1, math.ceil(work * scale / width + 1.5 * spill + hop * (width - 1)))
                options.append(Option(name, width, wcet,
                                      2.0 * width * wcet + 0.5 * spill, base_accuracy - drop))
        floor = base_accuracy - VARIANTS[int(rng.integers(len(VARIANTS)))][2]
        streams.append(Stream(f'stream{index}', period, deadline, floor, tuple(options)))
    return tuple(streams)
