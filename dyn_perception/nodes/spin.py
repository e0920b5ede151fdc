"""
One way to run a node: quiet on Ctrl-C and launch shutdown, clear on a bad start-up.

How ``ros2 launch`` stops a node (launch/launch/actions/execute_local.py, ros2/launch): on
a terminal's Ctrl-C the terminal has already sent SIGINT to the whole process group, so
launch sends nothing more; on any other shutdown it sends SIGINT itself; either way SIGTERM
follows after ``sigterm_timeout`` (5 s) and SIGKILL after another ``sigkill_timeout`` (5 s).
A node therefore gets SIGINT once or twice, close together, perhaps SIGTERM later, and
launch reports any exit code but 0 as "process has died".

rclpy's own handlers turn the first SIGINT into a KeyboardInterrupt or an
ExternalShutdownException, and a second one, arriving while the node is being destroyed,
into a KeyboardInterrupt wherever the code happens to be: the process then dies by the
signal (exit -2). So these nodes take the signals themselves: every SIGINT or SIGTERM only
sets a flag; the spin loop sees it within ``POLL_S``, destroys the node and returns.

A node that cannot start (a bad parameter value, a model that does not load, a device that
is not there) prints one ``error: ...`` line and exits 2, without a traceback.
"""

from __future__ import annotations

import re
import signal
import sys
import threading
from typing import Callable, NoReturn, Optional

from dyn_perception.runtime.datasets import DatasetError
from dyn_perception.runtime.devices.base import DeviceUnavailable
from dyn_perception.runtime.pipeline import PipelineError
import rclpy
from rclpy.exceptions import NameValidationException, ParameterException
from rclpy.executors import Executor, ExternalShutdownException, SingleThreadedExecutor
from rclpy.impl.implementation_singleton import rclpy_implementation as _rclpy
from rclpy.node import Node
from rclpy.signals import SignalHandlerOptions

# A shutdown request is seen this long after the signal at the latest.
POLL_S = 0.1
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
# What a bad start-up input raises: parameter values ROS refuses (out of range, wrong type),
# values the nodes refuse (ValueError, ArtifactError), topic names ROS refuses (a
# ``result_topic`` with a space), missing data sets, files or devices, segments that do not load.
STARTUP_ERRORS = (ValueError, ParameterException, NameValidationException, DatasetError,
                  DeviceUnavailable, PipelineError, OSError)


class StopRequest:
    """Set by SIGINT or SIGTERM, as often as they come; nothing is raised in the main thread."""

    def __init__(self):
        self._event = threading.Event()
        self.signals: list[int] = []

    def install(self) -> None:
        for number in STOP_SIGNALS:
            signal.signal(number, self._on_signal)

    def _on_signal(self, number: int, frame) -> None:
        self.signals.append(number)
        self._event.set()

    @staticmethod
    def ignore_further() -> None:
        """
        Ignore stop signals from now on: the node is gone, the process is ending.

        While Python finalises, it puts back the default action of every signal it had a
        handler for, so a late SIGTERM would kill the process (exit -15); an ignored signal
        stays ignored.
        """
        for number in STOP_SIGNALS:
            signal.signal(number, signal.SIG_IGN)

    @property
    def stopped(self) -> bool:
        return self._event.is_set()


def spin_until_stopped(executor: Executor, stop: StopRequest,
                       until: Callable[[], bool] = lambda: False) -> None:
    """Spin ``executor`` until a stop signal, ``until()`` or a shutdown from elsewhere."""
    try:
        while not stop.stopped and not until():
            executor.spin_once(timeout_sec=POLL_S)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass


def startup_error(err: Exception) -> NoReturn:
    """Print why the node cannot start on one line, without rcl's source locations; exit 2."""
    reason = re.sub(r', at \S+:\d+', '', ' '.join(str(err).split()))
    print(f'error: {reason}', file=sys.stderr)
    sys.exit(2)


def spin_node(make_node: Callable[[], Node], args: Optional[list] = None) -> None:
    """Create the node and spin it until shutdown; exit 2 with the reason if it cannot start."""
    stop = StopRequest()
    stop.install()
    try:
        # rcl parses --ros-args here: `-p x:={a: 1}`, a missing --params-file, `-r` alone.
        context = rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    except _rclpy.RCLError as err:
        startup_error(err)
    with context:
        try:
            node = make_node()
        except STARTUP_ERRORS as err:
            startup_error(err)
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        try:
            spin_until_stopped(executor, stop)
        finally:
            executor.shutdown()
            node.destroy_node()
    stop.ignore_further()
