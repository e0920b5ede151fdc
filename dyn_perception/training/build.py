"""
Turn trained networks into a model directory: int8 segments, manifest, profile, plot.

Everything is written into a staging directory next to the target, validated by loading it
back exactly as the nodes will, and only then swapped in place: a failed or interrupted build
leaves the previous artifact untouched.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
import importlib.metadata
from pathlib import Path
import shutil
import tempfile
from typing import Any, Optional, Sequence

from dyn_perception.runtime.artifacts import (
    EXIT_POLICIES, load_manifest, load_profile, Manifest, MANIFEST_FILE, PROFILE_FILE,
    replace_directory, SegmentSpec, Variant, write_yaml
)
from dyn_perception.runtime.chain import SegmentChain
from dyn_perception.runtime.datasets import Dataset
from dyn_perception.runtime.exits import get_policy
from dyn_perception.runtime.modes import load_modes, Mode
from dyn_perception.runtime.preprocess import to_int8_input
from dyn_perception.runtime.segment import requantize, SegmentRunner
from dyn_perception.training import edgetpu
from dyn_perception.training.export import (
    calibration_frames, export_segments, export_without_exits, ExportError
)
from dyn_perception.training.models import EarlyExitNet
from dyn_perception.training.plots import plot_exit_curves
from dyn_perception.training.profiling import (
    choose_mode_variants, ExitEvaluation, machine_description, time_invocations
)
from dyn_perception.training.train import exit_accuracies, predict_logits
import numpy as np
from tqdm import tqdm

EDGETPU_CACHE_BYTES = 8 * 1024 * 1024


@dataclass
class VariantSource:
    """A trained network to export as one variant (``pruning`` describes how it was made)."""

    name: str
    model: EarlyExitNet
    pruning: Optional[dict] = None


@dataclass
class BuildOptions:
    calibration_frames: int = 256
    min_agreement: float = 0.98
    latency_repeats: int = 300
    eval_limit: Optional[int] = None  # use only this many val/test frames (tests, smoke runs)
    policies: tuple = EXIT_POLICIES
    default_policy: str = 'entropy'
    confidence_z: float = 1.645  # one-sided 95% bound on each mode's accuracy loss
    modes: Sequence[Mode] = field(default_factory=load_modes)
    seed: int = 0
    progress: bool = True


@dataclass
class VariantReport:
    """What the build measured for one variant, for the CLI summary and the tests."""

    name: str
    float_accuracy: list
    int8_accuracy: list
    no_exit_int8_accuracy: float
    agreement: float
    segments_on_cpu: dict = field(default_factory=dict)


def _versions() -> dict:
    names = ('torch', 'litert-torch', 'ai-edge-quantizer', 'ai-edge-litert', 'torch-pruning')
    found = {}
    for name in names:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = None
    return found


def _variant_entry(variant: Variant) -> dict:
    entry = {'name': variant.name, 'pruning': variant.pruning,
             'segments': variant.segments, 'no_exit': variant.no_exit,
             'thresholds': variant.thresholds, 'accuracy': variant.accuracy,
             'int8_float_agreement': variant.int8_float_agreement}
    return {k: v for k, v in entry.items() if v is not None}


def _manifest_data(name: str, network: str, dataset: Dataset, variants: list[Variant],
                   default_policy: str, provenance: dict,
                   mode_variants: Optional[dict] = None) -> dict:
    h, w, c = dataset.image_shape
    return {
        'name': name, 'network': network, 'dataset': dataset.name,
        'input': {'height': h, 'width': w, 'channels': c, 'mean': list(dataset.mean),
                  'std': list(dataset.std)},
        'labels': list(dataset.labels), 'default_variant': variants[0].name,
        'default_policy': default_policy, 'mode_variants': mode_variants or {},
        'provenance': provenance, 'variants': [_variant_entry(v) for v in variants],
    }


class ModelBuilder:
    """Exports variants into a staging directory and measures them."""

    def __init__(self, name: str, dataset: Dataset, options: BuildOptions, staging: Path):
        self.name, self.dataset, self.options, self.staging = name, dataset, options, staging
        rng = np.random.default_rng(options.seed)
        limit = options.eval_limit

        def pick(split):
            if limit is None or limit >= len(split):
                return split
            return split.subset(limit, int(rng.integers(1 << 31)))

        self.val, self.test = pick(dataset.val), pick(dataset.test)
        self.calibration = calibration_frames(dataset.train.images, dataset.mean, dataset.std,
                                              options.calibration_frames, options.seed)

    def _bar(self, total: int, desc: str) -> tqdm:
        return tqdm(total=total, desc=desc, disable=not self.options.progress, leave=False)

    def export(self, source: VariantSource) -> Variant:
        with self._bar(1, f'{source.name}: export int8 segments') as bar:
            segments = export_segments(source.model, self.calibration, self.staging,
                                       prefix=f'{source.name}/')
            no_exit = export_without_exits(source.model, self.calibration, self.staging,
                                           f'{source.name}/no_exit.tflite')
            bar.update()
        return Variant(source.name, tuple(segments), thresholds={}, pruning=source.pruning,
                       no_exit=no_exit)

    def verify(self, manifest: Manifest, source: VariantSource,
               reference: Optional[np.ndarray] = None) -> tuple[Variant, dict, np.ndarray]:
        """
        Accuracy, int8/float agreement (must reach the minimum), exit curves, latencies.

        Mode thresholds keep each mode's budget against ``reference``, the default variant's
        final-exit correctness on val (None: the default itself), where this variant can;
        otherwise against its own final exit (see ``ExitEvaluation.calibrate_modes``).
        Returns this variant's own final-exit correctness, the reference of the others.
        """
        chain = SegmentChain(manifest, source.name)
        variant = chain.variant
        float_test = predict_logits(source.model, self.test, self.dataset.mean, self.dataset.std)
        int8_test = self._all_exits(chain, self.test.images, f'{source.name}: verify on test')
        agreement = float((int8_test[-1].argmax(1) == float_test[-1].argmax(1)).mean())
        if agreement < self.options.min_agreement:
            raise ExportError(
                f'{source.name}: int8 segments agree with the float model on only '
                f'{agreement:.2%} of the test split (minimum {self.options.min_agreement:.0%})')
        no_exit_logits = self._no_exit_logits(manifest, variant.no_exit, self.test.images)
        accuracy = {
            'float': exit_accuracies(float_test, self.test.labels),
            'int8': exit_accuracies(int8_test, self.test.labels),
            'int8_no_exit': exit_accuracies([no_exit_logits], self.test.labels),
        }
        int8_val = self._all_exits(chain, self.val.images, f'{source.name}: exit curves on val')
        macs = variant.cumulative_macs_at_exits()
        thresholds, curves = {}, {}
        for policy_name in self.options.policies:
            args = (int8_val, self.val.labels, get_policy(policy_name), macs,
                    self.options.confidence_z)
            own = ExitEvaluation(*args)
            against_default = own if reference is None else ExitEvaluation(*args, reference)
            final_exit_accuracy = own.final_accuracy
            modes = against_default.calibrate_modes(self.options.modes, own)
            thresholds[policy_name] = {m: list(p.thresholds) for m, p in modes.items()}
            curves[policy_name] = own.sweep() + list(modes.values())
        variant = replace(variant, thresholds=thresholds, accuracy=accuracy,
                          int8_float_agreement=agreement)
        no_exit_val = self._no_exit_logits(manifest, variant.no_exit, self.val.images)
        profile = {'name': variant.name,
                   'segments': self._segment_profiles(manifest, chain),
                   'no_exit': {**self._segment_profile(manifest, variant.no_exit),
                               'val_accuracy': exit_accuracies([no_exit_val], self.val.labels)[0]},
                   'exit_curves': curves, 'final_exit_accuracy': final_exit_accuracy}
        return variant, profile, own.correct[-1]

    def _all_exits(self, chain: SegmentChain, images: np.ndarray, desc: str) -> list:
        inputs = chain.quantize_frames(images)
        parts = []
        with self._bar(len(inputs), desc) as bar:
            for start in range(0, len(inputs), 500):
                parts.append(chain.all_exit_logits(inputs[start:start + 500]))
                bar.update(len(parts[-1][0]))
        return [np.concatenate([p[i] for p in parts]) for i in range(len(parts[0]))]

    def _no_exit_logits(self, manifest: Manifest, spec: SegmentSpec, images) -> np.ndarray:
        runner = SegmentRunner(spec, manifest.path(spec.file))
        inputs = to_int8_input(images, manifest.input, spec.input)
        return np.stack([runner(x[None]).logits[0] for x in inputs])

    def _segment_profile(self, manifest: Manifest, spec: SegmentSpec,
                         runner: Optional[SegmentRunner] = None,
                         x: Optional[np.ndarray] = None) -> dict:
        runner = runner or SegmentRunner(spec, manifest.path(spec.file))
        if x is None:
            x = np.zeros(spec.input.shape, dtype=np.int8) + np.int8(spec.input.zero_point)
        readiness = edgetpu.check_segment(manifest.path(spec.file))
        return {'latency': {'litert_cpu': time_invocations(runner, x,
                                                           self.options.latency_repeats)},
                'param_bytes': spec.param_bytes, 'macs': spec.macs,
                'fits_edgetpu_cache': spec.param_bytes <= EDGETPU_CACHE_BYTES,
                'edgetpu_readiness': readiness.summary()}

    def _segment_profiles(self, manifest: Manifest, chain: SegmentChain) -> list[dict]:
        """Time every segment on a real frame's activations, not on zeros."""
        x = chain.quantize_frames(self.val.images[:1])
        profiles = []
        for i, runner in enumerate(chain.runners):
            profiles.append(self._segment_profile(manifest, runner.spec, runner, x))
            out = runner(x)
            x = out.features if out.features is not None else x
            if i + 1 < len(chain.runners):
                x = requantize(x, runner.spec.features, chain.runners[i + 1].spec.input)
        return profiles


def build_model_dir(name: str, target: Path, dataset: Dataset, sources: Sequence[VariantSource],
                    network: str, provenance: dict[str, Any],
                    options: Optional[BuildOptions] = None) -> tuple[Manifest, list]:
    """Export, verify, profile and plot ``sources`` as the model directory ``target``."""
    options = options or BuildOptions()
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f'.{target.name}.staging-', dir=target.parent))
    try:
        builder = ModelBuilder(name, dataset, options, staging)
        provenance = {**provenance, 'versions': _versions(),
                      'created': datetime.now(timezone.utc).isoformat(timespec='seconds')}
        exported = [builder.export(s) for s in sources]
        write_yaml(staging / MANIFEST_FILE, _manifest_data(
            name, network, dataset, exported, options.default_policy, provenance))
        preliminary = load_manifest(staging)
        variants, profiles, reference = [], [], None
        for source in sources:
            variant, variant_profile, final_correct = builder.verify(
                preliminary, source, reference)
            variants.append(variant)
            profiles.append(variant_profile)
            reference = final_correct if reference is None else reference
        variants, readiness = _compile_or_explain(staging, variants)
        write_yaml(staging / PROFILE_FILE, {'model': name, 'machine': machine_description(),
                                            'variants': profiles})
        profile = load_profile(staging)
        write_yaml(staging / MANIFEST_FILE, _manifest_data(
            name, network, dataset, variants, options.default_policy,
            {**provenance, 'edgetpu': readiness}, choose_mode_variants(profile, options.modes)))
        manifest = load_manifest(staging)
        plot_exit_curves(manifest, profile, staging / 'exit_curves.png')
        replace_directory(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    reports = [VariantReport(v.name, v.accuracy['float'], v.accuracy['int8'],
                             v.accuracy['int8_no_exit'][0], v.int8_float_agreement)
               for v in variants]
    return load_manifest(target), reports


def _compile_or_explain(staging: Path, variants: list[Variant]) -> tuple[list[Variant], dict]:
    """
    Compile every variant's segments for the Edge TPU when the compiler is here.

    Each segment gets a TPU of its own in the default placement, so segments are compiled
    separately (co-compiling is for segments that share a TPU, see ``edgetpu``); each
    variant compiles into its own folder since segment file names repeat across variants.
    """
    files = [staging / s.file for v in variants for s in v.segments]
    compiler = edgetpu.compiler_available()
    if compiler is None:
        return variants, {'compiled': False,
                          'how_to_compile': edgetpu.compile_instructions(files, staging)}
    updated = []
    for variant in variants:
        sources = [staging / s.file for s in variant.segments]
        compiled = edgetpu.compile_segments([[f] for f in sources],
                                            staging / 'edgetpu' / variant.name, compiler)
        updated.append(replace(variant, segments=tuple(
            replace(s, edgetpu_file=str(compiled[f].relative_to(staging)))
            for s, f in zip(variant.segments, sources))))
    return updated, {'compiled': True, 'compiler': compiler}
