"""
system_monitor: publish ``cpu_load`` from the host and ``battery_state``.

The battery is the real one under /sys/class/power_supply when there is one; otherwise a
simulated battery that drains with the energy the perception node reports on its result
topic (field ``energy_j``) plus a constant base load. ``drain_factor`` speeds the simulated
drain up for demos. An ``energy_j`` no frame could have drawn (not a number, not finite,
negative, more than ``MAX_FRAME_ENERGY_J``) is refused and counted (``bad_results.*``).

Where the platform measures energy (RAPL, INA monitors: ``runtime.energy.meters``), the
measured energy per frame goes to ``/diagnostics`` beside the modelled one the results report;
where nothing is readable the node says so once, at start.
"""

from pathlib import Path
from typing import Optional

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from dyn_perception.nodes.params import Param, ParameterSet
from dyn_perception.nodes.spin import spin_node
from dyn_perception.runtime.energy import EnergyGuard, SimulatedBattery
from dyn_perception.runtime.energy.meters import find_meters
from dyn_perception.runtime.host import CpuLoad, find_battery, read_battery
from rclpy.node import Node
from sensor_msgs.msg import BatteryState
from std_msgs.msg import Float32, String

PARAMS = (
    Param('battery', 'auto', 'auto (real if present), real, or simulated',
          choices=('auto', 'real', 'simulated'), read_only=True),
    Param('capacity_wh', 10.0, 'simulated battery capacity', low=0.001, high=10000.0,
          read_only=True),
    Param('initial_charge', 1.0, 'simulated battery start charge', low=0.0, high=1.0,
          read_only=True),
    Param('base_power_w', 2.0, 'simulated draw of everything but perception', low=0.0,
          high=1000.0),
    Param('drain_factor', 1.0, 'multiplies every simulated drain (demos)', low=0.0, high=1e6),
    Param('period_s', 0.5, 'seconds between publications', low=0.05, high=60.0),
    Param('result_topic', 'perception/result', 'where perception reports energy_j',
          read_only=True),
    Param('sysfs_root', '/sys', 'where RAPL and INA meters are looked for (tests: a fake tree)',
          read_only=True),
)


class SystemMonitor(Node):

    def __init__(self, **kwargs):
        super().__init__('system_monitor', **kwargs)
        # What builds the battery and the subscription is read-only; the rest is applied.
        self.params = ParameterSet(self, PARAMS, apply=self._apply)
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
        self.diagnostics = self.create_publisher(DiagnosticArray, '/diagnostics', 10)
        self.meters = find_meters(Path(p['sysfs_root']))
        if not self.meters:
            self.get_logger().info(f'no RAPL or INA energy meter readable under '
                                   f'{p["sysfs_root"]}: /diagnostics reports modelled energy only')
        for meter in self.meters:
            meter.sample(0.0)
        self.pending_j, self.frames = 0.0, 0
        self.guard = EnergyGuard()
        self.last = self.get_clock().now()
        self.timer = self.create_timer(p['period_s'], self._tick)
        self.get_logger().info('battery: ' + (str(self.supply) if self.supply else 'simulated'))

    def _apply(self, changes: dict) -> None:
        if 'base_power_w' in changes:
            self.battery.base_power_w = changes['base_power_w']
        if 'period_s' in changes:
            self.timer.timer_period_ns = round(changes['period_s'] * 1e9)

    def _on_result(self, msg: String) -> None:
        energy = self.guard.energy(msg.data)
        if energy is None:
            self.get_logger().warning(f'result refused: {self.guard.problem} '
                                      f'({self.guard.refused} so far)', throttle_duration_sec=5.0)
            return
        self.pending_j += energy
        self.frames += 1

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
        self._publish_diagnostics(now.nanoseconds * 1e-9, seconds, msg)
        self.pending_j, self.frames = 0.0, 0
        self.battery_pub.publish(msg)

    def _publish_diagnostics(self, now_s: float, seconds: float, battery: BatteryState) -> None:
        """Modelled energy per frame (from the results) beside the measured one, per meter."""
        values = {'battery_charge': f'{battery.percentage:.4f}',
                  'bad_results': str(self.guard.refused),
                  **{f'bad_results.{k}': str(n) for k, n in self.guard.counts.items()},
                  'frames': str(self.frames),
                  'energy_meters': ', '.join(m.name for m in self.meters) or 'none readable'}
        if self.frames:
            values['modelled_energy_per_frame_mj'] = f'{1e3 * self.pending_j / self.frames:.4f}'
        measured = [m.sample(now_s) for m in self.meters]
        for meter, joules in zip(self.meters, measured):
            if joules is not None and seconds > 0:
                values[f'measured_power_w.{meter.name}'] = f'{joules / seconds:.4f}'
            for problem, count in meter.problems.items():
                values[f'meter_problems.{meter.name}.{problem}'] = str(count)
        known = [j for j in measured if j is not None]
        if self.frames and known:
            values['measured_energy_per_frame_mj'] = f'{1e3 * sum(known) / self.frames:.4f}'
        status = DiagnosticStatus(level=DiagnosticStatus.OK, name='system_monitor',
                                  hardware_id=self.get_fully_qualified_name(), message='ok',
                                  values=[KeyValue(key=k, value=v) for k, v in values.items()])
        array = DiagnosticArray(status=[status])
        array.header.stamp = self.get_clock().now().to_msg()
        self.diagnostics.publish(array)


def main(args: Optional[list] = None) -> None:
    spin_node(SystemMonitor, args)


if __name__ == '__main__':
    main()
