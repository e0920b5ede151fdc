"""
Pair camera frames with their ground truth by stamp, in arrival order.

A labelled replay publishes the true class on its own topic; the two messages may arrive in
either order. This is message_filters' exact-time policy (not installable here): a frame
waits at most ``wait_s`` for its label while labels are flowing, and frames leave in the
order they came, labelled or not. ``labels_expected`` (for a node: does any publisher of the
label topic exist?) makes frames wait from the very first one, before any label has come.
A label publisher that stays silent through one whole wait (it exists but sends nothing)
stops the waiting: frames pass straight on until a label comes
again, so an idle publisher costs one wait, not one per frame.

``parse_label`` reads the replay's label message; anything it refuses is one malformed
label, never an error that stops the node.
"""

from __future__ import annotations

from collections import deque, OrderedDict
from dataclasses import dataclass
import json
from typing import Any, Callable, Hashable, Optional

# ROS time: builtin_interfaces/Time is int32 seconds and uint32 nanoseconds below 1e9.
_SEC_RANGE = (-2**31, 2**31 - 1)
_NANOSEC_RANGE = (0, 10**9 - 1)


def _integer(value: Any, low: int, high: int, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f'{what} must be an integer in {low}..{high}, got {value!r}')
    return value


def parse_label(text: str, num_classes: int) -> tuple[tuple[int, int], int]:
    """
    Read ``{"stamp": [sec, nanosec], "class_id": k}``; ValueError says what is wrong.

    Only exact integers pass (JSON ``1e999`` is infinity, ``[[1], [2]]`` a list of lists):
    a label must be hashable with its stamp and name one of the model's classes.
    """
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as err:
        raise ValueError(f'not JSON: {err}') from None
    if not isinstance(data, dict) or 'stamp' not in data or 'class_id' not in data:
        raise ValueError('expected an object with "stamp" and "class_id"')
    stamp = data['stamp']
    if not isinstance(stamp, list) or len(stamp) != 2:
        raise ValueError(f'stamp must be [sec, nanosec], got {stamp!r}')
    sec = _integer(stamp[0], *_SEC_RANGE, 'stamp sec')
    nanosec = _integer(stamp[1], *_NANOSEC_RANGE, 'stamp nanosec')
    return (sec, nanosec), _integer(data['class_id'], 0, num_classes - 1, 'class_id')


@dataclass
class _Waiting:
    key: Hashable
    frame: Any
    arrived: float
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
        self.silent = False  # a wait ran out with no label since: do not wait again

    def add_label(self, key: Hashable, label: int, now: float) -> None:
        self.last_label_at = now
        self.silent = False
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
        waits = label is None and not self.silent and (
            now - self.last_label_at <= self.quiet_s or self.labels_expected())
        deadline = now + self.wait_s if waits else now
        self.waiting.append(_Waiting(key, frame, now, deadline, label))
        self.release(now)

    def release(self, now: float) -> None:
        """Hand on every frame at the head that has its label or has waited long enough."""
        while self.waiting and (self.waiting[0].label is not None
                                or self.waiting[0].deadline <= now):
            entry = self.waiting.popleft()
            if entry.label is None and entry.deadline > entry.arrived:
                self.silent = True  # waited in vain
            self.on_pair(entry.frame, entry.key, entry.label)
