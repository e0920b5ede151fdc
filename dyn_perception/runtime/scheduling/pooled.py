"""
The tighter global test: saturating counts, one pool of running jobs, an extended window.

Same question as `analysis` (how long can job J of task k, released at r, wait before it
starts?) and the same first-violation induction; docs/scheduling.md, "The pooled test",
has the argument in full.  What it adds to the baseline:

1. J waits through a tick only if at least B TPUs are busy in it, so a tick never needs
   more than B: the test counts min(B, busy TPUs) per tick.  The jobs running at r, of
   any priority, hold at most m TPUs together (one pool) and none can restart, so their
   busy count at r + t is the width of those with more than t ticks left; the most the
   pool adds to the capped count is an exact DP over width (items longest-leftover
   first).  A full-width J waits for the longest blocking job, not for their sum.
   Every other job executing in the window starts in it: per task, jobs released no
   earlier than r - x_i (x_i its start bound).
2. Bypass: a lower-priority job that overtakes J starts at a dispatch where J did not
   fit, so its first tick is never needed to keep J waiting: it counts C - 1.  And the
   start bounds of lower-priority tasks are the least vector the bounds allow (iteration
   from 0), not their deadlines.
3. Strict: a tick needs B = m - m_h + 1 for the head h of the queue; the widest task
   above sets it only while one of its jobs is pending, which each job is for at most
   x_i ticks: the test also tries the caps of the narrower heads, paying the difference
   for those ticks.
4. Where the window at r gives no bound: the window extended back over the level-k
   busy interval, where every higher-priority job was released inside (no backlog).
5. Where that fails too, the joint stage (docs: P8 to P10) bounds the pool and the
   starters together: a task with a job in the pool has no backlog after it; under
   strict, behind the last lower-priority job to start, every job above was started, so
   the starters have no older backlog than that and the blockers less left; and the
   window split at s, where the pool has s ticks less and a late-released starter's
   leftover is bounded by its start bound.

Omega in the window at r is the minimum of this bound and the baseline's (both bound the
same capped count), so the test accepts every set the baseline accepts, with bounds no
larger.
"""

from typing import Callable, Sequence, TypeVar

import numpy as np

from .analysis import fixed_point, GangAnalysis, Verdict, WindowBound, workload
from .knapsack import Knapsack, most_valuable
from .tasks import Dispatch, GangTask, InvalidTaskSetError

# The extended window is searched up to this many of the longest period, and never
# beyond this many ticks (its arrays grow with the window): else it gives no bound.
EXTENDED_PERIODS = 20
EXTENDED_TICKS = 20_000
# The pool's profiles are arrays as long as the longest WCET in ticks: time and memory grow
# with it (here 1e6 ticks took 11 s and 150 MB, 1e7 95 s and 1.1 GB, 1e12 a MemoryError for
# 7 TiB). Beyond this the test refuses the set: a coarser tick gives it an answer.
MAX_WCET_TICKS = 10_000_000
# A DP state no item set reaches yet.
_NONE = -(1 << 40)
_Result = TypeVar('_Result')
# P9's intervals of d start at these (then one interval to the largest start bound above).
_DELAYS = (0, 1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96)
# P10 splits the window after this many ticks (each a valid bound; a few keep it cheap).
SPLITS = (2, 4, 8, 16)


def started_in_window(length: int, wcet: np.ndarray, period: np.ndarray,
                      slack: np.ndarray) -> np.ndarray:
    """
    Most work of jobs that start in a window of `length` ticks, per task.

    A job that starts in [r, r + length) was released at or after r - slack (slack: the
    start bound x_i); the worst case releases the first one exactly then and the next
    ones a period apart.  The first slack // T + 1 of them may start at r (min(C, length)
    each); the later ones start at n T - slack > 0, a period apart, like the jobs released
    inside a window shortened by the first such delay.  Capped at the window's length
    because a task's jobs run one after the other.
    """
    early = slack // period + 1
    rest = np.maximum(length - (early * period - slack), 0)
    jobs = rest // period
    work = (early * np.minimum(wcet, length) + jobs * wcet
            + np.minimum(wcet, rest - jobs * period))
    return np.minimum(work, length)


def released_in_window(length, wcet: np.ndarray, period: np.ndarray,
                       delay: np.ndarray) -> np.ndarray:
    """
    Most work of jobs released `delay` or more ticks into a window of `length`, per task.

    No backlog: each such job starts no earlier than its release and its work is at most
    `wcet`, the next ones a period apart; capped at the window's length.  `length` may be
    a column (one row per window length).
    """
    span = np.maximum(length - delay, 0)
    jobs = span // period
    return np.minimum(jobs * wcet + np.minimum(wcet, span - jobs * period), length)


def started_after(length: np.ndarray, wcet: np.ndarray, period: np.ndarray,
                  earliest: np.ndarray, bound: np.ndarray,
                  useful: np.ndarray | None = None) -> np.ndarray:
    """
    Most work in [o, o + length) of jobs released from o - earliest on, per task.

    `length` is a column of window lengths; each job counts at most `useful` (default
    `wcet`; an overtaker's first tick never counts).  A job released at a (relative to o)
    starts by a + bound (its start bound): if that is before o, at most
    min(useful, C + a + bound) of it is left at o; else it adds at most
    min(useful, length - max(0, a)).  That per-job amount rises with a up to -bound, is
    flat to 0 and falls after, so some chain of releases a period apart is worst (jobs
    before the peak move later, those after it earlier), shifted by some delta in [0, T)
    from o - earliest; the sum is piecewise linear in delta, so its largest value is at
    delta = 0 or where a job meets a kink.  Capped at the window's length.
    """
    useful = wcet if useful is None else useful
    kinks = np.broadcast_arrays(-bound - wcet, useful - wcet - bound, -bound, 0 * bound,
                                length - useful, length + 0 * useful)
    cands = np.concatenate([
        np.zeros((len(length), len(wcet), 1), dtype=np.int64),
        np.mod(np.stack(kinks, axis=2) + earliest[None, :, None], period[None, :, None])],
        axis=2)
    jobs = int(((earliest + int(length.max())) // period).max()) + 2
    release = (-earliest[None, :, None, None] + cands[:, :, :, None]
               + np.arange(jobs) * period[None, :, None, None])
    window = length[:, :, None, None]
    useful4, late = useful[None, :, None, None], release + bound[None, :, None, None]
    free = np.minimum(useful4, window - np.maximum(release, 0))
    forced = np.minimum(np.minimum(useful4, wcet[None, :, None, None] + late), window)
    work = np.maximum(np.where(late >= 0, free, forced), 0).sum(axis=3).max(axis=2)
    return np.minimum(work, length)


def pool_with_starters(widths: list[int], leftovers: list[int], penalties: np.ndarray,
                       busy: int, capacity: int) -> np.ndarray:
    """
    `pool_profile` where an item also costs its task's penalty: max of pool minus penalties.

    Entry n is the bound for a window of n ticks, n < penalties.shape[1].  A task whose
    job runs at the release loses part of its in-window starters' work (its next job is
    released later): `penalties[i]` is that loss, subtracted when item i is in the pool.
    Items longest leftover first, as in `pool_profile`, so the DP stays exact.
    """
    length = np.arange(penalties.shape[1])
    floor = np.full(len(length), _NONE, dtype=np.int64)
    best = [np.zeros(len(length), dtype=np.int64)] + [floor.copy() for _ in range(busy - 1)]
    saturated = floor.copy()
    for width, left, penalty in zip(widths, leftovers, penalties):
        ticks = np.minimum(left, length)
        for used in range(busy - 1, -1, -1):
            if used + width > capacity or best[used].max() <= _NONE // 2:
                continue
            if used + width >= busy:
                saturated = np.maximum(saturated, best[used] + ticks * (busy - used) - penalty)
            else:
                best[used + width] = np.maximum(best[used + width],
                                                best[used] + ticks * width - penalty)
    return np.maximum.reduce([saturated, *best])


def pool_profile(widths: list[int], leftovers: list[int], longest: int, busy: int,
                 capacity: int) -> np.ndarray:
    """
    Most that jobs running at the release add to sum_t min(busy, TPUs they hold).

    Entry n is the bound for a window of n ticks, n = 0..longest (beyond: entry longest).
    Items (width, leftover), longest leftover first, form sets of total width <= capacity.
    An item added to a set of width u (all its items run at least as long) raises the
    capped count by min(busy, u + w) - min(busy, u) during each of its min(leftover, n)
    ticks: a DP over u is exact, here for every n at once.  Once u >= busy nothing adds
    anything, so the states u >= busy merge into one.
    """
    length = np.arange(longest + 1)
    best = [np.zeros_like(length)] + [np.full_like(length, -1) for _ in range(busy - 1)]
    saturated = np.full_like(length, -1)
    for width, left in zip(widths, leftovers):
        ticks = np.minimum(left, length)
        for used in range(busy - 1, -1, -1):
            if used + width > capacity or best[used][-1] < 0:
                continue
            grown = used + width
            if grown >= busy:
                saturated = np.maximum(saturated, best[used] + ticks * (busy - used))
            else:
                best[grown] = np.maximum(best[grown], best[used] + ticks * width)
    return np.maximum.reduce([saturated, *best])


class PooledAnalysis(GangAnalysis):
    """The pooled test (module docstring); the baseline's interface and verdicts."""

    # Bound the pool and the starters together where the other stages fail (P8 to P10);
    # False gives the pooled test as it was before them (the tests' reference).
    joint_stage = True

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        # Start bounds assumed for the lower-priority tasks that may overtake (bypass):
        # their deadlines' for OPA and lateness, the iterated vector in `verdict`.
        self._assumed = self._deadline - self._wcet
        # The pool's items over all tasks (longest first); profiles memoised per excluded
        # task and cap: a task k outside the items leaves them unchanged, so most share.
        everyone = np.arange(len(self.tasks))
        self._pooled = everyone[most_valuable(self._width, self._wcet, self.tpus)]
        self._pooled = self._pooled[np.argsort(-self._wcet[self._pooled], kind='stable')]
        self._longest = max(int(self._wcet.max()) - self.started_before, 0)
        if self._longest > MAX_WCET_TICKS:
            raise InvalidTaskSetError(
                f'a WCET of {int(self._wcet.max())} ticks: the pooled test holds arrays that '
                f'long (at most {MAX_WCET_TICKS}); analyse on a coarser tick')
        self._pool_memo: dict[tuple[int, int], np.ndarray] = {}
        self._pool_members = set(self._pooled.tolist())
        self._depends: list[np.ndarray] | None = None

    def verdict(self) -> Verdict:
        """
        Iterate the start bounds from 0 until no task's bound grows.

        The result x has x_k >= bound_k(x) for every task, which is all the induction
        needs (each job's bound only assumes those of the others).  A task is
        re-evaluated only when a bound it depends on has grown since its last evaluation
        (strict: the tasks above it, so one pass; bypass: any other task).
        """
        count = len(self.tasks)
        if self._depends is None:
            self._depends = [self._dependencies(k) for k in range(count)]
        waits = np.zeros(count, dtype=np.int64)
        grown_at = np.zeros(count, dtype=np.int64)
        seen_at = np.full(count, -1, dtype=np.int64)
        step = 0
        try:
            self._assumed = waits
            while True:
                before = step
                for k in range(count):
                    if seen_at[k] >= grown_at[self._depends[k]].max(initial=0):
                        continue
                    seen_at[k] = step
                    wait = self.start_bound(k, np.arange(k), waits[:k],
                                            int(self._deadline[k] - self._wcet[k]))
                    if wait is None:
                        return Verdict(False, tuple((waits[:k] + self._wcet[:k]).tolist()),
                                       self._rejection(k))
                    if wait > waits[k]:
                        step += 1
                        waits[k] = wait
                        grown_at[k] = step
                if step == before:
                    return Verdict(True, tuple((waits + self._wcet).tolist()))
        finally:
            self._assumed = self._deadline - self._wcet

    def passes_with_deadlines(self, k: int, higher: Sequence[int]) -> bool:
        """Answer OPA's deadline variant without the joint stage (n^2 calls, most fail)."""
        return self._without_joint(super().passes_with_deadlines, k, higher)

    def lateness(self, overrun: int) -> float:
        """Measure lateness without the joint stage: a guide for the searches, not a test."""
        return self._without_joint(super().lateness, overrun)

    def _without_joint(self, query: Callable[..., _Result], *args: object) -> _Result:
        """Run `query` with the joint stage off (the verdict on the order found keeps it)."""
        joint, self.joint_stage = self.joint_stage, False
        try:
            return query(*args)
        finally:
            self.joint_stage = joint

    def _dependencies(self, k: int) -> np.ndarray:
        """List the tasks whose start bounds k's uses: those above, and the overtakers."""
        widest = int(self._width[:k + 1].max())
        lower = np.arange(k + 1, len(self.tasks))
        if self.rule is Dispatch.STRICT:
            lower = lower[:0]
        return np.concatenate([np.arange(k), lower[self._width[lower] < widest]])

    def start_bound(self, k: int, higher: np.ndarray, higher_slack: np.ndarray,
                    limit: int) -> int | None:
        """
        Longest wait of a job of task k before it starts, or None if beyond `limit`.

        Cheapest first: the window at r with the cap B (the baseline's and the pooled
        bound); where that exceeds the limit, also the caps of narrower heads (strict);
        where that does too, the pool and starters together, and the extended window.
        """
        overtaking, blocking = self._split_lower(k, higher)
        least = self._busy(k, higher)
        baseline = self._baseline_omega(higher, higher_slack, overtaking, blocking, least)
        widths = self._head_widths(k, higher)
        conditions = [self._condition(k, higher, higher_slack, overtaking, widths[-1], least)]

        def wait_bound(length: int) -> int:
            bound = baseline(length) // least
            for cap, pooled, deficit in conditions:
                bound = min(bound, (pooled(length) + deficit(length)) // cap)
            return bound
        window = fixed_point(wait_bound, 1, limit)
        if window is None and len(widths) > 1:
            conditions += [self._condition(k, higher, higher_slack, overtaking, width, least)
                           for width in widths[:-1]]
            window = fixed_point(wait_bound, 1, limit)
        if window is not None or not self.joint_stage:
            return window if window is not None else self._extended_bound(k, higher, limit)
        # P8 to P10: the pool and the starters bounded together; the extended window may
        # still be tighter (the old test's bound there), so the least of both.
        conditions[:] = [(cap, self._joint_omega(k, higher, higher_slack, overtaking, cap,
                                                 limit + 1), deficit)
                         for cap, _, deficit in conditions]
        window = fixed_point(wait_bound, 1, limit)
        extended = self._extended_bound(k, higher, limit if window is None else window)
        return window if extended is None else extended

    def _condition(self, k: int, higher: np.ndarray, higher_slack: np.ndarray,
                   overtaking: np.ndarray, width: int,
                   least: int) -> tuple[int, WindowBound, WindowBound]:
        """Give cap m - width + 1, its pooled Omega, what the wider heads above leave short."""
        cap = self.tpus - width + 1
        wider = self._width[higher] > width
        return (cap, self._pooled_omega(k, higher, higher_slack, overtaking, cap),
                self._deficit(higher[wider], higher_slack[wider], cap, least))

    def _interference(self, k: int, higher: np.ndarray, higher_slack: np.ndarray,
                      overtaking: np.ndarray, busy: int) -> WindowBound:
        """Bound the baseline's workload term: overtaking jobs at C - 1, assumed bounds."""
        tasks = np.concatenate([higher, overtaking])
        slack = np.concatenate([higher_slack, self._assumed[overtaking]])
        wcet = np.concatenate([self._wcet[higher], self._useful(overtaking)])
        period = self._period[tasks]
        weight = np.minimum(self._width[tasks], busy)
        return lambda length: int(weight @ workload(length, wcet, period, slack))

    def _useful(self, overtaking: np.ndarray) -> np.ndarray:
        """Per overtaking job, the ticks that can keep J waiting: all but its first."""
        return self._wcet[overtaking] - 1

    def _busy(self, k: int, higher: np.ndarray) -> int:
        """Count the TPUs busy in every tick J waits (strict: whatever the queue's head)."""
        widest = int(self._width[k])
        if self.rule is Dispatch.STRICT:
            widest = max(widest, int(self._width[higher].max(initial=0)))
        return self.tpus - widest + 1

    def _head_widths(self, k: int, higher: np.ndarray) -> list[int]:
        """
        List widths w: J's ticks have m - w + 1 TPUs busy unless a wider job is pending.

        Every w from m_k to the widest above, not only the widths present: then moving
        a task from above k to below only removes terms (what OPA needs).
        """
        if self.rule is Dispatch.BYPASS:
            return [int(self._width[k])]
        return list(range(int(self._width[k]), self.tpus - self._busy(k, higher) + 2))

    def _deficit(self, tasks: np.ndarray, waits: np.ndarray, cap: int,
                 least: int) -> WindowBound:
        """
        Bound sum_t (cap - busy(t))^+ over the ticks where a job of `tasks` heads the queue.

        A job of task i is pending (released, not started) at most x_i ticks, and while it
        heads the queue at least m - m_i + 1 >= least TPUs are busy: per task, pending
        ticks times cap - (m - m_i + 1); in all, at most cap - least per tick.
        """
        if len(tasks) == 0:
            return lambda length: 0
        period = self._period[tasks]
        short = cap - (self.tpus - self._width[tasks] + 1)

        def deficit(length: int) -> int:
            jobs = length // period
            ticks = jobs * waits + np.minimum(waits, length - jobs * period)
            return min((cap - least) * min(length, int(ticks.sum())), int(short @ ticks))
        return deficit

    def _split_lower(self, k: int, higher: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Split the lower-priority tasks: those that may start while J waits, the rest."""
        mask = np.ones(len(self.tasks), dtype=bool)
        mask[higher] = False
        mask[k] = False
        lower = np.flatnonzero(mask)
        if self.rule is Dispatch.STRICT:
            return lower[:0], lower
        narrower = self._width[lower] < self._width[k]
        return lower[narrower], lower[~narrower]

    def _baseline_omega(self, higher: np.ndarray, higher_slack: np.ndarray,
                        overtaking: np.ndarray, blocking: np.ndarray, cap: int) -> WindowBound:
        """Bound as the baseline does, widths capped at `cap`."""
        interference = self._interference(0, higher, higher_slack, overtaking, cap)
        block = self._blocking(blocking, cap)
        return lambda length: interference(length) + block(length)

    def _pool(self, excluded: int, length: int, busy: int) -> int:
        """`pool_profile` over every task but `excluded` (-1: none), memoised."""
        return int(self._profile(excluded, busy)[min(length, self._longest)])

    def _profile(self, excluded: int, busy: int) -> np.ndarray:
        """Return the pool's profile over every task but `excluded`, memoised."""
        if excluded not in self._pool_members:
            excluded = -1
        profile = self._pool_memo.get((excluded, busy))
        if profile is None:
            items = self._pooled
            if excluded >= 0:
                # Removing one item may let the next of its width in.
                others = np.flatnonzero(np.arange(len(self.tasks)) != excluded)
                items = others[most_valuable(self._width[others], self._wcet[others],
                                             self.tpus)]
                items = items[np.argsort(-self._wcet[items], kind='stable')]
            profile = pool_profile(self._width[items].tolist(),
                                   (self._wcet[items] - self.started_before).tolist(),
                                   self._longest, busy, self.tpus)
            self._pool_memo[(excluded, busy)] = profile
        return profile

    def _pooled_omega(self, k: int, higher: np.ndarray, higher_slack: np.ndarray,
                      overtaking: np.ndarray, cap: int) -> WindowBound:
        """Bound by the pool of jobs running at r plus the jobs starting in the window."""
        starters = np.concatenate([higher, overtaking])
        slack = np.concatenate([higher_slack, self._assumed[overtaking]])
        wcet = np.concatenate([self._wcet[higher], self._useful(overtaking)])
        period = self._period[starters]
        weight = np.minimum(self._width[starters], cap)

        def bound(length: int) -> int:
            return (self._pool(k, length, cap)
                    + int(weight @ started_in_window(length, wcet, period, slack)))
        return bound

    def _joint_omega(self, k: int, higher: np.ndarray, higher_slack: np.ndarray,
                     overtaking: np.ndarray, cap: int, horizon: int) -> WindowBound:
        """
        Bound the pool and the starters together, for windows up to `horizon` ticks.

        P8: a task whose job runs at r has its next release at least 1 + T - R after r
        (that job started within its bound, so it was released at r + 1 - R or later): its
        starters are then the jobs released from there on, not from r - x.  The pool DP
        takes that loss as the item's penalty.
        P9, strict: if the last lower-priority job running at r started at r - 1 - d, every
        higher-priority job released by then started by then (the scan stops only at a
        job that does not fit, and all of those come before it): the starters were
        released after r - 1 - d (slack min(x, d)) and each lower job has at most
        C - 1 - d left.  The bound is the largest over d, taken over intervals of d
        (lower leftovers at the interval's least d, slack at its largest: both bound
        every d inside).
        """
        if self.rule is Dispatch.BYPASS or len(higher) == 0:
            omega = self._joint_array(k, higher, higher_slack, overtaking, cap, horizon)
        else:
            # Beyond the largest bound above, d changes no slack: one last interval.
            largest = int(higher_slack.max())
            cuts = sorted({d for d in _DELAYS if d <= largest} | {largest + 1})
            omega = np.maximum.reduce([
                self._joint_array(k, higher, higher_slack, overtaking, cap, horizon,
                                  since, until - 1)
                for since, until in zip(cuts, cuts[1:])])
        return lambda length: int(omega[length])

    def _joint_array(self, k: int, higher: np.ndarray, higher_slack: np.ndarray,
                     overtaking: np.ndarray, cap: int, horizon: int, cut: int = 0,
                     delay: int | None = None) -> np.ndarray:
        """
        Pool with P8's penalties plus the starters, over window lengths 0..horizon.

        P9's scenario: lower leftovers `cut` ticks shorter, higher-priority starters
        released at most `delay` ticks before r.
        """
        starters = np.concatenate([higher, overtaking])
        bound = np.concatenate([higher_slack, self._assumed[overtaking]])
        slack = bound if delay is None else np.minimum(bound, delay)
        wcet = np.concatenate([self._wcet[higher], self._useful(overtaking)])
        period = self._period[starters]
        weight = np.minimum(self._width[starters], cap)
        column = np.arange(horizon + 1)[:, None]
        full = started_in_window(column, wcet, period, slack) * weight
        # P8 uses the task's own bound x (the `slack` above may be P9's smaller one).
        later = released_in_window(column, wcet, period,
                                   period - bound - self._wcet[starters] + 1) * weight
        penalty = np.zeros((len(self.tasks), horizon + 1), dtype=np.int64)
        penalty[starters] = np.maximum(full - later, 0).T
        others = np.ones(len(self.tasks), dtype=bool)
        others[starters] = False
        others[k] = False
        others = np.flatnonzero(others)
        items = np.concatenate([starters, others[most_valuable(
            self._width[others], self._wcet[others], self.tpus)]])
        leftover = self._wcet - self.started_before
        leftover[others] = np.maximum(leftover[others] - cut, 0)
        items = items[leftover[items] > 0]
        items = items[np.argsort(-leftover[items], kind='stable')]
        pool = pool_with_starters(self._width[items].tolist(), leftover[items].tolist(),
                                  penalty[items], cap, self.tpus)
        omega = pool + full.sum(axis=1)
        if len(starters):
            for split in SPLITS:
                if split <= horizon:
                    omega[split:] = np.minimum(omega[split:], self._split_array(
                        k, higher, starters, slack, bound, wcet, cap, horizon, cut, split))
        return omega

    def _split_array(self, k: int, higher: np.ndarray, starters: np.ndarray,
                     slack: np.ndarray, bound: np.ndarray, useful: np.ndarray, cap: int,
                     horizon: int, cut: int, split: int) -> np.ndarray:
        """
        P10: cap * split for the first `split` ticks, then the pool and starters after it.

        Entry n is the bound for a window of split + n ticks.  Jobs running at r + split
        that started before r are the pool, each `split` ticks shorter; the starters'
        work after the split is `started_after`, released from r - slack on, within
        their start bounds.
        """
        column = np.arange(horizon + 1 - split)[:, None]
        weight = np.minimum(self._width[starters], cap)
        work = started_after(column, self._wcet[starters], self._period[starters],
                             slack + split, bound, useful) @ weight
        others = np.flatnonzero(np.arange(len(self.tasks)) != k)
        leftover = self._wcet - self.started_before
        lower = np.ones(len(self.tasks), dtype=bool)
        lower[higher] = False
        leftover[lower] -= cut
        leftover = np.maximum(leftover - split, 0)
        items = others[most_valuable(self._width[others], leftover[others], self.tpus)]
        items = items[leftover[items] > 0]
        items = items[np.argsort(-leftover[items], kind='stable')]
        pool = pool_profile(self._width[items].tolist(), leftover[items].tolist(),
                            len(column) - 1, cap, self.tpus)
        return cap * split + pool + work

    def _extended_bound(self, k: int, higher: np.ndarray, limit: int) -> int | None:
        """
        Start bound from windows [t0, r + y) over the level-k busy interval, or None.

        In every tick of [t0, r) some job of tasks 0..k is pending, so B = m - widest + 1
        TPUs are busy throughout; higher-priority jobs executing in it were running at t0
        (the pool, with every other task) or released in it; task k adds its jobs
        released in [t0, r); under bypass, tasks narrower than the widest may start (at
        C - 1, as above).  J waits y ticks only if B L <= Omega(L, y) for L = r - t0 + y:
        the bound is the largest such y over every L up to where B L outgrows Omega.
        """
        widest = max(int(self._width[k]), int(self._width[higher].max(initial=0)))
        busy = self.tpus - widest + 1
        lower = np.flatnonzero(np.arange(len(self.tasks)) > k)
        starters = lower[self._width[lower] < widest] if self.rule is Dispatch.BYPASS \
            else lower[:0]
        weight, wcet, period = (np.minimum(self._width[higher], busy), self._wcet[higher],
                                self._period[higher])
        low_weight, low_wcet = np.minimum(self._width[starters], busy), self._useful(starters)
        low_period, low_slack = self._period[starters], self._assumed[starters]
        own, own_period = int(min(self._width[k], busy) * self._wcet[k]), int(self._period[k])
        rate = (float(weight @ (wcet / period)) + own / own_period
                + float(low_weight @ (low_wcet / low_period)))
        if rate >= busy:
            return None
        longest = self._longest
        # Omega(L) <= constant + rate L: past the horizon B L exceeds it for good.
        constant = (self._pool(-1, longest, busy)
                    + int(weight @ wcet)
                    + float(low_weight @ (low_wcet * (1 + low_slack / low_period))))
        horizon = int(constant / (busy - rate) * (1 + 1e-9)) + 2
        if horizon > min(EXTENDED_PERIODS * int(self._period.max()), EXTENDED_TICKS):
            return None
        length = np.arange(1, horizon + 1)
        column = length[:, None]
        jobs = column // period
        released = np.minimum(jobs * wcet + np.minimum(wcet, column - jobs * period),
                              column) @ weight
        overtaking = workload(column, low_wcet, low_period, low_slack) @ low_weight
        pool = self._profile(-1, busy)[np.minimum(length, longest)]
        short = busy * length - pool - released - overtaking
        # Task k's jobs released in [t0, r), floor((L - y) / T_k) of them, own > 0 each,
        # must cover `short`: y <= L - ceil(short / own) T_k.
        needed = np.where(short <= 0, 0, -(-short // own))
        best = int((length - needed * own_period).max(initial=0))
        return best if best <= limit else None


def analyse_pooled(tasks: Sequence[GangTask], tpus: int, rule: Dispatch,
                   knapsack: Knapsack = Knapsack.EXACT) -> Verdict:
    """Pooled test of `tasks` (highest priority first) on `tpus` TPUs."""
    return PooledAnalysis(tasks, tpus, rule, knapsack).verdict()
