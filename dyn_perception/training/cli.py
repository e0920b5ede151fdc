"""
Command line: ``dyn-perception-train`` or ``python -m dyn_perception.training``.

train  --config C [--checkpoint P]       train (resumes from P when it exists)
build  --checkpoint P --out models/NAME   export, verify, profile and plot
all    --config C --out models/NAME       both; the command recorded beside shipped models
prune  --config P                         pruned variants of a trained network (PruneConfig)
front  --model NAME                       accuracy/energy/latency front, mode -> configuration
"""

from __future__ import annotations

import argparse
from pathlib import Path
import shlex
import sys
from typing import Optional

from dyn_perception.argtypes import output_file
from dyn_perception.runtime.artifacts import ArtifactError, load_manifest
from dyn_perception.runtime.datasets import DatasetError
from dyn_perception.runtime.modes import DEFAULT_MODES_FILE, load_modes
import yaml


def _config(args: argparse.Namespace):
    from dyn_perception.training.train import TrainConfig
    data = {}
    if args.config:
        try:
            data = yaml.safe_load(Path(args.config).read_text()) or {}
        except (OSError, yaml.YAMLError) as err:
            raise ValueError(f'{args.config}: cannot read training config ({err})') from err
        if not isinstance(data, dict):
            raise ValueError(f'{args.config}: a training config is a mapping of options')
    for key in ('epochs', 'max_steps', 'train_subset', 'seed', 'threads', 'data_root'):
        value = getattr(args, key, None)
        if value is not None:
            data[key] = value
    return TrainConfig.from_dict(data)


def _default_checkpoint(args: argparse.Namespace) -> Path:
    stem = Path(args.out).name if getattr(args, 'out', None) else Path(args.config).stem
    return Path('runs') / stem / 'checkpoint.pt'


def cmd_train(args: argparse.Namespace):
    from dyn_perception.training.train import train
    config = _config(args)
    checkpoint = Path(args.checkpoint) if args.checkpoint else _default_checkpoint(args)
    result = train(config, checkpoint, resume=not args.no_resume)
    print(f'checkpoint: {checkpoint}')
    print('validation accuracy per exit: ' +
          ' '.join(f'{a:.4f}' for a in result.history[-1]['val_accuracy']))
    return result, checkpoint


def cmd_build(args: argparse.Namespace, checkpoint: Optional[Path] = None) -> None:
    from dyn_perception.training.build import build_model_dir, BuildOptions, VariantSource
    from dyn_perception.training.train import (
        load_checkpoint, load_config_dataset, model_from_checkpoint, TrainConfig
    )
    checkpoint = checkpoint or Path(args.checkpoint)
    state = load_checkpoint(checkpoint)
    config = TrainConfig.from_dict(state['config'])
    dataset = load_config_dataset(config)
    model = model_from_checkpoint(state, dataset)
    out = Path(args.out)
    options = BuildOptions(eval_limit=args.eval_limit, min_agreement=args.min_agreement,
                           modes=load_modes(args.modes))
    command = ['python', '-m', 'dyn_perception.training', *sys.argv[1:]]
    provenance = {'command': ' '.join(shlex.quote(a) for a in command),
                  'seed': config.seed, 'train_config': state['config'],
                  'history': state.get('history', [])[-1:]}
    manifest, reports = build_model_dir(out.name, out, dataset, [VariantSource('base', model)],
                                        config.arch, provenance, options)
    print(f'wrote {manifest.directory}')
    for report in reports:
        print(f'{report.name}: test accuracy per exit float '
              + ' '.join(f'{a:.4f}' for a in report.float_accuracy) + ' | int8 '
              + ' '.join(f'{a:.4f}' for a in report.int8_accuracy)
              + f' | int8 no-exit {report.no_exit_int8_accuracy:.4f}'
              + f' | int8/float agreement {report.agreement:.4f}')


def cmd_all(args: argparse.Namespace) -> None:
    _, checkpoint = cmd_train(args)
    cmd_build(args, checkpoint)


def cmd_prune(args: argparse.Namespace) -> None:
    from dyn_perception.training.pruning import PruneConfig, run_pruning
    config = PruneConfig.from_yaml(args.config)
    command = ['python', '-m', 'dyn_perception.training', *sys.argv[1:]]
    built = run_pruning(config, ' '.join(shlex.quote(a) for a in command))
    for out, manifest in built.items():
        print(f'wrote {out}')
        for variant in manifest.variants:
            accuracy = variant.accuracy.get('int8_no_exit', [float('nan')])[0]
            print(f'  {variant.name}: {variant.no_exit.macs / 1e6:.2f} M MACs without exits, '
                  f'int8 test accuracy without exits {accuracy:.4f}')


def cmd_front(args: argparse.Namespace) -> None:
    from dyn_perception.training.front import build_front
    command = ['python', '-m', 'dyn_perception.training', *sys.argv[1:]]
    plot = Path(args.plot) if args.plot else None
    for model in args.model:
        path = plot or load_manifest(model).directory / 'front.png'
        front = build_front(model, load_modes(args.modes), args.fps, args.max_tpus,
                            ' '.join(shlex.quote(a) for a in command), path)
        print(f'{model}: front written, plot {path}')
        for policy, modes in front.modes.items():
            print(f'  {policy}: ' + ', '.join(
                f'{mode}={c.variant}/{c.num_tpus}tpu/{1e3 * c.energy_per_frame_j(args.fps):.2f}mJ'
                for mode, c in modes.items()))


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog='dyn-perception-train', description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest='command', required=True)

    def training_options(sp: argparse.ArgumentParser) -> None:
        sp.add_argument('--config', required=True, help='training config YAML (TrainConfig)')
        sp.add_argument('--checkpoint', help='checkpoint path (default runs/<name>/checkpoint.pt)')
        sp.add_argument('--no-resume', action='store_true', help='start over even if it exists')
        for key, kind in (('epochs', int), ('max_steps', int), ('train_subset', int),
                          ('seed', int), ('threads', int)):
            sp.add_argument('--' + key.replace('_', '-'), dest=key, type=kind)
        sp.add_argument('--data-root', dest='data_root', help='data set folder (CIFAR, images)')

    def build_options(sp: argparse.ArgumentParser) -> None:
        sp.add_argument('--out', required=True, help='model directory to (re)write')
        sp.add_argument('--eval-limit', type=int, help='evaluate on this many val/test frames')
        sp.add_argument('--min-agreement', type=float, default=0.98,
                        help='minimum int8/float top-1 agreement on the test split')
        sp.add_argument('--modes', default=str(DEFAULT_MODES_FILE), help='modes YAML')

    training_options(sub.add_parser('train', help='train an early-exit network'))
    build = sub.add_parser('build', help='export, verify and profile a checkpoint')
    build.add_argument('--checkpoint', required=True)
    build_options(build)
    both = sub.add_parser('all', help='train, then build')
    training_options(both)
    build_options(both)
    prune = sub.add_parser('prune', help='pruned variants of a trained network, built')
    prune.add_argument('--config', required=True, help='pruning config YAML (PruneConfig)')
    front = sub.add_parser('front', help='accuracy/energy/latency front and mode mapping')
    front.add_argument('--model', required=True, nargs='+', help='model names or directories')
    front.add_argument('--fps', type=float, default=30.0, help='frame rate energy is costed at')
    front.add_argument('--max-tpus', type=int, default=2, help='largest number of powered TPUs')
    front.add_argument('--modes', default=str(DEFAULT_MODES_FILE), help='modes YAML')
    front.add_argument('--plot', type=output_file,
                       help='PNG path (default <model dir>/front.png)')
    return p


def main(argv: Optional[list[str]] = None) -> int:
    args = parser().parse_args(argv)
    from dyn_perception.training.export import ExportError
    from dyn_perception.training.train import CheckpointError
    try:
        {'train': cmd_train, 'build': cmd_build, 'all': cmd_all,
         'prune': cmd_prune, 'front': cmd_front}[args.command](args)
    except (ValueError, DatasetError, CheckpointError, ExportError, ArtifactError) as err:
        print(f'error: {err}', file=sys.stderr)
        return 2
    return 0
