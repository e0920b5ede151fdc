"""
Battery and CPU-load readings checked before the policy sees them.

Drivers send odd values: a percentage on a 0-100 scale, NaN for "unknown", a negative load, a
charge that jumps by half the capacity between two readings (a bad contact, a driver reset).
Read naively, 0-100 clamps to "full" and NaN to "idle"; here each bad reading is refused,
counted under a small fixed set of reasons (so diagnostics keys never grow with the input)
and the last good value stays in force.
"""

from __future__ import annotations

from dataclasses import dataclass, field
import math
from typing import Optional

REASONS = ('charge_nan', 'charge_out_of_range', 'charge_jump', 'charge_absent', 'load_nan',
           'load_out_of_range')


@dataclass
class ReadingGuard:
    """
    Refuse bad readings, count them by reason; ``problem`` says what the last refusal was.

    A jump is a change of more than ``max_jump`` (a fraction of the capacity) within
    ``jump_window_s`` of the last accepted charge. A real change of that size (a battery
    swapped, a charger plugged in) is accepted once it has lasted longer than the window.
    """

    max_jump: float = 0.5
    jump_window_s: float = 1.0
    counts: dict = field(default_factory=lambda: dict.fromkeys(REASONS, 0))
    problem: Optional[str] = None
    _last: Optional[tuple[float, float]] = None

    def _refuse(self, reason: str, message: str) -> None:
        self.counts[reason] += 1
        self.problem = message

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

    @property
    def refused(self) -> int:
        return sum(self.counts.values())


def _finite(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(
        value)
