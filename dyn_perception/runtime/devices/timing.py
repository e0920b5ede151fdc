"""
The Edge TPU time and energy model: per layer, from the graph, calibrated on Coral's table.

One invocation of a compiled network (a list of :class:`~layers.Layer`) costs

    t = overhead                                   host: driver and link transaction
      + ops x layer overhead                       one instruction block per op on the TPU
      + sum over layers of compute cycles / (clock x utilisation of the layer's kind)
      + (streamed weights + input + output bytes) / link bandwidth
      + host elements x host time per element      ops the TPU does not run (SSD's NMS)

Compute cycles assume a 64 x 64 systolic array (4096 MACs a cycle, which is Coral's 4 TOPS at
``CLOCK_HZ``), weight-stationary: a matrix op (convolution, dense) is a sum over its kernel
positions of one matrix product each, whose reduction is the input channels; every kernel
position is tiled into 64 x 64 weight blocks (input by output channels), and each block takes
one cycle per output pixel plus 64 cycles to load it. A 7 x 7 stem on 3 channels thus uses 3
of the 64 rows for 49 passes. A depthwise op has no channel reduction, so it occupies one row
of lanes (64 channels, one tap a cycle); a vector op (add, pool, concat, pad, activation)
processes 64 elements a cycle. A utilisation per kind (<= 1) absorbs what the tiling leaves
out.

Weights stay in the on-chip cache layer by layer in graph order while they fit (first fit:
a layer too large for what is left streams, a later smaller one may still fit), in load order
across co-resident models; what does not fit streams from host memory on every invocation,
not overlapped with compute (an assumption the streaming-bound rows favour, weakly; see
docs/runtime.md). The cache
the compiler leaves for parameters is less than 8 MiB (``USABLE_CACHE_BYTES``).

The unknowns enter linearly. The chip's (layer overhead, three utilisations) are shared by
both host links; each link has its own overhead, bandwidth and host speed. ``fit_timing``
solves for them by least squares on relative error with physical bounds (utilisation <= 1,
bandwidth <= the link's, a measured range for the PCIe overhead), and refuses when the rows
cannot determine them.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from functools import lru_cache
from math import ceil
from typing import Sequence

from dyn_perception.runtime.devices.coral_networks import CALIBRATION, PublishedLatency
from dyn_perception.runtime.devices.layers import Layer, Network
import numpy as np

PEAK_OPS_PER_S = 4e12  # Coral: "4 trillion operations per second" per Edge TPU
ARRAY = 64  # assumption: a 64 x 64 MAC array; 4096 MACs x 2 ops x CLOCK_HZ = 4 TOPS
CLOCK_HZ = PEAK_OPS_PER_S / (2 * ARRAY * ARRAY)
CACHE_BYTES = 8 * 1024 * 1024  # Coral: "roughly 8 MB of SRAM" for parameter caching
# edgetpu_compiler 14-16 logs ("On-chip memory used for caching model parameters" plus
# "... remaining ...") of eight public models give 6.08-7.87 MiB: the compiler keeps the rest
# for itself. Their median, 7.3 MiB, is what a model may use (see docs/runtime.md).
USABLE_CACHE_BYTES = int(7.3 * 1024 * 1024)
ACTIVE_POWER_W = 2.0  # Coral: 4 TOPS "using 0.5 watts for each TOPS"
# Assumption, no published figure found: an idle Edge TPU module draws about a quarter of its
# active power. Used only for the idle energy of TPUs that wait.
IDLE_POWER_W = 0.5
# Payload ceilings of the links: USB 3.0 5 Gb/s and PCIe Gen2 x1 5 GT/s, both 8b/10b coded.
LINK_PEAK_BYTES_PER_S = {'usb': 500e6, 'pcie': 500e6}
INTERFACES = tuple(LINK_PEAK_BYTES_PER_S)
# Assumption for the 8-TPU PCIe card: its switch's upstream port carries 2 GB/s (Gen2 x4);
# no datasheet figure was found. Only the shared-link model uses it.
CARD_UPSTREAM_BYTES_PER_S = 2e9

CHIP_CONSTANTS = ('layer_overhead_s', 'matrix', 'depthwise', 'vector')
LINK_CONSTANTS = ('overhead_s', 'bandwidth', 'host_s_per_element')
# Per-invocation overhead per link (instructions, input, output and a status every time), as
# bounds on the fit. The calibration rows cannot tell the Dev Board's overhead from its clock
# ratio (both explain MobileNet's equal times on the two links), so PCIe's comes from a
# measurement: a simple model's whole invocation on the Dev Board takes about 0.3 ms (C++,
# mean of 1000; google-coral/edgetpu#663), an upper bound on the fixed part; the lower bound
# leaves up to 0.1 ms of it to that model's own transfer and compute (assumption: its size is
# not given). USB's is left to the rows; they give about 0.5 ms, near the 0.3 ms measured for
# near-empty calls (iwatake2222, Qiita 2019; ricardodeazambuja/LibrEdgeTPU).
OVERHEAD_BOUNDS_S = {'usb': (0.0, np.inf), 'pcie': (0.2e-3, 0.3e-3)}
# The Dev Board's Edge TPU may run at another clock than the USB Accelerator's (the runtime
# offers a reduced and a maximum frequency): the on-chip time of the second link is the
# first's times one ratio, found by a search over this grid.
CLOCK_RATIOS = tuple(np.round(np.linspace(0.5, 2.0, 61), 3))


class FitRefused(ValueError):
    """The calibration rows cannot determine the model's constants; the reason says why."""


def layer_cycles(layer: Layer) -> tuple[str, float]:
    """Cycles of one layer on the array and the utilisation kind they are divided by."""
    if layer.kind == 'matrix':
        taps = layer.kernel[0] * layer.kernel[1]
        blocks = taps * ceil(layer.in_channels / ARRAY) * ceil(layer.out_shape[2] / ARRAY)
        return 'matrix', blocks * (layer.out_pixels + ARRAY)
    if layer.kind == 'depthwise':
        taps = layer.kernel[0] * layer.kernel[1]
        return 'depthwise', ceil(layer.out_shape[2] / ARRAY) * layer.out_pixels * taps
    if layer.kind == 'vector':
        return 'vector', layer.elements / ARRAY
    return layer.kind, 0.0


def on_tpu(layer: Layer) -> bool:
    return layer.kind in ('matrix', 'depthwise', 'vector')


@dataclass(frozen=True)
class CachePlan:
    """Which layers of each co-resident network keep their weights on chip."""

    networks: tuple[Network, ...]
    cached: tuple[tuple[bool, ...], ...]

    def cached_bytes(self, index: int) -> int:
        return sum(layer.weight_bytes for layer, kept in
                   zip(self.networks[index].layers, self.cached[index]) if kept)

    def streamed_bytes(self, index: int) -> int:
        return self.networks[index].weight_bytes - self.cached_bytes(index)


def plan_cache(networks: Sequence[Network], capacity: int = USABLE_CACHE_BYTES) -> CachePlan:
    """
    First fit of layer weights into the cache, in graph order, models in load order.

    Co-compiled models share the cache and the first listed gets priority (Coral's compiler
    documentation); a layer's weights are cached whole or streamed whole.
    """
    free, cached = capacity, []
    for network in networks:
        kept = []
        for layer in network.layers:
            fits = 0 < layer.weight_bytes <= free
            free -= layer.weight_bytes if fits else 0
            kept.append(fits)
        cached.append(tuple(kept))
    return CachePlan(tuple(networks), tuple(cached))


@dataclass(frozen=True)
class EdgeTPUTiming:
    """Calibrated constants of one Edge TPU on one host link (see the module docstring)."""

    interface: str
    overhead_s: float
    layer_overhead_s: float
    utilisation: dict = field(hash=False)  # kind -> fraction of the array's peak, in (0, 1]
    bandwidth_bytes_per_s: float
    host_s_per_element: float = 0.0
    cache_bytes: int = USABLE_CACHE_BYTES
    active_power_w: float = ACTIVE_POWER_W
    idle_power_w: float = IDLE_POWER_W

    def __post_init__(self) -> None:
        problems = []
        peak = LINK_PEAK_BYTES_PER_S.get(self.interface)
        if peak is None:
            problems.append(f'unknown interface {self.interface!r}; known: {INTERFACES}')
        elif not 0 < self.bandwidth_bytes_per_s <= peak * (1 + 1e-9):
            problems.append(f"bandwidth_bytes_per_s must be in (0, {peak:.3g}], the link's")
        for name in ('overhead_s', 'layer_overhead_s', 'host_s_per_element'):
            if not getattr(self, name) >= 0:
                problems.append(f'{name} must be >= 0')
        for kind in ('matrix', 'depthwise', 'vector'):
            if not 0 < self.utilisation.get(kind, 0) <= 1 + 1e-9:
                problems.append(f'utilisation of {kind} ops must be in (0, 1]')
        if not self.cache_bytes >= 0:
            problems.append('cache_bytes must be >= 0')
        if self.idle_power_w < 0 or self.active_power_w < self.idle_power_w:
            problems.append('power must satisfy 0 <= idle <= active')
        if problems:
            raise ValueError(f'bad Edge TPU timing: {", ".join(problems)}')

    def transfer_s(self, num_bytes: float) -> float:
        return num_bytes / self.bandwidth_bytes_per_s

    def layer_s(self, layer: Layer) -> float:
        """Time of one layer on the TPU with its weights on chip (zero for host/free ops)."""
        if not on_tpu(layer):
            return layer.elements * self.host_s_per_element if layer.kind == 'host' else 0.0
        kind, cycles = layer_cycles(layer)
        return self.layer_overhead_s + cycles / (CLOCK_HZ * self.utilisation[kind])

    def invoke_s(self, network: Network, streamed_bytes: float) -> float:
        """One invocation of a resident network that streams ``streamed_bytes`` of weights."""
        return (self.overhead_s + sum(self.layer_s(layer) for layer in network.layers)
                + self.transfer_s(streamed_bytes + network.io_bytes))

    def load_s(self, cached_bytes: float) -> float:
        """
        Swap a model in: one host transaction and its cached weights over the link.

        Assumption (Coral documents that the cache is filled on a model's first run and
        refilled when another model took it; it gives no time): reloading costs what the
        same bytes cost when streamed.
        """
        return self.overhead_s + self.transfer_s(cached_bytes)

    def estimate_s(self, networks: Sequence[Network]) -> tuple[float, ...]:
        """Time of each network's invocation when exactly these share the TPU's cache."""
        plan = plan_cache(networks, self.cache_bytes)
        return tuple(self.invoke_s(n, plan.streamed_bytes(i)) for i, n in enumerate(networks))

    def sharing(self, transferring: int,
                upstream_bytes_per_s: float = CARD_UPSTREAM_BYTES_PER_S) -> 'EdgeTPUTiming':
        """
        Return this TPU as it is when ``transferring`` TPUs behind one PCIe switch move data.

        Each link keeps its own ceiling; the switch's upstream port is shared equally.
        """
        if transferring < 1:
            raise ValueError(f'transferring must be >= 1, got {transferring}')
        shared = min(self.bandwidth_bytes_per_s, upstream_bytes_per_s / transferring)
        return replace(self, bandwidth_bytes_per_s=shared)


def _features(network: Network, cache_bytes: int) -> tuple[np.ndarray, np.ndarray]:
    """Coefficients of (chip constants) and (link constants) in the network's time."""
    cycles = {'matrix': 0.0, 'depthwise': 0.0, 'vector': 0.0}
    ops = host = 0
    for layer in network.layers:
        kind, count = layer_cycles(layer)
        if kind in cycles:
            cycles[kind] += count
            ops += 1
        elif kind == 'host':
            host += layer.elements
    streamed = plan_cache([network], cache_bytes).streamed_bytes(0)
    chip = np.array([ops, *(cycles[k] / CLOCK_HZ for k in ('matrix', 'depthwise', 'vector'))])
    return chip, np.array([1.0, streamed + network.io_bytes, host])


@lru_cache(maxsize=None)
def _network(row: PublishedLatency) -> Network:
    return row.build()


@dataclass(frozen=True)
class Fit:
    """Constants fitted on some rows, per link, and which ones sit at a physical bound."""

    timings: dict
    rows: tuple[str, ...]
    at_bound: tuple[str, ...]

    def predict_ms(self, row: PublishedLatency, interface: str) -> float:
        return 1e3 * self.timings[interface].estimate_s([_network(row)])[0]


def _bounds(interfaces: Sequence[str], chip_n: int, link_n: int,
            inverse_utilisation: float) -> tuple[np.ndarray, np.ndarray]:
    """Physics as bounds: inverse utilisation >= 1 (or more), bandwidth <= the link's."""
    lower = np.zeros(chip_n + link_n * len(interfaces))
    upper = np.full(len(lower), np.inf)
    lower[1:chip_n] = inverse_utilisation
    for k, interface in enumerate(interfaces):
        base = chip_n + k * link_n
        lower[base], upper[base] = OVERHEAD_BOUNDS_S[interface]
        lower[base + 1] = 1.0 / LINK_PEAK_BYTES_PER_S[interface]
    return lower, upper


def _solve(design: np.ndarray, published: np.ndarray, scales: np.ndarray,
           interfaces: Sequence[str], chip_n: int, link_n: int,
           lower_inverse_utilisation: float) -> tuple[np.ndarray, float]:
    """Bounded linear least squares on relative error; returns constants and residual."""
    from scipy.optimize import lsq_linear

    scaled = design.copy()
    scaled[:, :chip_n] *= scales[:, None]
    lower, upper = _bounds(interfaces, chip_n, link_n, lower_inverse_utilisation)
    norm = np.maximum(np.abs(scaled).max(axis=0), 1e-30)  # comparable column magnitudes
    result = lsq_linear(scaled / published[:, None] / norm, np.ones(len(published)),
                        bounds=(lower * norm, upper * norm))
    theta = result.x / norm
    return theta, float(np.sum((scaled @ theta / published - 1.0) ** 2))


def fit_timing(rows: Sequence[PublishedLatency] = CALIBRATION,
               interfaces: Sequence[str] = INTERFACES,
               cache_bytes: int = USABLE_CACHE_BYTES) -> Fit:
    """
    Bounded least squares on relative error over every (row, link) with a published time.

    Bounds are the physics: utilisation <= 1 (inverse >= 1), bandwidth <= the link's,
    overheads >= 0. Refuses (FitRefused) when there are fewer data than constants, when no
    row exercises a constant (it would be undetermined), or when the fitted model is off
    by more than 50% on a row it was fitted on (it cannot explain its own data).
    """
    unknown = [i for i in interfaces if i not in LINK_PEAK_BYTES_PER_S]
    if unknown:
        raise ValueError(f'unknown Edge TPU interface {unknown[0]!r}; known: {INTERFACES}')
    chip_n, link_n = len(CHIP_CONSTANTS), len(LINK_CONSTANTS)
    names = list(CHIP_CONSTANTS) + [f'{i}.{c}' for i in interfaces for c in LINK_CONSTANTS]
    design, published, labels, link_of = [], [], [], []
    for row in rows:
        chip, link = _features(_network(row), cache_bytes)
        for k, interface in enumerate(interfaces):
            ms = row.published_ms(interface)
            if ms is None:
                continue
            line = np.zeros(len(names))
            line[:chip_n] = chip
            line[chip_n + k * link_n:chip_n + (k + 1) * link_n] = link
            design.append(line)
            published.append(ms * 1e-3)
            labels.append(f'{row.model} [{interface}]')
            link_of.append(k)
    design, published = np.array(design).reshape(-1, len(names)), np.array(published)
    link_of = np.array(link_of, dtype=int)
    unused = [name for name, column in zip(names, design.T) if not np.any(column > 0)]
    if unused:
        raise FitRefused(f'no calibration row exercises {", ".join(unused)}: '
                         'those constants would be undetermined')
    if len(published) < len(names) + len(interfaces) - 1:
        raise FitRefused(f'{len(published)} published times for '
                         f'{len(names) + len(interfaces) - 1} constants')
    best = None
    for ratio in CLOCK_RATIOS if len(interfaces) > 1 else (1.0,):
        scales = np.where(link_of == 0, 1.0, ratio)
        solved = _solve(design, published, scales, interfaces, chip_n, link_n,
                        lower_inverse_utilisation=max(1.0, 1.0 / ratio))
        if best is None or solved[1] < best[1]:
            best = (ratio, solved[1], solved[0], scales)
    ratio, _, theta, scales = best
    scaled = design.copy()
    scaled[:, :chip_n] *= scales[:, None]
    errors = scaled @ theta / published - 1.0
    worst = int(np.argmax(np.abs(errors)))
    if abs(errors[worst]) > 0.5:
        raise FitRefused(f'the fitted model is off by {100 * errors[worst]:+.0f}% on '
                         f'{labels[worst]}, a row it was fitted on')
    lower, upper = _bounds(interfaces, chip_n, link_n, max(1.0, 1.0 / ratio))
    at_bound = tuple(name for name, value, low, high in zip(names, theta, lower, upper)
                     if value <= low * (1 + 1e-6) + 1e-12 or value >= high * (1 - 1e-6))
    if ratio in (CLOCK_RATIOS[0], CLOCK_RATIOS[-1]) and len(interfaces) > 1:
        at_bound += ('clock_ratio',)
    chip = dict(zip(CHIP_CONSTANTS, theta[:chip_n]))
    timings = {}
    for k, interface in enumerate(interfaces):
        overhead, inverse_bandwidth, host = theta[chip_n + k * link_n:chip_n + (k + 1) * link_n]
        slow = 1.0 if k == 0 else ratio
        timings[interface] = EdgeTPUTiming(
            interface, float(overhead), float(chip['layer_overhead_s'] * slow),
            {kind: float(1.0 / (chip[kind] * slow)) for kind in ('matrix', 'depthwise', 'vector')},
            float(1.0 / inverse_bandwidth), float(host), cache_bytes)
    return Fit(timings, tuple(row.model for row in rows), at_bound)


def leave_one_out(rows: Sequence[PublishedLatency] = CALIBRATION,
                  interfaces: Sequence[str] = INTERFACES) -> list[dict]:
    """Refit without each row in turn and predict it: one record per (row, link)."""
    records = []
    for i, row in enumerate(rows):
        rest = tuple(rows[:i]) + tuple(rows[i + 1:])
        try:
            fit, refused = fit_timing(rest, interfaces), None
        except FitRefused as err:
            fit, refused = None, str(err)
        for interface in interfaces:
            published = row.published_ms(interface)
            if published is None:
                continue
            predicted = None if fit is None else fit.predict_ms(row, interface)
            records.append({
                'model': row.model, 'interface': interface, 'published_ms': published,
                'predicted_ms': predicted, 'refused': refused,
                'error_pct': None if predicted is None
                else 100.0 * (predicted - published) / published})
    return records


@lru_cache(maxsize=None)
def calibrated_fit() -> Fit:
    """Fit on every calibration row, once."""
    return fit_timing()


def calibrated_timing(interface: str = 'usb') -> EdgeTPUTiming:
    """Return the fitted model for ``interface`` ('usb' or 'pcie')."""
    if interface not in INTERFACES:
        raise ValueError(f'unknown Edge TPU interface {interface!r}; known: {INTERFACES}')
    return calibrated_fit().timings[interface]


def calibration_table(interface: str = 'usb',
                      rows: Sequence[PublishedLatency] = CALIBRATION
                      ) -> list[tuple[str, float, float, float]]:
    """Rows of (network, published ms, modelled ms, relative error %) for the docs."""
    fit = calibrated_fit()
    table = []
    for row in rows:
        published = row.published_ms(interface)
        if published is not None:
            modelled = fit.predict_ms(row, interface)
            table.append((row.model, published, modelled,
                          100.0 * (modelled - published) / published))
    return table
