"""
The blocking bound as a 0/1 knapsack over gang widths.

The jobs already running when a job is released hold at most all m TPUs, so the blocking
jobs picked by the bound must have widths summing to at most m: a 0/1 knapsack whose
capacity is m <= 8.  Two solutions are offered: the exact one (a dynamic programme over
capacity) and the fractional relaxation (greedy by value per TPU, an upper bound of the
exact one, so it is sound too but never tighter).  `Knapsack.NONE` drops the width
constraint and adds every item: the comparison point for what the knapsack buys.
"""

import enum
from fractions import Fraction

import numpy as np


class Knapsack(enum.Enum):
    """How the width constraint on blocking jobs is used."""

    EXACT = 'exact'
    FRACTIONAL = 'fractional'
    NONE = 'none'


def most_valuable(widths: np.ndarray, keys: np.ndarray, capacity: int) -> np.ndarray:
    """
    Select the only items an optimal 0/1 packing needs to look at (their indices).

    Of the items of one width w at most capacity // w fit, and an optimal packing may as
    well take those with the largest value; with values ordered like `keys` within each
    width, at most sum_w capacity // w <= 2 m items remain (20 for m = 8), whatever the
    task count, which keeps the DP tiny.
    """
    order = np.lexsort((-keys, widths))
    ranked = widths[order]
    first_of_width = np.searchsorted(ranked, ranked)
    rank_in_width = np.arange(len(order)) - first_of_width
    return np.sort(order[rank_in_width < capacity // ranked])


def knapsack_bound(
        widths: np.ndarray, values: np.ndarray, capacity: int, mode: Knapsack) -> int | Fraction:
    """
    Largest total value of items whose widths sum to at most `capacity` (each item once).

    Values are non-negative integers.  The exact DP costs items x capacity: prune many
    items with `most_valuable` first.  The fractional bound is returned as an exact
    Fraction so that the caller's floor division cannot be off by one through rounding.
    """
    if mode is Knapsack.NONE:
        return int(values.sum())
    if mode is Knapsack.FRACTIONAL:
        return _fractional(widths.tolist(), values.tolist(), capacity)
    return _exact(widths.tolist(), values.tolist(), capacity)


def _fractional(widths: list[int], values: list[int], capacity: int) -> int | Fraction:
    """Greedy by value per TPU: the LP relaxation's optimum in closed form."""
    order = sorted(range(len(values)), key=lambda i: Fraction(values[i], widths[i]),
                   reverse=True)
    total: int | Fraction = 0
    room = capacity
    for i in order:
        if widths[i] <= room:
            total += values[i]
            room -= widths[i]
        else:
            return total + Fraction(values[i] * room, widths[i])
    return total


def _exact(widths: list[int], values: list[int], capacity: int) -> int:
    """Solve the 0/1 knapsack by the classic DP: best[c] = best value within c TPUs."""
    best = [0] * (capacity + 1)
    for width, value in zip(widths, values):
        for room in range(capacity, width - 1, -1):
            candidate = best[room - width] + value
            if candidate > best[room]:
                best[room] = candidate
    return best[capacity]
