"""
Devices by backend name, as the perception node's ``backend`` and ``num_tpus`` ask for them.

'auto' prefers real Edge TPUs and falls back to LiteRT on the CPU when pycoral or the TPUs are
missing, so the same launch file works on a robot with TPUs and on a laptop.
"""

from __future__ import annotations

from dyn_perception.runtime.devices.base import Device, DeviceUnavailable
from dyn_perception.runtime.devices.cpu import LiteRTCpuDevice
from dyn_perception.runtime.devices.edgetpu import EdgeTPUDevice, list_edge_tpus
from dyn_perception.runtime.devices.simulated import SimulatedEdgeTPU
from dyn_perception.runtime.devices.timing import calibrated_timing

BACKENDS = ('auto', 'litert', 'edgetpu', 'sim-edgetpu')
# The most devices the perception node opens (its ``num_tpus``); the system monitor's bound on
# one frame's energy is this pool at full power (``energy.readings``).
MAX_DEVICES = 16


def make_devices(backend: str, count: int, clock: str = 'wall',
                 interface: str = 'usb') -> list[Device]:
    """
    Open ``count`` devices of ``backend``.

    ``clock`` and ``interface`` apply to 'sim-edgetpu'. For 'litert', ``count`` is the number
    of CPU workers (one LiteRT thread each). Raises DeviceUnavailable for 'edgetpu' when fewer
    TPUs are attached than asked for.
    """
    if backend not in BACKENDS:
        raise ValueError(f'unknown backend {backend!r}; known: {BACKENDS}')
    if count < 1:
        raise ValueError(f'count must be >= 1, got {count}')
    if backend == 'auto':
        try:
            available = len(list_edge_tpus())
        except DeviceUnavailable:
            available = 0
        backend = 'edgetpu' if available >= count else 'litert'
    if backend == 'litert':
        return [LiteRTCpuDevice(f'cpu{i}') for i in range(count)]
    if backend == 'edgetpu':
        return [EdgeTPUDevice(i) for i in range(count)]
    timing = calibrated_timing(interface)
    return [SimulatedEdgeTPU(f'simtpu{i}', timing, clock) for i in range(count)]
