"""
A variant's segments run one after the other in this process: the reference execution.

The multi-device pipeline must give exactly these results; the training side uses the same
chain to verify exported models and to measure exit curves.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Sequence

from dyn_perception.runtime.artifacts import Manifest, Variant
from dyn_perception.runtime.exits import ExitPolicy
from dyn_perception.runtime.preprocess import to_int8_input
from dyn_perception.runtime.segment import requantize, SegmentRunner
import numpy as np


@dataclass(frozen=True)
class ExitDecision:
    """Where a frame left the network and what it was classified as."""

    exit_index: int
    segments_run: int
    logits: np.ndarray

    @property
    def class_id(self) -> int:
        return int(np.argmax(self.logits))


class SegmentChain:
    """All segments of one variant loaded as LiteRT interpreters in this process."""

    def __init__(self, manifest: Manifest, variant: Optional[str] = None, num_threads: int = 1):
        self.manifest = manifest
        self.variant: Variant = manifest.variant(variant)
        self.runners = [SegmentRunner(s, manifest.path(s.file), num_threads)
                        for s in self.variant.segments]

    def quantize_frames(self, images: np.ndarray) -> np.ndarray:
        """uint8 N x H x W x C frames at the network size to int8 first-segment inputs."""
        return to_int8_input(images, self.manifest.input, self.variant.segments[0].input)

    def _forward(self, x: np.ndarray, stop: Callable[[int, np.ndarray], bool]) -> ExitDecision:
        exit_index = 0
        for i, runner in enumerate(self.runners):
            out = runner(x)
            if out.logits is not None:
                if i == len(self.runners) - 1 or stop(exit_index, out.logits):
                    return ExitDecision(exit_index, i + 1, out.logits[0])
                exit_index += 1
            x = requantize(out.features, runner.spec.features, self.runners[i + 1].spec.input)
        raise AssertionError('the last segment always ends at an exit')

    def run(self, x: np.ndarray, policy: ExitPolicy,
            thresholds: Sequence[Optional[float]]) -> ExitDecision:
        """Early-exit inference of one int8 frame (shape 1 x H x W x C)."""
        return self._forward(x, lambda k, logits: policy.confident(logits[0], thresholds[k]))

    def all_exit_logits(self, inputs: np.ndarray) -> list[np.ndarray]:
        """Logits of every exit for every int8 frame (no early stop): N x classes per exit."""
        per_exit: list[list[np.ndarray]] = [[] for _ in range(self.variant.num_exits)]

        def record(k: int, logits: np.ndarray) -> bool:
            per_exit[k].append(logits[0])
            return False

        for frame in inputs:
            per_exit[-1].append(self._forward(frame[None], record).logits)
        return [np.stack(p) for p in per_exit]
