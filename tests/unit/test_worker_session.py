"""The worker's session protocol without sockets: handshake, multiplexing, bad input."""

from __future__ import annotations

from typing import Any, cast

import msgpack
import pytest
import trio

from alluxiojob.protocol.codec import (
    Cancel,
    ErrorMessage,
    FileEntry,
    Hello,
    StatusReply,
    StatusRequest,
    TaskBatch,
    TaskOp,
    TaskOptions,
    TaskResult,
    Welcome,
    encode,
)
from alluxiojob.security.token import ClusterToken
from alluxiojob.worker.service import Session
from alluxiojob.worker.session import (
    Accept,
    CancelJob,
    Close,
    Send,
    SessionProtocol,
    SessionState,
    StartTask,
)


def status(request_id: int) -> StatusReply:
    return StatusReply(request_id, "w:1", 2, 0, 0, (0.0, 0.0, 0.0), 0, 0, 0)


def protocol(token: str = "secret") -> SessionProtocol:
    return SessionProtocol(ClusterToken(token), "w:1", 8080, status)


def opened() -> SessionProtocol:
    session = protocol()
    session.receive(encode(Hello("secret", "coord-1")))
    assert session.state is SessionState.OPEN
    return session


def test_a_good_hello_is_welcomed() -> None:
    session = protocol()
    actions = session.receive(encode(Hello("secret", "coord-1")))
    assert actions == [Accept("coord-1"), Send(Welcome("w:1", web_port=8080))]
    assert session.coordinator == "coord-1"


@pytest.mark.parametrize(("first", "reason"), [
    (encode(Hello("wrong", "c")), "authentication failed: wrong cluster token"),
    (encode(StatusRequest(1)), "expected a hello message first"),
    (b"\xc1", "malformed hello"),
    ("text", "malformed hello"),
])
def test_anything_but_a_good_hello_ends_the_session(first: bytes | str, reason: str) -> None:
    session = protocol()
    *sent, close = session.receive(first)
    assert isinstance(close, Close)
    assert reason in close.reason
    assert [a for a in sent if isinstance(a, Send)
            and isinstance(a.message, ErrorMessage) and reason in a.message.message]
    assert session.state is SessionState.CLOSED
    assert session.receive(encode(Hello("secret", "c"))) == [], "nothing after the end"


def test_without_a_token_any_hello_is_welcomed() -> None:
    session = protocol(token="")
    assert isinstance(session.receive(encode(Hello("", "c")))[0], Accept)


def test_no_hello_in_time() -> None:
    session = protocol()
    actions = session.hello_timed_out(10)
    assert actions[-1] == Close("no hello within 10s")
    assert opened().hello_timed_out(10) == []


def test_tasks_cancels_and_status_are_multiplexed() -> None:
    session = opened()
    batch = TaskBatch(7, "job-1", TaskOp.LOAD, (FileEntry("/a", 1, 2),))
    assert session.receive(encode(batch)) == [StartTask(batch)]
    assert session.receive(encode(Cancel("job-1"))) == [CancelJob("job-1")]
    assert session.receive(encode(Cancel("job-1", (7,)))) == [CancelJob("job-1", (7,))]
    assert session.receive(encode(StatusRequest(3))) == [Send(status(3))]


async def test_a_cancel_with_ids_stops_only_those_tasks_of_the_job() -> None:
    """The runners of two shards of one job share a session: one that ends cancels its
    own tasks, never its sibling's; a cancel without ids stops every task of the job."""
    live = Session(cast(Any, None), "peer")
    scopes = {task_id: trio.CancelScope() for task_id in (1, 2, 3)}
    live.running["job-1"] = {1: scopes[1], 2: scopes[2]}
    live.running["job-2"] = {3: scopes[3]}
    assert live.cancel_job("job-1", (1, 3, 99)) == 1  # 3 is job-2's, 99 is not running
    assert [s.cancel_called for s in scopes.values()] == [True, False, False]
    assert live.cancelled == {scopes[1]}
    assert live.running == {"job-1": {2: scopes[2]}, "job-2": {3: scopes[3]}}
    assert live.cancel_job("job-1") == 1
    assert scopes[2].cancel_called
    assert not scopes[3].cancel_called
    assert live.running == {"job-2": {3: scopes[3]}}


def test_bad_messages_are_answered_and_the_session_goes_on() -> None:
    session = opened()
    [garbage] = session.receive(b"\x93\x01\x02\x03")
    assert isinstance(garbage, Send)
    assert isinstance(garbage.message, ErrorMessage)
    assert garbage.message.message.startswith("malformed message:")
    [unexpected] = session.receive(encode(TaskResult(1, ())))
    assert isinstance(unexpected, Send)
    assert unexpected.message == ErrorMessage("unexpected message TaskResult")
    assert session.state is SessionState.OPEN


def test_a_task_from_an_older_coordinator_is_started_with_defaults() -> None:
    """No ``meta`` option, file rows without a version: a worker starts it as a plain
    LOAD, the way it did before those fields existed."""
    session = opened()
    old = msgpack.packb({"t": "task", "id": 9, "job": "job-2", "op": "LOAD",
                         "f": [["/a", 1, 2, ""]], "o": {"skip": False, "bw": 0, "ow": False}})
    assert session.receive(old) == [StartTask(TaskBatch(
        9, "job-2", TaskOp.LOAD, (FileEntry("/a", 1, 2, "", ""),),
        TaskOptions(metadata_only=False)))]


def test_a_task_with_a_malformed_meta_option_is_refused_by_name() -> None:
    session = opened()
    bad = msgpack.packb({"t": "task", "id": 9, "job": "job-2", "op": "LOAD", "f": [],
                         "o": {"skip": False, "bw": 0, "ow": False, "meta": "yes"}})
    [answer] = session.receive(bad)
    assert answer == Send(ErrorMessage("malformed message: field 'meta' has type str"),
                          warning="malformed message")
    assert session.state is SessionState.OPEN
