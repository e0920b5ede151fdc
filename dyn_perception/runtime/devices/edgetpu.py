"""
Real Edge TPUs through Google's pycoral, imported only when one is asked for.

pycoral, libedgetpu and the compiled ``*_edgetpu.tflite`` segments exist only where Coral's
packages are installed; everything else in the runtime works without them. Note that the PyPI
package named ``pycoral`` is an unrelated project: Coral's wheels come from coral.ai (or the
``python3-pycoral`` Debian package on Coral boards). Time is measured; energy is the measured
busy time at the Edge TPU's 2 W active power (no meter is read).
"""

from __future__ import annotations

from types import ModuleType
from typing import Sequence

from dyn_perception.runtime.devices.base import (
    DeviceError, DeviceUnavailable, MeasuredDevice, SegmentRef
)
from dyn_perception.runtime.devices.simulated import SimulatedEdgeTPU
from dyn_perception.runtime.devices.timing import calibrated_timing
from dyn_perception.runtime.segment import SegmentRunner

PROFILE_BACKEND = 'edgetpu'
_INSTALL_HINT = ("install Google's pycoral and libedgetpu (coral.ai/software/#pycoral-api, or "
                 "'apt-get install python3-pycoral' on a Coral board); the PyPI package named "
                 "'pycoral' is an unrelated project")


def _pycoral_edgetpu() -> ModuleType:
    try:
        from pycoral.utils import edgetpu
    except ImportError as err:
        raise DeviceUnavailable(f'Edge TPU support needs pycoral ({err}); {_INSTALL_HINT}') \
            from None
    return edgetpu


def list_edge_tpus() -> list[dict]:
    """Attached Edge TPUs as pycoral reports them: ``[{'type': 'usb'|'pci', 'path': ...}]``."""
    return list(_pycoral_edgetpu().list_edge_tpus())


class EdgeTPUDevice(MeasuredDevice):
    """The Edge TPU at pycoral index ``index`` (``device=':<index>'``)."""

    kind = 'edgetpu'

    def __init__(self, index: int = 0):
        self._edgetpu = _pycoral_edgetpu()
        found = self._edgetpu.list_edge_tpus()
        if not 0 <= index < len(found):
            raise DeviceUnavailable(f'no Edge TPU :{index}; {len(found)} attached {found}')
        self.index = index
        self.interface = 'pcie' if found[index].get('type') == 'pci' else 'usb'
        self.timing = calibrated_timing(self.interface)
        super().__init__(f'edgetpu:{index}', self.timing.active_power_w,
                         self.timing.idle_power_w)

    def _open(self, ref: SegmentRef) -> SegmentRunner:
        if ref.edgetpu_path is None:
            raise DeviceError(self.name, f'segment {ref.index} ({ref.path.name}) has no Edge TPU '
                              'build (manifest edgetpu_file); compile it with edgetpu_compiler '
                              '(see the manifest provenance for the command)')
        try:
            interpreter = self._edgetpu.make_interpreter(str(ref.edgetpu_path),
                                                         device=f':{self.index}')
            interpreter.allocate_tensors()
        except (RuntimeError, ValueError) as err:
            raise DeviceError(self.name, f'cannot load {ref.edgetpu_path}: {err}') from err
        return SegmentRunner(ref.spec, ref.edgetpu_path, interpreter=interpreter)

    def estimate_ms(self, segments: Sequence[SegmentRef]) -> tuple[float, ...]:
        """
        Measured Edge TPU latency from the profile; the calibrated model where there is none.

        A profile measured on real TPUs is the better source; the model is the prior.
        """
        modelled = SimulatedEdgeTPU(self.name, self.timing).estimate_ms(segments)
        return tuple(
            ref.profile.latency[PROFILE_BACKEND].median_ms
            if ref.profile is not None and PROFILE_BACKEND in ref.profile.latency else guess
            for ref, guess in zip(segments, modelled))
