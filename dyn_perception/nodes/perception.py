"""
perception: early-exit inference on ``image_raw``; results, overlay and diagnostics out.

Subscribes ``image_raw`` (sensor data QoS), ``image_raw/ground_truth`` (from a labelled
replay) and ``energy_mode``; publishes ``~/result`` (``std_msgs/String``, JSON, schema
``dyn_perception/result/1`` documented in ``runtime.perception``), ``~/overlay`` (annotated
``sensor_msgs/Image``, only while someone listens) and ``/diagnostics``. A malformed image is
dropped with a counted, logged reason. All the work is in ``runtime.perception``.
"""

from collections import Counter
import json
import time
from typing import Optional

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from dyn_perception.nodes.conversions import image_to_rgb, rgb_to_image
from dyn_perception.nodes.params import Param, ParameterSet
from dyn_perception.nodes.qos import image_qos, IMAGE_RELIABILITY_PARAM
from dyn_perception.nodes.spin import spin_node
from dyn_perception.runtime.devices.factory import BACKENDS
from dyn_perception.runtime.exits import POLICIES
from dyn_perception.runtime.modes import load_modes
from dyn_perception.runtime.overlay import annotate
from dyn_perception.runtime.pairing import StampPairing
from dyn_perception.runtime.perception import PerceptionEngine, PerceptionSettings
from rclpy.event_handler import SubscriptionEventCallbacks
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image
from std_msgs.msg import String


def parameters(modes: tuple) -> tuple:
    return (
        Param('model', 'fmnist_eenet', 'model name under models/ or a model directory'),
        Param('backend', 'auto', 'where segments run', choices=BACKENDS),
        Param('num_tpus', 2, 'devices to spread the segments over', low=1, high=16),
        Param('mode', modes[1] if len(modes) > 1 else modes[0],
              'operating mode (exit thresholds per mode come from the manifest)',
              choices=modes),
        Param('exit_policy', 'auto', 'exit rule; auto: the manifest default',
              choices=('auto', *POLICIES)),
        Param('variant', 'auto', 'model variant; auto: the one the build chose for the mode'),
        Param('thresholds', [], 'one per early exit to override the mode; [] uses the mode',
              number_list=True),
        Param('queue_capacity', 4, 'frames waiting per stage before the oldest is dropped',
              low=1, high=256),
        Param('follow_energy_mode', True, 'take the mode from the energy_mode topic'),
        IMAGE_RELIABILITY_PARAM,
        Param('diagnostics_period_s', 1.0, 'seconds between /diagnostics messages',
              low=0.1, high=60.0),
    )


class Perception(Node):

    def __init__(self, **kwargs):
        super().__init__('perception', **kwargs)
        self.params = ParameterSet(self, parameters(tuple(m.name for m in load_modes())),
                                   self._validate, self._apply)
        self.result_pub = self.create_publisher(String, '~/result', 50)
        self.overlay_pub = self.create_publisher(Image, '~/overlay', qos_profile_sensor_data)
        self.diagnostics_pub = self.create_publisher(DiagnosticArray, '/diagnostics', 10)
        self.malformed = Counter()
        self.engine = PerceptionEngine(self._settings(self.params.values()), self._publish,
                                       keep_images=True)
        self.create_subscription(
            Image, 'image_raw', self._on_image, image_qos(self.params.value('image_reliability')),
            event_callbacks=SubscriptionEventCallbacks(incompatible_qos=self._on_incompatible_qos))
        truth = self.create_subscription(String, 'image_raw/ground_truth', self._on_truth, 50)
        # A replay's label may trail its image by a scheduling delay on a busy host; while
        # labels flow or a label publisher exists, an image waits up to half a second for it.
        self.pairing = StampPairing(
            lambda image, stamp, label: self.engine.submit(image, stamp, label), wait_s=0.5,
            labels_expected=lambda: truth.get_publisher_count() > 0)
        self.create_subscription(String, 'energy_mode', self._on_energy_mode, 10)
        self.create_timer(self.params.value('diagnostics_period_s'), self._publish_diagnostics)
        # Runs only while a frame waits for its label: an idle 50 Hz timer would wake the
        # executor between images for nothing.
        self.release_timer = self.create_timer(0.02, self._release_waiting, autostart=False)
        self.get_logger().info(f'{self.engine.manifest.name} on {self.params.value("backend")} '
                               f'x{self.params.value("num_tpus")}, '
                               f'placement {self.engine.stats().placement}')

    @staticmethod
    def _settings(p: dict) -> PerceptionSettings:
        return PerceptionSettings(
            model=p['model'], backend=p['backend'], num_tpus=p['num_tpus'], mode=p['mode'],
            policy='' if p['exit_policy'] == 'auto' else p['exit_policy'],
            variant='' if p['variant'] == 'auto' else p['variant'],
            thresholds=tuple(float(t) for t in p['thresholds']),
            queue_capacity=p['queue_capacity'])

    def _validate(self, proposed: dict, changed: set) -> Optional[str]:
        return self.engine.check(self._settings(proposed))

    def _apply(self, changes: dict) -> None:
        self.engine.apply(self._settings(self.params.values()))
        self.get_logger().info('now ' + ', '.join(f'{k}={v}' for k, v in changes.items()))

    # -- inputs --------------------------------------------------------------------------

    def _on_truth(self, msg: String) -> None:
        try:
            data = json.loads(msg.data)
            stamp, label = tuple(data['stamp']), int(data['class_id'])
        except (ValueError, KeyError, TypeError):
            self.malformed['ground truth'] += 1
            return
        self.pairing.add_label(stamp, label, time.monotonic())

    def _on_incompatible_qos(self, info) -> None:
        self.get_logger().error(
            f'a publisher of image_raw offers incompatible QoS (policy {info.last_policy_kind}):'
            ' its images never arrive. Give the camera and this node the same '
            'image_reliability', throttle_duration_sec=10.0)

    def _on_image(self, msg: Image) -> None:
        try:
            image = image_to_rgb(msg)
        except ValueError as err:
            reason = str(err).split(' ', 2)[:2]
            self.malformed[' '.join(reason)] += 1
            self.get_logger().warning(f'dropped a malformed image: {err}',
                                      throttle_duration_sec=5.0)
            return
        stamp = (msg.header.stamp.sec, msg.header.stamp.nanosec)
        self.pairing.add_frame(stamp, image, time.monotonic())
        if self.pairing.waiting and self.release_timer.is_canceled():
            self.release_timer.reset()

    def _release_waiting(self) -> None:
        self.pairing.release(time.monotonic())
        if not self.pairing.waiting:
            self.release_timer.cancel()

    def _on_energy_mode(self, msg: String) -> None:
        if not self.params.value('follow_energy_mode') or msg.data == self.params.value('mode'):
            return
        result = self.set_parameters([Parameter('mode', value=msg.data)])[0]
        if not result.successful:
            self.get_logger().warning(f'energy_mode {msg.data!r} refused: {result.reason}',
                                      throttle_duration_sec=10.0)

    # -- outputs -------------------------------------------------------------------------

    def _publish(self, record: dict, image) -> None:
        self.result_pub.publish(String(data=json.dumps(record)))
        if image is not None and self.overlay_pub.get_subscription_count() > 0:
            overlay = rgb_to_image(annotate(image, record))
            overlay.header.stamp.sec, overlay.header.stamp.nanosec = record['stamp']
            overlay.header.frame_id = 'camera'
            self.overlay_pub.publish(overlay)

    def _publish_diagnostics(self) -> None:
        values = self.engine.diagnostics()
        values['malformed'] = sum(self.malformed.values())
        for reason, count in self.malformed.items():
            values[f'malformed.{reason}'] = count
        status = DiagnosticStatus(
            level=DiagnosticStatus.OK if not self.engine.stats().failed else DiagnosticStatus.WARN,
            name='dyn_perception: perception', hardware_id=self.params.value('backend'),
            message=f'{values["fps"]} fps, mode {values["mode"]}',
            values=[KeyValue(key=k, value=str(v)) for k, v in values.items()])
        msg = DiagnosticArray(status=[status])
        msg.header.stamp = self.get_clock().now().to_msg()
        self.diagnostics_pub.publish(msg)

    def destroy_node(self) -> None:
        self.engine.close()
        super().destroy_node()


def main(args: Optional[list] = None) -> None:
    spin_node(Perception, args)


if __name__ == '__main__':
    main()
