"""
Early-exit policies: when an exit head is confident enough to stop the frame there.

BranchyNet exits when the softmax entropy is under a threshold; max-softmax and the top-1/top-2
margin are the common alternatives. Each policy turns logits into one confidence score per
frame; ``accepts`` compares it with the threshold in the policy's own direction. Thresholds are
used as they are written in the manifest and the ROS parameters, so 0.9 for max_softmax means
"at least 90% probability". A threshold of ``None`` disables the exit.
"""

from __future__ import annotations

from dataclasses import dataclass
import math
from typing import Optional, Sequence

import numpy as np


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax, stable for large logits."""
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def _entropy(p: np.ndarray) -> np.ndarray:
    return -(p * np.log(np.clip(p, 1e-12, 1.0))).sum(axis=-1)


def _max_softmax(p: np.ndarray) -> np.ndarray:
    return p.max(axis=-1)


def _margin(p: np.ndarray) -> np.ndarray:
    top2 = np.sort(p, axis=-1)[..., -2:]
    return top2[..., 1] - top2[..., 0]


# One frame at a time the per-call cost of NumPy on ten logits dominates (tens of
# microseconds), so the run-time decision uses these scalar forms. With z = logits - max,
# e = exp(z) and S = sum(e): entropy = log S - sum(e z) / S, max softmax = 1 / S, and
# margin = (1 - e_second) / S. Tests hold them equal to the batch forms above.
def _scalar_scores(logits: Sequence[float]) -> tuple[float, float, float, float]:
    top = max(logits)
    z = [v - top for v in logits]
    e = [math.exp(v) for v in z]
    total = sum(e)
    second = sorted(e)[-2] if len(e) > 1 else 0.0
    entropy = math.log(total) - sum(a * b for a, b in zip(e, z)) / total
    return entropy, 1.0 / total, (1.0 - second) / total, total


_SCALAR = {'entropy': 0, 'max_softmax': 1, 'margin': 2}


@dataclass(frozen=True)
class ExitPolicy:
    """A confidence score over softmax probabilities and the direction it is confident in."""

    name: str
    higher_is_confident: bool
    lower_bound: float
    upper_bound: Optional[float]

    def score(self, logits: np.ndarray) -> np.ndarray:
        """Confidence score of each row of logits (float logits, already dequantised)."""
        return _SCORES[self.name](softmax(logits))

    def accepts(self, scores: np.ndarray, threshold: Optional[float]) -> np.ndarray:
        """Tell which frames leave at this exit; all stay when the exit is disabled."""
        scores = np.asarray(scores)
        if threshold is None:
            return np.zeros(scores.shape, dtype=bool)
        return scores >= threshold if self.higher_is_confident else scores <= threshold

    def confident(self, logits: Sequence[float], threshold: Optional[float]) -> bool:
        """Decide for one frame's logits whether it leaves at this exit (fast scalar path)."""
        if threshold is None:
            return False
        values = logits.tolist() if hasattr(logits, 'tolist') else list(logits)
        score = _scalar_scores(values)[_SCALAR[self.name]]
        return score >= threshold if self.higher_is_confident else score <= threshold

    def validate(self, threshold: Optional[float]) -> Optional[str]:
        """Explain why ``threshold`` is meaningless for this policy; None when it is fine."""
        if threshold is None:
            return None
        if not np.isfinite(threshold):
            return f'{self.name} threshold must be finite'
        if threshold < self.lower_bound or (
                self.upper_bound is not None and threshold > self.upper_bound):
            upper = 'inf' if self.upper_bound is None else self.upper_bound
            return (f'{self.name} threshold {threshold} is outside '
                    f'[{self.lower_bound}, {upper}]')
        return None

    def sweep(self, num_classes: int, points: int) -> np.ndarray:
        """Thresholds from 'almost never exit' to 'always exit', for curves and calibration."""
        if self.name == 'entropy':
            return np.linspace(0.0, np.log(num_classes), points)
        return np.linspace(1.0, 1.0 / num_classes if self.name == 'max_softmax' else 0.0,
                           points)


_SCORES = {'entropy': _entropy, 'max_softmax': _max_softmax, 'margin': _margin}
POLICIES = {
    'entropy': ExitPolicy('entropy', higher_is_confident=False, lower_bound=0.0,
                          upper_bound=None),
    'max_softmax': ExitPolicy('max_softmax', higher_is_confident=True, lower_bound=0.0,
                              upper_bound=1.0),
    'margin': ExitPolicy('margin', higher_is_confident=True, lower_bound=0.0, upper_bound=1.0),
}


def get_policy(name: str) -> ExitPolicy:
    """Return the named policy, or raise a ValueError that lists the known ones."""
    try:
        return POLICIES[name]
    except KeyError:
        raise ValueError(f'unknown exit policy {name!r}; known: {", ".join(POLICIES)}') from None


def exit_index(scores: Sequence[np.ndarray], policy: ExitPolicy,
               thresholds: Sequence[Optional[float]]) -> np.ndarray:
    """
    For a batch with scores at every exit, the exit each frame takes (the first that accepts).

    ``scores`` holds one array per exit; ``thresholds`` one per non-final exit. The final exit
    takes every frame that no earlier exit accepted.
    """
    if len(thresholds) != len(scores) - 1:
        raise ValueError(f'{len(scores)} exits need {len(scores) - 1} thresholds, '
                         f'got {len(thresholds)}')
    n = len(scores[0])
    taken = np.full(n, len(scores) - 1)
    undecided = np.ones(n, dtype=bool)
    for i, threshold in enumerate(thresholds):
        leave = undecided & policy.accepts(scores[i], threshold)
        taken[leave] = i
        undecided &= ~leave
    return taken
