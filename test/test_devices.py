# Copyright 2026 dyn_perception maintainers. Apache-2.0.
"""
Devices: the calibrated Edge TPU model, the simulated TPU, LiteRT on the CPU, real TPUs.

The tiny model under test/fixtures (made by test/fixtures/make_fixtures.py) keeps these tests
free of torch and of any data set. Real Edge TPUs are exercised through a stand-in for pycoral
that hands out CPU interpreters, which is as far as a machine without a TPU can go.
"""

from dataclasses import replace
from pathlib import Path
import sys
import time
import types

from dyn_perception.runtime.artifacts import load_manifest, load_profile
from dyn_perception.runtime.devices import (
    calibrated_timing, calibration_table, DeviceError, DeviceUnavailable, EdgeTPUDevice,
    list_edge_tpus, LiteRTCpuDevice, make_devices, segment_refs, SimulatedEdgeTPU
)
from dyn_perception.runtime.devices.layers import read_tflite
from dyn_perception.runtime.preprocess import to_int8_input
from dyn_perception.runtime.segment import SegmentRunner
import numpy as np
import pytest

FIXTURES = Path(__file__).resolve().parent / 'fixtures'


@pytest.fixture(scope='module')
def model():
    manifest = load_manifest(FIXTURES / 'tiny_eenet')
    profile = load_profile(manifest.directory)
    variant = manifest.variant('base')
    refs = segment_refs(manifest, variant, profile.variant('base'))
    frames = np.load(FIXTURES / 'frames.npy')
    x = to_int8_input(frames[:1], manifest.input, variant.segments[0].input)
    return manifest, refs, x


def test_calibration_reproduces_coral_benchmarks():
    for interface in ('usb', 'pcie'):
        timing = calibrated_timing(interface)
        assert all(0.05 < u <= 1.0 for u in timing.utilisation.values())
        assert 0.0 <= timing.overhead_s < 3e-3
        assert 100e6 < timing.bandwidth_bytes_per_s <= 500e6  # USB 3.0 / PCIe Gen2 x1
        rows = calibration_table(interface)
        names = {row[0] for row in rows}
        assert names >= {'MobileNet v1 (224)', 'MobileNet v2 (224)', 'ResNet-50 V1 (299)'}
        for name, published, modelled, error in rows:
            assert abs(error) < 15.0, f'{interface} {name}: {modelled:.2f} vs {published} ms'
    usb = {row[0]: row[1] for row in calibration_table('usb')}
    assert usb['MobileNet v1 (224)'] == 2.4 and usb['MobileNet v2 (224)'] == 2.6
    assert usb['ResNet-50 V1 (299)'] == 49.0


def test_timing_rejects_impossible_constants():
    good = calibrated_timing('usb')
    with pytest.raises(ValueError, match='utilisation of matrix'):
        replace(good, utilisation={**good.utilisation, 'matrix': 1.5})
    with pytest.raises(ValueError, match='bandwidth'):
        replace(good, bandwidth_bytes_per_s=0.0)
    with pytest.raises(ValueError, match='bandwidth'):
        replace(good, bandwidth_bytes_per_s=2e9)  # faster than a USB 3.0 link can carry
    with pytest.raises(ValueError, match='interface'):
        calibrated_timing('serial')


def test_simulated_tpu_gives_real_results_and_modelled_cost(model):
    manifest, refs, x = model
    timing = calibrated_timing('usb')
    tpu = SimulatedEdgeTPU('t0', timing)
    first = refs[0]
    tpu.load([first])
    invocation = tpu.invoke(first, x)
    reference = SegmentRunner(first.spec, first.path)(x)
    np.testing.assert_array_equal(invocation.output.features, reference.features)
    np.testing.assert_array_equal(invocation.output.logits, reference.logits)
    network = read_tflite(first.path)
    expected = (timing.overhead_s + sum(timing.layer_s(layer) for layer in network.layers)
                + network.io_bytes / timing.bandwidth_bytes_per_s)
    assert expected > timing.overhead_s
    assert invocation.seconds == pytest.approx(expected)
    assert invocation.energy_j == pytest.approx(2.0 * expected)
    assert tpu.estimate_ms([first]) == pytest.approx((1e3 * expected,))


def test_weights_beyond_the_cache_stream_on_every_invocation(model):
    _, refs, x = model
    timing = calibrated_timing('usb')
    networks = [read_tflite(ref.path) for ref in refs[:2]]
    alone = SimulatedEdgeTPU('a', timing).estimate_ms(refs[:1])[0]
    # A cache that holds nothing: every weight byte crosses the link on every invocation.
    empty = replace(timing, cache_bytes=0)
    streamed = SimulatedEdgeTPU('b', empty).estimate_ms(refs[:1])[0]
    assert streamed - alone == pytest.approx(
        1e3 * networks[0].weight_bytes / timing.bandwidth_bytes_per_s)
    # Co-resident: the second model gets what the first leaves; it streams the rest.
    tight = replace(timing, cache_bytes=networks[0].weight_bytes)
    together = SimulatedEdgeTPU('c', tight).estimate_ms(refs[:2])
    second_alone = SimulatedEdgeTPU('d', timing).estimate_ms(refs[1:2])[0]
    assert together[0] == pytest.approx(alone)
    assert together[1] - second_alone == pytest.approx(
        1e3 * networks[1].weight_bytes / timing.bandwidth_bytes_per_s)


def test_swap_cost_counts_what_moves(model):
    _, refs, x = model
    timing = calibrated_timing('usb')
    tpu = SimulatedEdgeTPU('t0', timing)
    weights = [read_tflite(ref.path).weight_bytes for ref in refs]
    report = tpu.load(refs[:2])
    assert report.seconds == pytest.approx(2 * timing.overhead_s
                                           + sum(weights[:2]) / timing.bandwidth_bytes_per_s)
    assert report.energy_j == pytest.approx(2.0 * report.seconds)
    assert tpu.load(refs[:2]).seconds == 0.0, 'nothing changes, nothing to pay'
    swap = tpu.load(refs[1:])
    assert swap.evicted == (refs[0].key,) and swap.loaded == (refs[2].key,)
    assert swap.seconds == pytest.approx(timing.overhead_s
                                         + weights[2] / timing.bandwidth_bytes_per_s)
    with pytest.raises(DeviceError, match='not loaded'):
        tpu.invoke(refs[0], x)


def test_injected_failure_and_wall_clock_sleeps(model):
    _, refs, x = model
    slow = replace(calibrated_timing('usb'), overhead_s=0.02)
    tpu = SimulatedEdgeTPU('w', slow, clock='wall')
    assert not tpu.virtual
    tpu.load(refs[:1])
    tpu.fail_after(1)
    start = time.perf_counter()
    invocation = tpu.invoke(refs[0], x)
    assert time.perf_counter() - start >= invocation.seconds >= 0.02
    with pytest.raises(DeviceError, match='w: simulated failure'):
        tpu.invoke(refs[0], x)
    with pytest.raises(ValueError, match='clock'):
        SimulatedEdgeTPU('x', clock='sundial')


def test_cpu_device_measures_and_estimates_from_the_profile(model):
    manifest, refs, x = model
    cpu = LiteRTCpuDevice('cpu0', active_power_w=2.0)
    assert cpu.load(refs).loaded == tuple(r.key for r in refs)
    invocation = cpu.invoke(refs[0], x)
    np.testing.assert_array_equal(invocation.output.features,
                                  SegmentRunner(refs[0].spec, refs[0].path)(x).features)
    assert invocation.seconds > 0 and invocation.energy_j == pytest.approx(
        2.0 * invocation.seconds)
    medians = tuple(r.profile.latency['litert_cpu'].median_ms for r in refs)
    assert cpu.estimate_ms(refs) == medians
    bare = segment_refs(manifest, manifest.variant('base'))
    with pytest.raises(ValueError, match='profile'):
        cpu.estimate_ms(bare)


def test_edgetpu_without_pycoral_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, 'pycoral', None)
    with pytest.raises(DeviceUnavailable, match='unrelated project'):
        list_edge_tpus()
    with pytest.raises(DeviceUnavailable, match='pycoral'):
        EdgeTPUDevice(0)


def _fake_pycoral(monkeypatch, tpus: list) -> list:
    """Install a stand-in for pycoral.utils.edgetpu whose interpreters run on the CPU."""
    from ai_edge_litert.interpreter import Interpreter
    opened = []

    def make_interpreter(path: str, device: str = None):
        opened.append((path, device))
        return Interpreter(model_path=path)

    edgetpu = types.SimpleNamespace(list_edge_tpus=lambda: list(tpus),
                                    make_interpreter=make_interpreter)
    utils = types.SimpleNamespace(edgetpu=edgetpu)
    monkeypatch.setitem(sys.modules, 'pycoral', types.SimpleNamespace(utils=utils))
    monkeypatch.setitem(sys.modules, 'pycoral.utils', utils)
    monkeypatch.setitem(sys.modules, 'pycoral.utils.edgetpu', edgetpu)
    return opened


def test_edgetpu_device_through_pycoral(monkeypatch, model):
    _, refs, x = model
    opened = _fake_pycoral(monkeypatch, [{'type': 'usb', 'path': '/sys/bus/usb/1'},
                                         {'type': 'pci', 'path': '/dev/apex_0'}])
    assert len(list_edge_tpus()) == 2
    with pytest.raises(DeviceUnavailable, match=':2'):
        EdgeTPUDevice(2)
    tpu = EdgeTPUDevice(1)
    assert tpu.name == 'edgetpu:1' and tpu.interface == 'pcie'
    with pytest.raises(DeviceError, match='edgetpu_compiler'):
        tpu.load(refs[:1])
    compiled = replace(refs[0], edgetpu_path=refs[0].path)  # stands in for *_edgetpu.tflite
    tpu.load([compiled])
    assert opened == [(str(refs[0].path), ':1')]
    invocation = tpu.invoke(compiled, x)
    np.testing.assert_array_equal(invocation.output.logits,
                                  SegmentRunner(refs[0].spec, refs[0].path)(x).logits)
    assert tpu.estimate_ms([compiled]) == SimulatedEdgeTPU(
        's', calibrated_timing('pcie')).estimate_ms([compiled])


def test_make_devices_by_backend(monkeypatch):
    monkeypatch.setitem(sys.modules, 'pycoral', None)
    auto = make_devices('auto', 2)
    assert [d.kind for d in auto] == ['litert_cpu', 'litert_cpu']
    sims = make_devices('sim-edgetpu', 3, clock='virtual', interface='pcie')
    assert [d.name for d in sims] == ['simtpu0', 'simtpu1', 'simtpu2']
    assert all(d.virtual and d.timing.interface == 'pcie' for d in sims)
    with pytest.raises(DeviceUnavailable):
        make_devices('edgetpu', 1)
    with pytest.raises(ValueError, match='backend'):
        make_devices('gpu', 1)
    _fake_pycoral(monkeypatch, [{'type': 'usb', 'path': 'x'}])
    assert [d.kind for d in make_devices('auto', 1)] == ['edgetpu']
    assert [d.kind for d in make_devices('auto', 2)] == ['litert_cpu'] * 2
