"""
The energy manager's mode policy: charge and CPU load in, the operating mode out.

Each mode may run while the state of charge is at or above its bound (``min_charge``); a high
CPU load takes one mode more frugal, to leave the CPU to others: with mode costs, the next
more frugal one that uses less of the host's CPU (``ModeCost.host_cpu``), since a mode that
runs the model on a host core frees the TPUs but loads the CPU more than one that drives them.
Readings are noisy and a mode switch is not free (a model swap on a TPU takes time and energy,
and frames wait or drop meanwhile), so the policy is deliberate about switching:

- Charge and load are smoothed (exponential, time constants ``charge_tau_s``, ``load_tau_s``).
- Both have a hysteresis band: stepping back up needs the charge to clear the mode's bound by
  ``hysteresis``; the load counts as high above ``cpu_load_high`` and as normal again only
  below ``cpu_load_high - load_hysteresis``.
- A step down needs its condition to persist for ``down_persist_s``; any switch needs the
  current mode to have been held for ``min_dwell_s`` (a floor).
- With each mode's cost known (:class:`ModeCost`: perception power, accuracy, swap), a switch
  must pay for itself: the policy predicts how long the new mode would hold (from the measured
  discharge rate, scaled to the new mode's power, and the next bound) and steps down only when
  the energy saved over that time exceeds the swap's energy, up only when the frames gained in
  accuracy exceed those the swap loses. A step down that does not pay skips to a more frugal
  mode that does (it would be left again almost at once), and to the last mode when none does.
- With mode costs and ``max_mean_loss`` (accuracy points) set, the run's mean accuracy loss
  is a budget: a step down is taken only into a mode that, held until the battery is empty,
  keeps the mean since the start within it; when the mode the bounds call for does not, the
  most frugal one between that does is taken, or none. A mode's loss is its calibrated upper
  confidence bound (``ModeCost.loss_bound``, against the unpruned network's final exit, the
  reference of every mode's own budget) where known: a budget spent on validation point
  estimates is broken about half the time by their sampling error alone. Without a bound,
  the point estimate against the first mode.
  The bounds still decide when to step down; the budget decides how far. Without it a
  discharge spends its last, longest part in the most frugal mode whatever that loses.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
import math
from typing import Mapping, Optional


@dataclass(frozen=True)
class PolicyConfig:
    """
    Mode bounds, most capable mode first, and how deliberately to switch.

    ``min_charge[i]`` is the state of charge (0-1) at or above which mode ``i`` may run; the
    last mode's bound is 0 (it always may). ``cpu_load_high`` is the host load (0-1) above
    which the policy steps one mode down. ``fps`` converts the swap's lost time into frames.
    """

    modes: tuple[str, ...] = ('performance', 'balanced', 'eco', 'critical')
    min_charge: tuple[float, ...] = (0.6, 0.35, 0.15, 0.0)
    cpu_load_high: float = 0.9
    hysteresis: float = 0.05
    min_dwell_s: float = 5.0
    load_hysteresis: float = 0.1
    down_persist_s: float = 2.0
    charge_tau_s: float = 2.0
    load_tau_s: float = 5.0
    rate_window_s: float = 20.0
    fps: float = 30.0
    max_mean_loss: Optional[float] = None  # accuracy points; None: no budget

    def __post_init__(self) -> None:
        problems = []
        if not self.modes or len(set(self.modes)) != len(self.modes):
            problems.append('modes must be unique and not empty')
        if len(self.min_charge) != len(self.modes):
            problems.append(f'min_charge needs one bound per mode ({len(self.modes)})')
        elif list(self.min_charge) != sorted(self.min_charge, reverse=True):
            problems.append('min_charge must decrease from the first mode to the last')
        elif not all(0.0 <= c <= 1.0 for c in self.min_charge) or self.min_charge[-1] != 0.0:
            problems.append('min_charge values must be in [0, 1] and the last one 0')
        if not 0.0 < self.cpu_load_high <= 1.0:
            problems.append('cpu_load_high must be in (0, 1]')
        if not 0.0 <= self.load_hysteresis < self.cpu_load_high:
            problems.append('load_hysteresis must be in [0, cpu_load_high)')
        if not 0.0 <= self.hysteresis < 1.0:
            problems.append('hysteresis must be in [0, 1)')
        for name in ('min_dwell_s', 'down_persist_s', 'charge_tau_s', 'load_tau_s'):
            if not getattr(self, name) >= 0:
                problems.append(f'{name} must be >= 0')
        if not self.rate_window_s > 0 or not self.fps > 0:
            problems.append('rate_window_s and fps must be > 0')
        if self.max_mean_loss is not None and not self.max_mean_loss >= 0:
            problems.append('max_mean_loss must be >= 0 (or None: no budget)')
        if problems:
            raise ValueError('bad energy policy: ' + '; '.join(problems))


@dataclass(frozen=True)
class ModeCost:
    """
    What running one mode costs and gives, and what switching into it costs.

    ``power_w``: perception's mean power in the mode (devices and host share, at the frame
    rate); ``accuracy``: expected (0-1); ``swap_s`` / ``swap_energy_j``: loading its segments
    onto its ``tpus`` powered TPUs, frames wait or drop meanwhile; ``wake_s`` /
    ``wake_energy_j``: what each TPU that must be powered on for it adds; ``loss_bound``: the
    upper confidence bound (0-1) of its accuracy loss against the unpruned network's final
    exit, from the calibration (None: unknown); ``host_cpu``: the host CPU it takes, in cores
    (busy seconds per second; None: unknown).
    """

    power_w: float
    accuracy: float
    swap_s: float = 0.0
    swap_energy_j: float = 0.0
    tpus: int = 1
    wake_s: float = 0.0
    wake_energy_j: float = 0.0
    loss_bound: Optional[float] = None
    host_cpu: Optional[float] = None

    def swap_from(self, other: 'ModeCost') -> tuple[float, float]:
        """Return (seconds, joules) of switching into this mode from ``other``."""
        woken = max(self.tpus - other.tpus, 0)
        return (self.swap_s + (self.wake_s if woken else 0.0),
                self.swap_energy_j + woken * self.wake_energy_j)


class ModePolicy:
    """Pick a mode from charge and CPU load (see the module docstring); a pure state machine."""

    def __init__(self, config: PolicyConfig, start_mode: Optional[str] = None,
                 costs: Optional[Mapping[str, ModeCost]] = None,
                 capacity_j: Optional[float] = None):
        self.config = config
        if start_mode is not None and start_mode not in config.modes:
            raise ValueError(f'unknown mode {start_mode!r}; known: {", ".join(config.modes)}')
        missing = [m for m in config.modes if costs is not None and m not in costs]
        if missing:
            raise ValueError(f'mode costs missing for {missing}')
        self.index = config.modes.index(start_mode) if start_mode else 0
        self.costs = dict(costs) if costs is not None else None
        self.capacity_j = capacity_j
        self.since: Optional[float] = None
        self.charge: Optional[float] = None  # smoothed; None until a reading came
        self.load: Optional[float] = None  # smoothed
        self.load_high = False
        self.switches = 0
        self.reason = 'start'
        self._seen: dict[str, float] = {}
        self._down_since: Optional[float] = None
        self._history: deque = deque()  # (t, smoothed charge) over rate_window_s
        self.run_s = 0.0  # time decided over, and its expected accuracy loss x seconds
        self.loss_s = 0.0
        self._decided: Optional[float] = None

    @property
    def mode(self) -> str:
        return self.config.modes[self.index]

    # -- observations --------------------------------------------------------------------

    def _smooth(self, key: str, old: Optional[float], value: float, tau: float,
                now: float) -> float:
        last = self._seen.get(key)
        self._seen[key] = now
        if old is None or last is None or tau <= 0:
            return value
        weight = 1.0 - math.exp(-max(now - last, 0.0) / tau)
        return old + weight * (value - old)

    def observe_charge(self, now: float, charge: float) -> None:
        """Feed one valid state of charge (0-1)."""
        self.charge = self._smooth('charge', self.charge, charge, self.config.charge_tau_s, now)
        self._history.append((now, self.charge))
        while now - self._history[0][0] > self.config.rate_window_s:
            self._history.popleft()

    def observe_load(self, now: float, load: float) -> None:
        """Feed one valid CPU load (0-1); the high/normal latch moves at the band's edges."""
        self.load = self._smooth('load', self.load, load, self.config.load_tau_s, now)
        if self.load > self.config.cpu_load_high:
            self.load_high = True
        elif self.load < self.config.cpu_load_high - self.config.load_hysteresis:
            self.load_high = False

    # -- predictions ---------------------------------------------------------------------

    def discharge_rate(self) -> Optional[float]:
        """Return the charge lost per second (smoothed, over the window); None when unknown."""
        if len(self._history) < 2:
            return None
        (t0, c0), (t1, c1) = self._history[0], self._history[-1]
        if t1 - t0 < 0.25 * self.config.rate_window_s:
            return None
        return (c0 - c1) / (t1 - t0)

    def _rate_in(self, index: int) -> Optional[float]:
        """Predict the discharge rate in mode ``index`` from the rate measured in this one."""
        rate = self.discharge_rate()
        if rate is None or self.costs is None:
            return rate
        now_w = self.costs[self.mode].power_w
        new_w = self.costs[self.config.modes[index]].power_w
        if self.capacity_j:  # the rest of the robot's draw stays; perception's changes
            return rate + (new_w - now_w) / self.capacity_j
        return rate * new_w / now_w if now_w > 0 else rate

    def hold_s(self, index: int) -> float:
        """Predict how long mode ``index`` would hold before the charge reaches its bound."""
        rate = self._rate_in(index)
        if rate is None or rate <= 0 or self.charge is None:
            return math.inf
        return max(self.charge - self.config.min_charge[index], 0.0) / rate

    def loss(self, index: int) -> float:
        """Give what the budget charges a mode (0-1): its loss bound if known, else its point."""
        if self.costs is None:
            return 0.0
        cost = self.costs[self.config.modes[index]]
        if cost.loss_bound is not None:
            return max(cost.loss_bound, 0.0)
        return max(self.costs[self.config.modes[0]].accuracy - cost.accuracy, 0.0)

    def within_budget(self, index: int) -> bool:
        """Tell whether holding mode ``index`` until empty keeps the run's mean loss in budget."""
        budget = self.config.max_mean_loss
        if budget is None or self.costs is None:
            return True
        rate = self._rate_in(index)
        if rate is None or rate <= 0 or self.charge is None:
            return True  # no prediction yet: the bounds alone decide
        rest = max(self.charge, 0.0) / rate
        mean = (self.loss_s + rest * self.loss(index)) / max(self.run_s + rest, 1e-9)
        return mean <= budget / 100.0 + 1e-12

    def pays(self, index: int) -> bool:
        """Tell whether switching to mode ``index`` saves more than the swap costs."""
        if self.costs is None or index == self.index:
            return True
        new, now = self.costs[self.config.modes[index]], self.costs[self.mode]
        hold = self.hold_s(index)
        swap_s, swap_j = new.swap_from(now)
        if index > self.index:  # more frugal: energy saved against the swap's energy
            return (now.power_w - new.power_w) * hold > swap_j
        # more capable: correct frames gained against the correct frames the swap loses
        return (new.accuracy - now.accuracy) * hold > now.accuracy * swap_s

    # -- decision ------------------------------------------------------------------------

    def target(self, charge: float, load_high: bool) -> int:
        """Return the mode index the charge and load call for, ignoring hysteresis."""
        bounds = self.config.min_charge
        index = next((i for i, bound in enumerate(bounds) if charge >= bound), len(bounds) - 1)
        if not load_high:
            return index
        cpu = [None if self.costs is None else self.costs[m].host_cpu for m in self.config.modes]
        if cpu[index] is None:
            return min(index + 1, len(bounds) - 1)
        # The first more frugal mode that leaves the CPU more; none: the charge's own.
        return next((i for i in range(index + 1, len(bounds))
                     if cpu[i] is not None and cpu[i] < cpu[index]), index)

    def update(self, now: float, charge: Optional[float] = None,
               cpu_load: Optional[float] = None) -> str:
        """Feed what was read (None: nothing new), decide; return the mode to run."""
        if charge is not None:
            self.observe_charge(now, charge)
        if cpu_load is not None:
            self.observe_load(now, cpu_load)
        return self.decide(now)

    def decide(self, now: float) -> str:
        """Switch if the smoothed readings call for it, long enough and worth the swap."""
        if self.since is None:
            self.since = now
        if self._decided is not None and now > self._decided:
            self.run_s += now - self._decided
            self.loss_s += (now - self._decided) * self.loss(self.index)
        self._decided = now
        if self.charge is None:
            self.reason = 'no charge reading yet: holding the start mode'
            return self.mode
        wanted = self.target(self.charge, self.load_high)
        dwelt = now - self.since >= self.config.min_dwell_s
        if wanted > self.index:
            if self._down_since is None:
                self._down_since = now
            if dwelt and now - self._down_since >= self.config.down_persist_s:
                last = len(self.config.modes) - 1
                chosen = next((i for i in range(wanted, last + 1) if self.pays(i)), last)
                allowed = [i for i in range(self.index + 1, chosen + 1) if self.within_budget(i)]
                if allowed and allowed[-1] == chosen:
                    self._switch(chosen, now, 'charge or load fell below the bound')
                elif allowed:
                    self._switch(allowed[-1], now, 'below the bound; the accuracy budget '
                                 'stops the step short')
                else:
                    self.reason = 'below the bound, but the accuracy budget forbids a step down'
            return self.mode
        self._down_since = None
        cleared = max(self.target(self.charge - self.config.hysteresis, self.load_high), wanted)
        if cleared < self.index and dwelt:
            chosen = next((i for i in range(cleared, self.index) if self.pays(i)), None)
            if chosen is not None:
                self._switch(chosen, now, 'charge cleared the bound')
            else:
                self.reason = 'a step up would not pay for its swap'
        return self.mode

    def _switch(self, index: int, now: float, why: str) -> None:
        self.reason = f'{self.mode} -> {self.config.modes[index]}: {why}'
        self.index, self.since, self._down_since = index, now, None
        self.switches += 1
