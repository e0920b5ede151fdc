"""
Where segments run: one Device interface; LiteRT on the CPU, real and simulated Edge TPUs.

Real Edge TPUs need Google's pycoral, which is imported only when an ``EdgeTPUDevice`` is made.
"""

from dyn_perception.runtime.devices.base import (
    Device, DeviceError, DeviceUnavailable, Invocation, LoadReport, segment_refs, SegmentRef
)
from dyn_perception.runtime.devices.cpu import LiteRTCpuDevice
from dyn_perception.runtime.devices.edgetpu import EdgeTPUDevice, list_edge_tpus
from dyn_perception.runtime.devices.factory import BACKENDS, make_devices
from dyn_perception.runtime.devices.layers import read_tflite, UnreadableModel
from dyn_perception.runtime.devices.simulated import SimulatedEdgeTPU
from dyn_perception.runtime.devices.timing import (
    calibrated_timing, calibration_table, EdgeTPUTiming, FitRefused
)

__all__ = [
    'BACKENDS', 'calibrated_timing', 'calibration_table', 'Device', 'DeviceError',
    'DeviceUnavailable', 'EdgeTPUDevice', 'EdgeTPUTiming', 'FitRefused', 'Invocation',
    'list_edge_tpus', 'LiteRTCpuDevice', 'LoadReport', 'make_devices', 'read_tflite',
    'SegmentRef', 'segment_refs', 'SimulatedEdgeTPU', 'UnreadableModel',
]
