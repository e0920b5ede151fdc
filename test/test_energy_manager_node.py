# Copyright 2026 dyn_perception maintainers. Apache-2.0.
"""
The energy manager node through its topics: flapping readings, bad readings, diagnostics.

The node runs in its own process (as ``ros2 launch`` starts it); this test publishes
``battery_state`` and ``cpu_load`` and reads ``energy_mode`` and ``/diagnostics``.
"""

import os
from pathlib import Path
import signal
import subprocess
import sys
import time

from diagnostic_msgs.msg import DiagnosticArray
from node_processes import ParameterClient, spinning
import pytest
import rclpy
from rclpy.node import Node
from sensor_msgs.msg import BatteryState
from std_msgs.msg import Float32, String

ROOT = Path(__file__).resolve().parents[1]


class Outside(Node):

    def __init__(self):
        super().__init__('energy_test_outside')
        self.battery = self.create_publisher(BatteryState, 'battery_state', 10)
        self.load = self.create_publisher(Float32, 'cpu_load', 10)
        self.modes, self.diagnostics = [], []
        self.create_subscription(String, 'energy_mode', lambda m: self.modes.append(m.data), 50)
        self.create_subscription(DiagnosticArray, '/diagnostics', self._on_diagnostics, 50)

    def _on_diagnostics(self, msg: DiagnosticArray) -> None:
        for status in msg.status:
            if status.name == 'energy_manager':
                self.diagnostics.append({kv.key: kv.value for kv in status.values})


def wait_for(condition, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f'timed out after {timeout} s'
        time.sleep(0.01)


@pytest.fixture
def manager():
    """energy_manager in a process of its own, and a node that talks to it."""
    command = [sys.executable, '-m', 'dyn_perception.nodes.energy_manager', '--ros-args',
               '-p', 'period_s:=0.2', '-p', 'min_dwell_s:=1.0', '-p', 'down_persist_s:=1.0']
    process = subprocess.Popen(command, cwd=ROOT, env=dict(os.environ),
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    with rclpy.init(), spinning(Outside()) as outside:
        try:
            wait_for(lambda: outside.diagnostics and outside.battery.get_subscription_count()
                     and outside.load.get_subscription_count())
            yield outside, process
        finally:
            process.send_signal(signal.SIGINT)
            output = process.communicate(timeout=10)[0]
    assert process.returncode == 0, output


def test_flapping_readings_do_not_flap_the_mode(manager):
    """Charge 0.55/0.70 every 50 ms and load around 0.9 for 6 s: at most one switch."""
    outside, _ = manager
    outside.battery.publish(BatteryState(percentage=0.9))
    wait_for(lambda: outside.modes[-1:] == ['performance'])
    start = len(outside.modes)
    for k in range(120):
        outside.battery.publish(BatteryState(percentage=0.55 if k % 2 else 0.70))
        outside.load.publish(Float32(data=0.9 + (0.03 if k % 2 else -0.03)))
        time.sleep(0.05)
    seen = outside.modes[start:]
    assert sum(a != b for a, b in zip(seen, seen[1:])) <= 1, seen
    assert outside.diagnostics[-1]['bad_readings'] == '0'


def test_bad_readings_are_counted_never_read_as_full(manager):
    outside, process = manager
    outside.battery.publish(BatteryState(percentage=0.2))
    wait_for(lambda: outside.modes[-1:] == ['eco'])
    for value in (float('nan'), 95.0, -0.5):  # unknown, a 0-100 driver, nonsense
        outside.battery.publish(BatteryState(percentage=value))
    outside.battery.publish(BatteryState(percentage=0.2))
    outside.battery.publish(BatteryState(percentage=0.95))  # +0.75 at once: a jump
    for value in (float('nan'), -1.0, 85.0):
        outside.load.publish(Float32(data=value))
    wait_for(lambda: outside.diagnostics[-1]['bad_readings'] == '7')
    last = outside.diagnostics[-1]
    assert last['bad_readings.charge_nan'] == '1'
    assert last['bad_readings.charge_out_of_range'] == '2'
    assert last['bad_readings.charge_jump'] == '1'
    assert last['bad_readings.load_nan'] == '1' and last['bad_readings.load_out_of_range'] == '2'
    assert float(last['charge']) == pytest.approx(0.2, abs=1e-3)
    time.sleep(1.5)  # past every dwell and persistence time: still eco, never "full"
    assert outside.modes[-1] == 'eco' and process.poll() is None


def test_the_accuracy_budget_is_set_like_ros2_param_set_and_needs_a_model(manager):
    outside, process = manager
    with spinning(ParameterClient()) as client:
        alone = client.set_values('energy_manager', max_mean_loss=1.0)[0]
        assert not alone.successful and 'needs model' in alone.reason
        assert client.get_value('energy_manager', 'max_mean_loss') == -1.0
        assert not client.set_values('energy_manager', max_mean_loss=-5.0)[0].successful
        both = client.set_values('energy_manager', model='fmnist_eenet', max_mean_loss=1.0)[0]
        assert both.successful, both.reason
        assert client.get_value('energy_manager', 'max_mean_loss') == 1.0
        start = len(outside.diagnostics)
        for _ in range(30):  # a full battery, read long enough for the policy to decide
            outside.battery.publish(BatteryState(percentage=1.0))
            time.sleep(0.05)
        wait_for(lambda: any('expected_mean_loss_points' in d
                             for d in outside.diagnostics[start:]))
        latest = [d for d in outside.diagnostics if 'expected_mean_loss_points' in d][-1]
        assert float(latest['expected_mean_loss_points']) == 0.0  # performance loses nothing
        assert process.poll() is None


def test_a_high_cpu_load_never_steps_into_a_mode_on_the_host_core(manager):
    """
    fmnist_eenet_patch: balanced drives a TPU (0.02 cores), eco and critical run on a host core.

    A loaded host at a charge that calls for balanced keeps balanced with the model's costs;
    without them the load takes one mode down, into eco.
    """
    outside, process = manager
    with spinning(ParameterClient()) as client:
        result = client.set_values('energy_manager', model='fmnist_eenet_patch')[0]
        assert result.successful, result.reason

        def feed(seconds: float) -> None:
            for _ in range(int(seconds / 0.05)):
                outside.battery.publish(BatteryState(percentage=0.5))
                outside.load.publish(Float32(data=0.97))
                time.sleep(0.05)

        feed(3.0)  # past the dwell (1 s) and the persistence (1 s) of a step down
        assert outside.modes[-1] == 'balanced'
        assert outside.diagnostics[-1]['cpu_load_high'] == 'True'
        assert client.set_values('energy_manager', model='')[0].successful
        feed(3.0)
        wait_for(lambda: outside.modes[-1:] == ['eco'], timeout=5.0)
        assert process.poll() is None
