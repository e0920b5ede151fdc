"""
The contract between training and the nodes: ``manifest.yaml`` and ``profile.yaml``.

Training writes a model directory, the runtime reads it; nothing else connects them. Both
files carry a schema version and are validated once, on load, so the rest of the runtime can
trust them. Errors name the file and the key that is wrong. Writers go through
:func:`atomic_write_text` so that a crash never leaves a half-written artifact.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
import os
from pathlib import Path
import shutil
import tempfile
from typing import Any, Optional

from dyn_perception.runtime.paths import data_roots
import yaml

SCHEMA_VERSION = 1
MANIFEST_FILE = 'manifest.yaml'
PROFILE_FILE = 'profile.yaml'
EXIT_POLICIES = ('entropy', 'max_softmax', 'margin')


class ArtifactError(ValueError):
    """A manifest or profile that is missing, unreadable or does not match the schema."""


class _Reader:
    """Typed access to a parsed YAML mapping that reports the file and key path on error."""

    def __init__(self, data: Any, source: str, where: str = ''):
        if not isinstance(data, dict):
            raise ArtifactError(f'{source}: {where or "top level"} must be a mapping')
        self.data, self.source, self.where = data, source, where

    def _path(self, key: str) -> str:
        return f'{self.where}.{key}' if self.where else key

    def _fail(self, key: str, problem: str) -> ArtifactError:
        return ArtifactError(f'{self.source}: {self._path(key)} {problem}')

    def get(self, key: str, kind: type | tuple, default: Any = ...) -> Any:
        if key not in self.data or self.data[key] is None:
            if default is ...:
                raise self._fail(key, 'is missing')
            return default
        value = self.data[key]
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind) or (isinstance(value, bool) and kind in (int, float)):
            raise self._fail(key, f'must be {getattr(kind, "__name__", kind)}, got {value!r}')
        return value

    def child(self, key: str) -> '_Reader':
        return _Reader(self.get(key, dict), self.source, self._path(key))

    def children(self, key: str) -> list['_Reader']:
        items = self.get(key, list)
        return [_Reader(item, self.source, f'{self._path(key)}[{i}]')
                for i, item in enumerate(items)]

    def numbers(self, key: str, kind: type = float, default: Any = ...) -> list:
        values = self.get(key, list, default)
        if values is None:
            return values
        for value in values:
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                raise self._fail(key, f'must be a list of numbers, got {values!r}')
        return [kind(v) for v in values]

    def check(self, ok: bool, key: str, problem: str) -> None:
        if not ok:
            raise self._fail(key, problem)


@dataclass(frozen=True)
class TensorSpec:
    """An int8 tensor at a segment boundary: its name in the TFLite file and its quantisation."""

    name: str
    shape: tuple[int, ...]
    scale: float
    zero_point: int

    @classmethod
    def read(cls, r: _Reader) -> 'TensorSpec':
        shape = tuple(r.numbers('shape', int))
        r.check(all(d > 0 for d in shape), 'shape', 'must be positive')
        scale = r.get('scale', float)
        r.check(scale > 0, 'scale', 'must be positive')
        zero_point = r.get('zero_point', int)
        r.check(-128 <= zero_point <= 127, 'zero_point', 'must be an int8 value')
        return cls(r.get('name', str), shape, scale, zero_point)


@dataclass(frozen=True)
class SegmentSpec:
    """One pipeline stage: an int8 TFLite file, its cost, and whether it ends at an exit."""

    file: str
    input: TensorSpec  # noqa: A003 - the manifest's own word for it
    features: Optional[TensorSpec]
    logits: Optional[TensorSpec]
    macs: int
    param_bytes: int
    edgetpu_file: Optional[str] = None

    @property
    def has_exit(self) -> bool:
        return self.logits is not None

    @classmethod
    def read(cls, r: _Reader) -> 'SegmentSpec':
        tensor = (lambda key: TensorSpec.read(r.child(key)) if r.get(key, dict, None) else None)
        return cls(
            file=r.get('file', str), input=TensorSpec.read(r.child('input')),
            features=tensor('features'), logits=tensor('logits'),
            macs=r.get('macs', int), param_bytes=r.get('param_bytes', int),
            edgetpu_file=r.get('edgetpu_file', str, None))


@dataclass(frozen=True)
class Variant:
    """
    One (possibly pruned) version of the network, cut into segments, with its exit thresholds.

    ``thresholds[policy][mode]`` holds one threshold per non-final exit; ``None`` disables that
    exit. ``accuracy`` maps 'float' and 'int8' to the test accuracy of every exit taken alone.
    ``no_exit`` is the same network without early exits in one file: the baseline.
    """

    name: str
    segments: tuple[SegmentSpec, ...]
    thresholds: dict[str, dict[str, list[Optional[float]]]]
    accuracy: dict[str, list[float]] = field(default_factory=dict)
    int8_float_agreement: Optional[float] = None
    pruning: Optional[dict[str, Any]] = None
    no_exit: Optional[SegmentSpec] = None

    @property
    def num_exits(self) -> int:
        return sum(s.has_exit for s in self.segments)

    @property
    def macs(self) -> int:
        return sum(s.macs for s in self.segments)

    @property
    def param_bytes(self) -> int:
        return sum(s.param_bytes for s in self.segments)

    def exit_segment_indices(self) -> list[int]:
        """Return the index of the segment that ends at each exit, in order."""
        return [i for i, s in enumerate(self.segments) if s.has_exit]

    def cumulative_macs_at_exits(self) -> list[int]:
        """Return the MACs a frame has paid when it leaves at each exit (all segments up to it)."""
        totals, running = [], 0
        for segment in self.segments:
            running += segment.macs
            if segment.has_exit:
                totals.append(running)
        return totals

    @classmethod
    def read(cls, r: _Reader) -> 'Variant':
        segments = tuple(SegmentSpec.read(s) for s in r.children('segments'))
        r.check(bool(segments), 'segments', 'must not be empty')
        r.check(segments[-1].has_exit and segments[-1].features is None, 'segments',
                'must end with a segment that has logits and no feature output')
        for i, seg in enumerate(segments[:-1]):
            r.check(seg.features is not None, f'segments[{i}].features',
                    'is required on every segment but the last')
            r.check(seg.features.shape == segments[i + 1].input.shape, f'segments[{i}].features',
                    f'shape {seg.features.shape} does not match the next input '
                    f'{segments[i + 1].input.shape}')
        num_exits = sum(s.has_exit for s in segments)
        thresholds = {}
        for policy, modes in r.get('thresholds', dict).items():
            r.check(policy in EXIT_POLICIES, f'thresholds.{policy}',
                    f'is not a known exit policy {EXIT_POLICIES}')
            thresholds[policy] = {}
            for mode, values in modes.items():
                r.check(isinstance(values, list) and len(values) == num_exits - 1,
                        f'thresholds.{policy}.{mode}',
                        f'must list one threshold per non-final exit ({num_exits - 1})')
                r.check(all(v is None or isinstance(v, (int, float)) for v in values),
                        f'thresholds.{policy}.{mode}', 'must hold numbers or null')
                thresholds[policy][mode] = [None if v is None else float(v) for v in values]
        accuracy = {k: [float(v) for v in vals]
                    for k, vals in r.get('accuracy', dict, {}).items()}
        return cls(name=r.get('name', str), segments=segments, thresholds=thresholds,
                   accuracy=accuracy,
                   int8_float_agreement=r.get('int8_float_agreement', float, None),
                   pruning=r.get('pruning', dict, None),
                   no_exit=SegmentSpec.read(r.child('no_exit')) if r.get('no_exit', dict, None)
                   else None)


@dataclass(frozen=True)
class InputSpec:
    """What a frame must become before the first segment: size, channels, normalisation."""

    height: int
    width: int
    channels: int
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @classmethod
    def read(cls, r: _Reader) -> 'InputSpec':
        spec = cls(r.get('height', int), r.get('width', int), r.get('channels', int),
                   tuple(r.numbers('mean')), tuple(r.numbers('std')))
        r.check(spec.channels in (1, 3), 'channels', 'must be 1 or 3')
        r.check(len(spec.mean) == len(spec.std) == spec.channels, 'mean',
                'and std must have one value per channel')
        r.check(all(s > 0 for s in spec.std), 'std', 'must be positive')
        return spec


@dataclass(frozen=True)
class Manifest:
    """A model directory's description: network, data set, input, labels and variants."""

    name: str
    network: str
    dataset: str
    input: InputSpec  # noqa: A003 - the manifest's own word for it
    labels: tuple[str, ...]
    variants: tuple[Variant, ...]
    default_variant: str
    default_policy: str
    provenance: dict[str, Any]
    directory: Path
    # policy -> mode -> the variant that mode runs (chosen by the build; see
    # training.profiling.choose_mode_variants). Modes not listed run the default variant.
    mode_variants: dict[str, dict[str, str]] = field(default_factory=dict)

    def variant(self, name: Optional[str] = None) -> Variant:
        name = name or self.default_variant
        for variant in self.variants:
            if variant.name == name:
                return variant
        known = ', '.join(v.name for v in self.variants)
        raise ArtifactError(f'{self.directory / MANIFEST_FILE}: no variant {name!r} '
                            f'(known: {known})')

    def path(self, relative: str) -> Path:
        return self.directory / relative

    def mode_variant(self, mode: str, policy: Optional[str] = None) -> str:
        """Return the variant that ``mode`` runs under ``policy`` (default: the model's)."""
        chosen = self.mode_variants.get(policy or self.default_policy, {})
        return chosen.get(mode, self.default_variant)


@dataclass(frozen=True)
class LatencyStats:
    """Measured (or modelled) per-invocation latency in milliseconds."""

    median_ms: float
    p99_ms: float

    @classmethod
    def read(cls, r: _Reader) -> 'LatencyStats':
        return cls(r.get('median_ms', float), r.get('p99_ms', float))


@dataclass(frozen=True)
class SegmentProfile:
    """Per-segment timing on each backend measured on a named machine."""

    latency: dict[str, LatencyStats]
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def read(cls, r: _Reader) -> 'SegmentProfile':
        latency_r = r.child('latency')
        latency = {k: LatencyStats.read(latency_r.child(k)) for k in latency_r.data}
        extra = {k: v for k, v in r.data.items() if k != 'latency'}
        return cls(latency, extra)


@dataclass(frozen=True)
class OperatingPoint:
    """One setting of the exit thresholds and what it gave on the validation split."""

    thresholds: tuple[Optional[float], ...]
    exit_rates: tuple[float, ...]
    accuracy: float
    mean_macs: float
    mode: Optional[str] = None
    # Upper 95% bound of the accuracy loss against the default variant's final exit (a
    # fraction, mode points only): what decides which variant a mode runs.
    loss_bound: Optional[float] = None

    @classmethod
    def read(cls, r: _Reader) -> 'OperatingPoint':
        values = r.get('thresholds', list)
        r.check(all(v is None or isinstance(v, (int, float)) for v in values), 'thresholds',
                'must hold numbers or null')
        return cls(tuple(None if v is None else float(v) for v in values),
                   tuple(r.numbers('exit_rates')), r.get('accuracy', float),
                   r.get('mean_macs', float), r.get('mode', str, None),
                   r.get('loss_bound', float, None))


@dataclass(frozen=True)
class VariantProfile:
    """Timing of every segment of a variant and its exit curves per policy."""

    name: str
    segments: tuple[SegmentProfile, ...]
    exit_curves: dict[str, tuple[OperatingPoint, ...]]
    no_exit: Optional[SegmentProfile] = None
    final_exit_accuracy: Optional[float] = None  # validation; what mode budgets are against

    @classmethod
    def read(cls, r: _Reader) -> 'VariantProfile':
        curves_r = r.child('exit_curves')
        curves = {}
        for policy in curves_r.data:
            r.check(policy in EXIT_POLICIES, f'exit_curves.{policy}', 'is not a known policy')
            curves[policy] = tuple(OperatingPoint.read(p) for p in curves_r.children(policy))
        no_exit = SegmentProfile.read(r.child('no_exit')) if r.get('no_exit', dict, None) else None
        segments = tuple(SegmentProfile.read(s) for s in r.children('segments'))
        return cls(r.get('name', str), segments, curves, no_exit,
                   r.get('final_exit_accuracy', float, None))


@dataclass(frozen=True)
class Profile:
    """Measured timing and exit behaviour of every variant of a model on one machine."""

    model: str
    machine: dict[str, Any]
    variants: tuple[VariantProfile, ...]

    def variant(self, name: str) -> VariantProfile:
        for variant in self.variants:
            if variant.name == name:
                return variant
        raise ArtifactError(f'profile of {self.model}: no variant {name!r}')


# libyaml's parser reads a profile 4x faster than the pure-Python one (0.19 against 0.74 s for
# the default model's 150 KB profile.yaml here): that time blocks the node on a model change.
_YAML_LOADER = getattr(yaml, 'CSafeLoader', yaml.SafeLoader)


def _read_yaml(path: Path) -> dict:
    if not path.is_file():
        raise ArtifactError(f'{path}: file not found')
    try:
        data = yaml.load(path.read_text(), Loader=_YAML_LOADER)
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise ArtifactError(f'{path}: not valid YAML ({err})') from err
    r = _Reader(data, str(path))
    version = r.get('schema_version', int)
    r.check(version == SCHEMA_VERSION, 'schema_version',
            f'is {version}; this code reads version {SCHEMA_VERSION}')
    return data


def resolve_model_dir(model: str | Path, search: Optional[list[Path]] = None) -> Path:
    """Find a model directory by path or by name in the package's ``models/`` folders."""
    candidate = Path(model)
    if (candidate / MANIFEST_FILE).is_file():
        return candidate
    for root in search or default_model_roots():
        if (root / str(model) / MANIFEST_FILE).is_file():
            return root / str(model)
    roots = ', '.join(str(r) for r in (search or default_model_roots()))
    raise ArtifactError(f'model {model!r}: no {MANIFEST_FILE} there or under {roots}')


def default_model_roots() -> list[Path]:
    """Where shipped models live: the source tree, then an installed share/ directory."""
    return [root / 'models' for root in data_roots()]


def load_manifest(model: str | Path) -> Manifest:
    """Load and validate ``manifest.yaml``; every segment file must exist."""
    directory = resolve_model_dir(model)
    path = directory / MANIFEST_FILE
    r = _Reader(_read_yaml(path), str(path))
    variants = tuple(Variant.read(v) for v in r.children('variants'))
    r.check(bool(variants), 'variants', 'must not be empty')
    names = [v.name for v in variants]
    r.check(len(set(names)) == len(names), 'variants', f'has duplicate names {names}')
    labels = tuple(str(x) for x in r.get('labels', list))
    manifest = Manifest(
        name=r.get('name', str), network=r.get('network', str), dataset=r.get('dataset', str),
        input=InputSpec.read(r.child('input')), labels=labels, variants=variants,
        default_variant=r.get('default_variant', str, variants[0].name),
        default_policy=r.get('default_policy', str, 'entropy'),
        provenance=r.get('provenance', dict, {}), directory=directory,
        mode_variants=r.get('mode_variants', dict, {}))
    manifest.variant(manifest.default_variant)
    r.check(manifest.default_policy in EXIT_POLICIES, 'default_policy',
            f'must be one of {EXIT_POLICIES}')
    for policy, chosen in manifest.mode_variants.items():
        r.check(policy in EXIT_POLICIES, f'mode_variants.{policy}', 'is not a known exit policy')
        r.check(isinstance(chosen, dict) and all(n in names for n in chosen.values()),
                f'mode_variants.{policy}', f'must map modes to variants of {names}')
    for variant in variants:
        last = variant.segments[-1].logits
        r.check(last.shape[-1] == len(labels), f'variants.{variant.name}',
                f'final logits have {last.shape[-1]} classes but there are {len(labels)} labels')
        for segment in (*variant.segments, *filter(None, [variant.no_exit])):
            for file in filter(None, (segment.file, segment.edgetpu_file)):
                if not (directory / file).is_file():
                    raise ArtifactError(f'{path}: variant {variant.name} names {file}, '
                                        'which does not exist')
    return manifest


def load_profile(model: str | Path) -> Profile:
    """Load and validate ``profile.yaml``."""
    path = resolve_model_dir(model) / PROFILE_FILE
    r = _Reader(_read_yaml(path), str(path))
    return Profile(r.get('model', str), r.get('machine', dict, {}),
                   tuple(VariantProfile.read(v) for v in r.children('variants')))


def to_plain(obj: Any) -> Any:
    """Dataclasses, tuples and numpy scalars to the plain types YAML writes cleanly."""
    if hasattr(obj, '__dataclass_fields__'):
        obj = asdict(obj)
    if isinstance(obj, dict):
        return {str(k): to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_plain(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, 'item') and callable(obj.item):
        return obj.item()
    return obj


def dump_yaml(data: Any) -> str:
    return yaml.safe_dump(to_plain(data), sort_keys=False, default_flow_style=None, width=99)


def atomic_write_text(path: Path, text: str) -> None:
    """Write through a temporary file in the same directory, then rename over the target."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f'.{path.name}.', dir=path.parent)
    try:
        with os.fdopen(fd, 'w') as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_yaml(path: Path, data: Any) -> None:
    """Write ``data`` with the schema version first, atomically."""
    atomic_write_text(path, f'schema_version: {SCHEMA_VERSION}\n' + dump_yaml(data))


def replace_directory(staging: Path, target: Path) -> None:
    """
    Swap a fully written and validated ``staging`` directory in place of ``target``.

    The old directory is moved aside first and removed last, so at every instant either the
    complete old artifact or the complete new one is at ``target``.
    """
    target = Path(target)
    backup = target.with_name(f'.{target.name}.old')
    shutil.rmtree(backup, ignore_errors=True)
    if target.exists():
        os.replace(target, backup)
    os.replace(staging, target)
    shutil.rmtree(backup, ignore_errors=True)
