"""
The per-layer Edge TPU model against Coral's published latencies, and what it changes.

1. Calibration: the fit on Coral's calibration rows (``coral_networks.CALIBRATION``), per row
   and host link: published, modelled, error.
2. Leave-one-out: refit without each row (both links), predict it. Every fit either yields
   physical constants (utilisation <= 1, bandwidth <= the link's, checked by EdgeTPUTiming)
   or refuses with its reason, which is reported.
3. Held-out rows (``HELD_OUT``), never fitted on: the test of generalisation, new model
   against the old one (the linear MACs/parameters model this replaces, refitted here on its
   own six rows) in the same run.
4. The package's shipped models, old model against new: per-segment times, the placement
   each picks and its throughput bound on 1-8 TPUs (USB, PCIe with independent links, and
   PCIe TPUs of one card sharing the switch's upstream port).

    python bench/edgetpu_model.py [--json OUT] [--max-tpus 8]
"""

import argparse
from typing import Sequence

from _paths import ROOT
from dyn_perception.runtime.artifacts import load_manifest
from dyn_perception.runtime.devices import SimulatedEdgeTPU
from dyn_perception.runtime.devices.base import SegmentRef
from dyn_perception.runtime.devices.coral_networks import CALIBRATION, HELD_OUT
from dyn_perception.runtime.devices.layers import Network, read_tflite
from dyn_perception.runtime.devices.timing import (
    CACHE_BYTES, calibrated_fit, INTERFACES, leave_one_out, OVERHEAD_BOUNDS_S, PEAK_OPS_PER_S
)
from dyn_perception.runtime.pipeline import Pipeline
import numpy as np
from report import bounded, format_table, output_file, write_json

SHIPPED = ('fmnist_eenet', 'fmnist_eenet_patch', 'mnist_blenet')
OLD_ROWS = ('MobileNet v1 (224)', 'MobileNet v2 (224)', 'Inception v1 (224)',
            'ResNet-50 V1 (299)', 'ResNet-152 V2 (299)', 'VGG16 (224)')


class OldModel:
    """
    The model this work replaces: overhead + 2 MACs / (4 TOPS x u) + (beyond 8 MiB + I/O) / bw.

    Refitted here, as it was, on its six rows (least squares on relative error, one fit per
    link), with MACs and weights from the same layer lists as the new model.
    """

    def __init__(self, interface: str):
        rows = [r for r in CALIBRATION if r.model in OLD_ROWS]
        design = np.array([self._features(r.build()) for r in rows])
        published = np.array([r.published_ms(interface) * 1e-3 for r in rows])
        weights = 1.0 / published
        self.theta, *_ = np.linalg.lstsq(design * weights[:, None], published * weights,
                                         rcond=None)

    @staticmethod
    def _features(network: Network, cached: float = CACHE_BYTES) -> list[float]:
        streamed = max(0.0, network.weight_bytes - cached)
        return [1.0, 2.0 * network.macs / PEAK_OPS_PER_S, streamed + network.io_bytes]

    def network_ms(self, network: Network, cached: float = CACHE_BYTES) -> float:
        return 1e3 * float(np.dot(self._features(network, cached), self.theta))


class OldModelTPU(SimulatedEdgeTPU):
    """A simulated TPU that plans with the old model (what placement used to see)."""

    def __init__(self, name: str, old: OldModel):
        super().__init__(name)
        self.old = old

    def estimate_ms(self, segments: Sequence[SegmentRef]) -> tuple[float, ...]:
        free, times = CACHE_BYTES, []
        for ref in segments:
            network = read_tflite(ref.path)
            cached = min(network.weight_bytes, free)
            free -= cached
            times.append(self.old.network_ms(network, cached))
        return tuple(times)


def percent(modelled: float, published: float) -> float:
    return 100.0 * (modelled - published) / published


def calibration_section(results: dict) -> list:
    fit = calibrated_fit()
    rows = []
    for interface in INTERFACES:
        for row in CALIBRATION:
            published = row.published_ms(interface)
            if published is None:
                continue
            modelled = fit.predict_ms(row, interface)
            rows.append([interface, row.model, published, modelled,
                         percent(modelled, published)])
        timing = fit.timings[interface]
        results[f'fit_{interface}'] = {
            'overhead_ms': 1e3 * timing.overhead_s,
            'layer_overhead_us': 1e6 * timing.layer_overhead_s,
            'utilisation': timing.utilisation,
            'bandwidth_mb_s': timing.bandwidth_bytes_per_s / 1e6,
            'host_ns_per_element': 1e9 * timing.host_s_per_element}
    results['fit_at_bound'] = list(fit.at_bound)
    results['overhead_bounds_ms'] = {  # None: unbounded
        interface: [1e3 * b if np.isfinite(b) else None for b in bounds]
        for interface, bounds in OVERHEAD_BOUNDS_S.items()}
    errors = [abs(r[4]) for r in rows]
    results['tpu_model_fit_median_abs_error_pct'] = float(np.median(errors))
    results['tpu_model_fit_max_abs_error_pct'] = float(np.max(errors))
    results['calibration'] = [dict(zip(('interface', 'model', 'published_ms', 'modelled_ms',
                                        'error_pct'), r)) for r in rows]
    return rows


def loo_section(results: dict) -> list:
    records = leave_one_out()
    results['loo'] = records
    refused = [r for r in records if r['refused']]
    errors = [abs(r['error_pct']) for r in records if r['error_pct'] is not None]
    results['tpu_model_loo_refused_fits'] = len({r['model'] for r in refused})
    results['tpu_model_loo_median_abs_error_pct'] = float(np.median(errors))
    results['tpu_model_loo_max_abs_error_pct'] = float(np.max(errors))
    for interface in INTERFACES:
        column = [abs(r['error_pct']) for r in records
                  if r['interface'] == interface and r['error_pct'] is not None]
        results[f'tpu_model_loo_median_abs_error_pct_{interface}'] = float(np.median(column))
        results[f'tpu_model_loo_max_abs_error_pct_{interface}'] = float(np.max(column))
    return [[r['interface'], r['model'], r['published_ms'],
             '-' if r['predicted_ms'] is None else r['predicted_ms'],
             r['refused'] or r['error_pct']] for r in records]


def held_out_section(results: dict, old: dict) -> list:
    fit = calibrated_fit()
    rows, new_errors, old_errors = [], [], []
    for interface in INTERFACES:
        for row in HELD_OUT:
            published = row.published_ms(interface)
            if published is None:
                continue
            new = fit.predict_ms(row, interface)
            before = old[interface].network_ms(row.build())
            rows.append([interface, row.model, published, new, percent(new, published),
                         before, percent(before, published), row.source])
            new_errors.append(abs(percent(new, published)))
            old_errors.append(abs(percent(before, published)))
    results['held_out'] = [dict(zip(('interface', 'model', 'published_ms', 'new_ms',
                                     'new_error_pct', 'old_ms', 'old_error_pct', 'source'), r))
                           for r in rows]
    results['tpu_model_held_out_median_abs_error_pct'] = float(np.median(new_errors))
    results['tpu_model_held_out_max_abs_error_pct'] = float(np.max(new_errors))
    results['old_model_held_out_median_abs_error_pct'] = float(np.median(old_errors))
    results['old_model_held_out_max_abs_error_pct'] = float(np.max(old_errors))
    return rows


def plan(manifest, devices) -> tuple[str, float]:
    """Return the placement a virtual-time pipeline picks and its throughput bound."""
    placement = Pipeline(manifest, devices, thresholds='balanced').placement
    return placement.describe(), placement.bound_fps


def shipped_section(results: dict, old: dict, max_tpus: int) -> tuple[list, list]:
    fit = calibrated_fit()
    segment_rows, placement_rows, shipped = [], [], {}
    for name in SHIPPED:
        manifest = load_manifest(ROOT / 'models' / name)
        variant = manifest.variant()
        for i, spec in enumerate(variant.segments):
            network = read_tflite(manifest.path(spec.file))
            for interface in INTERFACES:
                new = 1e3 * fit.timings[interface].estimate_s([network])[0]
                before = old[interface].network_ms(network)
                segment_rows.append([name, i, interface, network.macs / 1e6,
                                     network.weight_bytes / 1e3, before, new, new / before])
        sweep = []
        for tpus in range(1, max_tpus + 1):
            entry = {'tpus': tpus}
            setups = {
                'old_usb': [OldModelTPU(f'o{k}', old['usb']) for k in range(tpus)],
                'new_usb': [SimulatedEdgeTPU(f'u{k}', fit.timings['usb'])
                            for k in range(tpus)],
                'new_pcie': [SimulatedEdgeTPU(f'p{k}', fit.timings['pcie'])
                             for k in range(tpus)],
                'new_pcie_card': [SimulatedEdgeTPU(f'c{k}', fit.timings['pcie'].sharing(tpus))
                                  for k in range(tpus)]}
            for label, devices in setups.items():
                placement, bound = plan(manifest, devices)
                entry[f'{label}_placement'], entry[f'{label}_bound_fps'] = placement, bound
            placement_rows.append([name, tpus, entry['old_usb_placement'],
                                   entry['old_usb_bound_fps'], entry['new_usb_placement'],
                                   entry['new_usb_bound_fps'], entry['new_pcie_bound_fps'],
                                   entry['new_pcie_card_bound_fps']])
            sweep.append(entry)
        shipped[name] = sweep
        results[f'{name}_new_vs_old_1tpu_bound'] = (sweep[0]['new_usb_bound_fps']
                                                    / sweep[0]['old_usb_bound_fps'])
    results['shipped'] = shipped
    results['shipped_segments'] = [dict(zip(('model', 'segment', 'interface', 'mmacs',
                                             'weight_kb', 'old_ms', 'new_ms', 'new_over_old'),
                                            r)) for r in segment_rows]
    return segment_rows, placement_rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--json', type=output_file, help='write results here')
    parser.add_argument('--max-tpus', type=bounded(int, 1, 64), default=8)
    args = parser.parse_args()
    results: dict = {}
    old = {interface: OldModel(interface) for interface in INTERFACES}
    print('Calibration (fitted on these rows):')
    print(format_table(['link', 'network', 'published ms', 'modelled ms', 'error %'],
                       calibration_section(results)))
    print(f'constants: {results["fit_usb"]}\n           {results["fit_pcie"]}')
    print(f'at a physical bound: {results["fit_at_bound"]} '
          f'(overhead bounds, ms: {results["overhead_bounds_ms"]})\n')
    print('Leave-one-out (refit without the row, predict it):')
    print(format_table(['link', 'network', 'published ms', 'predicted ms', 'error % / refusal'],
                       loo_section(results)))
    print(f'LOO |error| median {results["tpu_model_loo_median_abs_error_pct"]:.1f}% '
          f'(target <= 10), max {results["tpu_model_loo_max_abs_error_pct"]:.1f}% '
          f'(target <= 25); refused fits: {results["tpu_model_loo_refused_fits"]}\n')
    print('Held-out rows (NOT fitted on), new model against the old one:')
    print(format_table(['link', 'network', 'published ms', 'new ms', 'new err %', 'old ms',
                        'old err %', 'source'], held_out_section(results, old)))
    print(f'held-out |error| median: new {results["tpu_model_held_out_median_abs_error_pct"]:.1f}'
          f'%, old {results["old_model_held_out_median_abs_error_pct"]:.1f}%\n')
    segments, placements = shipped_section(results, old, args.max_tpus)
    print('Shipped models, base variant, one segment alone on a TPU:')
    print(format_table(['model', 'segment', 'link', 'MMACs', 'weights kB', 'old ms', 'new ms',
                        'new / old'], segments))
    print('\nPlacement (balanced mode) and throughput bound, old model against new:')
    print(format_table(['model', 'TPUs', 'old placement', 'old usb fps', 'new placement',
                        'new usb fps', 'new pcie fps', 'pcie card fps'], placements))
    flat = {k: v for k, v in results.items() if not isinstance(v, (dict, list))}
    write_json(args.json, {**flat, **{k: v for k, v in results.items() if k not in flat}})
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
