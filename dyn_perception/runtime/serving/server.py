"""
The stream server: several camera streams on one device pool, with deadlines kept.

    server = StreamServer(load_streams('config/streams.yaml'), devices, mode='balanced')
    server.submit('front', image, at=t)       # virtual time: at= is the camera's instant
    server.set_mode('eco')                    # new least-energy configuration, no miss
    server.advance(t_end); print(server.report())

Configuration changes (mode, stream added or removed) follow one protocol:
1. The new stream set is admitted in the new mode (``admission``); if it is not, the change is
   refused with the reason and the running configuration stays.
2. The model loads it needs are costed on the devices' model (L = the longest per device), and
   the new configuration is re-analysed with one full-width blocking job of L + 1 ticks in
   each partition that loads (``Planner.with_loading``); if some stream cannot absorb it, the
   change is refused, except a mode change, which then tries a configuration packed with
   room for its own loads, then the running lanes (``Planner.in_place``: the running
   variants at the new mode's thresholds where they keep its floors, nothing to load and
   the same bounds); see ``set_mode``.
3. The switch waits for a tick at which, after that tick's completions, no job runs or waits
   (the pool is idle; releases of that tick come after the switch). Then the lanes change, the
   loads run and hold their devices for L, and the new bounds apply to every later job.
Why no deadline is missed: every job released before the switch belongs to the old accepted
configuration and ends before it (the pool is idle at the switch); every job after it sees a
platform that was empty at the switch, then the loads, which the analysis of step 2 covers as
a lower-priority job running at its release; sporadic releases keep their period across the
switch. So each job meets the bound of the configuration it was released under (tested by
``test_serving_mode_change_keeps_deadlines``). The price: a switch waits for an idle instant.

Frames are dropped, with a reason, only when their stream is not admitted ('not_admitted'),
when a camera sends faster than its declared period ('early': that would void the analysis),
when the stream was removed with frames still waiting ('removed'), or, as the node counts
them from the camera's sequence numbers, when they never reached the server
('not_received').
"""

from __future__ import annotations

from dataclasses import dataclass, replace
import heapq
import itertools
import threading
import time
from typing import Any, Callable, Optional, Sequence

from dyn_perception.runtime.artifacts import ArtifactError, load_manifest, load_profile
from dyn_perception.runtime.devices.base import Device
from dyn_perception.runtime.modes import load_modes
from dyn_perception.runtime.preprocess import fit_frame
from dyn_perception.runtime.serving.accounting import StreamAccount
from dyn_perception.runtime.serving.admission import (
    Admitted, Planner, Served, ticks_up
)
from dyn_perception.runtime.serving.dispatcher import GangDispatcher, GangJob
from dyn_perception.runtime.serving.execution import JobOutcome, keys, run_job
from dyn_perception.runtime.serving.plans import ModelledEdgeTPU, ServedModel, SWAP
from dyn_perception.runtime.serving.streams import (
    check_count, PoolSpec, ServingError, StreamFile, StreamSpec
)
import numpy as np

RESULT_SCHEMA = 'dyn_perception/serving_result/1'
_EPS = 1e-9


@dataclass
class _Switch:
    admitted: Admitted
    streams: tuple[Served, ...]
    loads: tuple[tuple[int, tuple], ...]
    load_s: float


def rejection(name: str, err: Exception) -> str:
    """
    Lead the reason a stream was refused with its own name, once.

    The cause may be another stream of the set (the one whose bound overshoots most, or
    that finds no partition): it is then named as the one that fails with this stream in
    the set, not as a second "stream ...:" prefix.
    """
    reason = str(err)
    other = getattr(err, 'stream', None)
    lead = f'stream {other}: '
    if other is not None and other != name and reason.startswith(lead):
        return (f'stream {name}: not admitted; with it in the set, stream {other} fails: '
                f'{reason[len(lead):]}')
    return reason if reason.startswith(f'stream {name}: ') else f'stream {name}: {reason}'


class StreamServer:
    """Streams, admission, the dispatcher and accounting (see the module docstring)."""

    def __init__(self, config: StreamFile, devices: Sequence[Device], mode: Optional[str] = None,
                 *, models: Optional[dict[str, ServedModel]] = None,
                 modes: Optional[Sequence[str]] = None,
                 on_result: Optional[Callable[[dict], None]] = None, exact: bool = False,
                 planner: Optional[Planner] = None,
                 exit_trace: Optional[Callable[[Any, int], int]] = None):
        self.pool: PoolSpec = config.pool
        self.devices = list(devices)
        if len(self.devices) != self.pool.tpus:
            raise ServingError(f'pool: {self.pool.tpus} TPUs declared, {len(self.devices)} '
                               'devices given')
        if len({d.virtual for d in self.devices}) != 1 or len({d.kind for d in self.devices}) != 1:
            raise ServingError('pool: devices must be of one kind and one clock')
        timing = getattr(self.devices[0], 'timing', None)
        if timing is None:
            raise ServingError(f'pool: {self.devices[0].kind} devices have no timing model; '
                               'the analysis needs modelled WCETs (simulated Edge TPUs)')
        self.modes = tuple(modes or [m.name for m in load_modes()])
        self.mode = mode or config.mode or self.modes[0]
        if self.mode not in self.modes:
            raise ServingError(f'mode {self.mode!r} is not one of {self.modes}')
        self.models: dict[str, ServedModel] = dict(models or {})
        # A shared planner keeps its plans across servers (benchmarks build many).
        self.planner = planner or Planner(self.devices[0], ModelledEdgeTPU('probe', timing),
                                          self.pool.tpus, self.pool.rule, self.pool.tick_s,
                                          self.modes, exact)
        # Replay of recorded frames: an int payload is a frame index, its exit depends on the
        # point that runs it (``exit_trace(point, frame)``); without it an int is the exit.
        self.exit_trace = exit_trace
        self.on_result = on_result
        self.dispatcher = GangDispatcher(self.pool.tpus, self.pool.rule)
        self.accounts: dict[str, StreamAccount] = {}
        self.specs: dict[str, StreamSpec] = {}
        self.rejections: dict[str, str] = {}
        self.switches: list[dict] = []
        self.served: tuple[Served, ...] = ()
        self.admitted: Optional[Admitted] = None
        self._pending: Optional[_Switch] = None
        # The last refused mode change: (mode, running and pending configuration, error).
        self._refused: Optional[tuple] = None
        self._last_release: dict[str, float] = {}
        self._seq = itertools.count()
        self._held_s = 0.0
        self.lock = threading.RLock()
        for spec in config.streams:
            self._declare(spec)
        self._admit_at_start(config.streams)
        self.executor = (VirtualExecutor(self) if self.devices[0].virtual
                         else WallClockExecutor(self))

    # -- streams and admission --------------------------------------------------------------

    def _declare(self, spec: StreamSpec) -> Served:
        unknown = sorted(set(spec.accuracy_floor) - set(self.modes))
        if unknown:
            # A misspelt mode would silently leave that mode without its floor.
            raise ServingError(f'stream {spec.name}: accuracy floor for unknown modes '
                               f'{unknown} (modes: {", ".join(self.modes)})')
        served = Served(spec, self._model(spec))
        if spec.name not in self.accounts:
            self.accounts[spec.name] = StreamAccount(spec.name)
        if self._served(spec.name) is None:  # a running stream keeps its spec until a switch
            self.specs[spec.name] = spec
        return served

    def _model(self, spec: StreamSpec) -> ServedModel:
        if spec.model not in self.models:
            try:
                manifest = load_manifest(spec.model)
                self.models[spec.model] = ServedModel(manifest, load_profile(manifest.directory))
            except (ArtifactError, ValueError) as err:
                raise ServingError(f'stream {spec.name}: unknown or unusable model '
                                   f'{spec.model!r} ({err})') from None
        return self.models[spec.model]

    def _admit(self, streams: Sequence[Served], mode: str) -> Admitted:
        admit = (self.planner.admit_partitioned if self.pool.dispatch == 'partitioned'
                 else self.planner.admit_global)
        return admit(streams, mode)

    def _admit_at_start(self, specs: Sequence[StreamSpec]) -> None:
        """Admit the file's streams in order; one that does not fit is rejected, not fatal."""
        kept = [Served(spec, self._model(spec)) for spec in specs]
        try:
            self._admit(kept, self.mode)
        except ServingError:
            # Not all of them: admit in file order, rejecting each one that does not fit.
            candidates, kept = kept, []
            for served in candidates:
                try:
                    self._admit([*kept, served], self.mode)
                    kept.append(served)
                except ServingError as err:
                    self.rejections[served.spec.name] = rejection(served.spec.name, err)
        if not kept:
            raise ServingError('no stream can be admitted: ' + '; '.join(self.rejections.values()))
        # Start-up: the loads happen before the first frame, outside the analysis.
        switch = self._plan_switch(tuple(kept), self.mode, startup=True)
        for device, target in switch.loads:
            self.devices[device].load(target)
        self._install(switch.admitted, switch.streams)

    def _plan_switch(self, streams: tuple[Served, ...], mode: str, startup: bool = False,
                     admitted: Optional[Admitted] = None) -> _Switch:
        """Admit ``streams`` in ``mode`` (unless ``admitted`` is given), cost the loads."""
        admitted = admitted if admitted is not None else self._admit(streams, mode)
        loads, load_s = self._loads(admitted)
        admitted = self.planner.with_loading(admitted, 0.0 if startup else load_s,
                                             [device for device, _ in loads])
        return _Switch(admitted, streams, loads, load_s)

    def _loads(self, admitted: Admitted) -> tuple[tuple[tuple[int, tuple], ...], float]:
        """List what each device must load to run ``admitted``, and L (the longest load)."""
        loads, load_s = [], 0.0
        for device, target in enumerate(admitted.residents):
            if target and keys(self.devices[device].resident) != keys(target):
                probe = self.planner.probe
                probe.load(())
                probe.load(self.devices[device].resident)
                load_s = max(load_s, probe.load(target).seconds)
                probe.load(())
                loads.append((device, target))
        return tuple(loads), load_s

    def _roomy_switch(self, streams: tuple[Served, ...], mode: str, load_s: float) -> _Switch:
        """
        Admit ``streams`` in ``mode`` with room in every partition for the switch's loads.

        The loads depend on the configuration chosen, so the room starts at those of the
        least-energy configuration and is raised once to what the chosen one loads; the
        switch is then analysed with its actual loads (``_plan_switch``), as any other.
        """
        for _ in range(2):
            admitted = self.planner.admit_partitioned(streams, mode, reserve_s=load_s)
            needed = self._loads(admitted)[1]
            if needed <= load_s:
                break
            load_s = needed
        return self._plan_switch(streams, mode, admitted=admitted)

    def _install(self, admitted: Admitted, streams: tuple[Served, ...]) -> None:
        self.dispatcher.configure(admitted.lanes)
        self.specs.update((served.spec.name, served.spec) for served in streams)
        self.admitted, self.served, self.mode = admitted, streams, admitted.mode

    def _request(self, streams: tuple[Served, ...], mode: str, reason: str) -> None:
        """Run steps 1 and 2 of the protocol; step 3 happens at the next idle tick."""
        check_count(len(streams), reason)
        with self.lock:
            self._queue(self._plan_switch(streams, mode), reason)

    def _queue(self, switch: _Switch, reason: str) -> None:
        """Make ``switch`` the pending one (lock held); it replaces any pending before it."""
        self._pending = switch
        self.switches.append({'reason': reason, 'requested_s': self.executor.now,
                              'effective_s': None, 'load_ms': 1e3 * switch.load_s})
        self.executor.kick()

    def set_mode(self, mode: str) -> None:
        """
        Reconfigure for ``mode``; ServingError (old configuration kept) if it cannot.

        The least-energy configuration of ``mode`` first.  If the analysis refuses the switch
        (its model loads, most often: they block every stream of a partition they touch),
        under partitioned dispatch the least-energy configuration that leaves every partition
        room for its own loads (``_roomy_switch``); then the target configuration re-tuned
        on its lanes (``Planner.in_place``: the running variants at the mode's thresholds,
        nothing to load and the same bounds; under partitioned dispatch another variant of
        the same width for a stream whose variant falls short of the new floor, its loads
        costed): a change to a mode whose floors are no higher than the running mode's is
        then always taken.  A refusal gives every reason and is remembered until the
        configuration changes: the energy manager re-publishes its mode every period, and
        each answer would otherwise cost the three searches again (tenths of a second of
        the node's time, each period).
        """
        if mode not in self.modes:
            raise ServingError(f'mode {mode!r} is not one of {self.modes}')
        with self.lock:
            refused = self._refused
            if (refused is not None and refused[0] == mode and refused[1] is self.admitted
                    and refused[2] is self._pending):
                raise refused[3]
            base = self._pending or _Switch(self.admitted, self.served, (), 0.0)
            streams, least = base.streams, None
            try:
                least = self._admit(streams, mode)
                self._queue(self._plan_switch(streams, mode, admitted=least), f'mode={mode}')
                return
            except ServingError as err:
                first, reasons = err, []
            # (the switch's tag in `switches`, what a refusal says was tried, the attempt)
            fallbacks = [('in place', 'on the running lanes', lambda: self._plan_switch(
                streams, mode, admitted=self.planner.in_place(base.admitted, streams, mode)))]
            if least is not None and self.pool.dispatch == 'partitioned':
                fallbacks.insert(0, ('room for loads', 'with room for its loads',
                                     lambda: self._roomy_switch(streams, mode,
                                                                self._loads(least)[1])))
            for tag, tried, plan in fallbacks:
                try:
                    self._queue(plan(), f'mode={mode} ({tag})')
                    return
                except ServingError as why:
                    reasons.append(f'nor {tried}: {why}')
            error = ServingError('; '.join([str(first), *reasons]), first.stream)
            self._refused = (mode, self.admitted, self._pending, error)
            raise error

    def add_stream(self, spec: StreamSpec) -> None:
        """Admit one more stream; ServingError names it and why, the others keep running."""
        if spec.name in self._names(self._target_streams()):
            raise ServingError(f'stream {spec.name}: already served')
        served = self._declare(spec)
        try:
            self._request((*self._target_streams(), served), self._target_mode(),
                          f'add {spec.name}')
        except ServingError as err:
            self.rejections[spec.name] = rejection(spec.name, err)
            raise ServingError(self.rejections[spec.name]) from err
        self.rejections.pop(spec.name, None)

    def replace_streams(self, specs: Sequence[StreamSpec], mode: Optional[str] = None) -> None:
        """
        Serve exactly ``specs`` from the next switch on: one admission, one switch.

        All or nothing: ServingError (naming the stream and the reason) keeps the streams
        that run now. Unlike a sequence of add_stream and remove_stream calls, no set in
        between has to be admissible, and the pool switches once.
        """
        names = [spec.name for spec in specs]
        if not names or len(set(names)) != len(names):
            raise ServingError(f'a stream set needs at least one stream and unique names, '
                               f'got {names}')
        mode = self._target_mode() if mode is None else mode
        if mode not in self.modes:
            raise ServingError(f'mode {mode!r} is not one of {self.modes}')
        self._request(tuple(self._declare(spec) for spec in specs), mode, 'streams replaced')

    def remove_stream(self, name: str) -> None:
        streams = tuple(s for s in self._target_streams() if s.spec.name != name)
        if len(streams) == len(self._target_streams()):
            raise ServingError(f'stream {name}: not served')
        if not streams:
            raise ServingError(f'stream {name}: the last stream cannot be removed')
        self._request(streams, self._target_mode(), f'remove {name}')

    def _target_streams(self) -> tuple[Served, ...]:
        return self._pending.streams if self._pending else self.served

    def _target_mode(self) -> str:
        return self._pending.admitted.mode if self._pending else self.mode

    @staticmethod
    def _names(streams: Sequence[Served]) -> set[str]:
        return {s.spec.name for s in streams}

    # -- frames ----------------------------------------------------------------------------

    def submit(self, stream: str, frame: Any, at: Optional[float] = None,
               frame_id: Any = None) -> None:
        """
        Release one frame of ``stream``: a uint8 image, or an exit index to replay.

        ``at`` is the camera's instant in virtual time (simulated devices only).
        """
        if stream not in self.accounts:
            raise ServingError(f'stream {stream}: not declared')
        if not isinstance(frame, (int, np.integer)):
            model = self.models[self.specs[stream].model]
            frame = fit_frame(np.asarray(frame), model.manifest.input)
        self.executor.submit(stream, frame, at, frame_id)

    def not_received(self, stream: str, count: int) -> None:
        """Record ``count`` frames of ``stream`` that were sent but never reached the server."""
        if stream not in self.accounts:
            raise ServingError(f'stream {stream}: not declared')
        with self.lock:
            for _ in range(count):
                self.accounts[stream].released += 1
                self._drop(stream, None, 'not_received', self.executor.now)

    def _served(self, name: str) -> Optional[Served]:
        return next((s for s in self.served if s.spec.name == name), None)

    def _release(self, stream: str, payload: Any, release_s: float, frame_id: Any) -> None:
        """Take one arriving frame (lock held): drop it with a reason or queue it for its tick."""
        account = self.accounts[stream]
        account.released += 1
        spec = self.specs[stream]
        last = self._last_release.get(stream)
        if self._served(stream) is None:
            return self._drop(stream, frame_id, 'not_admitted', release_s)
        if last is not None and release_s - last < spec.period_s * (1 - 1e-9):
            return self._drop(stream, frame_id, 'early', release_s)
        self._last_release[stream] = release_s
        job = GangJob(stream, next(self._seq), release_s,
                      ticks_up(release_s, self.pool.tick_s) if release_s > 0 else 0,
                      (payload, frame_id))
        self.executor.schedule_release(job)

    def _drop(self, stream: str, frame_id: Any, reason: str, release_s: float) -> None:
        self.accounts[stream].drop(reason)
        self._emit({'schema': RESULT_SCHEMA, 'stream': stream, 'frame': frame_id,
                    'status': 'dropped', 'reason': reason, 'release_s': release_s})

    # -- one tick (lock held; both executors call this) -----------------------------------

    def on_tick(self, tick: int, completions: Sequence[tuple[GangJob, JobOutcome]],
                releases: Sequence[GangJob], unreserve: bool) -> tuple[list[GangJob], Any]:
        """Process one tick: completions, a due switch, releases, then one dispatch."""
        for job, outcome in completions:
            self.dispatcher.complete(job)
            self._finish(job, outcome, tick)
        if unreserve:
            self.dispatcher.unreserve()
        switch = None
        if (self._pending is not None and not self.dispatcher.busy
                and not self.dispatcher.waiting):
            switch, self._pending = self._pending, None
            for name in self._names(self.served) - self._names(switch.streams):
                queue = self.dispatcher.pending.pop(name, None)
                for job in queue or ():
                    self._drop(name, job.payload[1], 'removed', job.release_s)
            self._install(switch.admitted, switch.streams)
            self.switches[-1]['effective_s'] = tick * self.pool.tick_s
            if switch.loads:
                self.dispatcher.reserve([device for device, _ in switch.loads])
        for job in releases:
            if job.stream in self.dispatcher.pending and self._served(job.stream):
                self.dispatcher.release(job)
            else:
                self._drop(job.stream, job.payload[1], 'not_admitted', job.release_s)
        return self.dispatcher.dispatch(tick, self._prefer), switch

    def execute(self, job: GangJob, start_s: float) -> JobOutcome:
        """Run a started job on its gang (any thread: a gang's devices are its own)."""
        plan = self.admitted.plans[job.stream]
        model = self._served(job.stream).model
        payload, frame_id = job.payload
        if self.exit_trace is not None and isinstance(payload, (int, np.integer)):
            payload = self.exit_trace(plan.point, int(payload))
        return run_job(plan, [self.devices[d] for d in job.gang], payload,
                       model.manifest.input, start_s, frame_id)

    def _prefer(self, stream: str, idle: Sequence[int]) -> list[int]:
        """Order a global job's gang: devices holding stage k's segments at position k."""
        plan = self.admitted.plans[stream]
        if plan.residency != SWAP:
            return list(idle)
        rest, chosen = list(idle), []
        for k in range(len(plan.stages)):
            wanted = keys(plan.stage_refs(k))
            match = next((d for d in rest if keys(self.devices[d].resident) == wanted), None)
            chosen.append(match)
            if match is not None:
                rest.remove(match)
        order = [d if d is not None else rest.pop(0) for d in chosen]
        return order + rest

    def _finish(self, job: GangJob, outcome: JobOutcome, tick: int) -> None:
        spec, account = self.specs[job.stream], self.accounts[job.stream]
        finish_s = job.start_tick * self.pool.tick_s + outcome.seconds
        response = finish_s - job.release_s
        bound = self.admitted.bound_s(job.stream)
        held = len(job.gang) * (tick - job.start_tick) * self.pool.tick_s
        self._held_s += held
        record = {'schema': RESULT_SCHEMA, 'stream': job.stream, 'frame': job.payload[1],
                  'status': 'failed' if outcome.error else 'ok', 'exit': outcome.exit_index,
                  'class_id': None if outcome.logits is None else int(np.argmax(outcome.logits)),
                  'release_s': job.release_s, 'start_s': job.start_tick * self.pool.tick_s,
                  'finish_s': finish_s, 'response_ms': 1e3 * response,
                  'bound_ms': 1e3 * bound, 'deadline_ms': 1e3 * spec.deadline_s,
                  'energy_j': outcome.energy_j, 'swaps': outcome.swaps,
                  'variant': self.admitted.plans[job.stream].point.label,
                  'width': len(job.gang), 'devices': list(job.gang), 'mode': self.mode,
                  'error': outcome.error}
        if outcome.error:
            account.drop('failed')
        else:
            account.complete(response, bound, spec.deadline_s, outcome.exit_index,
                             outcome.energy_j, outcome.swap_j, outcome.swaps, held)
        self._emit(record)

    def _emit(self, record: dict) -> None:
        if self.on_result is not None:
            self.on_result(record)

    # -- time ------------------------------------------------------------------------------

    def advance(self, until: float) -> None:
        """Let virtual time run to ``until`` seconds."""
        self.executor.advance(until)

    def drain(self, timeout: Optional[float] = None) -> None:
        """Run until every released frame has its result."""
        self.executor.drain(timeout)

    def close(self) -> None:
        self.executor.close()

    # -- reports ---------------------------------------------------------------------------

    def report(self) -> list[dict]:
        """Report one row per declared stream: counters, response vs bound, misses, energy."""
        with self.lock:
            elapsed = max(self.executor.now, _EPS)
            idle_w = self.devices[0].idle_power_w
            pool_idle_j = max(0.0, self.pool.tpus * elapsed - self._held_s) * idle_w
            rows = []
            for name, account in self.accounts.items():
                admitted = self.admitted is not None and name in self.admitted.plans
                row = {'stream': name, 'rate_hz': round(self.specs[name].rate_hz, 3),
                       'admitted': admitted, 'mode': self.mode,
                       'variant': self.admitted.plans[name].point.label if admitted else None,
                       'width': self.admitted.plans[name].width if admitted else None,
                       **account.summary(self.admitted.bound_s(name) if admitted else None,
                                         self.specs[name].deadline_s)}
                share = account.with_idle_share(pool_idle_j, self._held_s)
                row['energy_per_frame_with_idle_mj'] = None if share is None else round(
                    1e3 * share, 4)
                row['rejection'] = self.rejections.get(name, '')
                rows.append(row)
            return rows

    def diagnostics(self) -> dict:
        """Flat key/values for /diagnostics: one group per stream."""
        values = {'mode': self.mode, 'dispatch': self.pool.dispatch,
                  'rule': self.pool.rule.value, 'switches': len(self.switches)}
        for row in self.report():
            for key, value in row.items():
                if key != 'stream':
                    values[f'{row["stream"]}.{key}'] = value
        return values


class VirtualExecutor:
    """Discrete events on ticks in the caller's thread: fast and deterministic."""

    def __init__(self, server: StreamServer):
        self.server = server
        self.tick_s = server.pool.tick_s
        self.tick = 0
        self._events: list = []
        self._order = itertools.count()

    @property
    def now(self) -> float:
        return self.tick * self.tick_s

    def submit(self, stream: str, payload: Any, at: Optional[float], frame_id: Any) -> None:
        at = self.now if at is None else at
        if at < self.now - self.tick_s:
            raise ServingError(f'stream {stream}: frame at {at} s, before the clock '
                               f'({self.now} s)')
        self._run(ticks_up(at, self.tick_s) - 1 if at > 0 else -1)
        with self.server.lock:
            self.server._release(stream, payload, at, frame_id)

    def schedule_release(self, job: GangJob) -> None:
        heapq.heappush(self._events, (job.release_tick, 1, next(self._order), job, None))

    def advance(self, until: float) -> None:
        self._run(int(until / self.tick_s + _EPS))

    def drain(self, timeout: Optional[float] = None) -> None:
        while self._events:
            self._run(self._events[0][0])

    def kick(self) -> None:
        """Do nothing: a switch waits for the next tick with events, or the next advance."""

    def _run(self, last_tick: int) -> None:
        """Process every tick up to ``last_tick`` that has events."""
        server = self.server
        while self._events and self._events[0][0] <= last_tick:
            tick = self._events[0][0]
            completions, releases, unreserve = [], [], False
            while self._events and self._events[0][0] == tick:
                _, phase, _, job, outcome = heapq.heappop(self._events)
                if phase == 1:
                    releases.append(job)
                elif job is None:
                    unreserve = True
                else:
                    completions.append((job, outcome))
            self.tick = tick
            with server.lock:
                started, switch = server.on_tick(tick, completions, releases, unreserve)
            if switch is not None and switch.loads:
                load_s = max(server.devices[d].load(target).seconds for d, target in switch.loads)
                heapq.heappush(self._events, (tick + ticks_up(load_s, self.tick_s), 0,
                                              next(self._order), None, None))
            for job in started:
                outcome = server.execute(job, tick * self.tick_s)
                end = ticks_up(tick * self.tick_s + outcome.seconds, self.tick_s)
                heapq.heappush(self._events, (end, 0, next(self._order), job, outcome))
        self.tick = max(self.tick, last_tick)
        if self.server._pending is not None and not self._events:
            # An idle pool with a switch waiting: take it at this tick.
            with server.lock:
                _, switch = server.on_tick(self.tick, [], [], False)
            if switch is not None and switch.loads:
                load_s = max(server.devices[d].load(target).seconds for d, target in switch.loads)
                heapq.heappush(self._events, (self.tick + ticks_up(load_s, self.tick_s), 0,
                                              next(self._order), None, None))

    def close(self) -> None:
        """Nothing runs in the background."""


class WallClockExecutor:
    """
    Wall-clock time: one dispatcher thread acting on tick boundaries, one thread per job.

    Events are latched to the tick at which the dispatcher sees them, as in virtual time;
    the simulated devices sleep out their modelled times. Python's scheduling jitter is not in
    the analysis, so observed responses are measured, not guaranteed, here.
    """

    def __init__(self, server: StreamServer):
        self.server = server
        self.tick_s = server.pool.tick_s
        self._t0 = time.perf_counter()
        self._cond = threading.Condition(server.lock)
        self._events: list = []  # (real time, phase, order, job, outcome)
        self._order = itertools.count()
        self._running = 0
        self._stopping = False
        self._thread = threading.Thread(target=self._loop, daemon=True, name='serving-dispatch')
        self._thread.start()

    @property
    def now(self) -> float:
        return time.perf_counter() - self._t0

    def submit(self, stream: str, payload: Any, at: Optional[float], frame_id: Any) -> None:
        if at is not None:
            raise ServingError('at= sets a virtual instant; these devices run in wall time')
        with self._cond:
            self.server._release(stream, payload, self.now, frame_id)

    def schedule_release(self, job: GangJob) -> None:
        self._push(job.release_s, 1, job, None)

    def _push(self, when: float, phase: int, job, outcome) -> None:
        with self._cond:
            heapq.heappush(self._events, (when, phase, next(self._order), job, outcome))
            self._cond.notify_all()

    def kick(self) -> None:
        self._push(self.now, 0, None, 'kick')

    def advance(self, until: float) -> None:
        raise ServingError('advance() is for virtual time; these devices run in wall time')

    def drain(self, timeout: Optional[float] = None) -> None:
        with self._cond:
            done = self._cond.wait_for(lambda: not self._events and not self._running
                                       and not self.server.dispatcher.waiting, timeout)
        if not done:
            raise TimeoutError(f'frames still being served after {timeout} s')

    def _loop(self) -> None:
        server = self.server
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._events or self._stopping)
                if self._stopping:
                    return
                first = self._events[0][0]
            tick = ticks_up(max(first, self.now), self.tick_s)
            delay = tick * self.tick_s - self.now
            if delay > 0:
                time.sleep(delay)
            with self._cond:
                completions, releases, unreserve = [], [], False
                while self._events and self._events[0][0] <= tick * self.tick_s + _EPS:
                    _, phase, _, job, outcome = heapq.heappop(self._events)
                    if phase == 1:
                        releases.append(job)
                    elif job is None:
                        unreserve = unreserve or outcome == 'loaded'
                    else:
                        completions.append((job, outcome))
                started, switch = server.on_tick(tick, completions, releases, unreserve)
                self._running += len(started) + bool(switch and switch.loads)
                self._cond.notify_all()
            if switch is not None and switch.loads:
                threading.Thread(target=self._load, args=(switch,), daemon=True).start()
            for job in started:
                threading.Thread(target=self._work, args=(job,), daemon=True).start()

    def _load(self, switch) -> None:
        workers = [threading.Thread(target=self.server.devices[d].load, args=(target,))
                   for d, target in switch.loads]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        with self._cond:
            self._running -= 1
        self._push(self.now, 0, None, 'loaded')

    def _work(self, job: GangJob) -> None:
        outcome = self.server.execute(job, job.start_tick * self.tick_s)
        # The job ends now; measure its time on the wall clock, not the model.
        held = max(outcome.seconds, self.now - job.start_tick * self.tick_s)
        outcome = replace(outcome, seconds=held)
        with self._cond:
            self._running -= 1
        self._push(job.start_tick * self.tick_s + held, 0, job, outcome)

    def close(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        self._thread.join()
