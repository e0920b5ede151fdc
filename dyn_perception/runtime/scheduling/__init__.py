"""
Real-time scheduling of DNN streams on several TPUs as non-preemptive gang tasks.

Pure Python and NumPy.  The modules, each with one job:
- tasks: the task model, the dispatch rules and the typed input errors;
- knapsack: the width-constrained blocking bound (exact DP or fractional relaxation);
- analysis: the baseline response-time test for both rules (docs/scheduling.md has the
  proof);
- pooled: the tighter global test (saturating counts, one pool of the jobs running at the
  release, an extended window), the one the configuration choice uses;
- priority: deadline-monotonic and Audsley's optimal priority assignment;
- simulator: an independent discrete-event simulator of both rules;
- validation: accepted sets against the simulator;
- configuration: least-energy choice of model variant and gang width per stream;
- generators: random task sets and streams for the tests and the benchmark;
- partitioned: strict partitioning, each partition a non-preemptive uniprocessor, and
  the width assignment;
- exhaustive: every schedule of a periodic set (all execution times, releases in jitter
  windows), memoised, with a state budget: the exact checker;
- joblevel: job-level analysis of periodic streams with jitter, sporadic test as fallback;
- naive: the unsound naive carry-in port, kept as a regression case (never admit with it).
"""

from .analysis import analyse, GangAnalysis, Verdict
from .configuration import (choose_exact, choose_heuristic, Configuration, InvalidStreamError,
                            Option, Selection, Stream)
from .exhaustive import Exploration, explore, InvalidReleaseModelError
from .joblevel import job_level_analysis, JobLevelVerdict
from .knapsack import Knapsack
from .partitioned import (assign_widths, np_fp_response_times, Partition, partition,
                          PartitionedVerdict, UniprocessorVerdict, WidthAssignment)
from .pooled import analyse_pooled, PooledAnalysis
from .priority import assign_priorities, audsley, deadline_monotonic, PriorityAssignment
from .simulator import InvalidScenarioError, simulate, SimulationResult
from .tasks import (Dispatch, GangTask, InvalidTaskError, InvalidTaskSetError,
                    SchedulingError)
from .validation import validate, Validation

__all__ = [
    'analyse', 'analyse_pooled', 'assign_priorities', 'assign_widths', 'audsley',
    'choose_exact', 'choose_heuristic', 'Configuration', 'deadline_monotonic', 'Dispatch',
    'explore', 'Exploration', 'GangAnalysis', 'GangTask',
    'InvalidReleaseModelError', 'InvalidScenarioError', 'InvalidStreamError',
    'job_level_analysis', 'JobLevelVerdict', 'InvalidTaskError', 'InvalidTaskSetError',
    'Knapsack', 'np_fp_response_times', 'Option', 'partition', 'Partition',
    'PartitionedVerdict', 'PooledAnalysis', 'PriorityAssignment', 'SchedulingError',
    'Selection', 'simulate',
    'SimulationResult', 'Stream', 'UniprocessorVerdict', 'validate', 'Validation', 'Verdict',
    'WidthAssignment',
]
