# Copyright 2026 dyn_perception maintainers. Apache-2.0.
"""
The per-layer Edge TPU model: graphs read into layers, the networks, caching, fit, LOO.

Runs on the committed fixture segments and on the layer lists of Coral's benchmark networks;
no Edge TPU is involved, so what is checked is the model's machinery and its calibration on
published figures, not agreement with a device.
"""

from dataclasses import replace
from pathlib import Path

from dyn_perception.runtime.artifacts import load_manifest
from dyn_perception.runtime.devices import layers as layers_module
from dyn_perception.runtime.devices.coral_networks import (
    CALIBRATION, mobilenet_v1, PublishedLatency, resnet, vgg
)
from dyn_perception.runtime.devices.layers import LayerBuilder, read_tflite, UnreadableModel
from dyn_perception.runtime.devices.timing import (
    ARRAY, calibrated_timing, fit_timing, FitRefused, layer_cycles, leave_one_out,
    LINK_PEAK_BYTES_PER_S, OVERHEAD_BOUNDS_S, plan_cache
)
import pytest

FIXTURES = Path(__file__).resolve().parent / 'fixtures'


def test_segment_graphs_read_into_layers_that_match_the_manifest():
    manifest = load_manifest(FIXTURES / 'tiny_eenet')
    for spec in manifest.variant('base').segments:
        network = read_tflite(manifest.path(spec.file))
        kinds = {layer.kind for layer in network.layers}
        assert 'matrix' in kinds and network.io_bytes > 0
        # The manifest counts MACs and parameters its own way (biases, pooling): close, not equal.
        assert network.macs == pytest.approx(spec.macs, rel=0.1)
        assert network.weight_bytes == pytest.approx(spec.param_bytes, rel=0.1)


def test_unknown_op_missing_and_corrupt_files_are_named(tmp_path, monkeypatch):
    segment = load_manifest(FIXTURES / 'tiny_eenet').path('base/segment0.tflite')
    with pytest.raises(UnreadableModel, match='no such model file'):
        read_tflite(tmp_path / 'absent.tflite')
    corrupt = tmp_path / 'corrupt.tflite'
    corrupt.write_bytes(b'\x00not a flatbuffer' * 64)
    with pytest.raises(UnreadableModel, match='corrupt.tflite: LiteRT cannot read it'):
        read_tflite(corrupt)
    read_tflite.cache_clear()
    known = dict(layers_module.OP_KINDS)
    del known['CONV_2D']
    monkeypatch.setattr(layers_module, 'OP_KINDS', known)
    with pytest.raises(UnreadableModel, match=r'op CONV_2D is not in the Edge TPU timing model'):
        read_tflite(segment)
    read_tflite.cache_clear()


def test_written_architectures_have_their_papers_sizes():
    mobilenet = mobilenet_v1(224).mean().fc(1001).network('m', 224 * 224 * 3)
    assert mobilenet.macs == pytest.approx(569e6, rel=0.02)  # Howard et al. 2017
    assert mobilenet.weight_bytes == pytest.approx(4.2e6, rel=0.05)
    assert vgg((2, 2, 3, 3, 3), 'v').macs == pytest.approx(15.5e9, rel=0.02)
    assert vgg((2, 2, 3, 3, 3), 'v').weight_bytes == pytest.approx(138e6, rel=0.01)
    assert resnet((3, 4, 6, 3), 224, False, 'r').macs == pytest.approx(3.9e9, rel=0.05)


def test_convolutions_are_one_matrix_pass_per_kernel_position():
    # A 7 x 7 stem on 3 channels: 49 passes of one (mostly empty) 64 x 64 block each.
    stem = LayerBuilder(224, 224).conv(64, 7, 2).layers[-1]
    assert layer_cycles(stem) == ('matrix', 49 * (112 * 112 + ARRAY))
    # 1 x 1 from 96 to 160 channels: 2 x 3 blocks; the same on a 3 x 3 kernel: 9 times that.
    pointwise = LayerBuilder(14, 14, 96).conv(160).layers[-1]
    assert layer_cycles(pointwise) == ('matrix', 6 * (196 + ARRAY))
    spatial = LayerBuilder(14, 14, 96).conv(160, 3).layers[-1]
    assert layer_cycles(spatial)[1] == 9 * layer_cycles(pointwise)[1]


def test_cache_is_first_fit_per_layer_in_load_order():
    def net(*weights):
        b = LayerBuilder(1, 1, 1)
        b.layers = [replace(b.conv(1).layers[-1], weight_bytes=w) for w in weights]
        return b.network('n', 1)

    plan = plan_cache([net(40, 70, 20), net(30, 10)], capacity=100)
    # 40 fits, 70 does not (60 left), 20 does; the next model gets the 40 bytes left.
    assert plan.cached == ((True, False, True), (True, True))
    assert plan.streamed_bytes(0) == 70 and plan.cached_bytes(1) == 40


def test_fitted_constants_are_physical_and_the_link_is_shared():
    for interface in ('usb', 'pcie'):
        timing = calibrated_timing(interface)
        assert all(0 < u <= 1 for u in timing.utilisation.values())
        assert timing.bandwidth_bytes_per_s <= LINK_PEAK_BYTES_PER_S[interface]
    pcie = calibrated_timing('pcie')
    # The Dev Board's per-invocation cost stays within the measured range, never zero, so a
    # tiny segment on PCIe costs at least that.
    low, high = OVERHEAD_BOUNDS_S['pcie']
    assert 0 < low <= pcie.overhead_s <= high
    tiny = LayerBuilder(8, 8, 1).conv(4).network('tiny', 64)
    assert pcie.estimate_s([tiny])[0] > pcie.overhead_s
    assert pcie.sharing(1, 2e9).bandwidth_bytes_per_s == pcie.bandwidth_bytes_per_s
    assert pcie.sharing(8, 2e9).bandwidth_bytes_per_s == pytest.approx(2e9 / 8)
    with pytest.raises(ValueError, match='transferring'):
        pcie.sharing(0)


def test_fit_refuses_what_its_rows_cannot_determine():
    by_name = {row.model: row for row in CALIBRATION}
    with pytest.raises(FitRefused, match='published times for'):
        fit_timing((*CALIBRATION[:2], by_name['SSD MobileNet v1 (300)']))
    no_depthwise = [row for row in CALIBRATION if 'MobileNet' not in row.model]
    with pytest.raises(FitRefused, match='exercises depthwise'):
        fit_timing(no_depthwise)
    # A MobileNet published 100x slower than it is: nothing physical explains that row.
    wrong = replace(by_name['MobileNet v1 (224)'], usb_ms=240.0, pcie_ms=240.0)
    with pytest.raises(FitRefused, match='off by'):
        fit_timing([wrong if row.model == wrong.model else row for row in CALIBRATION])


def test_leave_one_out_refits_without_the_row_and_reports_refusals():
    rows = tuple(row for row in CALIBRATION if row.model != 'SSD MobileNet v2 (300)')
    records = leave_one_out(rows)
    assert len(records) == 2 * len(rows)
    vgg16 = next(r for r in records if r['model'] == 'VGG16 (224)' and r['interface'] == 'usb')
    rest = tuple(row for row in rows if row.model != 'VGG16 (224)')
    expected = fit_timing(rest).predict_ms(next(r for r in rows if r.model == 'VGG16 (224)'),
                                           'usb')
    assert vgg16['predicted_ms'] == pytest.approx(expected)
    assert vgg16['error_pct'] == pytest.approx(100 * (expected - 296.0) / 296.0)
    # Without its only SSD row the host time of non-maximum suppression is undetermined.
    ssd = [r for r in records if r['model'] == 'SSD MobileNet v1 (300)']
    assert all(r['predicted_ms'] is None and 'host_s_per_element' in r['refused'] for r in ssd)


def test_leave_one_out_stays_within_the_targets_on_both_links():
    records = leave_one_out()
    errors = {interface: [abs(r['error_pct']) for r in records if r['interface'] == interface]
              for interface in ('usb', 'pcie')}
    assert not any(r['refused'] for r in records)
    assert all(max(column) <= 25 for column in errors.values()), errors
    assert sorted(errors['usb'] + errors['pcie'])[len(records) // 2] <= 10


def test_rows_without_a_published_time_are_skipped():
    usb_only = [replace(row, pcie_ms=None) for row in CALIBRATION]
    fit = fit_timing(usb_only, interfaces=('usb',))
    assert set(fit.timings) == {'usb'}
    row = PublishedLatency('x', CALIBRATION[0].build, None, None)
    assert row.published_ms('usb') is None
