"""
Real energy where the platform measures it: RAPL counters and INA power monitors in sysfs.

- RAPL (``/sys/class/powercap/intel-rapl:N``): ``energy_uj`` is a cumulative counter that wraps
  at ``max_energy_range_uj``; only the top-level zones (packages) are read, their sub-zones
  (cores, uncore, dram) are parts of them and would count twice.
- INA219 / INA226 / INA3221 and kin, through hwmon (``/sys/class/hwmon/hwmonN`` or under
  ``/sys/bus/i2c/devices/*/hwmon``): ``energy1_input`` (microjoules, cumulative) where the
  driver offers it, else ``power1_input`` (microwatts) integrated over the sample interval.

A counter that goes backwards is a wrap when its range is known (the delta adds the range) and
otherwise an unusable interval; either is counted by reason, like unreadable files and negative
powers, and never becomes a negative or a huge energy.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

SYSFS = Path('/sys')
METER_PROBLEMS = ('counter_wrap', 'counter_backwards', 'unreadable', 'negative_power')


def _read_int(path: Path) -> Optional[int]:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


@dataclass
class EnergyMeter:
    """
    One source of measured energy; ``sample(now)`` returns joules since the previous sample.

    ``kind`` is 'counter' (cumulative microjoules, ``max_range_uj`` when it wraps) or 'power'
    (instantaneous microwatts, integrated as a rectangle over the interval).
    """

    name: str
    path: Path
    kind: str
    max_range_uj: Optional[int] = None
    problems: dict = field(default_factory=lambda: dict.fromkeys(METER_PROBLEMS, 0))
    _last: Optional[tuple[float, int]] = None

    def sample(self, now: float) -> Optional[float]:
        raw = _read_int(self.path)
        if raw is None:
            self.problems['unreadable'] += 1
            return None
        last, self._last = self._last, (now, raw)
        if last is None:
            return None
        when, previous = last
        if self.kind == 'power':
            if raw < 0:
                self.problems['negative_power'] += 1
                return None
            return raw * 1e-6 * max(now - when, 0.0)
        if raw >= previous:
            return (raw - previous) * 1e-6
        if self.max_range_uj:
            self.problems['counter_wrap'] += 1
            return (raw + self.max_range_uj - previous) * 1e-6
        self.problems['counter_backwards'] += 1
        return None


def rapl_meters(root: Path = SYSFS) -> list[EnergyMeter]:
    """Top-level RAPL zones (one per package) with a readable energy counter."""
    base = root / 'class' / 'powercap'
    meters = []
    for zone in sorted(base.glob('intel-rapl:*')) if base.is_dir() else ():
        if zone.name.count(':') != 1 or _read_int(zone / 'energy_uj') is None:
            continue
        name = (zone / 'name').read_text().strip() if (zone / 'name').is_file() else zone.name
        meters.append(EnergyMeter(f'rapl.{name}', zone / 'energy_uj', 'counter',
                                  _read_int(zone / 'max_energy_range_uj')))
    return meters


def ina_meters(root: Path = SYSFS) -> list[EnergyMeter]:
    """INA power monitors behind hwmon, found in the hwmon class or under the I2C devices."""
    dirs = {*root.glob('class/hwmon/hwmon*'), *root.glob('bus/i2c/devices/*/hwmon/hwmon*')}
    meters, seen = [], set()
    for hwmon in sorted(dirs):
        try:
            chip = (hwmon / 'name').read_text().strip()
            real = hwmon.resolve()
        except OSError:
            continue
        if not chip.lower().startswith('ina') or real in seen:
            continue
        seen.add(real)
        for file, kind in (('energy1_input', 'counter'), ('power1_input', 'power')):
            if _read_int(hwmon / file) is not None:
                meters.append(EnergyMeter(f'{chip}.{hwmon.name}', hwmon / file, kind))
                break
    return meters


def find_meters(root: Path = SYSFS) -> list[EnergyMeter]:
    """Every readable energy source of the platform (empty where there is none)."""
    return rapl_meters(root) + ina_meters(root)
