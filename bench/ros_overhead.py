"""
What the perception node adds on top of ROS transport, for 640x480 rgb8 camera frames.

For 30 and 60 fps, in one process and across two, two phases with the same frames, rate and
QoS, one after the other so that neither steals the executor or the cores from the other:

1. floor: a do-nothing ``Echo`` node takes each image and answers with its stamp and the
   time its callback ran. Image stamp to that callback is the bare rclpy publish-to-callback
   latency of the image (the transport floor); stamp to the answer's arrival is the round
   trip through a node that does no work (the echo floor: the floor plus a small reply).
2. node: the perception node; image stamp to the received result, minus the inference time
   the result reports.

The difference is what the node costs: conversion, preprocessing, queueing, result
publishing. Drops are frames published without a result.

    python bench/ros_overhead.py [--json OUT] [--seconds 10] [--image-reliability best_effort]
                                 [--no-fastdds-profile]

Every process gets the graph's Fast DDS profile (config/pipeline.yaml: fastdds_profile), as
under ros2 launch, unless --no-fastdds-profile or FASTDDS_DEFAULT_PROFILES_FILE is set.
"""

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time

import _paths  # noqa: F401 - puts the repository root on sys.path
from dyn_perception.bringup import FASTDDS_PROFILE_VARIABLES, load_graph, make_node, NodeSpec
from dyn_perception.nodes.conversions import rgb_to_image
from dyn_perception.nodes.qos import image_qos, IMAGE_RELIABILITY
from dyn_perception.runtime.datasets import load_dataset
from dyn_perception.runtime.frames import letterbox
import numpy as np
import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from report import bounded, format_table, output_file, write_json
from sensor_msgs.msg import Image
from std_msgs.msg import String


def perception_spec(reliability: str) -> NodeSpec:
    """Describe the node under test, the same in this process and in a second one."""
    return NodeSpec('perception', 'perception', 'dyn_perception.nodes.perception:Perception',
                    {'backend': 'litert', 'num_tpus': 1, 'mode': 'balanced',
                     'image_reliability': reliability})


def now_ns(node: Node) -> int:
    return node.get_clock().now().nanoseconds


def stamp_ns(stamp) -> int:
    return stamp.sec * 10**9 + stamp.nanosec


class Echo(Node):
    """Answer every image on ``bench/echo`` with its stamp and when the callback ran (ns)."""

    def __init__(self, reliability: str):
        super().__init__('bench_echo')
        self.answer = self.create_publisher(String, 'bench/echo', 200)
        self.create_subscription(Image, 'image_raw', self._on_image, image_qos(reliability))

    def _on_image(self, msg: Image) -> None:
        self.answer.publish(String(data=f'{stamp_ns(msg.header.stamp)} {now_ns(self)}'))


class Driver(Node):
    """Publishes camera frames; records the echo's and the perception node's answers (ms)."""

    def __init__(self, reliability: str):
        super().__init__('bench_driver')
        self.publisher = self.create_publisher(Image, 'image_raw', image_qos(reliability))
        self.clear()
        self.create_subscription(String, 'bench/echo', self._on_echo, 200)
        self.create_subscription(String, 'perception/result', self._on_result, 200)
        test = load_dataset('fashion_mnist').test
        self.frames = [rgb_to_image(letterbox(test.images[i], 640, 480)) for i in range(50)]

    def clear(self) -> None:
        self.floor_ms, self.echo_ms, self.added_ms, self.inference_ms = [], [], [], []

    def _on_echo(self, msg: String) -> None:
        stamp, callback = (int(v) for v in msg.data.split())
        self.floor_ms.append((callback - stamp) / 1e6)
        self.echo_ms.append((now_ns(self) - stamp) / 1e6)

    def _on_result(self, msg: String) -> None:
        record = json.loads(msg.data)
        if record['status'] != 'ok':
            return
        sec, nanosec = record['stamp']
        total = (now_ns(self) - (sec * 10**9 + nanosec)) / 1e6
        self.inference_ms.append(record['inference_ms'])
        self.added_ms.append(total - record['inference_ms'])

    def publish(self, index: int) -> None:
        msg = self.frames[index % len(self.frames)]
        msg.header.stamp = self.get_clock().now().to_msg()
        self.publisher.publish(msg)

    def drive(self, answers_on: str, fps: float, seconds: float) -> int:
        """
        Drive a node that takes images and answers on ``answers_on``; return the count.

        Once the node is there, a warm-up second, then ``fps`` frames a second for ``seconds``.
        """
        deadline = time.monotonic() + 30
        while (self.count_subscribers('image_raw') < 1
               or self.count_publishers(answers_on) < 1) and time.monotonic() < deadline:
            time.sleep(0.05)
        for i in range(int(fps)):  # warm-up second, not counted
            self.publish(i)
            time.sleep(1.0 / fps)
        time.sleep(0.5)
        self.clear()
        count = int(fps * seconds)
        start = time.monotonic()
        for i in range(count):
            delay = start + i / fps - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            self.publish(i)
        time.sleep(1.0)
        return count


def phase(driver: Driver, executor: SingleThreadedExecutor, node: str, two_processes: bool,
          reliability: str, fps: float, seconds: float) -> int:
    """Run ``node`` ('echo' or 'perception') here or in a child process; drive it."""
    answers_on = 'perception/result' if node == 'perception' else 'bench/echo'
    spec = perception_spec(reliability)
    if two_processes:
        command = (['-m', spec.module, *spec.ros_arguments()] if node == 'perception'
                   else [__file__, '--echo', '--image-reliability', reliability])
        child = subprocess.Popen([sys.executable, *command], env=os.environ.copy(),
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            return driver.drive(answers_on, fps, seconds)
        finally:
            child.send_signal(signal.SIGINT)  # what ros2 launch sends first
            try:
                child.wait(timeout=10)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
    subject = make_node(spec) if node == 'perception' else Echo(reliability)
    executor.add_node(subject)
    try:
        return driver.drive(answers_on, fps, seconds)
    finally:
        executor.remove_node(subject)
        subject.destroy_node()


def run(fps: float, seconds: float, two_processes: bool, reliability: str) -> dict:
    """Measure both phases at ``fps`` for ``seconds``; the nodes here or in a second process."""
    executor = SingleThreadedExecutor()
    driver = Driver(reliability)
    executor.add_node(driver)
    thread = threading.Thread(target=executor.spin, daemon=True)
    thread.start()
    where = 'two processes' if two_processes else 'one process'
    try:
        phase(driver, executor, 'echo', two_processes, reliability, fps, seconds)
        floor_ms, echo_ms = driver.floor_ms, driver.echo_ms
        count = phase(driver, executor, 'perception', two_processes, reliability, fps, seconds)
    finally:
        executor.shutdown()
        driver.destroy_node()
        thread.join(timeout=5)
    if not echo_ms or not driver.added_ms:
        raise RuntimeError(f'{fps:.0f} fps, {where}: {len(echo_ms)} echo and '
                           f'{len(driver.added_ms)} result messages arrived; nothing to '
                           'measure (discovery failed?)')
    floor, echo = float(np.median(floor_ms)), float(np.median(echo_ms))
    added = np.asarray(driver.added_ms)
    return {
        'fps': fps, 'processes': 2 if two_processes else 1, 'frames': count,
        'results': len(driver.added_ms), 'drops': count - len(driver.added_ms),
        'echo_drops': count - len(echo_ms),
        'transport_floor_ms_median': floor,
        'transport_floor_ms_p99': float(np.percentile(floor_ms, 99)),
        'echo_floor_ms_median': echo,
        'end_to_end_minus_inference_ms_median': float(np.median(added)),
        'end_to_end_minus_inference_ms_p99': float(np.percentile(added, 99)),
        'inference_ms_median': float(np.median(driver.inference_ms)),
        'added_ms_median': float(np.median(added)) - floor,
        'added_over_echo_ms_median': float(np.median(added)) - echo,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--json', type=output_file, help='write results here')
    parser.add_argument('--seconds', type=bounded(float, 0, above=True), default=10.0,
                        help='seconds per setting')
    parser.add_argument('--image-reliability', default='reliable', choices=IMAGE_RELIABILITY,
                        help='image_raw QoS of every node; reliable is what the launch '
                        'description sets (see dyn_perception/nodes/qos.py)')
    parser.add_argument('--no-fastdds-profile', action='store_true',
                        help="leave Fast DDS's defaults instead of the graph's profile "
                        '(config/fastdds_large_images.xml)')
    parser.add_argument('--echo', action='store_true', help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ.setdefault('ROS_AUTOMATIC_DISCOVERY_RANGE', 'LOCALHOST')
    if not args.no_fastdds_profile:  # what the launch description gives the node processes
        os.environ.update(load_graph().environment(os.environ))
    profile = next((os.environ[v] for v in FASTDDS_PROFILE_VARIABLES if v in os.environ), None)
    if args.echo:  # the second process of the two-process floor phase
        with rclpy.init():
            rclpy.spin(Echo(args.image_reliability))
        return 0
    results = []
    with rclpy.init():
        for two in (False, True):
            for fps in (30.0, 60.0):
                results.append(run(fps, args.seconds, two, args.image_reliability))
                print(f'done: {fps:.0f} fps, {results[-1]["processes"]} process(es)',
                      flush=True)
    print(format_table(
        ['fps', 'processes', 'frames', 'drops', 'floor ms', 'echo ms', 'e2e-inference ms',
         'p99 ms', 'inference ms', 'added ms', 'added over echo ms'],
        [[r['fps'], r['processes'], r['frames'], r['drops'], r['transport_floor_ms_median'],
          r['echo_floor_ms_median'], r['end_to_end_minus_inference_ms_median'],
          r['end_to_end_minus_inference_ms_p99'], r['inference_ms_median'],
          r['added_ms_median'], r['added_over_echo_ms_median']] for r in results]))
    by = {(r['processes'], r['fps']): r for r in results}
    flat = {
        'added_ms_median_one_process': by[(1, 30.0)]['added_ms_median'],
        'added_ms_median_two_processes': by[(2, 30.0)]['added_ms_median'],
        'transport_floor_ms_median': by[(1, 30.0)]['transport_floor_ms_median'],
        'added_over_echo_ms_median_one_process': by[(1, 30.0)]['added_over_echo_ms_median'],
        'added_over_echo_ms_median_two_processes': by[(2, 30.0)]['added_over_echo_ms_median'],
        'drops_30fps': by[(1, 30.0)]['drops'] + by[(2, 30.0)]['drops'],
    }
    print('\n' + '\n'.join(f'{k}: {v:.4g}' for k, v in flat.items()))
    write_json(args.json, {**flat, 'image_reliability': args.image_reliability,
                           'fastdds_profile': profile, 'runs': results})
    return 0


if __name__ == '__main__':
    sys.exit(main())
