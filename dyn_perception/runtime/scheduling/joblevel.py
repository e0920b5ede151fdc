"""
Job-level analysis of periodic streams with release jitter, the sporadic test as fallback.

Cameras release frames periodically, each within a jitter window of its nominal instant;
a sporadic test also covers every other arrival pattern, hence part of its pessimism.
Where the hyperperiod is small, `exhaustive.explore` decides the periodic model exactly
(all releases in the windows, all execution times in [1, C]: the early completions of
early exits included).  Elsewhere, or when the state budget runs out, the verdict is the
sporadic test's on the same tasks with minimum separation T - J (a jittered periodic
stream is a sporadic one with that separation, and D <= T - J keeps it constrained), and
the verdict says which analysis gave it and why.  Offsets must be ones the dispatcher
enforces (e.g. releases latched to per-stream slots); None means synchronous releases,
which is not a worst case for free-running cameras: then pass the jitter of a full
period's uncertainty or use the sporadic test.
"""

from dataclasses import dataclass, replace
from typing import Sequence

from .exhaustive import (check_release_model, DEFAULT_BUDGET, DEFAULT_MAX_HYPERPERIOD,
                         Exploration, explore)
from .pooled import analyse_pooled
from .tasks import check_task_set, Dispatch, GangTask


@dataclass(frozen=True)
class JobLevelVerdict:
    """Verdict of the job-level analysis or of its fallback, with the one that decided."""

    schedulable: bool
    # 'job-level' (exact exploration) or 'sporadic' (fallback: hyperperiod or budget).
    method: str
    response_times: tuple[int, ...]
    reason: str
    exploration: Exploration

    def __bool__(self) -> bool:
        return self.schedulable


def job_level_analysis(tasks: Sequence[GangTask], tpus: int, rule: Dispatch,
                       offsets: Sequence[int] | None = None,
                       jitter: Sequence[int] | None = None, budget: int = DEFAULT_BUDGET,
                       max_hyperperiod: int = DEFAULT_MAX_HYPERPERIOD) -> JobLevelVerdict:
    """Decide periodic `tasks` (highest priority first) exactly if affordable, else fall back."""
    check_task_set(tasks, tpus)
    spread = [0] * len(tasks) if jitter is None else list(jitter)
    check_release_model(tasks, [0] * len(tasks) if offsets is None else offsets, spread)
    found = explore(tasks, tpus, rule, offsets, spread, budget, max_hyperperiod)
    if found.status == 'schedulable':
        return JobLevelVerdict(True, 'job-level', found.worst_response, '', found)
    if found.status == 'miss':
        return JobLevelVerdict(False, 'job-level', (), f'unschedulable: {found.reason}', found)
    separated = [replace(task, period=task.period - j) for task, j in zip(tasks, spread)]
    verdict = analyse_pooled(separated, tpus, rule)
    reason = f'{found.reason}; fell back to the sporadic test'
    if not verdict:
        reason += f': {verdict.reason}'
    return JobLevelVerdict(bool(verdict), 'sporadic', verdict.response_times, reason, found)
