"""
Power states of a simulated Edge TPU: active, idle, off; what waking one costs.

A TPU that a mode does not use is powered down (a USB port's power switched off, a PCIe
slot's rail gated), so it draws nothing; bringing it back costs a wake (the host re-enumerates
the device and libedgetpu downloads its firmware) and a reload of every model, since the
parameter cache does not survive. Numbers and their standing:

- active 2 W, idle 0.5 W: ``timing.ACTIVE_POWER_W`` (Coral, published) and
  ``timing.IDLE_POWER_W`` (assumption there).
- off 0 W: assumption (a gated port or rail; the host's USB controller draws its own power
  regardless and is not counted).
- wake 1.0 s, charged at active power as every second of a swap is (``Device.load``):
  assumption, no published figure found; a USB accelerator appears
  first as an unprogrammed device and re-enumerates after its firmware download, which takes
  on the order of a second on the hosts we know of. The reload that follows is costed by the
  timing model as any swap is (one transaction per model plus its cached bytes).

:class:`PowerLedger` integrates the idle and off energy of a set of devices over time, which
the pipeline's own statistics (active energy of invocations and swaps) do not count.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from dyn_perception.runtime.devices.timing import EdgeTPUTiming

OFF_POWER_W = 0.0  # assumption, see the module docstring
WAKE_S = 1.0  # assumption, see the module docstring
ACTIVE, IDLE, OFF = 'active', 'idle', 'off'


@dataclass(frozen=True)
class PowerModel:
    """Power of one TPU in each state and the time a wake takes."""

    active_w: float
    idle_w: float
    off_w: float = OFF_POWER_W
    wake_s: float = WAKE_S

    def __post_init__(self) -> None:
        if not 0 <= self.off_w <= self.idle_w <= self.active_w or self.wake_s < 0:
            raise ValueError('power model needs 0 <= off <= idle <= active and wake_s >= 0')

    @classmethod
    def of(cls, timing: EdgeTPUTiming, **overrides: float) -> 'PowerModel':
        return cls(timing.active_power_w, timing.idle_power_w, **overrides)


@dataclass
class PowerLedger:
    """
    Powered time of each device, to charge idle and off energy after the fact.

    ``set_powered(device, on, now)`` records a change; ``powered_s(device, now)`` is the time it
    has been on. Idle energy is then powered time minus busy and loading time at idle power.
    """

    model: PowerModel
    powered: dict = field(default_factory=dict)  # device -> since when on (None: off)
    on_s: dict = field(default_factory=dict)
    wakes: int = 0

    def set_powered(self, device: str, on: bool, now: float) -> None:
        since = self.powered.get(device)
        if on and since is None:
            self.powered[device] = now
            self.wakes += device in self.on_s  # the first power-on is not a wake
            self.on_s.setdefault(device, 0.0)
        elif not on and since is not None:
            self.on_s[device] = self.on_s.get(device, 0.0) + now - since
            self.powered[device] = None

    def is_on(self, device: str) -> bool:
        return self.powered.get(device) is not None

    def powered_s(self, device: str, now: float) -> float:
        since = self.powered.get(device)
        return self.on_s.get(device, 0.0) + (now - since if since is not None else 0.0)

    def idle_energy_j(self, device: str, now: float, working_s: float) -> float:
        """Energy at idle power for the powered time not spent working (busy or loading)."""
        return max(self.powered_s(device, now) - working_s, 0.0) * self.model.idle_w
