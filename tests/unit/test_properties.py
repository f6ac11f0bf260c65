"""Property parsing (``config/units.py``) and loading (``config/properties.py``)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from alluxiojob.config.properties import (
    PROPERTIES,
    Config,
    ConfigError,
    Keys,
    PropertyKey,
    build_config,
    closest_key,
    default_conf_file,
    load_config,
    parse_define,
    read_properties_file,
)
from alluxiojob.config.units import format_duration, format_size, parse_duration, parse_size

HYPOTHESIS = settings(max_examples=200, deadline=None, database=None)
MiB = 1 << 20


def _load(
    conf_file: Path | None = None, defines: list[str] | None = None, **env: str
) -> Config:
    return load_config(conf_file, defines or [], environ=env)


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


# ------------------------------------------------------------------------ defaults

DOCUMENTED_DEFAULTS: list[tuple[PropertyKey[Any], str, Any]] = [
    (Keys.FAILURE_DETECTION_TIMEOUT, "alluxio.coordinator.failure.detection.timeout", 15.0),
    (Keys.ETCD_MAX_RETRIES, "alluxio.coordinator.scheduler.etcd.max.retries", 2),
    (Keys.ETCD_READ_TIMEOUT, "alluxio.coordinator.scheduler.etcd.read.timeout", 10.0),
    (Keys.ETCD_WRITE_TIMEOUT, "alluxio.coordinator.scheduler.etcd.write.timeout", 15.0),
    (Keys.SCHEDULER_INTERVAL, "alluxio.coordinator.scheduler.interval.time", 2.0),
    (Keys.JOB_ETCD_PATH, "alluxio.coordinator.scheduler.job.etcd.path", "/alluxio/jobs/"),
    (Keys.JOB_ETCD_POLL_INTERVAL, "alluxio.coordinator.scheduler.job.etcd.poll.interval", 1.0),
    (Keys.MAX_TASKS_PER_WORKER, "alluxio.coordinator.scheduler.max.tasks.per.worker", 3),
    (Keys.RUNNING_JOB_CAPACITY, "alluxio.coordinator.scheduler.running.job.capacity", 100),
    (Keys.WAITING_JOB_CAPACITY, "alluxio.coordinator.scheduler.waiting.job.capacity", 300000),
    (Keys.JOB_BATCH_SIZE, "alluxio.job.batch.size", 200),
    (Keys.JOB_CLEANUP_INTERVAL, "alluxio.job.cleanup.interval", 3600.0),
    (Keys.JOB_RETENTION_TIME, "alluxio.job.retention.time", 7 * 86400.0),
    (Keys.EXECUTOR_THREADS_MAX, "alluxio.worker.job.load.executor.threads.max", 2048),
    (Keys.PARTITION_SIZE, "alluxio.worker.load.file.partition.size", 256 * MiB),
    (Keys.META_STORE_TYPE, "alluxio.coordinator.job.meta.store.type", "ROCKS"),
    (Keys.COORDINATOR_REST_PORT, "alluxio.coordinator.rest.port", 19999),
    (Keys.WORKER_RPC_PORT, "alluxio.worker.rpc.port", 29999),
    (Keys.WORKER_WEB_PORT, "alluxio.worker.web.port", 30000),
]


@pytest.mark.parametrize(
    ("key", "name", "expected"), DOCUMENTED_DEFAULTS, ids=[d[1] for d in DOCUMENTED_DEFAULTS]
)
def test_documented_default(key: PropertyKey[Any], name: str, expected: Any) -> None:
    assert key.name == name
    assert PROPERTIES[name] is key
    config = _load()
    assert config[key] == expected
    assert type(config[key]) is type(expected)


def test_raw_default_strings() -> None:
    assert Keys.JOB_CLEANUP_INTERVAL.default == "1H"
    assert Keys.JOB_RETENTION_TIME.default == "7d"
    assert Keys.PARTITION_SIZE.default == "256MiB"
    assert Keys.FAILURE_DETECTION_TIMEOUT.default == "15s"


def test_every_default_parses() -> None:
    config = build_config({})
    assert set(config.values) == set(PROPERTIES)
    assert config.warnings == ()


def test_every_key_has_an_alluxio_name_and_description() -> None:
    for name, key in PROPERTIES.items():
        assert name == key.name
        # Alluxio's own names: alluxio.*, and Hadoop's s3a.* / fs.azure.* for credentials.
        assert name.startswith(("alluxio.", "s3a.", "fs.azure."))
        assert key.description
        assert key.env_name == name.upper().replace(".", "_")


def test_env_name() -> None:
    assert Keys.JOB_BATCH_SIZE.env_name == "ALLUXIO_JOB_BATCH_SIZE"


# ------------------------------------------------------------------------ precedence


def test_precedence_defaults_file_env_define(tmp_path: Path) -> None:
    conf = _write(tmp_path / "alluxio-site.properties", "alluxio.job.batch.size=10\n")
    define = ["alluxio.job.batch.size=30"]
    assert _load()[Keys.JOB_BATCH_SIZE] == 200
    assert _load(conf)[Keys.JOB_BATCH_SIZE] == 10
    assert _load(conf, ALLUXIO_JOB_BATCH_SIZE="20")[Keys.JOB_BATCH_SIZE] == 20
    assert _load(None, ALLUXIO_JOB_BATCH_SIZE="20")[Keys.JOB_BATCH_SIZE] == 20
    assert _load(conf, define, ALLUXIO_JOB_BATCH_SIZE="20")[Keys.JOB_BATCH_SIZE] == 30
    assert _load(conf, define)[Keys.JOB_BATCH_SIZE] == 30
    assert _load(None, define)[Keys.JOB_BATCH_SIZE] == 30


def test_precedence_is_per_key(tmp_path: Path) -> None:
    conf = _write(
        tmp_path / "site.properties",
        "alluxio.job.batch.size=10\nalluxio.worker.rpc.port=1234\n",
    )
    config = _load(conf, ["alluxio.worker.web.port=4321"], ALLUXIO_JOB_BATCH_SIZE="20")
    assert config[Keys.JOB_BATCH_SIZE] == 20
    assert config[Keys.WORKER_RPC_PORT] == 1234
    assert config[Keys.WORKER_WEB_PORT] == 4321
    assert config[Keys.COORDINATOR_REST_PORT] == 19999


def test_last_define_wins() -> None:
    config = _load(None, ["alluxio.job.batch.size=5", "alluxio.job.batch.size=6"])
    assert config[Keys.JOB_BATCH_SIZE] == 6


def test_unrelated_environment_is_ignored() -> None:
    config = _load(None, None, ALLUXIO_NOT_A_KEY="x", HOME="/nowhere", PATH="/bin")
    assert config.warnings == ()
    assert config[Keys.JOB_BATCH_SIZE] == 200


def test_conf_dir_from_environment(tmp_path: Path) -> None:
    _write(tmp_path / "alluxio-site.properties", "alluxio.job.batch.size=11\n")
    assert default_conf_file({"ALLUXIO_CONF_DIR": str(tmp_path)}) == (
        tmp_path / "alluxio-site.properties"
    )
    assert _load(None, None, ALLUXIO_CONF_DIR=str(tmp_path))[Keys.JOB_BATCH_SIZE] == 11


def test_conf_dir_without_site_file_is_fine(tmp_path: Path) -> None:
    assert default_conf_file({"ALLUXIO_CONF_DIR": str(tmp_path)}) is None
    assert default_conf_file({}) is None
    assert _load(None, None, ALLUXIO_CONF_DIR=str(tmp_path))[Keys.JOB_BATCH_SIZE] == 200


def test_values_are_typed(tmp_path: Path) -> None:
    conf = _write(
        tmp_path / "site.properties",
        "\n".join(
            [
                "alluxio.job.retention.time=2h",
                "alluxio.worker.load.file.partition.size=1GB",
                "alluxio.etcd.endpoints=http://a:2379, http://b:2379 ,",
                "alluxio.worker.page.store.sizes=1GiB,512MiB",
                "alluxio.coordinator.job.meta.store.type=etcd",
                "alluxio.job.failure.ratio.threshold=0.5",
                "alluxio.job.retry.backoff=250",
            ]
        ),
    )
    config = _load(conf)
    assert config[Keys.JOB_RETENTION_TIME] == 7200.0
    assert config[Keys.PARTITION_SIZE] == 1 << 30
    assert config[Keys.ETCD_ENDPOINTS] == ("http://a:2379", "http://b:2379")
    assert config[Keys.PAGE_STORE_SIZES] == (1 << 30, 512 * MiB)
    assert config[Keys.META_STORE_TYPE] == "ETCD"
    assert config[Keys.JOB_FAILURE_RATIO_THRESHOLD] == 0.5
    assert config[Keys.JOB_RETRY_BACKOFF] == 0.25


def test_with_overrides() -> None:
    config = _load(None, ["alluxio.job.batch.size=7"])
    overridden = config.with_overrides({"alluxio.worker.rpc.port": "1000"})
    assert overridden[Keys.JOB_BATCH_SIZE] == 7
    assert overridden[Keys.WORKER_RPC_PORT] == 1000
    assert config[Keys.WORKER_RPC_PORT] == 29999
    with pytest.raises(ConfigError, match=r"alluxio\.worker\.rpc\.port.*override"):
        config.with_overrides({"alluxio.worker.rpc.port": "http"})


# ------------------------------------------------------------------------ errors

BAD_VALUES = [
    ("alluxio.job.batch.size", "many"),
    ("alluxio.job.batch.size", "0"),
    ("alluxio.job.batch.size", "-3"),
    ("alluxio.worker.rpc.port", "70000"),
    ("alluxio.coordinator.rest.port", "http"),
    ("alluxio.job.failure.ratio.threshold", "1.5"),
    ("alluxio.job.retention.time", "7 fortnights"),
    ("alluxio.coordinator.failure.detection.timeout", "0s"),
    ("alluxio.worker.load.file.partition.size", "huge"),
    ("alluxio.worker.load.file.partition.size", "0"),
    ("alluxio.worker.load.file.partition.size", "1"),
    ("alluxio.worker.load.file.partition.size", "1023KiB"),
    ("alluxio.worker.page.store.sizes", "1GiB,lots"),
    ("alluxio.coordinator.job.meta.store.type", "MYSQL"),
    ("alluxio.worker.membership.manager.type", "dynamic"),
    ("alluxio.coordinator.scheduler.etcd.max.retries", "two"),
]


@pytest.mark.parametrize(("name", "value"), BAD_VALUES)
def test_bad_value_in_file_names_key_and_file(tmp_path: Path, name: str, value: str) -> None:
    conf = _write(tmp_path / "site.properties", f"{name}={value}\n")
    with pytest.raises(ConfigError) as info:
        _load(conf)
    assert name in str(info.value)
    assert str(conf) in str(info.value)


@pytest.mark.parametrize(("name", "value"), BAD_VALUES)
def test_bad_value_in_define_names_key_and_define(name: str, value: str) -> None:
    with pytest.raises(ConfigError) as info:
        _load(None, [f"{name}={value}"])
    assert name in str(info.value)
    assert "-D" in str(info.value)


def test_bad_value_in_environment_names_key_and_variable() -> None:
    with pytest.raises(ConfigError) as info:
        _load(None, None, ALLUXIO_JOB_BATCH_SIZE="lots")
    assert "alluxio.job.batch.size" in str(info.value)
    assert "ALLUXIO_JOB_BATCH_SIZE" in str(info.value)


def test_config_error_is_a_value_error() -> None:
    assert issubclass(ConfigError, ValueError)


def test_unknown_key_warns_with_closest_key(tmp_path: Path) -> None:
    conf = _write(tmp_path / "site.properties", "alluxio.job.batch.sise=5\n")
    config = _load(conf)
    assert len(config.warnings) == 1
    warning = config.warnings[0]
    assert "alluxio.job.batch.sise" in warning
    assert "did you mean alluxio.job.batch.size" in warning
    assert str(conf) in warning
    assert config[Keys.JOB_BATCH_SIZE] == 200  # the typo does not apply


def test_unknown_key_from_define_warns() -> None:
    config = _load(None, ["alluxio.worker.rpc.prot=1"])
    assert len(config.warnings) == 1
    assert "alluxio.worker.rpc.prot" in config.warnings[0]
    assert "alluxio.worker.rpc.port" in config.warnings[0]
    assert "-D" in config.warnings[0]


def test_unknown_key_without_close_match_warns_without_hint() -> None:
    config = _load(None, ["spark.executor.memory=4g"])
    assert len(config.warnings) == 1
    assert "spark.executor.memory" in config.warnings[0]
    assert "did you mean" not in config.warnings[0]


def test_unknown_keys_are_not_validated() -> None:
    config = _load(None, ["alluxio.user.file.buffer.bytes=not a size"])
    assert len(config.warnings) == 1


def test_closest_key() -> None:
    assert closest_key("alluxio.job.batch.sise") == "alluxio.job.batch.size"
    assert closest_key("alluxio.job.retention.tme") == "alluxio.job.retention.time"
    assert closest_key("zzz") is None


@pytest.mark.parametrize("text", ["alluxio.job.batch.size", "=5", " =5", ""])
def test_malformed_define(text: str) -> None:
    with pytest.raises(ConfigError, match="-D"):
        _load(None, [text])


def test_parse_define() -> None:
    assert parse_define("a.b=c") == ("a.b", "c")
    assert parse_define(" a.b = c=d ") == ("a.b", "c=d")
    assert parse_define("a.b=") == ("a.b", "")


def test_missing_conf_file_names_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope" / "alluxio-site.properties"
    with pytest.raises(ConfigError) as info:
        _load(missing)
    assert str(missing) in str(info.value)


def test_unreadable_conf_file_is_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        _load(tmp_path)  # a directory
    assert str(tmp_path) in str(info.value)


def test_properties_file_syntax(tmp_path: Path) -> None:
    conf = _write(
        tmp_path / "site.properties",
        "\n".join(
            [
                "# a comment",
                "! another comment",
                "",
                "   ",
                "alluxio.job.batch.size = 12",
                "alluxio.worker.rpc.port: 1001",
                "alluxio.worker.web.port 1002",
                "alluxio.worker.hostname\tw1.example.com",
                "alluxio.job.cluster.token=a=b",
            ]
        ),
    )
    assert read_properties_file(conf) == {
        "alluxio.job.batch.size": "12",
        "alluxio.worker.rpc.port": "1001",
        "alluxio.worker.web.port": "1002",
        "alluxio.worker.hostname": "w1.example.com",
        "alluxio.job.cluster.token": "a=b",
    }
    config = _load(conf)
    assert config.warnings == ()
    assert config[Keys.CLUSTER_TOKEN] == "a=b"


def test_properties_line_without_separator(tmp_path: Path) -> None:
    conf = _write(tmp_path / "site.properties", "alluxio.job.batch.size=1\njustakey\n")
    with pytest.raises(ConfigError, match=r":2: expected key=value"):
        _load(conf)


def test_whitespace_separated_value_containing_colon(tmp_path: Path) -> None:
    conf = _write(
        tmp_path / "site.properties",
        "alluxio.dora.client.ufs.root s3://bucket/data\n"
        "alluxio.etcd.endpoints http://etcd-1:2379\n",
    )
    assert read_properties_file(conf) == {
        "alluxio.dora.client.ufs.root": "s3://bucket/data",
        "alluxio.etcd.endpoints": "http://etcd-1:2379",
    }


# ------------------------------------------------------------------------ ${...} expansion


def test_work_dir_expansion() -> None:
    config = _load(None, ["alluxio.work.dir=/data/aj"])
    assert config[Keys.WORK_DIR] == "/data/aj"
    assert config[Keys.META_STORE_DIR] == "/data/aj/metastore"
    assert config[Keys.STATIC_CONFIG_FILE] == "/data/aj/workers"
    assert config[Keys.PAGE_STORE_DIRS] == ("/data/aj/cache",)


def test_default_work_dir_expands_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    config = _load()
    assert config[Keys.WORK_DIR] == f"{tmp_path}/.alluxiojob"
    assert config[Keys.META_STORE_DIR] == f"{tmp_path}/.alluxiojob/metastore"


def test_reference_in_user_value(tmp_path: Path) -> None:
    conf = _write(tmp_path / "site.properties", "alluxio.work.dir=/srv/aj\n")
    config = _load(
        conf,
        [
            "alluxio.coordinator.job.meta.store.dir=${alluxio.work.dir}/db",
            "alluxio.dora.client.ufs.root=file://${alluxio.work.dir}/ufs/${alluxio.worker.hostname}",
        ],
    )
    assert config[Keys.META_STORE_DIR] == "/srv/aj/db"
    assert config[Keys.UFS_ROOT] == "file:///srv/aj/ufs/localhost"


def test_chained_references() -> None:
    config = _load(
        None,
        ["alluxio.work.dir=/w", "alluxio.coordinator.job.meta.store.dir=${alluxio.work.dir}/m",
         "alluxio.dora.client.ufs.root=${alluxio.coordinator.job.meta.store.dir}/u"],
    )
    assert config[Keys.UFS_ROOT] == "/w/m/u"


@pytest.mark.parametrize(
    "value",
    ["${alluxio.no.such.key}/x", "${alluxio.work.dir/x", "${alluxio.dora.client.ufs.root}"],
    ids=["unknown", "unterminated", "self-reference"],
)
def test_bad_references_are_config_errors(value: str) -> None:
    with pytest.raises(ConfigError, match=r"alluxio\.dora\.client\.ufs\.root"):
        _load(None, [f"alluxio.dora.client.ufs.root={value}"])


# ------------------------------------------------------------------------ units

SIZE_UNITS = {
    "": 1, "B": 1, "b": 1,
    "KB": 1 << 10, "KiB": 1 << 10, "kib": 1 << 10, "k": 1 << 10,
    "MB": 1 << 20, "MiB": 1 << 20, "m": 1 << 20,
    "GB": 1 << 30, "GiB": 1 << 30, "g": 1 << 30,
    "TB": 1 << 40, "TiB": 1 << 40, "PB": 1 << 50, "PiB": 1 << 50,
}
DURATION_UNITS = {
    "ms": 0.001, "millis": 0.001, "MS": 0.001,
    "s": 1.0, "S": 1.0, "sec": 1.0,
    "m": 60.0, "M": 60.0, "min": 60.0,
    "h": 3600.0, "H": 3600.0, "hr": 3600.0,
    "d": 86400.0, "D": 86400.0, "day": 86400.0,
}


@HYPOTHESIS
@given(
    st.sampled_from(sorted(SIZE_UNITS)),
    st.data(),
    st.sampled_from(["", " "]),
)
def test_parse_size_integers(unit: str, data: st.DataObject, space: str) -> None:
    multiplier = SIZE_UNITS[unit]
    # integers whose byte count a double holds exactly; larger ones are checked exactly below
    n = data.draw(st.integers(0, (2**53 - 1) // multiplier))
    assert parse_size(f"{n}{space}{unit}") == n * multiplier
    assert parse_size(f"  {n}{unit}\n") == n * multiplier


@pytest.mark.parametrize(
    ("text", "expected"),
    [("256MiB", 256 * MiB), ("1GB", 1 << 30), ("4096", 4096), ("1.5KiB", 1536),
     ("0.5 MB", MiB // 2), ("64KiB", 65536), ("0", 0), ("2T", 2 << 40)],
)
def test_parse_size_examples(text: str, expected: int) -> None:
    assert parse_size(text) == expected


@HYPOTHESIS
@given(st.sampled_from(sorted(DURATION_UNITS)), st.integers(0, 10**12))
def test_parse_duration_integers(unit: str, n: int) -> None:
    assert math.isclose(parse_duration(f"{n}{unit}"), n * DURATION_UNITS[unit], rel_tol=1e-12)


@HYPOTHESIS
@given(st.integers(0, 10**12))
def test_bare_duration_is_milliseconds(n: int) -> None:
    assert math.isclose(parse_duration(str(n)), n / 1000.0, rel_tol=1e-12)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("15s", 15.0), ("1H", 3600.0), ("7d", 604800.0), ("500ms", 0.5), ("500", 0.5),
     ("2m", 120.0), ("1.5h", 5400.0), (" 10 s ", 10.0), ("0s", 0.0)],
)
def test_parse_duration_examples(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


GARBAGE = [
    "", " ", "abc", "s", "-5s", "+5s", "1.2.3s", "5 parsecs", "1e3", "0x10", "1,000", "nan",
    "inf", "5s5", "s5", "5 s s", ".5s", "5.s", "1_000", "\uff15s", "\u0665s", "5\u00b5s",
]


@pytest.mark.parametrize("text", GARBAGE)
def test_garbage_duration_raises_value_error(text: str) -> None:
    with pytest.raises(ValueError, match="duration|unit"):
        parse_duration(text)


@pytest.mark.parametrize("text", [*GARBAGE, "5 bits", "1 KiBi", "3 EB"])
def test_garbage_size_raises_value_error(text: str) -> None:
    with pytest.raises(ValueError, match="size|unit"):
        parse_size(text)


# a character the number+unit syntax can never contain
POISON = st.sampled_from(list("-+/_,;!#@%&*()[]{}<>?'\"\\|~`^$=") + ["é", "\u00b5", "\u0665"])


@HYPOTHESIS
@given(st.text(max_size=20), POISON, st.text(max_size=20))
def test_poisoned_strings_raise_value_error(left: str, poison: str, right: str) -> None:
    text = left + poison + right
    with pytest.raises(ValueError):  # noqa: PT011 - the type is the contract
        parse_size(text)
    with pytest.raises(ValueError):  # noqa: PT011
        parse_duration(text)


@HYPOTHESIS
@given(st.text(max_size=30))
def test_any_text_parses_or_raises_value_error(text: str) -> None:
    for parse in (parse_size, parse_duration):
        try:
            value = parse(text)
        except ValueError:
            continue
        assert isinstance(value, int | float)
        assert value >= 0


def test_huge_size_raises_value_error() -> None:
    with pytest.raises(ValueError):  # noqa: PT011
        parse_size("9" * 400)


def test_huge_size_property_is_config_error() -> None:
    with pytest.raises(ConfigError, match="partition.size"):
        _load(None, ["alluxio.worker.load.file.partition.size=" + "9" * 400])


def test_parse_size_is_exact_for_large_integers() -> None:
    assert parse_size("9007199254740993") == 9007199254740993
    assert parse_size("9007199254740993B") == 9007199254740993


@pytest.mark.parametrize(
    ("num_bytes", "text"),
    [(0, "0B"), (1023, "1023B"), (1024, "1.00KiB"), (1536, "1.50KiB"), (256 * MiB, "256.00MiB"),
     (1 << 40, "1.00TiB"), (1 << 50, "1024.00TiB")],
)
def test_format_size(num_bytes: int, text: str) -> None:
    assert format_size(num_bytes) == text


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0.85, "850ms"), (0, "0ms"), (1, "1s"), (59.4, "59s"), (61, "1m01s"), (3723, "1h02m03s")],
)
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


def test_partition_size_minimum_is_one_mib() -> None:
    assert _load(None, ["alluxio.worker.load.file.partition.size=1MiB"])[
        Keys.PARTITION_SIZE] == 1024 * 1024
    with pytest.raises(ConfigError, match="at least 1MiB"):
        _load(None, ["alluxio.worker.load.file.partition.size=1"])


def test_site_file_that_is_not_utf8_is_a_config_error(tmp_path: Path) -> None:
    conf = tmp_path / "site.properties"
    conf.write_bytes(b"alluxio.job.batch.size=10\nalluxio.work.dir=/caf\xe9\n")
    with pytest.raises(ConfigError) as info:
        _load(conf)
    assert str(conf) in str(info.value)
    assert "not UTF-8" in str(info.value)
    assert "line 2" in str(info.value)
