"""
perception: early-exit inference on ``image_raw``; results, overlay and diagnostics out.

Subscribes ``image_raw`` (QoS by ``image_reliability``), ``image_raw/ground_truth`` (from a
labelled replay) and ``energy_mode``; publishes ``~/result`` (``std_msgs/String``, JSON,
schema ``dyn_perception/result/1`` documented in ``runtime.perception``), ``~/overlay``
(annotated ``sensor_msgs/Image``, only while someone listens) and ``/diagnostics``. A
malformed image is dropped with a counted, logged reason of a fixed kind; so is a malformed
label. Every frame the camera published gets one record: one that never arrived (lost in DDS
while the host was too busy) is found by the camera's sequence numbers and recorded as
dropped. All the work is in ``runtime.perception``.

Who sets the mode: ``mode:=auto`` (the default) follows ``energy_mode``, what the energy
manager publishes; a mode name, at start-up or by ``ros2 param set /perception mode eco``,
holds that mode whatever the energy manager says, until ``mode`` is set back to ``auto``.
The mode running is in every result record and in ``/diagnostics``.
"""

import json
import time
from typing import Optional

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from dyn_perception.nodes.conversions import (
    image_to_rgb, MALFORMED_KINDS, MalformedImage, rgb_to_image
)
from dyn_perception.nodes.params import Param, ParameterSet
from dyn_perception.nodes.qos import image_qos, IMAGE_RELIABILITY_PARAM
from dyn_perception.nodes.spin import spin_node
from dyn_perception.runtime.arrivals import SequenceGaps
from dyn_perception.runtime.artifacts import load_manifest
from dyn_perception.runtime.devices.factory import BACKENDS, MAX_DEVICES
from dyn_perception.runtime.exits import POLICIES
from dyn_perception.runtime.modes import load_modes
from dyn_perception.runtime.overlay import annotate
from dyn_perception.runtime.pairing import parse_label, StampPairing
from dyn_perception.runtime.perception import PerceptionEngine, PerceptionSettings
from rclpy.event_handler import SubscriptionEventCallbacks
from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data
from rclpy.subscription import MessageInfo
from sensor_msgs.msg import Image
from std_msgs.msg import String


AUTO = 'auto'
GROUND_TRUTH = 'ground_truth'


def parameters(modes: tuple) -> tuple:
    return (
        Param('model', 'fmnist_eenet', 'model name under models/ or a model directory'),
        Param('backend', 'auto', 'where segments run', choices=BACKENDS),
        Param('num_tpus', 2, 'devices opened; a mode powers at most this many (manifest '
              'mode_configs), the rest are powered down', low=1, high=MAX_DEVICES),
        Param('mode', AUTO,
              'operating mode; auto: follow energy_mode (the energy manager); a mode name '
              'holds that mode until mode is set back to auto', choices=(AUTO, *modes)),
        Param('exit_policy', 'auto', 'exit rule; auto: the manifest default',
              choices=('auto', *POLICIES)),
        Param('variant', AUTO, 'model variant: auto (the one the build chose for the mode) '
              "or one of the model's variants"),
        Param('thresholds', [], 'one per early exit to override the mode; [] uses the mode',
              number_list=True),
        Param('queue_capacity', 4, 'frames waiting per stage before the oldest is dropped',
              low=1, high=256),
        IMAGE_RELIABILITY_PARAM,
        Param('diagnostics_period_s', 1.0, 'seconds between /diagnostics messages',
              low=0.1, high=60.0),
    )


class Perception(Node):

    def __init__(self, **kwargs):
        # Set before anything can fail: a node that fails half-way is still destroyed.
        self.engine: Optional[PerceptionEngine] = None
        super().__init__('perception', **kwargs)
        self.modes = tuple(m.name for m in load_modes())
        # What runs under mode:=auto until the energy manager says otherwise.
        self.energy_mode = self.modes[1] if len(self.modes) > 1 else self.modes[0]
        self.params = ParameterSet(self, parameters(self.modes), self._validate, self._apply)
        problem = self._variant_problem(self.params.values())
        if problem:  # start-up values bypass _validate
            raise ValueError(f'{self.get_name()}: {problem}')
        self.result_pub = self.create_publisher(String, '~/result', 50)
        self.overlay_pub = self.create_publisher(Image, '~/overlay', qos_profile_sensor_data)
        self.diagnostics_pub = self.create_publisher(DiagnosticArray, '/diagnostics', 10)
        self.malformed = dict.fromkeys((*MALFORMED_KINDS, GROUND_TRUTH), 0)
        self.engine = PerceptionEngine(self._settings(self.params.values()), self._publish,
                                       keep_images=True)
        # A frame DDS overwrote in the image history before this node took it (a change of
        # model holds the executor for its build, 0.2-0.4 s; a host too busy) is counted from
        # the camera's sequence numbers and recorded as dropped. A second executor thread for
        # frames would avoid the hold but costs every frame (docs/runtime.md).
        self.gaps = SequenceGaps()
        self.create_subscription(
            Image, 'image_raw', self._on_image, image_qos(self.params.value('image_reliability')),
            event_callbacks=SubscriptionEventCallbacks(incompatible_qos=self._on_incompatible_qos))
        truth = self.create_subscription(String, 'image_raw/ground_truth', self._on_truth, 50)
        # A replay's label may trail its image by a scheduling delay on a busy host; while
        # labels flow or a label publisher exists, an image waits up to half a second for it.
        # A frame is (image, arrival time): its hold counts in its latency.
        self.pairing = StampPairing(
            lambda frame, stamp, label: self.engine.submit(
                frame[0], stamp, label, held_s=time.monotonic() - frame[1]),
            wait_s=0.5, labels_expected=lambda: truth.get_publisher_count() > 0)
        self.create_subscription(String, 'energy_mode', self._on_energy_mode, 10)
        self.diagnostics_timer = self.create_timer(self.params.value('diagnostics_period_s'),
                                                   self._publish_diagnostics)
        # Runs only while a frame waits for its label: an idle 50 Hz timer would wake the
        # executor between images for nothing.
        self.release_timer = self.create_timer(0.02, self._release_waiting, autostart=False)
        self.get_logger().info(f'{self.engine.manifest.name} on {self.params.value("backend")} '
                               f'x{self.params.value("num_tpus")}, '
                               f'placement {self.engine.stats().placement}')

    def _settings(self, p: dict) -> PerceptionSettings:
        """Return the engine settings of parameters ``p``; mode auto runs the energy mode."""
        return PerceptionSettings(
            model=p['model'], backend=p['backend'], num_tpus=p['num_tpus'],
            mode=self.energy_mode if p['mode'] == AUTO else p['mode'],
            policy='' if p['exit_policy'] == 'auto' else p['exit_policy'],
            variant='' if p['variant'] == 'auto' else p['variant'],
            thresholds=tuple(float(t) for t in p['thresholds']),
            queue_capacity=p['queue_capacity'])

    def _validate(self, proposed: dict, changed: set) -> Optional[str]:
        return self._variant_problem(proposed) or self.engine.check(self._settings(proposed))

    def _variant_problem(self, p: dict) -> Optional[str]:
        """
        Say why ``variant`` is neither auto nor a variant of the model (None when it is one).

        The engine reads an empty variant as auto; accepted here, the parameter would read back
        '' while auto runs. A model that does not load is left to the engine, which names why.
        """
        if p['variant'] == AUTO:
            return None
        try:
            manifest = (self.engine.manifest if self.engine is not None
                        and p['model'] == self.engine.settings.model
                        else load_manifest(p['model']))
        except ValueError:  # ArtifactError: the engine's check or build reports it
            return None
        names = tuple(v.name for v in manifest.variants)
        if p['variant'] in names:
            return None
        return (f'variant={p["variant"]!r} is not one of {", ".join((AUTO, *names))} '
                f'(auto, or a variant of model {manifest.name})')

    def _apply(self, changes: dict) -> None:
        self.engine.apply(self._settings(self.params.values()))
        if 'diagnostics_period_s' in changes:
            self.diagnostics_timer.timer_period_ns = round(changes['diagnostics_period_s'] * 1e9)
        self.get_logger().info('now ' + ', '.join(f'{k}={v}' for k, v in changes.items()))

    # -- inputs --------------------------------------------------------------------------

    def _on_truth(self, msg: String) -> None:
        try:
            stamp, label = parse_label(msg.data, len(self.engine.manifest.labels))
        except ValueError as err:
            self.malformed[GROUND_TRUTH] += 1
            self.get_logger().warning(f'dropped a malformed ground truth label: {err}',
                                      throttle_duration_sec=5.0)
            return
        self.pairing.add_label(stamp, label, time.monotonic())

    def _on_incompatible_qos(self, info) -> None:
        self.get_logger().error(
            f'a publisher of image_raw offers incompatible QoS (policy {info.last_policy_kind}):'
            ' its images never arrive. Give the camera and this node the same '
            'image_reliability', throttle_duration_sec=10.0)

    def _on_image(self, msg: Image, info: MessageInfo) -> None:
        missed = self.gaps.missed_before(info)
        if missed:
            self.engine.record_not_received(
                missed, 'never received: the camera published it while this node was too busy '
                'to take it from the image_raw history (a pipeline being built, a busy host)')
        try:
            image = image_to_rgb(msg)
        except MalformedImage as err:
            self.malformed[err.kind] += 1
            self.get_logger().warning(f'dropped a malformed image: {err}',
                                      throttle_duration_sec=5.0)
            return
        stamp = (msg.header.stamp.sec, msg.header.stamp.nanosec)
        now = time.monotonic()
        self.pairing.add_frame(stamp, (image, now), now)
        if self.pairing.waiting and self.release_timer.is_canceled():
            self.release_timer.reset()

    def _release_waiting(self) -> None:
        self.pairing.release(time.monotonic())
        if not self.pairing.waiting:
            self.release_timer.cancel()

    def _on_energy_mode(self, msg: String) -> None:
        """Remember the energy manager's mode; run it only while ``mode`` is auto."""
        if msg.data == self.energy_mode:
            return
        previous, self.energy_mode = self.energy_mode, msg.data
        settings = self._settings(self.params.values())
        reason = self.engine.check(settings)
        if reason:
            self.energy_mode = previous
            self.get_logger().warning(f'energy_mode {msg.data!r} refused: {reason}',
                                      throttle_duration_sec=10.0)
        elif self.params.value('mode') == AUTO:
            self.engine.apply(settings)
            self.get_logger().info(f'mode {msg.data} (from energy_mode)')

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
        for kind, count in self.malformed.items():
            values[f'malformed.{kind}'] = count
        status = DiagnosticStatus(
            level=DiagnosticStatus.OK if not self.engine.stats().failed else DiagnosticStatus.WARN,
            name='dyn_perception: perception', hardware_id=self.params.value('backend'),
            message=f'{values["fps"]} fps, mode {values["mode"]}',
            values=[KeyValue(key=k, value=str(v)) for k, v in values.items()])
        msg = DiagnosticArray(status=[status])
        msg.header.stamp = self.get_clock().now().to_msg()
        self.diagnostics_pub.publish(msg)

    def destroy_node(self) -> None:
        if self.engine is not None:
            self.engine.close()
            self.engine = None
        super().destroy_node()


def main(args: Optional[list] = None) -> None:
    spin_node(Perception, args)


if __name__ == '__main__':
    main()
