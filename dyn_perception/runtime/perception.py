"""
What the perception node does, without ROS: a pipeline, the operating mode, live accuracy.

The node hands frames in with their stamp and (for a labelled replay) their true class; this
class submits them to the pipeline, turns each pipeline result into a result record (the
versioned schema below) and keeps the counters the diagnostics report. Settings are checked
as a whole before they are applied, so a rejected change leaves the running state untouched.

A mode runs its configuration from the front (``manifest.yaml`` ``mode_configs``, written by
``python -m dyn_perception.training front``): variant, exit thresholds and, on TPU backends,
the number of powered TPUs, at most ``num_tpus`` (on ``litert`` every CPU worker runs). The
TPUs a mode does not use hold nothing and are powered down once they have unloaded
(simulated TPUs: ``power_off``, the next load pays a wake; a real Edge TPU has no such call
and keeps the driver's own clock gating). A configuration with no TPU runs on one host core:
LiteRT for real backends, ``energy.host_cpu.ModelledHostCPU`` (the embedded host's modelled
clock) beside simulated TPUs. Without ``mode_configs`` (or with ``variant`` or ``thresholds``
set) the older rule holds: ``mode_variants`` and the mode's thresholds on every configured
device.

A change of model, backend, device count or queue size needs a new pipeline, and so does a
mode change between the host and TPUs. ``check``
builds it beside the running one, profile and every segment of its variant loaded on its
devices, and refuses the change with the reason when any of that fails; ``apply`` then swaps
it in, and the old pipeline finishes the frames it holds in the background and is closed.
The TPUs (and the host core) are kept across a change between the host and TPUs, as the
hardware is: the TPUs idle while a mode runs on the host core are powered off, and the mode
that needs them again pays their wake and reload.

``clock='virtual'`` (simulated devices only) runs the same engine in virtual time, as the
battery benchmark does: ``submit(..., at=t)`` and ``advance(t)`` instead of waiting, and an
old pipeline finishes its frames at once instead of in the background.

Result record schema ``dyn_perception/result/1`` (JSON object):
    schema, frame (sequence number), stamp [sec, nanosec] (null for a frame that never
    arrived), status (ok | dropped | failed),
    class_id, label, score (softmax probability of class_id), exit (index of the exit taken,
    0-based), exits (number of exits), latency_ms (arrival to result: any hold waiting for
    the frame's label included; null for a frame that never arrived), inference_ms (sum
    of the segment invocations), energy_j, mode, variant, policy, ground_truth, correct
    (both null without ground truth), error (null when ok; why the frame was dropped or
    failed otherwise).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
import threading
from typing import Any, Callable, Optional

from dyn_perception.runtime.artifacts import (
    load_manifest, Manifest, MANIFEST_FILE, PROFILE_FILE, resolve_model_dir
)
from dyn_perception.runtime.devices.base import Device, DeviceUnavailable
from dyn_perception.runtime.devices.edgetpu import list_edge_tpus
from dyn_perception.runtime.devices.factory import BACKENDS, make_devices
from dyn_perception.runtime.devices.simulated import CLOCKS
from dyn_perception.runtime.energy.front import Configuration, mode_configs_of
from dyn_perception.runtime.energy.host_cpu import ModelledHostCPU
from dyn_perception.runtime.exits import get_policy
from dyn_perception.runtime.pipeline import Pipeline, PipelineError
from dyn_perception.runtime.pipeline.results import DROPPED, FrameResult, OK, PipelineStats
import numpy as np

RESULT_SCHEMA = 'dyn_perception/result/1'
VIRTUAL_BACKEND = 'virtual time needs backend sim-edgetpu (its devices have a modelled clock)'


@dataclass(frozen=True)
class PerceptionSettings:
    """
    The node's parameters, as one value.

    Empty ``policy`` means the manifest's default; empty ``variant`` the variant the build
    chose for the mode (``manifest.mode_variants``); empty ``thresholds`` the mode's
    calibrated thresholds, otherwise one per early exit overrides them.
    """

    model: str = 'fmnist_eenet'
    backend: str = 'auto'
    num_tpus: int = 2
    mode: str = 'balanced'
    policy: str = ''
    variant: str = ''
    thresholds: tuple[float, ...] = ()
    queue_capacity: int = 4
    live: bool = True

    def pipeline_shape(self) -> tuple:
        """Return what cannot change without rebuilding the pipeline."""
        return self.model, self.backend, self.num_tpus, self.queue_capacity, self.live


@dataclass(frozen=True)
class FrameInfo:
    stamp: Optional[tuple[int, int]]  # None: a frame that never arrived
    ground_truth: Optional[int]
    image: Optional[np.ndarray]
    held_s: float = 0.0  # between arrival and submission (waiting for the label)


@dataclass
class _Built:
    """A pipeline and the manifest it runs; ``pipeline`` is set once it exists."""

    shape: tuple
    manifest: Manifest
    files: tuple  # (path, mtime_ns, size) of manifest and profile, as read
    configs: dict  # policy -> mode -> Configuration (the manifest's mode_configs)
    on_tpus: bool  # whether its backend runs on TPUs (see _on_tpus), decided once per build
    pipeline: Optional[Pipeline] = None


def _artifact_files(manifest: Manifest) -> tuple:
    paths = (manifest.directory / MANIFEST_FILE, manifest.directory / PROFILE_FILE)
    return tuple((str(p), p.stat().st_mtime_ns, p.stat().st_size) if p.is_file() else (str(p),)
                 for p in paths)


# What building a pipeline raises for bad settings or artifacts: ArtifactError is a
# ValueError; DeviceUnavailable, DeviceError and PipelineError are RuntimeErrors.
BUILD_ERRORS = (ValueError, RuntimeError, OSError)


class PerceptionEngine:
    """A pipeline with modes, result records and live accuracy (see the module docstring)."""

    def __init__(self, settings: PerceptionSettings,
                 on_record: Callable[[dict, Optional[np.ndarray]], None],
                 keep_images: bool = False, accuracy_window: int = 500, clock: str = 'wall',
                 on_retired: Optional[Callable[[PipelineStats], None]] = None):
        if clock not in CLOCKS:
            raise ValueError(f'clock must be one of {CLOCKS}, got {clock!r}')
        if clock == 'virtual' and settings.backend != 'sim-edgetpu':
            raise ValueError(VIRTUAL_BACKEND)
        self.clock = clock
        self.on_retired = on_retired  # a replaced pipeline's final statistics
        self._now = 0.0  # virtual time reached
        # Devices kept across a change between host and TPUs: (backend, count) -> TPUs, and
        # backend -> the host core.
        self._tpus: Optional[tuple[tuple, list[Device]]] = None
        self._host: Optional[tuple[str, Device]] = None
        self.on_record = on_record
        self.keep_images = keep_images
        self._lock = threading.Lock()
        self._swap = threading.Lock()  # no frame goes to a pipeline being retired
        self._power = threading.RLock()  # no power-off while the device count changes
        self._frames: dict[int, FrameInfo] = {}
        self._next_frame = 0
        self.not_received = 0
        self._recent = deque(maxlen=accuracy_window)
        self.correct = self.labelled = 0
        self.settings = settings
        self._candidate: Optional[_Built] = None
        self._retiring: list[threading.Thread] = []
        self._built: Optional[_Built] = None
        self._built = self._build(settings)
        self._power_off_spare()

    @property
    def pipeline(self) -> Pipeline:
        return self._built.pipeline

    @property
    def manifest(self) -> Manifest:
        return self._built.manifest

    @property
    def tpus(self) -> tuple[Device, ...]:
        """Give the TPUs kept for the backend and count, powered or not (none on a CPU one)."""
        return tuple(self._tpus[1]) if self._tpus is not None else ()

    # -- settings ------------------------------------------------------------------------

    def check(self, settings: PerceptionSettings) -> Optional[str]:
        """Say why ``settings`` cannot run (None when they can); nothing is changed."""
        if settings.backend not in BACKENDS:
            return f'backend must be one of {", ".join(BACKENDS)}'
        if self.clock == 'virtual' and settings.backend != 'sim-edgetpu':
            return VIRTUAL_BACKEND
        try:
            manifest, configs = ((self.manifest, self._built.configs)
                                 if settings.model == self.settings.model
                                 else self._read(settings.model))
            config = self._mode_config(settings, manifest, configs)
            variant = manifest.variant(config.variant if config else
                                       self._variant_name(settings, manifest))
            policy = get_policy(settings.policy or manifest.default_policy)
            if config is not None:
                pass  # the front's own setting, validated when it was written
            elif settings.thresholds:
                if len(settings.thresholds) != variant.num_exits - 1:
                    return (f'{variant.name} has {variant.num_exits - 1} early exits; '
                            f'got {len(settings.thresholds)} thresholds')
                problems = [policy.validate(t) for t in settings.thresholds]
                return next((p for p in problems if p), None)
            if settings.mode not in variant.thresholds.get(policy.name, {}):
                known = sorted(variant.thresholds.get(policy.name, {}))
                return (f'variant {variant.name} has no {policy.name} thresholds for mode '
                        f'{settings.mode!r}; known: {", ".join(known)}')
        except ValueError as err:
            return str(err)
        if self._shape(settings, config, self._on_tpus(settings)) == self._built.shape:
            return None
        self._discard_candidate()
        try:
            self._candidate = self._build(settings, manifest, configs)
        except BUILD_ERRORS as err:
            return f'cannot build the new pipeline: {err}'
        return None

    def apply(self, settings: PerceptionSettings) -> None:
        """Switch to checked settings: a mode change in place, else the pipeline check built."""
        same_model = settings.model == self.settings.model
        config = self._mode_config(settings, self.manifest, self._built.configs) \
            if same_model else None
        shape = self._shape(settings, config, self._on_tpus(settings)) if same_model else None
        if shape != self._built.shape:
            built = self._candidate
            if built is None or (built.shape != shape if same_model
                                 else built.shape[:-1] != settings.pipeline_shape()):
                self._discard_candidate()
                built = self._build(settings)
            self._candidate = None
            with self._power, self._swap:
                old, self._built = self._built, built
                self.settings = settings
            if self.clock == 'virtual':
                self._retire(old.pipeline)
            else:
                retire = threading.Thread(target=self._retire, args=(old.pipeline,),
                                          daemon=True, name='pipeline-retire')
                self._retiring = [t for t in self._retiring if t.is_alive()] + [retire]
                retire.start()
        else:
            with self._power:
                self.pipeline.set_mode(**self._mode_arguments(settings, self.manifest, config,
                                                              self._built.on_tpus))
                self.settings = settings
        self.power_down_unused()

    def _retire(self, pipeline: Pipeline, timeout: float = 10.0) -> None:
        """Let an old pipeline finish the frames it holds, then release its devices."""
        try:
            pipeline.drain(timeout=timeout)
        except (TimeoutError, PipelineError):
            pass  # its frames are abandoned, as on close
        pipeline.close()
        if self.on_retired is not None:
            self.on_retired(pipeline.stats())
        self._power_off_spare()

    def _discard_candidate(self) -> None:
        if self._candidate is not None:
            self._candidate.pipeline.close()
            self._candidate = None
            self._power_off_spare()

    def _power_off_spare(self) -> None:
        """Power off the kept TPUs the running pipeline does not use (it runs on the host)."""
        me = threading.current_thread()
        if any(t.is_alive() and t is not me for t in self._retiring):
            return  # an old pipeline still finishes frames there; its retirement comes back
        with self._power:
            if self._tpus is None or self._built is None or self._built.pipeline is None:
                return
            running = {id(d) for d in self._built.pipeline.devices}
            for device in self._tpus[1]:
                if id(device) not in running and hasattr(device, 'power_off') \
                        and not getattr(device, 'off', False):
                    device.power_off()

    def _kept(self, devices: list[Device]) -> list[Device]:
        """Hand kept devices to a new pipeline once no old one still finishes frames on them."""
        for thread in self._retiring:
            thread.join()
        self._retiring = []
        return devices

    def _in_use(self, devices: list[Device]) -> bool:
        running = self._built.pipeline.devices if self._built and self._built.pipeline else ()
        return any(d is r for d in devices for r in running)

    @staticmethod
    def _variant_name(settings: PerceptionSettings, manifest: Manifest) -> str:
        """Return the variant to run: the one asked for, else the one the build chose."""
        return settings.variant or manifest.mode_variant(settings.mode, settings.policy)

    @staticmethod
    def _read(model: str) -> tuple[Manifest, dict]:
        manifest = load_manifest(model)
        return manifest, mode_configs_of(manifest)

    @staticmethod
    def _mode_config(settings: PerceptionSettings, manifest: Manifest,
                     configs: dict) -> Optional[Configuration]:
        """Return the front's configuration of the mode, unless variant or thresholds are set."""
        if settings.variant or settings.thresholds:
            return None
        return configs.get(settings.policy or manifest.default_policy, {}).get(settings.mode)

    def _on_tpus(self, settings: PerceptionSettings) -> bool:
        """
        Tell whether the backend runs on TPUs, so that a mode's TPU count applies.

        On ``litert`` the devices are CPU workers: a mode brings its variant and thresholds and
        runs on all ``num_tpus`` of them. ``auto`` decides as ``make_devices`` does, by
        listing the attached TPUs: only when backend or ``num_tpus`` change, not on every
        mode change or diagnostics period, where the running pipeline's answer stands.
        """
        running = self._built
        if running is not None and (settings.backend, settings.num_tpus) == \
                (self.settings.backend, self.settings.num_tpus):
            return running.on_tpus
        if settings.backend != 'auto':
            return settings.backend != 'litert'
        try:
            return len(list_edge_tpus()) >= settings.num_tpus
        except DeviceUnavailable:
            return False

    @staticmethod
    def _shape(settings: PerceptionSettings, config: Optional[Configuration],
               on_tpus: bool) -> tuple:
        """Return what needs a rebuild to change: the settings' shape, host or TPUs."""
        on_host = config is not None and config.num_tpus == 0 and on_tpus
        return (*settings.pipeline_shape(), on_host)

    @staticmethod
    def _mode_arguments(settings: PerceptionSettings, manifest: Manifest,
                        config: Optional[Configuration], on_tpus: bool) -> dict:
        if config is None:
            return {'variant': PerceptionEngine._variant_name(settings, manifest),
                    'policy': settings.policy or manifest.default_policy,
                    'thresholds': list(settings.thresholds) or settings.mode,
                    'num_devices': settings.num_tpus}
        count = (max(1, min(config.num_tpus, settings.num_tpus)) if on_tpus
                 else settings.num_tpus)
        return {'variant': config.variant, 'policy': config.policy,
                'thresholds': list(config.thresholds), 'num_devices': count}

    def _devices(self, settings: PerceptionSettings, on_host: bool) -> list:
        """
        Open the TPUs of ``settings``, or one host core when the mode powers none.

        The devices the running pipeline does not use are kept from the last pipeline that
        had them, when backend and count are the same: a change between host and TPUs
        meets the same TPUs again (powered off meanwhile: the wake is paid). An explicit
        ``edgetpu`` backend must have its TPUs attached even while the mode runs on the
        host: a later mode needs them, and the setting is refused now, not then.
        """
        if not on_host:
            key = (settings.backend, settings.num_tpus)
            if self._tpus is not None and self._tpus[0] == key and not self._in_use(
                    self._tpus[1]):
                return self._kept(self._tpus[1])
            return self._open_tpus(settings)
        if settings.backend == 'edgetpu' and len(list_edge_tpus()) < settings.num_tpus:
            raise DeviceUnavailable(f'fewer than {settings.num_tpus} Edge TPUs attached')
        if settings.backend == 'sim-edgetpu' and self._tpus is None:
            self._open_tpus(settings)  # the simulated board's TPUs: off while on the host
        if self._host is not None and self._host[0] == settings.backend and not self._in_use(
                [self._host[1]]):
            return self._kept([self._host[1]])
        host = (ModelledHostCPU('host0', clock=self.clock) if settings.backend == 'sim-edgetpu'
                else make_devices('litert', 1)[0])
        self._host = (settings.backend, host)
        return [host]

    def _open_tpus(self, settings: PerceptionSettings) -> list[Device]:
        """Open the TPUs of ``settings`` and keep them for later pipelines."""
        self._tpus = ((settings.backend, settings.num_tpus),
                      make_devices(settings.backend, settings.num_tpus, clock=self.clock))
        return self._tpus[1]

    def power_down_unused(self) -> int:
        """
        Power off the devices beyond the mode's count that have unloaded; return those powered.

        Unloading happens on the device's own worker after the mode change, so this is also
        called from ``diagnostics``. It waits while any device has failed: a re-placement
        could then be about to load the very device it would power off.
        """
        with self._power:
            built, settings = self._built, self.settings
            stats = built.pipeline.stats()
            used = self._mode_arguments(settings, built.manifest, self._mode_config(
                settings, built.manifest, built.configs), built.on_tpus)['num_devices']
            healthy = all(d.state != 'failed' for d in stats.devices)
            powered = 0
            for i, (device, d) in enumerate(zip(built.pipeline.devices, stats.devices)):
                if getattr(device, 'off', False):
                    continue
                if (healthy and i >= used and hasattr(device, 'power_off')
                        and d.state == 'idle' and not d.segments and not device.resident):
                    device.power_off()
                    continue
                powered += 1
            return powered

    def _build(self, settings: PerceptionSettings, manifest: Optional[Manifest] = None,
               configs: Optional[dict] = None) -> _Built:
        """
        Open the manifest, profile, devices and pipeline; return once its segments load.

        Parsing manifest and profile is most of a rebuild's time (0.4-1.4 s of YAML for the
        shipped model here); when the model's files are those the running pipeline read,
        their parsed form is reused, so a new backend, device count or queue size takes
        only the devices' loading.
        """
        running = self._built
        profile = None
        if running is not None and resolve_model_dir(settings.model) == \
                running.manifest.directory and _artifact_files(running.manifest) == running.files:
            manifest, files, profile = running.manifest, running.files, running.pipeline.profile
            configs = running.configs
        else:
            if manifest is None or configs is None:
                manifest, configs = self._read(settings.model)
            files = _artifact_files(manifest)
        config = self._mode_config(settings, manifest, configs)
        on_tpus = self._on_tpus(settings)
        shape = self._shape(settings, config, on_tpus)
        built = _Built(shape, manifest, files, configs, on_tpus)
        devices = self._devices(settings, shape[-1])
        arguments = self._mode_arguments(settings, manifest, config, on_tpus)
        arguments['num_devices'] = min(arguments['num_devices'], len(devices))
        pipeline = Pipeline(built.manifest, devices, profile=profile,
                            queue_capacity=settings.queue_capacity,
                            admission='drop_oldest' if settings.live else 'block',
                            on_result=lambda result: self._on_result(result, built),
                            **arguments)
        built.pipeline = pipeline
        try:
            pipeline.wait_loaded()
        except PipelineError:
            pipeline.close()
            raise
        if self.clock == 'virtual':
            pipeline.advance(self._now)  # its loads (and wakes) overlap the old one's frames
        for device in devices[arguments['num_devices']:]:
            if hasattr(device, 'power_off'):
                device.power_off()  # a new pipeline's unused devices never loaded
        return built

    # -- frames --------------------------------------------------------------------------

    def submit(self, image: np.ndarray, stamp: tuple[int, int],
               ground_truth: Optional[int] = None, held_s: float = 0.0,
               at: Optional[float] = None) -> int:
        """
        Queue one RGB (or grey) uint8 frame that arrived ``held_s`` ago; return its number.

        ``at``: its arrival in virtual time (``clock='virtual'`` only); a frame that arrives
        while the pipeline still loads waits for it, and that wait counts in its latency.
        """
        if at is not None:
            ready = self.pipeline.now
            held_s, at = held_s + max(ready - at, 0.0), max(at, ready)
        with self._lock:
            frame = self._next_frame
            self._next_frame += 1
            self._frames[frame] = FrameInfo(stamp, ground_truth,
                                            image if self.keep_images else None, held_s)
        with self._swap:
            self.pipeline.submit(frame, image, at=at)
        return frame

    def advance(self, until: float) -> None:
        """Let virtual time run to ``until`` seconds (``clock='virtual'`` only)."""
        if self.clock != 'virtual':
            raise ValueError('advance() is for an engine in virtual time')
        self._now = max(self._now, until)
        self.pipeline.advance(self._now)

    def record_not_received(self, count: int, reason: str) -> None:
        """Give each of ``count`` frames that never reached the node a ``dropped`` record."""
        built = self._built
        for _ in range(count):
            with self._lock:
                frame = self._next_frame
                self._next_frame += 1
                self.not_received += 1
            result = FrameResult(frame, DROPPED, None, None, 0.0, 0.0, 0.0, (), None, None,
                                 error=reason)
            record = self.record(result, FrameInfo(None, None, None), None, built)
            self.on_record({**record, 'latency_ms': None}, None)

    def _on_result(self, result: FrameResult, built: _Built) -> None:
        with self._lock:
            info = self._frames.pop(result.frame_id)
            correct = None
            if result.status == OK and info.ground_truth is not None:
                correct = result.class_id == info.ground_truth
                self.labelled += 1
                self.correct += correct
                self._recent.append(correct)
        self.on_record(self.record(result, info, correct, built), info.image)

    def record(self, result: FrameResult, info: FrameInfo, correct: Optional[bool],
               built: _Built) -> dict:
        """Build the ``dyn_perception/result/1`` record of one frame of ``built``."""
        ok = result.status == OK
        labels = built.manifest.labels
        variant = built.pipeline.config.variant
        return {
            'schema': RESULT_SCHEMA, 'frame': result.frame_id,
            'stamp': None if info.stamp is None else list(info.stamp),
            'status': result.status,
            'class_id': result.class_id if ok else None,
            'label': labels[result.class_id] if ok else None,
            'score': float(result.scores[result.class_id]) if ok else None,
            'exit': result.exit_index, 'exits': variant.num_exits,
            'latency_ms': 1e3 * (info.held_s + result.latency_s),
            'inference_ms': 1e3 * sum(t.seconds for t in result.timings),
            'energy_j': result.energy_j, 'mode': result.mode or self.settings.mode,
            'variant': variant.name, 'policy': built.pipeline.config.policy.name,
            'ground_truth': info.ground_truth, 'correct': correct, 'error': result.error,
        }

    # -- state ---------------------------------------------------------------------------

    def stats(self) -> PipelineStats:
        return self.pipeline.stats()

    def accuracy(self) -> tuple[Optional[float], Optional[float]]:
        """Return live accuracy over all labelled frames and over the recent window."""
        with self._lock:
            overall = self.correct / self.labelled if self.labelled else None
            recent = sum(self._recent) / len(self._recent) if self._recent else None
        return overall, recent

    def diagnostics(self) -> dict[str, Any]:
        """Flat key/values for ``/diagnostics``: rates, exits, devices, energy, accuracy."""
        powered = self.power_down_unused()
        s = self.stats()
        overall, recent = self.accuracy()
        values = {
            'mode': self.settings.mode, 'variant': self.pipeline.config.variant.name,
            'policy': self.pipeline.config.policy.name, 'placement': s.placement,
            'fps': round(s.fps, 2), 'submitted': s.submitted, 'completed': s.completed,
            'dropped': s.dropped, 'failed': s.failed, 'not_received': self.not_received,
            'exit_histogram': ' '.join(str(n) for n in s.exit_histogram),
            'latency_median_ms': None if s.latency_median_s is None
            else round(1e3 * s.latency_median_s, 3),
            'latency_p99_ms': None if s.latency_p99_s is None
            else round(1e3 * s.latency_p99_s, 3),
            'energy_per_frame_mj': round(1e3 * s.energy_j / s.completed, 4)
            if s.completed else None,
            'devices_powered': powered,
            'labelled': self.labelled,
            'accuracy': None if overall is None else round(overall, 4),
            'accuracy_recent': None if recent is None else round(recent, 4),
        }
        for device in s.devices:
            values[f'utilisation.{device.name}'] = round(device.utilisation, 4)
        return values

    def close(self, timeout: float = 1.0) -> None:
        """Finish what the pipelines hold for up to ``timeout`` s each and release them."""
        self._discard_candidate()
        for thread in self._retiring:
            thread.join()
        self._retire(self.pipeline, timeout)
