"""
system_monitor: publish ``cpu_load`` from the host and ``battery_state``.

The battery is the real one under /sys/class/power_supply when there is one; otherwise a
simulated battery that drains with the energy the perception node reports on its result
topic (field ``energy_j``) plus a constant base load. ``drain_factor`` speeds the simulated
drain up for demos.
"""

import json
from typing import Optional

from dyn_perception.nodes.params import Param, ParameterSet
from dyn_perception.nodes.spin import spin_node
from dyn_perception.runtime.energy import SimulatedBattery
from dyn_perception.runtime.host import CpuLoad, find_battery, read_battery
from rclpy.node import Node
from sensor_msgs.msg import BatteryState
from std_msgs.msg import Float32, String

PARAMS = (
    Param('battery', 'auto', 'auto (real if present), real, or simulated',
          choices=('auto', 'real', 'simulated')),
    Param('capacity_wh', 10.0, 'simulated battery capacity', low=0.001, high=10000.0),
    Param('initial_charge', 1.0, 'simulated battery start charge', low=0.0, high=1.0),
    Param('base_power_w', 2.0, 'simulated draw of everything but perception', low=0.0,
          high=1000.0),
    Param('drain_factor', 1.0, 'multiplies every simulated drain (demos)', low=0.0, high=1e6),
    Param('period_s', 0.5, 'seconds between publications', low=0.05, high=60.0),
    Param('result_topic', 'perception/result', 'where perception reports energy_j'),
)


class SystemMonitor(Node):

    def __init__(self, **kwargs):
        super().__init__('system_monitor', **kwargs)
        self.params = ParameterSet(self, PARAMS)
        p = self.params.values()
        self.supply = find_battery() if p['battery'] != 'simulated' else None
        if p['battery'] == 'real' and self.supply is None:
            raise ValueError('battery:=real but no battery under /sys/class/power_supply')
        self.battery = SimulatedBattery(capacity_j=3600.0 * p['capacity_wh'],
                                        charge=p['initial_charge'],
                                        base_power_w=p['base_power_w'])
        self.cpu = CpuLoad()
        self.cpu_pub = self.create_publisher(Float32, 'cpu_load', 10)
        self.battery_pub = self.create_publisher(BatteryState, 'battery_state', 10)
        self.create_subscription(String, p['result_topic'], self._on_result, 50)
        self.pending_j = 0.0
        self.last = self.get_clock().now()
        self.create_timer(p['period_s'], self._tick)
        self.get_logger().info('battery: ' + (str(self.supply) if self.supply else 'simulated'))

    def _on_result(self, msg: String) -> None:
        try:
            self.pending_j += float(json.loads(msg.data).get('energy_j') or 0.0)
        except (ValueError, AttributeError):
            self.get_logger().warning('result without a readable energy_j', once=True)

    def _tick(self) -> None:
        now = self.get_clock().now()
        seconds = (now - self.last).nanoseconds * 1e-9
        self.last = now
        self.cpu_pub.publish(Float32(data=float(self.cpu.sample())))
        msg = BatteryState()
        msg.header.stamp = now.to_msg()
        if self.supply is not None:
            msg.percentage, msg.voltage, msg.present = *read_battery(self.supply), True
        else:
            factor = self.params.value('drain_factor')
            charge = self.battery.drain(factor * self.pending_j, factor * seconds)
            msg.percentage, msg.voltage, msg.present = charge, self.battery.voltage, True
        self.pending_j = 0.0
        self.battery_pub.publish(msg)


def main(args: Optional[list] = None) -> None:
    spin_node(SystemMonitor, args)


if __name__ == '__main__':
    main()
