"""The job state machine: one table, no I/O.

Theory of operation
-------------------
A job moves through ``WAITING → RUNNING → (VERIFYING) → SUCCEEDED | FAILED | STOPPED``.
Every move is caused by an *event* (a claim, the end of the load pass, a user's stop, a
peer's reclaim...). ``TRANSITIONS`` maps ``(state, event)`` to the next state and is the
only place that decides it: the stores, the scheduler and the REST API all call
``next_state``. Anything not in the table raises ``IllegalTransition``, so a bug or a
race shows up as an error instead of a silently corrupted job.

STOPPED is not final: submitting the same (type, path) again resumes it. SUCCEEDED and
FAILED are final for that job; a new submission creates a new job.
"""

from __future__ import annotations

import enum

from alluxiojob.core.errors import WrongState


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


class IllegalTransition(WrongState):
    """An event that the state table does not allow from the job's current state."""

    def __init__(self, state: JobState, event: JobEvent) -> None:
        super().__init__(f"cannot {event.value} a job in state {state.value}")
        self.state = state
        self.event = event


W, R, V = JobState.WAITING, JobState.RUNNING, JobState.VERIFYING
S, F, X = JobState.SUCCEEDED, JobState.FAILED, JobState.STOPPED

TRANSITIONS: dict[tuple[JobState, JobEvent], JobState] = {
    (W, JobEvent.CLAIM): R,
    (W, JobEvent.STOP): X,
    (R, JobEvent.VERIFY): V,
    (R, JobEvent.SUCCEED): S,
    (R, JobEvent.FAIL): F,
    (R, JobEvent.STOP): X,
    (R, JobEvent.RECLAIM): W,
    (R, JobEvent.RERUN): W,
    (V, JobEvent.SUCCEED): S,
    (V, JobEvent.FAIL): F,
    (V, JobEvent.STOP): X,
    (V, JobEvent.RECLAIM): W,
    (V, JobEvent.RERUN): W,
    (X, JobEvent.RESUME): W,
    (X, JobEvent.RERUN): W,
    (F, JobEvent.RERUN): W,
}

ACTIVE_STATES = frozenset({W, R, V})
OWNED_STATES = frozenset({R, V})
FINAL_STATES = frozenset({S, F})


def next_state(state: JobState, event: JobEvent) -> JobState:
    try:
        return TRANSITIONS[(state, event)]
    except KeyError:
        raise IllegalTransition(state, event) from None


def allowed_events(state: JobState) -> frozenset[JobEvent]:
    return frozenset(event for (source, event) in TRANSITIONS if source is state)
