"""The job state machine: one table, no I/O.

Theory of operation
-------------------
A job moves through ``WAITING → RUNNING → (VERIFYING) → SUCCEEDED | FAILED | STOPPED``.
Every move is caused by an *event* (a claim, the end of the load pass, a user's stop, a
peer's reclaim...). ``TRANSITIONS`` maps ``(state, event)`` to the next state and is the
only place that decides it: the stores, the scheduler and the REST API all call
``next_state``. Anything not in the table raises ``IllegalTransition``, so a bug or a
race shows up as an error instead of a silently corrupted job.

STOPPED is settled but not completed: submitting the same (type, path) again resumes
it. SUCCEEDED and FAILED complete the job; a new submission creates a new job.
"""

from __future__ import annotations

import enum

from alluxiojob.core.errors import IllegalTransition


class JobState(enum.StrEnum):
    WAITING = "WAITING"
    RUNNING = "RUNNING"
    VERIFYING = "VERIFYING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    STOPPED = "STOPPED"


class JobEvent(enum.StrEnum):
    CLAIM = "CLAIM"  # a coordinator takes a waiting job
    VERIFY = "VERIFY"  # the load pass ended and --verify asks for a check pass
    SUCCEED = "SUCCEED"  # every file done
    FAIL = "FAIL"  # thresholds passed, or files still failed at the end
    STOP = "STOP"  # the user asked to stop
    RESUME = "RESUME"  # the user submitted a stopped job again
    RECLAIM = "RECLAIM"  # the owner is gone (dead peer, or this coordinator restarted)
    RERUN = "RERUN"  # an operator re-queues a stuck, failed or stopped job


TRANSITIONS: dict[tuple[JobState, JobEvent], JobState] = {
    (JobState.WAITING, JobEvent.CLAIM): JobState.RUNNING,
    (JobState.WAITING, JobEvent.STOP): JobState.STOPPED,
    (JobState.RUNNING, JobEvent.VERIFY): JobState.VERIFYING,
    (JobState.RUNNING, JobEvent.SUCCEED): JobState.SUCCEEDED,
    (JobState.RUNNING, JobEvent.FAIL): JobState.FAILED,
    (JobState.RUNNING, JobEvent.STOP): JobState.STOPPED,
    (JobState.RUNNING, JobEvent.RECLAIM): JobState.WAITING,
    (JobState.RUNNING, JobEvent.RERUN): JobState.WAITING,
    (JobState.VERIFYING, JobEvent.SUCCEED): JobState.SUCCEEDED,
    (JobState.VERIFYING, JobEvent.FAIL): JobState.FAILED,
    (JobState.VERIFYING, JobEvent.STOP): JobState.STOPPED,
    (JobState.VERIFYING, JobEvent.RECLAIM): JobState.WAITING,
    (JobState.VERIFYING, JobEvent.RERUN): JobState.WAITING,
    (JobState.STOPPED, JobEvent.RESUME): JobState.WAITING,
    (JobState.STOPPED, JobEvent.RERUN): JobState.WAITING,
    (JobState.FAILED, JobEvent.RERUN): JobState.WAITING,
}

ACTIVE_STATES = frozenset({JobState.WAITING, JobState.RUNNING, JobState.VERIFYING})
"""Queued or running: submitting the same (type, path) answers "already running"."""
OWNED_STATES = frozenset({JobState.RUNNING, JobState.VERIFYING})
"""A coordinator drives the job; its writes are fenced on the job's revision."""
SETTLED_STATES = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.STOPPED})
"""Nothing runs and nothing will until a user acts; ``finished_at`` is set."""
COMPLETED_STATES = frozenset({JobState.SUCCEEDED, JobState.FAILED})
"""The job reached an outcome: a new submission creates a new job (STOPPED resumes)."""


def next_state(state: JobState, event: JobEvent) -> JobState:
    try:
        return TRANSITIONS[(state, event)]
    except KeyError:
        raise IllegalTransition(
            f"cannot {event.value} a job in state {state.value}", state, event
        ) from None


def allowed_events(state: JobState) -> frozenset[JobEvent]:
    return frozenset(event for (source, event) in TRANSITIONS if source is state)
