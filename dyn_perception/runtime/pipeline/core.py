"""
The pipeline API: segments of one model on several devices, frames in, results out in order.

    pipeline = Pipeline(manifest, [SimulatedEdgeTPU(f'tpu{i}') for i in range(4)],
                        thresholds='balanced')
    for i, image in enumerate(frames):
        pipeline.submit(i, image)            # uint8 camera frame or int8 network input
    for result in pipeline.drain():          # or on_result=callback, or poll()
        print(result.frame_id, result.exit_index, result.class_id, result.latency_s)
    pipeline.set_mode(thresholds='eco')      # mid-stream; also variant=..., num_devices=...
    print(pipeline.stats())

Devices that all run in virtual time (simulated TPUs) are simulated event by event in the
caller's thread; a single wall-clock device runs each frame inside ``submit``; otherwise every
device gets a worker thread and time is real. Placement is
'balanced' (expected load from the profile's exit rates, replicas allowed), 'pipeline'
(balanced, one device per stage) or 'equal_parameter' (the edgetpu_compiler baseline), or an
explicit :class:`Placement`; it is recomputed on every mode change and device failure.
"""

from __future__ import annotations

import itertools
import threading
from typing import Any, Callable, Optional, Sequence

from dyn_perception.runtime.artifacts import (
    ArtifactError, load_profile, Manifest, Profile, PROFILE_FILE, VariantProfile
)
from dyn_perception.runtime.devices.base import Device, segment_refs
from dyn_perception.runtime.exits import get_policy
from dyn_perception.runtime.pipeline.engine import (
    Config, Engine, FAILED_DEVICE, LOADING, PipelineError
)
from dyn_perception.runtime.pipeline.executors import (
    InlineExecutor, ThreadedExecutor, VirtualExecutor
)
from dyn_perception.runtime.pipeline.placement import (
    balanced_placement, equal_parameter_placement, expected_exit_rates, Placement,
    reach_probabilities
)
from dyn_perception.runtime.pipeline.results import FrameResult, PipelineStats
from dyn_perception.runtime.preprocess import fit_frame
import numpy as np

PLACEMENTS = ('balanced', 'pipeline', 'equal_parameter')
Thresholds = str | Sequence[Optional[float]]


class Pipeline:
    """
    Early-exit inference of one model pipelined over ``devices`` (see the module docstring).

    ``thresholds`` is a mode name from the manifest or one threshold per early exit.
    ``admission`` is 'block' (``submit`` waits while the input queue is full: replay, tests)
    or 'drop_oldest' (live camera: the oldest frame not yet started is dropped and counted).
    ``num_devices`` uses only the first devices of the list (``set_mode`` can change it).
    """

    def __init__(self, manifest: Manifest, devices: Sequence[Device], *,
                 variant: Optional[str] = None, policy: Optional[str] = None,
                 thresholds: Thresholds = 'balanced', placement: str | Placement = 'balanced',
                 profile: Optional[Profile] = None, num_devices: Optional[int] = None,
                 queue_capacity: int = 4, admission: str = 'block',
                 on_result: Optional[Callable[[FrameResult], None]] = None):
        self.devices = list(devices)
        self._check_devices(placement)
        self.manifest = manifest
        self.profile = profile if profile is not None else _profile_of(manifest)
        self._placement_choice = placement
        self._versions = itertools.count()
        self._on_result = on_result
        config = self._config(variant or manifest.default_variant,
                              policy or manifest.default_policy, thresholds)
        self._engine = Engine(self.devices, config, manifest.input, self._plan, queue_capacity,
                              admission, num_devices or len(self.devices))
        virtual = self.devices[0].virtual
        inline = not virtual and len(self.devices) == 1
        self._executor = (VirtualExecutor(self._engine) if virtual else
                          InlineExecutor(self._engine) if inline else
                          ThreadedExecutor(self._engine))
        self._delivered = 0
        self._closing = False
        self._delivery = None
        if on_result is not None and not (virtual or inline):
            self._delivery = threading.Thread(target=self._deliver_forever, daemon=True,
                                              name='pipeline-results')
            self._delivery.start()

    def _check_devices(self, placement: str | Placement) -> None:
        if not self.devices:
            raise ValueError('a pipeline needs at least one device')
        names = [d.name for d in self.devices]
        if len(set(names)) != len(names):
            raise ValueError(f'device names must be unique, got {names}')
        if len({d.virtual for d in self.devices}) > 1:
            raise ValueError('devices mix virtual and wall-clock time; use one kind of clock')
        if isinstance(placement, str):
            if placement not in PLACEMENTS:
                raise ValueError(f'placement must be one of {PLACEMENTS} or a Placement, '
                                 f'got {placement!r}')
            if len({d.kind for d in self.devices}) > 1:
                raise ValueError('placement strategies assume identical devices; pass an '
                                 'explicit Placement for a mix')

    # -- configuration -------------------------------------------------------------------

    def _variant_profile(self, name: str) -> Optional[VariantProfile]:
        if self.profile is None:
            return None
        try:
            return self.profile.variant(name)
        except ArtifactError:
            return None

    def _config(self, variant_name: str, policy_name: str, thresholds: Thresholds) -> Config:
        """Validate a configuration once, here, so the engine can trust it."""
        variant = self.manifest.variant(variant_name)
        policy = get_policy(policy_name)
        if isinstance(thresholds, str):
            modes = variant.thresholds.get(policy.name, {})
            if thresholds not in modes:
                raise ValueError(f'variant {variant.name} has no {policy.name} thresholds for '
                                 f'mode {thresholds!r}; known: {sorted(modes)}')
            values, mode = modes[thresholds], thresholds
        else:
            values, mode = list(thresholds), None
        if len(values) != variant.num_exits - 1:
            raise ValueError(f'variant {variant.name} has {variant.num_exits - 1} early exits, '
                             f'got {len(values)} thresholds')
        for value in values:
            problem = policy.validate(value)
            if problem:
                raise ValueError(problem)
        refs = segment_refs(self.manifest, variant, self._variant_profile(variant.name))
        return Config(next(self._versions), variant, refs, policy, tuple(values), mode)

    def _plan(self, config: Config, devices: tuple[int, ...]) -> Placement:
        """Place ``config``'s segments on ``devices``; an explicit placement while it fits."""
        choice = self._placement_choice
        if isinstance(choice, Placement):
            try:
                choice.check(len(config.refs), devices)
                return choice
            except ValueError:
                choice = 'balanced'  # its devices are gone or the variant differs
        rates = expected_exit_rates(config.variant, self._variant_profile(config.variant.name),
                                    config.policy.name, config.thresholds)
        reach = reach_probabilities(config.variant, rates)
        model = self.devices[devices[0]]

        def cost(group: tuple[int, ...]) -> tuple[float, ...]:
            return model.estimate_ms([config.refs[s] for s in group])

        if choice == 'equal_parameter':
            return equal_parameter_placement([r.spec.param_bytes for r in config.refs], devices,
                                             reach, cost)
        return balanced_placement(len(config.refs), devices, reach, cost,
                                  replicate=choice == 'balanced')

    def set_mode(self, *, thresholds: Optional[Thresholds] = None,
                 policy: Optional[str] = None, variant: Optional[str] = None,
                 num_devices: Optional[int] = None) -> None:
        """
        Change thresholds (or mode), policy, variant or device count while frames flow.

        Frames that have started keep the configuration they started with; every later
        frame gets the new one. A new variant waits until the started frames are done. A bad
        value raises ValueError and leaves the running configuration untouched.
        """
        with self._executor.lock:
            current = self._engine.config
            if thresholds is None:
                thresholds = current.mode if current.mode is not None else current.thresholds
            config = self._config(variant or current.variant.name,
                                  policy or current.policy.name, thresholds)
            count = num_devices or self._engine.num_devices
            changes = [f'{key}={value}' for key, value in (
                ('variant', variant), ('policy', policy), ('num_devices', num_devices),
                ('mode', config.mode)) if value is not None]
            self._engine.request(config, count, ', '.join(changes), self._executor.now)
            self._executor.kick()

    def wait_loaded(self, timeout: Optional[float] = 30.0) -> None:
        """
        Wait until every device holds its segments; PipelineError says which load failed.

        Devices load lazily, when first idle; a caller that must know the pipeline works
        before it relies on it (a live rebuild, swapped in only when it works) waits here.
        """
        engine = self._engine

        def settled() -> bool:
            return LOADING not in engine.state and not any(
                engine.needs_load(i) for i in engine.usable())

        if isinstance(self._executor, VirtualExecutor):
            self._executor.drain()
        with self._executor.lock:
            if not isinstance(self._executor, VirtualExecutor) and \
                    not self._executor.lock.wait_for(settled, timeout):
                raise PipelineError(f'segments not loaded after {timeout} s')
            if engine.dead is not None or FAILED_DEVICE in engine.state:
                raise PipelineError('cannot load the segments: ' + (
                    engine.errors[-1].split(' ', 1)[1] if engine.errors else str(engine.dead)))

    # -- frames --------------------------------------------------------------------------

    def submit(self, frame_id: Any, frame: np.ndarray, at: Optional[float] = None) -> None:
        """
        Queue one frame: uint8 H x W x C (any size; fitted to the network) or int8 input.

        ``at`` is the arrival time in virtual time (simulated devices only; default: now).
        """
        if self._closing:
            raise PipelineError('the pipeline is closed')
        frame = np.asarray(frame)
        spec = self.config.refs[0].spec.input
        if frame.dtype == np.int8:
            if frame.shape == spec.shape[1:]:
                frame = frame[None]
            if frame.shape != spec.shape:
                raise ValueError(f'int8 frame must have shape {spec.shape}, got {frame.shape}')
        elif frame.dtype == np.uint8:
            frame, spec = fit_frame(frame, self.manifest.input), None
        else:
            raise ValueError(f'frame must be uint8 (an image) or int8 (a quantised input), '
                             f'got {frame.dtype}')
        with self._executor.lock:
            job = self._engine.new_job(frame_id, frame, spec, self._executor.now)
            self._executor.submit(job, at)
        self._deliver_here()

    def advance(self, until: float) -> None:
        """Let virtual time run to ``until`` seconds (simulated devices only)."""
        if not isinstance(self._executor, VirtualExecutor):
            raise ValueError('advance() is for virtual time; these devices run in wall time')
        with self._executor.lock:
            self._executor.advance(until)
        self._deliver_here()

    def poll(self) -> list[FrameResult]:
        """Results released since the last call, in frame order (empty with ``on_result``)."""
        if self._on_result is not None:
            return []
        with self._executor.lock:
            results = self._engine.take_released()
            self._delivered += len(results)
        return results

    def drain(self, timeout: Optional[float] = None) -> list[FrameResult]:
        """Wait until every submitted frame has its result; return the results not yet polled."""
        self._executor.drain(timeout)
        if self._delivery is not None:
            with self._executor.lock:
                if not self._executor.lock.wait_for(
                        lambda: self._delivered == self._engine.next_release, timeout):
                    raise TimeoutError('results not delivered in time')
        self._deliver_here()
        return self.poll()

    def _deliver_here(self) -> None:
        """Virtual time or one device: hand results to ``on_result`` in the caller's thread."""
        if self._on_result is None or self._delivery is not None:
            return
        with self._executor.lock:
            results = self._engine.take_released()
        for result in results:
            self._on_result(result)
        with self._executor.lock:
            self._delivered += len(results)

    def _deliver_forever(self) -> None:
        """Wall-clock time: one thread calls ``on_result``, so results stay in order."""
        lock = self._executor.lock
        while True:
            with lock:
                lock.wait_for(lambda: self._engine.released or self._closing)
                results = self._engine.take_released()
                if not results and self._closing:
                    return
            for result in results:
                try:
                    self._on_result(result)
                except Exception as err:  # noqa: B902 - a consumer bug must not stop delivery
                    with lock:
                        self._engine.note_error(self._executor.now,
                                                f'on_result raised {err!r}')
            with lock:
                self._delivered += len(results)
                lock.notify_all()

    # -- state ---------------------------------------------------------------------------

    @property
    def placement(self) -> Placement:
        with self._executor.lock:
            return self._engine.placement

    @property
    def config(self) -> Config:
        with self._executor.lock:
            return self._engine.config

    @property
    def now(self) -> float:
        """Seconds on the pipeline's clock (virtual time, or wall time since it started)."""
        with self._executor.lock:
            return self._executor.now

    def stats(self) -> PipelineStats:
        with self._executor.lock:
            return self._engine.stats(self._executor.now)

    def close(self) -> None:
        """Stop the worker threads (frames still inside are abandoned: drain first)."""
        with self._executor.lock:
            self._closing = True
            self._executor.lock.notify_all()
        self._executor.close()
        if self._delivery is not None:
            self._delivery.join()

    def __enter__(self) -> 'Pipeline':
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _profile_of(manifest: Manifest) -> Optional[Profile]:
    """Load the model directory's profile when it has one: exit rates and timings."""
    if not (manifest.directory / PROFILE_FILE).is_file():
        return None
    return load_profile(manifest.directory)
