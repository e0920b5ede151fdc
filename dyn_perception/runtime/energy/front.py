"""
The accuracy / energy / latency front of a model and the configuration each mode runs.

Every configuration is a variant, one exit-threshold setting of its measured exit curve
(validation split, ``profile.yaml``) and a number of powered TPUs (the rest are off). For each
one the simulated Edge TPU's model (``devices.timing``, ``devices.power``) gives:

- energy per frame: each segment's modelled time, weighted by the share of frames that reach
  it, at active minus idle power, plus the host's share of every invocation (``HOST_ACTIVE_W``
  during the invocation's fixed overhead), plus the powered TPUs' idle power over one frame
  period. Stored as ``active_energy_j`` and ``idle_power_w`` so that any frame rate can use it.
- p99 latency: frames leave at exit k after the segments up to it; the p99 is the time of the
  exit by which 99% of frames have left. Queueing is not modelled: at the rates used here
  (30 fps against a few ms per frame) a frame finds the pipeline empty.
- the swap into the configuration: load every powered TPU's segments (``swap_s``, the
  slowest TPU; ``swap_energy_j``, all of them), and per TPU that was off, a wake.

With ``host`` given (the default), every variant x setting also runs with no TPU powered: on
one core of the embedded host (``energy.host_cpu``: its modelled time at its busy-core power;
p99 from the per-segment p99 / median LiteRT showed here; no idle power, the host is always on
and its base draw is not perception's; no swap cost beyond opening interpreters, not counted).

The front keeps the configurations no other beats on all three. Each mode then runs the
configuration of least energy among its calibrated mode points (any variant, any TPU count)
whose loss bound keeps the mode's budget (``config/modes.yaml``) and whose p99 fits the frame
period: ``mode_variants`` generalised from MACs to energy and TPUs. ``write_front`` records the
mapping in the manifest (``mode_configs``) and the front in the profile (``front``).
"""

from __future__ import annotations

from dataclasses import dataclass
import math
from pathlib import Path
from typing import Optional, Sequence

from dyn_perception.runtime.artifacts import (
    ArtifactError, load_manifest, load_profile, Manifest, MANIFEST_FILE, Profile, PROFILE_FILE,
    to_plain, write_yaml
)
from dyn_perception.runtime.devices.base import segment_refs
from dyn_perception.runtime.devices.power import PowerModel
from dyn_perception.runtime.devices.simulated import SimulatedEdgeTPU
from dyn_perception.runtime.devices.timing import calibrated_timing, EdgeTPUTiming
from dyn_perception.runtime.energy.host_cpu import HostCPUModel
from dyn_perception.runtime.energy.policy import ModeCost
from dyn_perception.runtime.modes import budget_fraction, Mode
from dyn_perception.runtime.pipeline.placement import balanced_placement, reach_probabilities
import yaml

# Assumption: the host spends about one watt (one embedded core busy) while it drives an
# invocation's fixed overhead (driver, USB or PCIe transaction).
HOST_ACTIVE_W = 1.0
P99 = 0.99
_LOADER = getattr(yaml, 'CSafeLoader', yaml.SafeLoader)
EMBEDDED_HOST = HostCPUModel()


@dataclass(frozen=True)
class Configuration:
    """One way to run the model and what the model of the simulated TPU says it costs."""

    variant: str
    policy: str
    thresholds: tuple[Optional[float], ...]
    num_tpus: int
    accuracy: float
    active_energy_j: float
    idle_power_w: float
    p99_ms: float
    swap_s: float
    swap_energy_j: float
    wake_s: float = 0.0
    wake_energy_j: float = 0.0
    mode: Optional[str] = None
    loss_bound: Optional[float] = None
    host_s: Optional[float] = None  # host core busy per frame: the whole model, or driving TPUs

    def __post_init__(self) -> None:
        """Refuse what a hand-edited manifest could hold that the policy cannot cost."""
        def number(value) -> bool:
            return (isinstance(value, (int, float)) and not isinstance(value, bool)
                    and math.isfinite(value) and value >= 0)

        names = ('active_energy_j', 'idle_power_w', 'p99_ms', 'swap_s', 'swap_energy_j',
                 'wake_s', 'wake_energy_j')
        bad = [n for n in names if not number(getattr(self, n))]
        bad += [n for n in ('loss_bound', 'host_s')
                if getattr(self, n) is not None and not number(getattr(self, n))]
        if not (number(self.accuracy) and self.accuracy <= 1):
            bad.append('accuracy (0-1)')
        if not isinstance(self.num_tpus, int) or isinstance(self.num_tpus, bool) \
                or self.num_tpus < 0:
            bad.append('num_tpus (an integer >= 0)')
        if bad:
            raise ValueError(f'not a finite number >= 0: {", ".join(bad)}')

    def energy_per_frame_j(self, fps: float) -> float:
        return self.active_energy_j + self.idle_power_w / fps

    def power_w(self, fps: float) -> float:
        return self.active_energy_j * fps + self.idle_power_w

    def cost(self, fps: float) -> ModeCost:
        return ModeCost(self.power_w(fps), self.accuracy, self.swap_s, self.swap_energy_j,
                        self.num_tpus, self.wake_s, self.wake_energy_j, self.loss_bound,
                        None if self.host_s is None else self.host_s * fps)

    @classmethod
    def from_dict(cls, data: dict, where: str) -> 'Configuration':
        try:
            return cls(**{**data, 'thresholds': tuple(data['thresholds'])})
        except (TypeError, KeyError, ValueError) as err:
            raise ArtifactError(f'{where}: not a valid configuration ({err})') from err


def configurations(manifest: Manifest, profile: Profile, policy: str, max_tpus: int,
                   timing: Optional[EdgeTPUTiming] = None,
                   power: Optional[PowerModel] = None,
                   host: Optional[HostCPUModel] = EMBEDDED_HOST) -> list[Configuration]:
    """Every variant x measured threshold setting x 0 (``host``) or 1..max_tpus TPUs, costed."""
    timing = timing or calibrated_timing('usb')
    power = power or PowerModel.of(timing)
    device = SimulatedEdgeTPU('front', timing, power=power)
    found = []
    for vp in profile.variants:
        variant = manifest.variant(vp.name)
        refs = segment_refs(manifest, variant, vp)
        exit_segments = variant.exit_segment_indices()
        for point in vp.exit_curves.get(policy, ()):
            reach = reach_probabilities(variant, point.exit_rates)
            if host is not None:
                found.append(_on_host(host, refs, reach, exit_segments, point, vp.name, policy,
                                      power))
            for n in range(1, max_tpus + 1):
                placement = balanced_placement(
                    len(refs), tuple(range(n)), reach,
                    lambda group: device.estimate_ms([refs[s] for s in group]))
                ms = [0.0] * len(refs)
                swap_s, swap_j = [], 0.0
                for stage in placement.stages:
                    group = [refs[s] for s in stage.segments]
                    for s, t in zip(stage.segments, device.estimate_ms(group)):
                        ms[s] = t
                    load = (len(group) * timing.overhead_s + timing.transfer_s(
                        min(sum(r.spec.param_bytes for r in group), timing.cache_bytes)))
                    swap_s.append(load)
                    swap_j += load * power.active_w * len(stage.devices)
                active = sum(r * 1e-3 * t * (power.active_w - power.idle_w) for r, t in
                             zip(reach, ms))
                driving_s = sum(reach) * timing.overhead_s
                found.append(Configuration(
                    vp.name, policy, point.thresholds, n, point.accuracy,
                    active + driving_s * HOST_ACTIVE_W, n * power.idle_w,
                    _p99_ms(ms, exit_segments, point.exit_rates), max(swap_s), swap_j,
                    power.wake_s, power.wake_s * power.active_w, point.mode, point.loss_bound,
                    driving_s))
    return found


def _on_host(host: HostCPUModel, refs: Sequence, reach: Sequence[float],
             exit_segments: Sequence[int], point, variant: str, policy: str,
             power: PowerModel) -> Configuration:
    """Cost one setting on one host core with every TPU off (the wake is per TPU woken)."""
    median = [host.median_s(r) for r in refs]
    busy_s = sum(r * t for r, t in zip(reach, median))
    p99 = [1e3 * host.p99_s(r) for r in refs]
    return Configuration(variant, policy, point.thresholds, 0, point.accuracy,
                         busy_s * host.active_w, 0.0,
                         _p99_ms(p99, exit_segments, point.exit_rates), 0.0, 0.0,
                         power.wake_s, power.wake_s * power.active_w, point.mode,
                         point.loss_bound, busy_s)


def _p99_ms(ms: Sequence[float], exit_segments: Sequence[int],
            exit_rates: Sequence[float]) -> float:
    left = 0.0
    for segment, rate in zip(exit_segments, exit_rates):
        left += rate
        if left >= P99 - 1e-9:
            return sum(ms[:segment + 1])
    return sum(ms)


def pareto_front(configs: Sequence[Configuration], fps: float) -> list[Configuration]:
    """Keep the configurations no other matches or beats in accuracy, energy and p99 at once."""
    def key(c: Configuration) -> tuple[float, float, float]:
        return -c.accuracy, c.energy_per_frame_j(fps), c.p99_ms

    keys = [key(c) for c in configs]
    front = []
    for i, c in enumerate(configs):
        if not any(all(o <= k for o, k in zip(other, keys[i])) and other != keys[i]
                   for other in keys):
            front.append(c)
    return sorted(front, key=lambda c: c.energy_per_frame_j(fps))


def choose_modes(configs: Sequence[Configuration], modes: Sequence[Mode],
                 fps: float) -> dict[str, Configuration]:
    """Each mode: least energy among its calibrated points that keep budget and frame period."""
    chosen = {}
    for mode in modes:
        budget = budget_fraction(mode.max_accuracy_loss)
        # A mode point without a loss bound (older builds) was calibrated for this very
        # budget against its own variant's final exit: it keeps the mode by construction.
        fits = [c for c in configs if c.mode == mode.name and c.p99_ms <= 1e3 / fps
                and (c.loss_bound is None or c.loss_bound <= budget)]
        if not fits:
            raise ValueError(f'no configuration keeps mode {mode.name!r} within '
                             f'{mode.max_accuracy_loss} points and {1e3 / fps:.1f} ms')
        chosen[mode.name] = min(fits, key=lambda c: (c.energy_per_frame_j(fps), -c.accuracy))
    return chosen


@dataclass(frozen=True)
class Front:
    """One model's front and mode mapping per exit policy, at the frame rate it assumed."""

    fps: float
    max_tpus: int
    points: dict[str, list[Configuration]]
    modes: dict[str, dict[str, Configuration]]


def compute_front(manifest: Manifest, profile: Profile, modes: Sequence[Mode], fps: float,
                  max_tpus: int, timing: Optional[EdgeTPUTiming] = None) -> Front:
    """Front and mode mapping for every exit policy the default variant has curves for."""
    if not fps > 0 or max_tpus < 1:
        raise ValueError('front needs fps > 0 and max_tpus >= 1')
    points, chosen = {}, {}
    for policy in profile.variants[0].exit_curves:
        configs = configurations(manifest, profile, policy, max_tpus, timing)
        points[policy] = pareto_front(configs, fps)
        chosen[policy] = choose_modes(configs, modes, fps)
    return Front(fps, max_tpus, points, chosen)


def write_front(model: str | Path, front: Front, command: str) -> None:
    """Record the mapping in manifest.yaml (``mode_configs``), the front in profile.yaml."""
    manifest = load_manifest(model)
    directory = manifest.directory
    record = {'fps': front.fps, 'max_tpus': front.max_tpus, 'command': command}
    for name, key, value in (
            (MANIFEST_FILE, 'mode_configs', {**record, 'policies': front.modes}),
            (PROFILE_FILE, 'front', {**record, 'policies': front.points})):
        data = yaml.safe_load((directory / name).read_text())
        data.pop('schema_version', None)
        data[key] = to_plain(value)
        write_yaml(directory / name, data)
    load_manifest(directory), load_profile(directory)
    read_mode_configs(directory)


def _recorded(manifest: Manifest) -> tuple[Path, Optional[dict]]:
    path = manifest.directory / MANIFEST_FILE
    data = (yaml.load(path.read_text(), Loader=_LOADER) or {}).get('mode_configs')
    valid = isinstance(data, dict) and isinstance(data.get('policies'), dict)
    if data is not None and not valid:
        raise ArtifactError(f'{path}: mode_configs needs a mapping of policies')
    return path, data


def _policies(path: Path, data: Optional[dict]) -> dict[str, dict[str, Configuration]]:
    return {policy: {mode: Configuration.from_dict(c, f'{path}: mode_configs.{policy}.{mode}')
                     for mode, c in modes.items()}
            for policy, modes in (data or {}).get('policies', {}).items()}


def mode_configs_of(manifest: Manifest) -> dict[str, dict[str, Configuration]]:
    """Return policy -> mode -> configuration from the manifest's ``mode_configs`` ({} if none)."""
    return _policies(*_recorded(manifest))


def read_mode_configs(model: str | Path) -> tuple[float, dict[str, dict[str, Configuration]]]:
    """Return (fps, policy -> mode -> configuration) from a manifest's ``mode_configs``."""
    manifest = load_manifest(model)
    path, data = _recorded(manifest)
    if data is None:
        raise ArtifactError(f'{path}: no mode_configs (run `python -m dyn_perception.training '
                            f'front --model {manifest.name}`)')
    return float(data.get('fps', 30.0)), _policies(path, data)


def load_mode_costs(model: str | Path, modes: Sequence[str], fps: float,
                    policy: Optional[str] = None) -> dict[str, ModeCost]:
    """Return the policy's view of each mode's configuration (power at ``fps``, accuracy, swap)."""
    _, policies = read_mode_configs(model)
    policy = policy or load_manifest(model).default_policy
    mapping = policies.get(policy, {})
    missing = [m for m in modes if m not in mapping]
    if missing:
        raise ArtifactError(f'model {model}: mode_configs.{policy} has no {missing}')
    return {m: mapping[m].cost(fps) for m in modes}
