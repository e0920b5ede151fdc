"""What the pipeline hands back: one result per submitted frame, and running statistics."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from dyn_perception.runtime.exits import softmax
import numpy as np

OK, DROPPED, FAILED = 'ok', 'dropped', 'failed'


@dataclass(frozen=True)
class DeviceTiming:
    """One segment invocation of a frame: where, when (pipeline clock), how long, what energy."""

    device: str
    segment: int
    start_s: float
    seconds: float
    energy_j: float


@dataclass(frozen=True)
class FrameResult:
    """
    The outcome of one submitted frame; every frame gets exactly one, in submission order.

    ``status`` is 'ok' (classified), 'dropped' (a live-camera frame pushed out of a full input
    queue before it started) or 'failed' (no device could run it); ``error`` says why.
    ``latency_s`` runs from submission to the result; ``energy_j`` is the active energy of the
    invocations the frame used, failed attempts included.
    """

    frame_id: Any
    status: str
    exit_index: Optional[int]
    logits: Optional[np.ndarray]
    submitted_s: float
    finished_s: float
    energy_j: float
    timings: tuple[DeviceTiming, ...]
    config_version: Optional[int]
    mode: Optional[str]
    error: Optional[str] = None

    @property
    def latency_s(self) -> float:
        return self.finished_s - self.submitted_s

    @property
    def class_id(self) -> Optional[int]:
        return None if self.logits is None else int(np.argmax(self.logits))

    @property
    def scores(self) -> Optional[np.ndarray]:
        """Class probabilities (softmax of the exit's logits)."""
        return None if self.logits is None else softmax(self.logits)


@dataclass(frozen=True)
class DeviceStats:
    """
    One device over the run.

    ``utilisation`` is busy (invoking) time over elapsed time; loading counts apart. Energy:
    active during invocations and swaps, idle power for the rest of the elapsed time.
    """

    name: str
    kind: str
    state: str
    segments: tuple[int, ...]
    invocations: int
    busy_s: float
    loads: int
    load_s: float
    utilisation: float
    active_energy_j: float
    idle_energy_j: float


@dataclass(frozen=True)
class SwitchRecord:
    """A configuration change: when asked, when in force, and how many frames were in flight."""

    reason: str
    from_version: int
    to_version: int
    requested_s: float
    effective_s: Optional[float]
    frames_in_flight: int


@dataclass(frozen=True)
class PipelineStats:
    """Counters and rates since the pipeline started (times on the pipeline's clock)."""

    elapsed_s: float
    submitted: int
    completed: int
    dropped: int
    failed: int
    fps: float
    exit_histogram: tuple[int, ...]
    latency_median_s: Optional[float]
    latency_p99_s: Optional[float]
    energy_j: float
    devices: tuple[DeviceStats, ...]
    queue_capacity: int
    queue_high_water: tuple[int, ...]
    frames_inside_high_water: int
    placement: str
    config_version: int
    mode: Optional[str]
    switches: tuple[SwitchRecord, ...]
    errors: tuple[str, ...]
