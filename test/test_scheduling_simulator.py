"""The simulator on hand-traced schedules: it referees the analysis, so it is checked first."""

from dyn_perception.runtime.scheduling import Dispatch, GangTask, simulate

# On 2 TPUs: a full-width high-priority job and two narrow low-priority ones.
WIDE = GangTask(2, 10, 10, 2, 'wide')
FIRST = GangTask(3, 10, 10, 1, 'first')
SECOND = GangTask(3, 10, 10, 1, 'second')


def test_strict_holds_the_idle_tpu_for_the_head_job():
    # t=0 first starts; t=1 wide arrives, does not fit, second arrives and must wait
    # behind it; t=3 first ends, wide runs 3..5; second runs 5..8.
    result = simulate([WIDE, FIRST, SECOND], 2, Dispatch.STRICT, [[1], [0], [1]],
                      [[2], [3], [3]])
    assert result.worst_response == (4, 3, 7)
    assert result.misses == (0, 0, 0)
    assert result.jobs == 3


def test_bypass_lets_a_narrow_job_overtake():
    # Same releases: second takes the idle TPU at t=1 and runs 1..4, so wide waits until 4.
    result = simulate([WIDE, FIRST, SECOND], 2, Dispatch.BYPASS, [[1], [0], [1]],
                      [[2], [3], [3]])
    assert result.worst_response == (5, 3, 3)


def test_early_completion_can_delay_a_higher_priority_job():
    # A timing anomaly of non-preemptive gangs: with first running 3 ticks, wide
    # (released at 2) starts at 3; if first ends at 1, the low-priority full-width job
    # released at 1 grabs both TPUs for 4 ticks and wide waits until 5.
    blocker = GangTask(4, 20, 20, 2, 'blocker')
    tasks = [WIDE, FIRST, blocker]
    at_wcet = simulate(tasks, 2, Dispatch.STRICT, [[2], [0], [1]], [[2], [3], [4]])
    early = simulate(tasks, 2, Dispatch.STRICT, [[2], [0], [1]], [[2], [1], [4]])
    assert at_wcet.worst_response[0] == 3
    assert early.worst_response[0] == 5


def test_a_task_runs_its_jobs_in_order_one_at_a_time():
    # hog holds both TPUs 0..5; slow's first job runs 5..8 (response 8).  Its second job,
    # released at 5, finds a TPU idle but waits for its predecessor: 8..11, response 6.
    # Run in parallel it would have finished at 8, within its deadline of 5.
    hog = GangTask(5, 10, 10, 2, 'hog')
    slow = GangTask(3, 5, 5, 1, 'slow')
    result = simulate([hog, slow], 2, Dispatch.BYPASS, [[0], [0, 5]], [[5], [3, 3]])
    assert result.worst_response == (5, 8)
    assert result.misses == (0, 2)


def test_deadline_misses_are_counted():
    task = GangTask(3, 4, 10, 2, 'late')
    result = simulate([GangTask(3, 10, 10, 2, 'top'), task], 2, Dispatch.STRICT, [[0], [0]],
                      [[3], [3]])
    assert result.worst_response == (3, 6)
    assert result.misses == (0, 1)
