"""
The embedded host's CPU as a place to run a model with no TPU powered: time and energy.

A mode may power every TPU down and run its variant with LiteRT on one core of the host. At
30 fps with networks of a few million MACs, a powered TPU's idle draw can cost more than the
host computing the frame itself; this module prices that option for the front and for the
battery bench. The host is the Coral Dev Board's i.MX 8M (quad Cortex-A53 at 1.5 GHz), not
this machine: LiteRT here (an AVX-512 x86 core) is about two orders of magnitude faster than
an A53 on int8 convolutions, so its measured times (``profile.yaml``, backend ``litert_cpu``)
give only the shape of a segment's latency distribution (p99 over median), not its scale.

Numbers and their standing:

- ``HOST_MACS_PER_S`` 2.46e9: coral.ai/docs/edgetpu/benchmarks, table 1, column "Embedded
  CPU" (quad Cortex-A53 at 1.5 GHz): MobileNet v2 224, 300 M MACs, 122 ms (MobileNet v1: 569 M
  MACs, 164 ms, 3.47e9, the faster of the two rows is not taken). Assumption: that column ran
  one thread. Had it used all four cores, one core is 4x slower and these configurations cost
  up to 4x the energy stated (docs/energy.md reports the break-even).
- ``HOST_CORE_ACTIVE_W`` 0.85 W: developer.embeddedartists.com, "Power consumption" guide,
  i.MX 8M COM board: 2556 mW running idle, 3407 mW under memtester (one busy process with
  DRAM traffic), the difference being what one busy core adds at board level.
- Loading a segment onto the host (opening a LiteRT interpreter) is measured here and
  charged at the same power; no wake: the host is always on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

from dyn_perception.runtime.devices.base import SegmentRef
from dyn_perception.runtime.devices.simulated import ModelledDevice

HOST_MACS_PER_S = 300e6 / 0.122  # Coral table 1, Embedded CPU, MobileNet v2 224
HOST_CORE_ACTIVE_W = 3.407 - 2.556  # Embedded Artists, i.MX 8M: memtester minus idle
PROFILE_BACKEND = 'litert_cpu'  # measured on this machine: only p99 / median is used


@dataclass(frozen=True)
class HostCPUModel:
    """Time and energy of a segment on one core of the embedded host."""

    macs_per_s: float = HOST_MACS_PER_S
    active_w: float = HOST_CORE_ACTIVE_W

    def __post_init__(self) -> None:
        if not self.macs_per_s > 0 or self.active_w < 0:
            raise ValueError('host CPU model needs macs_per_s > 0 and active_w >= 0')

    def median_s(self, ref: SegmentRef) -> float:
        return ref.spec.macs / self.macs_per_s

    def p99_s(self, ref: SegmentRef) -> float:
        """Median times the p99 / median ratio LiteRT showed on this machine (1 without it)."""
        latency = ref.profile.latency.get(PROFILE_BACKEND) if ref.profile else None
        spread = latency.p99_ms / latency.median_ms if latency and latency.median_ms > 0 else 1.0
        return self.median_s(ref) * max(spread, 1.0)


class ModelledHostCPU(ModelledDevice):
    """
    One host core running LiteRT (real results) with the embedded host's modelled clock.

    In virtual time (the battery bench) nothing waits; in wall-clock time an invocation
    sleeps until its modelled duration has passed, as the simulated TPU does.
    """

    kind = 'host_cpu'

    def __init__(self, name: str = 'host0', model: Optional[HostCPUModel] = None,
                 clock: str = 'virtual'):
        self.model = model or HostCPUModel()
        super().__init__(name, self.model.active_w, 0.0, clock)

    def _swap_seconds(self, before: tuple[SegmentRef, ...], added: tuple[SegmentRef, ...],
                      opening_s: float) -> float:
        return opening_s

    def invocation_s(self, ref: SegmentRef) -> float:
        return self.model.median_s(ref)

    def estimate_ms(self, segments: Sequence[SegmentRef]) -> tuple[float, ...]:
        return tuple(1e3 * self.model.median_s(ref) for ref in segments)
