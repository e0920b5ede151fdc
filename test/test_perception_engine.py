# Copyright 2026 dyn_perception maintainers. Apache-2.0.
"""The perception node's logic without ROS: settings checks, modes, variants, records."""

from dataclasses import replace
import shutil
import threading

from dyn_perception.runtime.perception import PerceptionEngine, PerceptionSettings, RESULT_SCHEMA
from lint_targets import PACKAGE_ROOT
import numpy as np
import pytest
import yaml

FIXTURE = PACKAGE_ROOT / 'test' / 'fixtures'


@pytest.fixture
def engine(tmp_path):
    # The fixture model, with its build's choice of variant per mode replaced by a known one.
    model = tmp_path / 'tiny_eenet'
    shutil.copytree(FIXTURE / 'tiny_eenet', model)
    manifest = yaml.safe_load((model / 'manifest.yaml').read_text())
    manifest['mode_variants'] = {'entropy': {'critical': 'slim'}}
    (model / 'manifest.yaml').write_text(yaml.safe_dump(manifest, sort_keys=False))
    records, done = [], threading.Condition()

    def on_record(record, image):
        with done:
            records.append(record)
            done.notify_all()

    settings = PerceptionSettings(model=str(model), backend='litert',
                                  num_tpus=1, mode='balanced', live=False)
    engine = PerceptionEngine(settings, on_record)
    engine.records, engine.done = records, done
    yield engine
    engine.close()


def run(engine, frames, labels):
    start = len(engine.records)
    for i, frame in enumerate(frames):
        engine.submit(frame, (0, i), int(labels[i]))
    with engine.done:
        assert engine.done.wait_for(lambda: len(engine.records) >= start + len(frames), 20)
    return engine.records[start:]


def test_records_follow_the_schema_and_count_accuracy(engine):
    frames = np.load(FIXTURE / 'frames.npy')[:20]
    labels = np.arange(20) % 10
    records = run(engine, frames, labels)
    assert [r['frame'] for r in records] == list(range(20))
    assert all(r['schema'] == RESULT_SCHEMA and r['variant'] == 'base' for r in records)
    assert engine.labelled == 20
    assert engine.diagnostics()['labelled'] == 20


def test_a_mode_brings_its_variant_and_bad_settings_are_refused(engine):
    frames = np.load(FIXTURE / 'frames.npy')[:10]
    critical = replace(engine.settings, mode='critical')
    assert engine.check(critical) is None
    engine.apply(critical)
    records = run(engine, frames, np.zeros(10))
    assert {r['variant'] for r in records} == {'slim'} and records[-1]['mode'] == 'critical'
    # The choice is per policy: under max_softmax no variant was chosen, so the default runs.
    engine.apply(replace(critical, policy='max_softmax'))
    assert {r['variant'] for r in run(engine, frames, np.zeros(10))} == {'base'}
    pinned = replace(critical, variant='base')
    engine.apply(pinned)
    assert {r['variant'] for r in run(engine, frames, np.zeros(10))} == {'base'}
    for bad, reason in ((replace(pinned, backend='gpu'), 'backend'),
                        (replace(pinned, variant='huge'), 'huge'),
                        (replace(pinned, thresholds=(0.1,)), 'early exits'),
                        (replace(pinned, policy='max_softmax', thresholds=(2.0, 0.5)), 'outside'),
                        (replace(pinned, mode='turbo'), 'turbo')):
        assert reason in engine.check(bad)
    assert engine.settings == pinned


def test_frames_that_never_arrived_get_dropped_records_in_sequence(engine):
    frames = np.load(FIXTURE / 'frames.npy')[:4]
    labels = np.arange(4)
    run(engine, frames[:2], labels)
    engine.record_not_received(3, 'never received')
    records = run(engine, frames[2:], labels)
    lost = engine.records[2:5]
    assert [r['frame'] for r in engine.records] == list(range(7))
    assert all(r['status'] == 'dropped' and r['error'] == 'never received'
               and r['stamp'] is None and r['latency_ms'] is None for r in lost)
    assert all(r['status'] == 'ok' for r in records)
    assert engine.diagnostics()['not_received'] == 3
    assert engine.labelled == 4  # a frame that never came is not counted in the accuracy


def _mode_configs(model, chosen):
    """Write a ``mode_configs`` entry per mode: (variant, TPUs, thresholds)."""
    manifest = yaml.safe_load((model / 'manifest.yaml').read_text())
    manifest['mode_configs'] = {'fps': 30.0, 'max_tpus': 2, 'command': 'test', 'policies': {
        'entropy': {mode: {
            'variant': variant, 'policy': 'entropy', 'thresholds': list(thresholds),
            'num_tpus': tpus, 'accuracy': 0.9, 'active_energy_j': 1e-3, 'idle_power_w': 0.5,
            'p99_ms': 1.0, 'swap_s': 0.01, 'swap_energy_j': 0.02, 'mode': mode}
            for mode, (variant, tpus, thresholds) in chosen.items()}}}
    (model / 'manifest.yaml').write_text(yaml.safe_dump(manifest, sort_keys=False))


def _front_model(tmp_path):
    """Copy the fixture model and give it a front: 2 TPUs, 1, 1 on the slim variant, the host."""
    model = tmp_path / 'tiny_eenet'
    shutil.copytree(FIXTURE / 'tiny_eenet', model)
    _mode_configs(model, {'performance': ('base', 2, (0.5, 0.6)),
                          'balanced': ('base', 1, (0.7, 0.8)),
                          'eco': ('slim', 1, (0.9, 1.0)),
                          'critical': ('slim', 0, (1.1, 1.2))})
    return model


def test_a_mode_runs_its_front_configuration_and_powers_unused_tpus_down(tmp_path):
    model = _front_model(tmp_path)
    records, done = [], threading.Condition()

    def on_record(record, image):
        with done:
            records.append(record)
            done.notify_all()

    engine = PerceptionEngine(PerceptionSettings(model=str(model), backend='sim-edgetpu',
                                                 num_tpus=2, mode='performance', live=False),
                              on_record)
    engine.records, engine.done = records, done
    frames = np.load(FIXTURE / 'frames.npy')[:10]
    try:
        assert engine.pipeline.config.thresholds == (0.5, 0.6)
        assert engine.diagnostics()['devices_powered'] == 2
        run(engine, frames, np.zeros(10))

        engine.apply(replace(engine.settings, mode='balanced'))
        records_balanced = run(engine, frames, np.zeros(10))
        assert engine.pipeline.config.thresholds == (0.7, 0.8)
        assert {r['mode'] for r in records_balanced} == {'balanced'}
        # The second TPU unloads on its own worker, then is powered off.
        deadline = 200
        while engine.diagnostics()['devices_powered'] != 1 and deadline:
            threading.Event().wait(0.05)
            deadline -= 1
        assert engine.diagnostics()['devices_powered'] == 1
        assert engine.pipeline.devices[1].off and not engine.pipeline.devices[1].resident
        before = engine.stats().devices[1].invocations
        run(engine, frames, np.zeros(10))
        assert engine.stats().devices[1].invocations == before, 'an off TPU ran frames'

        # No TPU at all: one host core, the mode's own variant and thresholds.
        engine.apply(replace(engine.settings, mode='critical'))
        records_critical = run(engine, frames, np.zeros(10))
        assert [d.kind for d in engine.pipeline.devices] == ['host_cpu']
        assert {r['variant'] for r in records_critical} == {'slim'}
        assert engine.pipeline.config.thresholds == (1.1, 1.2)

        # Back onto TPUs; a pinned variant or explicit thresholds bypass the front.
        engine.apply(replace(engine.settings, mode='eco'))
        assert [d.kind for d in engine.pipeline.devices] == ['sim_edgetpu'] * 2
        assert engine.pipeline.config.variant.name == 'slim'
        pinned = replace(engine.settings, thresholds=(0.2, 0.3))
        assert engine.check(pinned) is None
        engine.apply(pinned)
        assert engine.pipeline.config.thresholds == (0.2, 0.3)
        engine.pipeline.wait_loaded()  # the second TPU wakes and loads again
        assert engine.diagnostics()['devices_powered'] == 2
    finally:
        engine.close()
    # On LiteRT the devices are CPU workers: the mode's variant and thresholds, every worker.
    cpu = PerceptionEngine(PerceptionSettings(model=str(model), backend='litert', num_tpus=2,
                                              mode='critical', live=False), on_record)
    try:
        assert [d.kind for d in cpu.pipeline.devices] == ['litert_cpu'] * 2
        assert cpu.pipeline.config.thresholds == (1.1, 1.2)
        assert cpu.pipeline.config.variant.name == 'slim'
    finally:
        cpu.close()


def test_in_virtual_time_a_host_mode_keeps_the_tpus_off_and_coming_back_pays_the_wake(tmp_path):
    """The battery bench's engine: same TPUs across host <-> TPU rebuilds, wakes charged."""
    model = _front_model(tmp_path)
    records, retired = [], []
    engine = PerceptionEngine(PerceptionSettings(model=str(model), backend='sim-edgetpu',
                                                 num_tpus=2, mode='critical'),
                              lambda record, image: records.append(record), clock='virtual',
                              on_retired=retired.append)
    frames = np.load(FIXTURE / 'frames.npy')[:10]
    try:
        # Started on the host core: the board's TPUs exist, powered off.
        assert [d.kind for d in engine.pipeline.devices] == ['host_cpu']
        tpus = engine.tpus
        assert len(tpus) == 2 and all(t.off for t in tpus)
        for i, frame in enumerate(frames):
            engine.submit(frame, (0, i), 0, at=0.1 * i)
        engine.advance(1.0)
        assert len(records) == 10 and {r['mode'] for r in records} == {'critical'}
        assert engine.check(replace(engine.settings, mode='eco')) is None
        engine.apply(replace(engine.settings, mode='eco'))
        assert engine.pipeline.devices[0] is tpus[0] and not tpus[0].off
        assert tpus[1].off  # eco uses one TPU: the other stays off
        assert len(retired) == 1 and retired[0].devices[0].kind == 'host_cpu'
        # The woken TPU paid the wake (1 s at active power) on top of its load.
        assert engine.stats().devices[0].load_s >= tpus[0].power.wake_s
        for i, frame in enumerate(frames):
            engine.submit(frame, (1, i), 0, at=1.0 + 0.1 * i)
        engine.advance(3.0)
        assert len(records) == 20 and {r['mode'] for r in records[10:]} == {'eco'}
        # Back to the host: the TPU is powered off again once the old pipeline is done.
        engine.apply(replace(engine.settings, mode='critical'))
        assert all(t.off for t in tpus) and len(retired) == 2
        with pytest.raises(ValueError, match='virtual time needs backend sim-edgetpu'):
            PerceptionEngine(PerceptionSettings(model=str(model), backend='litert'),
                             lambda r, i: None, clock='virtual')
        assert 'sim-edgetpu' in engine.check(replace(engine.settings, backend='litert'))
    finally:
        engine.close()
