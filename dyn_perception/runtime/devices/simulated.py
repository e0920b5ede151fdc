"""
A simulated Edge TPU: real results from LiteRT on the CPU, time and energy from a model.

The results are the int8 segment's own (LiteRT runs it), so a simulated pipeline classifies
exactly as a real one would; only the clock is modelled, per layer of the segment's own graph
(see ``timing``). Co-resident segments share the parameter cache layer by layer in load order,
as co-compiled models do; what does not fit is streamed on every invocation. In virtual time
nothing waits: the pipeline advances a simulated clock by the modelled durations, which makes
runs fast and deterministic. In wall-clock time each invocation and swap sleeps until its
modelled duration has passed, for demos; an invocation whose LiteRT computation alone takes
longer than the model is counted as an overrun.
"""

from __future__ import annotations

from abc import abstractmethod
import time
from typing import Optional, Sequence

from dyn_perception.runtime.devices.base import (
    Device, DeviceError, Invocation, LoadReport, SegmentRef
)
from dyn_perception.runtime.devices.layers import Network, read_tflite
from dyn_perception.runtime.devices.power import PowerModel
from dyn_perception.runtime.devices.timing import calibrated_timing, EdgeTPUTiming, plan_cache
from dyn_perception.runtime.segment import SegmentRunner
import numpy as np

CLOCKS = ('virtual', 'wall')


class ModelledDevice(Device):
    """
    A device whose results come from LiteRT here and whose clock is a model.

    In virtual time nothing waits; in wall-clock time an invocation sleeps until its
    modelled duration has passed, and one whose LiteRT computation alone takes longer is
    counted as an overrun. Subclasses say how long an invocation takes.
    """

    def __init__(self, name: str, active_power_w: float, idle_power_w: float, clock: str):
        super().__init__(name, active_power_w, idle_power_w)
        if clock not in CLOCKS:
            raise ValueError(f'{name}: clock must be one of {CLOCKS}, got {clock!r}')
        self.clock = clock
        self.overruns = 0

    @property
    def virtual(self) -> bool:
        return self.clock == 'virtual'

    @abstractmethod
    def invocation_s(self, ref: SegmentRef) -> float:
        """Return the modelled seconds of one invocation of resident segment ``ref``."""

    def _open(self, ref: SegmentRef) -> SegmentRunner:
        return SegmentRunner(ref.spec, ref.path)

    def _wait(self, modelled_s: float, spent_s: float) -> None:
        if self.clock == 'wall':
            if spent_s > modelled_s:
                self.overruns += 1
            else:
                time.sleep(modelled_s - spent_s)

    def invoke(self, ref: SegmentRef, x: np.ndarray) -> Invocation:
        runner = self.runner(ref)
        start = time.perf_counter()
        output = self._run(runner, ref, x)
        seconds = self.invocation_s(ref)
        self._wait(seconds, time.perf_counter() - start)
        return Invocation(output, seconds, seconds * self.active_power_w)


class SimulatedEdgeTPU(ModelledDevice):
    """One Edge TPU on a USB or PCIe link, simulated (see the module docstring)."""

    kind = 'sim_edgetpu'

    def __init__(self, name: str = 'simtpu0', timing: Optional[EdgeTPUTiming] = None,
                 clock: str = 'virtual', power: Optional[PowerModel] = None):
        timing = timing or calibrated_timing('usb')
        super().__init__(name, timing.active_power_w, timing.idle_power_w, clock)
        self.timing = timing
        self.power = power or PowerModel.of(timing)
        self.off = False
        # Modelled seconds of one invocation per resident segment: fixed from load to load.
        self._invoke_s: dict[str, float] = {}
        self._failing_after: Optional[int] = None

    def fail_after(self, invocations: int) -> None:
        """
        Inject a failure: the device breaks after ``invocations`` more successful invocations.

        This is how tests and demos exercise the pipeline's recovery; a real device fails on
        its own (a USB accelerator unplugged, a PCIe error).
        """
        if invocations < 0:
            raise ValueError('invocations must be >= 0')
        self._failing_after = invocations

    def power_off(self) -> None:
        """Power down: the cache is lost, the next load pays a wake and a full reload."""
        self.close()
        self._invoke_s = {}
        self.off = True

    @staticmethod
    def _network(ref: SegmentRef) -> Network:
        return read_tflite(ref.path)

    def _plan(self, segments: Sequence[SegmentRef]) -> list[int]:
        """Return the cached weight bytes of each segment when exactly these are resident."""
        plan = plan_cache([self._network(ref) for ref in segments], self.timing.cache_bytes)
        return [plan.cached_bytes(i) for i in range(len(segments))]

    def load(self, segments: Sequence[SegmentRef]) -> LoadReport:
        report = super().load(segments)
        resident = self.resident
        self._invoke_s = {ref.key: self.timing.invoke_s(self._network(ref),
                                                        self._network(ref).weight_bytes - cached)
                          for ref, cached in zip(resident, self._plan(resident))}
        return report

    def _swap_seconds(self, before: tuple[SegmentRef, ...], added: tuple[SegmentRef, ...],
                      opening_s: float) -> float:
        """One host transaction per new model plus every byte that newly enters the cache."""
        old = dict(zip((ref.key for ref in before), self._plan(before)))
        resident = self.resident
        moved = sum(max(0, cached - old.get(ref.key, 0))
                    for ref, cached in zip(resident, self._plan(resident)))
        seconds = len(added) * self.timing.overhead_s + self.timing.transfer_s(moved)
        if self.off and added:
            seconds, self.off = seconds + self.power.wake_s, False
        self._wait(seconds, opening_s)
        return seconds

    def invocation_s(self, ref: SegmentRef) -> float:
        return self._invoke_s[ref.key]

    def invoke(self, ref: SegmentRef, x: np.ndarray) -> Invocation:
        self.runner(ref)  # not loaded: that error first, as before any injected one
        if self._failing_after is not None:
            if self._failing_after == 0:
                raise DeviceError(self.name, 'simulated failure (injected)')
            self._failing_after -= 1
        return super().invoke(ref, x)

    def estimate_ms(self, segments: Sequence[SegmentRef]) -> tuple[float, ...]:
        """Modelled time of each segment with these segments (and only these) resident."""
        return tuple(1e3 * s for s in self.timing.estimate_s([self._network(r) for r in segments]))
