# Copyright 2026 dyn_perception maintainers. Apache-2.0.
"""
What a new user can send the nodes: parameter sets as ``ros2 param set`` sends them, messages.

Each node runs in its own process, as ``ros2 launch`` starts it; a refused set must name its
reason, keep the old value and leave the node running.
"""

import json
import os
from pathlib import Path
import signal
import subprocess
import sys
import time

from diagnostic_msgs.msg import DiagnosticArray
from dyn_perception.runtime.energy.readings import MAX_FRAME_ENERGY_J
from node_processes import ParameterClient, spinning, wait_for
import pytest
import rclpy
from rclpy.node import Node
from sensor_msgs.msg import BatteryState
from std_msgs.msg import String
from test_energy_manager_node import Outside

ROOT = Path(__file__).resolve().parents[1]
TOO_LONG = 'm' * 300  # longer than a file name may be (ENAMETOOLONG, not "no such file")


@pytest.fixture
def node_process():
    """Start a node module in a process of its own; SIGINT must end it with exit 0."""
    started = []

    def start(module: str, *ros_args: str) -> subprocess.Popen:
        process = subprocess.Popen([sys.executable, '-m', module, '--ros-args', *ros_args],
                                   cwd=ROOT, env=dict(os.environ), stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, text=True)
        started.append(process)
        return process

    with rclpy.init():
        yield start
    for process in started:
        process.send_signal(signal.SIGINT)
        output = process.communicate(timeout=20)[0]
        assert process.returncode == 0, output


@pytest.mark.parametrize('node, module, old', [
    ('energy_manager', 'dyn_perception.nodes.energy_manager', ''),
    ('perception', 'dyn_perception.nodes.perception', 'fmnist_eenet'),
])
def test_a_model_name_too_long_for_a_path_is_refused_not_fatal(node_process, node, module, old):
    """``ros2 param set /<node> model mmm...``: OSError in the on-set callback killed the node."""
    process = node_process(module, '-p', 'backend:=sim-edgetpu') if node == 'perception' \
        else node_process(module)
    with spinning(ParameterClient()) as client:
        result = client.set_values(node, model=TOO_LONG)[0]
        assert not result.successful and 'File name too long' in result.reason
        assert client.get_value(node, 'model') == old
        assert process.poll() is None


def test_integer_bounds_are_taken_for_the_double_array_min_charge(node_process):
    """``ros2 param set /energy_manager min_charge "[1, 0, 0, 0]"`` sends an integer array."""
    node_process('dyn_perception.nodes.energy_manager')
    with spinning(ParameterClient()) as client:
        result = client.set_values('energy_manager', min_charge=[1, 0, 0, 0])[0]
        assert result.successful, result.reason
        assert client.get_value('energy_manager', 'min_charge') == [1.0, 0.0, 0.0, 0.0]
        bad = client.set_values('energy_manager', min_charge=[0, 1, 0, 0])[0]
        assert not bad.successful and 'must decrease' in bad.reason
        assert client.get_value('energy_manager', 'min_charge') == [1.0, 0.0, 0.0, 0.0]


def test_a_battery_message_left_at_its_defaults_is_not_an_empty_battery(node_process):
    """``BatteryState()`` (present false, percentage 0) took the robot to critical."""
    process = node_process('dyn_perception.nodes.energy_manager', '-p', 'period_s:=0.2',
                           '-p', 'min_dwell_s:=0.2', '-p', 'down_persist_s:=0.2')
    with spinning(Outside()) as outside:
        wait_for(lambda: outside.diagnostics and outside.battery.get_subscription_count())
        outside.battery.publish(BatteryState(percentage=0.9))
        wait_for(lambda: outside.diagnostics[-1]['charge'] == '0.9000')
        for _ in range(40):  # 2 s: past the jump window, the dwell and the persistence
            outside.battery.publish(BatteryState())
            time.sleep(0.05)
        wait_for(lambda: outside.diagnostics[-1]['bad_readings.charge_absent'] == '40')
        assert outside.diagnostics[-1]['charge'] == '0.9000'
        assert outside.modes[-1] == 'performance' and process.poll() is None
        outside.battery.publish(BatteryState(percentage=0.9, present=True))
        outside.battery.publish(BatteryState(percentage=0.0, present=True))  # a jump, refused
        wait_for(lambda: outside.diagnostics[-1]['bad_readings.charge_jump'] == '1')


VARIANT_CHOICES = 'auto, base, l1l2_30, l1l2_50, l1l2_60, l1l2_70'


def test_a_variant_that_is_not_auto_or_the_models_is_refused_with_the_choices(node_process):
    """``ros2 param set /perception variant ''`` was taken, read back '' and ran as auto."""
    process = node_process('dyn_perception.nodes.perception', '-p', 'backend:=sim-edgetpu')
    with spinning(ParameterClient()) as client:
        for value in ('', 'foo'):
            result = client.set_values('perception', variant=value)[0]
            assert not result.successful and VARIANT_CHOICES in result.reason, result.reason
            assert client.get_value('perception', 'variant') == 'auto'
        assert client.set_values('perception', variant='l1l2_50')[0].successful
        assert client.get_value('perception', 'variant') == 'l1l2_50'
        # A new model is checked against the variant held: B-LeNet has only base.
        other = client.set_values('perception', model='mnist_blenet')[0]
        assert not other.successful and 'auto, base (' in other.reason, other.reason
        assert 'model mnist_blenet' in other.reason
        assert process.poll() is None


@pytest.mark.parametrize('value', ["''", 'foo'])
def test_a_bad_variant_at_start_up_is_one_error_line_and_exit_2(value):
    """``-p variant:=''`` (how bringup writes an empty string) started a node running auto."""
    done = subprocess.run([sys.executable, '-m', 'dyn_perception.nodes.perception', '--ros-args',
                           '-p', 'backend:=sim-edgetpu', '-p', f'variant:={value}'],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 2, done.stderr
    assert len(lines) == 1 and lines[0].startswith('error: perception: variant='), done.stderr
    assert VARIANT_CHOICES in lines[0]


class ResultSender(Node):
    """Publish perception results as another process would; hear the monitor's outputs."""

    def __init__(self):
        super().__init__('hostile_result_sender')
        self.results = self.create_publisher(String, 'perception/result', 50)
        self.charges, self.status = [], []
        self.create_subscription(BatteryState, 'battery_state',
                                 lambda m: self.charges.append(m.percentage), 10)
        self.create_subscription(DiagnosticArray, '/diagnostics', self._on_diagnostics, 50)

    def _on_diagnostics(self, msg: DiagnosticArray) -> None:
        self.status += [{kv.key: kv.value for kv in s.values} for s in msg.status
                        if s.name == 'system_monitor']


def test_an_energy_no_frame_could_draw_is_refused_and_counted_not_drained(node_process):
    """``ros2 topic pub /perception/result ... '{"energy_j": 1e300}'`` emptied the battery."""
    process = node_process('dyn_perception.nodes.system_monitor', '-p', 'battery:=simulated',
                           '-p', 'period_s:=0.1', '-p', 'base_power_w:=0.0')
    records = {'implausible': ['1e300', str(MAX_FRAME_ENERGY_J * 1.01)],
               'not_finite': ['NaN', 'Infinity', '-Infinity'], 'negative': ['-1'],
               'unreadable': ['"5"', 'true', '[1]']}
    with spinning(ResultSender()) as sender:
        # Until the monitor hears one, records are lost to discovery, not refused.
        wait_for(lambda: sender.results.publish(String(data=json.dumps({'energy_j': 0.0})))
                 or any(s['frames'] != '0' for s in sender.status), what='for a heard result')
        for values in records.values():
            for value in values:
                sender.results.publish(String(data=f'{{"energy_j": {value}}}'))
        sender.results.publish(String(data='not json'))
        sender.results.publish(String(data=json.dumps({'energy_j': 0.004})))  # a real frame
        wait_for(lambda: sender.status[-1]['bad_results'] == '10', what='for 10 refusals')
        last = sender.status[-1]
        for reason, values in records.items():
            expected = len(values) + (reason == 'unreadable')  # and 'not json'
            assert last[f'bad_results.{reason}'] == str(expected), last
        assert min(sender.charges) > 0.999 and process.poll() is None


def test_a_result_topic_ros_refuses_is_one_error_line_and_exit_2():
    """``-p result_topic:='bad topic'``: InvalidTopicNameException, a traceback and exit 1."""
    done = subprocess.run([sys.executable, '-m', 'dyn_perception.nodes.system_monitor',
                           '--ros-args', '-p', "result_topic:='bad topic'"],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 2, done.stderr
    assert len(lines) == 1 and lines[0].startswith('error: ') and 'bad topic' in lines[0], lines
