# Copyright 2026 dyn_perception maintainers. Apache-2.0.
"""The energy manager's policy: bounds, hysteresis, dwell, CPU load; battery; modes file."""

from dyn_perception.runtime.energy import ModePolicy, PolicyConfig, SimulatedBattery
from dyn_perception.runtime.modes import load_modes
import pytest


def test_mode_follows_the_charge_down_at_once():
    policy = ModePolicy(PolicyConfig(min_dwell_s=10.0))
    modes = [policy.update(t, charge) for t, charge in enumerate([0.9, 0.59, 0.3, 0.1, 0.0])]
    assert modes == ['performance', 'balanced', 'eco', 'critical', 'critical']


def test_hysteresis_and_dwell_stop_flapping():
    policy = ModePolicy(PolicyConfig(hysteresis=0.05, min_dwell_s=5.0), 'balanced')
    policy.update(0.0, 0.5)
    # Hovering just above the performance bound (0.6) never switches up...
    assert {policy.update(t, 0.6 + 0.02 * (t % 2)) for t in range(1, 30)} == {'balanced'}
    # ...clearing it by the margin does, once the dwell time has passed.
    assert policy.update(30.0, 0.66) == 'performance'
    # A dip switches down at once, but coming back needs the dwell time again.
    assert policy.update(31.0, 0.5) == 'balanced'
    assert policy.update(32.0, 0.9) == 'balanced'
    assert policy.update(36.5, 0.9) == 'performance'


def test_high_cpu_load_steps_one_mode_down():
    policy = ModePolicy(PolicyConfig(cpu_load_high=0.8, min_dwell_s=0.0))
    assert policy.update(0.0, 0.9, cpu_load=0.95) == 'balanced'
    assert policy.update(1.0, 0.1, cpu_load=0.95) == 'critical'
    assert policy.update(2.0, 0.9, cpu_load=0.1) == 'performance'


@pytest.mark.parametrize('kwargs, message', [
    ({'min_charge': (0.6, 0.35, 0.15)}, 'one bound per mode'),
    ({'min_charge': (0.2, 0.35, 0.15, 0.0)}, 'must decrease'),
    ({'min_charge': (0.9, 0.5, 0.2, 0.1)}, 'last one 0'),
    ({'cpu_load_high': 0.0}, 'cpu_load_high'),
    ({'modes': ('a', 'a', 'b', 'c')}, 'unique'),
])
def test_bad_policy_is_refused_with_a_reason(kwargs, message):
    with pytest.raises(ValueError, match=message):
        PolicyConfig(**kwargs)


def test_battery_drains_with_reported_energy_and_base_load():
    battery = SimulatedBattery(capacity_j=100.0, base_power_w=1.0)
    assert battery.drain(energy_j=10.0, seconds=10.0) == pytest.approx(0.8)
    assert battery.voltage == pytest.approx(10.5 + 2.1 * 0.8)
    assert battery.drain(energy_j=1000.0) == 0.0
    with pytest.raises(ValueError):
        SimulatedBattery(capacity_j=0.0)


def test_modes_file_with_an_unknown_key_is_refused(tmp_path):
    path = tmp_path / 'modes.yaml'
    path.write_text('modes:\n  - {name: eco, max_accuracy_loss: 1.5, variant: l1l2_50}\n')
    with pytest.raises(ValueError, match=r"unknown mode keys \['variant'\].*mode_variants"):
        load_modes(path)
    path.write_text('modes:\n  - {name: eco, max_accuracy_loss: 1.5}\n')
    assert [m.name for m in load_modes(path)] == ['eco']
