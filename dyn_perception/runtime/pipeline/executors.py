"""
Three ways to drive the engine: a discrete-event simulation in virtual time, threads, inline.

``VirtualExecutor`` runs in the caller's thread. When a device starts a task the real work is
done at once (LiteRT computes the results) and its completion is scheduled at the modelled
time; events are processed in time order (ties in the order they were scheduled), so a run is
deterministic and as fast as the computation alone. ``ThreadedExecutor`` gives every device a
worker thread and lets time pass for real: LiteRT releases the GIL while it computes, so
devices on different cores run in parallel, and a simulated TPU in wall-clock mode sleeps out
its modelled time. ``InlineExecutor`` serves a single wall-clock device from the submitting
thread: with one device nothing runs in parallel, and a worker thread would only add two
thread switches per frame (about a millisecond on a busy 2-core host, measured through the
perception node). All hand the same tasks to the same ``execute`` and report to the same
engine, under one lock.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from typing import Optional

from dyn_perception.runtime.pipeline.engine import (
    Engine, execute, Job, load, LoadTask, PipelineError, RunTask
)


class VirtualExecutor:
    """Discrete-event simulation of the devices' modelled time (see the module docstring)."""

    def __init__(self, engine: Engine):
        self.engine = engine
        self.lock = threading.Condition(threading.RLock())  # Pipeline.close notifies on it
        self.now = 0.0
        self._events: list = []
        self._order = itertools.count()
        self._dispatch()

    def submit(self, job: Job, at: Optional[float]) -> None:
        """Admit ``job`` arriving at virtual time ``at`` (default: now); block while full."""
        if at is not None:
            if at < self.now - 1e-12:
                raise ValueError(f'frame submitted at {at} s, before the virtual clock '
                                 f'({self.now} s)')
            self._advance(at)
        job.submitted_s = self.now
        while not self.engine.admit(job, self.now):
            if not self._events:
                raise PipelineError('input queue full and no device working: cannot progress')
            self._step()
        self._dispatch()

    def advance(self, until: float) -> None:
        """Process every event up to virtual time ``until`` and move the clock there."""
        self._advance(until)

    def _advance(self, until: float) -> None:
        while self._events and self._events[0][0] <= until:
            self._step()
        self.now = max(self.now, until)

    def drain(self, timeout: Optional[float] = None) -> None:
        """Run until every submitted frame has its result (``timeout`` does not apply)."""
        with self.lock:
            while self._events:
                self._step()
            if not self.engine.all_resolved:
                raise PipelineError('frames remain but no device is working')

    def kick(self) -> None:
        """Start whatever a configuration change made possible."""
        self._dispatch()

    def _step(self) -> None:
        when, _, task, outcome, error = heapq.heappop(self._events)
        self.now = when
        if isinstance(task, LoadTask):
            self.engine.finish_load(task, outcome, error, self.now)
        else:
            self.engine.finish_run(task, outcome, self.now)
        self._dispatch()

    def _dispatch(self) -> None:
        for task in self.engine.dispatch(self.now):
            device = self.engine.devices[task.device]
            if isinstance(task, LoadTask):
                report, error = load(device, task)
                self._schedule(self.now + (report.seconds if report else 0.0), task, report,
                               error)
            else:
                outcome = execute(device, task, self.engine.input_spec, self.now)
                self._schedule(self.now + outcome.seconds, task, outcome, None)

    def _schedule(self, when: float, task, outcome, error) -> None:
        heapq.heappush(self._events, (when, next(self._order), task, outcome, error))

    def close(self) -> None:
        """Nothing runs in the background in virtual time."""


class _WallClockExecutor:
    """What the inline and threaded executors share: wall-clock time, admission, the lock."""

    def __init__(self, engine: Engine, lock: threading.Condition):
        self.engine = engine
        self.lock = lock
        self._t0 = time.perf_counter()

    @property
    def now(self) -> float:
        return time.perf_counter() - self._t0

    def submit(self, job: Job, at: Optional[float]) -> None:
        if at is not None:
            raise ValueError('at= sets a virtual arrival time; these devices run in wall time')
        with self.lock:
            job.submitted_s = self.now
            self._admit(job)
            self.kick()

    def _admit(self, job: Job) -> None:
        raise NotImplementedError

    def kick(self) -> None:
        """Start whatever a new frame or a configuration change made possible (lock held)."""
        raise NotImplementedError


class InlineExecutor(_WallClockExecutor):
    """One wall-clock device; each frame runs to completion inside ``submit``."""

    def __init__(self, engine: Engine):
        super().__init__(engine, threading.Condition(threading.RLock()))
        with self.lock:
            self._run()

    def _admit(self, job: Job) -> None:
        if not self.engine.admit(job, self.now):
            raise PipelineError('input queue full although no frame is running')

    def _run(self) -> None:
        """Run every task the engine hands out until it has none (lock held)."""
        while True:
            tasks = self.engine.dispatch(self.now)
            if not tasks:
                break
            for task in tasks:
                device = self.engine.devices[task.device]
                if isinstance(task, RunTask):
                    outcome = execute(device, task, self.engine.input_spec, self.now)
                    self.engine.finish_run(task, outcome, self.now)
                else:
                    report, error = load(device, task)
                    self.engine.finish_load(task, report, error, self.now)
        self.lock.notify_all()

    def drain(self, timeout: Optional[float] = None) -> None:
        """Nothing is ever left running between calls."""
        with self.lock:
            if not self.engine.all_resolved:
                raise PipelineError('frames remain but no device is working')

    def kick(self) -> None:
        self._run()

    def close(self) -> None:
        """Nothing runs in the background."""


class ThreadedExecutor(_WallClockExecutor):
    """One worker thread per device, wall-clock time (see the module docstring)."""

    def __init__(self, engine: Engine):
        super().__init__(engine, threading.Condition())
        self._mail: list = [None] * len(engine.devices)
        self._stopping = False
        self._workers = [threading.Thread(target=self._work, args=(i,), daemon=True,
                                          name=f'pipeline-{device.name}')
                         for i, device in enumerate(engine.devices)]
        for worker in self._workers:
            worker.start()
        with self.lock:
            self._dispatch()

    def _admit(self, job: Job) -> None:
        while not self.engine.admit(job, self.now):
            self.lock.wait()

    def drain(self, timeout: Optional[float] = None) -> None:
        """Wait until every submitted frame has its result."""
        with self.lock:
            if not self.lock.wait_for(lambda: self.engine.all_resolved, timeout):
                raise TimeoutError(f'frames still in the pipeline after {timeout} s')

    def _dispatch(self) -> None:
        for task in self.engine.dispatch(self.now):
            self._mail[task.device] = task
        self.lock.notify_all()

    def kick(self) -> None:
        self._dispatch()

    def _work(self, i: int) -> None:
        device = self.engine.devices[i]
        while True:
            with self.lock:
                self.lock.wait_for(lambda: self._mail[i] is not None or self._stopping)
                if self._mail[i] is None:
                    return
                task, self._mail[i] = self._mail[i], None
            if isinstance(task, RunTask):
                outcome = execute(device, task, self.engine.input_spec, self.now)
                with self.lock:
                    self.engine.finish_run(task, outcome, self.now)
                    self._dispatch()
                continue
            report, error = load(device, task)
            with self.lock:
                self.engine.finish_load(task, report, error, self.now)
                self._dispatch()

    def close(self) -> None:
        """Let every worker finish its current task and stop."""
        with self.lock:
            self._stopping = True
            self.lock.notify_all()
        for worker in self._workers:
            worker.join()
