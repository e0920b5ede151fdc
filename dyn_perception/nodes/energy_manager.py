"""
energy_manager: watch battery and CPU load, publish the operating mode on ``energy_mode``.

``policy:=auto`` runs ``runtime.energy.ModePolicy`` (smoothing, hysteresis on charge and load,
persistence, swap-aware switching with the mode costs of ``model``'s front); a mode name pins
that mode. Bad readings are refused by ``runtime.energy.ReadingGuard``, logged (throttled) and
counted on ``/diagnostics``. The mode is re-published every ``period_s`` (latched for late
joiners) and at once on change.
"""

import math
from typing import Optional

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from dyn_perception.nodes.params import Param, ParameterSet
from dyn_perception.nodes.spin import spin_node
from dyn_perception.runtime.energy import ModePolicy, PolicyConfig, ReadingGuard
from dyn_perception.runtime.energy.front import load_mode_costs
from dyn_perception.runtime.modes import load_modes
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile
from sensor_msgs.msg import BatteryState
from std_msgs.msg import Float32, String

LATCHED = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL)
POLICY_KEYS = ('cpu_load_high', 'load_hysteresis', 'hysteresis', 'min_dwell_s',
               'down_persist_s', 'charge_tau_s', 'load_tau_s', 'fps')
WARN_EVERY_S = 5.0


class EnergyManager(Node):

    def __init__(self, **kwargs):
        super().__init__('energy_manager', **kwargs)
        self.modes = tuple(m.name for m in load_modes())
        d = PolicyConfig(modes=self.modes)
        self.params = ParameterSet(self, (
            Param('policy', 'auto', 'auto, or a mode name to pin', choices=('auto', *self.modes)),
            Param('min_charge', list(d.min_charge),
                  'state of charge (0-1) at or above which each mode may run, best mode first'),
            Param('cpu_load_high', d.cpu_load_high,
                  'smoothed CPU load (0-1) above which one mode down is taken', low=0.01,
                  high=1.0),
            Param('load_hysteresis', d.load_hysteresis,
                  'the load counts as normal again below cpu_load_high minus this', low=0.0,
                  high=0.9),
            Param('hysteresis', d.hysteresis, 'charge margin needed to step back up', low=0.0,
                  high=0.5),
            Param('min_dwell_s', d.min_dwell_s, 'seconds a mode is held before any switch',
                  low=0.0, high=3600.0),
            Param('down_persist_s', d.down_persist_s,
                  'seconds the condition for a step down must last before it is taken',
                  low=0.0, high=3600.0),
            Param('charge_tau_s', d.charge_tau_s, 'time constant of the charge smoothing',
                  low=0.0, high=600.0),
            Param('load_tau_s', d.load_tau_s, 'time constant of the CPU load smoothing',
                  low=0.0, high=600.0),
            Param('fps', d.fps, 'frame rate that swaps are costed at', low=0.1, high=1000.0),
            Param('model', '', 'model whose mode costs (manifest mode_configs) make switching '
                  'swap-aware; empty: switch on bounds alone'),
            Param('max_mean_loss', -1.0,
                  'accuracy points the run may lose on average (each mode charged its '
                  'calibrated 95% loss bound, needs model); a step down that would exceed it '
                  'is cut short; negative: no budget',
                  low=-1.0, high=100.0),
            Param('period_s', 1.0, 'seconds between mode publications', low=0.05, high=60.0),
        ), self._validate, self._apply)
        self.guard = ReadingGuard()
        self.costs = self._costs(self.params.value('model'))
        self.policy = self._policy(self.params.values(), None)
        self.published: Optional[str] = None
        self.publisher = self.create_publisher(String, 'energy_mode', LATCHED)
        self.diagnostics = self.create_publisher(DiagnosticArray, '/diagnostics', 10)
        self.create_subscription(BatteryState, 'battery_state', self._on_battery, 10)
        self.create_subscription(Float32, 'cpu_load', self._on_cpu_load, 10)
        self.timer = self.create_timer(self.params.value('period_s'), self._tick)

    def _config(self, p: dict) -> PolicyConfig:
        budget = p['max_mean_loss'] if p['max_mean_loss'] >= 0 else None
        return PolicyConfig(modes=self.modes, min_charge=tuple(p['min_charge']),
                            max_mean_loss=budget, **{key: p[key] for key in POLICY_KEYS})

    def _costs(self, model: str) -> Optional[dict]:
        return load_mode_costs(model, self.modes, self.params.value('fps')) if model else None

    def _policy(self, p: dict, start: Optional[str]) -> ModePolicy:
        old = getattr(self, 'policy', None)
        policy = ModePolicy(self._config(p), start, self.costs,
                            old.capacity_j if old is not None else None)
        if old is not None:  # keep what was read: a parameter change is not a new battery
            policy.charge, policy.load, policy.load_high = old.charge, old.load, old.load_high
            policy.switches, policy.run_s, policy.loss_s = old.switches, old.run_s, old.loss_s
        return policy

    def _validate(self, proposed: dict, changed: set) -> Optional[str]:
        if proposed['max_mean_loss'] >= 0 and not proposed['model']:
            return ('max_mean_loss needs model: the expected accuracy of each mode comes from '
                    "the model's mode costs")
        try:
            self._config(proposed)
            if 'model' in changed and proposed['model']:
                load_mode_costs(proposed['model'], self.modes, proposed['fps'])
        except ValueError as err:
            return str(err)
        return None

    def _apply(self, changes: dict) -> None:
        if 'model' in changes or 'fps' in changes:
            self.costs = self._costs(self.params.value('model'))
        self.policy = self._policy(self.params.values(), self.policy.mode)
        if 'period_s' in changes:
            self.timer.timer_period_ns = round(changes['period_s'] * 1e9)
        self._tick()

    def _now(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def _refused(self) -> None:
        self.get_logger().warning(f'refused reading: {self.guard.problem} '
                                  f'({self.guard.refused} refused so far)',
                                  throttle_duration_sec=WARN_EVERY_S)

    def _on_battery(self, msg: BatteryState) -> None:
        now = self._now()
        charge = self.guard.charge(msg.percentage, now, msg.present)
        if charge is None:
            self._refused()
            return
        volts, amp_hours = msg.voltage, msg.capacity
        if math.isfinite(volts) and math.isfinite(amp_hours) and volts > 0 and amp_hours > 0:
            self.policy.capacity_j = 3600.0 * amp_hours * volts
        self.policy.observe_charge(now, charge)
        self._tick(only_on_change=True)

    def _on_cpu_load(self, msg: Float32) -> None:
        load = self.guard.load(msg.data)
        if load is None:
            self._refused()
            return
        self.policy.observe_load(self._now(), load)

    def _tick(self, only_on_change: bool = False) -> None:
        mode = self.policy.decide(self._now())
        pinned = self.params.value('policy')
        mode = mode if pinned == 'auto' else pinned
        if only_on_change and mode == self.published:
            return
        if mode != self.published:
            self.get_logger().info(f'mode {mode} ({self.policy.reason})')
        self.published = mode
        self.publisher.publish(String(data=mode))
        if not only_on_change:
            self._publish_diagnostics(mode)

    def _publish_diagnostics(self, mode: str) -> None:
        p = self.policy
        values = {'mode': mode, 'policy': self.params.value('policy'),
                  'charge': 'unknown' if p.charge is None else f'{p.charge:.4f}',
                  'cpu_load': 'unknown' if p.load is None else f'{p.load:.4f}',
                  'cpu_load_high': str(p.load_high), 'switches': str(p.switches),
                  'reason': p.reason, 'bad_readings': str(self.guard.refused),
                  **{f'bad_readings.{k}': str(n) for k, n in self.guard.counts.items()}}
        rate = p.discharge_rate()
        if rate is not None:
            values['discharge_per_hour'] = f'{3600.0 * rate:.4f}'
        if p.costs is not None and p.run_s > 0:  # what the accuracy budget is held to
            values['expected_mean_loss_points'] = f'{100.0 * p.loss_s / p.run_s:.4f}'
        level = DiagnosticStatus.WARN if self.guard.refused else DiagnosticStatus.OK
        status = DiagnosticStatus(
            level=level, name='energy_manager', hardware_id=self.get_fully_qualified_name(),
            message=f'{self.guard.refused} readings refused' if self.guard.refused else 'ok',
            values=[KeyValue(key=k, value=v) for k, v in values.items()])
        array = DiagnosticArray(status=[status])
        array.header.stamp = self.get_clock().now().to_msg()
        self.diagnostics.publish(array)


def main(args: Optional[list] = None) -> None:
    spin_node(EnergyManager, args)


if __name__ == '__main__':
    main()
