# Copyright 2026 dyn_perception maintainers. Apache-2.0.
"""
What a new user meets with the real ROS tools, tried on real node processes.

The nodes run as ``ros2 launch`` starts them (the graph's parameters and environment, see
``node_processes``); the test talks to them as ``ros2 param`` does (``SetParameters``,
``GetParameters``) and stops them as launch and a terminal do: SIGINT, perhaps twice within
30 ms (launch's own and the terminal's to the process group), or SIGTERM.
"""

import json
import os
from pathlib import Path
import shutil
import signal
import subprocess
import sys
import time

from dyn_perception.bringup import load_graph
from dyn_perception.runtime.artifacts import MANIFEST_FILE, PROFILE_FILE, resolve_model_dir
from node_processes import node_environment, ParameterClient, spinning, start, wait_for
import pytest
import rclpy
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image
from std_msgs.msg import String

NODES = tuple(spec.name for spec in load_graph().nodes)
# Small and fast: LiteRT on one CPU worker, small camera frames.
FAST = {'backend': 'litert', 'num_tpus': 1}


def graph_specs(**values):
    graph = load_graph(values={**FAST, **values})
    camera = next(s for s in graph.nodes if s.name == 'camera')
    camera.parameters.update(width=64, height=48)
    return graph.nodes


@pytest.fixture
def ros():
    """Spin an rclpy client node in the background; yield it and what it hears."""
    with rclpy.init():
        client = ParameterClient()
        heard = {'energy_mode': [], 'results': []}
        client.create_subscription(String, 'energy_mode',
                                   lambda m: heard['energy_mode'].append(m.data), 10)
        client.create_subscription(String, 'perception/result',
                                   lambda m: heard['results'].append(json.loads(m.data)), 100)
        with spinning(client):
            yield client, heard


def running(client, names, timeout: float = 30.0) -> None:
    """Wait until every named node offers its parameter services (it is spinning)."""
    wait_for(lambda: all(f'/{n}/set_parameters' in dict(client.get_service_names_and_types())
                         for n in names), timeout, f'for nodes {names}')


def stop_all(processes) -> None:
    for p in processes:
        if p.poll() is None:
            p.kill()
        p.communicate(timeout=10)


def modes_over(heard, seconds: float) -> set:
    start = len(heard['results'])
    time.sleep(seconds)
    return {r['mode'] for r in heard['results'][start:]}


def test_a_mode_set_by_the_user_holds_until_handed_back(ros, tmp_path):
    client, heard = ros
    env = node_environment(tmp_path)
    # The energy manager pinned to performance (its policy parameter), so that what it
    # publishes does not depend on this host's CPU load.
    processes = [start(spec, env) for spec in graph_specs(mode='eco', policy='performance')]
    try:
        running(client, NODES)
        # The energy manager runs and publishes its choice every second.
        wait_for(lambda: 'performance' in heard['energy_mode'], 20, 'for energy_mode')
        wait_for(lambda: len(heard['results']) >= 5, 30, 'for results')
        assert modes_over(heard, 2.5) == {'eco'}, 'the launch argument mode:=eco holds'
        assert client.get_value('perception', 'mode') == 'eco'
        assert client.set_values('perception', mode='critical')[0].successful
        time.sleep(0.5)  # frames queued before the set still run the old mode
        assert modes_over(heard, 2.5) == {'critical'}, 'ros2 param set mode critical holds'
        assert client.get_value('perception', 'mode') == 'critical'
        assert client.set_values('perception', mode='auto')[0].successful
        wait_for(lambda: heard['results'][-1]['mode'] == 'performance', 10, 'to follow')
        assert modes_over(heard, 1.5) == {'performance'}, 'auto follows the energy manager'
        refused = client.set_values('perception', mode='bogus')[0]
        assert not refused.successful and 'auto' in refused.reason
        assert all(p.poll() is None for p in processes)
    finally:
        stop_all(processes)


def copy_model(tmp_path):
    target = tmp_path / 'model'
    shutil.copytree(resolve_model_dir('fmnist_eenet'), target)
    return target


def broken_model(tmp_path, how: str):
    model = copy_model(tmp_path)
    manifest = model / MANIFEST_FILE
    if how == 'bad_yaml':
        manifest.write_text('name: [unclosed\n')
    elif how == 'schema_version_2':
        manifest.write_text(manifest.read_text().replace('schema_version: 1',
                                                         'schema_version: 2'))
    elif how == 'missing_segment':
        (model / 'base' / 'segment1.tflite').unlink()
    elif how == 'corrupt_profile':
        (model / PROFILE_FILE).write_text('variants: {base: 7\n')
    return str(model)


# node, parameters, a word the error line must contain
BAD_STARTS = [
    ('perception', {'mode': 'bogus'}, 'performance, balanced, eco, critical'),
    ('perception', {'backend': 'tpu'}, 'backend'),
    ('perception', {'model': 'no_such_model'}, 'no_such_model'),
    ('perception', {'model': 'bad_yaml'}, 'manifest'),
    ('perception', {'model': 'schema_version_2'}, 'schema'),
    ('perception', {'model': 'missing_segment'}, 'segment1'),
    ('perception', {'model': 'corrupt_profile'}, 'profile'),
    ('perception', {'num_tpus': 0}, 'num_tpus'),
    ('perception', {'backend': 'edgetpu'}, 'pycoral'),
    ('camera', {'source': 'folder', 'uri': '/no/such/folder'}, 'folder'),
    ('camera', {'encoding': 'yuv'}, 'encoding'),
    ('energy_manager', {'policy': 'turbo'}, 'policy'),
    ('energy_manager', {'min_charge': [0.1, 0.5, 0.2, 0.0]}, 'min_charge'),
    ('system_monitor', {'battery': 'real'}, 'battery'),
]


def test_every_bad_start_up_input_is_one_error_line_and_exit_2(tmp_path):
    env = node_environment(tmp_path)
    specs = {spec.name: spec for spec in graph_specs()}
    started = []
    for i, (name, values, word) in enumerate(BAD_STARTS):
        if str(values.get('model', 'no_such_model')) != 'no_such_model':
            values = {**values, 'model': broken_model(tmp_path / str(i), values['model'])}
        spec = specs[name]
        spec = type(spec)(spec.name, spec.executable, spec.node_class,
                          {**spec.parameters, **values})
        started.append((name, values, word, start(spec, env)))
        if len(started) % 2 == 0:  # two at a time: the machine is shared
            try:
                started[-2][3].wait(timeout=30)
            except subprocess.TimeoutExpired:
                pass  # reported below
    problems = []
    for name, values, word, process in started:
        try:
            _, err = process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            _, err = process.communicate()
            err = f'(still running after 30 s) {err}'
        lines = [line for line in err.splitlines() if line.strip()]
        one_line = len(lines) == 1 and lines[0].startswith('error: ') and word in lines[0]
        if process.returncode != 2 or not one_line:
            problems.append(f'{name} {values}: exit {process.returncode}, stderr {err!r}')
    assert not problems, '\n'.join(problems)


@pytest.mark.parametrize('module, ros_args, word', [
    ('perception', ['-p', 'num_tpus:={a: 1}'], 'num_tpus'),
    ('camera', ['--params-file', '/no/such/params.yaml'], 'params file'),
    ('stream_server', ['-r'], '-r'),
])
def test_ros_arguments_rcl_cannot_parse_are_one_error_line_and_exit_2(tmp_path, module,
                                                                      ros_args, word):
    # rclpy.init raised RCLError: a traceback and exit 1. rcl logs its own line before ours.
    done = subprocess.run([sys.executable, '-m', f'dyn_perception.nodes.{module}',
                           '--ros-args', *ros_args], env=node_environment(tmp_path),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith('error: ')]
    assert len(errors) == 1 and word in errors[0], done.stderr
    assert 'Traceback' not in done.stderr and ', at /' not in done.stderr


def test_ctrl_c_while_the_node_processes_import_exits_0_without_a_traceback(tmp_path):
    # The node processes take SIGINT themselves only once their libraries have imported
    # (1-2 s); a terminal's Ctrl-C before that printed KeyboardInterrupt tracebacks and the
    # runner exited 254. Signalled as soon as the runner has started every node process.
    process = subprocess.Popen([sys.executable, '-m', 'dyn_perception.bringup',
                                '--processes', 'per-node', '--duration', '60'],
                               env=node_environment(tmp_path), start_new_session=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    children = Path(f'/proc/{process.pid}/task/{process.pid}/children')
    try:
        wait_for(lambda: process.poll() is not None
                 or len(children.read_text().split()) == len(load_graph().nodes), 60,
                 'for the node processes')
        os.killpg(process.pid, signal.SIGINT)  # a terminal's Ctrl-C: the whole group
        _, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    assert process.returncode == 0, err
    assert 'Traceback' not in err, err


def test_ctrl_c_before_the_runner_takes_signals_is_a_stop(monkeypatch):
    # While rclpy imports, before the runner installs its handlers (the first 0.3-0.8 s).
    from dyn_perception import bringup

    def interrupted(*args):
        raise KeyboardInterrupt
    monkeypatch.setattr(bringup, 'run_in_process', interrupted)
    assert bringup.main(['--duration', '1']) == 0


# One pattern per node and round, rotated so every node meets every pattern once.
PATTERNS = (
    ('SIGINT',), ('SIGINT', 'SIGINT'), ('SIGTERM',), ('SIGINT', 'SIGTERM'),
)


@pytest.mark.parametrize('round_', range(len(PATTERNS)))
def test_every_node_exits_0_on_sigint_or_sigterm_once_or_twice(ros, tmp_path, round_):
    client, heard = ros
    env = node_environment(tmp_path)
    specs = graph_specs()
    processes = [start(spec, env) for spec in specs]
    try:
        running(client, NODES)
        wait_for(lambda: len(heard['results']) >= 3, 30, 'for results')
        patterns = [PATTERNS[(round_ + i) % len(PATTERNS)] for i in range(len(specs))]
        sent = time.monotonic()
        for step in range(2):
            for p, pattern in zip(processes, patterns):
                if step < len(pattern):
                    p.send_signal(getattr(signal, pattern[step]))
            time.sleep(0.03)
        outcomes = []
        for spec, p, pattern in zip(specs, processes, patterns):
            try:
                p.wait(timeout=max(0.0, sent + 2.0 - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            outcomes.append((spec.name, pattern, p.poll()))
        bad = [o for o in outcomes if o[2] != 0]
        assert not bad, f'exit codes not 0 within 2 s (None: still running): {bad}'
        for p in processes:
            _, err = p.communicate(timeout=10)
            assert 'Traceback' not in err, err
    finally:
        stop_all(processes)


def test_pipeline_changes_keep_serving_and_every_camera_frame_has_a_record(ros, tmp_path):
    # Case 6: the camera runs at 30 fps while `ros2 param set` changes the model, the number
    # of devices and the queue. Every frame the camera published from perception's first on
    # gets exactly one record, served or dropped with a reason: none is lost unrecorded.
    client, heard = ros
    published = {}  # stamp -> the camera's sequence number
    client.create_subscription(
        Image, 'image_raw',
        lambda m, info: published.setdefault((m.header.stamp.sec, m.header.stamp.nanosec),
                                             info['publication_sequence_number']),
        QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1000,
                   reliability=ReliabilityPolicy.RELIABLE))
    specs = {s.name: s for s in graph_specs()}
    env = node_environment(tmp_path)
    # The camera first: this client hears it long before perception's first frame.
    camera = start(specs['camera'], env)
    wait_for(lambda: published, 30, 'for the camera')
    perception = start(specs['perception'], env)
    try:
        running(client, ['perception'])
        wait_for(lambda: len(heard['results']) >= 10, 30, 'for results')
        changes = [{'model': 'fmnist_eenet_patch'}, {'num_tpus': 2}, {'queue_capacity': 8},
                   {'model': 'fmnist_eenet', 'num_tpus': 1}]
        for values in changes:
            answer = client.set_values('perception', **values)[0]
            assert answer.successful, (values, answer.reason)
            time.sleep(0.3)
        camera.send_signal(signal.SIGINT)
        assert camera.wait(timeout=10) == 0
        # Frames are numbered as they arrive: count from the first served frame this client
        # heard the record of (it may have matched perception's result topic a little late).
        first = min((r for r in heard['results'] if r['stamp']), key=lambda r: r['frame'])
        expected = max(published.values()) - published[tuple(first['stamp'])] + 1

        def records() -> list:
            return [r for r in heard['results'] if r['frame'] >= first['frame']]

        wait_for(lambda: len(records()) >= expected, 10,
                 f'for records of all {expected} frames (have {len(records())})')
        time.sleep(0.5)
        records = records()
        assert len(records) == expected
        stamps = [tuple(r['stamp']) for r in records if r['stamp'] is not None]
        assert len(set(stamps)) == len(stamps) and set(stamps) <= set(published)
        assert all(r['status'] == 'ok' or (r['status'] == 'dropped' and r['error'])
                   for r in records)
        assert perception.poll() is None
    finally:
        stop_all([camera, perception])
