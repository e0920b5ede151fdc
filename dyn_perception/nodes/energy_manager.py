"""
energy_manager: watch battery and CPU load, publish the operating mode on ``energy_mode``.

``policy:=auto`` runs the hysteresis policy of ``runtime.energy``; a mode name pins that mode.
The mode is re-published every ``period_s`` (latched for late joiners) and at once on change.
"""

from typing import Optional

from dyn_perception.nodes.params import Param, ParameterSet
from dyn_perception.nodes.spin import spin_node
from dyn_perception.runtime.energy import ModePolicy, PolicyConfig
from dyn_perception.runtime.modes import load_modes
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile
from sensor_msgs.msg import BatteryState
from std_msgs.msg import Float32, String

LATCHED = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL)


class EnergyManager(Node):

    def __init__(self, **kwargs):
        super().__init__('energy_manager', **kwargs)
        self.modes = tuple(m.name for m in load_modes())
        defaults = PolicyConfig(modes=self.modes)
        self.params = ParameterSet(self, (
            Param('policy', 'auto', 'auto, or a mode name to pin', choices=('auto', *self.modes)),
            Param('min_charge', list(defaults.min_charge),
                  'state of charge (0-1) at or above which each mode may run, best mode first'),
            Param('cpu_load_high', defaults.cpu_load_high,
                  'CPU load (0-1) above which one mode down is taken', low=0.01, high=1.0),
            Param('hysteresis', defaults.hysteresis,
                  'charge margin needed to step back up', low=0.0, high=0.5),
            Param('min_dwell_s', defaults.min_dwell_s,
                  'seconds a mode is held before stepping up', low=0.0, high=3600.0),
            Param('period_s', 1.0, 'seconds between mode publications', low=0.05, high=60.0),
        ), self._validate, self._apply)
        self.policy = ModePolicy(self._config(self.params.values()))
        self.charge, self.cpu_load = 1.0, 0.0
        self.publisher = self.create_publisher(String, 'energy_mode', LATCHED)
        self.create_subscription(BatteryState, 'battery_state', self._on_battery, 10)
        self.create_subscription(Float32, 'cpu_load', self._on_cpu_load, 10)
        self.published: Optional[str] = None
        self.timer = self.create_timer(self.params.value('period_s'), self._tick)

    def _config(self, p: dict) -> PolicyConfig:
        return PolicyConfig(modes=self.modes, min_charge=tuple(p['min_charge']),
                            cpu_load_high=p['cpu_load_high'], hysteresis=p['hysteresis'],
                            min_dwell_s=p['min_dwell_s'])

    def _validate(self, proposed: dict, changed: set) -> Optional[str]:
        try:
            self._config(proposed)
        except ValueError as err:
            return str(err)
        return None

    def _apply(self, changes: dict) -> None:
        self.policy = ModePolicy(self._config(self.params.values()), self.policy.mode)
        if 'period_s' in changes:
            self.timer.cancel()
            self.timer = self.create_timer(changes['period_s'], self._tick)
        self._tick()

    def _on_battery(self, msg: BatteryState) -> None:
        if msg.percentage == msg.percentage:  # NaN means unknown
            self.charge = min(max(msg.percentage, 0.0), 1.0)
            self._tick(only_on_change=True)

    def _on_cpu_load(self, msg: Float32) -> None:
        self.cpu_load = msg.data

    def _tick(self, only_on_change: bool = False) -> None:
        now = self.get_clock().now().nanoseconds * 1e-9
        mode = self.policy.update(now, self.charge, self.cpu_load)
        pinned = self.params.value('policy')
        mode = mode if pinned == 'auto' else pinned
        if only_on_change and mode == self.published:
            return
        if mode != self.published:
            self.get_logger().info(f'mode {mode} (charge {self.charge:.0%}, '
                                   f'cpu load {self.cpu_load:.0%})')
        self.published = mode
        self.publisher.publish(String(data=mode))


def main(args: Optional[list] = None) -> None:
    spin_node(EnergyManager, args)


if __name__ == '__main__':
    main()
