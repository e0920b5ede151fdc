"""One way to run a node: quiet on Ctrl-C and launch shutdown, clear on a bad start-up."""

import sys
from typing import Callable, Optional

from dyn_perception.runtime.datasets import DatasetError
import rclpy
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node


def spin_node(make_node: Callable[[], Node], args: Optional[list] = None) -> None:
    """Create the node and spin it until shutdown; exit 2 with the reason if it cannot start."""
    try:
        with rclpy.init(args=args):
            try:
                node = make_node()
            except (ValueError, DatasetError, OSError) as err:
                print(f'error: {err}', file=sys.stderr)
                sys.exit(2)
            rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
