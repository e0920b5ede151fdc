"""
The pipeline's state machine: queues, gating, ordering, reconfiguration and failures.

Nothing here waits or spawns threads; an executor (``executors``) drives it in virtual or in
wall-clock time and calls it under one lock. The rules it keeps:

- Every frame is a job routed by the next segment it needs: it waits in the queue of the stage
  holding that segment, and a device of that stage runs it through the stage's segments until
  an exit accepts it or the stage ends. Exited frames never enter a later queue.
- Queues are bounded. A device whose next queue is full holds its finished job (blocking
  after service), so the frames inside the pipeline stay bounded. A full input queue either
  blocks the caller or, for a live camera, drops the oldest frame that has not started.
- A frame takes the configuration in force when its first segment starts and keeps it to the
  end; results are released strictly in submission order, every frame exactly once.
- A new placement re-routes waiting jobs by their next segment and makes each device load its
  new segments when it is next idle. A new variant first lets every started frame finish
  (they need the old segments), then switches. A failed device is taken out, its job re-runs
  from the start of its stage elsewhere, and the segments are re-placed on the others.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Optional, Sequence

from dyn_perception.runtime.artifacts import InputSpec, TensorSpec, Variant
from dyn_perception.runtime.devices.base import Device, DeviceError, LoadReport, SegmentRef
from dyn_perception.runtime.exits import ExitPolicy
from dyn_perception.runtime.pipeline.placement import Placement
from dyn_perception.runtime.pipeline.results import (
    DeviceStats, DeviceTiming, DROPPED, FAILED, FrameResult, OK, PipelineStats, SwitchRecord
)
from dyn_perception.runtime.preprocess import to_int8_input
from dyn_perception.runtime.segment import requantize
import numpy as np

ADMISSION = ('block', 'drop_oldest')
IDLE, BUSY, LOADING, BLOCKED, FAILED_DEVICE = 'idle', 'busy', 'loading', 'blocked', 'failed'
# Why a live frame was dropped, in its result.
QUEUE_FULL = 'input queue full: a newer frame took its place (live camera)'
# Bounded records: the statistics must not grow with the length of the stream.
_LATENCY_WINDOW = 4096
_RECORDS = 64


class PipelineError(RuntimeError):
    """The pipeline was used wrongly or cannot make progress."""


@dataclass(frozen=True)
class Config:
    """What decides a frame's result: the variant, its segments, the exit policy, thresholds."""

    version: int
    variant: Variant
    refs: tuple[SegmentRef, ...]
    policy: ExitPolicy
    thresholds: tuple[Optional[float], ...]
    mode: Optional[str] = None

    def accepts(self, exit_index: int, logits: np.ndarray) -> bool:
        """Whether early exit ``exit_index`` takes the frame (the final exit always does)."""
        if exit_index >= len(self.thresholds):
            return True
        return self.policy.confident(logits[0], self.thresholds[exit_index])


@dataclass(eq=False)
class Job:
    """One frame inside the pipeline; owned by at most one device at a time."""

    seq: int
    frame_id: Any
    frame: Optional[np.ndarray]  # fitted uint8 H x W x C, or int8 1 x H x W x C
    frame_spec: Optional[TensorSpec]  # quantisation of an int8 frame, None for uint8
    submitted_s: float
    config: Optional[Config] = None
    x: Optional[np.ndarray] = None
    next_segment: int = 0
    exits_passed: int = 0
    timings: list[DeviceTiming] = field(default_factory=list)
    energy_j: float = 0.0

    def first_input(self, input_spec: InputSpec) -> np.ndarray:
        """Quantise the frame for the job's variant (done when the frame starts)."""
        target = self.config.refs[0].spec.input
        if self.frame_spec is None:
            return to_int8_input(self.frame[None], input_spec, target)
        return requantize(self.frame, self.frame_spec, target)


@dataclass(frozen=True)
class RunTask:
    device: int
    job: Job
    refs: tuple[SegmentRef, ...]


@dataclass(frozen=True)
class LoadTask:
    device: int
    refs: tuple[SegmentRef, ...]


@dataclass
class RunOutcome:
    """What a device did with a job; ``error`` is set when it failed part way."""

    timings: list[DeviceTiming]
    seconds: float
    energy_j: float
    x: Optional[np.ndarray] = None
    next_segment: int = 0
    exits_passed: int = 0
    logits: Optional[np.ndarray] = None
    error: Optional[BaseException] = None


def execute(device: Device, task: RunTask, input_spec: InputSpec, start_s: float) -> RunOutcome:
    """
    Run a job's segments on ``device`` from its next segment to the end of the stage.

    Stops at the first exit whose policy accepts the frame: the same decisions, on the same
    int8 tensors, as ``SegmentChain.run``. Device failures are returned, not raised, so the
    caller can re-run the job elsewhere; any other error fails the frame alone.
    """
    job, config = task.job, task.job.config
    outcome = RunOutcome([], 0.0, 0.0, exits_passed=job.exits_passed)
    try:
        x = job.x if job.x is not None else job.first_input(input_spec)
        for ref in task.refs:
            invocation = device.invoke(ref, x)
            outcome.timings.append(DeviceTiming(device.name, ref.index,
                                                start_s + outcome.seconds, invocation.seconds,
                                                invocation.energy_j))
            outcome.seconds += invocation.seconds
            outcome.energy_j += invocation.energy_j
            out = invocation.output
            if out.logits is not None:
                if config.accepts(outcome.exits_passed, out.logits):
                    outcome.logits = out.logits[0]
                    return outcome
                outcome.exits_passed += 1
            following = config.refs[ref.index + 1]
            x = requantize(out.features, ref.spec.features, following.spec.input)
        outcome.x, outcome.next_segment = x, task.refs[-1].index + 1
    except Exception as err:  # noqa: B902 - reported with the frame, never lost
        outcome.error = err
    return outcome


def load(device: Device, task: LoadTask) -> tuple[Optional[LoadReport], Optional[BaseException]]:
    """Make the task's segments resident; a failure (any error) is returned, not raised."""
    try:
        return device.load(task.refs), None
    except Exception as err:  # noqa: B902 - a device that cannot load is taken out
        return None, err


class Engine:
    """The pipeline's state; every method is called with the executor's lock held."""

    def __init__(self, devices: Sequence[Device], config: Config, input_spec: InputSpec,
                 planner: Callable[[Config, tuple[int, ...]], Placement],
                 queue_capacity: int, admission: str, num_devices: int):
        if queue_capacity < 1:
            raise ValueError('queue_capacity must be >= 1')
        if admission not in ADMISSION:
            raise ValueError(f'admission must be one of {ADMISSION}, got {admission!r}')
        self.devices = list(devices)
        self.input_spec = input_spec
        self.planner = planner
        self.capacity = queue_capacity
        self.admission = admission
        n = len(self.devices)
        self.state = [IDLE] * n
        self.held: list[Optional[Job]] = [None] * n
        self.serving: list[Optional[int]] = [None] * n
        self.wanted: list[tuple[SegmentRef, ...]] = [()] * n
        self.loaded: list[tuple[str, ...]] = [()] * n
        self.busy_s, self.load_s = [0.0] * n, [0.0] * n
        self.invocations, self.loads = [0] * n, [0] * n
        self.active_energy_j = [0.0] * n
        self.config = config
        self.num_devices = self._check_count(num_devices)
        self.pending: Optional[tuple[Config, SwitchRecord]] = None
        self.placement: Optional[Placement] = None
        self.queues: list[deque] = []
        self.queue_high_water: list[int] = []
        self.in_flight = 0  # frames started and not yet resolved
        self.next_seq = 0
        self.next_release = 0
        self.finished: dict[int, FrameResult] = {}
        self.released: deque = deque()
        self.dead: Optional[str] = None
        self.first_submit_s: Optional[float] = None
        self.counts = {OK: 0, DROPPED: 0, FAILED: 0}
        self.exit_histogram = [0] * config.variant.num_exits
        self.latencies: deque = deque(maxlen=_LATENCY_WINDOW)
        self.inside_high_water = 0
        self.switches: deque = deque(maxlen=_RECORDS)
        self.errors: deque = deque(maxlen=_RECORDS)
        self._place(self.planner(config, self.usable()))

    # -- devices and placement -----------------------------------------------------------

    def _check_count(self, num_devices: int) -> int:
        if not 1 <= num_devices <= len(self.devices):
            raise ValueError(f'num_devices must be in 1..{len(self.devices)}, got {num_devices}')
        return num_devices

    def usable(self) -> tuple[int, ...]:
        """Return the healthy devices the current setting allows, in order."""
        healthy = [i for i, s in enumerate(self.state) if s != FAILED_DEVICE]
        return tuple(healthy[:self.num_devices])

    def _place(self, placement: Placement) -> None:
        """Adopt ``placement``: re-route every waiting job, tell devices what to hold."""
        placement.check(len(self.config.refs), self.usable())
        waiting = [job for queue in self.queues for job in queue]
        for i, state in enumerate(self.state):
            if state == BLOCKED:
                waiting.append(self.held[i])
                self.held[i], self.state[i] = None, IDLE
        self.placement = placement
        self.queues = [deque() for _ in placement.stages]
        self.queue_high_water += [0] * (len(self.queues) - len(self.queue_high_water))
        for job in sorted(waiting, key=lambda j: j.seq):
            self.queues[placement.stage_of(job.next_segment)].append(job)
        self.serving = [None] * len(self.devices)
        self.wanted = [()] * len(self.devices)
        for s, stage in enumerate(placement.stages):
            for d in stage.devices:
                self.serving[d] = s
                self.wanted[d] = tuple(self.config.refs[i] for i in stage.segments)

    def needs_load(self, device: int) -> bool:
        return tuple(ref.key for ref in self.wanted[device]) != self.loaded[device]

    # -- frames in -----------------------------------------------------------------------

    def new_job(self, frame_id: Any, frame: np.ndarray, frame_spec: Optional[TensorSpec],
                now: float) -> Job:
        job = Job(self.next_seq, frame_id, frame, frame_spec, now)
        self.next_seq += 1
        return job

    def admit(self, job: Job, now: float) -> bool:
        """Queue a new frame; False means 'full, try again later' (blocking admission)."""
        if self.first_submit_s is None:
            self.first_submit_s = job.submitted_s
        if self.dead is not None:
            self._resolve(job, FAILED, now, error=self.dead)
            return True
        queue = self.queues[self.placement.stage_of(0)]
        if len(queue) >= self.capacity:
            if self.admission == 'block':
                return False
            oldest = next((j for j in queue if j.config is None), job)
            if oldest is job:
                self._resolve(job, DROPPED, now, error=QUEUE_FULL)
                return True
            queue.remove(oldest)
            self._resolve(oldest, DROPPED, now, error=QUEUE_FULL)
        queue.append(job)
        self._note_levels()
        return True

    def _note_levels(self) -> None:
        for s, queue in enumerate(self.queues):
            self.queue_high_water[s] = max(self.queue_high_water[s], len(queue))
        unstarted = sum(job.config is None for queue in self.queues for job in queue)
        self.inside_high_water = max(self.inside_high_water, unstarted + self.in_flight)

    # -- work out ------------------------------------------------------------------------

    def dispatch(self, now: float) -> list:
        """Give every idle device its next task: a load it needs, or the head of its queue."""
        tasks = []
        for i in range(len(self.devices)):
            if self.state[i] != IDLE:
                continue
            if self.needs_load(i):
                self.state[i] = LOADING
                tasks.append(LoadTask(i, self.wanted[i]))
                continue
            stage = self.serving[i]
            if stage is None or not self.queues[stage]:
                continue
            job = self.queues[stage][0]
            if job.config is None:
                if self.pending is not None:
                    continue  # a variant switch waits for the started frames to finish
                job.config = self.config
                self.in_flight += 1
            self.queues[stage].popleft()
            self._unblock(stage)
            last = self.placement.stages[stage].segments[-1]
            self.state[i] = BUSY
            tasks.append(RunTask(i, job, job.config.refs[job.next_segment:last + 1]))
        return tasks

    def _unblock(self, stage: int) -> None:
        """Fill a freed slot of ``stage``'s queue from the blocked device with the oldest job."""
        blocked = [i for i, s in enumerate(self.state)
                   if s == BLOCKED and self.placement.stage_of(self.held[i].next_segment) == stage]
        if blocked and len(self.queues[stage]) < self.capacity:
            i = min(blocked, key=lambda d: self.held[d].seq)
            self.queues[stage].append(self.held[i])
            self.held[i], self.state[i] = None, IDLE

    def finish_run(self, task: RunTask, outcome: RunOutcome, now: float) -> None:
        i, job = task.device, task.job
        self.busy_s[i] += outcome.seconds
        self.invocations[i] += len(outcome.timings)
        self.active_energy_j[i] += outcome.energy_j
        job.timings += outcome.timings
        job.energy_j += outcome.energy_j
        self.held[i], self.state[i] = None, IDLE
        if isinstance(outcome.error, DeviceError):
            self._fail_device(i, job, outcome.error, now)
        elif outcome.error is not None:
            self.note_error(now, f'frame {job.frame_id!r} failed: {outcome.error!r}')
            self._resolve(job, FAILED, now, error=repr(outcome.error))
        elif outcome.logits is not None:
            self._resolve(job, OK, now, logits=outcome.logits, exit_index=outcome.exits_passed)
        else:
            job.x, job.next_segment = outcome.x, outcome.next_segment
            job.exits_passed = outcome.exits_passed
            stage = self.placement.stage_of(job.next_segment)
            if len(self.queues[stage]) < self.capacity:
                self.queues[stage].append(job)
            else:
                self.held[i], self.state[i] = job, BLOCKED
        self._note_levels()
        self._apply_pending(now)

    def finish_load(self, task: LoadTask, report: Optional[LoadReport],
                    error: Optional[BaseException], now: float) -> None:
        i = task.device
        self.state[i] = IDLE
        if error is not None:
            self._fail_device(i, None, error, now)
            return
        self.loaded[i] = tuple(ref.key for ref in task.refs)
        self.load_s[i] += report.seconds
        self.active_energy_j[i] += report.energy_j
        self.loads[i] += bool(report.loaded)

    # -- failures ------------------------------------------------------------------------

    def _fail_device(self, i: int, job: Optional[Job], error: BaseException,
                     now: float) -> None:
        """Take the device out, put its job back first in line, re-place on the others."""
        self.state[i] = FAILED_DEVICE
        self.wanted[i], self.serving[i] = (), None
        self.note_error(now, f'device {self.devices[i].name} failed and was taken out: {error}')
        if job is not None:
            self.queues[self.placement.stage_of(job.next_segment)].appendleft(job)
        usable = self.usable()
        if not usable:
            self._fail_everything(now, f'no device left ({error})')
            return
        self._place(self.planner(self.config, usable))

    def _fail_everything(self, now: float, reason: str) -> None:
        self.dead = reason
        jobs = [job for queue in self.queues for job in queue]
        jobs += [job for job in self.held if job is not None]
        for queue in self.queues:
            queue.clear()
        self.held = [None] * len(self.devices)
        for job in sorted(jobs, key=lambda j: j.seq):
            self._resolve(job, FAILED, now, error=reason)

    def note_error(self, now: float, message: str) -> None:
        self.errors.append(f'{now:.6f}s {message}')

    # -- reconfiguration -----------------------------------------------------------------

    def request(self, config: Config, num_devices: int, reason: str, now: float) -> None:
        """Switch to ``config`` on ``num_devices`` devices (see the module docstring)."""
        if self.dead is not None:
            raise PipelineError(f'the pipeline has stopped: {self.dead}')
        self._check_count(num_devices)
        record = SwitchRecord(reason, self.config.version, config.version, now, None,
                              self.in_flight)
        if self.pending is not None:
            self.switches.append(self.pending[1])  # superseded before it took effect
        elif config.variant.name == self.config.variant.name:
            self.config, self.num_devices = config, num_devices
            self._place(self.planner(config, self.usable()))
            self.switches.append(replace(record, effective_s=now))
            return
        self.pending = (config, record)
        self.num_devices = num_devices
        self._apply_pending(now)

    def _apply_pending(self, now: float) -> None:
        if self.pending is None or self.in_flight:
            return
        config, record = self.pending
        self.pending = None
        self.config = config
        self.exit_histogram += [0] * (config.variant.num_exits - len(self.exit_histogram))
        self._place(self.planner(config, self.usable()))
        self.switches.append(replace(record, effective_s=now))

    # -- results -------------------------------------------------------------------------

    def _resolve(self, job: Job, status: str, now: float, logits: Optional[np.ndarray] = None,
                 exit_index: Optional[int] = None, error: Optional[str] = None) -> None:
        if job.config is not None:
            self.in_flight -= 1
        config = job.config
        result = FrameResult(job.frame_id, status, exit_index, logits, job.submitted_s, now,
                             job.energy_j, tuple(job.timings),
                             None if config is None else config.version,
                             None if config is None else config.mode, error)
        job.frame = job.x = None
        self.counts[status] += 1
        if status == OK:
            self.exit_histogram[exit_index] += 1
            self.latencies.append(result.latency_s)
        self.finished[job.seq] = result
        while self.next_release in self.finished:
            self.released.append(self.finished.pop(self.next_release))
            self.next_release += 1

    def take_released(self) -> list[FrameResult]:
        results = list(self.released)
        self.released.clear()
        return results

    @property
    def all_resolved(self) -> bool:
        return self.next_release == self.next_seq

    # -- statistics ----------------------------------------------------------------------

    def stats(self, now: float) -> PipelineStats:
        elapsed = max(now, 1e-12)
        devices = []
        for i, device in enumerate(self.devices):
            idle_s = max(0.0, elapsed - self.busy_s[i] - self.load_s[i])
            devices.append(DeviceStats(
                device.name, device.kind, self.state[i],
                tuple(ref.index for ref in self.wanted[i]), self.invocations[i], self.busy_s[i],
                self.loads[i], self.load_s[i], self.busy_s[i] / elapsed,
                self.active_energy_j[i], idle_s * device.idle_power_w))
        latencies = np.asarray(self.latencies) if self.latencies else None
        since = now - (self.first_submit_s or 0.0)
        return PipelineStats(
            elapsed_s=now, submitted=self.next_seq, completed=self.counts[OK],
            dropped=self.counts[DROPPED], failed=self.counts[FAILED],
            fps=self.counts[OK] / since if since > 0 else 0.0,
            exit_histogram=tuple(self.exit_histogram),
            latency_median_s=None if latencies is None else float(np.median(latencies)),
            latency_p99_s=None if latencies is None else float(np.percentile(latencies, 99)),
            energy_j=sum(d.active_energy_j + d.idle_energy_j for d in devices),
            devices=tuple(devices), queue_capacity=self.capacity,
            queue_high_water=tuple(self.queue_high_water),
            frames_inside_high_water=self.inside_high_water,
            placement=self.placement.describe(), config_version=self.config.version,
            mode=self.config.mode, switches=tuple(self.switches), errors=tuple(self.errors))
