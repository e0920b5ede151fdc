"""
Frames a publisher sent that never reached this node, counted from its sequence numbers.

A live camera's images travel with a short history, so that a reader that falls behind gets
the newest frames: a frame can be overwritten in DDS before the node takes it, and the node
never sees it. Each publisher numbers what it sends (``publication_sequence_number`` in
rclpy's ``MessageInfo``), so a jump from one number to the next counts the frames between.
A publisher's first frame here sets its base: what it sent before this node listened was not
lost.
"""

from __future__ import annotations

from typing import Any, Hashable, Mapping, Optional


class SequenceGaps:
    """The last sequence number seen per publisher, and the gaps since."""

    def __init__(self):
        self._last: dict[Hashable, int] = {}
        self.missed_total = 0

    def missed(self, publisher: Hashable, sequence: Optional[int]) -> int:
        """Return how many of ``publisher``'s frames before ``sequence`` never arrived."""
        if sequence is None:  # a middleware that does not number its samples
            return 0
        last = self._last.get(publisher)
        if last is not None and sequence <= last:  # a restarted publisher, or a repeat
            return 0
        self._last[publisher] = sequence
        gap = 0 if last is None else sequence - last - 1
        self.missed_total += gap
        return gap

    def missed_before(self, info: Mapping[str, Any], topic: Hashable = None) -> int:
        """Return how many frames were lost before the one rclpy's ``MessageInfo`` describes."""
        publisher = info.get('publisher_gid')
        return self.missed((topic, publisher and bytes(publisher['data'])),
                           info.get('publication_sequence_number'))
