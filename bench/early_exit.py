"""
Early exits against the same network without exits, in the same run, on the test split.

For each shipped model: accuracy, mean MACs per frame and latency per frame at the
thresholds chosen on the validation split for at most 0.5 points accuracy loss (the 'balanced'
mode of the manifest), against the no-exit network exported from the same weights. Latency is
reported twice: LiteRT time (the interpreter calls of the segments each frame ran) and runtime
time (the full per-frame path in Python, exit scoring included). Both sides are measured in
alternating blocks of frames so that machine noise hits them alike.

    python bench/early_exit.py [--json OUT] [--frames N]
"""

import argparse
import sys
import time

import _paths  # noqa: F401 - puts the repository root on sys.path
from dyn_perception.runtime.artifacts import load_manifest
from dyn_perception.runtime.chain import SegmentChain
from dyn_perception.runtime.datasets import load_dataset
from dyn_perception.runtime.exits import get_policy
from dyn_perception.runtime.preprocess import to_int8_input
from dyn_perception.runtime.segment import SegmentRunner
import numpy as np
from report import bounded, format_table, output_file, write_json

# BranchyNet (Teerapittayanon et al., ICPR 2016), Table I, B-LeNet on MNIST, CPU.
BRANCHYNET_BLENET = {'accuracy': 99.25, 'cpu_speedup': 5.4}
# The default model (the flat keys), the same family with a patchify stem, and B-LeNet.
MODELS = (('fmnist', 'fmnist_eenet'), ('fmnist_patch', 'fmnist_eenet_patch'),
          ('mnist_blenet', 'mnist_blenet'))


def invoke_only(runners: list, x: np.ndarray) -> None:
    """Run segments with nothing but the interpreter calls and the int8 hand-over."""
    for runner in runners:
        x = runner.invoke(x)


def measure(model: str, mode: str, frames: int, block: int = 250) -> dict:
    manifest = load_manifest(model)
    chain = SegmentChain(manifest)
    variant = chain.variant
    policy = get_policy(manifest.default_policy)
    thresholds = variant.thresholds[policy.name][mode]
    baseline = SegmentRunner(variant.no_exit, manifest.path(variant.no_exit.file))
    test = load_dataset(manifest.dataset).test
    count = min(frames, len(test)) if frames else len(test)
    images, labels = test.images[:count], test.labels[:count]
    ee_inputs = chain.quantize_frames(images)
    base_inputs = to_int8_input(images, manifest.input, variant.no_exit.input)
    cumulative = variant.cumulative_macs_at_exits()
    segments_run = [i + 1 for i in variant.exit_segment_indices()]

    ee_pred, exits, base_pred = np.empty(count, int), np.empty(count, int), np.empty(count, int)
    ee_time = base_time = ee_litert = base_litert = 0.0
    for start in range(0, count, block):
        stop = min(start + block, count)
        t0 = time.perf_counter()
        for i in range(start, stop):
            decision = chain.run(ee_inputs[i:i + 1], policy, thresholds)
            ee_pred[i], exits[i] = decision.class_id, decision.exit_index
        t1 = time.perf_counter()
        for i in range(start, stop):
            base_pred[i] = int(np.argmax(baseline(base_inputs[i:i + 1]).logits))
        t2 = time.perf_counter()
        ee_time, base_time = ee_time + t1 - t0, base_time + t2 - t1
        # The same frames again, interpreter calls only (no exit scoring, no Python dispatch):
        # the segments each frame ran above, against the no-exit network.
        t0 = time.perf_counter()
        for i in range(start, stop):
            invoke_only(chain.runners[:segments_run[exits[i]]], ee_inputs[i:i + 1])
        t1 = time.perf_counter()
        for i in range(start, stop):
            invoke_only([baseline], base_inputs[i:i + 1])
        t2 = time.perf_counter()
        ee_litert, base_litert = ee_litert + t1 - t0, base_litert + t2 - t1
    ee_macs = float(np.mean(np.asarray(cumulative)[exits]))
    result = {
        'model': model, 'mode': mode, 'policy': policy.name, 'thresholds': thresholds,
        'frames': count,
        'accuracy': 100 * float((ee_pred == labels).mean()),
        'no_exit_accuracy': 100 * float((base_pred == labels).mean()),
        'mean_macs': ee_macs, 'no_exit_macs': float(variant.no_exit.macs),
        'latency_ms': 1e3 * ee_time / count, 'no_exit_latency_ms': 1e3 * base_time / count,
        'litert_ms': 1e3 * ee_litert / count, 'no_exit_litert_ms': 1e3 * base_litert / count,
        'exit_rates': (np.bincount(exits, minlength=variant.num_exits) / count).tolist(),
    }
    result['mac_reduction'] = result['no_exit_macs'] / result['mean_macs']
    result['latency_speedup'] = result['no_exit_latency_ms'] / result['latency_ms']
    result['litert_speedup'] = result['no_exit_litert_ms'] / result['litert_ms']
    result['accuracy_loss_points'] = result['no_exit_accuracy'] - result['accuracy']
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--json', type=output_file, help='write results here')
    parser.add_argument('--frames', type=bounded(int, 0), default=0, help='test frames (0: all)')
    parser.add_argument('--mode', default='balanced', help='mode whose thresholds to use')
    parser.add_argument('--extra', nargs='*', default=[],
                        help='more model directories to measure alongside (table and JSON)')
    args = parser.parse_args()
    models = [*MODELS, *((str(path), str(path)) for path in args.extra)]
    results = {key: measure(model, args.mode, args.frames) for key, model in models}
    rows = []
    for key, r in results.items():
        rows.append([r['model'], 'no exits', r['no_exit_accuracy'], r['no_exit_macs'] / 1e6,
                     r['no_exit_litert_ms'], r['no_exit_latency_ms'], 1.0, 1.0, 1.0, '-'])
        rows.append([r['model'], f'exits ({r["mode"]})', r['accuracy'], r['mean_macs'] / 1e6,
                     r['litert_ms'], r['latency_ms'], r['mac_reduction'], r['litert_speedup'],
                     r['latency_speedup'], ' '.join(f'{x:.2f}' for x in r['exit_rates'])])
    rows.append(['B-LeNet, BranchyNet Table I', 'published', BRANCHYNET_BLENET['accuracy'], '-',
                 '-', '-', '-', BRANCHYNET_BLENET['cpu_speedup'], '-', '-'])
    print(format_table(['model', 'setting', 'accuracy %', 'MACs/frame (M)', 'LiteRT ms',
                        'runtime ms', 'MAC reduction', 'LiteRT speed-up', 'runtime speed-up',
                        'exit rates'], rows))
    print('LiteRT ms: interpreter calls only; runtime ms: the whole per-frame path in Python '
          '(exit scoring, dispatch) as SegmentChain runs it.')
    mn = results['mnist_blenet']
    flat = {
        f'{key}_{name}': results[key][field] for key in ('fmnist', 'fmnist_patch')
        for name, field in (('mac_reduction', 'mac_reduction'),
                            ('latency_speedup', 'litert_speedup'),
                            ('runtime_speedup', 'latency_speedup'),
                            ('accuracy_loss_points', 'accuracy_loss_points'))
    }
    flat.update({
        'mnist_blenet_accuracy': mn['accuracy'],
        'mnist_blenet_cpu_speedup': mn['litert_speedup'],
        'mnist_blenet_runtime_speedup': mn['latency_speedup'],
    })
    print('\n' + '\n'.join(f'{k}: {v:.4g}' for k, v in flat.items()))
    write_json(args.json, {**flat, 'details': results, 'branchynet_table1': BRANCHYNET_BLENET})
    return 0


if __name__ == '__main__':
    sys.exit(main())
