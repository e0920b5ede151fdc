"""
Battery, CPU-load and per-frame energy readings checked before anything uses them.

Drivers send odd values: a percentage on a 0-100 scale, NaN for "unknown", a negative load, a
charge that jumps by half the capacity between two readings (a bad contact, a driver reset).
Read naively, 0-100 clamps to "full" and NaN to "idle"; here each bad reading is refused,
counted under a small fixed set of reasons (so diagnostics keys never grow with the input)
and the last good value stays in force. The same holds for the energy a perception result
reports (``EnergyGuard``), which drains the system monitor's simulated battery.
"""

from __future__ import annotations

from dataclasses import dataclass, field
import json
import math
from typing import ClassVar, Optional

from dyn_perception.runtime.devices.cpu import CPU_CORE_ACTIVE_W
from dyn_perception.runtime.devices.factory import MAX_DEVICES
from dyn_perception.runtime.devices.timing import ACTIVE_POWER_W

REASONS = ('charge_nan', 'charge_out_of_range', 'charge_jump', 'charge_absent', 'load_nan',
           'load_out_of_range')
ENERGY_REASONS = ('unreadable', 'not_finite', 'negative', 'implausible')

# The longest one frame's segments plausibly compute: 28 times the slowest network in Coral's
# published Edge TPU table (VGG19, 357 ms per frame over PCIe; devices/coral_networks.py), and
# over 30,000 times a shipped model's whole network on one CPU core (0.15-0.28 ms, profile.yaml).
MAX_FRAME_S = 10.0
# The most energy one perception result can carry (``energy_j``: the active energy of the
# frame's segment invocations). A frame's segments run one after another, one device at a
# time; the bound is more generous still: the largest pool the perception node opens, every
# device at the highest active power of any backend (an Edge TPU's 2 W), for MAX_FRAME_S.
MAX_FRAME_ENERGY_J = MAX_DEVICES * max(ACTIVE_POWER_W, CPU_CORE_ACTIVE_W) * MAX_FRAME_S


@dataclass
class Refusals:
    """
    Count refusals by reason; ``problem`` says what the last refusal was.

    The reasons are a fixed set (``reasons``), so diagnostics keys never grow with the input.
    """

    reasons: ClassVar[tuple[str, ...]] = ()
    counts: dict = field(init=False)
    problem: Optional[str] = field(default=None, init=False)

    def __post_init__(self) -> None:
        self.counts = dict.fromkeys(self.reasons, 0)

    def _refuse(self, reason: str, message: str) -> None:
        self.counts[reason] += 1
        self.problem = message

    @property
    def refused(self) -> int:
        return sum(self.counts.values())


@dataclass
class ReadingGuard(Refusals):
    """
    Refuse bad battery and CPU-load readings, count them by reason.

    A jump is a change of more than ``max_jump`` (a fraction of the capacity) within
    ``jump_window_s`` of the last accepted charge. A real change of that size (a battery
    swapped, a charger plugged in) is accepted once it has lasted longer than the window.
    """

    reasons: ClassVar[tuple[str, ...]] = REASONS
    max_jump: float = 0.5
    jump_window_s: float = 1.0
    _last: Optional[tuple[float, float]] = None

    def charge(self, value: float, now: float, present: bool = True) -> Optional[float]:
        """
        Check a battery reading, 0-1; None when it is refused.

        ``present`` is ``BatteryState.present``. A charge of 0 from a message saying no battery
        is present is a message whose fields were left at their defaults (a driver that found
        no battery, a hand-typed ``ros2 topic pub``), not an empty battery: read as one it
        would drive the robot to its most frugal mode. A non-zero charge is taken even then,
        since hand-written messages rarely set ``present``.
        """
        if not present and value == 0.0:
            self._refuse('charge_absent', 'battery_state says no battery is present '
                         '(present: false) and gives charge 0')
            return None
        if not _finite(value):
            self._refuse('charge_nan', f'battery percentage {value!r} is not a number')
            return None
        if not 0.0 <= value <= 1.0:
            hint = ' (a 0-100 scale? BatteryState.percentage is 0-1)' if value <= 100 else ''
            self._refuse('charge_out_of_range', f'battery percentage {value!r} is outside '
                         f'0-1{hint}')
            return None
        if self._last is not None:
            when, last = self._last
            if abs(value - last) > self.max_jump and now - when < self.jump_window_s:
                self._refuse('charge_jump', f'battery charge jumped {last:.2f} -> {value:.2f} '
                             f'in {now - when:.2f} s')
                return None
        self._last = (now, float(value))
        return float(value)

    def load(self, value: float) -> Optional[float]:
        """Check a CPU-load reading, 0-1; None when it is refused."""
        if not _finite(value):
            self._refuse('load_nan', f'cpu load {value!r} is not a number')
            return None
        if not 0.0 <= value <= 1.0:
            self._refuse('load_out_of_range', f'cpu load {value!r} is outside 0-1')
            return None
        return float(value)


@dataclass
class EnergyGuard(Refusals):
    """
    Refuse the energy of a result record that no frame could have drawn; count by reason.

    Records come over a topic from other processes: one ``energy_j: 1e300`` emptied the
    simulated battery at once, and a string or ``true`` was read as a number. ``limit_j`` is
    the most one frame can draw (``MAX_FRAME_ENERGY_J``).
    """

    reasons: ClassVar[tuple[str, ...]] = ENERGY_REASONS
    limit_j: float = MAX_FRAME_ENERGY_J

    def energy(self, text: str) -> Optional[float]:
        """
        Return the ``energy_j`` of one JSON result record; None when it is refused.

        A record without one (absent or null) drew nothing known: 0.
        """
        try:
            value = json.loads(text).get('energy_j')
        except (ValueError, AttributeError):  # not JSON; JSON but not an object
            self._refuse('unreadable', 'result is not a JSON object')
            return None
        if value is None:
            return 0.0
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            self._refuse('unreadable', f'energy_j {value!r} is not a number')
        elif not math.isfinite(value):
            self._refuse('not_finite', f'energy_j {value!r} is not finite')
        elif value < 0:
            self._refuse('negative', f'energy_j {value!r} is negative')
        elif value > self.limit_j:
            self._refuse('implausible', f'energy_j {value!r} is more than one frame can draw '
                         f'({self.limit_j:g} J: {MAX_DEVICES} devices at full power for '
                         f'{MAX_FRAME_S:g} s)')
        else:
            return float(value)
        return None


def _finite(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(
        value)
