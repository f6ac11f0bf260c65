"""The job state table (``core/states.py``) and the job record built on it (``core/job.py``)."""

from __future__ import annotations

import dataclasses
import itertools

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from alluxiojob.core.errors import InvalidArgument, JobServiceError, WrongState
from alluxiojob.core.job import MAX_BATCH_SIZE, JobOptions, JobRecord, JobType, job_identity
from alluxiojob.core.states import (
    ACTIVE_STATES,
    COMPLETED_STATES,
    OWNED_STATES,
    SETTLED_STATES,
    TRANSITIONS,
    IllegalTransition,
    JobEvent,
    JobState,
    allowed_events,
    next_state,
)

W, R, V = JobState.WAITING, JobState.RUNNING, JobState.VERIFYING
S, F, X = JobState.SUCCEEDED, JobState.FAILED, JobState.STOPPED
E = JobEvent

ALL_PAIRS = list(itertools.product(JobState, JobEvent))
FINISHED_STATES = SETTLED_STATES  # the states that carry finished_at

HYPOTHESIS = settings(
    max_examples=150,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)


# ------------------------------------------------------------------------ the table


@pytest.mark.parametrize(("state", "event"), ALL_PAIRS, ids=lambda v: str(v))
def test_every_pair_is_in_the_table_or_illegal(state: JobState, event: JobEvent) -> None:
    if (state, event) in TRANSITIONS:
        assert next_state(state, event) is TRANSITIONS[(state, event)]
        assert event in allowed_events(state)
    else:
        with pytest.raises(IllegalTransition) as info:
            next_state(state, event)
        assert info.value.state is state
        assert info.value.event is event
        assert state.value in str(info.value)
        assert event.value in str(info.value)
        assert event not in allowed_events(state)


def test_table_is_exactly_the_documented_one() -> None:
    assert TRANSITIONS == {
        (W, E.CLAIM): R,
        (W, E.STOP): X,
        (R, E.VERIFY): V,
        (R, E.SUCCEED): S,
        (R, E.FAIL): F,
        (R, E.STOP): X,
        (R, E.RECLAIM): W,
        (R, E.RERUN): W,
        (V, E.SUCCEED): S,
        (V, E.FAIL): F,
        (V, E.STOP): X,
        (V, E.RECLAIM): W,
        (V, E.RERUN): W,
        (X, E.RESUME): W,
        (X, E.RERUN): W,
        (F, E.RERUN): W,
    }


def test_table_only_mentions_enum_members() -> None:
    for (state, event), target in TRANSITIONS.items():
        assert isinstance(state, JobState)
        assert isinstance(event, JobEvent)
        assert isinstance(target, JobState)


def test_claim_takes_waiting_to_running() -> None:
    assert next_state(W, E.CLAIM) is R


def test_verify_takes_running_to_verifying() -> None:
    assert next_state(R, E.VERIFY) is V


@pytest.mark.parametrize("state", [W, V, S, F, X])
def test_only_running_can_verify(state: JobState) -> None:
    with pytest.raises(IllegalTransition):
        next_state(state, E.VERIFY)


@pytest.mark.parametrize("state", [R, V, S, F, X])
def test_only_waiting_can_be_claimed(state: JobState) -> None:
    with pytest.raises(IllegalTransition):
        next_state(state, E.CLAIM)


def test_stopped_is_resumable() -> None:
    assert next_state(X, E.RESUME) is W
    assert X not in COMPLETED_STATES


@pytest.mark.parametrize("state", [W, R, V, S, F])
def test_only_stopped_can_resume(state: JobState) -> None:
    with pytest.raises(IllegalTransition):
        next_state(state, E.RESUME)


def test_succeeded_has_no_outgoing_transition() -> None:
    assert allowed_events(S) == frozenset()
    for event in JobEvent:
        with pytest.raises(IllegalTransition):
            next_state(S, event)


def test_failed_only_reruns() -> None:
    assert allowed_events(F) == frozenset({E.RERUN})


@pytest.mark.parametrize("state", [R, V])
@pytest.mark.parametrize("event", [E.RECLAIM, E.RERUN])
def test_reclaim_and_rerun_requeue_owned_jobs(state: JobState, event: JobEvent) -> None:
    assert next_state(state, event) is W


def test_rerun_requeues_failed_and_stopped() -> None:
    assert next_state(F, E.RERUN) is W
    assert next_state(X, E.RERUN) is W


@pytest.mark.parametrize("state", [W, S, F, X])
def test_reclaim_only_applies_to_owned_jobs(state: JobState) -> None:
    with pytest.raises(IllegalTransition):
        next_state(state, E.RECLAIM)


@pytest.mark.parametrize("state", [W, S])
def test_rerun_not_from_waiting_or_succeeded(state: JobState) -> None:
    with pytest.raises(IllegalTransition):
        next_state(state, E.RERUN)


@pytest.mark.parametrize("state", [W, R, V])
def test_every_active_job_can_be_stopped(state: JobState) -> None:
    assert next_state(state, E.STOP) is X


@pytest.mark.parametrize("state", [S, F, X])
def test_finished_jobs_cannot_be_stopped(state: JobState) -> None:
    with pytest.raises(IllegalTransition):
        next_state(state, E.STOP)


def test_only_requeue_events_lead_to_waiting() -> None:
    for (_, event), target in TRANSITIONS.items():
        if target is W:
            assert event in {E.RESUME, E.RECLAIM, E.RERUN}


def test_state_sets() -> None:
    assert ACTIVE_STATES == {W, R, V}
    assert OWNED_STATES == {R, V}
    assert COMPLETED_STATES == {S, F}
    assert OWNED_STATES < ACTIVE_STATES
    assert not ACTIVE_STATES & COMPLETED_STATES
    assert X not in ACTIVE_STATES | COMPLETED_STATES
    assert SETTLED_STATES == COMPLETED_STATES | {X}
    assert set(JobState) == ACTIVE_STATES | SETTLED_STATES


def test_illegal_transition_is_a_job_service_error() -> None:
    with pytest.raises(JobServiceError) as info:
        next_state(S, E.CLAIM)
    assert isinstance(info.value, IllegalTransition)
    assert isinstance(info.value, WrongState)
    assert info.value.http_status == 409


def test_every_state_is_reachable_from_waiting() -> None:
    seen = {W}
    frontier = [W]
    while frontier:
        state = frontier.pop()
        for event in allowed_events(state):
            target = next_state(state, event)
            if target not in seen:
                seen.add(target)
                frontier.append(target)
    assert seen == set(JobState)


def test_only_running_and_verifying_jobs_can_finish() -> None:
    for (source, _), target in TRANSITIONS.items():
        if target in COMPLETED_STATES:
            assert source in OWNED_STATES


def test_allowed_events_match_the_table() -> None:
    for state in JobState:
        expected = {event for (source, event) in TRANSITIONS if source is state}
        assert allowed_events(state) == expected


# ------------------------------------------------------------------------ JobRecord.apply


def _record(**changes: object) -> JobRecord:
    base = JobRecord.new(JobType.LOAD, "s3://bucket/data", "", JobOptions(), now=100.0)
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def test_claim_sets_owner_started_and_claims() -> None:
    job = _record().apply(E.CLAIM, 110.0, owner="coord-1")
    assert job.state is R
    assert job.owner == "coord-1"
    assert job.claims == 1
    assert job.started_at == 110.0
    assert job.updated_at == 110.0
    assert job.finished_at == 0.0


def test_second_claim_keeps_started_at() -> None:
    job = _record().apply(E.CLAIM, 110.0, owner="coord-1")
    job = job.apply(E.RECLAIM, 120.0)
    assert job.state is W
    assert job.owner == ""
    job = job.apply(E.CLAIM, 130.0, owner="coord-2")
    assert job.owner == "coord-2"
    assert job.claims == 2
    assert job.started_at == 110.0


def test_verify_keeps_owner() -> None:
    job = _record().apply(E.CLAIM, 110.0, owner="coord-1").apply(E.VERIFY, 120.0)
    assert job.state is V
    assert job.owner == "coord-1"
    assert job.claims == 1


@pytest.mark.parametrize(("event", "state"), [(E.SUCCEED, S), (E.FAIL, F), (E.STOP, X)])
def test_finishing_clears_owner_and_sets_finished_at(event: JobEvent, state: JobState) -> None:
    job = _record().apply(E.CLAIM, 110.0, owner="coord-1").apply(event, 150.0)
    assert job.state is state
    assert job.owner == ""
    assert job.finished_at == 150.0


def test_fail_records_error_and_rerun_clears_it() -> None:
    job = _record().apply(E.CLAIM, 110.0, owner="c").apply(E.FAIL, 150.0, error="too many")
    assert job.error == "too many"
    job = job.apply(E.RERUN, 160.0)
    assert job.state is W
    assert job.error == ""
    assert job.finished_at == 0.0


def test_illegal_apply_raises_and_leaves_record_unchanged() -> None:
    job = _record()
    before = job.to_wire()
    with pytest.raises(IllegalTransition):
        job.apply(E.SUCCEED, 200.0, owner="x", error="y")
    assert job.to_wire() == before


def test_record_is_frozen() -> None:
    job = _record()
    with pytest.raises(dataclasses.FrozenInstanceError):
        job.state = R  # type: ignore[misc]


@st.composite
def event_steps(draw: st.DrawFn) -> list[tuple[JobEvent, str, str, float]]:
    """Events mostly (but not always) legal from the state reached so far."""
    steps = []
    state = W
    now = 100.0
    for _ in range(draw(st.integers(0, 30))):
        allowed = sorted(allowed_events(state))
        if allowed and draw(st.integers(0, 3)) > 0:
            event = draw(st.sampled_from(allowed))
        else:
            event = draw(st.sampled_from(list(JobEvent)))
        owner = draw(st.sampled_from(["", "coord-1", "coord-2"]))
        error = draw(st.sampled_from(["", "boom"]))
        now += draw(st.floats(0.001, 1000.0, allow_nan=False))
        steps.append((event, owner, error, now))
        state = TRANSITIONS.get((state, event), state)
    return steps


@HYPOTHESIS
@given(event_steps())
def test_any_event_sequence_follows_the_table(
    steps: list[tuple[JobEvent, str, str, float]],
) -> None:
    job = _record()
    first_started = 0.0
    for event, owner, error, now in steps:
        before = job
        snapshot = job.to_wire()
        target = TRANSITIONS.get((job.state, event))
        if target is None:
            with pytest.raises(IllegalTransition) as info:
                job.apply(event, now, owner=owner, error=error)
            assert info.value.state is job.state
            assert info.value.event is event
            assert job.to_wire() == snapshot
            continue
        job = before.apply(event, now, owner=owner, error=error)
        assert before.to_wire() == snapshot  # apply never mutates
        assert job.state is target
        assert job.updated_at == now
        assert (job.id, job.type, job.path, job.dst, job.options, job.seq, job.created_at) == (
            before.id, before.type, before.path, before.dst, before.options, before.seq,
            before.created_at,
        )
        # owner only while a coordinator holds the job
        if job.owner:
            assert job.state in OWNED_STATES
        if job.state is R:
            assert job.owner == owner
        elif job.state is V:
            assert job.owner == before.owner
        # finished_at only in finished (final or stopped) states
        if job.state in FINISHED_STATES:
            assert job.finished_at == now
        else:
            assert job.finished_at == 0.0
        # claims counts entries into RUNNING
        if job.state is R:
            assert job.claims == before.claims + 1
            if not first_started:
                first_started = now
        else:
            assert job.claims == before.claims
        assert job.started_at == first_started
        # errors: given ones stick, re-queueing clears old ones
        if error:
            assert job.error == error
        elif job.state is W:
            assert job.error == ""
        else:
            assert job.error == before.error


# ------------------------------------------------------------------------ wire, options, type


job_options = st.builds(
    JobOptions,
    batch_size=st.integers(0, MAX_BATCH_SIZE),
    verify=st.booleans(),
    skip_if_exists=st.booleans(),
    partial_listing=st.booleans(),
    replicas=st.integers(1, 10),
    bandwidth=st.integers(0, 2**40),
    overwrite=st.booleans(),
)
finite = st.floats(0, 2e9, allow_nan=False)
job_records = st.builds(
    JobRecord,
    id=st.uuids().map(str),
    type=st.sampled_from(JobType),
    path=st.text(),
    dst=st.text(),
    options=job_options,
    state=st.sampled_from(JobState),
    owner=st.text(),
    seq=st.integers(0, 2**63 - 1),
    created_at=finite,
    updated_at=finite,
    started_at=finite,
    finished_at=finite,
    error=st.text(),
    claims=st.integers(0, 1000),
)


@HYPOTHESIS
@given(job_records)
def test_record_wire_round_trip(job: JobRecord) -> None:
    wire = job.to_wire()
    assert wire["type"] == job.type.value
    assert wire["state"] == job.state.value
    assert isinstance(wire["options"], dict)
    assert JobRecord.from_wire(wire) == job


def test_record_from_wire_ignores_unknown_fields_and_missing_options() -> None:
    job = _record()
    wire = job.to_wire()
    wire["future_field"] = 1
    wire["options"] = None
    assert JobRecord.from_wire(wire) == job


def test_new_record() -> None:
    options = JobOptions(batch_size=10)
    a = JobRecord.new(JobType.COPY, "/src", "/dst", options, now=5.0)
    b = JobRecord.new(JobType.COPY, "/src", "/dst", options, now=5.0)
    assert a.id != b.id
    assert a.state is W
    assert (a.created_at, a.updated_at, a.started_at, a.finished_at) == (5.0, 5.0, 0.0, 0.0)
    assert a.identity == "COPY//src -> /dst"
    assert job_identity(JobType.LOAD, "/p") == "LOAD//p"


def test_options_defaults_are_valid() -> None:
    JobOptions().validate()


@pytest.mark.parametrize(
    ("changes", "word"),
    [({"batch_size": -1}, "batch size"), ({"replicas": 0}, "replicas"),
     ({"bandwidth": -5}, "bandwidth")],
)
def test_options_validate_rejects(changes: dict[str, int], word: str) -> None:
    with pytest.raises(InvalidArgument, match=word):
        JobOptions(**changes).validate()  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument):
        JobOptions.from_wire(changes)


def test_options_from_wire_ignores_unknown_keys() -> None:
    assert JobOptions.from_wire({"verify": True, "nope": 1}) == JobOptions(verify=True)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("LOAD", JobType.LOAD), ("load", JobType.LOAD), (" Free ", JobType.FREE),
     ("copy", JobType.COPY), ("MOVE\n", JobType.MOVE)],
)
def test_job_type_parse(text: str, expected: JobType) -> None:
    assert JobType.parse(text) is expected


@pytest.mark.parametrize("text", ["", "prefetch", "LOADS", "lo ad"])
def test_job_type_parse_rejects(text: str) -> None:
    with pytest.raises(InvalidArgument, match="LOAD, FREE, COPY, MOVE"):
        JobType.parse(text)
