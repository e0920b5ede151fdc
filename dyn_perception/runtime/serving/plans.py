"""
What one job costs: a model point (variant and exit thresholds) on a gang of ``width`` TPUs.

A job holds its gang from start to end. Stage k of the gang (consecutive segments, cut by the
pipeline's ``balanced_placement`` with every frame assumed to reach every segment) runs on gang
device k; a frame crosses the stages one after the other and leaves at the first exit that
takes it, which ends the job and frees the whole gang. Times come from the devices' own model
(``estimate_ms`` for a set of resident segments, ``load`` for a swap), so a plan's times are the
ones the devices will report.

Residency decides what a device holds, and so what the WCET must contain:
- ``swap``: a device holds the stage it ran last; a job whose device holds something else
  first loads its stage. The WCET adds the swap of every stage (each from an empty device, the
  largest a swap can cost in the model). Global dispatch with models that do not fit together.
- ``resident``: every device holds ``union`` (all segments the configuration runs), loaded at
  the switch to the configuration; no swap can happen, and segment times are those of ``union``
  resident in that order (cache shared in load order, the rest streamed).
- partitioned dispatch is ``resident`` per gang position: device k of a partition holds stage
  k of every stream of the partition.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Optional, Sequence

from dyn_perception.runtime.artifacts import (
    Manifest, Profile, Variant, VariantProfile
)
from dyn_perception.runtime.devices.base import Device, segment_refs, SegmentRef
from dyn_perception.runtime.devices.layers import Network
from dyn_perception.runtime.devices.simulated import SimulatedEdgeTPU
from dyn_perception.runtime.exits import ExitPolicy, get_policy
from dyn_perception.runtime.pipeline.placement import (
    balanced_placement, nearest_operating_point
)

SWAP, RESIDENT = 'swap', 'resident'


class ModelledEdgeTPU(SimulatedEdgeTPU):
    """
    A simulated Edge TPU that accounts time and energy without running anything.

    For profiles that have no segment files (a model described by its layer sizes) and for
    benchmarks that replay exits instead of frames: ``load`` and ``estimate_ms`` are the
    simulator's own, only no LiteRT interpreter is opened, so ``invoke`` is not available.
    """

    kind = 'modelled_edgetpu'
    # Segments described by their layers instead of a file, by the path their manifest gives
    # them. Shared by every instance: a server makes its own probe device.
    described: ClassVar[dict[Path, Network]] = {}

    @classmethod
    def describe(cls, path: Path, network: Network) -> None:
        """Cost the segment at ``path`` (which need not exist) as ``network``."""
        cls.described[Path(path)] = network

    def _network(self, ref: SegmentRef) -> Network:
        network = self.described.get(Path(ref.path))
        return network if network is not None else SimulatedEdgeTPU._network(ref)

    def _open(self, ref: SegmentRef) -> None:
        return None

    def invoke(self, ref: SegmentRef, x):  # noqa: ANN001 - never returns
        raise NotImplementedError(f'{self.name}: a modelled TPU only accounts time; replay '
                                  'exits instead of frames')


@dataclass(frozen=True)
class ModelPoint:
    """A variant run at one calibrated set of exit thresholds, and what it gives."""

    model: str
    variant: Variant
    refs: tuple[SegmentRef, ...]
    policy: ExitPolicy
    thresholds: tuple[Optional[float], ...]
    # The mode these thresholds were calibrated for (the variant's own thresholds).
    threshold_mode: str
    exit_rates: tuple[float, ...]
    accuracy: float

    @property
    def label(self) -> str:
        return f'{self.variant.name}@{self.threshold_mode}'


class ServedModel:
    """
    A model directory seen as the points a stream can run (variant x calibrated thresholds).

    Accuracy and exit rates are the profile's measured point nearest to the thresholds; the
    variant's final-exit accuracy (the thresholds disabled) is a point as well.
    """

    def __init__(self, manifest: Manifest, profile: Profile, policy: Optional[str] = None):
        self.manifest = manifest
        self.profile = profile
        self.policy = get_policy(policy or manifest.default_policy)
        self.points = tuple(p for variant in manifest.variants
                            for p in self._variant_points(variant))
        if not self.points:
            raise ValueError(f'model {manifest.name}: no variant has {self.policy.name} '
                             'thresholds with a measured accuracy')

    @property
    def name(self) -> str:
        return self.manifest.name

    def _variant_points(self, variant: Variant) -> list[ModelPoint]:
        vprofile = self._vprofile(variant.name)
        refs = segment_refs(self.manifest, variant, vprofile)
        points = []
        for mode, thresholds in variant.thresholds.get(self.policy.name, {}).items():
            point = nearest_operating_point(vprofile, self.policy.name, thresholds)
            if point is None:
                continue
            points.append(ModelPoint(self.name, variant, refs, self.policy, tuple(thresholds),
                                     mode, tuple(point.exit_rates), point.accuracy))
        if vprofile is not None and vprofile.final_exit_accuracy is not None:
            points.append(ModelPoint(self.name, variant, refs, self.policy,
                                     (None,) * (variant.num_exits - 1), 'final',
                                     (0.0,) * (variant.num_exits - 1) + (1.0,),
                                     vprofile.final_exit_accuracy))
        return points

    def _vprofile(self, name: str) -> Optional[VariantProfile]:
        try:
            return self.profile.variant(name)
        except ValueError:
            return None

    def best_accuracy(self) -> float:
        return max(p.accuracy for p in self.points)


@dataclass(frozen=True)
class GangPlan:
    """How a job of one model point runs on a gang: stages, times, swaps and energy."""

    point: ModelPoint
    width: int
    residency: str
    # Segment indices of each gang position's stage.
    stages: tuple[tuple[int, ...], ...]
    # Modelled seconds of each segment under this residency, in segment order.
    segment_s: tuple[float, ...]
    # Worst swap of each stage (0 under residency 'resident').
    swap_s: tuple[float, ...]
    swap_j: tuple[float, ...]
    active_power_w: float
    idle_power_w: float

    @property
    def wcet_s(self) -> float:
        """Bound the job: a frame reaching the final exit, every stage swapped in first."""
        return sum(self.swap_s) + sum(self.segment_s)

    def stage_refs(self, position: int) -> tuple[SegmentRef, ...]:
        return tuple(self.point.refs[i] for i in self.stages[position])

    def run_s(self, exit_index: int) -> float:
        """Seconds of the segments a frame leaving at ``exit_index`` runs (no swaps)."""
        last = self.point.variant.exit_segment_indices()[exit_index]
        return sum(self.segment_s[:last + 1])

    def energy_j(self, run_s: float, swap_s: float, swap_j: float, held_s: float) -> float:
        """Active run energy, swap energy, and idle power of the held devices not working."""
        idle_s = max(0.0, self.width * held_s - run_s - swap_s)
        return run_s * self.active_power_w + swap_j + idle_s * self.idle_power_w

    def expected_energy_j(self) -> float:
        """Energy per job at the point's exit rates, no swap (steady state)."""
        total = 0.0
        for k, rate in enumerate(self.point.exit_rates):
            seconds = self.run_s(k)
            total += rate * self.energy_j(seconds, 0.0, 0.0, seconds)
        return total


def stage_cut(point: ModelPoint, width: int, device: Device) -> tuple[tuple[int, ...], ...]:
    """Cut the segments into at most ``width`` stages: the pipeline's balanced placement."""
    refs = point.refs
    placement = balanced_placement(
        len(refs), tuple(range(width)), [1.0] * len(refs),
        lambda group: device.estimate_ms([refs[i] for i in group]), replicate=False)
    return tuple(stage.segments for stage in placement.stages)


def swap_cost(probe: Device, refs: Sequence[SegmentRef]) -> tuple[float, float]:
    """Seconds and joules of loading ``refs`` onto an empty device (the largest swap)."""
    probe.load(())
    report = probe.load(refs)
    probe.load(())
    return report.seconds, report.energy_j


def plan(point: ModelPoint, width: int, residency: str, device: Device, probe: Device,
         unions: Optional[Sequence[Sequence[SegmentRef]]] = None) -> GangPlan:
    """
    Plan ``point`` on ``width`` devices like ``device``; ``probe`` is a scratch twin for swaps.

    Under 'resident', ``unions[k]`` lists what gang device k holds, in load order (it must
    contain stage k's segments); None means each device holds its stage alone.
    """
    if residency not in (SWAP, RESIDENT):
        raise ValueError(f'residency must be {SWAP!r} or {RESIDENT!r}, got {residency!r}')
    stages = stage_cut(point, width, device)
    segment_s = [0.0] * len(point.refs)
    swaps = []
    for k, stage in enumerate(stages):
        refs = [point.refs[i] for i in stage]
        held = refs if residency == SWAP or unions is None else list(unions[k])
        keys = [ref.key for ref in held]
        missing = [ref.key for ref in refs if ref.key not in keys]
        if missing:
            raise ValueError(f'gang device {k} would not hold segments {missing}')
        estimates = device.estimate_ms(held)
        for i, ref in zip(stage, refs):
            segment_s[i] = estimates[keys.index(ref.key)] / 1e3
        swaps.append(swap_cost(probe, refs) if residency == SWAP else (0.0, 0.0))
    return GangPlan(point, width, residency, stages, tuple(segment_s),
                    tuple(s for s, _ in swaps), tuple(j for _, j in swaps),
                    device.active_power_w, device.idle_power_w)


def fits_together(device: Device, refs: Sequence[SegmentRef]) -> bool:
    """Whether ``refs`` resident together run as fast as each alone (all in the cache)."""
    together = device.estimate_ms(list(refs))
    alone = [device.estimate_ms([ref])[0] for ref in refs]
    return all(abs(a - b) <= 1e-9 * max(1.0, b) for a, b in zip(together, alone))


def unique_refs(refs: Sequence[SegmentRef]) -> tuple[SegmentRef, ...]:
    """Drop repeated segments (two streams on one variant share its files), keep the order."""
    seen, kept = set(), []
    for ref in refs:
        if ref.key not in seen:
            seen.add(ref.key)
            kept.append(ref)
    return tuple(kept)
