"""
The gang dispatcher: exactly the rule ``runtime/scheduling`` analyses, on integer ticks.

- Time is ticks. A release at real time r is latched to the tick ceil(r / tick); a job that
  ends at real time e gives its gang back at the tick ceil(e / tick). Deadlines lose one tick
  in the analysis for the latching (docs/scheduling.md, "Deploying").
- At one tick: completions free their devices, then that tick's releases become pending, then
  the dispatcher runs once. A stream's jobs run in release order, one at a time.
- strict: start the highest-priority pending job while it fits, stop at the first that does
  not. bypass: one pass from the highest priority down, starting each job that fits.
- Global dispatch: a job takes any ``width`` idle devices (the caller's preference orders
  them: devices that hold the job's stages first, to save swaps). Partitioned dispatch: a
  stream's job takes its partition, all of it; partitions do not interact, so the strict stop
  applies within a partition.

Nothing here knows about frames or devices: it hands out (job, gang) pairs and takes back
completions, so the same class is driven by the virtual and the wall-clock executor, and tests
can hold it against ``scheduling.simulate`` tick for tick.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

from dyn_perception.runtime.scheduling import Dispatch

# Orders the idle devices for a job of a stream: (stream, idle devices) -> preferred order.
Preference = Callable[[str, Sequence[int]], Sequence[int]]


@dataclass
class GangJob:
    """One released frame of one stream, as the dispatcher sees it."""

    stream: str
    seq: int
    release_s: float
    release_tick: int
    payload: Any = None
    start_tick: Optional[int] = None
    gang: tuple[int, ...] = ()


@dataclass(frozen=True)
class Lane:
    """A stream's place in the dispatch: its priority (position), width and partition."""

    stream: str
    width: int
    # Partitioned dispatch: the devices this stream's jobs always take.
    devices: Optional[tuple[int, ...]] = None


class GangDispatcher:
    """Pending queues, idle devices and the dispatch rule (see the module docstring)."""

    def __init__(self, tpus: int, rule: Dispatch):
        self.tpus = tpus
        self.rule = Dispatch(rule)
        self.idle: set[int] = set(range(tpus))
        self.lanes: tuple[Lane, ...] = ()
        self.pending: dict[str, deque[GangJob]] = {}
        self.running: dict[str, GangJob] = {}
        # Devices held by something that is not a job (loading at a configuration switch).
        self.reserved: set[int] = set()

    def configure(self, lanes: Sequence[Lane]) -> None:
        """Set priorities (lane order), widths and partitions; only while nothing runs."""
        if self.running:
            raise RuntimeError('reconfigure only when no job is running')
        for lane in lanes:
            if lane.width > self.tpus or (lane.devices is not None
                                          and len(lane.devices) != lane.width):
                raise ValueError(f'stream {lane.stream}: width {lane.width} does not fit')
        self.lanes = tuple(lanes)
        for lane in lanes:
            self.pending.setdefault(lane.stream, deque())

    @property
    def busy(self) -> bool:
        return bool(self.running or self.reserved)

    @property
    def waiting(self) -> int:
        return sum(len(queue) for queue in self.pending.values())

    def release(self, job: GangJob) -> None:
        self.pending.setdefault(job.stream, deque()).append(job)

    def complete(self, job: GangJob) -> None:
        del self.running[job.stream]
        self.idle.update(job.gang)

    def reserve(self, devices: Sequence[int]) -> None:
        """Hold idle devices outside any job (configuration loads)."""
        held = set(devices)
        if not held <= self.idle:
            raise RuntimeError('reserve only idle devices')
        self.idle -= held
        self.reserved |= held

    def unreserve(self) -> None:
        self.idle |= self.reserved
        self.reserved = set()

    def dispatch(self, tick: int, prefer: Optional[Preference] = None) -> list[GangJob]:
        """Start what the rule allows at ``tick``; return the started jobs with their gangs."""
        started = []
        blocked: set[tuple[int, ...]] = set()
        for lane in self.lanes:
            queue = self.pending.get(lane.stream)
            if lane.stream in self.running or not queue:
                continue
            if lane.devices is not None:
                # Partitioned: the partition is a machine of its own.
                if lane.devices in blocked:
                    continue
                if set(lane.devices) <= self.idle:
                    started.append(self._start(queue.popleft(), lane.devices, tick))
                elif self.rule is Dispatch.STRICT:
                    blocked.add(lane.devices)
                continue
            if lane.width <= len(self.idle):
                order = sorted(self.idle)
                if prefer is not None:
                    order = list(prefer(lane.stream, order))
                started.append(self._start(queue.popleft(), tuple(order[:lane.width]), tick))
            elif self.rule is Dispatch.STRICT:
                break
        return started

    def _start(self, job: GangJob, gang: tuple[int, ...], tick: int) -> GangJob:
        job.start_tick, job.gang = tick, gang
        self.idle -= set(gang)
        self.running[job.stream] = job
        return job
