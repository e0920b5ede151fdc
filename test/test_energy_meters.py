# Copyright 2026 dyn_perception maintainers. Apache-2.0.
"""RAPL and INA energy meters against a fake sysfs tree (the build machines have neither)."""

import json
import os
from pathlib import Path
import signal
import subprocess
import sys
import time

from diagnostic_msgs.msg import DiagnosticArray
from dyn_perception.nodes.system_monitor import SystemMonitor
from dyn_perception.runtime.energy.meters import find_meters
from node_processes import ParameterClient, spinning
import pytest
import rclpy
from rclpy.node import Node
from rclpy.parameter import Parameter
from std_msgs.msg import String

ROOT = Path(__file__).resolve().parents[1]


def fake_sysfs(root: Path) -> dict:
    """One RAPL package with a sub-zone, an INA226 with a power sensor, an INA3221 by I2C."""
    files = {
        'class/powercap/intel-rapl:0/name': 'package-0',
        'class/powercap/intel-rapl:0/energy_uj': '1000000',
        'class/powercap/intel-rapl:0/max_energy_range_uj': '2000000',
        'class/powercap/intel-rapl:0:0/name': 'core',  # part of the package: not counted
        'class/powercap/intel-rapl:0:0/energy_uj': '5',
        'class/hwmon/hwmon0/name': 'ina226',
        'class/hwmon/hwmon0/power1_input': '2500000',  # 2.5 W
        'class/hwmon/hwmon1/name': 'coretemp',
        'bus/i2c/devices/1-0040/hwmon/hwmon7/name': 'ina3221',
        'bus/i2c/devices/1-0040/hwmon/hwmon7/energy1_input': '100',
    }
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text + '\n')
    return {name: root / name for name in files}


def test_meters_are_found_and_read_with_wrap_and_bad_values(tmp_path):
    paths = fake_sysfs(tmp_path)
    meters = {m.name: m for m in find_meters(tmp_path)}
    assert sorted(meters) == ['ina226.hwmon0', 'ina3221.hwmon7', 'rapl.package-0']
    for meter in meters.values():
        assert meter.sample(0.0) is None  # the first sample only starts the interval
    rapl, ina, ina_counter = (meters['rapl.package-0'], meters['ina226.hwmon0'],
                              meters['ina3221.hwmon7'])
    paths['class/powercap/intel-rapl:0/energy_uj'].write_text('1500000')
    assert rapl.sample(1.0) == pytest.approx(0.5)
    paths['class/powercap/intel-rapl:0/energy_uj'].write_text('100000')  # wrapped at 2 J
    assert rapl.sample(2.0) == pytest.approx(0.6) and rapl.problems['counter_wrap'] == 1
    assert ina.sample(2.0) == pytest.approx(5.0)  # 2.5 W over 2 s
    paths['class/hwmon/hwmon0/power1_input'].write_text('-7')
    assert ina.sample(3.0) is None and ina.problems['negative_power'] == 1
    path = paths['bus/i2c/devices/1-0040/hwmon/hwmon7/energy1_input']
    path.write_text('50')  # backwards and no known range: unusable, not negative
    assert ina_counter.sample(1.0) is None and ina_counter.problems['counter_backwards'] == 1
    path.write_text('garbage')
    assert ina_counter.sample(2.0) is None and ina_counter.problems['unreadable'] == 1


def test_no_meter_on_an_empty_tree(tmp_path):
    assert find_meters(tmp_path) == []


class Listener(Node):

    def __init__(self):
        super().__init__('meter_test_listener')
        self.results = self.create_publisher(String, 'perception/result', 10)
        self.status = []
        self.create_subscription(DiagnosticArray, '/diagnostics', self._on, 50)

    def _on(self, msg: DiagnosticArray) -> None:
        self.status += [{kv.key: kv.value for kv in s.values} for s in msg.status
                        if s.name == 'system_monitor']


def test_system_monitor_reports_measured_beside_modelled_energy(tmp_path):
    paths = fake_sysfs(tmp_path)
    command = [sys.executable, '-m', 'dyn_perception.nodes.system_monitor', '--ros-args',
               '-p', 'period_s:=0.3', '-p', f'sysfs_root:={tmp_path}']
    process = subprocess.Popen(command, cwd=ROOT, env=dict(os.environ), text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    with rclpy.init(), spinning(Listener()) as node:
        try:
            deadline = time.monotonic() + 20
            while not (node.status and node.results.get_subscription_count()):
                assert time.monotonic() < deadline
                time.sleep(0.02)
            assert 'rapl.package-0' in node.status[-1]['energy_meters']
            found = None
            while found is None:
                assert time.monotonic() < deadline
                node.results.publish(String(data=json.dumps({'energy_j': 0.004})))
                node.results.publish(String(data=json.dumps({'energy_j': float('nan')})))
                counter = paths['class/powercap/intel-rapl:0/energy_uj']
                counter.write_text(str(int(counter.read_text()) + 1000))
                time.sleep(0.05)
                found = next((s for s in node.status if 'measured_energy_per_frame_mj' in s
                              and 'modelled_energy_per_frame_mj' in s), None)
            assert float(found['modelled_energy_per_frame_mj']) == pytest.approx(4.0)
            assert float(found['measured_energy_per_frame_mj']) > 0
            assert int(node.status[-1]['bad_results']) > 0
        finally:
            process.send_signal(signal.SIGINT)
            output = process.communicate(timeout=10)[0]
    assert process.returncode == 0, output


def test_system_monitor_applies_what_ros2_param_set_changes_and_refuses_the_rest(tmp_path):
    """A change it accepts takes effect; what it cannot change live is read-only, not ignored."""
    with rclpy.init(), spinning(SystemMonitor(parameter_overrides=[
            Parameter('battery', value='simulated'), Parameter('sysfs_root', value=str(tmp_path))
    ])) as monitor, spinning(ParameterClient()) as client:
        for name, value in (('capacity_wh', 5.0), ('initial_charge', 0.5),
                            ('battery', 'real'), ('result_topic', 'elsewhere')):
            result = client.set_values('system_monitor', **{name: value})[0]
            assert not result.successful and 'read-only' in result.reason, name
        assert monitor.battery.capacity_j == 3600.0 * 10.0 and monitor.battery.charge == 1.0
        done = client.set_values('system_monitor', base_power_w=7, period_s=1.5)
        assert all(r.successful for r in done), [r.reason for r in done]
        assert monitor.battery.base_power_w == 7.0
        assert monitor.timer.timer_period_ns == 1_500_000_000
