# Copyright 2026 dyn_perception maintainers. Apache-2.0.
"""
The segment pipeline: same results as one process, gating, bounds, mode switches, failures.

Simulated TPUs run in virtual time, so these runs are deterministic and check behaviour, never
speed. The reference is ``SegmentChain``, all segments in one process. The model is the tiny
fixture under test/fixtures (two variants, three segments, three exits each).
"""

from pathlib import Path
import tracemalloc

from dyn_perception.runtime.artifacts import load_manifest
from dyn_perception.runtime.chain import SegmentChain
from dyn_perception.runtime.devices import (
    DeviceError, LiteRTCpuDevice, segment_refs, SimulatedEdgeTPU
)
from dyn_perception.runtime.exits import exit_index, get_policy
from dyn_perception.runtime.pipeline import (
    balanced_placement, equal_parameter_placement, expected_exit_rates, Pipeline,
    PipelineError, Placement, reach_probabilities, Stage
)
import numpy as np
import pytest

FIXTURES = Path(__file__).resolve().parent / 'fixtures'


@pytest.fixture(scope='module')
def manifest():
    return load_manifest(FIXTURES / 'tiny_eenet')


@pytest.fixture(scope='module')
def frames():
    return np.load(FIXTURES / 'frames.npy')


@pytest.fixture(scope='module')
def chains(manifest):
    return {v.name: SegmentChain(manifest, v.name) for v in manifest.variants}


def tpus(count: int, prefix: str = 'tpu') -> list:
    return [SimulatedEdgeTPU(f'{prefix}{i}') for i in range(count)]


def reference(chain: SegmentChain, frames: np.ndarray, policy: str, thresholds) -> list:
    inputs = chain.quantize_frames(frames)
    return [chain.run(x[None], get_policy(policy), thresholds) for x in inputs]


def assert_same(results, expected, ids=None) -> None:
    ids = list(range(len(expected))) if ids is None else ids
    assert [r.frame_id for r in results] == ids, 'every frame once, in submission order'
    for result, decision in zip(results, expected):
        assert result.status == 'ok', result.error
        assert result.exit_index == decision.exit_index, result.frame_id
        np.testing.assert_array_equal(result.logits, decision.logits)


def run_all(pipeline: Pipeline, frames: np.ndarray) -> list:
    for i, frame in enumerate(frames):
        pipeline.submit(i, frame)
    return pipeline.drain()


@pytest.mark.parametrize('count,placement,policy,mode', [
    (1, 'balanced', 'entropy', 'balanced'),
    (2, 'pipeline', 'max_softmax', 'critical'),
    (3, 'equal_parameter', 'margin', 'eco'),
    (5, 'balanced', 'entropy', 'critical'),
])
def test_pipelined_results_equal_the_single_process_chain(manifest, frames, chains, count,
                                                          placement, policy, mode):
    pipeline = Pipeline(manifest, tpus(count), policy=policy, thresholds=mode,
                        placement=placement, queue_capacity=2)
    thresholds = manifest.variant('base').thresholds[policy][mode]
    assert_same(run_all(pipeline, frames), reference(chains['base'], frames, policy, thresholds))
    assert pipeline.stats().completed == len(frames)
    pipeline.close()  # virtual time too: the executor's lock is a condition to notify


def test_exits_follow_the_policy_and_later_stages_never_see_exited_frames(
        manifest, frames, chains):
    one_each = Placement(tuple(Stage((i,), (i,), 0.0) for i in range(3)), 'one segment each')
    pipeline = Pipeline(manifest, tpus(3), policy='max_softmax', thresholds='critical',
                        placement=one_each)
    results = run_all(pipeline, frames)
    chain, policy = chains['base'], get_policy('max_softmax')
    thresholds = chain.variant.thresholds['max_softmax']['critical']
    logits = chain.all_exit_logits(chain.quantize_frames(frames))
    expected = exit_index([policy.score(z) for z in logits], policy, thresholds)
    assert [r.exit_index for r in results] == expected.tolist()
    assert len(set(expected.tolist())) == 3, 'the fixture should use every exit here'
    exit_segments = chain.variant.exit_segment_indices()
    for result in results:
        ran = [t.segment for t in result.timings]
        assert ran == list(range(exit_segments[result.exit_index] + 1))
        assert [t.device for t in result.timings] == ['tpu0', 'tpu1', 'tpu2'][:len(ran)]
        assert result.energy_j == pytest.approx(sum(t.energy_j for t in result.timings))
    stats = pipeline.stats()
    assert stats.exit_histogram == tuple(np.bincount(expected, minlength=3))
    assert [d.invocations for d in stats.devices] == [
        len(frames), int((expected >= 1).sum()), int((expected == 2).sum())]


def test_threads_on_cpu_cores_give_the_same_results_in_order(manifest, frames, chains):
    delivered = []
    devices = [LiteRTCpuDevice('cpu0'), LiteRTCpuDevice('cpu1')]
    with Pipeline(manifest, devices, placement='pipeline', thresholds='eco',
                  on_result=delivered.append) as pipeline:
        assert len(pipeline.placement.stages) == 2
        for i, frame in enumerate(frames):
            pipeline.submit(i, frame)
        assert pipeline.drain(timeout=60) == []
    thresholds = chains['base'].variant.thresholds['entropy']['eco']
    assert_same(delivered, reference(chains['base'], frames, 'entropy', thresholds))
    with pytest.raises(PipelineError, match='closed'):
        pipeline.submit(99, frames[0])


def test_simulated_tpus_in_wall_clock_time_run_on_threads(manifest, frames, chains):
    devices = [SimulatedEdgeTPU(f'wall{i}', clock='wall') for i in range(2)]
    with Pipeline(manifest, devices, thresholds='critical') as pipeline:
        results = run_all(pipeline, frames[:16])
        with pytest.raises(ValueError, match='virtual'):
            pipeline.advance(1.0)
    thresholds = chains['base'].variant.thresholds['entropy']['critical']
    assert_same(results, reference(chains['base'], frames[:16], 'entropy', thresholds))
    assert all(r.latency_s >= sum(t.seconds for t in r.timings) for r in results)


def test_int8_input_is_accepted_and_bad_frames_are_refused(manifest, frames, chains):
    pipeline = Pipeline(manifest, tpus(2))
    inputs = chains['base'].quantize_frames(frames[:4])
    for i, x in enumerate(inputs):
        pipeline.submit(i, x)
    thresholds = chains['base'].variant.thresholds['entropy']['balanced']
    assert_same(pipeline.drain(), reference(chains['base'], frames[:4], 'entropy', thresholds))
    with pytest.raises(ValueError, match='uint8'):
        pipeline.submit(9, frames[0].astype(np.float32))
    with pytest.raises(ValueError, match='shape'):
        pipeline.submit(9, inputs[0][:10])


def test_live_camera_overload_drops_oldest_with_bounded_queues_and_flat_memory(
        manifest, frames):
    capacity = 3
    pipeline = Pipeline(manifest, tpus(2), admission='drop_oldest', queue_capacity=capacity,
                        thresholds='performance')
    period = 1.0 / (10 * pipeline.placement.bound_fps)  # ten times what the devices sustain
    counted = {'next': 0, 'dropped': 0}

    def check(results):  # results are checked and let go: only the pipeline's memory counts
        for result in results:
            assert result.frame_id == counted['next'], 'each frame once, in order'
            counted['next'] += 1
            counted['dropped'] += result.status == 'dropped'

    sizes = []
    tracemalloc.start()
    try:
        for i in range(2400):
            pipeline.submit(i, frames[i % len(frames)], at=i * period)
            if i % 200 == 199:
                check(pipeline.poll())
                sizes.append(tracemalloc.get_traced_memory()[0])
        check(pipeline.drain())
    finally:
        tracemalloc.stop()
    stats = pipeline.stats()
    assert counted['next'] == 2400
    assert stats.dropped == counted['dropped'] > 1500
    assert stats.completed + stats.dropped == 2400 and stats.failed == 0
    assert max(stats.queue_high_water) <= capacity
    stages = len(pipeline.placement.stages)
    assert stats.frames_inside_high_water <= capacity * stages + 2 * len(pipeline.devices)
    growth = sizes[-1] - sizes[2]
    assert growth < 64 * 1024, f'memory grew by {growth} bytes from frame 600 to 2400'


def test_blocking_admission_holds_the_producer_instead_of_queueing(manifest, frames):
    pipeline = Pipeline(manifest, tpus(1), queue_capacity=2)
    for i in range(40):
        pipeline.submit(i, frames[i])
    results = pipeline.drain()
    assert len(results) == 40 and all(r.status == 'ok' for r in results)
    stats = pipeline.stats()
    assert stats.queue_high_water[0] <= 2 and stats.dropped == 0
    assert stats.fps == pytest.approx(pipeline.placement.bound_fps, rel=0.1)


def test_mode_switch_mid_stream_loses_no_frame(manifest, frames, chains):
    pipeline = Pipeline(manifest, tpus(3), thresholds='performance', queue_capacity=2)
    for i in range(30):
        pipeline.submit(i, frames[i])
    pipeline.set_mode(thresholds='critical')
    for i in range(30, 64):
        pipeline.submit(i, frames[i])
    results = pipeline.drain()
    assert [r.frame_id for r in results] == list(range(64))
    switch = pipeline.stats().switches[-1]
    assert switch.effective_s == switch.requested_s, 'thresholds apply at once'
    chain = chains['base']
    for result in results:
        mode = 'performance' if result.config_version == 0 else 'critical'
        assert result.mode == mode
        decision = chain.run(chain.quantize_frames(frames[result.frame_id:result.frame_id + 1]),
                             get_policy('entropy'), chain.variant.thresholds['entropy'][mode])
        assert result.exit_index == decision.exit_index
        np.testing.assert_array_equal(result.logits, decision.logits)
    old_after = [r for r in results if r.mode == 'performance' and r.frame_id >= 30]
    assert not old_after, 'frames submitted after the switch use the new mode'
    late = [r for r in results if r.mode == 'performance' and r.finished_s > switch.requested_s]
    assert len(late) <= switch.frames_in_flight


def test_variant_switch_waits_for_started_frames_and_pays_the_swap(manifest, frames, chains):
    pipeline = Pipeline(manifest, tpus(2), thresholds='eco', queue_capacity=2)
    for i in range(20):
        pipeline.submit(i, frames[i])
    loads_before = sum(d.loads for d in pipeline.stats().devices)
    pipeline.set_mode(variant='slim')
    for i in range(20, 48):
        pipeline.submit(i, frames[i])
    results = pipeline.drain()
    assert [r.frame_id for r in results] == list(range(48))
    stats = pipeline.stats()
    switch = stats.switches[-1]
    assert switch.effective_s >= switch.requested_s
    assert sum(d.loads for d in stats.devices) > loads_before
    assert all(d.load_s > 0 for d in stats.devices)
    for variant in ('base', 'slim'):
        picked = [r for r in results if r.config_version == (0 if variant == 'base' else 1)]
        assert picked, variant
        expected = reference(chains[variant], frames[[r.frame_id for r in picked]], 'entropy',
                             chains[variant].variant.thresholds['entropy']['eco'])
        assert_same(picked, expected, [r.frame_id for r in picked])
    base_last = max(r.finished_s for r in results if r.config_version == 0)
    assert base_last <= switch.effective_s, 'no slim frame starts before base frames are done'
    base_refs = segment_refs(manifest, manifest.variant('base'))
    whole_chain_s = 1e-3 * sum(pipeline.devices[0].estimate_ms(base_refs))
    assert switch.frames_in_flight <= 2 * 2 + 2  # capacity x stages + devices
    assert switch.effective_s - switch.requested_s <= switch.frames_in_flight * whole_chain_s


def test_fewer_devices_mid_stream(manifest, frames, chains):
    pipeline = Pipeline(manifest, tpus(4), thresholds='balanced')
    for i in range(24):
        pipeline.submit(i, frames[i])
    pipeline.set_mode(num_devices=2)
    for i in range(24, 64):
        pipeline.submit(i, frames[i])
    results = pipeline.drain()
    thresholds = chains['base'].variant.thresholds['entropy']['balanced']
    assert_same(results, reference(chains['base'], frames, 'entropy', thresholds))
    assert set(pipeline.placement.devices) <= {0, 1}
    stats = pipeline.stats()
    assert [d.segments for d in stats.devices[2:]] == [(), ()]
    assert not any(t.device in ('tpu2', 'tpu3') for r in results[40:] for t in r.timings)


def test_device_failure_re_places_and_re_runs_in_flight_frames(manifest, frames, chains):
    devices = tpus(3)
    pipeline = Pipeline(manifest, devices, placement='pipeline', thresholds='performance')
    devices[1].fail_after(5)
    results = run_all(pipeline, frames)
    thresholds = chains['base'].variant.thresholds['entropy']['performance']
    assert_same(results, reference(chains['base'], frames, 'entropy', thresholds))
    stats = pipeline.stats()
    assert stats.devices[1].state == 'failed'
    assert any('tpu1 failed' in e for e in stats.errors)
    assert 1 not in pipeline.placement.devices
    assert stats.devices[1].invocations == 5 and stats.completed == len(frames)


def test_losing_every_device_reports_each_frame_failed(manifest, frames):
    devices = tpus(2)
    pipeline = Pipeline(manifest, devices, thresholds='performance', queue_capacity=2)
    for device in devices:
        device.fail_after(3)
    results = run_all(pipeline, frames[:20])
    assert [r.frame_id for r in results] == list(range(20))
    statuses = [r.status for r in results]
    assert 'failed' in statuses and set(statuses) <= {'ok', 'failed'}
    assert all('no device left' in r.error for r in results if r.status == 'failed')
    pipeline.submit('late', frames[0])
    (late,) = pipeline.drain()
    assert late.status == 'failed'
    with pytest.raises(PipelineError, match='stopped'):
        pipeline.set_mode(thresholds='eco')


class FlakyCpu(LiteRTCpuDevice):
    """A CPU device that breaks after a number of invocations, as a USB TPU might."""

    def __init__(self, name: str, after: int):
        super().__init__(name)
        self.left = after

    def invoke(self, ref, x):
        if self.left == 0:
            raise DeviceError(self.name, 'unplugged')
        self.left -= 1
        return super().invoke(ref, x)


def test_device_failure_with_threads(manifest, frames, chains):
    devices = [LiteRTCpuDevice('cpu0'), FlakyCpu('cpu1', after=7), LiteRTCpuDevice('cpu2')]
    with Pipeline(manifest, devices, placement='pipeline', thresholds='critical') as pipeline:
        results = run_all(pipeline, frames)
        stats = pipeline.stats()
    thresholds = chains['base'].variant.thresholds['entropy']['critical']
    assert_same(results, reference(chains['base'], frames, 'entropy', thresholds))
    assert stats.devices[1].state == 'failed' and 'unplugged' in ' '.join(stats.errors)


def test_bad_configuration_is_refused_and_the_old_one_kept(manifest):
    pipeline = Pipeline(manifest, tpus(2), thresholds='eco')
    with pytest.raises(ValueError, match='known'):
        pipeline.set_mode(thresholds='turbo')
    with pytest.raises(ValueError, match='2 early exits'):
        pipeline.set_mode(thresholds=[0.5])
    with pytest.raises(ValueError, match='outside'):
        pipeline.set_mode(policy='max_softmax', thresholds=[0.5, 1.5])
    with pytest.raises(ValueError, match='num_devices'):
        pipeline.set_mode(num_devices=3)
    assert pipeline.config.mode == 'eco' and pipeline.config.version == 0
    with pytest.raises(ValueError, match='placement'):
        Pipeline(manifest, tpus(1), placement='random')
    with pytest.raises(ValueError, match='clock'):
        Pipeline(manifest, [SimulatedEdgeTPU('v'), SimulatedEdgeTPU('w', clock='wall')])
    with pytest.raises(ValueError, match='unique'):
        Pipeline(manifest, [SimulatedEdgeTPU('v'), SimulatedEdgeTPU('v')])
    with pytest.raises(ValueError, match='queue_capacity'):
        Pipeline(manifest, tpus(1), queue_capacity=0)


def test_explicit_placement_is_used_until_its_device_fails(manifest, frames, chains):
    explicit = Placement((Stage((0, 1), (1,), 0.0), Stage((2,), (0, 2), 0.0)), 'manual')
    devices = tpus(3)
    pipeline = Pipeline(manifest, devices, placement=explicit, thresholds='eco')
    assert pipeline.placement == explicit
    devices[0].fail_after(2)
    results = run_all(pipeline, frames[:30])
    assert all(r.status == 'ok' for r in results)
    assert pipeline.placement.strategy == 'balanced'
    with pytest.raises(ValueError, match='cover segments'):
        Placement((Stage((0,), (0,), 0.0), Stage((2,), (1,), 0.0)), 'x').check(3, (0, 1))


def brute_force_bottleneck(reach, times, num_devices):
    """Least bottleneck over every cut and every replica split, by enumeration."""
    n, best = len(times), float('inf')
    for mask in range(1 << (n - 1)):
        edges = [0] + [i + 1 for i in range(n - 1) if mask >> i & 1] + [n]
        loads = [sum(reach[s] * times[s] for s in range(a, b)) for a, b in zip(edges, edges[1:])]
        if len(loads) > num_devices:
            continue
        for split in np.ndindex(*([num_devices] * len(loads))):
            replicas = [r + 1 for r in split]
            if sum(replicas) <= num_devices:
                best = min(best, max(load / r for load, r in zip(loads, replicas)))
    return best


@pytest.mark.parametrize('num_devices', [1, 2, 3, 5])
def test_balanced_placement_is_optimal_and_beats_equal_parameters(num_devices):
    times = [4.0, 1.0, 3.0, 2.0]
    reach = [1.0, 0.6, 0.6, 0.2]
    params = [100, 900, 800, 4000]

    def cost(group):
        return [times[s] for s in group]

    devices = tuple(range(num_devices))
    balanced = balanced_placement(4, devices, reach, cost)
    assert balanced.bottleneck_ms == pytest.approx(brute_force_bottleneck(reach, times,
                                                                          num_devices))
    equal = equal_parameter_placement(params, devices, reach, cost)
    assert balanced.bottleneck_ms <= equal.bottleneck_ms + 1e-12
    assert len(equal.stages) == min(num_devices, 4)
    assert all(len(s.devices) == 1 for s in equal.stages)
    if num_devices == 2:
        assert [s.segments for s in equal.stages] == [(0, 1, 2), (3,)]
    if num_devices == 3:
        assert [s.segments for s in equal.stages] == [(0, 1), (2,), (3,)]
    pipelined = balanced_placement(4, devices, reach, cost, replicate=False)
    assert all(len(s.devices) == 1 for s in pipelined.stages)
    assert balanced.bound_fps == pytest.approx(1e3 / balanced.bottleneck_ms)


def test_reach_and_expected_exit_rates(manifest):
    from dyn_perception.runtime.artifacts import load_profile
    variant = manifest.variant('base')
    profile = load_profile(manifest.directory).variant('base')
    thresholds = variant.thresholds['entropy']['eco']
    rates = expected_exit_rates(variant, profile, 'entropy', thresholds)
    (point,) = [p for p in profile.exit_curves['entropy'] if p.mode == 'eco']
    assert rates == point.exit_rates
    assert reach_probabilities(variant, rates) == pytest.approx(
        (1.0, 1.0 - rates[0], rates[2]))
    nudged = [t + 1e-6 for t in thresholds]
    assert expected_exit_rates(variant, profile, 'entropy', nudged) == point.exit_rates
    assert expected_exit_rates(variant, None, 'entropy', thresholds) == (0.0, 0.0, 1.0)
    assert expected_exit_rates(variant, profile, 'entropy', [None, None]) == (0.0, 0.0, 1.0)


def test_saturated_throughput_reaches_the_analytic_bound_in_virtual_time(manifest, frames):
    pipeline = Pipeline(manifest, tpus(3), thresholds='critical', queue_capacity=4)
    results = run_all(pipeline, np.concatenate([frames] * 4))
    done = sorted(r.finished_s for r in results)
    steady = (len(done) - 1 - 32) / (done[-1] - done[32])
    assert steady >= 0.85 * pipeline.placement.bound_fps
    assert steady <= 1.05 * pipeline.placement.bound_fps
    stats = pipeline.stats()
    active = sum(d.active_energy_j for d in stats.devices)
    idle = sum(d.idle_energy_j for d in stats.devices)
    assert stats.energy_j == pytest.approx(active + idle) and idle > 0
    assert active == pytest.approx(sum(r.energy_j for r in results)
                                   + sum(d.load_s * 2.0 for d in stats.devices))
    pipeline.advance(stats.elapsed_s + 1.0)  # one idle second on three TPUs
    later = pipeline.stats()
    assert later.energy_j - stats.energy_j == pytest.approx(3 * 0.5 * 1.0)
    assert later.fps < stats.fps


def test_threshold_change_re_plans_for_the_new_exit_rates(manifest, frames):
    pipeline = Pipeline(manifest, tpus(3), thresholds=[None, None], placement='pipeline')
    before = pipeline.placement
    pipeline.set_mode(policy='margin', thresholds='critical')
    after = pipeline.placement
    assert pipeline.config.policy.name == 'margin'
    assert sum(s.load_ms for s in after.stages) < sum(s.load_ms for s in before.stages)
    results = run_all(pipeline, frames[:16])
    assert all(r.mode == 'critical' and r.status == 'ok' for r in results)
