"""
camera: publish ``sensor_msgs/Image`` on ``image_raw`` from a device, a file or a replay.

With ``source:=replay`` the frames are the test split of the model's data set, upscaled to
camera size, and each frame's true class goes out on ``image_raw/ground_truth`` (JSON in a
``std_msgs/String``: ``{"stamp": [sec, nanosec], "class_id": k}``) just before the image, so
the perception node can measure accuracy live.
"""

import itertools
import json
from typing import Optional

from dyn_perception.nodes.conversions import rgb_to_image
from dyn_perception.nodes.params import Param, ParameterSet
from dyn_perception.nodes.qos import image_qos, IMAGE_RELIABILITY_PARAM
from dyn_perception.nodes.spin import spin_node
from dyn_perception.runtime.artifacts import load_manifest
from dyn_perception.runtime.datasets import DatasetError
from dyn_perception.runtime.frames import open_source, SOURCES
from rclpy.node import Node
from sensor_msgs.msg import Image
from std_msgs.msg import String

PARAMS = (
    Param('source', 'replay', 'where frames come from', choices=SOURCES),
    Param('uri', '0', 'V4L2 device number or path, video file, or image folder'),
    Param('model', 'fmnist_eenet', 'model whose data set the replay plays (source:=replay)'),
    Param('rate_hz', 30.0, 'frames per second', low=0.1, high=240.0),
    Param('width', 640, 'published frame width', low=16, high=4096),
    Param('height', 480, 'published frame height', low=16, high=4096),
    Param('encoding', 'rgb8', 'published encoding', choices=('rgb8', 'bgr8', 'mono8')),
    Param('loop', True, 'start over at the end of a file, folder or replay'),
    Param('seed', 0, 'replay order', low=0, high=2**31 - 1),
    Param('frame_id', 'camera', 'header frame id'),
    IMAGE_RELIABILITY_PARAM,
)
# Changing these reopens the source.
REOPEN = {'source', 'uri', 'model', 'width', 'height', 'loop', 'seed'}


class Camera(Node):

    def __init__(self, **kwargs):
        super().__init__('camera', **kwargs)
        self.params = ParameterSet(self, PARAMS, self._validate, self._apply)
        self.image_pub = self.create_publisher(
            Image, 'image_raw', image_qos(self.params.value('image_reliability')))
        self.truth_pub = self.create_publisher(String, 'image_raw/ground_truth', 10)
        self.published = 0
        self.frames = self._open(self.params.values())
        self._pending = None
        self.timer = self.create_timer(1.0 / self.params.value('rate_hz'), self._tick)

    def _open(self, p: dict):
        """Open the source the parameters describe; the first frame proves it works."""
        dataset = load_manifest(p['model']).dataset if p['source'] == 'replay' else ''
        frames = open_source(p['source'], p['uri'], p['width'], p['height'], dataset,
                             p['loop'], p['seed'])
        first = next(frames, None)
        if first is None:
            raise ValueError(f'{p["source"]} {p["uri"]!r} gave no frame')
        self.get_logger().info(f'publishing {p["source"]} frames at {p["rate_hz"]} Hz')
        return itertools.chain([first], frames)

    def _validate(self, proposed: dict, changed: set) -> Optional[str]:
        if not REOPEN & changed:
            return None
        try:
            self._pending = self._open(proposed)
        except (ValueError, DatasetError, OSError) as err:
            return f'cannot open {proposed["source"]} source: {err}'
        return None

    def _apply(self, changes: dict) -> None:
        if REOPEN & set(changes):
            self.frames, self._pending = self._pending, None
        if 'rate_hz' in changes:
            self.timer.timer_period_ns = round(1e9 / changes['rate_hz'])

    def _tick(self) -> None:
        frame = next(self.frames, None)
        if frame is None:
            self.get_logger().info('source exhausted', once=True)
            return
        msg = rgb_to_image(frame.image, self.params.value('encoding'))
        msg.header.stamp = self.get_clock().now().to_msg()
        msg.header.frame_id = self.params.value('frame_id')
        if frame.class_id is not None:
            self.truth_pub.publish(String(data=json.dumps(
                {'stamp': [msg.header.stamp.sec, msg.header.stamp.nanosec],
                 'class_id': frame.class_id})))
        self.image_pub.publish(msg)
        self.published += 1


def main(args: Optional[list] = None) -> None:
    spin_node(Camera, args)


if __name__ == '__main__':
    main()
