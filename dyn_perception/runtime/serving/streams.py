"""
The stream file (``config/streams.yaml``): the pool and the camera streams it serves.

Format (every time in milliseconds, rates in Hz)::

    pool: {tpus: 4, dispatch: partitioned, rule: strict, tick_ms: 0.1}
    mode: balanced
    streams:
      - name: front
        model: fmnist_eenet
        rate_hz: 30
        deadline_ms: 30          # default: the period
        topic: front/image_raw   # what the ROS node subscribes (default: <name>/image_raw)
        accuracy_floor: {performance: 0.93, balanced: 0.925, eco: 0.92, critical: 0.9}

A floor missing for a mode falls back to the strictest floor listed below it in the mode
order, so a stream never gets a looser floor than intended. Everything is checked here, once,
with the stream and the reason in the message; what needs the model (an unknown model, a floor
no variant reaches) is checked when the stream meets its model (``ServingError``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
import math
from pathlib import Path
import re
from typing import Any, Mapping, Optional, Sequence

from dyn_perception.runtime.scheduling import Dispatch
import yaml

DISPATCH_KINDS = ('global', 'partitioned')
STREAM_KEYS = {'name', 'model', 'rate_hz', 'deadline_ms', 'topic', 'accuracy_floor'}
POOL_KEYS = {'tpus', 'dispatch', 'rule', 'tick_ms'}
FILE_KEYS = {'pool', 'mode', 'streams'}
# More TPUs than any host attaches (a Coral PCIe card carries two): the devices are opened
# before any admission, and a typo of 1e9 allocated device objects until memory ran out.
MAX_POOL_TPUS = 64
# Admission answers a live parameter change, and its cost grows about with the square of
# the stream count (partitioned, 8 TPUs, feasible sets of small models: 500 streams 3 to 4 s,
# 1,000 about 12 s on two shared cores; 5,000 would take minutes): a file with more streams
# than this is refused before any model is read.
MAX_STREAMS = 1000
# The analyses are pseudo-polynomial in ticks (the pooled test holds arrays as long as the
# longest WCET in ticks): at 1 us a 1 s job is 1e6 ticks, 8 MB; `tick_ms: 1e-9` asked 11.8 GiB
# for a 1.6 ms job. No clock here schedules finer than a microsecond either.
TICK_RANGE_S = (1e-6, 1e-2)
# ROS 2 names (design.ros2.org, "Topic and Service name mapping"): tokens of ASCII letters,
# digits and underscores that do not start with a digit, joined by '/'.  A stream's name is
# one token (its results go to ``~/<name>/result``); its topic is relative, absolute or
# private ('~/...'); substitutions ('{node}') are not taken.  Checked here, not by rclpy, so
# that the runtime stays rclpy-free and a bad file is refused before any node is touched;
# the lengths keep the expanded names under rmw's limit in any namespace of sensible depth.
_TOKEN = r'[A-Za-z_][A-Za-z0-9_]*'
_NAME = re.compile(_TOKEN)
_TOPIC = re.compile(rf'(/|~/)?{_TOKEN}(/{_TOKEN})*|~')
MAX_NAME_CHARS, MAX_TOPIC_CHARS = 63, 200


class ServingError(ValueError):
    """Bad stream or pool input, or a stream set the analysis cannot admit; says which."""

    def __init__(self, message: str, stream: Optional[str] = None):
        super().__init__(message)
        # The stream the message leads with ("stream <name>: ..."), where a caller may need
        # it: a set's refusal names the stream that fails, not always the one just added.
        self.stream = stream


@dataclass(frozen=True)
class StreamSpec:
    """One camera stream as declared: what it runs, how often, how late, how accurately."""

    name: str
    model: str
    period_s: float
    deadline_s: float
    accuracy_floor: Mapping[str, float] = field(default_factory=dict)
    topic: str = ''

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ServingError(f'stream {self.name!r}: a stream needs a non-empty name')
        if not _NAME.fullmatch(self.name) or len(self.name) > MAX_NAME_CHARS:
            raise ServingError(
                f'stream {self.name!r}: not a ROS name (one token of letters, digits and _, '
                f'not starting with a digit, at most {MAX_NAME_CHARS} characters; its results '
                f'go to ~/<name>/result)')
        if self.topic and (not _TOPIC.fullmatch(self.topic) or len(self.topic) > MAX_TOPIC_CHARS):
            raise ServingError(
                f'stream {self.name}: topic {self.topic!r} is not a ROS topic name (tokens of '
                f'letters, digits and _, not starting with a digit, joined by /; optionally '
                f'led by / or ~/; at most {MAX_TOPIC_CHARS} characters)')
        for key in ('period_s', 'deadline_s'):
            value = getattr(self, key)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
                raise ServingError(f'stream {self.name}: {key[:-2]} must be > 0, got {value!r}')
        if self.deadline_s > self.period_s * (1 + 1e-12):
            raise ServingError(
                f'stream {self.name}: deadline {1e3 * self.deadline_s:g} ms > period '
                f'{1e3 * self.period_s:g} ms; a frame must be done before the next one comes')
        for mode, floor in self.accuracy_floor.items():
            if (isinstance(floor, bool) or not isinstance(floor, (int, float))
                    or not 0 <= floor <= 1):
                raise ServingError(f'stream {self.name}: accuracy floor of mode {mode} must be '
                                   f'a fraction in [0, 1], got {floor!r}')

    @property
    def rate_hz(self) -> float:
        return 1.0 / self.period_s

    def floor(self, mode: str, order: Sequence[str]) -> float:
        """Return the floor in ``mode``: its own, else the strictest later mode's, else 0."""
        if mode in self.accuracy_floor:
            return float(self.accuracy_floor[mode])
        later = list(order)[list(order).index(mode) + 1:] if mode in order else []
        return max((float(self.accuracy_floor[m]) for m in later if m in self.accuracy_floor),
                   default=0.0)

    @classmethod
    def read(cls, entry: Any, position: int) -> 'StreamSpec':
        """Build one stream from its YAML mapping; errors name the stream (or its position)."""
        label = entry.get('name', f'#{position}') if isinstance(entry, dict) else f'#{position}'
        if not isinstance(entry, dict):
            raise ServingError(f'stream {label}: must be a mapping, got {entry!r}')
        unknown = sorted(set(entry) - STREAM_KEYS)
        if unknown:
            raise ServingError(f'stream {label}: unknown keys {unknown} (known: '
                               f'{sorted(STREAM_KEYS)})')
        for key in ('name', 'model', 'rate_hz'):
            if key not in entry:
                raise ServingError(f'stream {label}: {key} is missing')
        # YAML reads `name: null`, `name: yes` and `model: 12` as other types; str() would turn
        # them into a stream called 'None' or 'True' without a word.
        for key in ('name', 'model', 'topic'):
            if key in entry and not isinstance(entry[key], str):
                raise ServingError(f'stream {label}: {key} must be a string, got {entry[key]!r}')
        rate = entry['rate_hz']
        if (isinstance(rate, bool) or not isinstance(rate, (int, float)) or not rate > 0
                or not math.isfinite(rate)):
            raise ServingError(f'stream {label}: period must be > 0 (rate_hz a finite number '
                               f'> 0), got rate_hz={rate!r}')
        deadline = entry.get('deadline_ms', 1e3 / rate)
        if isinstance(deadline, bool) or not isinstance(deadline, (int, float)):
            raise ServingError(f'stream {label}: deadline_ms must be a number, got {deadline!r}')
        floors = entry.get('accuracy_floor', {}) or {}
        if not isinstance(floors, dict):
            raise ServingError(f'stream {label}: accuracy_floor must map modes to fractions')
        return cls(str(entry['name']), str(entry['model']), 1.0 / rate, deadline / 1e3,
                   dict(floors), str(entry.get('topic') or f'{entry["name"]}/image_raw'))


@dataclass(frozen=True)
class PoolSpec:
    """The shared devices and how jobs are dispatched on them."""

    tpus: int = 4
    dispatch: str = 'partitioned'
    rule: Dispatch = Dispatch.STRICT
    tick_s: float = 1e-4

    def __post_init__(self) -> None:
        if (isinstance(self.tpus, bool) or not isinstance(self.tpus, int)
                or not 1 <= self.tpus <= MAX_POOL_TPUS):
            raise ServingError(f'pool: tpus must be an integer from 1 to {MAX_POOL_TPUS}, '
                               f'got {self.tpus!r}')
        if self.dispatch not in DISPATCH_KINDS:
            raise ServingError(f'pool: dispatch must be one of {DISPATCH_KINDS}, '
                               f'got {self.dispatch!r}')
        if not isinstance(self.rule, Dispatch):
            raise ServingError(f'pool: rule must be a Dispatch, got {self.rule!r}')
        low, high = TICK_RANGE_S
        if not (isinstance(self.tick_s, (int, float)) and low <= self.tick_s <= high):
            raise ServingError(f'pool: tick must be in [{low * 1e3:g}, {high * 1e3:g}] ms, '
                               f'got {self.tick_s!r} s')

    @classmethod
    def read(cls, entry: Any) -> 'PoolSpec':
        if not isinstance(entry, dict):
            raise ServingError(f'pool: must be a mapping, got {entry!r}')
        unknown = sorted(set(entry) - POOL_KEYS)
        if unknown:
            raise ServingError(f'pool: unknown keys {unknown} (known: {sorted(POOL_KEYS)})')
        rule = entry.get('rule', 'strict')
        try:
            rule = Dispatch(rule)
        except ValueError:
            raise ServingError(f'pool: rule must be strict or bypass, got {rule!r}') from None
        tick = entry.get('tick_ms', 0.1)
        if isinstance(tick, bool) or not isinstance(tick, (int, float)):
            raise ServingError(f'pool: tick_ms must be a number, got {tick!r}')
        return cls(entry.get('tpus', 4), entry.get('dispatch', 'partitioned'), rule, tick / 1e3)


@dataclass(frozen=True)
class StreamFile:
    """A parsed stream file."""

    pool: PoolSpec
    streams: tuple[StreamSpec, ...]
    mode: Optional[str] = None


def check_count(count: int, source: str) -> None:
    """Refuse more streams than one pool serves (``MAX_STREAMS``), from a file or the API."""
    if count > MAX_STREAMS:
        raise ServingError(f'{source}: {count} streams, more than the {MAX_STREAMS} one pool '
                           'serves (admission time grows with the square of the count)')


def parse_streams(data: Any, source: str = 'streams') -> StreamFile:
    """Validate a parsed stream file (a mapping with pool, mode and streams)."""
    if not isinstance(data, dict):
        raise ServingError(f'{source}: top level must be a mapping')
    unknown = sorted(map(str, set(data) - FILE_KEYS))
    if unknown:  # a misspelt `mdoe: eco` would be ignored
        raise ServingError(f'{source}: unknown keys {unknown} (known: {sorted(FILE_KEYS)})')
    entries = data.get('streams')
    if not isinstance(entries, list) or not entries:
        raise ServingError(f'{source}: streams must be a non-empty list')
    check_count(len(entries), source)
    streams = tuple(StreamSpec.read(entry, i) for i, entry in enumerate(entries))
    names = [s.name for s in streams]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ServingError(f'{source}: duplicate stream names {duplicates}')
    mode = data.get('mode')
    if mode is not None and (not isinstance(mode, str) or not mode):
        raise ServingError(f'{source}: mode must be a mode name, got {mode!r}')
    return StreamFile(PoolSpec.read(data.get('pool', {}) or {}), streams,
                      mode)


def load_streams(path: str | Path) -> StreamFile:
    """Read and validate a stream file."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError, UnicodeDecodeError) as err:
        raise ServingError(f'{path}: cannot read the stream file ({err})') from err
    return parse_streams(data, str(path))
