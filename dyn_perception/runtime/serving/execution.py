"""
Running one job on its gang: swaps where the residency asks for them, stages in order.

Two kinds of payload, one accounting:
- a frame (uint8 image, fitted to the network): the pipeline's own ``execute`` runs each
  stage's segments on its gang device with the real exit decisions (LiteRT computes them);
- an exit index (replay): the frame's exit is known (recorded from the real model, or drawn),
  and the plan's segment times up to that exit stand in for the run. The device still makes
  the swaps, so residency and swap cost are the device's own.
Both give the same time for the same exit (``test_serving`` holds them equal).
"""

from __future__ import annotations

from dataclasses import dataclass
import itertools
from typing import Any, Optional, Sequence

from dyn_perception.runtime.artifacts import InputSpec
from dyn_perception.runtime.devices.base import Device
from dyn_perception.runtime.pipeline.engine import Config, execute, Job, RunTask
from dyn_perception.runtime.serving.plans import GangPlan, SWAP
import numpy as np

_VERSIONS = itertools.count()


@dataclass(frozen=True)
class JobOutcome:
    """What a job did on its gang: how long it held it, where it left, what it spent."""

    seconds: float
    exit_index: Optional[int]
    logits: Optional[np.ndarray]
    run_s: float
    swap_s: float
    swap_j: float
    swaps: int
    energy_j: float
    error: Optional[str] = None


def keys(refs: Sequence) -> tuple[str, ...]:
    return tuple(ref.key for ref in refs)


def run_job(plan: GangPlan, gang: Sequence[Device], payload: Any, input_spec: InputSpec,
            start_s: float, frame_id: Any = None) -> JobOutcome:
    """Run ``payload`` (a fitted frame or an exit index) over the gang (see the docstring)."""
    replay = isinstance(payload, (int, np.integer))
    point = plan.point
    job = None
    if not replay:
        job = Job(0, frame_id, payload, None, start_s)
        job.config = Config(next(_VERSIONS), point.variant, point.refs, point.policy,
                            point.thresholds, point.threshold_mode)
    exit_segments = point.variant.exit_segment_indices()
    run_s = swap_s = swap_j = 0.0
    swaps = 0
    exit_index, logits, error = None, None, None
    for k, stage in enumerate(plan.stages):
        device, refs = gang[k], plan.stage_refs(k)
        if plan.residency == SWAP and keys(device.resident) != keys(refs):
            report = device.load(refs)
            swap_s += report.seconds
            swap_j += report.energy_j
            swaps += 1
        if replay:
            last = exit_segments[int(payload)]
            run_s += sum(plan.segment_s[i] for i in stage if i <= last)
            if last in stage:
                exit_index = int(payload)
                break
            continue
        start = job.next_segment
        outcome = execute(device, RunTask(k, job, point.refs[start:stage[-1] + 1]), input_spec,
                          start_s + run_s + swap_s)
        run_s += outcome.seconds
        if outcome.error is not None:
            error = repr(outcome.error)
            break
        if outcome.logits is not None:
            exit_index, logits = outcome.exits_passed, outcome.logits
            break
        job.x, job.next_segment = outcome.x, outcome.next_segment
        job.exits_passed = outcome.exits_passed
    seconds = run_s + swap_s
    return JobOutcome(seconds, exit_index, logits, run_s, swap_s, swap_j, swaps,
                      plan.energy_j(run_s, swap_s, swap_j, seconds), error)
