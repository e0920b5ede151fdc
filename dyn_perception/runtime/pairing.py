"""
Pair camera frames with their ground truth by stamp, in arrival order.

A labelled replay publishes the true class on its own topic; the two messages may arrive in
either order. This is message_filters' exact-time policy (not installable here): a frame
waits at most ``wait_s`` for its label while labels are flowing, and frames leave in the
order they came, labelled or not. ``labels_expected`` (for a node: does any publisher of the
label topic exist?) makes frames wait from the very first one, before any label has come.
"""

from __future__ import annotations

from collections import deque, OrderedDict
from dataclasses import dataclass
from typing import Any, Callable, Hashable, Optional


@dataclass
class _Waiting:
    key: Hashable
    frame: Any
    deadline: float
    label: Optional[int] = None


class StampPairing:
    """Release ``(frame, label or None)`` pairs to ``on_pair`` in frame arrival order."""

    def __init__(self, on_pair: Callable[[Any, Hashable, Optional[int]], None],
                 wait_s: float = 0.1, labels_kept: int = 256, quiet_s: float = 1.0,
                 labels_expected: Callable[[], bool] = lambda: False):
        self.on_pair = on_pair
        self.labels_expected = labels_expected
        self.wait_s, self.quiet_s = wait_s, quiet_s
        self.waiting: deque[_Waiting] = deque()
        self.labels: OrderedDict = OrderedDict()
        self.labels_kept = labels_kept
        self.last_label_at = float('-inf')

    def add_label(self, key: Hashable, label: int, now: float) -> None:
        self.last_label_at = now
        for entry in self.waiting:
            if entry.key == key:
                entry.label = label
                break
        else:
            self.labels[key] = label
            while len(self.labels) > self.labels_kept:
                self.labels.popitem(last=False)
        self.release(now)

    def add_frame(self, key: Hashable, frame: Any, now: float) -> None:
        label = self.labels.pop(key, None)
        waits = label is None and (now - self.last_label_at <= self.quiet_s
                                   or self.labels_expected())
        deadline = now + self.wait_s if waits else now
        self.waiting.append(_Waiting(key, frame, deadline, label))
        self.release(now)

    def release(self, now: float) -> None:
        """Hand on every frame at the head that has its label or has waited long enough."""
        while self.waiting and (self.waiting[0].label is not None
                                or self.waiting[0].deadline <= now):
            entry = self.waiting.popleft()
            self.on_pair(entry.frame, entry.key, entry.label)
