"""
Per-stream accounting: jobs, drops with reasons, exits, response times against bounds, energy.

Energy per frame counts what the stream's jobs made the pool spend: active time of their
segment invocations, their swaps, and the idle power of the gang devices they held while
another device of the gang worked. The pool's idle devices (held by no job) are a cost of the
pool; ``with_idle_share`` spreads it over the streams in proportion to the device time they held.
"""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

# Bounded window for percentiles: statistics must not grow with the stream's length.
_WINDOW = 4096


@dataclass
class StreamAccount:
    """Running counters of one stream."""

    name: str
    released: int = 0
    completed: int = 0
    dropped: Counter = field(default_factory=Counter)
    exits: Counter = field(default_factory=Counter)
    misses: int = 0
    swaps: int = 0
    energy_j: float = 0.0
    swap_j: float = 0.0
    held_device_s: float = 0.0
    max_response_s: float = 0.0
    # Largest observed response / analysed bound of the configuration it ran under.
    max_over_bound: float = 0.0
    responses: deque = field(default_factory=lambda: deque(maxlen=_WINDOW))

    def complete(self, response_s: float, bound_s: float, deadline_s: float, exit_index: int,
                 energy_j: float, swap_j: float, swaps: int, held_device_s: float) -> None:
        self.completed += 1
        self.exits[exit_index] += 1
        self.misses += response_s > deadline_s * (1 + 1e-12)
        self.energy_j += energy_j
        self.swap_j += swap_j
        self.swaps += swaps
        self.held_device_s += held_device_s
        self.max_response_s = max(self.max_response_s, response_s)
        self.max_over_bound = max(self.max_over_bound, response_s / bound_s)
        self.responses.append(response_s)

    def drop(self, reason: str) -> None:
        self.dropped[reason] += 1

    @property
    def p99_response_s(self) -> Optional[float]:
        return float(np.percentile(self.responses, 99)) if self.responses else None

    @property
    def energy_per_frame_j(self) -> Optional[float]:
        return self.energy_j / self.completed if self.completed else None

    def with_idle_share(self, pool_idle_j: float, total_held_s: float) -> Optional[float]:
        """Energy per frame with the pool's idle energy shared by held device time."""
        if not self.completed:
            return None
        share = pool_idle_j * self.held_device_s / total_held_s if total_held_s > 0 else 0.0
        return (self.energy_j + share) / self.completed

    def summary(self, bound_s: Optional[float], deadline_s: float) -> dict:
        """Flat key/values for a result table or /diagnostics."""
        p99 = self.p99_response_s
        return {
            'released': self.released, 'completed': self.completed,
            'dropped': sum(self.dropped.values()),
            'dropped_reasons': ' '.join(f'{k}={v}' for k, v in sorted(self.dropped.items())),
            'exit_histogram': ' '.join(str(self.exits.get(i, 0))
                                       for i in range(max(self.exits, default=-1) + 1)),
            'response_max_ms': round(1e3 * self.max_response_s, 3),
            'response_p99_ms': None if p99 is None else round(1e3 * p99, 3),
            'bound_ms': None if bound_s is None else round(1e3 * bound_s, 3),
            'deadline_ms': round(1e3 * deadline_s, 3),
            'max_over_bound': round(self.max_over_bound, 4),
            'misses': self.misses, 'swaps': self.swaps,
            'energy_per_frame_mj': None if not self.completed
            else round(1e3 * self.energy_j / self.completed, 4),
        }
