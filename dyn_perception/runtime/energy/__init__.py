"""
The energy loop without ROS: readings checked, the mode policy, batteries, power meters.

``readings`` refuses bad battery, load and per-frame energy readings (counted by reason),
``policy`` picks the operating mode with hysteresis, persistence and swap-aware switching,
``battery`` is the simulated battery, ``front`` computes each model's accuracy / energy /
latency front and the mode -> configuration mapping, ``meters`` reads real energy counters
(RAPL, INA) from sysfs.
"""

from dyn_perception.runtime.energy.battery import SimulatedBattery
from dyn_perception.runtime.energy.policy import ModeCost, ModePolicy, PolicyConfig
from dyn_perception.runtime.energy.readings import EnergyGuard, ReadingGuard

__all__ = ['EnergyGuard', 'ModeCost', 'ModePolicy', 'PolicyConfig', 'ReadingGuard',
           'SimulatedBattery']
