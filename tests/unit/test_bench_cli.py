"""``scripts/bench`` checks its whole command line before it starts anything.

It runs for tens of minutes and starts servers, so ``--help`` or a typo must not start
any of it: the script runs as a subprocess here, with its temp dirs pointed at an empty
directory that must stay empty, and a timeout that kills its process group (a run that
started benchmarking would still be running then).
"""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "scripts" / "bench"
TIMEOUT = 60  # a guard against a run that started benchmarking, not a speed bound


def run_bench(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    env = {**os.environ, "TMPDIR": os.fspath(scratch), "BENCH_RSS": "1"}
    proc = subprocess.Popen([os.fspath(BENCH), *args], stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail(f"scripts/bench {' '.join(args)} was still running after {TIMEOUT}s: "
                    "it started benchmarking")
    assert list(scratch.iterdir()) == [], f"scripts/bench {' '.join(args)} made temp files"
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


@pytest.mark.parametrize("flag", ["--help", "-h"])
@pytest.mark.parametrize("before", [[], ["--s3-only"], ["--ha-only"], ["--quick", "--no-ha"]])
def test_help_prints_every_part_and_starts_nothing(flag: str, before: list[str],
                                                   tmp_path: Path) -> None:
    result = run_bench([*before, flag], tmp_path)
    assert result.returncode == 0, result.stderr
    for section in ("local part", "memory part", "S3 part", "HA part", "--s3-latency",
                    "--ha-jobs", "--warm", "--no-memory", "--no-rss", "--reps"):
        assert section in result.stdout, f"--help does not mention {section!r}"
    assert "usage: scripts/bench" in result.stdout


@pytest.mark.parametrize("args", [
    ["--no-such-flag"],
    ["--s3-only", "--no-such-flag"],
    ["--ha-only", "--no-such-flag"],
    ["--quick", "--no-such-flag", "--no-ha"],
])
def test_unknown_flag_exits_2_naming_it(args: list[str], tmp_path: Path) -> None:
    result = run_bench(args, tmp_path)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "--no-such-flag" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(("args", "named"), [
    (["--reps", "two"], "--reps"),
    (["--reps", "2"], "--reps"),
    (["--s3-latency", "-5"], "--s3-latency"),
    (["--s3-only", "--ha-only"], "--ha-only"),
    (["--s3-variant", "no-colon"], "--s3-variant"),
])
def test_bad_values_exit_2_naming_the_flag(args: list[str], named: str,
                                           tmp_path: Path) -> None:
    result = run_bench(args, tmp_path)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert named in result.stderr
    assert "Traceback" not in result.stderr


# The parts a command line selects, and the order of the tools: pure logic of the bench's
# own modules (standard library only), imported from scripts/.
SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"


@pytest.fixture
def bench_modules(monkeypatch: pytest.MonkeyPatch) -> tuple[object, object]:
    monkeypatch.syspath_prepend(os.fspath(SCRIPTS))
    import bench_args
    import bench_common
    return bench_args, bench_common


@pytest.mark.parametrize(("args", "env", "expected"), [
    ([], "1", ["local", "memory", "s3", "ha", "read"]),
    (["--no-rss"], "1", ["local", "s3", "ha", "read"]),
    (["--no-memory", "--no-s3"], "1", ["local", "ha", "read"]),
    ([], "0", ["local", "s3", "ha", "read"]),
    (["--rss-only"], "1", ["memory"]),
    (["--local-only"], "0", ["local"]),
    (["--ha-only"], "1", ["ha"]),
])
def test_the_command_line_selects_the_parts(bench_modules: tuple[object, object],
                                            monkeypatch: pytest.MonkeyPatch, args: list[str],
                                            env: str, expected: list[str]) -> None:
    bench_args, _ = bench_modules
    monkeypatch.setenv("BENCH_RSS", env)
    assert bench_args.parts(bench_args.parse(args)) == expected  # type: ignore[attr-defined]


def test_every_tool_runs_in_every_position(bench_modules: tuple[object, object]) -> None:
    _, bench_common = bench_modules
    tools = ["cp", "rclone", "alluxiojob"]
    orders = list(bench_common.rotations(tools, 6))  # type: ignore[attr-defined]
    assert len(orders) == 6
    assert all(sorted(order) == sorted(tools) for order in orders)
    for position in range(len(tools)):
        assert {order[position] for order in orders[:3]} == set(tools)
    assert orders[3:] == orders[:3]


def test_paired_ratios_keep_the_spread(bench_modules: tuple[object, object]) -> None:
    _, bench_common = bench_modules
    text = bench_common.ratio_text([2.0, 1.0, 3.0], [1.0, 1.0, 1.0])  # type: ignore[attr-defined]
    assert text.split() == ["2.000", "[1.00-3.00]"]
