"""
The Edge TPU time and energy model, calibrated on Coral's published latencies.

One invocation of a compiled model costs

    t = overhead + 2 MACs / (4 TOPS * utilisation) + (streamed params + I/O bytes) / bandwidth

- ``overhead``: the fixed host-side cost of one invocation (driver, USB or PCIe transaction).
- compute at the Edge TPU's 4 TOPS peak times a utilisation no real network reaches fully.
- what does not fit in the 8 MB parameter cache is streamed from host memory on every
  invocation, over the same link that carries the input and output tensors.

The three unknowns enter linearly, so they are fitted by least squares on relative error to
the published table below, one fit per host interface (USB 3.0 accelerator; PCIe, the Dev
Board). Loading a model (a swap) transfers its cached parameters once: ``overhead + bytes /
bandwidth``. Power: 2 W while the TPU works (Coral: 4 TOPS at 2 TOPS per watt); idle power is
not published, so it is an assumption here (see ``IDLE_POWER_W``). docs/runtime.md holds the
published-versus-modelled table this module prints.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

PEAK_OPS_PER_S = 4e12  # Coral: "4 trillion operations per second" per Edge TPU
CACHE_BYTES = 8 * 1024 * 1024  # on-chip memory for parameters, shared by co-resident models
ACTIVE_POWER_W = 2.0  # Coral: 4 TOPS "using 2 watts of power"
# Assumption, no published figure found: an idle Edge TPU module draws about a quarter of its
# active power. Used only for the idle energy of TPUs that wait.
IDLE_POWER_W = 0.5
INTERFACES = ('usb', 'pcie')


@dataclass(frozen=True)
class PublishedLatency:
    """
    One row of Coral's benchmark table with the network's size (for the fit).

    MACs are scaled to the benchmark's input size from the figure in the network's paper;
    ``params`` are weights, one byte each in int8.
    """

    model: str
    input_size: int
    macs: float
    params: float
    usb_ms: float
    pcie_ms: float

    @property
    def io_bytes(self) -> int:
        """Bytes over the link per inference: RGB uint8 input and 1001 class scores."""
        return self.input_size * self.input_size * 3 + 1001

    def published_ms(self, interface: str) -> float:
        return self.usb_ms if interface == 'usb' else self.pcie_ms


_SCALE_299 = (299 / 224) ** 2
# coral.ai/docs/edgetpu/benchmarks, table 1: "Desktop CPU + USB Accelerator (USB 3.0)" and "Dev
# Board with Edge TPU" (its Edge TPU sits on PCIe). Sizes: MobileNet v1 (Howard et al. 2017:
# 569 M mult-adds, 4.2 M parameters), MobileNet v2 (Sandler et al. 2018: 300 M, 3.4 M),
# Inception v1 (Szegedy et al. 2015: 1.5 G mult-adds; 6.6 M parameters in TF-slim), ResNet-50
# and ResNet-152 (He et al. 2016: 3.8 G and 11.3 G FLOPs, counted as multiply-adds, at 224;
# 25.6 M and 60.2 M parameters), VGG16 (15.5 G mult-adds, 138 M parameters).
PUBLISHED = (
    PublishedLatency('MobileNet v1 (224)', 224, 569e6, 4.2e6, 2.4, 2.4),
    PublishedLatency('MobileNet v2 (224)', 224, 300e6, 3.4e6, 2.6, 2.6),
    PublishedLatency('Inception v1 (224)', 224, 1.5e9, 6.6e6, 3.4, 4.1),
    PublishedLatency('ResNet-50 V1 (299)', 299, 3.8e9 * _SCALE_299, 25.6e6, 49.0, 56.0),
    PublishedLatency('ResNet-152 V2 (299)', 299, 11.3e9 * _SCALE_299, 60.2e6, 128.0, 151.0),
    PublishedLatency('VGG16 (224)', 224, 15.5e9, 138e6, 296.0, 343.0),
)


@dataclass(frozen=True)
class EdgeTPUTiming:
    """Calibrated constants of one Edge TPU on one host interface."""

    interface: str
    overhead_s: float
    utilisation: float
    bandwidth_bytes_per_s: float
    peak_ops_per_s: float = PEAK_OPS_PER_S
    cache_bytes: int = CACHE_BYTES
    active_power_w: float = ACTIVE_POWER_W
    idle_power_w: float = IDLE_POWER_W

    def __post_init__(self) -> None:
        problems = [f'{name} must be positive' for name in
                    ('bandwidth_bytes_per_s', 'peak_ops_per_s', 'cache_bytes')
                    if not getattr(self, name) > 0]
        if not self.overhead_s >= 0:
            problems.append('overhead_s must be >= 0')
        if not 0 < self.utilisation <= 1:
            problems.append('utilisation must be in (0, 1]')
        if self.idle_power_w < 0 or self.active_power_w < self.idle_power_w:
            problems.append('power must satisfy 0 <= idle <= active')
        if problems:
            raise ValueError(f'bad Edge TPU timing: {", ".join(problems)}')

    def compute_s(self, macs: float) -> float:
        """Time of the arithmetic alone: two operations per multiply-accumulate."""
        return 2.0 * macs / (self.peak_ops_per_s * self.utilisation)

    def transfer_s(self, num_bytes: float) -> float:
        return num_bytes / self.bandwidth_bytes_per_s

    def invoke_s(self, macs: float, streamed_bytes: float, io_bytes: float) -> float:
        """One invocation of a resident model that streams ``streamed_bytes`` of parameters."""
        return self.overhead_s + self.compute_s(macs) + self.transfer_s(streamed_bytes + io_bytes)

    def load_s(self, cached_bytes: float) -> float:
        """Swap a model in: one host transaction and its cached parameters over the link."""
        return self.overhead_s + self.transfer_s(cached_bytes)


def cache_plan(param_bytes: list[int], cache_bytes: int = CACHE_BYTES) -> list[int]:
    """
    Split the cache among co-resident models: each takes what it needs, in load order.

    That is how co-compiled models share it (edgetpu_compiler gives the first model listed
    priority); the part of a model that gets no cache is streamed on every invocation.
    """
    free, cached = cache_bytes, []
    for size in param_bytes:
        take = min(size, free)
        cached.append(take)
        free -= take
    return cached


def fit_timing(interface: str, rows: tuple[PublishedLatency, ...] = PUBLISHED) -> EdgeTPUTiming:
    """Least squares on relative error for (overhead, 1 / utilisation, 1 / bandwidth)."""
    if interface not in INTERFACES:
        raise ValueError(f'unknown Edge TPU interface {interface!r}; known: {INTERFACES}')
    design = np.array([[1.0, 2.0 * r.macs / PEAK_OPS_PER_S,
                        max(0.0, r.params - CACHE_BYTES) + r.io_bytes] for r in rows])
    published = np.array([r.published_ms(interface) * 1e-3 for r in rows])
    weights = 1.0 / published
    (overhead, inverse_utilisation, inverse_bandwidth), *_ = np.linalg.lstsq(
        design * weights[:, None], published * weights, rcond=None)
    return EdgeTPUTiming(interface, float(overhead), float(1.0 / inverse_utilisation),
                         float(1.0 / inverse_bandwidth))


@lru_cache(maxsize=None)
def calibrated_timing(interface: str = 'usb') -> EdgeTPUTiming:
    """Return the fitted model for ``interface`` ('usb' or 'pcie'), computed once."""
    return fit_timing(interface)


def modelled_ms(row: PublishedLatency, timing: EdgeTPUTiming) -> float:
    """Predict a published network's latency (parameters beyond the cache stream)."""
    streamed = max(0.0, row.params - timing.cache_bytes)
    return 1e3 * timing.invoke_s(row.macs, streamed, row.io_bytes)


def calibration_table(interface: str = 'usb') -> list[tuple[str, float, float, float]]:
    """Rows of (network, published ms, modelled ms, relative error %) for the docs."""
    timing = calibrated_timing(interface)
    rows = []
    for row in PUBLISHED:
        published, modelled = row.published_ms(interface), modelled_ms(row, timing)
        rows.append((row.model, published, modelled, 100.0 * (modelled - published) / published))
    return rows
