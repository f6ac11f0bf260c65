"""The coordinator ⇄ worker wire format (``protocol/codec.py``)."""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from alluxiojob.core.reasons import Reason
from alluxiojob.protocol.codec import (
    MAX_MESSAGE_SIZE,
    PROTOCOL_VERSION,
    Cancel,
    ErrorMessage,
    FileEntry,
    FileResult,
    FileStatus,
    Hello,
    Message,
    ProtocolError,
    StatusReply,
    StatusRequest,
    TaskBatch,
    TaskOp,
    TaskOptions,
    TaskResult,
    Welcome,
    decode,
    encode,
)

HYPOTHESIS = settings(
    max_examples=150,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
FEW = settings(HYPOTHESIS, max_examples=40)
MESSAGE_TYPES = (
    Hello, Welcome, TaskBatch, TaskResult, StatusRequest, StatusReply, Cancel, ErrorMessage
)

int64 = st.integers(-(2**63), 2**63 - 1)
nonneg64 = st.integers(0, 2**63 - 1)
text = st.text()
load = st.floats(allow_nan=False)

file_entries = st.builds(FileEntry, path=text, length=int64, mtime_ns=nonneg64, dst=text,
                         version=text)
file_results = st.builds(
    FileResult, path=text, status=st.sampled_from(FileStatus), bytes=int64,
    reason=st.none() | st.sampled_from(Reason), message=text,
)
task_options = st.builds(
    TaskOptions, skip_if_exists=st.booleans(), bandwidth=int64, overwrite=st.booleans(),
    metadata_only=st.booleans(), verify=st.booleans(),
)

hellos = st.builds(Hello, token=text, coordinator=text, version=int64)
welcomes = st.builds(Welcome, worker=text, version=int64, web_port=int64)
task_batches = st.builds(
    TaskBatch,
    task_id=int64,
    job_id=text,
    op=st.sampled_from(TaskOp),
    files=st.lists(file_entries, max_size=8).map(tuple),
    options=task_options,
)
task_results = st.builds(
    TaskResult, task_id=int64, results=st.lists(file_results, max_size=8).map(tuple)
)
status_requests = st.builds(StatusRequest, request_id=int64)
status_replies = st.builds(
    StatusReply,
    request_id=int64,
    worker=text,
    pool_size=int64,
    unfinished_tasks=int64,
    active_tasks=int64,
    load_avg=st.tuples(load, load, load),
    cache_used=int64,
    cache_capacity=int64,
    cached_files=int64,
    s3_requests=int64,
    s3_bytes_served=int64,
)
cancels = st.builds(Cancel, job_id=text,
                   task_ids=st.lists(int64, max_size=5).map(tuple))
error_messages = st.builds(ErrorMessage, message=text, task_id=int64)

STRATEGIES: dict[type, st.SearchStrategy[Message]] = {
    Hello: hellos,
    Welcome: welcomes,
    TaskBatch: task_batches,
    TaskResult: task_results,
    StatusRequest: status_requests,
    StatusReply: status_replies,
    Cancel: cancels,
    ErrorMessage: error_messages,
}
messages: st.SearchStrategy[Message] = st.one_of(*STRATEGIES.values())

# every value msgpack can carry (map keys are strings, as the decoder insists)
msgpack_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**64 - 1),
    st.floats(),
    st.text(max_size=20),
    st.binary(max_size=20),
)
msgpack_values = st.recursive(
    msgpack_scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=5),
        st.dictionaries(st.text(max_size=8), children, max_size=5),
    ),
    max_leaves=20,
)


def decode_or_none(data: Any) -> Message | None:
    """Decode; a ProtocolError gives None, any other exception fails the test."""
    try:
        message = decode(data)
    except ProtocolError:
        return None
    except Exception as exc:  # pragma: no cover - only on a bug
        pytest.fail(f"decode raised {type(exc).__name__}, not ProtocolError: {exc!r}")
    assert isinstance(message, MESSAGE_TYPES)
    return message


def body_of(message: Message) -> dict[str, Any]:
    body = msgpack.unpackb(encode(message), raw=False)
    assert isinstance(body, dict)
    return body


def pack(value: Any) -> bytes:
    packed: bytes = msgpack.packb(value, use_bin_type=True)
    return packed


# ------------------------------------------------------------------------ round trips


@pytest.mark.parametrize("kind", MESSAGE_TYPES, ids=lambda k: k.__name__)
@HYPOTHESIS
@given(data=st.data())
def test_round_trip_each_type(kind: type, data: st.DataObject) -> None:
    message = data.draw(STRATEGIES[kind])
    encoded = encode(message)
    assert isinstance(encoded, bytes)
    decoded = decode(encoded)
    assert type(decoded) is kind
    assert decoded == message
    assert decode(bytearray(encoded)) == message
    assert encode(decoded) == encoded


@HYPOTHESIS
@given(st.lists(messages, min_size=1, max_size=5))
def test_round_trip_keeps_message_boundaries(batch: list[Message]) -> None:
    assert [decode(encode(m)) for m in batch] == batch


def test_defaults_round_trip() -> None:
    for message in (
        Hello(token="", coordinator="c1"),
        Welcome(worker="w1"),
        TaskBatch(task_id=1, job_id="j", op=TaskOp.LOAD, files=()),
        TaskResult(task_id=1, results=()),
        ErrorMessage(message="bad"),
    ):
        assert decode(encode(message)) == message
    assert Hello(token="", coordinator="c").version == PROTOCOL_VERSION == 1
    assert ErrorMessage(message="x").task_id == -1


def test_decoded_enums_are_members() -> None:
    batch = decode(encode(TaskBatch(1, "j", TaskOp.COPY, (FileEntry("/a", 1, 2, "/b"),))))
    assert isinstance(batch, TaskBatch)
    assert batch.op is TaskOp.COPY
    failed = FileResult("/a", FileStatus.FAILED, 0, Reason.CACHE_FULL, "no room")
    result = decode(encode(TaskResult(1, (failed,))))
    assert isinstance(result, TaskResult)
    assert result.results[0].status is FileStatus.FAILED
    assert result.results[0].reason is Reason.CACHE_FULL
    assert result.results[0].reason.retryable is False


def test_unknown_reason_is_a_protocol_error() -> None:
    body = body_of(TaskResult(1, (FileResult("/a", FileStatus.FAILED, 0, Reason.IO_ERROR),)))
    body["r"][0][3] = "DISK_ON_FIRE"
    with pytest.raises(ProtocolError, match="unknown failure reason 'DISK_ON_FIRE'"):
        decode(pack(body))
    body["r"][0][3] = "io_error"  # names are exact
    with pytest.raises(ProtocolError, match="unknown failure reason"):
        decode(pack(body))


def test_cancel_names_the_job() -> None:
    assert body_of(Cancel("job-1")) == {"t": "cancel", "job": "job-1"}
    assert decode(encode(Cancel("job-1"))) == Cancel("job-1")
    with pytest.raises(ProtocolError, match="lacks field 'job'"):
        decode(pack({"t": "cancel"}))
    with pytest.raises(ProtocolError):
        decode(pack({"t": "cancel", "job": 7}))


def test_cancel_names_its_tasks_and_stays_readable_both_ways() -> None:
    """A coordinator cancels its own tasks by id; a job-wide cancel (an older
    coordinator's) carries no ids, and an older worker, which reads only ``job``, still
    finds it in a cancel that names tasks."""
    body = body_of(Cancel("job-1", (4, 9)))
    assert body == {"t": "cancel", "job": "job-1", "ids": [4, 9]}
    assert decode(encode(Cancel("job-1", (4, 9)))) == Cancel("job-1", (4, 9))
    assert decode(pack({"t": "cancel", "job": "job-1"})) == Cancel("job-1", ())
    with pytest.raises(ProtocolError, match="'ids' must be a list of task ids"):
        decode(pack({"t": "cancel", "job": "j", "ids": [1, "2"]}))


def test_large_task_batch_round_trips() -> None:
    files = tuple(
        FileEntry(
            path=f"s3://bucket/warehouse/table/part-{i:06d}-日本.parquet",
            length=i * 1_048_576 + 17,
            mtime_ns=1_700_000_000_000_000_000 + i,
            dst=f"gs://other/warehouse/part-{i:06d}" if i % 2 else "",
        )
        for i in range(10_000)
    )
    batch = TaskBatch(
        task_id=2**40 + 1, job_id="5f6d1c2e-0000-4000-8000-000000000000", op=TaskOp.MOVE,
        files=files, options=TaskOptions(skip_if_exists=True, bandwidth=100 << 20, overwrite=True),
    )
    encoded = encode(batch)
    assert len(encoded) < MAX_MESSAGE_SIZE
    decoded = decode(encoded)
    assert decoded == batch
    assert isinstance(decoded, TaskBatch)
    assert len(decoded.files) == 10_000
    assert decoded.files[9_999] == files[9_999]


def test_large_task_result_round_trips() -> None:
    results = tuple(
        FileResult(f"/data/{i}", list(FileStatus)[i % 3], i,
                   None if i % 3 else list(Reason)[i % len(Reason)], "x" * (i % 7))
        for i in range(10_000)
    )
    message = TaskResult(task_id=9, results=results)
    assert decode(encode(message)) == message


def test_encode_rejects_non_messages() -> None:
    with pytest.raises(TypeError):
        encode({"t": "hello"})  # type: ignore[arg-type]


# ------------------------------------------------------------------------ garbage


@HYPOTHESIS
@given(st.binary(max_size=200))
def test_random_bytes_only_raise_protocol_error(data: bytes) -> None:
    decode_or_none(data)


@HYPOTHESIS
@given(messages, st.data())
def test_truncated_messages_raise_protocol_error(message: Message, data: st.DataObject) -> None:
    encoded = encode(message)
    cut = data.draw(st.integers(0, len(encoded) - 1))
    with pytest.raises(ProtocolError):
        decode(encoded[:cut])


@HYPOTHESIS
@given(messages, st.binary(min_size=1, max_size=20))
def test_trailing_bytes_raise_protocol_error(message: Message, extra: bytes) -> None:
    with pytest.raises(ProtocolError):
        decode(encode(message) + extra)


@HYPOTHESIS
@given(messages, st.data())
def test_flipped_bytes_only_raise_protocol_error(message: Message, data: st.DataObject) -> None:
    encoded = bytearray(encode(message))
    for _ in range(data.draw(st.integers(1, 4))):
        index = data.draw(st.integers(0, len(encoded) - 1))
        encoded[index] = data.draw(st.integers(0, 255))
    decode_or_none(bytes(encoded))


@HYPOTHESIS
@given(msgpack_values)
def test_arbitrary_msgpack_values_only_raise_protocol_error(value: Any) -> None:
    decode_or_none(pack(value))


TAGS = ["hello", "welcome", "task", "result", "status", "status_reply", "error"]
FIELD_NAMES = [
    "token", "co", "v", "w", "id", "job", "op", "f", "o", "r", "pool", "unfinished",
    "active", "load", "used", "cap", "files", "msg",
]


@FEW
@given(
    st.sampled_from(TAGS),
    st.dictionaries(st.sampled_from(FIELD_NAMES), msgpack_values, max_size=10),
)
def test_known_tag_with_random_fields_only_raises_protocol_error(
    tag: str, fields: dict[str, Any]
) -> None:
    decode_or_none(pack({**fields, "t": tag}))


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path to a value inside a decoded body (except the tag itself)."""
    found = []
    if isinstance(value, dict):
        items: list[tuple[Any, Any]] = list(value.items())
    elif isinstance(value, list):
        items = list(enumerate(value))
    else:
        return []
    for key, child in items:
        if prefix == () and key == "t":
            continue
        found.append((*prefix, key))
        found.extend(_paths(child, (*prefix, key)))
    return found


def _set(body: Any, path: tuple[Any, ...], value: Any) -> None:
    for key in path[:-1]:
        body = body[key]
    body[path[-1]] = value


def _delete(body: Any, path: tuple[Any, ...]) -> None:
    for key in path[:-1]:
        body = body[key]
    del body[path[-1]]


@HYPOTHESIS
@given(messages, st.data())
def test_any_field_replaced_by_any_value_only_raises_protocol_error(
    message: Message, data: st.DataObject
) -> None:
    body = body_of(message)
    paths = _paths(body)
    if not paths:
        return
    path = data.draw(st.sampled_from(paths))
    replacement = data.draw(msgpack_values)
    _set(body, path, replacement)
    decoded = decode_or_none(pack(body))
    if decoded is not None:
        assert type(decoded) is type(message)


def _optional(path: tuple[Any, ...]) -> bool:
    """Fields newer than protocol version 1: an older peer does not send them."""
    return path in (("o", "meta"), ("o", "vf"), ("web",), ("s3req",), ("s3bytes",),
                    ("ids",)) or (
        len(path) == 3 and path[0] == "f" and path[2] == 4)


@HYPOTHESIS
@given(messages, st.data())
def test_any_field_removed_raises_protocol_error(message: Message, data: st.DataObject) -> None:
    body = body_of(message)
    # A whole file or result row, or a cancel's task id, may go (the list just gets
    # shorter); anything else may
    # not, but for the fields an older peer does not send. A file row that loses its dst
    # or its version has the four values of an older coordinator's row: that is not
    # malformed (the values shift by one place; the row decodes as the older format).
    paths = [p for p in _paths(body)
             if not (len(p) == 2 and p[0] in ("f", "r", "ids")) and not _optional(p)
             and not (len(p) == 3 and p[0] == "f" and p[2] == 3)]
    if not paths:
        return
    _delete(body, data.draw(st.sampled_from(paths)))
    with pytest.raises(ProtocolError):
        decode(pack(body))


INT_FIELDS = {
    Hello: ["v"],
    Welcome: ["v"],
    TaskBatch: ["id"],
    TaskResult: ["id"],
    StatusRequest: ["id"],
    StatusReply: ["id", "pool", "unfinished", "active", "used", "cap", "files", "s3req",
                  "s3bytes"],
    ErrorMessage: ["id"],
}


@pytest.mark.parametrize("kind", list(INT_FIELDS), ids=lambda k: k.__name__)
@pytest.mark.parametrize("flag", [True, False])
@FEW
@given(data=st.data())
def test_booleans_where_ints_expected(kind: type, flag: bool, data: st.DataObject) -> None:
    body = body_of(data.draw(STRATEGIES[kind]))
    _set(body, (data.draw(st.sampled_from(INT_FIELDS[kind])),), flag)
    with pytest.raises(ProtocolError):
        decode(pack(body))


def _sample_batch() -> TaskBatch:
    return TaskBatch(
        task_id=3, job_id="j", op=TaskOp.LOAD,
        files=(FileEntry("/a", 10, 20, ""), FileEntry("/b", 11, 21, "/c")),
    )


WRONG_SHAPES: list[tuple[str, Message, tuple[Any, ...], Any]] = [
    ("bool length", _sample_batch(), ("f", 0, 1), True),
    ("bool mtime", _sample_batch(), ("f", 1, 2), False),
    ("float length", _sample_batch(), ("f", 0, 1), 10.0),
    ("str length", _sample_batch(), ("f", 0, 1), "10"),
    ("bytes path", _sample_batch(), ("f", 0, 0), b"/a"),
    ("short file row", _sample_batch(), ("f", 0), ["/a", 10, 20]),
    ("long file row", _sample_batch(), ("f", 0), ["/a", 10, 20, "", "", ""]),
    ("int version", _sample_batch(), ("f", 0), ["/a", 10, 20, "", 1]),
    ("nil version", _sample_batch(), ("f", 0, 4), None),
    ("int metadata-only flag", _sample_batch(), ("o", "meta"), 1),
    ("nil metadata-only flag", _sample_batch(), ("o", "meta"), None),
    ("str metadata-only flag", _sample_batch(), ("o", "meta"), "false"),
    ("int verify flag", _sample_batch(), ("o", "vf"), 1),
    ("str verify flag", _sample_batch(), ("o", "vf"), "true"),
    ("file row as map", _sample_batch(), ("f", 0), {"path": "/a"}),
    ("files as map", _sample_batch(), ("f",), {"0": ["/a", 1, 2, ""]}),
    ("files as str", _sample_batch(), ("f",), "/a"),
    ("options as list", _sample_batch(), ("o",), [False, 0, False]),
    ("int skip flag", _sample_batch(), ("o", "skip"), 1),
    ("bool bandwidth", _sample_batch(), ("o", "bw"), True),
    ("nil bandwidth", _sample_batch(), ("o", "bw"), None),
    ("unknown op", _sample_batch(), ("op",), "PREFETCH"),
    ("lower-case op", _sample_batch(), ("op",), "load"),
    ("int op", _sample_batch(), ("op",), 0),
    ("bytes job id", _sample_batch(), ("job",), b"j"),
    ("float task id", _sample_batch(), ("id",), 3.0),
    ("unknown status", TaskResult(1, (FileResult("/a", FileStatus.OK),)), ("r", 0, 1), "DONE"),
    ("bool bytes", TaskResult(1, (FileResult("/a", FileStatus.OK),)), ("r", 0, 2), True),
    ("nil reason", TaskResult(1, (FileResult("/a", FileStatus.OK),)), ("r", 0, 3), None),
    ("results as str", TaskResult(1, ()), ("r",), "none"),
    ("bytes token", Hello("tok", "c"), ("token",), b"tok"),
    ("list coordinator", Hello("tok", "c"), ("co",), ["c"]),
    ("bytes worker", Welcome("w"), ("w",), b"w"),
    ("bool web port", Welcome("w", web_port=80), ("web",), True),
    ("str web port", Welcome("w", web_port=80), ("web",), "80"),
    ("nil web port", Welcome("w", web_port=80), ("web",), None),
    ("bytes error text", ErrorMessage("m", 1), ("msg",), b"m"),
    ("bool cancel job", Cancel("j"), ("job",), True),
    ("nil cancel job", Cancel("j"), ("job",), None),
    ("str cancel ids", Cancel("j", (1,)), ("ids",), "1"),
    ("bool cancel id", Cancel("j", (1,)), ("ids", 0), True),
    ("str cancel id", Cancel("j", (1,)), ("ids", 0), "1"),
    ("int reason", TaskResult(1, (FileResult("/a", FileStatus.FAILED, 0, Reason.IO_ERROR),)),
     ("r", 0, 3), 5),
]


def _reply() -> StatusReply:
    return StatusReply(1, "w", 8, 0, 0, (0.5, 0.25, 0.0), 10, 100, 3)


WRONG_SHAPES += [
    ("short load", _reply(), ("load",), [1.0, 2.0]),
    ("long load", _reply(), ("load",), [1.0, 2.0, 3.0, 4.0]),
    ("bool load", _reply(), ("load",), [1.0, True, 3.0]),
    ("str load", _reply(), ("load",), ["1.0", 2.0, 3.0]),
    ("load as map", _reply(), ("load",), {"a": 1.0}),
    ("nil cache", _reply(), ("used",), None),
    ("bytes worker name", _reply(), ("w",), b"w"),
]


@pytest.mark.parametrize(
    ("message", "path", "value"),
    [case[1:] for case in WRONG_SHAPES],
    ids=[case[0] for case in WRONG_SHAPES],
)
def test_wrong_shapes_raise_protocol_error(
    message: Message, path: tuple[Any, ...], value: Any
) -> None:
    body = body_of(message)
    decode(pack(body))  # the unmodified body is fine
    _set(body, path, value)
    with pytest.raises(ProtocolError):
        decode(pack(body))


# ------------------------------------------------------------------------ older peers


def test_a_task_from_a_coordinator_before_meta_and_versions_decodes_with_defaults() -> None:
    """What a coordinator from before ``--metadata-only`` and object versions sends: no
    ``meta`` option and file rows of four values. The worker loads data, as it did then."""
    raw = pack({
        "t": "task", "id": 7, "job": "j1", "op": "LOAD",
        "f": [["/data/a", 10, 20, ""], ["/data/b", 11, 21, ""]],
        "o": {"skip": True, "bw": 1024, "ow": False},
    })
    assert decode(raw) == TaskBatch(
        task_id=7, job_id="j1", op=TaskOp.LOAD,
        files=(FileEntry("/data/a", 10, 20, "", ""), FileEntry("/data/b", 11, 21, "", "")),
        options=TaskOptions(skip_if_exists=True, bandwidth=1024, overwrite=False,
                            metadata_only=False, verify=False),
    )


def test_a_welcome_from_a_worker_before_web_ports_decodes_with_port_0() -> None:
    assert decode(pack({"t": "welcome", "w": "w1", "v": 1})) == Welcome("w1", 1, web_port=0)


@HYPOTHESIS
@given(messages, st.data())
def test_an_optional_field_left_out_takes_its_default(message: Message,
                                                      data: st.DataObject) -> None:
    body = body_of(message)
    paths = [p for p in _paths(body) if _optional(p)]
    if not paths:
        return
    gone = data.draw(st.lists(st.sampled_from(paths), min_size=1, unique=True))
    for path in sorted(gone, reverse=True):
        _delete(body, path)
    decoded = decode(pack(body))
    if isinstance(message, Welcome):
        assert decoded == dataclasses.replace(message, web_port=0)
    elif isinstance(message, StatusReply):
        assert decoded == dataclasses.replace(
            message, s3_requests=0 if ("s3req",) in gone else message.s3_requests,
            s3_bytes_served=0 if ("s3bytes",) in gone else message.s3_bytes_served)
    elif isinstance(message, Cancel):
        assert decoded == Cancel(message.job_id)  # no ids: every task of the job
    else:
        assert isinstance(message, TaskBatch)
        assert isinstance(decoded, TaskBatch)
        meta = message.options.metadata_only and ("o", "meta") not in gone
        verify = message.options.verify and ("o", "vf") not in gone
        assert decoded.options == dataclasses.replace(message.options, metadata_only=meta,
                                                      verify=verify)
        assert decoded.files == tuple(
            f._replace(version="") if ("f", i, 4) in gone else f
            for i, f in enumerate(message.files))


@pytest.mark.parametrize(("message", "path", "value", "named"), [
    (_sample_batch(), ("o", "meta"), 1, "'meta' has type int"),
    (_sample_batch(), ("o", "meta"), None, "'meta' has type NoneType"),
    (_sample_batch(), ("f", 1, 4), 3, "version has type int, not str"),
    (_sample_batch(), ("f", 1, 1), True, "length has type bool, not int"),
    (Welcome("w", web_port=80), ("web",), "80", "'web' has type str"),
    (TaskResult(1, (FileResult("/a", FileStatus.OK),)), ("r", 0, 2), 1.5,
     "bytes has type float, not int"),
], ids=["int meta", "nil meta", "int version", "bool length", "str web", "float bytes"])
def test_a_wrong_type_names_the_field(message: Message, path: tuple[Any, ...], value: Any,
                                      named: str) -> None:
    body = body_of(message)
    _set(body, path, value)
    with pytest.raises(ProtocolError, match=re.escape(named)):
        decode(pack(body))


def test_load_average_accepts_ints() -> None:
    body = body_of(_reply())
    body["load"] = [1, 2, 3]
    decoded = decode(pack(body))
    assert isinstance(decoded, StatusReply)
    assert decoded.load_avg == (1.0, 2.0, 3.0)
    assert all(type(x) is float for x in decoded.load_avg)


def test_uint64_ints_decode() -> None:
    body = body_of(StatusRequest(0))
    body["id"] = 2**64 - 1
    assert decode(pack(body)) == StatusRequest(2**64 - 1)


@pytest.mark.parametrize(
    "tag", ["", "HELLO", "Hello", "ping", "task ", "\x00", None, 1, True, 1.5, b"hello", ["hello"]]
)
def test_unknown_tags_raise_protocol_error(tag: Any) -> None:
    body = body_of(Hello("tok", "c"))
    body["t"] = tag
    with pytest.raises(ProtocolError, match="unknown message type"):
        decode(pack(body))


def test_missing_tag_raises_protocol_error() -> None:
    body = body_of(Hello("tok", "c"))
    del body["t"]
    with pytest.raises(ProtocolError, match="unknown message type"):
        decode(pack(body))


@pytest.mark.parametrize(
    "value", [None, True, 1, 1.5, "hello", b"hello", [], ["t", "hello"], [{"t": "hello"}]]
)
def test_non_map_raises_protocol_error(value: Any) -> None:
    with pytest.raises(ProtocolError, match="expected a msgpack map"):
        decode(pack(value))


@HYPOTHESIS
@given(st.text(max_size=50))
def test_text_instead_of_bytes_raises_protocol_error(data: str) -> None:
    with pytest.raises(ProtocolError, match="text"):
        decode(data)


def test_text_of_a_valid_message_raises_protocol_error() -> None:
    encoded = encode(Welcome("w"))
    with pytest.raises(ProtocolError):
        decode(encoded.decode("latin-1"))


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\xc1",  # never used
        b"\x81\xa1t\xa2\xff\xfe",  # {"t": <invalid utf-8>}
        b"\x81\x01\x02",  # {1: 2}: non-string key
        b"\x81\xc0\x02",  # {nil: 2}
        b"\x91" * 100_000 + b"\xc0",  # very deep nesting
        b"\xdd\xff\xff\xff\xff",  # array claiming 4G elements
        b"\xdf\xff\xff\xff\xff",  # map claiming 4G entries
        b"\xc6\xff\xff\xff\xff",  # bin claiming 4 GiB
        b"\xd4\x01\x00",  # ext type
        b"\xd6\xff\x00\x00\x00\x00",  # timestamp ext
        b"\xd6\xff",  # truncated timestamp
    ],
)
def test_malformed_msgpack_raises_protocol_error(data: bytes) -> None:
    with pytest.raises(ProtocolError):
        decode(data)


@pytest.mark.parametrize(
    "value",
    [
        msgpack.ExtType(5, b"abc"),
        msgpack.Timestamp(1, 0),
        b"\xff\xfe",
    ],
    ids=["ext", "timestamp", "bytes"],
)
@pytest.mark.parametrize("field", ["id", "w"])
def test_exotic_field_values_raise_protocol_error(value: Any, field: str) -> None:
    body = body_of(_reply())
    body[field] = value
    with pytest.raises(ProtocolError):
        decode(pack(body))


def test_oversized_message_raises_protocol_error() -> None:
    with pytest.raises(ProtocolError, match="exceeds"):
        decode(b"\x00" * (MAX_MESSAGE_SIZE + 1))


def _samples() -> list[Message]:
    """One message of each type, every field away from its default."""
    return [
        Hello("t", "c", 7),
        Welcome("w", 7),
        TaskBatch(5, "j", TaskOp.FREE, (FileEntry("/p", 1, 2, "/d"),),
                  TaskOptions(skip_if_exists=True, bandwidth=9, overwrite=True,
                              metadata_only=True)),
        TaskResult(5, (FileResult("/p", FileStatus.FAILED, 3, Reason.UFS_CHANGED, "m"),)),
        Cancel("j", (3, 5)),
        StatusRequest(4),
        _reply(),
        ErrorMessage("m", 8),
    ]


def test_dataclass_fields_all_travel() -> None:
    """Every dataclass field reaches the wire: a new field without codec support fails here."""
    samples = _samples()
    for message in samples:
        decoded = decode(encode(message))
        for f in dataclasses.fields(message):
            assert getattr(decoded, f.name) == getattr(message, f.name), (type(message), f.name)


def test_encoding_and_decoding_tables_cover_every_message_type() -> None:
    from typing import get_args

    from alluxiojob.protocol import codec

    kinds = set(get_args(Message))
    assert set(codec._ENCODERS) == kinds
    tags = {codec._encode_body(sample)["t"] for sample in _samples()}
    assert tags == set(codec._DECODERS)
    assert {type(sample) for sample in _samples()} == kinds
