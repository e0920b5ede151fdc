# Copyright 2026 dyn_perception maintainers. Apache-2.0.
"""Frames meet their labels whichever arrives first, and leave in arrival order."""

from dyn_perception.runtime.pairing import StampPairing


def collect():
    out = []
    return out, StampPairing(lambda frame, key, label: out.append((frame, label)), wait_s=0.1)


def test_label_first_or_frame_first_both_pair():
    out, pairing = collect()
    pairing.add_label(1, 7, now=0.0)
    pairing.add_frame(1, 'a', now=0.01)
    pairing.add_frame(2, 'b', now=0.02)
    assert out == [('a', 7)]
    pairing.add_label(2, 3, now=0.03)
    assert out == [('a', 7), ('b', 3)]


def test_order_is_kept_and_unlabelled_frames_time_out():
    out, pairing = collect()
    pairing.add_label(0, 0, now=0.0)
    pairing.add_frame(1, 'a', now=0.0)   # its label never comes
    pairing.add_frame(2, 'b', now=0.01)
    pairing.add_label(2, 5, now=0.02)    # b is ready but waits behind a
    assert out == []
    pairing.release(now=0.2)
    assert out == [('a', None), ('b', 5)]


def test_without_labels_frames_pass_straight_through():
    out, pairing = collect()
    pairing.add_frame(1, 'a', now=10.0)
    assert out == [('a', None)]


def test_a_known_label_source_holds_frames_before_the_first_label():
    out = []
    pairing = StampPairing(lambda frame, key, label: out.append((frame, label)), wait_s=0.1,
                           labels_expected=lambda: True)
    pairing.add_frame(1, 'a', now=0.0)
    assert out == []
    pairing.add_label(1, 4, now=0.05)
    assert out == [('a', 4)]
