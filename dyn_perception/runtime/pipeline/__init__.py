"""
Segments of an early-exit network pipelined over several devices, with early-exit gating.

``Pipeline`` is the entry point; ``placement`` decides which device holds which segments.
"""

from dyn_perception.runtime.pipeline.core import Pipeline, PLACEMENTS
from dyn_perception.runtime.pipeline.engine import Config, PipelineError
from dyn_perception.runtime.pipeline.placement import (
    balanced_placement, equal_parameter_placement, expected_exit_rates, Placement,
    reach_probabilities, Stage
)
from dyn_perception.runtime.pipeline.results import (
    DeviceStats, DeviceTiming, DROPPED, FAILED, FrameResult, OK, PipelineStats, SwitchRecord
)

__all__ = [
    'balanced_placement', 'Config', 'DeviceStats', 'DeviceTiming', 'DROPPED',
    'equal_parameter_placement', 'expected_exit_rates', 'FAILED', 'FrameResult', 'OK',
    'Pipeline', 'PipelineError', 'PipelineStats', 'Placement', 'PLACEMENTS',
    'reach_probabilities', 'Stage', 'SwitchRecord',
]
