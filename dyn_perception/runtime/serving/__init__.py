"""
Several camera streams served on one pool of TPUs with their deadlines kept.

The modules, each with one job:
- streams: the stream file (pool, streams, floors per mode) and its validation;
- plans: what a job of a model point costs on a gang (stages, times, swaps, energy);
- admission: options per stream, least-energy configuration (global or partitioned),
  rejection reasons, the switch analysis;
- dispatcher: the analysed gang rule on ticks (strict, bypass; global, partitioned);
- execution: one job over its gang (frames through the real segments, or replayed exits);
- accounting: per-stream counters, responses against bounds, energy;
- server: streams, modes and the switch protocol, virtual and wall-clock executors.
"""

from dyn_perception.runtime.serving.admission import Admitted, Planner, Served
from dyn_perception.runtime.serving.dispatcher import GangDispatcher, GangJob, Lane
from dyn_perception.runtime.serving.plans import (
    GangPlan, ModelledEdgeTPU, ModelPoint, RESIDENT, ServedModel, SWAP
)
from dyn_perception.runtime.serving.server import RESULT_SCHEMA, StreamServer
from dyn_perception.runtime.serving.streams import (
    load_streams, parse_streams, PoolSpec, ServingError, StreamFile, StreamSpec
)

__all__ = [
    'Admitted', 'GangDispatcher', 'GangJob', 'GangPlan', 'Lane', 'load_streams',
    'ModelledEdgeTPU', 'ModelPoint', 'parse_streams', 'Planner', 'PoolSpec', 'RESIDENT',
    'RESULT_SCHEMA', 'Served', 'ServedModel', 'ServingError', 'StreamFile', 'StreamServer',
    'StreamSpec', 'SWAP',
]
