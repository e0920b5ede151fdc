"""Bad input is refused with a typed error that names the problem, never a deep stack trace."""

from dyn_perception.runtime.scheduling import (
    analyse, analyse_pooled, assign_priorities, choose_exact, choose_heuristic, Dispatch,
    GangTask, InvalidScenarioError, InvalidStreamError, InvalidTaskError, InvalidTaskSetError,
    job_level_analysis, Option, SchedulingError, simulate, Stream)
import pytest


@pytest.mark.parametrize('fields, message', [
    ((5, 3, 10, 1), 'WCET 5 > deadline 3'),
    ((1, 12, 10, 1), 'deadline 12 > period 10'),
    ((1, 1, 0, 1), 'period must be positive'),
    ((1, 1, -4, 1), 'period must be positive'),
    ((0, 3, 10, 1), 'wcet must be positive'),
    ((1, 3, 10, 0), 'width must be positive'),
    ((1.5, 3, 10, 1), 'integer number of ticks'),
    ((True, 3, 10, 1), 'integer number of ticks'),
])
def test_task_rejects_contradictions(fields, message):
    with pytest.raises(InvalidTaskError, match=message):
        GangTask(*fields, name='cam')


def test_errors_are_value_errors():
    # Callers that only know ValueError (parameter callbacks) still catch them.
    assert issubclass(SchedulingError, ValueError)
    for error in (InvalidTaskError, InvalidTaskSetError, InvalidScenarioError,
                  InvalidStreamError):
        assert issubclass(error, SchedulingError)


@pytest.mark.parametrize('call', [analyse, assign_priorities])
def test_gang_wider_than_platform(call):
    tasks = [GangTask(1, 5, 5, 1, 'a'), GangTask(2, 8, 8, 5, 'wide')]
    with pytest.raises(InvalidTaskSetError, match=r'task 1 \(wide\) needs 5 TPUs, the platform '
                                                  r'has 4'):
        call(tasks, 4, Dispatch.STRICT)


@pytest.mark.parametrize('tpus', [0, -1, 2.0])
def test_bad_platform(tpus):
    with pytest.raises(InvalidTaskSetError, match='positive integer TPU count'):
        analyse([GangTask(1, 5, 5, 1)], tpus, Dispatch.BYPASS)


def test_empty_set():
    with pytest.raises(InvalidTaskSetError, match='empty task set'):
        analyse([], 4, Dispatch.BYPASS)


def test_not_a_task():
    with pytest.raises(InvalidTaskSetError, match='task 0 is a tuple'):
        analyse([(1, 5, 5, 1)], 4, Dispatch.BYPASS)


def test_unknown_rule():
    with pytest.raises(ValueError):
        analyse([GangTask(1, 5, 5, 1)], 4, 'round-robin')


def test_rejection_is_a_verdict_with_reason():
    # The second job has no slack (C = D) and the first one may arrive a tick before it.
    verdict = analyse([GangTask(1, 4, 10, 2, 'first'), GangTask(3, 3, 10, 2, 'second')], 2,
                      Dispatch.STRICT)
    assert not verdict
    # The first may find the second running with 2 ticks left: 2 + 1.
    assert verdict.response_times == (3,)
    assert verdict.reason.startswith('unschedulable: task 1 (second')
    assert 'D - C = 0' in verdict.reason


def test_simulator_refuses_impossible_scenarios():
    task = GangTask(2, 5, 5, 1, 'a')
    with pytest.raises(InvalidScenarioError, match='closer than T=5'):
        simulate([task], 1, Dispatch.STRICT, [[0, 4]], [[2, 2]])
    with pytest.raises(InvalidScenarioError, match=r'outside \[1, C=2\]'):
        simulate([task], 1, Dispatch.STRICT, [[0, 5]], [[2, 3]])
    with pytest.raises(InvalidScenarioError, match='one release list'):
        simulate([task], 1, Dispatch.STRICT, [], [])


def test_stream_and_option_errors():
    option = Option('full', 1, 4, 1.0, 0.9)
    with pytest.raises(InvalidStreamError, match='no options'):
        Stream('cam', 10, 10, 0.5, ())
    with pytest.raises(InvalidStreamError, match='stream cam: .*deadline 12 > period 10'):
        Stream('cam', 10, 12, 0.5, (option,))
    with pytest.raises(InvalidStreamError, match='period must be positive'):
        Stream('cam', 0, 5, 0.5, (option,))
    with pytest.raises(InvalidStreamError, match='width must be a positive integer'):
        Option('full', 0, 4, 1.0, 0.9)
    with pytest.raises(InvalidStreamError, match='energy per job'):
        Option('full', 1, 4, float('nan'), 0.9)


@pytest.mark.parametrize('choose', [choose_exact, choose_heuristic])
def test_configuration_without_admissible_option(choose):
    # Accurate enough only on 8 TPUs, and too slow for the deadline on fewer.
    options = (Option('full', 8, 5, 1.0, 0.9), Option('small', 1, 12, 1.0, 0.9),
               Option('tiny', 1, 2, 0.1, 0.5))
    stream = Stream('cam', 20, 10, 0.8, options)
    selection = choose([stream], 4, Dispatch.BYPASS)
    assert selection.configuration is None
    assert selection.reason.startswith('unschedulable: stream cam has no option')


@pytest.mark.parametrize('choose', [choose_exact, choose_heuristic])
def test_configuration_of_nothing(choose):
    selection = choose([], 4, Dispatch.BYPASS)
    assert selection.configuration is None
    assert selection.reason == 'unschedulable: no streams to configure'


@pytest.mark.parametrize('call', [
    lambda tasks: analyse_pooled(tasks, 4, Dispatch.STRICT),
    lambda tasks: job_level_analysis(tasks, 4, Dispatch.BYPASS),  # falls back to pooled
])
def test_a_wcet_too_long_for_the_pooled_arrays_is_refused_not_allocated(call):
    # Its arrays are as long as the longest WCET in ticks: 10**12 was a MemoryError (7 TiB),
    # 10**8 minutes of work and gigabytes; the baseline still answers.
    tasks = [GangTask(10 ** 12, 10 ** 15, 10 ** 15, 1), GangTask(5, 10 ** 13, 10 ** 13, 2)]
    with pytest.raises(InvalidTaskSetError, match='coarser tick'):
        call(tasks)
    assert analyse(tasks, 4, Dispatch.STRICT).schedulable
