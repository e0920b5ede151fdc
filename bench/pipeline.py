"""
Multi-TPU segment pipeline: throughput and latency against the analytic bound and baselines.

Simulated Edge TPUs (virtual time, model calibrated on Coral's benchmarks) with 1 to 8 TPUs, on
the shipped model and on a MobileNetV2-size early-exit model whose weights exceed one TPU's
8 MB, for three configurations measured in the same run: load-balanced placement (this
project), equal-parameter placement (what ``edgetpu_compiler --num_segments`` does) and the same
network without exits. Then a real LiteRT pipeline of 2 stages on the 2 CPU cores against
sequential execution of the same segments, in alternating blocks so machine noise hits both.

Throughput is measured in steady state: completions between the 10th and 90th percentile of
completion times (pipeline fill and drain excluded); latency is submission to result over the
same frames. The bound is 1 / (slowest stage's load per replica) for the exit rates those
frames actually took. The large model is exported once into out/bench_models/ (about a minute).

    python bench/pipeline.py [--json OUT] [--shipped fmnist_eenet] [--max-tpus 8]
"""

import argparse
from dataclasses import replace
from pathlib import Path
import sys
import threading
import time

from _paths import ROOT
from dyn_perception.runtime.artifacts import (
    ArtifactError, load_manifest, Manifest, OperatingPoint, Variant, write_yaml
)
from dyn_perception.runtime.chain import SegmentChain
from dyn_perception.runtime.datasets import DatasetError, load_dataset
from dyn_perception.runtime.devices import (
    calibrated_timing, calibration_table, LiteRTCpuDevice, SimulatedEdgeTPU
)
from dyn_perception.runtime.exits import exit_index, get_policy
from dyn_perception.runtime.pipeline import Pipeline, reach_probabilities
import numpy as np
from report import bounded, format_table, output_file, write_json

LARGE_CACHE = ROOT / 'out' / 'bench_models'
# MobileNetV2 at 224 x 224 x 3, width 2.0, 1000 classes: about 11.6 MB of int8 parameters,
# more than one Edge TPU's 8 MB cache.
LARGE = {'arch': 'mobilenetv2_ee', 'width': 2.0, 'input_shape': (224, 224, 3),
         'num_classes': 1000, 'exits_after': (2, 4), 'seed': 0, 'frames': 160}
LARGE_NAME = 'mnv2ee_w2_224'
# Assumed exit rates of the large model (first exit, second exit, final exit): an assumption,
# not a measurement. Its weights are untrained, so thresholds are set on the benchmark frames
# to give these rates; the shipped model's rates are measured on Fashion-MNIST.
LARGE_EXIT_RATES = (0.4, 0.3, 0.3)
LARGE_POLICY = 'entropy'
LARGE_MODE = 'assumed'


def bench_frames(count: int, seed: int) -> np.ndarray:
    """
    Seeded synthetic frames for the large model: 7 x 7 colour noise blown up to 224 x 224.

    Smooth frames rather than pixel noise: after global pooling pixel noise looks the same
    in every frame, and the exits would all score alike.
    """
    h, w, c = LARGE['input_shape']
    low = np.random.default_rng(seed).integers(0, 256, size=(count, 7, 7, c), dtype=np.uint8)
    return np.repeat(np.repeat(low, h // 7, axis=1), w // 7, axis=2)


def _large_network():
    """
    MobileNetV2-EE at 224 px, width 2, with a cut inside every span between exits.

    Weights are random; BatchNorm statistics are set on synthetic frames (otherwise
    activations fade to zero through the depth), and each exit head's classifier is scaled so
    its logits spread with a standard deviation of 2 across frames: only then do exit
    confidences differ from frame to frame. The extra cuts (segments without an exit) give
    the placement cut points between exits, as edgetpu_compiler's segmentation has.
    """
    from dyn_perception.training.models import build_network, EarlyExitNet, Segment
    import torch
    from torch import nn

    torch.manual_seed(LARGE['seed'])
    net = build_network(LARGE['arch'], LARGE['num_classes'], LARGE['input_shape'],
                        width=LARGE['width'], exits_after=LARGE['exits_after'])
    pieces = []
    for segment in net.segments:
        half = len(segment.body) // 2
        pieces.append(Segment(segment.body[:half], None))
        pieces.append(Segment(segment.body[half:], segment.head, segment.emits_features))
    net = EarlyExitNet(pieces, net.arch, net.input_shape, net.num_classes)
    frames = _normalised(bench_frames(32, LARGE['seed'] + 1))
    x = torch.from_numpy(frames).permute(0, 3, 1, 2)
    for module in net.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.reset_running_stats()
            module.momentum = None  # a plain average over the batches below
    with torch.no_grad():
        net.train()
        for start in range(0, len(x), 8):
            net(x[start:start + 8])
        net.eval()
        heads = [s.head for s in net.segments if s.head is not None]
        for head, logits in zip(heads, net(x)):
            classifier = [m for m in head.modules() if isinstance(m, nn.Linear)][-1]
            classifier.weight.mul_(2.0 / float(logits.std(0).mean()))
    return net


def _normalised(frames: np.ndarray) -> np.ndarray:
    return ((frames.astype(np.float32) / 255.0 - 0.5) / 0.25).astype(np.float32)


def _thresholds_for_rates(scores: list[np.ndarray], rates: tuple) -> list[float]:
    """Entropy thresholds that send ``rates`` of the frames out at each early exit, in order."""
    remaining = np.ones(len(scores[0]), dtype=bool)
    thresholds = []
    for k, rate in enumerate(rates[:-1]):
        share = rate / remaining.mean()
        threshold = float(np.quantile(scores[k][remaining], share))
        thresholds.append(threshold)
        remaining &= ~(scores[k] <= threshold)
    return thresholds


def prepare_large_model(cache: Path = LARGE_CACHE) -> Path:
    """
    Export the MobileNetV2-size early-exit model once and cache it (takes minutes).

    Untrained weights (timing does not depend on them); segments are exported with the
    project's int8 route, timed with LiteRT on this CPU, and the entropy thresholds are set so
    that the benchmark frames leave at the assumed exit rates.
    """
    target = cache / LARGE_NAME
    if (target / 'profile.yaml').is_file():
        return target
    from dyn_perception.runtime.segment import requantize, SegmentRunner
    from dyn_perception.training.export import export_segments, export_without_exits
    from dyn_perception.training.profiling import machine_description, time_invocations

    h, w, c = LARGE['input_shape']
    net = _large_network()
    mean, std = (0.5,) * c, (0.25,) * c
    frames = bench_frames(LARGE['frames'], LARGE['seed'])
    calibration = _normalised(frames[:16])
    staging = target.with_name(target.name + '.staging')
    (staging / 'base').mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    print(f'exporting {LARGE_NAME} (int8 segments, a few minutes) ...', flush=True)
    segments = export_segments(net, calibration, staging, prefix='base/')
    print(f'  segments done after {time.perf_counter() - started:.0f} s', flush=True)
    no_exit = export_without_exits(net, calibration, staging, 'base/no_exit.tflite')
    print(f'  no-exit network done after {time.perf_counter() - started:.0f} s', flush=True)
    labels = [f'class{i}' for i in range(LARGE['num_classes'])]
    variant = {'name': 'base', 'segments': segments, 'no_exit': no_exit,
               'thresholds': {LARGE_POLICY: {LARGE_MODE: [None, None]}}}
    manifest = {'name': LARGE_NAME, 'network': LARGE['arch'], 'dataset': 'synthetic noise',
                'input': {'height': h, 'width': w, 'channels': c, 'mean': list(mean),
                          'std': list(std)},
                'labels': labels, 'default_variant': 'base', 'default_policy': LARGE_POLICY,
                'provenance': {'command': 'python bench/pipeline.py', **LARGE,
                               'assumed_exit_rates': list(LARGE_EXIT_RATES)},
                'variants': [variant]}
    write_yaml(staging / 'manifest.yaml', manifest)
    chain = SegmentChain(load_manifest(staging))
    inputs = chain.quantize_frames(frames)
    print(f'  scoring {len(inputs)} frames at every exit ...', flush=True)
    logits = chain.all_exit_logits(inputs)
    policy = get_policy(LARGE_POLICY)
    scores = [policy.score(z) for z in logits]
    thresholds = _thresholds_for_rates(scores, LARGE_EXIT_RATES)
    variant['thresholds'] = {LARGE_POLICY: {LARGE_MODE: thresholds}}
    write_yaml(staging / 'manifest.yaml', manifest)
    taken = exit_index(scores, policy, thresholds)
    rates = np.bincount(taken, minlength=len(scores)) / len(taken)
    cumulative = np.asarray(chain.variant.cumulative_macs_at_exits(), dtype=np.float64)
    point = OperatingPoint(tuple(thresholds), tuple(float(r) for r in rates), float('nan'),
                           float(cumulative[taken].mean()), LARGE_MODE)
    x = inputs[:1]
    profiles = []
    for i, runner in enumerate(chain.runners):
        profiles.append(_segment_profile(runner, x, time_invocations))
        out = runner(x)
        if i + 1 < len(chain.runners):
            x = requantize(out.features, runner.spec.features, chain.runners[i + 1].spec.input)
    base_runner = SegmentRunner(no_exit, staging / no_exit.file)
    profile = {'model': LARGE_NAME, 'machine': machine_description(),
               'variants': [{'name': 'base', 'segments': profiles,
                             'no_exit': _segment_profile(base_runner, inputs[:1],
                                                         time_invocations),
                             'exit_curves': {LARGE_POLICY: [point]}}]}
    write_yaml(staging / 'profile.yaml', profile)
    staging.rename(target)
    print(f'cached {target} after {time.perf_counter() - started:.0f} s', flush=True)
    return target


def _segment_profile(runner, x: np.ndarray, timer) -> dict:
    spec = runner.spec
    return {'latency': {'litert_cpu': timer(runner, x, repeats=20, warmup=3)},
            'param_bytes': spec.param_bytes, 'macs': spec.macs}


FIXTURE = ROOT / 'test' / 'fixtures' / 'tiny_eenet'
QUEUE_CAPACITY = 4


def shipped_model(name: str) -> tuple[Manifest, np.ndarray, str]:
    """Load the shipped model and test-split frames (the test fixture until it is built)."""
    try:
        manifest = load_manifest(name)
    except ArtifactError as err:
        print(f'note: {err}; using the test fixture {FIXTURE.name} instead', flush=True)
        manifest = load_manifest(FIXTURE)
    try:
        frames = load_dataset(manifest.dataset).test.images[:1000]
    except DatasetError:
        frames = np.tile(np.load(FIXTURE.parent / 'frames.npy'), (16, 1, 1, 1))
    return manifest, frames, 'balanced'


def with_no_exit_variant(manifest: Manifest, policy: str, mode: str) -> Manifest:
    """Add the default variant's exit-less network as a one-segment variant 'no_exit'."""
    spec = manifest.variant().no_exit
    variant = Variant('no_exit', (spec,), thresholds={policy: {mode: []}})
    return replace(manifest, variants=(*manifest.variants, variant))


def steady_state(results: list) -> tuple[float, float, float, list]:
    """
    Frames per second and latency (median, p99 ms) between the 10th and 90th percentile.

    Also returns the frames finished in that window: the bound is computed for their exits.
    """
    done = np.sort([r.finished_s for r in results])
    lo, hi = int(0.1 * len(done)), int(0.9 * len(done)) - 1
    fps = (hi - lo) / (done[hi] - done[lo])
    window = [r for r in results if done[lo] <= r.finished_s <= done[hi]]
    latency = 1e3 * np.array([r.latency_s for r in window])
    return fps, float(np.median(latency)), float(np.percentile(latency, 99)), window


def realised_bound(pipeline: Pipeline, results: list) -> float:
    """1 / slowest stage per replica, with the exit rates these frames actually took."""
    config, placement = pipeline.config, pipeline.placement
    taken = np.bincount([r.exit_index for r in results], minlength=config.variant.num_exits)
    reach = reach_probabilities(config.variant, taken / len(results))
    model = pipeline.devices[placement.stages[0].devices[0]]
    worst = 0.0
    for stage in placement.stages:
        times = model.estimate_ms([config.refs[s] for s in stage.segments])
        load = sum(reach[s] * t for s, t in zip(stage.segments, times))
        worst = max(worst, load / len(stage.devices))
    return 1e3 / worst


def simulate(manifest: Manifest, frames: np.ndarray, tpus: int, placement: str, policy: str,
             mode: str, variant: str = 'base') -> dict:
    pipeline = Pipeline(manifest, [SimulatedEdgeTPU(f'tpu{i}') for i in range(tpus)],
                        variant=variant, policy=policy, thresholds=mode, placement=placement,
                        queue_capacity=QUEUE_CAPACITY)
    for i, frame in enumerate(frames):
        pipeline.submit(i, frame)
    results = pipeline.drain()
    assert all(r.status == 'ok' for r in results)
    fps, median, p99, window = steady_state(results)
    bound = realised_bound(pipeline, window)
    stats = pipeline.stats()
    return {'fps': fps, 'bound_fps': bound, 'efficiency': fps / bound,
            'planned_bound_fps': pipeline.placement.bound_fps, 'latency_median_ms': median,
            'latency_p99_ms': p99, 'energy_mj_per_frame': 1e3 * stats.energy_j / len(results),
            'placement': pipeline.placement.describe(),
            'exit_rates': [c / len(results) for c in stats.exit_histogram]}


def simulated_sweep(label: str, manifest: Manifest, frames: np.ndarray, policy: str, mode: str,
                    max_tpus: int) -> dict:
    no_exit = with_no_exit_variant(manifest, policy, mode)
    rows = {}
    for tpus in range(1, max_tpus + 1):
        started = time.perf_counter()
        balanced = simulate(manifest, frames, tpus, 'balanced', policy, mode,
                            manifest.default_variant)
        equal = simulate(manifest, frames, tpus, 'equal_parameter', policy, mode,
                         manifest.default_variant)
        plain = simulate(no_exit, frames, tpus, 'balanced', policy, mode, 'no_exit')
        rows[tpus] = {'balanced': balanced, 'equal_parameter': equal, 'no_exit': plain,
                      'balanced_vs_equal': balanced['fps'] / equal['fps'],
                      'balanced_vs_no_exit': balanced['fps'] / plain['fps']}
        print(f'  {label}: {tpus} TPU(s) simulated in {time.perf_counter() - started:.1f} s',
              flush=True)
    return rows


def cpu_two_stage(manifest: Manifest, frames: np.ndarray, policy: str, thresholds,
                  rounds: int = 3) -> dict:
    """
    Two LiteRT workers on the two cores against the same segments run one after another.

    Also measured, as the ceiling of any two-worker scheme on this machine at this moment:
    two independent chains in two threads, each on half of the frames (data parallel). The
    cores are shared with other jobs, so the three are interleaved round by round.
    """
    chains = [SegmentChain(manifest), SegmentChain(manifest)]
    exit_policy = get_policy(policy)
    inputs = chains[0].quantize_frames(frames)

    def run(chain: SegmentChain, part: np.ndarray) -> None:
        for x in part:
            chain.run(x[None], exit_policy, thresholds)

    devices = [LiteRTCpuDevice('cpu0'), LiteRTCpuDevice('cpu1')]
    spent = {'sequential': 0.0, 'pipeline': 0.0, 'two_threads': 0.0}
    with Pipeline(manifest, devices, policy=policy, thresholds=thresholds, placement='pipeline',
                  queue_capacity=QUEUE_CAPACITY) as pipeline:
        placement = pipeline.placement
        for _ in range(rounds):
            start = time.perf_counter()
            run(chains[0], inputs)
            spent['sequential'] += time.perf_counter() - start
            start = time.perf_counter()
            for i, x in enumerate(inputs):
                pipeline.submit(i, x)
            results = pipeline.drain(timeout=600)
            spent['pipeline'] += time.perf_counter() - start
            assert all(r.status == 'ok' for r in results)
            workers = [threading.Thread(target=run, args=(chain, inputs[k::2]))
                       for k, chain in enumerate(chains)]
            start = time.perf_counter()
            for worker in workers:
                worker.start()
            for worker in workers:
                worker.join()
            spent['two_threads'] += time.perf_counter() - start
    total = sum(stage.load_ms for stage in placement.stages)
    count = rounds * len(inputs)
    return {'sequential_fps': count / spent['sequential'],
            'pipeline_fps': count / spent['pipeline'],
            'speedup': spent['sequential'] / spent['pipeline'],
            'two_thread_ceiling': spent['sequential'] / spent['two_threads'],
            'ideal_speedup_for_cut': total / placement.bottleneck_ms,
            'placement': placement.describe(), 'thresholds': list(thresholds)}


def calibration_rows() -> list:
    rows = []
    for interface in ('usb', 'pcie'):
        timing = calibrated_timing(interface)
        for name, published, modelled, error in calibration_table(interface):
            rows.append([interface, name, published, modelled, error])
        utilisation = ', '.join(f'{k} {v:.2f}' for k, v in timing.utilisation.items())
        rows.append([interface, f'fit: overhead {1e3 * timing.overhead_s:.2f} ms, utilisation '
                     f'{utilisation}, {timing.bandwidth_bytes_per_s / 1e6:.0f} MB/s',
                     '', '', ''])
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--json', type=output_file, help='write results here')
    parser.add_argument('--shipped', default='fmnist_eenet', help='the shipped model')
    parser.add_argument('--max-tpus', type=bounded(int, 1, 64), default=8)
    parser.add_argument('--prepare-only', action='store_true',
                        help='only export (and cache) the large model')
    args = parser.parse_args()
    large_dir = prepare_large_model()
    if args.prepare_only:
        return 0
    print(format_table(['link', 'network', 'published ms', 'modelled ms', 'error %'],
                       calibration_rows()) + '\n', flush=True)

    shipped, shipped_frames, shipped_mode = shipped_model(args.shipped)
    large = load_manifest(large_dir)
    large_frames = np.tile(bench_frames(LARGE['frames'], LARGE['seed']), (2, 1, 1, 1))
    models = {
        shipped.name: (shipped, shipped_frames, shipped.default_policy, shipped_mode),
        large.name: (large, large_frames, LARGE_POLICY, LARGE_MODE),
    }
    sweeps = {label: simulated_sweep(label, *spec, args.max_tpus)
              for label, spec in models.items()}
    rows = []
    for label, sweep in sweeps.items():
        for tpus, row in sweep.items():
            b, e, n = row['balanced'], row['equal_parameter'], row['no_exit']
            rows.append([label, tpus, b['placement'], b['fps'], b['bound_fps'], b['efficiency'],
                         b['latency_median_ms'], b['latency_p99_ms'], b['energy_mj_per_frame'],
                         e['fps'], row['balanced_vs_equal'], n['fps'],
                         row['balanced_vs_no_exit']])
    print(format_table(['model', 'TPUs', 'balanced placement', 'fps', 'bound fps', 'fps/bound',
                        'lat med ms', 'lat p99 ms', 'mJ/frame', 'equal-param fps',
                        'bal/equal', 'no-exit fps', 'bal/no-exit'], rows) + '\n', flush=True)

    cpu_frames = bench_frames(LARGE['frames'], LARGE['seed'])
    assumed = large.variant().thresholds[LARGE_POLICY][LARGE_MODE]
    cpu = {'with_exits': cpu_two_stage(large, cpu_frames, LARGE_POLICY, assumed),
           'exits_disabled': cpu_two_stage(large, cpu_frames, LARGE_POLICY, [None, None])}
    print(format_table(['CPU, 2 LiteRT stages', 'placement', 'sequential fps', 'pipeline fps',
                        'speed-up', 'ideal for this cut', '2 threads, data parallel'],
                       [[key, r['placement'], r['sequential_fps'], r['pipeline_fps'],
                         r['speedup'], r['ideal_speedup_for_cut'], r['two_thread_ceiling']]
                        for key, r in cpu.items()]))

    segments = {label: len(spec[0].variant().segments) for label, spec in models.items()}
    flat = {
        'sim_bound_efficiency': min(row['balanced']['efficiency']
                                    for sweep in sweeps.values() for row in sweep.values()),
        'balanced_vs_equal_throughput': min(
            sweep[n]['balanced_vs_equal'] for label, sweep in sweeps.items()
            for n in range(2, min(segments[label], args.max_tpus) + 1)),
        'cpu_two_stage_speedup': cpu['with_exits']['speedup'],
        'cpu_two_stage_speedup_exits_disabled': cpu['exits_disabled']['speedup'],
    }
    print('\n' + '\n'.join(f'{k}: {v:.4g}' for k, v in flat.items()))
    write_json(args.json, {**flat, 'simulated': sweeps, 'cpu_two_stage': cpu,
                           'calibration': calibration_rows(),
                           'large_model': {**LARGE, 'assumed_exit_rates': LARGE_EXIT_RATES},
                           'definitions': {
                               'balanced_vs_equal_throughput':
                                   'lowest ratio over 2..(number of segments) TPUs, where the '
                                   'equal-parameter baseline uses every TPU, over both models',
                               'sim_bound_efficiency':
                                   'lowest steady-state fps / realised bound of the balanced '
                                   'placement over 1..max TPUs and both models'}})
    return 0


if __name__ == '__main__':
    sys.exit(main())
