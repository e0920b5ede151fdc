"""
LiteRT on a CPU core: segments run in this process, time is measured.

LiteRT's ``invoke`` releases the GIL, so one such device per core runs in parallel with the
others when the pipeline gives each its own thread. Energy is the measured busy time times an
assumed power per busy core (no power meter is read).
"""

from __future__ import annotations

from typing import Sequence

from dyn_perception.runtime.devices.base import MeasuredDevice, SegmentRef
from dyn_perception.runtime.segment import SegmentRunner

# Assumption: the extra power of one busy core of an embedded Arm SoC (Cortex-A72 class);
# replace with a measured figure for the target board.
CPU_CORE_ACTIVE_W = 1.5
PROFILE_BACKEND = 'litert_cpu'


class LiteRTCpuDevice(MeasuredDevice):
    """One CPU core (``num_threads`` LiteRT threads) running int8 segments with LiteRT."""

    kind = 'litert_cpu'

    def __init__(self, name: str = 'cpu0', num_threads: int = 1,
                 active_power_w: float = CPU_CORE_ACTIVE_W, idle_power_w: float = 0.0):
        super().__init__(name, active_power_w, idle_power_w)
        if num_threads < 1:
            raise ValueError(f'{name}: num_threads must be >= 1')
        self.num_threads = num_threads

    def _open(self, ref: SegmentRef) -> SegmentRunner:
        return SegmentRunner(ref.spec, ref.path, self.num_threads)

    def estimate_ms(self, segments: Sequence[SegmentRef]) -> tuple[float, ...]:
        """Median LiteRT latency from the profile (segments do not interfere on a CPU)."""
        times = []
        for ref in segments:
            latency = ref.profile.latency.get(PROFILE_BACKEND) if ref.profile else None
            if latency is None:
                raise ValueError(f'{self.name}: no {PROFILE_BACKEND} latency in the profile '
                                 f'for segment {ref.index} ({ref.path.name}); placement on the '
                                 'CPU needs profile.yaml')
            times.append(latency.median_ms)
        return tuple(times)
