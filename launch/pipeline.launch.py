# Copyright 2026 dyn_perception maintainers. Apache-2.0.
"""
Launch the perception graph: camera, perception, energy manager, system monitor.

    ros2 launch dyn_perception pipeline.launch.py mode:=eco backend:=sim-edgetpu num_tpus:=4

The graph and its launch arguments are described once in config/pipeline.yaml
(dyn_perception.bringup reads it); ``config:=FILE`` uses another graph file.
"""

import os

from dyn_perception.bringup import DEFAULT_GRAPH, load_graph
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node


def _nodes(context, *args, **kwargs):
    config = LaunchConfiguration('config').perform(context)
    values = {a.name: a.parse(LaunchConfiguration(a.name, default=str(a.default))
                              .perform(context))
              for a in load_graph(config).arguments}
    graph = load_graph(config, values)
    return [Node(package='dyn_perception', executable=spec.executable, name=spec.name,
                 parameters=[spec.parameters], additional_env=graph.environment(os.environ),
                 output='screen', emulate_tty=True)
            for spec in graph.nodes]


def generate_launch_description():
    arguments = [DeclareLaunchArgument('config', default_value=str(DEFAULT_GRAPH),
                                       description='node graph YAML')]
    arguments += [DeclareLaunchArgument(a.name, default_value=str(a.default),
                                        description=a.description)
                  for a in load_graph(DEFAULT_GRAPH).arguments]
    return LaunchDescription([*arguments, OpaqueFunction(function=_nodes)])
