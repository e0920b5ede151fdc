"""
Battery model and the energy manager's mode policy.

The policy maps the battery's state of charge and the host's CPU load to an operating mode.
Switching costs time (a model swap on a TPU), so it is deliberate: a step towards a more
frugal mode happens at once (running out of energy is worse than a slow swap), a step back
up needs the charge to clear the mode's bound by a hysteresis margin and the current mode to
have been held for a minimum dwell time. Together these keep the mode from flapping when
the charge hovers around a bound.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional


@dataclass(frozen=True)
class PolicyConfig:
    """
    Mode bounds, most capable mode first.

    ``min_charge[i]`` is the state of charge (0-1) at or above which mode ``i`` may run; the
    last mode's bound is 0 (it always may). ``cpu_load_high`` is the host load (0-1) above
    which the policy steps one mode down to leave the CPU to others.
    """

    modes: tuple[str, ...] = ('performance', 'balanced', 'eco', 'critical')
    min_charge: tuple[float, ...] = (0.6, 0.35, 0.15, 0.0)
    cpu_load_high: float = 0.9
    hysteresis: float = 0.05
    min_dwell_s: float = 5.0

    def __post_init__(self) -> None:
        problems = []
        if not self.modes or len(set(self.modes)) != len(self.modes):
            problems.append('modes must be unique and not empty')
        if len(self.min_charge) != len(self.modes):
            problems.append(f'min_charge needs one bound per mode ({len(self.modes)})')
        elif list(self.min_charge) != sorted(self.min_charge, reverse=True):
            problems.append('min_charge must decrease from the first mode to the last')
        elif not all(0.0 <= c <= 1.0 for c in self.min_charge) or self.min_charge[-1] != 0.0:
            problems.append('min_charge values must be in [0, 1] and the last one 0')
        if not 0.0 < self.cpu_load_high <= 1.0:
            problems.append('cpu_load_high must be in (0, 1]')
        if not 0.0 <= self.hysteresis < 1.0:
            problems.append('hysteresis must be in [0, 1)')
        if self.min_dwell_s < 0:
            problems.append('min_dwell_s must be >= 0')
        if problems:
            raise ValueError('bad energy policy: ' + '; '.join(problems))


class ModePolicy:
    """Pick a mode from charge and CPU load, with hysteresis and a minimum dwell time."""

    def __init__(self, config: PolicyConfig, start_mode: Optional[str] = None):
        self.config = config
        self.index = config.modes.index(start_mode) if start_mode else 0
        self.since: Optional[float] = None

    @property
    def mode(self) -> str:
        return self.config.modes[self.index]

    def target(self, charge: float, cpu_load: float) -> int:
        """Return the mode index the charge and load call for, ignoring hysteresis."""
        bounds = self.config.min_charge
        index = next(i for i, bound in enumerate(bounds) if charge >= bound)
        if cpu_load > self.config.cpu_load_high:
            index = min(index + 1, len(bounds) - 1)
        return index

    def update(self, now: float, charge: float, cpu_load: float = 0.0) -> str:
        """Feed one observation (time in seconds); return the mode to run."""
        if self.since is None:
            self.since = now
        wanted = self.target(charge, cpu_load)
        if wanted > self.index:
            self.index, self.since = wanted, now
        elif wanted < self.index:
            cleared = self.target(charge - self.config.hysteresis, cpu_load)
            if cleared < self.index and now - self.since >= self.config.min_dwell_s:
                self.index, self.since = max(cleared, wanted), now
        return self.mode


@dataclass
class SimulatedBattery:
    """
    A battery that drains with the energy the robot reports plus a constant base load.

    The voltage follows the charge linearly between ``empty_v`` and ``full_v``: crude, but
    enough for a monitor that publishes ``sensor_msgs/BatteryState``.
    """

    capacity_j: float = 3600.0 * 10.0
    charge: float = 1.0
    base_power_w: float = 2.0
    full_v: float = 12.6
    empty_v: float = 10.5

    def __post_init__(self) -> None:
        if self.capacity_j <= 0 or not 0.0 <= self.charge <= 1.0 or self.base_power_w < 0:
            raise ValueError('battery needs capacity_j > 0, charge in [0, 1], base_power_w >= 0')

    def drain(self, energy_j: float = 0.0, seconds: float = 0.0) -> float:
        """Take ``energy_j`` plus the base load over ``seconds``; return the new charge."""
        used = max(energy_j, 0.0) + self.base_power_w * max(seconds, 0.0)
        self.charge = max(0.0, self.charge - used / self.capacity_j)
        return self.charge

    @property
    def voltage(self) -> float:
        return self.empty_v + (self.full_v - self.empty_v) * self.charge
