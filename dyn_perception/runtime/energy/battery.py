"""A simulated battery that drains with the energy the robot reports."""

from __future__ import annotations

from dataclasses import dataclass


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
    def empty(self) -> bool:
        return self.charge <= 0.0

    @property
    def voltage(self) -> float:
        return self.empty_v + (self.full_v - self.empty_v) * self.charge

    @property
    def capacity_ah(self) -> float:
        """Capacity in ampere-hours at the mean voltage, as ``BatteryState.capacity`` wants."""
        return self.capacity_j / 3600.0 / (0.5 * (self.full_v + self.empty_v))
