"""
What the perception node adds on top of ROS transport, for 640x480 rgb8 camera frames.

For 30 and 60 fps, in one process and across two: the end-to-end latency from the image
stamp to the received result, minus the inference time the result reports, against the bare
rclpy publish-to-callback latency of the same image measured in the same run (the transport
floor). The difference is what the node costs: conversion, preprocessing, queueing, result
publishing. Drops are frames published without a result.

    python bench/ros_overhead.py [--json OUT] [--seconds 10] [--image-reliability reliable]
"""

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from typing import Callable, Optional

import _paths  # noqa: F401 - puts the repository root on sys.path
from dyn_perception.nodes.conversions import rgb_to_image
from dyn_perception.nodes.qos import image_qos, IMAGE_RELIABILITY
from dyn_perception.runtime.datasets import load_dataset
from dyn_perception.runtime.frames import letterbox
import numpy as np
import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from report import format_table, write_json
from sensor_msgs.msg import Image
from std_msgs.msg import String

PERCEPTION_ARGS = ['--ros-args', '-r', '__node:=perception', '-p', 'backend:=litert',
                   '-p', 'num_tpus:=1', '-p', 'follow_energy_mode:=false',
                   '-p', 'mode:=balanced']


def now_ns(node: Node) -> int:
    return node.get_clock().now().nanoseconds


class Probe(Node):
    """
    Measure the bare transport: image stamp to callback, in milliseconds.

    In the driver's process the values go straight to ``sink``; in a process of its own
    (``--probe``) they are reported on ``bench/floor``.
    """

    def __init__(self, reliability: str, sink: Optional[Callable[[float], None]] = None):
        super().__init__('bench_probe')
        if sink is None:
            report = self.create_publisher(String, 'bench/floor', 200)
            sink = (lambda ms: report.publish(String(data=repr(ms))))
        self.sink = sink
        self.create_subscription(Image, 'image_raw', self._on_image, image_qos(reliability))

    def _on_image(self, msg: Image) -> None:
        self.sink((now_ns(self) - stamp_ns(msg.header.stamp)) / 1e6)


class Driver(Node):
    """Publishes camera frames; records result latency and the probe's transport floor."""

    def __init__(self, reliability: str):
        super().__init__('bench_driver')
        self.publisher = self.create_publisher(Image, 'image_raw', image_qos(reliability))
        self.floor_ms, self.added_ms, self.inference_ms = [], [], []
        self.results = 0
        self.create_subscription(String, 'bench/floor',
                                 lambda m: self.floor_ms.append(float(m.data)), 200)
        self.create_subscription(String, 'perception/result', self._on_result, 200)
        test = load_dataset('fashion_mnist').test
        self.frames = [rgb_to_image(letterbox(test.images[i], 640, 480)) for i in range(50)]

    def _on_result(self, msg: String) -> None:
        record = json.loads(msg.data)
        if record['status'] != 'ok':
            return
        sec, nanosec = record['stamp']
        total = (now_ns(self) - (sec * 10**9 + nanosec)) / 1e6
        self.results += 1
        self.inference_ms.append(record['inference_ms'])
        self.added_ms.append(total - record['inference_ms'])

    def publish(self, index: int) -> None:
        msg = self.frames[index % len(self.frames)]
        msg.header.stamp = self.get_clock().now().to_msg()
        self.publisher.publish(msg)


def stamp_ns(stamp) -> int:
    return stamp.sec * 10**9 + stamp.nanosec


def run(fps: float, seconds: float, two_processes: bool, reliability: str) -> dict:
    """Drive ``fps`` frames for ``seconds``; perception in this process or a second one."""
    executor = SingleThreadedExecutor()
    driver = Driver(reliability)
    executor.add_node(driver)
    nodes, children = [driver], []
    if two_processes:
        for command in (['-m', 'dyn_perception.nodes.perception', *PERCEPTION_ARGS,
                         '-p', f'image_reliability:={reliability}'],
                        [__file__, '--probe', '--image-reliability', reliability]):
            children.append(subprocess.Popen([sys.executable, *command], env=os.environ.copy(),
                                             stdout=subprocess.DEVNULL,
                                             stderr=subprocess.DEVNULL))
    else:
        probe = Probe(reliability, sink=lambda ms: driver.floor_ms.append(ms))
        executor.add_node(probe)
        nodes.append(probe)
        from dyn_perception.nodes.perception import Perception
        from rclpy.parameter import Parameter
        perception = Perception(parameter_overrides=[
            Parameter('backend', value='litert'), Parameter('num_tpus', value=1),
            Parameter('follow_energy_mode', value=False), Parameter('mode', value='balanced'),
            Parameter('image_reliability', value=reliability)])
        executor.add_node(perception)
        nodes.append(perception)
    thread = threading.Thread(target=executor.spin, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while driver.count_subscribers('image_raw') < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        for i in range(int(fps)):  # warm-up second, not counted
            driver.publish(i)
            time.sleep(1.0 / fps)
        time.sleep(0.5)
        driver.floor_ms.clear()
        driver.added_ms.clear()
        driver.inference_ms.clear()
        driver.results = 0
        count = int(fps * seconds)
        start = time.monotonic()
        for i in range(count):
            delay = start + i / fps - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            driver.publish(i)
        time.sleep(1.0)
    finally:
        executor.shutdown()
        for node in nodes:
            node.destroy_node()
        for child in children:
            child.send_signal(signal.SIGINT)  # what ros2 launch sends first
            try:
                child.wait(timeout=10)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
        thread.join(timeout=5)
    if not driver.floor_ms or not driver.added_ms:
        raise RuntimeError(f'{fps:.0f} fps, {"two processes" if two_processes else "one"}: '
                           f'{len(driver.floor_ms)} probe and {len(driver.added_ms)} result '
                           'messages arrived; nothing to measure (discovery failed?)')
    floor = float(np.median(driver.floor_ms))
    added = np.asarray(driver.added_ms)
    return {
        'fps': fps, 'processes': 2 if two_processes else 1, 'frames': count,
        'results': driver.results, 'drops': count - driver.results,
        'transport_floor_ms_median': floor,
        'transport_floor_ms_p99': float(np.percentile(driver.floor_ms, 99)),
        'end_to_end_minus_inference_ms_median': float(np.median(added)),
        'end_to_end_minus_inference_ms_p99': float(np.percentile(added, 99)),
        'inference_ms_median': float(np.median(driver.inference_ms)),
        'added_ms_median': float(np.median(added)) - floor,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--json', help='write results here')
    parser.add_argument('--seconds', type=float, default=10.0, help='seconds per setting')
    parser.add_argument('--image-reliability', default='best_effort', choices=IMAGE_RELIABILITY,
                        help='image_raw QoS of every node (see dyn_perception/nodes/qos.py)')
    parser.add_argument('--probe', action='store_true', help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ.setdefault('ROS_AUTOMATIC_DISCOVERY_RANGE', 'LOCALHOST')
    if args.probe:  # the second process of the two-process floor measurement
        with rclpy.init():
            rclpy.spin(Probe(args.image_reliability))
        return 0
    results = []
    with rclpy.init():
        for two in (False, True):
            for fps in (30.0, 60.0):
                results.append(run(fps, args.seconds, two, args.image_reliability))
                print(f'done: {fps:.0f} fps, {results[-1]["processes"]} process(es)',
                      flush=True)
    print(format_table(
        ['fps', 'processes', 'frames', 'drops', 'floor ms', 'e2e-inference ms', 'p99 ms',
         'inference ms', 'added ms'],
        [[r['fps'], r['processes'], r['frames'], r['drops'], r['transport_floor_ms_median'],
          r['end_to_end_minus_inference_ms_median'], r['end_to_end_minus_inference_ms_p99'],
          r['inference_ms_median'], r['added_ms_median']] for r in results]))
    by = {(r['processes'], r['fps']): r for r in results}
    flat = {
        'added_ms_median_one_process': by[(1, 30.0)]['added_ms_median'],
        'added_ms_median_two_processes': by[(2, 30.0)]['added_ms_median'],
        'transport_floor_ms_median': by[(1, 30.0)]['transport_floor_ms_median'],
        'drops_30fps': by[(1, 30.0)]['drops'] + by[(2, 30.0)]['drops'],
    }
    print('\n' + '\n'.join(f'{k}: {v:.4g}' for k, v in flat.items()))
    write_json(args.json, {**flat, 'runs': results})
    return 0


if __name__ == '__main__':
    sys.exit(main())
