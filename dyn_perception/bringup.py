"""
The node graph from ``config/pipeline.yaml``, for ``ros2 launch`` and for a launch-free runner.

``load_graph`` turns the file plus launch-argument values into node specifications; the launch
file maps them to ``launch_ros`` Node actions, and ``dyn-perception-run`` starts the same
nodes itself: all in one process on a multi-threaded executor, or one process per node.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
import importlib
import os
from pathlib import Path
import signal
import subprocess
import sys
import time
from typing import Any, Mapping, Optional, Sequence

from dyn_perception.runtime.paths import data_path
import yaml

DEFAULT_GRAPH = data_path('config', 'pipeline.yaml')
# Fast DDS 3 reads the first name, older releases the second; a user's own setting wins.
FASTDDS_PROFILE_VARIABLES = ('FASTDDS_DEFAULT_PROFILES_FILE', 'FASTRTPS_DEFAULT_PROFILES_FILE')


@dataclass(frozen=True)
class LaunchArgument:
    name: str
    default: Any
    description: str
    sets: tuple[tuple[str, str], ...]  # (node, parameter)

    def parse(self, text: str) -> Any:
        """
        Read a command-line string as this argument's value.

        Text stays text where the default is a string (a device '0' is a name, not a
        number); otherwise it is read as YAML, the way ROS reads parameter values, and must
        be of the default's kind (an integer for a float default is taken): an empty value,
        ``{a: 1}`` or ``[1, "a"]`` reached rclpy, which refused them with a traceback.
        """
        if isinstance(self.default, str):
            return text
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError:
            value = text
        kind = type(self.default)
        kinds = (int, float) if kind is float else (kind,)
        if isinstance(value, bool) != (kind is bool) or not isinstance(value, kinds):
            expected = {bool: 'true or false', int: 'an integer', float: 'a number'}.get(
                kind, f'a {kind.__name__}')
            raise ValueError(f'launch argument {self.name}:={text!r} is not {expected} '
                             f'(default {self.default!r})')
        return value


@dataclass(frozen=True)
class NodeSpec:
    """One node of the graph: how to start it and with which parameters."""

    name: str
    executable: str
    node_class: str  # 'package.module:Class'
    parameters: dict = field(default_factory=dict)
    enabled_by: str = ''  # a launch argument: the node runs only when it is not empty

    @property
    def module(self) -> str:
        return self.node_class.split(':', 1)[0]

    def ros_arguments(self) -> list[str]:
        """Return the ``--ros-args`` that give this node its name and parameters."""
        args = ['--ros-args', '-r', f'__node:={self.name}']
        for key, value in self.parameters.items():
            args += ['-p', f'{key}:={yaml.safe_dump(value, default_flow_style=True).strip()}']
        return args


@dataclass(frozen=True)
class Graph:
    arguments: tuple[LaunchArgument, ...]
    nodes: tuple[NodeSpec, ...]
    fastdds_profile: Optional[Path] = None

    def environment(self, current: Mapping[str, str]) -> dict[str, str]:
        """Return the variables to add to ``current`` for the node processes."""
        if self.fastdds_profile is None or any(v in current for v in FASTDDS_PROFILE_VARIABLES):
            return {}
        return {FASTDDS_PROFILE_VARIABLES[0]: str(self.fastdds_profile)}


def load_graph(path: str | Path = DEFAULT_GRAPH,
               values: Optional[dict[str, Any]] = None) -> Graph:
    """Read the graph file and apply launch-argument ``values`` (defaults elsewhere)."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
        arguments = tuple(
            LaunchArgument(name, spec['default'], spec.get('description', ''),
                           tuple(tuple(target.split('.', 1)) for target in spec['sets']))
            for name, spec in data['launch_arguments'].items())
        nodes = {name: NodeSpec(name, spec['executable'], spec['node_class'],
                                dict(spec.get('parameters') or {}), spec.get('enabled_by', ''))
                 for name, spec in data['nodes'].items()}
        profile = data.get('fastdds_profile')
        profile = None if profile is None else (path.parent / profile).resolve(strict=True)
    except (OSError, yaml.YAMLError, KeyError, TypeError, AttributeError, ValueError) as err:
        raise ValueError(f'{path}: not a valid node graph ({err!r})') from err
    values = values or {}
    unknown = set(values) - {a.name for a in arguments}
    if unknown:
        raise ValueError(f'unknown launch arguments {sorted(unknown)}; '
                         f'known: {", ".join(a.name for a in arguments)}')
    for argument in arguments:
        value = values.get(argument.name, argument.default)
        for node, parameter in argument.sets:
            if node not in nodes:
                raise ValueError(f'{path}: argument {argument.name} sets a parameter of '
                                 f'unknown node {node!r}')
            nodes[node].parameters[parameter] = value
    given = {a.name: values.get(a.name, a.default) for a in arguments}
    for spec in nodes.values():
        if spec.enabled_by and spec.enabled_by not in given:
            raise ValueError(f'{path}: node {spec.name} is enabled by unknown argument '
                             f'{spec.enabled_by!r}')
    return Graph(arguments, tuple(s for s in nodes.values()
                                  if not s.enabled_by or given[s.enabled_by]), profile)


def make_node(spec: NodeSpec):
    """Instantiate a node class in this process with the spec's parameter overrides."""
    from rclpy.parameter import Parameter
    module, class_name = spec.node_class.split(':', 1)
    node_class = getattr(importlib.import_module(module), class_name)
    overrides = [Parameter(k, value=v) for k, v in spec.parameters.items()]
    return node_class(parameter_overrides=overrides)


def run_in_process(graph: Graph, duration: Optional[float] = None) -> int:
    """
    Spin every node of the graph on one single-threaded executor; return the exit status.

    Every callback is short (inference runs inline, about a millisecond), and rclpy's
    multi-threaded executor measured 10-40 ms from publish to callback for a 640x480 image
    here against 2-3 ms single-threaded (bench/ros_overhead.py). Signals and start-up
    errors are handled as a node process handles them (``nodes/spin.py``).
    """
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.signals import SignalHandlerOptions
    from dyn_perception.nodes.spin import spin_until_stopped, STARTUP_ERRORS, StopRequest
    stop = StopRequest()
    stop.install()
    # Not this process's command line: rcl would read `mode:=eco` as a deprecated remap rule.
    with rclpy.init(args=sys.argv[:1], signal_handler_options=SignalHandlerOptions.NO):
        executor = SingleThreadedExecutor()
        nodes = []
        try:
            for spec in graph.nodes:
                nodes.append(make_node(spec))
                executor.add_node(nodes[-1])
        except STARTUP_ERRORS as err:
            print('error: ' + ' '.join(str(err).split()), file=sys.stderr)
            return 2
        deadline = None if duration is None else time.monotonic() + duration
        try:
            spin_until_stopped(executor, stop, lambda: deadline is not None
                               and time.monotonic() >= deadline)
        finally:
            executor.shutdown()
            for node in nodes:
                node.destroy_node()
    stop.ignore_further()
    return 0


def stop_like_launch(processes: Sequence[subprocess.Popen], sigterm_timeout: float = 5.0,
                     sigkill_timeout: float = 5.0) -> None:
    """
    Stop processes as ``ros2 launch`` does.

    SIGINT, SIGTERM after ``sigterm_timeout``, then SIGKILL after ``sigkill_timeout`` more
    (launch/actions/execute_local.py in ros2/launch).
    """
    for p in processes:
        if p.poll() is None:
            p.send_signal(signal.SIGINT)
    for escalate, timeout in ((signal.SIGTERM, sigterm_timeout), (signal.SIGKILL,
                                                                  sigkill_timeout)):
        deadline = time.monotonic() + timeout
        while any(p.poll() is None for p in processes) and time.monotonic() < deadline:
            time.sleep(0.05)
        for p in processes:
            if p.poll() is None:
                p.send_signal(escalate)
    for p in processes:
        p.wait()


def _ignore_sigint() -> None:
    """
    Start a node process with SIGINT ignored (``Popen`` ``preexec_fn``).

    Python then raises no KeyboardInterrupt while the node's libraries import (1-2 s, before
    ``spin_node`` takes the signal itself): a Ctrl-C in that window printed a traceback and
    ended the run with exit 254. A node still importing misses the SIGINT of a stop; the
    SIGTERM that ``stop_like_launch`` sends next finds its handler installed.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def run_processes(graph: Graph, duration: Optional[float] = None) -> int:
    """Start one process per node (``python -m <module>``), wait, and stop them together."""
    from dyn_perception.nodes.spin import StopRequest
    stop = StopRequest()
    stop.install()
    env = {**os.environ, **graph.environment(os.environ)}
    # No thread runs in this process yet, so preexec_fn is safe here.
    processes = [subprocess.Popen([sys.executable, '-m', spec.module, *spec.ros_arguments()],
                                  env=env, preexec_fn=_ignore_sigint) for spec in graph.nodes]
    deadline = None if duration is None else time.monotonic() + duration
    while all(p.poll() is None for p in processes) and not stop.stopped:
        if deadline is not None and time.monotonic() >= deadline:
            break
        time.sleep(0.1)
    stop_like_launch(processes)
    stop.ignore_further()
    return next((p.returncode for p in processes if p.returncode), 0)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the graph; a Ctrl-C before the stop handlers are in place is a stop all the same."""
    try:
        return _main(argv)
    except KeyboardInterrupt:
        # Only while rclpy imports, before StopRequest.install(): no node exists yet.
        return 0


def _main(argv: Optional[Sequence[str]]) -> int:
    parser = argparse.ArgumentParser(
        prog='dyn-perception-run', description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog='Launch arguments are given as name:=value, as with ros2 launch.')
    parser.add_argument('arguments', nargs='*', help='name:=value launch arguments')
    parser.add_argument('--config', default=str(DEFAULT_GRAPH), help='node graph YAML')
    parser.add_argument('--processes', choices=('one', 'per-node'), default='one')
    parser.add_argument('--duration', type=float, help='seconds to run (default: until Ctrl-C)')
    args = parser.parse_args(argv)
    texts = {}
    for item in args.arguments:
        if ':=' not in item:
            parser.error(f'expected name:=value, got {item!r}')
        name, text = item.split(':=', 1)
        texts[name] = text
    try:
        arguments = {a.name: a for a in load_graph(args.config).arguments}
        graph = load_graph(args.config, {k: arguments[k].parse(t) if k in arguments else t
                                         for k, t in texts.items()})
    except ValueError as err:
        print(f'error: {err}', file=sys.stderr)
        return 2
    if args.processes == 'per-node':
        return run_processes(graph, args.duration)
    return run_in_process(graph, args.duration)


if __name__ == '__main__':
    sys.exit(main())
