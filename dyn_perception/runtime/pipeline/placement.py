"""
Placing segments on devices: contiguous groups of segments become pipeline stages.

A stage is a run of consecutive segments held by one device, or by several identical replicas
that share the stage's queue. With early exits a stage does not see every frame: its expected
load per submitted frame is the sum over its segments of P(frame reaches the segment) times the
segment's time. The pipeline can sustain at most ``replicas / load`` frames per unit of time at
each stage, so the analytic bound is set by the stage with the largest ``load / replicas``.

- ``balanced_placement`` minimises that bottleneck over every cut of the segment chain and
  every share of the devices among the stages (segment counts are small: exhaustive search).
- ``equal_parameter_placement`` is the baseline, what ``edgetpu_compiler --num_segments`` does:
  cut into as many stages as devices with parameter bytes as equal as the cuts allow, one
  device per stage, no knowledge of exits or time, no replication.
"""

from __future__ import annotations

from dataclasses import dataclass
import itertools
from typing import Callable, Iterator, Optional, Sequence

from dyn_perception.runtime.artifacts import (
    EXIT_POLICIES, OperatingPoint, Variant, VariantProfile
)

# ms per invocation of each segment of a group, when exactly that group shares one device.
StageCost = Callable[[tuple[int, ...]], Sequence[float]]
_TIE = 1e-9


@dataclass(frozen=True)
class Stage:
    """Consecutive segments on ``devices`` (replicas); ``load_ms``: expected ms per frame."""

    segments: tuple[int, ...]
    devices: tuple[int, ...]
    load_ms: float

    @property
    def per_replica_ms(self) -> float:
        return self.load_ms / len(self.devices)


@dataclass(frozen=True)
class Placement:
    """Stages in pipeline order and the strategy that chose them."""

    stages: tuple[Stage, ...]
    strategy: str

    @property
    def bottleneck_ms(self) -> float:
        return max(stage.per_replica_ms for stage in self.stages)

    @property
    def bound_fps(self) -> float:
        """Throughput bound: one over the slowest stage's load per replica."""
        return 1e3 / self.bottleneck_ms

    @property
    def devices(self) -> tuple[int, ...]:
        return tuple(d for stage in self.stages for d in stage.devices)

    def stage_of(self, segment: int) -> int:
        for i, stage in enumerate(self.stages):
            if segment in stage.segments:
                return i
        raise ValueError(f'segment {segment} is not placed')

    def check(self, num_segments: int, devices: Sequence[int]) -> None:
        """Raise ValueError unless every segment is placed once, in order, on known devices."""
        placed = [s for stage in self.stages for s in stage.segments]
        if placed != list(range(num_segments)):
            raise ValueError(f'placement must cover segments 0..{num_segments - 1} in order, '
                             f'got {placed}')
        used = self.devices
        if len(set(used)) != len(used) or not set(used) <= set(devices):
            raise ValueError(f'placement devices {used} must be distinct and among {devices}')
        if any(not stage.devices for stage in self.stages):
            raise ValueError('every stage needs at least one device')

    def describe(self) -> str:
        return ' | '.join(f'{list(s.segments)}x{len(s.devices)}' for s in self.stages)


def reach_probabilities(variant: Variant, exit_rates: Sequence[float]) -> tuple[float, ...]:
    """P(a frame reaches each segment) from the share of frames each exit takes."""
    if len(exit_rates) != variant.num_exits:
        raise ValueError(f'{variant.name} has {variant.num_exits} exits, got '
                         f'{len(exit_rates)} exit rates')
    reach, left, exits = [], 1.0, iter(exit_rates)
    for segment in variant.segments:
        reach.append(max(0.0, left))
        if segment.has_exit:
            left -= next(exits)
    return tuple(reach)


def nearest_operating_point(profile: Optional[VariantProfile], policy: str,
                            thresholds: Sequence[Optional[float]]) -> Optional[OperatingPoint]:
    """
    Find the profile's measured setting nearest to ``thresholds`` (None if none compares).

    A measured point with an exit disabled where ``thresholds`` enables it (or the reverse)
    is not comparable; nor is anything when every exit is disabled.
    """
    if policy not in EXIT_POLICIES:
        raise ValueError(f'unknown exit policy {policy!r}')
    if all(t is None for t in thresholds):
        return None
    points = profile.exit_curves.get(policy, ()) if profile is not None else ()
    if not points:
        return None

    def distance(point_thresholds: Sequence[Optional[float]]) -> float:
        return sum(0.0 if a == b else float('inf') if a is None or b is None else abs(a - b)
                   for a, b in zip(point_thresholds, thresholds))

    nearest = min(points, key=lambda p: distance(p.thresholds))
    return None if distance(nearest.thresholds) == float('inf') else nearest


def expected_exit_rates(variant: Variant, profile: Optional[VariantProfile], policy: str,
                        thresholds: Sequence[Optional[float]]) -> tuple[float, ...]:
    """
    Exit rates the profile measured for these thresholds (the nearest measured setting).

    Without a profile, or without curves for the policy, every frame is assumed to reach the
    final exit: the placement is then balanced for the worst case.
    """
    point = nearest_operating_point(profile, policy, thresholds)
    if point is None:
        return tuple([0.0] * (variant.num_exits - 1) + [1.0])
    return tuple(point.exit_rates)


def _cuts(num_segments: int, num_stages: int) -> Iterator[tuple[tuple[int, ...], ...]]:
    """Every way to cut segments 0..n-1 into ``num_stages`` non-empty consecutive groups."""
    for bounds in itertools.combinations(range(1, num_segments), num_stages - 1):
        edges = (0, *bounds, num_segments)
        yield tuple(tuple(range(a, b)) for a, b in zip(edges, edges[1:]))


def _loads(groups: tuple[tuple[int, ...], ...], reach: Sequence[float],
           cost: StageCost) -> list[float]:
    return [sum(reach[s] * t for s, t in zip(group, cost(group))) for group in groups]


def _share(loads: Sequence[float], num_devices: int) -> list[int]:
    """Replicas per stage minimising max(load / replicas): each spare device to the worst."""
    replicas = [1] * len(loads)
    for _ in range(num_devices - len(loads)):
        worst = max(range(len(loads)), key=lambda i: loads[i] / replicas[i])
        replicas[worst] += 1
    return replicas


def _assemble(groups, loads, replicas, devices: Sequence[int], strategy: str) -> Placement:
    stages, next_device = [], 0
    for group, load, count in zip(groups, loads, replicas):
        stages.append(Stage(group, tuple(devices[next_device:next_device + count]), load))
        next_device += count
    return Placement(tuple(stages), strategy)


def balanced_placement(num_segments: int, devices: Sequence[int], reach: Sequence[float],
                       cost: StageCost, replicate: bool = True) -> Placement:
    """
    Find the placement of least bottleneck (then least total load, then fewest stages).

    With ``replicate`` a stage may run on several devices; without it every stage gets one
    device, as in a plain pipeline, and there are at most as many stages as devices.
    """
    if not devices:
        raise ValueError('placement needs at least one device')
    if len(reach) != num_segments:
        raise ValueError(f'need one reach probability per segment ({num_segments})')
    best, best_key = None, None
    for num_stages in range(1, min(len(devices), num_segments) + 1):
        for groups in _cuts(num_segments, num_stages):
            loads = _loads(groups, reach, cost)
            replicas = _share(loads, len(devices)) if replicate else [1] * num_stages
            bottleneck = max(load / r for load, r in zip(loads, replicas))
            key = (bottleneck, sum(loads), num_stages)
            if best_key is None or _better(key, best_key):
                best, best_key = (groups, loads, replicas), key
    groups, loads, replicas = best
    return _assemble(groups, loads, replicas, devices, 'balanced' if replicate else 'pipeline')


def _better(key: tuple, incumbent: tuple) -> bool:
    """Lexicographic comparison that treats values within a relative 1e-9 as equal."""
    for a, b in zip(key, incumbent):
        if abs(a - b) > _TIE * max(abs(a), abs(b), 1.0):
            return a < b
    return False


def equal_parameter_placement(param_bytes: Sequence[int], devices: Sequence[int],
                              reach: Sequence[float], cost: StageCost) -> Placement:
    """
    Cut like the baseline: as many stages as devices (at most one per segment), equal bytes.

    ``reach`` and ``cost`` only fill in the expected loads, so the bound can be compared.
    """
    if not devices:
        raise ValueError('placement needs at least one device')
    num_segments = len(param_bytes)
    num_stages = min(len(devices), num_segments)
    # As equal as possible: the largest stage as small as it can be, then the next largest...
    groups = min(_cuts(num_segments, num_stages),
                 key=lambda g: sorted((sum(param_bytes[s] for s in group) for group in g),
                                      reverse=True))
    return _assemble(groups, _loads(groups, reach, cost), [1] * num_stages, devices,
                     'equal_parameter')
