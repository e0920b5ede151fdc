"""
Node processes as ``ros2 launch`` starts them, and an rclpy client that talks to them.

The processes get the parameters and environment the graph (``config/pipeline.yaml``, the
launch file's description) gives them, and are started as their console scripts would be
(``python -m`` the node module), so a test sees what a user of the real tools sees.
"""

from __future__ import annotations

from contextlib import contextmanager
import os
import subprocess
import sys
import threading
import time
from typing import Callable, Iterator

from dyn_perception.bringup import load_graph, NodeSpec
from lint_targets import PACKAGE_ROOT
from rcl_interfaces.msg import Parameter as ParameterMsg
from rcl_interfaces.srv import GetParameters, SetParameters
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter, parameter_value_to_python


def wait_for(condition: Callable[[], bool], timeout: float = 20.0, what: str = '') -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f'timed out after {timeout} s {what}'
        time.sleep(0.01)


def node_environment(tmp_path) -> dict:
    """Return the test's ROS environment, the graph's Fast DDS profile, this tree first."""
    env = {**os.environ, **load_graph().environment(os.environ)}
    env['PYTHONPATH'] = os.pathsep.join(filter(None, (str(PACKAGE_ROOT),
                                                      env.get('PYTHONPATH'))))
    env['ROS_LOG_DIR'] = str(tmp_path / 'ros_log')
    env['PYTHONUNBUFFERED'] = '1'
    return env


def start(spec: NodeSpec, env: dict, extra: tuple = ()) -> subprocess.Popen:
    """Start one node as its console script does, with the spec's ``--ros-args``."""
    return subprocess.Popen([sys.executable, '-m', spec.module, *spec.ros_arguments(), *extra],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


class ParameterClient(Node):
    """What ``ros2 param get/set`` does: call ``/<node>/get_parameters`` and ``set_parameters``."""

    def __init__(self):
        super().__init__('test_parameter_client')

    def _call(self, service_type, name: str, request, timeout: float = 20.0):
        client = self.create_client(service_type, name)
        try:
            assert client.wait_for_service(timeout_sec=timeout), f'no service {name}'
            future = client.call_async(request)
            wait_for(future.done, timeout, f'for {name}')
            return future.result()
        finally:
            self.destroy_client(client)

    def set_values(self, node: str, **values) -> list:
        request = SetParameters.Request(parameters=[
            ParameterMsg(name=k, value=Parameter(k, value=v).get_parameter_value())
            for k, v in values.items()])
        return self._call(SetParameters, f'/{node}/set_parameters', request).results

    def get_value(self, node: str, name: str):
        response = self._call(GetParameters, f'/{node}/get_parameters',
                              GetParameters.Request(names=[name]))
        return parameter_value_to_python(response.values[0])


@contextmanager
def spinning(node: Node) -> Iterator[Node]:
    """Spin ``node`` on an executor thread of its own; shut down and destroy it on leaving."""
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    thread = threading.Thread(target=executor.spin, daemon=True)
    thread.start()
    try:
        yield node
    finally:
        executor.shutdown()
        node.destroy_node()
        thread.join(timeout=5)
