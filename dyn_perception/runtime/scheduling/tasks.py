"""
The task model: sporadic, non-preemptive, rigid gang tasks on identical TPUs.

Time is an integer number of ticks (pick the tick small enough for the profile, e.g. 10 us):
the analysis' floor and +1 steps are exact only on a discrete time line, and the simulator
advances on the same ticks.  Round a measured WCET up and a period or deadline down when
converting, which can only make the test more pessimistic.
"""

from dataclasses import dataclass
import enum
from typing import Sequence


class SchedulingError(ValueError):
    """Base class of every input error the scheduling package raises."""


class InvalidTaskError(SchedulingError):
    """A task whose own parameters contradict each other (e.g. C > D, D > T, T <= 0)."""


class InvalidTaskSetError(SchedulingError):
    """A task set that cannot be analysed on the platform (empty, or a gang wider than it)."""


class Dispatch(enum.Enum):
    """When a TPU frees up, which pending job may start."""

    # Only the highest-priority pending job may start; nothing overtakes it.
    STRICT = 'strict'
    # The highest-priority pending job that fits in the idle TPUs starts, scanning down.
    BYPASS = 'bypass'


@dataclass(frozen=True)
class GangTask:
    """
    One stream as the scheduler sees it.

    A job needs `width` TPUs at once, starts on all of them together and holds them for up to
    `wcet` ticks without preemption.  Jobs arrive at least `period` ticks apart and must finish
    within `deadline` ticks of their release (constrained: deadline <= period).
    """

    wcet: int
    deadline: int
    period: int
    width: int
    name: str = ''

    def __post_init__(self) -> None:
        for field in ('wcet', 'deadline', 'period', 'width'):
            value = getattr(self, field)
            # bool is an int subclass; True as a WCET is a bug upstream, not one tick.
            if isinstance(value, bool) or not isinstance(value, int):
                raise InvalidTaskError(
                    f'{self.label}: {field} must be an integer number of ticks, got {value!r}')
            if value <= 0:
                raise InvalidTaskError(f'{self.label}: {field} must be positive, got {value}')
        if self.deadline > self.period:
            raise InvalidTaskError(
                f'{self.label}: deadline {self.deadline} > period {self.period}; '
                'only constrained deadlines are supported')
        if self.wcet > self.deadline:
            raise InvalidTaskError(
                f'{self.label}: WCET {self.wcet} > deadline {self.deadline}; '
                'no schedule can meet it')

    @property
    def label(self) -> str:
        """Name used in messages."""
        return self.name or 'task'

    @property
    def utilisation(self) -> float:
        """TPU utilisation: TPUs held times the fraction of time they are held."""
        return self.width * self.wcet / self.period


def check_task_set(tasks: Sequence[GangTask], tpus: int) -> None:
    """Reject a set the analysis cannot even state a verdict on, with the reason."""
    if isinstance(tpus, bool) or not isinstance(tpus, int) or tpus < 1:
        raise InvalidTaskSetError(f'the platform needs a positive integer TPU count, got {tpus!r}')
    if not tasks:
        raise InvalidTaskSetError('empty task set: nothing to analyse')
    for position, task in enumerate(tasks):
        if not isinstance(task, GangTask):
            raise InvalidTaskSetError(
                f'task {position} is a {type(task).__name__}, not a GangTask')
        if task.width > tpus:
            raise InvalidTaskSetError(
                f'task {position} ({task.label}) needs {task.width} TPUs, '
                f'the platform has {tpus}')


def total_utilisation(tasks: Sequence[GangTask]) -> float:
    """Sum of TPU utilisations; m is the trivial upper limit for m TPUs."""
    return sum(task.utilisation for task in tasks)
