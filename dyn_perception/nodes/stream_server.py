"""
stream_server: every camera stream of a stream file served on one shared pool of TPUs.

The pool cannot be split across processes, so one node serves all the streams
(``runtime.serving.StreamServer``, wall-clock executor; the file format: docs/serving.md).
Subscribes each stream's ``topic`` (QoS by ``image_reliability``) and ``energy_mode``;
publishes each stream's results on ``~/<stream>/result`` (``std_msgs/String``, JSON, schema
``dyn_perception/serving_result/1``) and one ``/diagnostics`` status per stream (counters,
response against its analysed bound, misses, energy, why it is not admitted). Frames a
camera sent that never arrived are counted from its sequence numbers ('not_received').

``mode`` works as perception's: ``auto`` follows ``energy_mode``, a mode name holds it.
``streams`` names the stream file; set live, the new file's streams replace the old ones
(same pool only: a pool change needs a restart). A mode or file that the admission rejects is
refused with the server's reason (which stream, by how much) and the running streams go on.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from dyn_perception.nodes.conversions import image_to_rgb, MalformedImage
from dyn_perception.nodes.params import Param, ParameterSet
from dyn_perception.nodes.perception import AUTO
from dyn_perception.nodes.qos import image_qos, IMAGE_RELIABILITY_PARAM
from dyn_perception.nodes.spin import spin_node
from dyn_perception.runtime.arrivals import SequenceGaps
from dyn_perception.runtime.devices import make_devices
from dyn_perception.runtime.modes import load_modes
from dyn_perception.runtime.paths import data_path
from dyn_perception.runtime.serving import (
    load_streams, ServingError, StreamFile, StreamServer
)
from rclpy.node import Node
from rclpy.subscription import MessageInfo
from sensor_msgs.msg import Image
from std_msgs.msg import String

# Devices with a timing model: the admission needs modelled WCETs.
SERVING_BACKENDS = ('sim-edgetpu', 'edgetpu')


def stream_file(text: str) -> Path:
    """Find a stream file: as given, else under the package's data (``config/streams.yaml``)."""
    path = Path(text)
    return path if path.is_absolute() or path.exists() else data_path(*path.parts)


def parameters(modes: tuple) -> tuple:
    return (
        Param('streams', str(data_path('config', 'streams.yaml')),
              'stream file (pool, streams, floors per mode; docs/serving.md); a relative '
              'path not found here is looked up in the package data'),
        Param('mode', AUTO,
              'operating mode; auto: follow energy_mode (the energy manager); a mode name '
              'holds that mode until mode is set back to auto', choices=(AUTO, *modes)),
        Param('backend', 'sim-edgetpu', 'the pool devices', choices=SERVING_BACKENDS,
              read_only=True),
        IMAGE_RELIABILITY_PARAM,
        Param('diagnostics_period_s', 1.0, 'seconds between /diagnostics messages',
              low=0.1, high=60.0),
    )


class StreamServerNode(Node):

    def __init__(self, **kwargs):
        # Set before anything can fail: a node that fails half-way is still destroyed.
        self.server: Optional[StreamServer] = None
        super().__init__('stream_server', **kwargs)
        self.modes = tuple(m.name for m in load_modes())
        self.params = ParameterSet(self, parameters(self.modes), self._validate, self._apply)
        config = load_streams(stream_file(self.params.value('streams')))
        # What runs under mode:=auto until the energy manager speaks: the file's mode.
        self.energy_mode = config.mode or self.modes[0]
        devices = make_devices(self.params.value('backend'), config.pool.tpus, clock='wall')
        self.server = StreamServer(config, devices, self._mode(self.params.values()),
                                   modes=self.modes, on_result=self._publish)
        self.config = config
        self.result_pubs: dict = {}
        self.image_subs: dict = {}
        # Frames lost in DDS while the executor was busy (a stream change's admission) are
        # counted from each camera's sequence numbers: dropped 'not_received'.
        self.gaps = SequenceGaps()
        self.diagnostics_pub = self.create_publisher(DiagnosticArray, '/diagnostics', 10)
        self._wire(config)
        self.create_subscription(String, 'energy_mode', self._on_energy_mode, 10)
        self.diagnostics_timer = self.create_timer(self.params.value('diagnostics_period_s'),
                                                   self._publish_diagnostics)
        for name, reason in self.server.rejections.items():
            self.get_logger().warning(f'not admitted: {reason}')
        self.get_logger().info(f'{len(self.server.served)} of {len(config.streams)} streams on '
                               f'{config.pool.tpus} TPUs, mode {self.server.mode}')

    def _mode(self, p: dict) -> str:
        return self.energy_mode if p['mode'] == AUTO else p['mode']

    def _wire(self, config: StreamFile) -> None:
        """
        Subscribe and advertise each stream of ``config``; drop those of other streams.

        A stream that keeps its name but moves to another topic is subscribed anew: keyed
        by name alone, it went on listening to its old camera (until 2026-12-07).
        """
        topics = {spec.name: self.resolve_topic_name(spec.topic) for spec in config.streams}
        for name, subscription in list(self.image_subs.items()):
            if topics.get(name) != subscription.topic_name:
                self.destroy_subscription(self.image_subs.pop(name))
        qos = image_qos(self.params.value('image_reliability'))
        for spec in config.streams:
            if spec.name not in self.result_pubs:
                self.result_pubs[spec.name] = self.create_publisher(
                    String, f'~/{spec.name}/result', 50)
            if spec.name not in self.image_subs:
                self.image_subs[spec.name] = self.create_subscription(
                    Image, spec.topic,
                    lambda msg, info, name=spec.name: self._on_image(name, msg, info), qos)

    # -- changes -------------------------------------------------------------------------

    def _validate(self, proposed: dict, changed: set) -> Optional[str]:
        """
        Ask the server: its switch protocol is check-then-commit, so its answer is ours.

        A refused change leaves the running configuration as it was.
        """
        try:
            if 'streams' in changed and proposed['streams'] != self.params.value('streams'):
                config = load_streams(stream_file(proposed['streams']))
                self._replace_streams(config, self._mode(proposed))
            elif self._mode(proposed) != self.server.mode:
                self.server.set_mode(self._mode(proposed))
        except ServingError as err:
            return str(err)
        return None

    def _replace_streams(self, config: StreamFile, mode: str) -> None:
        """Switch to ``config``'s streams in one admission; a refusal keeps the running ones."""
        if config.pool != self.config.pool:
            raise ServingError(f'pool: {config.pool} differs from the running {self.config.pool};'
                               ' a pool change needs a restart')
        self.server.replace_streams(config.streams, mode)
        self.config = config
        self._wire(config)

    def _apply(self, changes: dict) -> None:
        if 'diagnostics_period_s' in changes:
            self.diagnostics_timer.timer_period_ns = round(changes['diagnostics_period_s'] * 1e9)
        self.get_logger().info('now ' + ', '.join(f'{k}={v}' for k, v in changes.items()))

    def _on_energy_mode(self, msg: String) -> None:
        """Remember the energy manager's mode; run it only while ``mode`` is auto."""
        if msg.data == self.energy_mode:
            return
        if self.params.value('mode') == AUTO:
            try:
                self.server.set_mode(msg.data)
            except ServingError as err:
                self.get_logger().warning(f'energy_mode {msg.data!r} refused: {err}',
                                          throttle_duration_sec=10.0)
                return
            self.get_logger().info(f'mode {msg.data} (from energy_mode)')
        self.energy_mode = msg.data

    # -- frames and outputs --------------------------------------------------------------

    def _on_image(self, stream: str, msg: Image, info: MessageInfo) -> None:
        missed = self.gaps.missed_before(info, stream)
        if missed:
            self.server.not_received(stream, missed)
        try:
            image = image_to_rgb(msg)
        except MalformedImage as err:
            self.get_logger().warning(f'{stream}: dropped a malformed image: {err}',
                                      throttle_duration_sec=5.0)
            return
        self.server.submit(stream, image, frame_id=[msg.header.stamp.sec,
                                                    msg.header.stamp.nanosec])

    def _publish(self, record: dict) -> None:
        """Publish one result (any thread: rclpy publishers are thread-safe)."""
        publisher = self.result_pubs.get(record['stream'])
        if publisher is not None:
            publisher.publish(String(data=json.dumps(record)))

    def _publish_diagnostics(self) -> None:
        msg = DiagnosticArray()
        # Streams of the running file only: a refused file's streams stay in the server's
        # accounts but are not this node's streams.
        names = {spec.name for spec in self.config.streams}
        for row in (r for r in self.server.report() if r['stream'] in names):
            bad = not row['admitted'] or row['misses'] > 0
            msg.status.append(DiagnosticStatus(
                level=DiagnosticStatus.WARN if bad else DiagnosticStatus.OK,
                name=f'dyn_perception: stream_server/{row["stream"]}',
                hardware_id=self.params.value('backend'),
                message=row['rejection'] or f'{row["completed"]} done, {row["misses"]} missed,'
                                            f' mode {row["mode"]}',
                values=[KeyValue(key=k, value=str(v)) for k, v in row.items()]))
        msg.header.stamp = self.get_clock().now().to_msg()
        self.diagnostics_pub.publish(msg)

    def destroy_node(self) -> None:
        if self.server is not None:
            self.server.close()
            self.server = None
        super().destroy_node()


def main(args: Optional[list] = None) -> None:
    spin_node(StreamServerNode, args)


if __name__ == '__main__':
    main()
