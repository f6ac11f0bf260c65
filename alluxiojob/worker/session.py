"""The worker's side of a coordinator session, without I/O.

As hypercorn keeps its protocol apart from its trio layer, ``SessionProtocol`` takes the
bytes of each websocket message and returns what the worker should do: send a message,
start a task, cancel a job's tasks, accept the session or end it. The websocket loop in
``service.py`` only performs those actions, so the handshake and the multiplexing are
tested without sockets (``tests/unit/test_worker_session.py``).

Theory of operation::

    AWAITING_HELLO --Hello, token ok--> OPEN --(any message)--> OPEN
    AWAITING_HELLO --anything else, or no Hello in time--> CLOSED

In ``AWAITING_HELLO`` a malformed message, a message that is not a ``Hello``, or a wrong
token is answered with an ``ErrorMessage`` and ends the session. In ``OPEN`` every
message is decoded on its own: a malformed or unexpected one is answered with an
``ErrorMessage`` and the session goes on, so a bad peer never disturbs the others.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass

from alluxiojob.protocol.codec import (
    Cancel,
    ErrorMessage,
    Hello,
    Message,
    ProtocolError,
    StatusReply,
    StatusRequest,
    TaskBatch,
    Welcome,
    decode,
)
from alluxiojob.security.token import ClusterToken


class SessionState(enum.Enum):
    AWAITING_HELLO = "AWAITING_HELLO"
    OPEN = "OPEN"
    CLOSED = "CLOSED"


@dataclass(frozen=True)
class Send:
    """Send ``message``; ``warning`` (when set) is worth a log line."""

    message: Message
    warning: str = ""


@dataclass(frozen=True)
class Accept:
    """The handshake succeeded: raise the message size limit; ``coordinator`` said hello."""

    coordinator: str


@dataclass(frozen=True)
class StartTask:
    batch: TaskBatch


@dataclass(frozen=True)
class CancelJob:
    """Cancel the running tasks ``task_ids`` of ``job_id`` that this session started;
    with no ids, all of them (an older coordinator's job-wide cancel)."""

    job_id: str
    task_ids: tuple[int, ...] = ()


@dataclass(frozen=True)
class Close:
    """End the session, after the actions before this one."""

    reason: str


Action = Send | Accept | StartTask | CancelJob | Close


class SessionProtocol:
    def __init__(self, token: ClusterToken, worker_id: str, web_port: int,
                 status: Callable[[int], StatusReply]) -> None:
        self.token = token
        self.worker_id = worker_id
        self.web_port = web_port
        self.status = status  # the worker's counters now: read, never awaited
        self.state = SessionState.AWAITING_HELLO
        self.coordinator = ""

    def receive(self, raw: bytes | str) -> list[Action]:
        """What to do with one message from the coordinator."""
        if self.state is SessionState.CLOSED:
            return []
        try:
            message = decode(raw)
        except ProtocolError as exc:
            return self._malformed(str(exc))
        if self.state is SessionState.AWAITING_HELLO:
            return self._hello(message)
        if isinstance(message, TaskBatch):
            return [StartTask(message)]
        if isinstance(message, Cancel):
            return [CancelJob(message.job_id, message.task_ids)]
        if isinstance(message, StatusRequest):
            return [Send(self.status(message.request_id))]
        return [Send(ErrorMessage(f"unexpected message {type(message).__name__}"),
                     warning="unexpected message")]

    def hello_timed_out(self, seconds: float) -> list[Action]:
        if self.state is not SessionState.AWAITING_HELLO:
            return []
        return self._close(f"no hello within {seconds:g}s")

    def _hello(self, message: Message) -> list[Action]:
        if not isinstance(message, Hello):
            return self._close("expected a hello message first")
        if self.token and not self.token.matches(message.token):
            return self._close("authentication failed: wrong cluster token")
        self.state = SessionState.OPEN
        self.coordinator = message.coordinator
        return [Accept(message.coordinator), Send(Welcome(self.worker_id, web_port=self.web_port))]

    def _malformed(self, problem: str) -> list[Action]:
        if self.state is SessionState.AWAITING_HELLO:
            return self._close(f"malformed hello: {problem}")
        return [Send(ErrorMessage(f"malformed message: {problem}"), warning="malformed message")]

    def _close(self, reason: str) -> list[Action]:
        self.state = SessionState.CLOSED
        return [Send(ErrorMessage(reason), warning=reason), Close(reason)]
