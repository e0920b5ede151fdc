"""stream_server: per-stream results and diagnostics, mode changes, refused stream files."""

import json
import subprocess
import sys
import threading
import time

from diagnostic_msgs.msg import DiagnosticArray
from dyn_perception.bringup import load_graph
from dyn_perception.nodes.conversions import rgb_to_image
from dyn_perception.nodes.qos import image_qos
from dyn_perception.nodes.stream_server import stream_file, StreamServerNode
from dyn_perception.runtime.paths import data_path
from dyn_perception.runtime.serving import load_streams, ServingError, StreamSpec
import numpy as np
import pytest
from rcl_interfaces.msg import Parameter as ParameterMsg
from rcl_interfaces.srv import SetParameters
import rclpy
from rclpy.executors import MultiThreadedExecutor
from rclpy.expand_topic_name import expand_topic_name
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.validate_full_topic_name import validate_full_topic_name
from sensor_msgs.msg import Image
from std_msgs.msg import String
import yaml

STREAMS = load_streams(data_path('config', 'streams.yaml'))
NAMES = [spec.name for spec in STREAMS.streams]


def wait_for(condition, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f'timed out after {timeout} s'
        time.sleep(0.01)


class Cameras(Node):
    """One camera per stream of the shipped stream file; collects each stream's results."""

    def __init__(self):
        super().__init__('test_cameras')
        self.images = {spec.name: self.create_publisher(Image, spec.topic, image_qos())
                       for spec in STREAMS.streams}
        self.results = {name: [] for name in NAMES}
        self.diagnostics = []
        for name in NAMES:
            self.create_subscription(
                String, f'/stream_server/{name}/result',
                lambda m, name=name: self.results[name].append(json.loads(m.data)), 100)
        self.create_subscription(DiagnosticArray, '/diagnostics', self.diagnostics.append, 10)

    def send(self, frames: int) -> None:
        """Publish on every stream at 5 Hz: slower than each declared rate, with slack for DDS."""
        rng = np.random.default_rng(0)
        for _ in range(frames):
            for publisher in self.images.values():
                msg = rgb_to_image(rng.integers(0, 255, (28, 28, 3), dtype=np.uint8))
                msg.header.stamp = self.get_clock().now().to_msg()
                publisher.publish(msg)
            time.sleep(0.2)

    def set_parameters(self, **values):
        client = self.create_client(SetParameters, '/stream_server/set_parameters')
        assert client.wait_for_service(timeout_sec=10.0)
        future = client.call_async(SetParameters.Request(parameters=[
            ParameterMsg(name=k, value=Parameter(k, value=v).get_parameter_value())
            for k, v in values.items()]))
        wait_for(future.done)
        self.destroy_client(client)
        return future.result().results[0]


@pytest.fixture(scope='module')
def graph():
    with rclpy.init():
        server = StreamServerNode(parameter_overrides=[
            Parameter('diagnostics_period_s', value=0.2)])
        cameras = Cameras()
        executor = MultiThreadedExecutor()
        executor.add_node(server)
        executor.add_node(cameras)
        thread = threading.Thread(target=executor.spin, daemon=True)
        thread.start()
        wait_for(lambda: all(p.get_subscription_count() > 0 for p in cameras.images.values())
                 and all(s.get_publisher_count() > 0 for s in cameras.subscriptions))
        try:
            yield server, cameras
        finally:
            executor.shutdown()
            server.destroy_node()
            cameras.destroy_node()
            thread.join(timeout=5)


def test_each_stream_gets_its_own_results_and_diagnostics(graph):
    server, cameras = graph
    cameras.send(4)
    wait_for(lambda: all(len(cameras.results[n]) >= 4 for n in NAMES))
    for name in NAMES:
        records = cameras.results[name]
        assert {r['stream'] for r in records} == {name}
        assert all(r['schema'] == 'dyn_perception/serving_result/1' for r in records)
        # A frame delivered late after its predecessor is dropped as 'early', with the reason.
        assert all(r['status'] == 'ok' or r['reason'] == 'early' for r in records), records
        assert sum(r['status'] == 'ok' for r in records) >= 2
        assert all(r['mode'] == 'performance' for r in records if r['status'] == 'ok')

    def stream_status():
        latest = cameras.diagnostics[-1].status if cameras.diagnostics else []
        return {s.name: {kv.key: kv.value for kv in s.values} for s in latest}

    def counted_every_result():
        status = stream_status()
        return len(status) == len(NAMES) and all(
            int(status[f'dyn_perception: stream_server/{name}']['completed'])
            == sum(r['status'] == 'ok' for r in cameras.results[name]) for name in NAMES)

    # The diagnostics are periodic: the newest one received may predate the last results.
    wait_for(counted_every_result)
    assert all(values['admitted'] == 'True' for values in stream_status().values())


def test_a_mode_set_by_parameter_switches_the_configuration(graph):
    server, cameras = graph
    result = cameras.set_parameters(mode='eco')
    assert result.successful, result.reason
    wait_for(lambda: server.server.mode == 'eco', timeout=5.0)
    before = {name: len(cameras.results[name]) for name in NAMES}
    cameras.send(3)
    wait_for(lambda: all(any(r['status'] == 'ok' for r in cameras.results[n][before[n]:])
                         for n in NAMES))
    assert all(r['mode'] == 'eco' for n in NAMES for r in cameras.results[n][before[n]:]
               if r['status'] == 'ok')
    # A held mode ignores the energy manager.
    energy = cameras.create_publisher(String, 'energy_mode', 10)
    wait_for(lambda: energy.get_subscription_count() > 0)
    energy.publish(String(data='critical'))
    time.sleep(0.3)
    assert server.server.mode == 'eco'


def write_streams(tmp_path, extra: list, name='streams.yaml'):
    data = yaml.safe_load(data_path('config', 'streams.yaml').read_text())
    data['streams'] += extra
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return str(path)


def test_a_bad_stream_file_is_refused_with_the_reason_and_streams_go_on(graph, tmp_path):
    server, cameras = graph
    unknown = write_streams(tmp_path, [{'name': 'top', 'model': 'no_such_model', 'rate_hz': 5}])
    result = cameras.set_parameters(streams=unknown)
    assert not result.successful and 'stream top' in result.reason
    assert 'no_such_model' in result.reason
    late = write_streams(tmp_path, [{'name': 'top', 'model': 'fmnist_eenet', 'rate_hz': 10,
                                    'deadline_ms': 200}], 'late.yaml')
    result = cameras.set_parameters(streams=late)
    assert not result.successful and 'stream top' in result.reason
    # A deadline under the pool's tick: the task model's own error escaped the parameter
    # callback and took the node down.
    tight = write_streams(tmp_path, [{'name': 'top', 'model': 'fmnist_eenet', 'rate_hz': 10,
                                      'deadline_ms': 1e-9}], 'tight.yaml')
    result = cameras.set_parameters(streams=tight)
    assert not result.successful and 'shorter than two ticks' in result.reason, result.reason
    # A name or topic rclpy would refuse with a traceback when the node advertises it.
    for entry in ({'name': 'top cam', 'model': 'fmnist_eenet', 'rate_hz': 5},
                  {'name': 'top', 'model': 'fmnist_eenet', 'rate_hz': 5, 'topic': 'top//img'}):
        result = cameras.set_parameters(streams=write_streams(tmp_path, [entry], 'name.yaml'))
        assert not result.successful and 'not a ROS' in result.reason, result.reason
    crowd = write_streams(tmp_path, [{'name': f'extra{i}', 'model': 'fmnist_eenet',
                                      'rate_hz': 30} for i in range(30)], 'crowd.yaml')
    result = cameras.set_parameters(streams=crowd)
    assert not result.successful and 'stream extra' in result.reason, result.reason
    assert server.get_parameter('streams').value == str(data_path('config', 'streams.yaml'))
    # The refused changes were undone: the file's streams, and only they, are served.
    wait_for(lambda: {s.spec.name for s in server.server.served} == set(NAMES))
    count = len(cameras.diagnostics)
    wait_for(lambda: len(cameras.diagnostics) > count)
    assert {s.name.split('/')[-1] for s in cameras.diagnostics[-1].status} == set(NAMES)
    before = {name: len(cameras.results[name]) for name in NAMES}
    cameras.send(2)
    wait_for(lambda: all(len(cameras.results[n]) > before[n] for n in NAMES))


def test_a_new_stream_file_replaces_the_streams_live(graph, tmp_path):
    server, cameras = graph
    data = yaml.safe_load(data_path('config', 'streams.yaml').read_text())
    data['streams'] = [s for s in data['streams'] if s['name'] != 'side']
    (tmp_path / 'two.yaml').write_text(yaml.safe_dump(data))
    result = cameras.set_parameters(streams=str(tmp_path / 'two.yaml'))
    assert result.successful, result.reason
    wait_for(lambda: {s.spec.name for s in server.server.served} == {'front', 'rear'})
    assert 'side' not in server.image_subs
    restored = cameras.set_parameters(streams=str(data_path('config', 'streams.yaml')))
    assert restored.successful, restored.reason
    wait_for(lambda: {s.spec.name for s in server.server.served} == set(NAMES))
    before = len(cameras.results['side'])
    cameras.send(2)
    wait_for(lambda: len(cameras.results['side']) > before)


def test_a_stream_moved_to_another_topic_listens_there_and_a_topic_may_feed_two(
        graph, tmp_path):
    server, cameras = graph
    data = yaml.safe_load(data_path('config', 'streams.yaml').read_text())
    rear = next(s['topic'] for s in data['streams'] if s['name'] == 'rear')
    for stream in data['streams']:
        if stream['name'] == 'front':
            stream['topic'] = rear  # two models on one camera
    (tmp_path / 'moved.yaml').write_text(yaml.safe_dump(data))
    result = cameras.set_parameters(streams=str(tmp_path / 'moved.yaml'))
    assert result.successful, result.reason
    # Keyed by name alone, front kept listening on its old topic.
    wait_for(lambda: cameras.images['front'].get_subscription_count() == 0)
    wait_for(lambda: cameras.images['rear'].get_subscription_count() == 2)
    before = {name: len(cameras.results[name]) for name in ('front', 'rear')}
    rng = np.random.default_rng(1)
    for _ in range(2):
        cameras.images['rear'].publish(
            rgb_to_image(rng.integers(0, 255, (28, 28, 3), dtype=np.uint8)))
        time.sleep(0.2)
    wait_for(lambda: all(any(r['status'] == 'ok' for r in cameras.results[n][before[n]:])
                         for n in before))
    restored = cameras.set_parameters(streams=str(data_path('config', 'streams.yaml')))
    assert restored.successful, restored.reason
    wait_for(lambda: cameras.images['front'].get_subscription_count() == 1
             and cameras.images['rear'].get_subscription_count() == 1)


def test_mode_auto_follows_the_energy_manager(graph):
    server, cameras = graph
    assert cameras.set_parameters(mode='auto').successful
    energy = cameras.create_publisher(String, 'energy_mode', 10)
    wait_for(lambda: energy.get_subscription_count() > 0)
    energy.publish(String(data='balanced'))
    wait_for(lambda: server.server.mode == 'balanced', timeout=5.0)


def test_the_graph_has_the_stream_server_only_when_a_stream_file_is_given():
    assert 'stream_server' not in [n.name for n in load_graph().nodes]
    graph = load_graph(values={'streams': 'config/streams.yaml', 'mode': 'eco'})
    spec = next(n for n in graph.nodes if n.name == 'stream_server')
    assert spec.parameters == {'streams': 'config/streams.yaml', 'mode': 'eco'}
    assert stream_file(spec.parameters['streams']).resolve() == data_path('config', 'streams.yaml')


@pytest.mark.parametrize('entry, reason', [
    ({'name': 'top', 'model': 'no_such_model', 'rate_hz': 5}, 'stream top: unknown'),
    ({'name': 'top-cam', 'model': 'fmnist_eenet', 'rate_hz': 5}, 'not a ROS name'),
    ({'name': 'top', 'model': 'fmnist_eenet', 'rate_hz': 5, 'topic': '9cam/image'},
     'not a ROS topic name'),
])
def test_start_up_with_a_bad_stream_file_prints_one_error_and_exits_2(tmp_path, entry, reason):
    bad = write_streams(tmp_path, [entry])
    done = subprocess.run(
        [sys.executable, '-m', 'dyn_perception.nodes.stream_server', '--ros-args',
         '-p', f'streams:={bad}'], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    errors = [line for line in done.stderr.splitlines() if line.startswith('error:')]
    assert len(errors) == 1 and reason in errors[0], done.stderr
    assert 'Traceback' not in done.stderr


def rclpy_takes(topic: str) -> bool:
    try:
        validate_full_topic_name(expand_topic_name(topic, 'stream_server', '/deep/namespace'))
    except (ValueError, rclpy.exceptions.InvalidTopicNameException):
        return False
    return True


def test_every_stream_name_and_topic_the_file_takes_rclpy_takes_too():
    rng = np.random.default_rng(3)
    alphabet = list('ab_Z09/~ -.{}') + ['é']
    tried = ['a', '_a', '1a', 'a__b', '/a', '~/a', '~', 'a/', 'a//b', 'a b', 'x' * 300,
             *(''.join(rng.choice(alphabet, rng.integers(1, 12))) for _ in range(3000))]
    taken = 0
    for text in tried:
        try:
            StreamSpec(text, 'm', 0.1, 0.1, topic=text)
        except ServingError as err:
            assert 'not a ROS' in str(err) or 'non-empty' in str(err), err
            continue
        taken += 1
        assert rclpy_takes(text) and rclpy_takes(f'~/{text}/result'), text
    assert taken > 50  # the check is not vacuous: many names pass both
