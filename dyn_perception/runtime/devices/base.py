"""
The device interface: hold a set of segments, run one, say what it cost in time and energy.

A device holds the segments of its pipeline stage. ``load`` replaces that set and reports the
swap cost (what had to be brought in, what was evicted); ``invoke`` runs one resident segment
on one frame and reports the time and energy of that invocation. Time is either measured (a
real device) or modelled (the simulated Edge TPU, in virtual or wall-clock time). A device that
breaks raises :class:`DeviceError`; the pipeline then takes it out and re-places its segments.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
import time
from typing import Any, Callable, ClassVar, Optional, Sequence

from dyn_perception.runtime.artifacts import (
    Manifest, SegmentProfile, SegmentSpec, Variant, VariantProfile
)
from dyn_perception.runtime.segment import SegmentOutput
import numpy as np


class DeviceError(RuntimeError):
    """A device that failed while loading or running; it should not be used again."""

    def __init__(self, device: str, message: str):
        super().__init__(f'{device}: {message}')
        self.device = device


class DeviceUnavailable(RuntimeError):
    """A device that cannot be opened at all: missing driver, library or hardware."""


@dataclass(frozen=True)
class SegmentRef:
    """A segment as devices see it: manifest entry, its file(s) and its measured profile."""

    index: int
    spec: SegmentSpec
    path: Path
    edgetpu_path: Optional[Path] = None
    profile: Optional[SegmentProfile] = field(default=None, compare=False, hash=False)

    @property
    def key(self) -> str:
        """Identify the model a device holds; two variants never share a file."""
        return str(self.path)

    @property
    def io_bytes(self) -> int:
        """Bytes crossing the host link per invocation: int8 input, features and logits."""
        tensors = (self.spec.input, self.spec.features, self.spec.logits)
        return int(sum(np.prod(t.shape) for t in tensors if t is not None))


def segment_refs(manifest: Manifest, variant: Variant,
                 profile: Optional[VariantProfile] = None) -> tuple[SegmentRef, ...]:
    """Describe every segment of ``variant`` for the devices, with its profile when known."""
    if profile is not None and len(profile.segments) != len(variant.segments):
        raise ValueError(f'profile of variant {variant.name} has {len(profile.segments)} '
                         f'segments, the manifest {len(variant.segments)}')
    return tuple(
        SegmentRef(i, spec, manifest.path(spec.file),
                   manifest.path(spec.edgetpu_file) if spec.edgetpu_file else None,
                   profile.segments[i] if profile is not None else None)
        for i, spec in enumerate(variant.segments))


@dataclass(frozen=True)
class Invocation:
    """One segment run: its outputs, how long the device was busy, the energy it used."""

    output: SegmentOutput
    seconds: float
    energy_j: float


@dataclass(frozen=True)
class LoadReport:
    """The cost of making a new set of segments resident (zero when nothing changed)."""

    seconds: float
    energy_j: float
    loaded: tuple[str, ...]
    evicted: tuple[str, ...]


class Device(ABC):
    """
    A place where segments run; subclasses say how a segment is opened, run and costed.

    ``load`` keeps the runners of segments that stay resident and opens only the new ones, so
    the reported swap cost is what a real device would pay for the change.
    """

    kind: ClassVar[str]

    def __init__(self, name: str, active_power_w: float, idle_power_w: float):
        if active_power_w < 0 or idle_power_w < 0:
            raise ValueError(f'{name}: power must be >= 0')
        self.name = name
        self.active_power_w = active_power_w
        self.idle_power_w = idle_power_w
        self._resident: dict[str, tuple[SegmentRef, Any]] = {}

    @property
    def virtual(self) -> bool:
        """Tell whether time is modelled, not spent: the pipeline then simulates it."""
        return False

    @property
    def resident(self) -> tuple[SegmentRef, ...]:
        return tuple(ref for ref, _ in self._resident.values())

    def load(self, segments: Sequence[SegmentRef]) -> LoadReport:
        """Make exactly ``segments`` resident, in this order; report what the change cost."""
        wanted = {ref.key: ref for ref in segments}
        evicted = tuple(key for key in self._resident if key not in wanted)
        added = tuple(ref for key, ref in wanted.items() if key not in self._resident)
        before = self.resident
        kept = {key: value for key, value in self._resident.items() if key in wanted}
        start = time.perf_counter()
        opened = {ref.key: (ref, self._open(ref)) for ref in added}
        opening_s = time.perf_counter() - start
        self._resident = {key: kept.get(key) or opened[key] for key in wanted}
        seconds = self._swap_seconds(before, added, opening_s) if (added or evicted) else 0.0
        return LoadReport(seconds, seconds * self.active_power_w,
                          tuple(ref.key for ref in added), evicted)

    def runner(self, ref: SegmentRef) -> Any:
        try:
            return self._resident[ref.key][1]
        except KeyError:
            raise DeviceError(self.name, f'segment {ref.key} is not loaded') from None

    @abstractmethod
    def _open(self, ref: SegmentRef) -> Any:
        """Open a runner for one segment (an interpreter bound to this device)."""

    @abstractmethod
    def _swap_seconds(self, before: tuple[SegmentRef, ...], added: tuple[SegmentRef, ...],
                      opening_s: float) -> float:
        """Time the last ``load`` took: measured (``opening_s``), or modelled from what moved."""

    @abstractmethod
    def invoke(self, ref: SegmentRef, x: np.ndarray) -> Invocation:
        """Run one resident segment on one int8 frame (batch of one)."""

    @abstractmethod
    def estimate_ms(self, segments: Sequence[SegmentRef]) -> tuple[float, ...]:
        """Estimate milliseconds per invocation of each segment when they share this device."""

    def _run(self, runner: Callable[[np.ndarray], Any], ref: SegmentRef, x: np.ndarray) -> Any:
        """Run one invocation; a failing interpreter is a DeviceError naming the segment."""
        try:
            return runner(x)
        except (RuntimeError, ValueError) as err:
            raise DeviceError(self.name, f'segment {ref.index} failed: {err}') from err

    def close(self) -> None:
        """Release every runner; the device holds nothing afterwards."""
        self._resident = {}

    def __repr__(self) -> str:
        return f'{type(self).__name__}({self.name!r})'


class MeasuredDevice(Device):
    """A device whose time is spent, not modelled: invocations and swaps are timed."""

    def _swap_seconds(self, before: tuple[SegmentRef, ...], added: tuple[SegmentRef, ...],
                      opening_s: float) -> float:
        return opening_s

    def invoke(self, ref: SegmentRef, x: np.ndarray) -> Invocation:
        runner = self.runner(ref)
        start = time.perf_counter()
        output = self._run(runner, ref, x)
        seconds = time.perf_counter() - start
        return Invocation(output, seconds, seconds * self.active_power_w)
