# Copyright 2026 dyn_perception maintainers. Apache-2.0.
"""
launch/pipeline.launch.py builds the graph bringup describes.

The ROS 2 ``launch`` and ``launch_ros`` packages are not installable from PyPI (they come with
a ROS apt install), so where they are missing the launch file runs against minimal stand-ins
of the four launch classes it uses and its output is compared with ``bringup.load_graph``;
where they are present the real classes are used.
"""

import importlib.util
import os
import sys
import types
import xml.etree.ElementTree as ElementTree

from dyn_perception.bringup import DEFAULT_GRAPH, FASTDDS_PROFILE_VARIABLES, load_graph
from lint_targets import PACKAGE_ROOT
import pytest

LAUNCH_FILE = PACKAGE_ROOT / 'launch' / 'pipeline.launch.py'
HAVE_LAUNCH = all(importlib.util.find_spec(m) is not None for m in ('launch', 'launch_ros'))


def load_launch_file():
    spec = importlib.util.spec_from_file_location('pipeline_launch', LAUNCH_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class Recorded:
    """Stand-in for a launch class: remembers how it was built."""

    def __init__(self, *args, **kwargs):
        self.args, self.kwargs = args, kwargs


class FakeLaunchConfiguration(Recorded):

    def perform(self, context):
        name = self.args[0]
        return context.get(name, self.kwargs.get('default'))


@pytest.fixture
def stand_ins(monkeypatch):
    modules = {name: types.ModuleType(name) for name in (
        'launch', 'launch.actions', 'launch.substitutions', 'launch_ros', 'launch_ros.actions')}
    modules['launch'].LaunchDescription = Recorded
    modules['launch.actions'].DeclareLaunchArgument = Recorded
    modules['launch.actions'].OpaqueFunction = Recorded
    modules['launch.substitutions'].LaunchConfiguration = FakeLaunchConfiguration
    modules['launch_ros.actions'].Node = Recorded
    for name, module in modules.items():
        monkeypatch.setitem(sys.modules, name, module)


@pytest.mark.skipif(HAVE_LAUNCH, reason='the real launch packages are installed; '
                                        'test_real_launch_description covers the file')
def test_launch_file_builds_the_bringup_graph(stand_ins):
    description = load_launch_file().generate_launch_description()
    *declared, opaque = description.args[0]
    graph = load_graph()
    assert [d.args[0] for d in declared] == ['config', *(a.name for a in graph.arguments)]
    assert {d.args[0]: d.kwargs['default_value'] for d in declared[1:]} == \
        {a.name: str(a.default) for a in graph.arguments}
    context = {'config': str(DEFAULT_GRAPH), 'mode': 'eco', 'num_tpus': '4'}
    nodes = opaque.kwargs['function'](context)
    expected = load_graph(values={'mode': 'eco', 'num_tpus': 4})
    assert [n.kwargs['name'] for n in nodes] == [s.name for s in expected.nodes]
    for node, spec in zip(nodes, expected.nodes):
        assert node.kwargs['package'] == 'dyn_perception'
        assert node.kwargs['executable'] == spec.executable
        assert node.kwargs['parameters'] == [spec.parameters]
        assert node.kwargs['additional_env'] == expected.environment(os.environ)
    perception = next(n for n in nodes if n.kwargs['name'] == 'perception')
    assert perception.kwargs['parameters'][0]['mode'] == 'eco'
    assert perception.kwargs['parameters'][0]['num_tpus'] == 4


@pytest.mark.skipif(not HAVE_LAUNCH, reason='launch and launch_ros are not installable here '
                                            '(no ROS apt repository); the file is checked '
                                            'against bringup with stand-ins instead')
def test_real_launch_description():
    from launch import LaunchContext
    from launch.actions import DeclareLaunchArgument, OpaqueFunction
    description = load_launch_file().generate_launch_description()
    declared = [e for e in description.entities if isinstance(e, DeclareLaunchArgument)]
    assert {d.name for d in declared} == {'config', *(a.name for a in load_graph().arguments)}
    context = LaunchContext()
    for d in declared:
        d.visit(context)
    opaque = next(e for e in description.entities if isinstance(e, OpaqueFunction))
    nodes = opaque.execute(context)
    assert len(nodes) == len(load_graph().nodes)


def test_console_scripts_match_the_graph_executables():
    setup = (PACKAGE_ROOT / 'setup.py').read_text()
    for spec in load_graph().nodes:
        module, cls = spec.node_class.split(':')
        assert f"'{spec.executable} = {module}:main'" in setup
        assert hasattr(importlib.import_module(module), cls)


def test_runner_rejects_unknown_arguments(capsys):
    from dyn_perception.bringup import main
    assert main(['warp:=9', '--duration', '0']) == 2
    assert 'unknown launch arguments' in capsys.readouterr().err


@pytest.mark.parametrize('argument', ['num_tpus:=', 'num_tpus:={a: 1}', 'num_tpus:=[1, 2]',
                                      'num_tpus:=2.5', 'num_tpus:=true', 'rate_hz:=abc',
                                      'rate_hz:='])
def test_runner_refuses_a_value_unlike_the_arguments_default(argument, capsys):
    # rclpy used to get these: a traceback for {a: 1} (exit 1), "not initialized" for ''.
    from dyn_perception.bringup import main
    assert main([argument, '--duration', '0']) == 2
    errors = capsys.readouterr().err.splitlines()
    assert len(errors) == 1 and errors[0].startswith(
        f'error: launch argument {argument.split(":=")[0]}:='), errors


def test_runner_takes_an_integer_for_a_float_argument():
    assert load_graph(values={'rate_hz': 5}).nodes[0].parameters['rate_hz'] == 5
    arguments = {a.name: a for a in load_graph().arguments}
    assert arguments['rate_hz'].parse('5') == 5 and arguments['num_tpus'].parse('3') == 3
    assert arguments['uri'].parse('') == ''  # text arguments stay text, empty or not


def test_node_processes_get_the_fastdds_profile_unless_one_is_set():
    graph = load_graph()
    profile = graph.fastdds_profile
    assert profile is not None and profile.is_file()
    segment = ElementTree.parse(profile).getroot().find('.//{*}segment_size')
    assert int(segment.text) >= 2 * 640 * 480 * 3  # two whole rgb8 camera frames
    assert graph.environment({}) == {FASTDDS_PROFILE_VARIABLES[0]: str(profile)}
    for variable in FASTDDS_PROFILE_VARIABLES:
        assert graph.environment({variable: '/my/profile.xml'}) == {}


def test_a_missing_fastdds_profile_is_a_graph_error(tmp_path):
    text = DEFAULT_GRAPH.read_text().replace('fastdds_large_images.xml', 'missing.xml')
    (tmp_path / 'graph.yaml').write_text(text)
    with pytest.raises(ValueError, match='not a valid node graph'):
        load_graph(tmp_path / 'graph.yaml')


@pytest.mark.skipif(HAVE_LAUNCH, reason='the real launch packages are installed; '
                                        'test_real_launch_description covers the file')
def test_every_launch_argument_reaches_the_node_parameters_it_names(stand_ins):
    # What `ros2 launch dyn_perception pipeline.launch.py name:=value` hands the nodes, for
    # every argument at once, each with a value unlike its default.
    module = load_launch_file()
    graph = load_graph()
    choices = {'mode': 'eco', 'policy': 'critical', 'source': 'folder',
               'backend': 'sim-edgetpu', 'image_reliability': 'best_effort'}
    by_type = {int: '7', float: '12.5'}
    texts = {a.name: choices.get(a.name, by_type.get(type(a.default), f'/some/{a.name}'))
             for a in graph.arguments}
    nodes = module.generate_launch_description().args[0][-1].kwargs['function'](
        {'config': str(DEFAULT_GRAPH), **texts})
    given = {n.kwargs['name']: n.kwargs['parameters'][0] for n in nodes}
    for argument in graph.arguments:
        value = argument.parse(texts[argument.name])
        assert value != argument.default, argument.name
        for node, parameter in argument.sets:
            assert given[node][parameter] == value, f'{argument.name} -> {node}.{parameter}'
