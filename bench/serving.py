"""
Serving many camera streams on 8 simulated Edge TPUs: deadlines, energy and admission.

Random stream sets (10 to 30 Hz, D in [0.8, 1] T, a model each, a starting mode and accuracy
floors per mode) are admitted and run in virtual time through one mode change each, on
``ModelledEdgeTPU`` devices (the simulated Edge TPU's time, energy and swap
model; no LiteRT), seeded. Models: the three shipped ones, whose jobs replay recorded test
frames (each frame's exit at every variant and threshold set, from the real int8 segments),
and ``mnv2ee_w2_224``, a MobileNetV2-EE (width 2, 224 px, 1000 classes) described by its layer
sizes (11.6 MB of int8 weights, more than one TPU's 8 MB), with pruned variants that keep 70%
and 50% of the expansion channels; its accuracies and exit rates are ASSUMED (see
``ASSUMED_POINTS``), so every number involving it rests on assumed exit behaviour.

Each set is drawn for a load level u: streams are added until the TPU demand of the fixed
configuration (every stream on its unpruned variant at width 1: sum C / T) reaches u times
the pool. The levels (``LOADS``) run from a lightly loaded board to beyond the point where no
configuration can fit (see ``LOADS``), in equal numbers of sets.

Measured, on the same sets:
- serving_admitted_sets, serving_jobs, serving_misses_on_admitted and
  serving_response_over_bound_max (observed response / analysed bound, all streams);
- serving_energy_ratio: energy per frame of the designer's default (unpruned variant at the
  mode's thresholds, at its fastest width) over the chosen least-energy configuration's, both
  admitted and simulated, at the same floors;
- serving_admission_gain: sets admitted with every variant and width over sets admitted with
  the unpruned variant at one fixed width (the best single width, for the baseline's sake),
  over all load levels; and per level the admitted fraction of both (an acceptance curve);
- global against partitioned dispatch: admitted sets, energy and response ratios.

    python bench/serving.py [--sets N] [--seconds S] [--json OUT] [--png OUT] [--quick]
"""

import argparse
import math
import sys
import time

from _paths import ROOT
from dyn_perception.runtime.artifacts import (
    InputSpec, load_manifest, load_profile, Manifest, OperatingPoint, Profile, SegmentProfile,
    SegmentSpec, TensorSpec, Variant, VariantProfile
)
from dyn_perception.runtime.chain import SegmentChain
from dyn_perception.runtime.datasets import load_dataset
from dyn_perception.runtime.devices import calibrated_timing
from dyn_perception.runtime.devices.layers import Layer, LayerBuilder, Network
from dyn_perception.runtime.exits import exit_index
from dyn_perception.runtime.modes import load_modes
from dyn_perception.runtime.scheduling import Dispatch
from dyn_perception.runtime.serving import (
    ModelledEdgeTPU, Planner, PoolSpec, Served, ServedModel, ServingError, StreamFile,
    StreamServer, StreamSpec
)
from dyn_perception.runtime.serving.admission import ticks_up
from dyn_perception.runtime.serving.streams import MAX_POOL_TPUS
import numpy as np
from report import bounded, format_table, output_file, write_json
from tqdm import tqdm

MODES = ('performance', 'balanced', 'eco', 'critical')
SHIPPED = ('fmnist_eenet', 'fmnist_eenet_patch', 'mnist_blenet')
LARGE = 'mnv2ee_w2_224'
TPUS = 8
RATES_HZ = (10.0, 15.0, 20.0, 30.0)
FRAMES = 500
# Global admission runs on every GLOBAL_EVERY-th set (prime: one set per load level in turn).
GLOBAL_EVERY = 113
# Load levels: TPU demand of the fixed configuration (unpruned, width 1) over the pool. From
# a few streams to half again the pool: the fixed configuration cannot be admitted above 1
# (its demand alone exceeds the pool), and no choice lowers a stream's demand below 0.72 of
# its fixed one (the large model's 50% variant at width 1; the small models' C hardly moves),
# so above 1 / 0.72 = 1.39 nothing can be admitted either way. Every level has equal weight.
LOADS = tuple(round(0.1 * k, 1) for k in range(1, 16))
# Assumed final-exit accuracy of the large model's variants (ImageNet-like scale) and, per
# mode, the exit rates and the accuracy lost against the variant's final exit.
ASSUMED_FINAL = {'base': 0.76, 'p30': 0.75, 'p50': 0.735}
ASSUMED_POINTS = {'performance': ((0.10, 0.15, 0.75), 0.0),
                  'balanced': ((0.25, 0.25, 0.50), 0.005),
                  'eco': ((0.40, 0.30, 0.30), 0.015),
                  'critical': ((0.55, 0.25, 0.20), 0.04)}
# MobileNetV2 stages (expansion, channels, repeats, stride), Sandler et al. 2018.
MOBILENETV2 = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
               (6, 160, 3, 2), (6, 320, 1, 1))


def _channels(c: float) -> int:
    return max(8, int(c + 4) // 8 * 8)


def large_blocks(width: float = 2.0, keep: float = 1.0, size: int = 224) -> list[list[Layer]]:
    """List the layers of MobileNetV2 at ``width`` per block (stem, 17 blocks, last conv)."""
    b = LayerBuilder(size, size)
    blocks, mark = [], 0

    def close_block() -> None:
        nonlocal mark
        blocks.append(b.layers[mark:])
        mark = len(b.layers)

    b.conv(_channels(32 * width), 3, 2)
    close_block()
    for t, c, n, s in MOBILENETV2:
        cout = _channels(c * width)
        for r in range(n):
            stride, cin = (s if r == 0 else 1), b.shape[2]
            if t != 1:
                b.conv(_channels(cin * t * keep))
            b.depthwise(3, stride).conv(cout)
            if stride == 1 and cin == cout:
                b.vector('ADD')
            close_block()
    b.conv(_channels(1280 * width))
    close_block()
    return blocks


def _exit_head(shape: tuple[int, int, int], classes: int = 1000) -> list[Layer]:
    """Global average pooling and a dense classifier, as the package's exit heads are built."""
    c = shape[2]
    return [Layer('MEAN', 'vector', (1, 1, c), elements=shape[0] * shape[1] * c),
            Layer('FULLY_CONNECTED', 'matrix', (1, 1, classes), c, (1, 1),
                  c * classes + 4 * classes)]


def large_model(directory=ROOT / 'out' / LARGE) -> ServedModel:
    """Describe MobileNetV2-EE w2 by its layers: 4 segments, exits after stages 2, 4."""
    # Block indices where segments end: stage 2 ends at block 7, stage 4 at 14; the final
    # part is cut once more so that 4 TPUs can hold a stage each.
    cuts = ((0, 7, True), (7, 14, True), (14, 17, False), (17, 19, True))
    variants, profiles = [], []
    for name, keep in (('base', 1.0), ('p30', 0.7), ('p50', 0.5)):
        blocks = large_blocks(keep=keep)
        segments = []
        previous = TensorSpec('input', (1, 224, 224, 3), 0.02, 0)
        for i, (first, end, has_exit) in enumerate(cuts):
            layers = [layer for block in blocks[first:end] for layer in block]
            h, w, c = layers[-1].out_shape
            if has_exit:
                layers += _exit_head((h, w, c))
            last = i == len(cuts) - 1
            features = None if last else TensorSpec('features', (1, h, w, c), 0.02, 0)
            logits = TensorSpec('logits', (1, 1000), 0.1, 0) if has_exit else None
            file = f'{name}/segment{i}.tflite'
            network = Network(f'{name}_segment{i}', tuple(layers),
                              int(np.prod(previous.shape)),
                              (h * w * c if features else 0) + (1000 if has_exit else 0))
            ModelledEdgeTPU.describe(directory / file, network)
            segments.append(SegmentSpec(file, previous, features, logits, network.macs,
                                        network.weight_bytes))
            previous = features
        thresholds = {'entropy': {mode: [0.1 * (k + 1)] * 2 for k, mode in enumerate(MODES)}}
        variants.append(Variant(name, tuple(segments), thresholds))
        curves = tuple(OperatingPoint((0.1 * (k + 1),) * 2, rates,
                                      ASSUMED_FINAL[name] - loss, 0.0, mode)
                       for k, (mode, (rates, loss)) in enumerate(ASSUMED_POINTS.items()))
        profiles.append(VariantProfile(name, tuple(SegmentProfile({}) for _ in segments),
                                       {'entropy': curves},
                                       final_exit_accuracy=ASSUMED_FINAL[name]))
    manifest = Manifest(LARGE, 'mobilenetv2_ee', 'assumed', InputSpec(224, 224, 3, (0.5,) * 3,
                                                                      (0.25,) * 3),
                        tuple(f'class{i}' for i in range(1000)), tuple(variants), 'base',
                        'entropy', {'derived_from': 'layer lists'}, directory)
    return ServedModel(manifest, Profile(LARGE, {}, tuple(profiles)))


class Traces:
    """Which exit each recorded frame takes at each model point (real exits, shipped models)."""

    def __init__(self, models: dict[str, ServedModel], rng: np.random.Generator):
        self.exits: dict[tuple[str, str], np.ndarray] = {}
        self.rng = rng
        for name, model in models.items():
            if name == LARGE:
                continue
            manifest = model.manifest
            images = load_dataset(manifest.dataset).test.images[:FRAMES]
            for variant in manifest.variants:
                chain = SegmentChain(manifest, variant.name)
                logits = chain.all_exit_logits(chain.quantize_frames(images))
                scores = [model.policy.score(z) for z in logits]
                for point in model.points:
                    if point.variant.name == variant.name:
                        self.exits[name, point.label] = exit_index(
                            scores, model.policy, point.thresholds)

    def __call__(self, point, frame: int) -> int:
        exits = self.exits.get((point.model, point.label))
        if exits is not None:
            return int(exits[frame % len(exits)])
        # The large model: drawn from its assumed exit rates.
        return int(self.rng.choice(len(point.exit_rates), p=point.exit_rates))


def fixed_demand(planner: Planner, model: ServedModel) -> float:
    """Seconds of C of the model's unpruned variant at width 1 (the load levels' unit)."""
    base = next(p for p in model.points if p.variant.name == model.manifest.default_variant)
    return ticks_up(planner.gang_plan(base, 1, 'resident').wcet_s, planner.tick_s) * planner.tick_s


def random_set(rng: np.random.Generator, models: dict[str, ServedModel], budgets: dict,
               demand: dict[str, float], target: float):
    """
    Draw streams until the fixed configuration's TPU demand reaches ``target`` TPUs.

    Floors of the modes: the unpruned final exit minus the mode's budget. Where the unpruned
    variant's own mode point falls short of that (a calibration bound is a 95% bound, not
    the point), the floor is that point's accuracy, so that the designer's default always
    keeps the floors.
    """
    streams, load = [], 0.0
    names = list(models)
    weights = np.array([0.2 if name != LARGE else 0.4 for name in names])
    while load < target:
        model = models[names[rng.choice(len(names), p=weights / weights.sum())]]
        rate = float(rng.choice(RATES_HZ))
        base = [p for p in model.points if p.variant.name == model.manifest.default_variant]
        final = next(p.accuracy for p in base if p.threshold_mode == 'final')
        # Rounded down, so that the point the floor comes from still keeps it.
        floors = {mode: math.floor(1e4 * min(final - budgets[mode], *(
            p.accuracy for p in base if p.threshold_mode == mode))) / 1e4 for mode in MODES}
        streams.append(StreamSpec(f's{len(streams)}', model.name, 1 / rate,
                                  float(rng.uniform(0.8, 1.0)) / rate, floors))
        load += demand[model.name] * rate
    return tuple(streams), str(rng.choice(MODES)), str(rng.choice(MODES))


def designer_limits(planner: Planner, served, mode: str):
    """Unpruned variant at the mode's thresholds, at its fastest width (per stream)."""
    points, widths = {}, {}
    for s in served:
        base = [p for p in s.model.points if p.variant.name == s.model.manifest.default_variant
                and p.threshold_mode == mode]
        times = {w: planner.gang_plan(base[0], w, 'resident').wcet_s
                 for w in range(1, planner.max_width(s) + 1)}
        points[s.spec.name] = base
        # Ties go to the widest gang: one segment per TPU, as edgetpu_compiler's
        # --num_segments pipelining would deploy it.
        widths[s.spec.name] = [min(times, key=lambda w: (round(times[w], 9), -w))]
    return points, widths


def admits(planner: Planner, dispatch: str, served, mode: str, **limits) -> bool:
    admit = {'partitioned': planner.admit_partitioned, 'global': planner.admit_global,
             'necessary': planner.necessary}[dispatch]
    try:
        admit(served, mode, **limits)
        return True
    except ServingError:
        return False


def simulate(planner, dispatch, streams, mode, change, seconds, rng, traces, limits=None):
    """
    Run one admitted set through a mode change, or None if refused.

    Returns the per-stream rows, the energy per frame before the change (mJ), the change's
    outcome ('reconfigured', 'room for loads', 'in place', 'refused', or None without one)
    and the seconds each switch waited for an idle pool.
    """
    devices = [ModelledEdgeTPU(f'tpu{i}', planner.device.timing) for i in range(planner.tpus)]
    pool = PoolSpec(planner.tpus, dispatch, planner.rule, planner.tick_s)
    try:
        server = StreamServer(StreamFile(pool, streams, mode), devices, modes=MODES,
                              models=traces.models, planner=planner, exit_trace=traces)
    except ServingError:
        return None
    if limits is not None:
        # The designer's fixed configuration replaces the chosen one (no mode change).
        served = server.served
        admit = planner.admit_partitioned if dispatch == 'partitioned' else planner.admit_global
        try:
            admitted = planner.with_loading(admit(served, mode, **limits), 0.0)
        except ServingError:
            return None
        for device, target in enumerate(admitted.residents):
            if target:
                devices[device].load(target)
        server._install(admitted, served)
        change = None
    events = []
    for spec in streams:
        t = float(rng.uniform(0, spec.period_s))
        while t < seconds:
            events.append((t, spec.name))
            t += spec.period_s * (1.0 if rng.random() < 0.7 else 1 + rng.uniform(0, 0.5))
    records = []
    server.on_result = records.append
    changed = change is None or change == mode
    outcome = None  # the mode change: how it was made, or 'refused'
    frame = int(rng.integers(FRAMES))
    for t, name in sorted(events):
        if not changed and t >= seconds / 2:
            try:
                server.set_mode(change)
                reason = server.switches[-1]['reason']  # 'mode=eco' or 'mode=eco (how)'
                outcome = reason.partition(' (')[2].rstrip(')') or 'reconfigured'
            except ServingError:
                outcome = 'refused'
            changed = True
        server.submit(name, frame, at=t)
        frame += 1
    server.drain()
    # Energy per frame before any mode change: comparable with a run without one.
    energy = [r['energy_j'] for r in records if r['status'] == 'ok' and r['mode'] == mode]
    delays = [s['effective_s'] - s['requested_s'] for s in server.switches
              if s['effective_s'] is not None]
    return server.report(), 1e3 * float(np.mean(energy)), outcome, delays


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--sets', type=bounded(int, 1), default=1800,
                        help='stream sets, spread over LOADS')
    parser.add_argument('--seconds', type=bounded(float, 0, above=True), default=1.5,
                        help='virtual seconds per set')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--tpus', type=bounded(int, 1, MAX_POOL_TPUS), default=TPUS,
                        help='pool size (targets: 8)')
    parser.add_argument('--rule', default='strict', choices=('strict', 'bypass'))
    parser.add_argument('--json', type=output_file,
                        default=str(ROOT / 'out' / 'bench' / 'serving.json'))
    parser.add_argument('--png', type=output_file,
                        default=str(ROOT / 'out' / 'bench' / 'serving.png'))
    parser.add_argument('--quick', action='store_true', help='divide the set count by 10')
    args = parser.parse_args(argv)
    sets = max(2 * len(LOADS), args.sets // 10) if args.quick else args.sets
    started = time.perf_counter()
    rng = np.random.default_rng(args.seed)
    models = {name: ServedModel(load_manifest(name), load_profile(name)) for name in SHIPPED}
    models[LARGE] = large_model()
    print("recording the shipped models' exits on their test frames ...", flush=True)
    traces = Traces(models, np.random.default_rng(args.seed + 1))
    traces.models = models
    timing = calibrated_timing('usb')
    budgets = {m.name: m.max_accuracy_loss / 100 for m in load_modes()}
    planner = Planner(ModelledEdgeTPU('tpu', timing), ModelledEdgeTPU('probe', timing), args.tpus,
                      Dispatch(args.rule), 1e-4, MODES)
    demand = {name: fixed_demand(planner, model) for name, model in models.items()}
    stats = {d: {'tried': 0, 'admitted': 0, 'jobs': 0, 'misses': 0, 'over': 0.0, 'energy': [],
                 'designer': [], 'ratios': []} for d in ('partitioned', 'global')}
    baseline = dict.fromkeys(range(1, 5), 0)
    # Per load level: sets, streams, and sets admitted by each search.
    # 'feasible': sets that pass the necessary conditions of any admission (each stream alone
    # meets its deadline, the least-demand options fit the pool); 'feasible_refused': of
    # those, the sets partitioned admission refuses.
    levels = {u: {'sets': 0, 'streams': 0, 'feasible': 0, 'feasible_refused': 0,
                  'partitioned': 0, 'global': 0, 'global_tried': 0,
                  **{f'width{w}': 0 for w in baseline}} for u in LOADS}
    # Sets some fixed width admits and the search refuses (its greedy is not exhaustive), and
    # the sets tried globally that partitioned dispatch admits.
    fixed_only = partitioned_of_global = 0
    admission_s = {'partitioned': 0.0, 'global': 0.0}
    # Mode changes half way through each admitted set, by outcome, and how long each switch
    # waited for an idle pool.
    changes = {d: dict.fromkeys(('reconfigured', 'room for loads', 'in place', 'refused'), 0)
               for d in stats}
    switch_delays: list[float] = []
    for index in tqdm(range(sets), desc='stream sets', mininterval=2.0):
        level = LOADS[index % len(LOADS)]
        streams, mode, change = random_set(rng, models, budgets, demand, level * args.tpus)
        row = levels[level]
        row['sets'] += 1
        row['streams'] += len(streams)
        served = [Served(s, models[s.model]) for s in streams]
        bases = {s.spec.name: [p for p in s.model.points
                               if p.variant.name == s.model.manifest.default_variant]
                 for s in served}
        fixed_any = False
        for width in baseline:
            fixed = admits(planner, 'partitioned', served, mode, points=bases,
                           widths={s.spec.name: [width] for s in served})
            baseline[width] += fixed
            row[f'width{width}'] += fixed
            fixed_any |= fixed
        feasible = admits(planner, 'necessary', served, mode)
        row['feasible'] += feasible
        points, widths = designer_limits(planner, served, mode)
        for dispatch, record in stats.items():
            # Global admission is the costly search: every GLOBAL_EVERY-th set only.
            if dispatch == 'global' and index % GLOBAL_EVERY:
                continue
            record['tried'] += 1
            row['global_tried'] += dispatch == 'global'
            clock = time.perf_counter()
            admitted = admits(planner, dispatch, served, mode)
            admission_s[dispatch] += time.perf_counter() - clock
            if not admitted:
                fixed_only += dispatch == 'partitioned' and fixed_any
                row['feasible_refused'] += dispatch == 'partitioned' and feasible
                continue
            row[dispatch] += 1
            partitioned_of_global += dispatch == 'partitioned' and not index % GLOBAL_EVERY
            rows, energy, outcome, delays = simulate(planner, dispatch, streams, mode, change,
                                                     args.seconds, rng, traces)
            if outcome is not None:
                changes[dispatch][outcome] += 1
            switch_delays += delays
            record['admitted'] += 1
            record['jobs'] += sum(r['completed'] for r in rows)
            record['misses'] += sum(r['misses'] for r in rows)
            record['over'] = max(record['over'], max(r['max_over_bound'] for r in rows))
            record['ratios'] += [r['response_max_ms'] / r['bound_ms'] for r in rows
                                 if r['completed']]
            designer = simulate(planner, dispatch, streams, mode, None, args.seconds, rng,
                                traces, limits={'points': points, 'widths': widths})
            if designer is None:
                continue
            record['designer'].append(designer[1])
            record['energy'].append(energy)
    part, glob = stats['partitioned'], stats['global']
    best_width = max(baseline, key=baseline.get)
    energy_ratio = (float(np.mean(part['designer']) / np.mean(part['energy']))
                    if part['energy'] else math.nan)
    fraction = {u: row['partitioned'] / max(1, row['sets']) for u, row in levels.items()}
    feasible_sets = sum(row['feasible'] for row in levels.values())
    fixed_fraction = {u: row[f'width{best_width}'] / max(1, row['sets'])
                      for u, row in levels.items()}
    results = {
        'serving_admitted_sets': part['admitted'],
        'serving_jobs': part['jobs'] + glob['jobs'],
        'serving_misses_on_admitted': part['misses'] + glob['misses'],
        'serving_response_over_bound_max': max(part['over'], glob['over']),
        'serving_energy_ratio': energy_ratio,
        'serving_admission_gain': part['admitted'] / max(1, baseline[best_width]),
        'serving_sets_demand_feasible': feasible_sets,
        'serving_admission_gain_ceiling': feasible_sets / max(1, baseline[best_width]),
        'serving_sets_feasible_refused': sum(row['feasible_refused'] for row in levels.values()),
        'serving_sets': sets,
        'serving_load_levels': list(LOADS),
        'serving_load_half_admitted': half_load(fraction),
        'serving_load_half_admitted_fixed': half_load(fixed_fraction),
        'serving_admitted_fraction_by_load': {str(u): f for u, f in fraction.items()},
        'serving_fixed_admitted_fraction_by_load': {str(u): f for u, f in fixed_fraction.items()},
        'serving_by_load': {str(u): row for u, row in levels.items()},
        'serving_sets_fixed_only': fixed_only,
        'serving_admitted_sets_global': glob['admitted'],
        'serving_tried_sets_global': glob['tried'],
        'serving_admitted_sets_partitioned_of_global': partitioned_of_global,
        'serving_admission_seconds_per_set_partitioned':
            admission_s['partitioned'] / max(1, part['tried']),
        'serving_admission_seconds_per_set_global': admission_s['global'] / max(1, glob['tried']),
        'serving_energy_ratio_global': (float(np.mean(glob['designer']) / np.mean(glob['energy']))
                                        if glob['energy'] else math.nan),
        'serving_baseline_admitted_by_width': {str(w): n for w, n in baseline.items()},
        'serving_baseline_width': best_width,
        'serving_mean_observed_over_bound_partitioned': float(np.mean(part['ratios'] or [0])),
        'serving_mean_observed_over_bound_global': float(np.mean(glob['ratios'] or [0])),
        'serving_mode_changes_partitioned': changes['partitioned'],
        'serving_mode_changes_global': changes['global'],
        'serving_mode_changes_refused_fraction': (
            changes['partitioned']['refused'] / max(1, sum(changes['partitioned'].values()))),
        'serving_switch_wait_ms_max': 1e3 * max(switch_delays, default=0.0),
        'serving_switch_wait_ms_mean': 1e3 * float(np.mean(switch_delays or [0.0])),
        'serving_energy_sets_partitioned': len(part['energy']),
        'serving_energy_sets_global': len(glob['energy']),
        'serving_seconds_per_set': args.seconds,
        'serving_rule': args.rule,
        'bench_seconds': time.perf_counter() - started,
    }
    print(format_table(['dispatch', 'admitted', 'of', 'jobs', 'misses', 'max obs/bound',
                        'mean obs/bound', 'energy ratio (designer / chosen)'],
                       [[d, s['admitted'], s['tried'], s['jobs'], s['misses'], s['over'],
                         float(np.mean(s['ratios'] or [0])),
                         float(np.mean(s['designer']) / np.mean(s['energy']))
                         if s['energy'] else math.nan] for d, s in stats.items()]))
    print(format_table(
        ['load', 'sets', 'streams', 'demand-feasible', 'feasible refused', 'chosen',
         *(f'unpruned w={w}' for w in baseline), 'gain', 'global'],
        [[u, row['sets'], row['streams'] / max(1, row['sets']),
          row['feasible'] / max(1, row['sets']), row['feasible_refused'], fraction[u],
          *(row[f'width{w}'] / max(1, row['sets']) for w in baseline),
          row['partitioned'] / row[f'width{best_width}'] if row[f'width{best_width}']
          else math.inf if row['partitioned'] else math.nan,
          f"{row['global']}/{row['global_tried']}"] for u, row in levels.items()]))
    ceiling, refused = (results[k] for k in ('serving_admission_gain_ceiling',
                                             'serving_sets_feasible_refused'))
    print(f'demand-feasible sets (necessary for any admission): {feasible_sets}, a ceiling '
          f'of {ceiling:.2f} on the gain; of them refused by partitioned admission: {refused}')
    print(format_table(['dispatch', 'mode changes', *changes['partitioned']],
                       [[d, sum(c.values()), *c.values()] for d, c in changes.items()]))
    print(f'a switch waited for an idle pool {results["serving_switch_wait_ms_mean"]:.2f} ms '
          f'on average, {results["serving_switch_wait_ms_max"]:.2f} ms at most')
    print(f'sets some fixed width admits and the search refuses: {fixed_only}; of the '
          f"{glob['tried']} sets tried globally, partitioned dispatch admits "
          f'{partitioned_of_global}')
    targets = [('serving_admitted_sets', '>=', 1000), ('serving_jobs', '>=', 100000),
               ('serving_misses_on_admitted', '==', 0),
               ('serving_response_over_bound_max', '<=', 1),
               ('serving_energy_ratio', '>=', 1.3), ('serving_admission_gain', '>=', 1.25)]
    print(format_table(['key', 'value', 'target'],
                       [[k, results[k], f'{op} {v}'] for k, op, v in targets]))
    write_json(args.json, results)
    plot(stats, levels, best_width, args.png)
    return 1 if results['serving_misses_on_admitted'] else 0


def half_load(fraction: dict[float, float]) -> float:
    """Interpolate the load level at which the admitted fraction first falls below one half."""
    loads = sorted(fraction)
    for low, high in zip(loads, loads[1:]):
        if fraction[low] >= 0.5 > fraction[high]:
            return low + (high - low) * (fraction[low] - 0.5) / (fraction[low] - fraction[high])
    return math.nan if fraction[loads[0]] < 0.5 else loads[-1]


def plot(stats, levels, best_width: int, path: str) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    from pathlib import Path
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    for dispatch, s in stats.items():
        axes[0].hist(s['ratios'], bins=40, range=(0, 1), alpha=0.6, label=dispatch)
    axes[0].set_xlabel('observed max response / analysed bound')
    axes[0].set_ylabel('streams')
    axes[0].legend()
    loads = list(levels)
    widths = sorted(int(k[5:]) for k in levels[loads[0]] if k.startswith('width'))
    axes[1].plot(loads, [levels[u]['partitioned'] / max(1, levels[u]['sets']) for u in loads],
                 'o-', color='C0', label='chosen variant and width (partitioned)')
    for w in widths:
        axes[1].plot(loads, [levels[u][f'width{w}'] / max(1, levels[u]['sets']) for u in loads],
                     's--' if w == best_width else ':', color='grey', alpha=1 if w == best_width
                     else 0.5, label=f'unpruned, width {w}')
    axes[1].plot(loads, [levels[u]['feasible'] / max(1, levels[u]['sets']) for u in loads],
                 '^-', color='C2', alpha=0.6, label='demand-feasible (ceiling of any admission)')
    tried = [u for u in loads if levels[u]['global_tried']]
    axes[1].plot(tried, [levels[u]['global'] / levels[u]['global_tried'] for u in tried], 'x',
                 color='C1', label='chosen, global (few sets)')
    axes[1].set_xlabel('load: TPU demand of the unpruned variants at width 1 / pool')
    axes[1].set_ylabel('fraction of stream sets admitted')
    axes[1].legend(fontsize=7, loc='center left')
    for dispatch, s in stats.items():
        if s['energy']:
            axes[2].scatter(s['energy'], s['designer'], s=6, alpha=0.5, label=dispatch)
    top = max([v for s in stats.values() for v in s['designer']] or [1])
    axes[2].plot([0, top], [0, top], 'k--', lw=0.8)
    axes[2].set_xlabel('chosen configuration, mJ / frame')
    axes[2].set_ylabel('designer default, mJ / frame')
    axes[2].legend()
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    print(f'wrote {path}')


if __name__ == '__main__':
    sys.exit(main())
