"""The coordinator ⇄ worker wire format: msgpack maps tagged by ``t``. No I/O.

Theory of operation
-------------------
Each websocket message is one msgpack map. ``encode`` turns a message dataclass into
bytes; ``decode`` turns bytes from the network into a message or raises
``ProtocolError``, and nothing else, whatever the bytes are. Every field is checked for
type on the way in, so the services behind the codec never see a malformed value.

A session opens with ``Hello`` (coordinator → worker, with the cluster token) answered by
``Welcome``. Then the coordinator sends ``TaskBatch`` and ``StatusRequest``; the worker
answers each with ``TaskResult`` or ``StatusReply``, and with ``ErrorMessage`` for a
message it could not use. ``Cancel`` (no answer of its own) ends the listed tasks of a
job that this session started, or, with no task listed, every task of that job there;
each of them is answered by a ``TaskResult`` whose files failed with ``CANCELLED``. A
coordinator names its tasks: the runners of a job's shards share one session, and a
runner that ends must not stop its siblings' tasks. A file's failure reason travels as
a ``Reason`` name, and a name this side does not know is a ``ProtocolError``, like any
other malformed field.

Fields added after ``PROTOCOL_VERSION`` 1 first shipped are optional on the way in, so
that a newer side still works with an older peer: the task option ``meta`` (absent:
``False``, data is loaded), the task option ``vf`` (absent: ``False``, not a verify
pass: cached files are compared by length and version only), a file row's fifth
value, its version (absent: ``""``, as for a local file), the welcome's ``web``
port (absent: ``0``, not told), and the cancel's ``ids`` (absent: every task of the
job). An older worker ignores ``ids`` and cancels every task of the job the session
started, as it always did. Present, they are checked like every other field: a
wrong type is a ``ProtocolError`` that names the field.

The per-file rows (``FileEntry``, ``FileResult``, ``FileStatus``) are core values
(``core/rows.py``) and a task's operation is the job's ``JobType``: this module only
maps them to wire values and back, so core never imports the protocol.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import msgpack

from alluxiojob.core.job import JobType
from alluxiojob.core.reasons import Reason
from alluxiojob.core.rows import FileEntry as FileEntry
from alluxiojob.core.rows import FileResult as FileResult
from alluxiojob.core.rows import FileStatus as FileStatus

PROTOCOL_VERSION = 1
MAX_MESSAGE_SIZE = 64 * 1024 * 1024


class ProtocolError(Exception):
    """Bytes from a peer that are not a valid message."""


# A task's operation is its job's type: one enum, ``JobType``; ``TaskOp`` is the same
# enum under the name the wire's tests and older callers use.
TaskOp = JobType


@dataclass(frozen=True)
class TaskOptions:
    skip_if_exists: bool = False
    bandwidth: int = 0
    overwrite: bool = False
    metadata_only: bool = False  # LOAD: record each file as listed, copy no data
    verify: bool = False  # LOAD: a verify pass; a cached file counts only if its checksum holds


@dataclass(frozen=True)
class Hello:
    token: str
    coordinator: str
    version: int = PROTOCOL_VERSION


@dataclass(frozen=True)
class Welcome:
    worker: str
    version: int = PROTOCOL_VERSION
    web_port: int = 0  # where the worker serves /api/v1/files and /metrics


@dataclass(frozen=True)
class TaskBatch:
    task_id: int
    job_id: str
    op: JobType
    files: tuple[FileEntry, ...]
    options: TaskOptions = field(default_factory=TaskOptions)


@dataclass(frozen=True)
class TaskResult:
    task_id: int
    results: tuple[FileResult, ...]


@dataclass(frozen=True)
class StatusRequest:
    request_id: int


@dataclass(frozen=True)
class StatusReply:
    request_id: int
    worker: str
    pool_size: int
    unfinished_tasks: int
    active_tasks: int
    load_avg: tuple[float, float, float]
    cache_used: int
    cache_capacity: int
    cached_files: int
    s3_requests: int = 0  # S3 API requests answered, since the worker started
    s3_bytes_served: int = 0  # object bytes the S3 API sent


@dataclass(frozen=True)
class Cancel:
    """Stop the tasks ``task_ids`` of ``job_id`` that this session started; with no
    ids, every task of the job that this session started."""

    job_id: str
    task_ids: tuple[int, ...] = ()


@dataclass(frozen=True)
class ErrorMessage:
    message: str
    task_id: int = -1


Message = (
    Hello | Welcome | TaskBatch | TaskResult | StatusRequest | StatusReply | Cancel | ErrorMessage
)

# ------------------------------------------------------------------------------ encode


def _encode_hello(m: Hello) -> dict[str, Any]:
    return {"t": "hello", "token": m.token, "co": m.coordinator, "v": m.version}


def _encode_welcome(m: Welcome) -> dict[str, Any]:
    return {"t": "welcome", "w": m.worker, "v": m.version, "web": m.web_port}


def _encode_task(m: TaskBatch) -> dict[str, Any]:
    return {
        "t": "task",
        "id": m.task_id,
        "job": m.job_id,
        "op": m.op.value,
        # A FileEntry is a tuple in the wire's column order: msgpack packs it as the
        # row's array as it is, with no list built per file.
        "f": m.files,
        "o": {
            "skip": m.options.skip_if_exists,
            "bw": m.options.bandwidth,
            "ow": m.options.overwrite,
            "meta": m.options.metadata_only,
            "vf": m.options.verify,
        },
    }


def _encode_result(m: TaskResult) -> dict[str, Any]:
    return {
        "t": "result",
        "id": m.task_id,
        "r": [[r.path, r.status.value, r.bytes, r.reason.value if r.reason else "", r.message]
              for r in m.results],
    }


def _encode_status(m: StatusRequest) -> dict[str, Any]:
    return {"t": "status", "id": m.request_id}


def _encode_status_reply(m: StatusReply) -> dict[str, Any]:
    return {
        "t": "status_reply",
        "id": m.request_id,
        "w": m.worker,
        "pool": m.pool_size,
        "unfinished": m.unfinished_tasks,
        "active": m.active_tasks,
        "load": list(m.load_avg),
        "used": m.cache_used,
        "cap": m.cache_capacity,
        "files": m.cached_files,
        "s3req": m.s3_requests,
        "s3bytes": m.s3_bytes_served,
    }


def _encode_cancel(m: Cancel) -> dict[str, Any]:
    body: dict[str, Any] = {"t": "cancel", "job": m.job_id}
    if m.task_ids:
        body["ids"] = list(m.task_ids)
    return body


def _encode_error(m: ErrorMessage) -> dict[str, Any]:
    return {"t": "error", "msg": m.message, "id": m.task_id}


# One encoder per message type, as ``_DECODERS`` has one decoder per tag.
_ENCODERS: dict[type, Callable[[Any], dict[str, Any]]] = {
    Hello: _encode_hello,
    Welcome: _encode_welcome,
    TaskBatch: _encode_task,
    TaskResult: _encode_result,
    StatusRequest: _encode_status,
    StatusReply: _encode_status_reply,
    Cancel: _encode_cancel,
    ErrorMessage: _encode_error,
}


def _encode_body(message: Message) -> dict[str, Any]:
    encoder = _ENCODERS.get(type(message))
    if encoder is None:
        raise TypeError(f"not a protocol message: {message!r}")
    return encoder(message)


def encode(message: Message) -> bytes:
    packed: bytes = msgpack.packb(_encode_body(message), use_bin_type=True)
    return packed


# ------------------------------------------------------------------------------ decode

T = TypeVar("T")


def _field(body: dict[str, Any], name: str, kind: type[T] | tuple[type, ...]) -> T:
    if name not in body:
        raise ProtocolError(f"message {body.get('t')!r} lacks field {name!r}")
    value = body[name]
    if isinstance(value, bool) and kind in (int, float):
        raise ProtocolError(f"field {name!r} must be {kind}, got a boolean")
    if not isinstance(value, kind):
        raise ProtocolError(f"field {name!r} has type {type(value).__name__}")
    return value  # type: ignore[return-value]


def _optional(body: dict[str, Any], name: str, kind: type[T], default: T) -> T:
    """A field that an older peer does not send: ``default`` when absent, else checked."""
    return _field(body, name, kind) if name in body else default


def _int(body: dict[str, Any], name: str) -> int:
    return _field(body, name, int)


def _str(body: dict[str, Any], name: str) -> str:
    return _field(body, name, str)


def _bool(body: dict[str, Any], name: str) -> bool:
    return _field(body, name, bool)


def _row(row: Any, columns: tuple[tuple[str, type], ...], what: str,
         defaults: tuple[Any, ...] = ()) -> list[Any]:
    """A list of values in ``columns`` order. The last ``len(defaults)`` columns may be
    missing (an older peer does not send them): they take their defaults."""
    least = len(columns) - len(defaults)
    if not isinstance(row, list):
        raise ProtocolError(f"malformed {what} entry: a {type(row).__name__}, not a list")
    if not least <= len(row) <= len(columns):
        counts = f"{least} to {len(columns)}" if defaults else f"{len(columns)}"
        raise ProtocolError(f"malformed {what} entry: {len(row)} values, not {counts}")
    for value, (name, kind) in zip(row, columns, strict=False):
        if not isinstance(value, kind) or (isinstance(value, bool) and kind is int):
            raise ProtocolError(f"malformed {what} entry: {name} has type "
                                f"{type(value).__name__}, not {kind.__name__}")
    return [*row, *defaults[len(row) - least:]]


_FILE_COLUMNS = (("path", str), ("length", int), ("mtime", int), ("dst", str),
                 ("version", str))
_RESULT_COLUMNS = (("path", str), ("status", str), ("bytes", int), ("reason", str),
                   ("message", str))


def _enum_value(kind: Callable[[str], T], text: str, what: str) -> T:
    try:
        return kind(text)
    except ValueError:
        raise ProtocolError(f"unknown {what} {text!r}") from None


def _decode_hello(body: dict[str, Any]) -> Message:
    return Hello(token=_str(body, "token"), coordinator=_str(body, "co"), version=_int(body, "v"))


def _decode_welcome(body: dict[str, Any]) -> Message:
    return Welcome(worker=_str(body, "w"), version=_int(body, "v"),
                   web_port=_optional(body, "web", int, 0))


def _decode_task(body: dict[str, Any]) -> Message:
    rows = _field(body, "f", list)
    files = tuple(
        FileEntry(*_row(row, _FILE_COLUMNS, "file", defaults=("",))) for row in rows
    )
    opts = _field(body, "o", dict)
    return TaskBatch(
        task_id=_int(body, "id"),
        job_id=_str(body, "job"),
        op=_enum_value(JobType, _str(body, "op"), "operation"),
        files=files,
        options=TaskOptions(
            skip_if_exists=_bool(opts, "skip"), bandwidth=_int(opts, "bw"),
            overwrite=_bool(opts, "ow"),
            metadata_only=_optional(opts, "meta", bool, False),
            verify=_optional(opts, "vf", bool, False),
        ),
    )


_STATUSES = {status.value: status for status in FileStatus}
_new_tuple = tuple.__new__


def _decode_result(body: dict[str, Any]) -> Message:
    results: list[FileResult] = []
    statuses = _STATUSES
    append = results.append
    for row in _field(body, "r", list):
        # The usual row (five values of the right types, a known status, no failure)
        # is read at once, built as the tuple it is; anything else goes through the
        # checks that name the fault.
        if (type(row) is list and len(row) == 5 and type(row[0]) is str
                and type(row[2]) is int and row[3] == "" and type(row[4]) is str
                and type(row[1]) is str and row[1] in statuses):
            append(_new_tuple(FileResult, (row[0], statuses[row[1]], row[2], None, row[4])))
            continue
        path, status, nbytes, reason, text = _row(row, _RESULT_COLUMNS, "result")
        results.append(FileResult(
            path, _enum_value(FileStatus, status, "file status"), nbytes,
            _enum_value(Reason.parse, reason, "failure reason") if reason else None, text,
        ))
    return TaskResult(task_id=_int(body, "id"), results=tuple(results))


def _decode_status(body: dict[str, Any]) -> Message:
    return StatusRequest(request_id=_int(body, "id"))


def _decode_status_reply(body: dict[str, Any]) -> Message:
    load = _field(body, "load", list)
    if len(load) != 3 or not all(isinstance(x, int | float) and not isinstance(x, bool)
                                 for x in load):
        raise ProtocolError("malformed load average")
    return StatusReply(
        request_id=_int(body, "id"),
        worker=_str(body, "w"),
        pool_size=_int(body, "pool"),
        unfinished_tasks=_int(body, "unfinished"),
        active_tasks=_int(body, "active"),
        load_avg=(float(load[0]), float(load[1]), float(load[2])),
        cache_used=_int(body, "used"),
        cache_capacity=_int(body, "cap"),
        cached_files=_int(body, "files"),
        s3_requests=_int(body, "s3req") if "s3req" in body else 0,
        s3_bytes_served=_int(body, "s3bytes") if "s3bytes" in body else 0,
    )


def _decode_cancel(body: dict[str, Any]) -> Message:
    ids = _optional(body, "ids", list, [])
    if not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
        raise ProtocolError("field 'ids' must be a list of task ids")
    return Cancel(job_id=_str(body, "job"), task_ids=tuple(ids))


def _decode_error(body: dict[str, Any]) -> Message:
    return ErrorMessage(message=_str(body, "msg"), task_id=_int(body, "id"))


_DECODERS: dict[str, Callable[[dict[str, Any]], Message]] = {
    "hello": _decode_hello,
    "welcome": _decode_welcome,
    "task": _decode_task,
    "result": _decode_result,
    "status": _decode_status,
    "status_reply": _decode_status_reply,
    "cancel": _decode_cancel,
    "error": _decode_error,
}


def decode(data: bytes | bytearray | str) -> Message:
    """Decode one message; any malformed input raises ``ProtocolError``."""
    if isinstance(data, str):
        raise ProtocolError("expected a binary msgpack message, got text")
    if len(data) > MAX_MESSAGE_SIZE:
        raise ProtocolError(f"message of {len(data)} bytes exceeds {MAX_MESSAGE_SIZE}")
    try:
        body = msgpack.unpackb(bytes(data), raw=False, strict_map_key=True, use_list=True)
    except Exception as exc:  # msgpack raises many types on garbage
        raise ProtocolError(f"not a msgpack message: {type(exc).__name__}: {exc}") from None
    if not isinstance(body, dict):
        raise ProtocolError(f"expected a msgpack map, got {type(body).__name__}")
    tag = body.get("t")
    decoder = _DECODERS.get(tag) if isinstance(tag, str) else None
    if decoder is None:
        raise ProtocolError(f"unknown message type {tag!r}")
    return decoder(body)

