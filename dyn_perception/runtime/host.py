"""Host readings for the system monitor: CPU load from /proc/stat, the battery from sysfs."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

POWER_SUPPLY = Path('/sys/class/power_supply')


class CpuLoad:
    """Busy share of all CPUs since the previous sample (0-1), from /proc/stat."""

    def __init__(self, stat: Path = Path('/proc/stat')):
        self.stat = stat
        self.previous = self._read()

    def _read(self) -> Optional[tuple[int, int]]:
        try:
            fields = [int(v) for v in self.stat.read_text().split('\n', 1)[0].split()[1:]]
        except (OSError, ValueError):
            return None
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
        return sum(fields), idle

    def sample(self) -> float:
        current = self._read()
        if current is None or self.previous is None:
            return 0.0
        total, idle = current[0] - self.previous[0], current[1] - self.previous[1]
        self.previous = current
        return 0.0 if total <= 0 else max(0.0, min(1.0, 1.0 - idle / total))


def find_battery(root: Path = POWER_SUPPLY) -> Optional[Path]:
    """Return the first power supply of type Battery, if the host has one."""
    if not root.is_dir():
        return None
    for supply in sorted(root.iterdir()):
        try:
            if (supply / 'type').read_text().strip() == 'Battery':
                return supply
        except OSError:
            continue
    return None


def read_battery(supply: Path) -> tuple[float, float]:
    """Return (charge 0-1, volts) of a sysfs battery; NaN where the kernel does not say."""
    def number(name: str, scale: float) -> float:
        try:
            return float((supply / name).read_text()) * scale
        except (OSError, ValueError):
            return float('nan')

    return number('capacity', 0.01), number('voltage_now', 1e-6)
