"""
``make demo``: the shipped model on the data-set replay, mode by mode, without ROS.

Until the ROS node graph lands (issue: ROS 2 nodes and pipeline.launch.py), this runs the
runtime's in-process segment chain on the test split of the model's data set in every mode and
prints accuracy, cost and exit mix per mode. It needs no ROS install and no accelerator.
"""

import argparse
import sys
import time

from dyn_perception.runtime.artifacts import ArtifactError, load_manifest
from dyn_perception.runtime.chain import SegmentChain
from dyn_perception.runtime.datasets import DatasetError, load_dataset
from dyn_perception.runtime.exits import get_policy
import numpy as np


def run(model: str, frames: int) -> None:
    manifest = load_manifest(model)
    chain = SegmentChain(manifest)
    policy = get_policy(manifest.default_policy)
    test = load_dataset(manifest.dataset).test.subset(frames, seed=0)
    inputs = chain.quantize_frames(test.images)
    cumulative = np.asarray(chain.variant.cumulative_macs_at_exits(), dtype=float)
    print(f'{manifest.name}: {len(test)} test frames of {manifest.dataset}, '
          f'policy {policy.name}, variant {chain.variant.name}')
    print(f'{"mode":<12} {"accuracy":>8} {"MACs/frame":>11} {"ms/frame":>9}  exit mix')
    for mode, thresholds in chain.variant.thresholds[policy.name].items():
        start = time.perf_counter()
        decisions = [chain.run(x[None], policy, thresholds) for x in inputs]
        elapsed = time.perf_counter() - start
        exits = np.array([d.exit_index for d in decisions])
        correct = np.array([d.class_id for d in decisions]) == test.labels
        mix = np.bincount(exits, minlength=chain.variant.num_exits) / len(exits)
        print(f'{mode:<12} {100 * correct.mean():>7.2f}% {cumulative[exits].mean() / 1e6:>10.2f}M '
              f'{1e3 * elapsed / len(exits):>9.3f}  ' + ' '.join(f'{m:.2f}' for m in mix))
    print('\nThe full ROS 2 graph demo (camera, perception, energy manager) is not built yet.')


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--model', default='fmnist_eenet')
    parser.add_argument('--frames', type=int, default=2000)
    args = parser.parse_args(argv)
    try:
        run(args.model, args.frames)
    except (ArtifactError, DatasetError) as err:
        print(f'error: {err}', file=sys.stderr)
        return 2
    return 0


if __name__ == '__main__':
    sys.exit(main())
