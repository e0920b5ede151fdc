# Copyright 2026 dyn_perception maintainers. Apache-2.0.
"""Frames a publisher sent that never arrived, from its sequence numbers."""

from dyn_perception.runtime.arrivals import SequenceGaps


def info(gid: bytes, sequence):
    """Return what rclpy's MessageInfo holds for one message of publisher ``gid``."""
    return {'publisher_gid': {'implementation_identifier': 'rmw', 'data': gid},
            'publication_sequence_number': sequence}


def test_a_jump_in_a_publishers_numbers_counts_the_frames_between():
    gaps = SequenceGaps()
    assert gaps.missed_before(info(b'a', 7)) == 0  # first heard: the base, not a loss
    assert gaps.missed_before(info(b'a', 8)) == 0
    assert gaps.missed_before(info(b'a', 12)) == 3
    assert gaps.missed_total == 3


def test_publishers_and_topics_are_numbered_apart():
    gaps = SequenceGaps()
    for sequence in (1, 2):
        assert gaps.missed_before(info(b'a', sequence)) == 0
        assert gaps.missed_before(info(b'b', 10 + sequence)) == 0
    assert gaps.missed_before(info(b'a', 1), topic='front') == 0
    assert gaps.missed_before(info(b'a', 3)) == 0
    assert gaps.missed_before(info(b'a', 5), topic='front') == 3


def test_a_restart_a_repeat_or_no_numbers_is_no_loss():
    gaps = SequenceGaps()
    gaps.missed_before(info(b'a', 50))
    assert gaps.missed_before(info(b'a', 1)) == 0  # a restarted publisher starts again
    assert gaps.missed_before(info(b'a', 50)) == 0
    assert gaps.missed_before({'publication_sequence_number': None}) == 0
    assert gaps.missed_before({}) == 0
    assert gaps.missed_total == 0
