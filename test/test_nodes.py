# Copyright 2026 dyn_perception maintainers. Apache-2.0.
"""
The ROS nodes with real rclpy: images in, results and diagnostics out, parameters, modes.

Every test runs the shipped model on LiteRT in this process, talks to the nodes over topics
and calls their parameter services the way ``ros2 param set`` does.
"""

import json
import shutil
import threading
import time

from diagnostic_msgs.msg import DiagnosticArray
from dyn_perception.nodes.conversions import MALFORMED_KINDS, rgb_to_image
from dyn_perception.nodes.energy_manager import EnergyManager
from dyn_perception.nodes.perception import Perception
from dyn_perception.nodes.qos import image_qos
from dyn_perception.runtime.artifacts import PROFILE_FILE, resolve_model_dir
from dyn_perception.runtime.datasets import load_dataset
from dyn_perception.runtime.frames import letterbox
from dyn_perception.runtime.modes import load_modes
import numpy as np
import pytest
from rcl_interfaces.msg import Parameter as ParameterMsg
from rcl_interfaces.srv import SetParameters
import rclpy
from rclpy.executors import MultiThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from sensor_msgs.msg import BatteryState, Image
from std_msgs.msg import String


class Harness(Node):
    """The outside world: publishes camera frames and modes, collects what the nodes say."""

    def __init__(self, image_reliability: str = 'best_effort'):
        super().__init__('test_harness')
        self.images = self.create_publisher(Image, 'image_raw', image_qos(image_reliability))
        self.truth = self.create_publisher(String, 'image_raw/ground_truth', 50)
        self.modes = self.create_publisher(String, 'energy_mode', 10)
        self.battery = self.create_publisher(BatteryState, 'battery_state', 10)
        self.results, self.diagnostics, self.published_modes = [], [], []
        self.create_subscription(String, 'perception/result',
                                 lambda m: self.results.append(json.loads(m.data)), 100)
        self.create_subscription(DiagnosticArray, '/diagnostics',
                                 lambda m: self.diagnostics.append(m), 10)
        self.create_subscription(String, 'energy_mode',
                                 lambda m: self.published_modes.append(m.data), 10)
        test = load_dataset('fashion_mnist').test
        self.frames = [(letterbox(test.images[i], 160, 120), int(test.labels[i]))
                       for i in range(64)]
        self.sent = 0
        self.answered = lambda: len(self.results)

    def send(self, count: int, msg_factory=None, in_flight: int = 2,
             with_labels: bool = True) -> None:
        """
        Publish frames, keeping at most `in_flight` unanswered.

        The image subscription is best-effort with a short history (a live camera), so a
        harness that outpaces a slow machine would lose frames in DDS, not in the node.
        """
        for _ in range(count):
            wait_for(lambda: self.answered() >= self.sent - in_flight)
            image, label = self.frames[self.sent % len(self.frames)]
            msg = msg_factory(image) if msg_factory else rgb_to_image(image)
            msg.header.stamp = self.get_clock().now().to_msg()
            if with_labels:
                self.truth.publish(String(data=json.dumps(
                    {'stamp': [msg.header.stamp.sec, msg.header.stamp.nanosec],
                     'class_id': label})))
            self.images.publish(msg)
            self.sent += 1

    def set_parameters(self, node: str, timeout: float = 20.0, **values) -> list:
        """Call <node>/set_parameters, as `ros2 param set` does; wait up to ``timeout`` s."""
        client = self.create_client(SetParameters, f'/{node}/set_parameters')
        assert client.wait_for_service(timeout_sec=10.0)
        request = SetParameters.Request(parameters=[
            ParameterMsg(name=k, value=Parameter(k, value=v).get_parameter_value())
            for k, v in values.items()])
        future = client.call_async(request)
        wait_for(future.done, timeout)
        self.destroy_client(client)
        return future.result().results


def wait_for(condition, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f'timed out after {timeout} s'
        time.sleep(0.005)


@pytest.fixture
def graph(request):
    """Perception (LiteRT, one worker) and the harness on a background executor."""
    reliability = getattr(request, 'param', 'best_effort')  # of image_raw, on both sides
    with rclpy.init():
        perception = Perception(parameter_overrides=[
            Parameter('backend', value='litert'), Parameter('num_tpus', value=1),
            Parameter('mode', value='performance'), Parameter('queue_capacity', value=64),
            Parameter('diagnostics_period_s', value=0.2),
            Parameter('image_reliability', value=reliability)])
        harness = Harness(reliability)
        harness.answered = lambda: len(harness.results) + sum(perception.malformed.values())
        executor = MultiThreadedExecutor()
        executor.add_node(perception)
        executor.add_node(harness)
        thread = threading.Thread(target=executor.spin, daemon=True)
        thread.start()
        # Discovery done: every subscription on either side matched to its publisher (a
        # reliable reader that has not yet matched its writer receives the first samples late).
        wait_for(lambda: all(sub.get_publisher_count() > 0
                             for node in (perception, harness) for sub in node.subscriptions)
                 and all(pub.get_subscription_count() > 0
                         for pub in (harness.images, harness.truth, harness.modes)))
        try:
            yield perception, harness
        finally:
            executor.shutdown()
            perception.destroy_node()
            harness.destroy_node()
            thread.join(timeout=5)


def test_images_in_results_and_diagnostics_out(graph):
    perception, harness = graph
    harness.send(40)
    wait_for(lambda: len(harness.results) >= 40)
    records = harness.results[:40]
    assert [r['frame'] for r in records] == list(range(40)), 'results in frame order'
    for r in records:
        assert r['schema'] == 'dyn_perception/result/1' and r['status'] == 'ok'
        assert r['label'] == perception.engine.manifest.labels[r['class_id']]
        assert 0 <= r['exit'] < r['exits'] == 3 and 0 < r['score'] <= 1
        assert r['latency_ms'] > 0 and r['energy_j'] > 0 and r['mode'] == 'performance'
    labelled = [r for r in records if r['correct'] is not None]
    assert len(labelled) == 40, 'ground truth travels with the replay'
    assert sum(r['correct'] for r in labelled) / len(labelled) > 0.8
    wait_for(lambda: any(kv.key == 'completed' and int(kv.value) >= 40
                         for m in harness.diagnostics for kv in m.status[0].values))
    values = {kv.key: kv.value for kv in harness.diagnostics[-1].status[0].values}
    for key in ('fps', 'dropped', 'exit_histogram', 'energy_per_frame_mj', 'accuracy',
                'utilisation.cpu0', 'malformed'):
        assert key in values
    assert sum(int(n) for n in values['exit_histogram'].split()) >= 40


@pytest.mark.parametrize('graph', ['reliable'], indirect=True)
def test_reliable_images_all_arrive(graph):
    # What the launch description uses between processes; a history of 2 means at most two
    # frames may wait unanswered, and then none is lost.
    perception, harness = graph
    harness.send(20, in_flight=1)
    wait_for(lambda: len(harness.results) >= 20)
    assert [r['frame'] for r in harness.results] == list(range(20))
    assert all(r['correct'] is not None for r in harness.results)


def test_a_frame_whose_label_never_comes_goes_on_unlabelled(graph):
    # A label publisher exists, so each frame waits up to 0.5 s for its label; the release
    # timer runs only while a frame waits, and hands it on without one.
    perception, harness = graph
    assert perception.release_timer.is_canceled()
    start = time.monotonic()
    harness.send(3, with_labels=False, in_flight=3)
    wait_for(lambda: len(harness.results) >= 3)
    assert time.monotonic() - start >= 0.45
    assert [r['correct'] for r in harness.results] == [None, None, None]
    wait_for(perception.release_timer.is_canceled, timeout=2.0)


def test_parameters_are_checked_like_ros2_param_set(graph):
    perception, harness = graph
    ok = harness.set_parameters('perception', mode='eco')
    assert ok[0].successful and perception.get_parameter('mode').value == 'eco'
    assert perception.engine.settings.mode == 'eco'
    rejected = {
        'mode': 'turbo', 'backend': 'gpu', 'exit_policy': 'vibes', 'num_tpus': 99,
        'thresholds': [0.1, 0.2, 0.3], 'model': 'no_such_model',
        'image_reliability': 'reliable',  # read-only: the subscription exists already
    }
    for name, value in rejected.items():
        result = harness.set_parameters('perception', **{name: value})[0]
        assert not result.successful, name
        assert result.reason, f'{name} refused without a reason'
    assert perception.get_parameter('mode').value == 'eco', 'old value kept'
    assert perception.get_parameter('backend').value == 'litert'
    assert perception.engine.settings.thresholds == ()
    custom = harness.set_parameters('perception', thresholds=[0.5, 0.5])[0]
    assert custom.successful and perception.engine.settings.thresholds == (0.5, 0.5)
    bad_type = harness.set_parameters('perception', thresholds=['a'])[0]
    assert not bad_type.successful
    # `ros2 param set /perception diagnostics_period_s 2` sends an integer: taken as 2.0,
    # and ROS's range still applies to it.
    widened = harness.set_parameters('perception', diagnostics_period_s=2)[0]
    assert widened.successful, widened.reason
    assert perception.get_parameter('diagnostics_period_s').value == 2.0
    assert perception.get_parameter('diagnostics_period_s').type_ == Parameter.Type.DOUBLE
    assert perception.diagnostics_timer.timer_period_ns == 2_000_000_000  # it takes effect
    assert not harness.set_parameters('perception', diagnostics_period_s=0)[0].successful
    described = perception.describe_parameter('num_tpus')
    assert described.integer_range[0].to_value == 16 and described.description
    mode = perception.describe_parameter('mode')
    assert mode.additional_constraints == 'one of: auto, ' + ', '.join(perception.modes)


def test_energy_mode_changes_thresholds_within_a_few_frames(graph):
    perception, harness = graph
    harness.send(20)
    wait_for(lambda: len(harness.results) >= 20)
    assert harness.set_parameters('perception', mode='auto')[0].successful
    harness.modes.publish(String(data='critical'))
    wait_for(lambda: perception.engine.settings.mode == 'critical')
    assert perception.get_parameter('mode').value == 'auto'
    switched_at = harness.sent
    harness.send(60)
    wait_for(lambda: len(harness.results) >= switched_at + 60)
    after = harness.results[switched_at:]
    first_critical = next(i for i, r in enumerate(after) if r['mode'] == 'critical')
    assert first_critical <= perception.params.value('queue_capacity')
    assert all(r['mode'] == 'critical' for r in after[first_critical:])
    before = harness.results[:20]
    mean_exit = (lambda rows: np.mean([r['exit'] for r in rows]))
    assert mean_exit(after[first_critical:]) < mean_exit(before)
    harness.modes.publish(String(data='warp-speed'))
    time.sleep(0.5)
    assert perception.engine.settings.mode == 'critical'


@pytest.mark.parametrize('break_it, reason', [
    (lambda m: setattr(m, 'encoding', 'yuv422'), 'encoding'),
    (lambda m: setattr(m, 'step', m.step - 1), 'step'),
    (lambda m: setattr(m, 'data', bytes(m.data)[:100]), 'size'),
    (lambda m: (setattr(m, 'height', 0), setattr(m, 'data', b'')), 'empty'),
])
def test_malformed_images_are_counted_and_skipped(graph, break_it, reason):
    perception, harness = graph

    def broken(image):
        msg = rgb_to_image(image)
        break_it(msg)
        return msg

    harness.send(3, broken)
    harness.send(5)
    wait_for(lambda: len(harness.results) >= 5)
    assert sum(perception.malformed.values()) == 3
    assert any(reason in key for key in perception.malformed)
    assert all(r['status'] == 'ok' for r in harness.results)


def test_energy_manager_follows_battery_with_hysteresis():
    with rclpy.init():
        manager = EnergyManager(parameter_overrides=[
            Parameter('min_dwell_s', value=0.0), Parameter('period_s', value=0.1),
            # An integer for a double, as `-p charge_tau_s:=0` and a YAML `0` give.
            Parameter('down_persist_s', value=0.0), Parameter('charge_tau_s', value=0)])
        harness = Harness()
        executor = MultiThreadedExecutor()
        executor.add_node(manager)
        executor.add_node(harness)
        thread = threading.Thread(target=executor.spin, daemon=True)
        thread.start()
        try:
            modes = [m.name for m in load_modes()]
            for charge, expected in ((0.9, modes[0]), (0.5, modes[1]), (0.62, modes[1]),
                                     (0.7, modes[0]), (0.3, modes[2]), (0.05, modes[-1])):
                harness.battery.publish(BatteryState(percentage=charge))
                wait_for(lambda: manager.published == expected, timeout=5.0)
                wait_for(lambda: harness.published_modes[-1:] == [expected], timeout=5.0)
            pinned = harness.set_parameters('energy_manager', policy='eco')[0]
            assert pinned.successful
            wait_for(lambda: harness.published_modes[-1:] == ['eco'], timeout=5.0)
            bad = harness.set_parameters('energy_manager', min_charge=[0.1, 0.5, 0.2, 0.0])[0]
            assert not bad.successful and 'decrease' in bad.reason
        finally:
            executor.shutdown()
            manager.destroy_node()
            harness.destroy_node()
            thread.join(timeout=5)


def test_bad_ground_truth_is_counted_never_fatal(graph):
    # Each of these once ended the process (OverflowError, unhashable list) or was taken.
    perception, harness = graph
    for text in ('{"stamp": [1, 2], "class_id": 1e999}', '{"stamp": [[1], [2]], "class_id": 1}',
                 '{"stamp": [1, 2], "class_id": 99}', '{"stamp": [1, 2], "class_id": true}',
                 '[1, 2]', 'not json'):
        harness.truth.publish(String(data=text))
    wait_for(lambda: perception.malformed['ground_truth'] >= 6)
    harness.send(5)
    wait_for(lambda: len(harness.results) >= 5)
    assert all(r['status'] == 'ok' and r['correct'] is not None for r in harness.results)


def test_malformed_reasons_are_a_fixed_set(graph):
    perception, harness = graph
    steps = iter(range(1, 16))

    def bad_step(image):
        msg = rgb_to_image(image)
        msg.step = next(steps)  # 15 different wrong values
        return msg

    harness.send(15, bad_step)
    harness.send(2)
    wait_for(lambda: len(harness.results) >= 2 and perception.malformed['step'] == 15)
    wait_for(lambda: any(kv.key == 'malformed' and kv.value == '15'
                         for m in harness.diagnostics[-1:] for kv in m.status[0].values))
    keys = [kv.key for kv in harness.diagnostics[-1].status[0].values
            if kv.key.startswith('malformed.')]
    assert len(keys) == len(MALFORMED_KINDS) + 1, keys  # the image kinds and ground_truth


def test_a_silent_label_publisher_holds_one_frame_not_every_frame(graph):
    # harness.truth exists but sends nothing: the first frame waits its 0.5 s, the rest go
    # straight on; the hold is part of that frame's latency, which the node records. (Not
    # the test's wall time: DDS delivery here took 2 to 9 s for these 6 frames in one day.)
    perception, harness = graph
    harness.send(6, with_labels=False, in_flight=0)
    wait_for(lambda: len(harness.results) >= 6)
    assert harness.results[0]['latency_ms'] >= 450
    assert max(r['latency_ms'] for r in harness.results[1:]) < 400
    # Labels flow again: once the first of them is in, frames pair again. (Sent alone, so
    # that its label cannot arrive after the next frame, which would still pass unlabelled.)
    harness.send(1)
    wait_for(lambda: len(harness.results) >= 7)
    harness.send(3)
    wait_for(lambda: len(harness.results) >= 10)
    # Frames pair again. Not every one need: a label DDS delivers after its frame's 0.5 s
    # hold leaves that frame unlabelled (seen on a loaded host), and a frame lost best effort
    # gets a record with no stamp and nothing to pair with.
    assert any(r['correct'] is not None for r in harness.results[7:] if r['stamp'] is not None)


def model_copy(tmp_path, how: str) -> str:
    model = tmp_path / how
    shutil.copytree(resolve_model_dir('fmnist_eenet'), model)
    segment = model / 'base' / 'segment0.tflite'
    if how == 'truncated_segment':
        segment.write_bytes(segment.read_bytes()[:1000])
    elif how == 'random_segment':
        segment.write_bytes(np.random.default_rng(0).bytes(segment.stat().st_size))
    elif how == 'corrupt_profile':
        (model / PROFILE_FILE).write_text('variants: {base: 7\n')
    return str(model)


def test_a_change_that_cannot_be_built_is_refused_and_the_old_pipeline_serves(graph, tmp_path):
    perception, harness = graph
    harness.send(3)
    refused = {
        'backend edgetpu (no pycoral)': ({'backend': 'edgetpu'}, 'pycoral'),
        'corrupt profile.yaml': ({'model': model_copy(tmp_path, 'corrupt_profile')}, 'profile'),
        'truncated .tflite': ({'model': model_copy(tmp_path, 'truncated_segment')}, 'segment'),
        'random .tflite': ({'model': model_copy(tmp_path, 'random_segment')}, 'segment'),
    }
    for case, (values, word) in refused.items():
        result = harness.set_parameters('perception', **values)[0]
        assert not result.successful and word in result.reason, (case, result.reason)
        harness.send(3)
    assert perception.get_parameter('model').value == 'fmnist_eenet'
    assert perception.get_parameter('backend').value == 'litert'
    wait_for(lambda: len(harness.results) >= harness.sent)
    assert [r['status'] for r in harness.results] == ['ok'] * harness.sent
    accepted = harness.set_parameters('perception', num_tpus=2, queue_capacity=8)[0]
    assert accepted.successful, accepted.reason
    assert len(perception.engine.stats().devices) == 2
    harness.send(5)
    wait_for(lambda: len(harness.results) >= harness.sent)
    assert all(r['status'] == 'ok' for r in harness.results)


def test_a_storm_of_pipeline_changes_is_answered_promptly_and_every_frame_has_a_record(graph):
    # 40 sets of num_tpus and queue_capacity back to back while frames flow: each builds a
    # pipeline beside the running one; none may leave a frame without its record. Promptly:
    # before the fix every set parsed the model's YAML again (82 s for the storm on a quiet
    # machine); now no set reads the files, whose parsed form the running pipeline holds.
    # (The storm's wall time, 7 to 80 s here, depends on DDS discovery of each set's client
    # and on the load; it is not what is tested.)
    perception, harness = graph
    answers, reads = [], []
    read = perception.engine._read
    perception.engine._read = lambda model: reads.append(model) or read(model)

    def storm():
        for i in range(40):
            # Answers took up to 46 s here while frames flowed (DDS, not the node: what is
            # tested is that each is answered, not how fast).
            answers.append(harness.set_parameters('perception', timeout=120.0,
                                                  num_tpus=1 + i % 2,
                                                  queue_capacity=4 + i % 3)[0])

    thread = threading.Thread(target=storm)
    thread.start()
    while thread.is_alive():
        harness.send(1, in_flight=4)
    thread.join()
    assert len(answers) == 40 and all(a.successful for a in answers)
    assert reads == [], 'a set parsed the model files again'
    wait_for(lambda: len(harness.results) >= harness.sent)
    assert sorted(r['frame'] for r in harness.results) == list(range(harness.sent))
    for r in harness.results:
        assert r['status'] == 'ok' or (r['status'] == 'dropped' and r['error']), r
