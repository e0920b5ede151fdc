"""
The naive port of the sequential carry-in limitation.  UNSOUND: never use it to admit tasks.

It is kept for two measured reasons: it is the regression case of issue 6, and it shows
what the validation can catch (the benchmark counts its counter-examples).  The port
lets only higher-priority tasks whose widths sum to at most m - m_k carry work into a
window anchored at the release; the others contribute only jobs released inside the
window.  Anchored at the release, that forgets two things: jobs running at r, which J
may have to wait for (m - m_k is 0 for a full-width J), and the backlog, higher-priority
jobs released before r and still pending at r (e.g. held back by the job of task k before
J), which start inside the window with their full C.  With m = 2 and tasks (C, D, T, m) =
(1, 3, 4, 1), (2, 3, 4, 1), (2, 5, 5, 2) it bounds the third task at 5 while the simulator
observes 7; with m = 8 and (23, 25, 25, 6), (3, 28, 37, 8) it says 26 and synchronous
periodic releases reach 40.
"""

from typing import Sequence

import numpy as np

from .analysis import GangAnalysis, Verdict, WindowBound, workload
from .knapsack import Knapsack, knapsack_bound
from .tasks import Dispatch, GangTask


class NaiveCarryInAnalysis(GangAnalysis):
    """GangAnalysis with the higher-priority term replaced by the naive limitation."""

    def _interference(self, k: int, higher: np.ndarray, higher_slack: np.ndarray,
                      overtaking: np.ndarray, busy: int) -> WindowBound:
        wcet, period = self._wcet[higher], self._period[higher]
        widths = self._width[higher]
        weight = np.minimum(widths, busy)
        room = self.tpus - int(self._width[k])
        overtakers = self._workload_term(
            overtaking, self._deadline[overtaking] - self._wcet[overtaking], busy)

        def bound(length: int) -> int:
            released_inside = weight * workload(length, wcet, period, np.zeros_like(wcet))
            with_carry_in = weight * workload(length, wcet, period, higher_slack)
            extra = knapsack_bound(widths, with_carry_in - released_inside, room, Knapsack.EXACT)
            return int(released_inside.sum()) + extra + overtakers(length)
        return bound


def naive_analyse(tasks: Sequence[GangTask], tpus: int, rule: Dispatch) -> Verdict:
    """Run the unsound naive test (see the module docstring): regression and bench only."""
    return NaiveCarryInAnalysis(tasks, tpus, rule).verdict()
