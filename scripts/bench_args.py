"""The command line of ``scripts/bench``, shared by all of its parts.

One parser knows every flag of every part (``bench_local.py``, ``bench_memory.py``,
``bench_s3.py``, ``bench_ha.py``, ``bench_read.py``), so that ``scripts/bench``
checks the whole command line before it starts anything: ``--help`` prints the usage of
every part and exits 0, an unknown flag or a bad value exits 2 naming it. Each part
parses the same command line again with the same parser and uses its own flags.

Standard library only: the wrapper runs it with the system Python, before it makes
.venv, so that neither ``--help`` nor a typo installs or starts anything.

Run as a script (what the wrapper does), it prints the parts to run, one word each
(``local``, ``memory``, ``s3``, ``ha``, ``read``), to the file descriptor given by ``--parts-fd``.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

PARTS = ("local", "memory", "s3", "ha", "read")

DESCRIPTION = """\
Benchmarks of alluxiojob, each against a reference tool on the same data and machine:
  local   LOAD of local files against `cp -r` and `rclone copy`, every timed run after
          sync and a dropped page cache (scripts/bench_local.py);
  memory  the coordinator's and a worker's memory at 100k/300k/1M files
          (scripts/bench_memory.py);
  s3      LOAD from a loopback S3 server (nginx + Lua; moto with --s3-server moto)
          against `rclone copy` at several --transfers, at 0 and 20 ms added latency
          per request, with the server's CPU per request (scripts/bench_s3.py);
  ha      the HA scheduler on a real etcd: claims/s with 3 coordinators against the same
          etcd's raw txn/s, and submit-to-RUNNING latency (scripts/bench_ha.py);
  read    reads of cached files through a worker's S3 API against nginx serving the
          same files: one 1 GiB GET, and 4 KiB GETs 64 at once (scripts/bench_read.py).
All five run, in that order, unless told otherwise (--PART-only, --no-PART).
Everything a part starts is stopped when it ends, fails or is interrupted."""

EPILOG = """\
environment:
  BENCH_RSS=0        same as --no-memory
  TMPDIR=DIR         where the temp work dirs go (datasets, copies and caches)
  PYTHON=python3.12  interpreter used to create .venv when it is missing"""


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {text!r}")
    return value


def _latency_ms(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of milliseconds: {text!r}") from None
    if not 0 <= value <= 10_000:
        raise argparse.ArgumentTypeError(f"must be 0 to 10000 ms, got {text!r}")
    return value


def _property(text: str) -> str:
    key, sep, _ = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return text


def _variant(text: str) -> tuple[str, list[str]]:
    """``NAME:KEY=VALUE[,KEY=VALUE...]``: a second cluster with these properties."""
    name, sep, rest = text.partition(":")
    if not sep or not name.isidentifier():
        raise argparse.ArgumentTypeError(f"expected NAME:KEY=VALUE[,KEY=VALUE...], got {text!r}")
    props = [p for p in rest.split(",") if p]
    for prop in props:
        _property(prop)
    return name, props


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="scripts/bench", description=DESCRIPTION, epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    common = p.add_argument_group("all parts")
    common.add_argument("--quick", action="store_true",
                        help="smoke run: 2,000 small files or objects, 4 x 64 MiB (16 MiB "
                             "partitions), memory at 20k and 100k files, 100 HA jobs")
    common.add_argument("--reps", type=_positive, default=3,
                        help="paired repetitions of the local and S3 parts (at least 3)")
    common.add_argument("--workdir", type=Path,
                        help="local and memory parts: keep the datasets here between runs "
                             "(default: a new temp dir, removed at the end)")
    common.add_argument("--keep", action="store_true",
                        help="local and memory parts: do not remove the temp dir")
    which = p.add_argument_group("which parts run")
    for part in PARTS:
        which.add_argument(f"--{part}-only", action="store_true",
                           help=f"run only the {part} part")
        which.add_argument(f"--no-{part}", action="store_true", help=f"skip the {part} part")
    which.add_argument("--rss-only", dest="memory_only", action="store_true",
                       help="same as --memory-only")
    which.add_argument("--no-rss", dest="no_memory", action="store_true",
                       help="same as --no-memory (or BENCH_RSS=0)")
    p.set_defaults(no_memory=os.environ.get("BENCH_RSS", "1") == "0")

    local = p.add_argument_group("local part (scripts/bench_local.py)")
    local.add_argument("--warm", action="store_true",
                       help="keep the page cache between timed runs (only sync); by "
                            "default it is dropped where the kernel allows it (root)")
    local.add_argument("--json", type=Path, help="also write the local figures to this file")

    memory = p.add_argument_group("memory part (scripts/bench_memory.py)")
    memory.add_argument("--memory-json", type=Path,
                        help="also write the memory figures to this file")

    s3 = p.add_argument_group("S3 part (scripts/bench_s3.py)")
    s3.add_argument("--s3-latency", type=_latency_ms, action="append", metavar="MS",
                    help="added latency per request, repeatable (default: 0 and 20)")
    s3.add_argument("--s3-dataset", choices=("small", "large"), action="append",
                    help="only this dataset, repeatable (default: both)")
    s3.add_argument("--s3-define", type=_property, action="append", default=[],
                    metavar="KEY=VALUE",
                    help="an alluxiojob property for the S3 cluster, repeatable")
    s3.add_argument("--s3-variant", type=_variant, action="append", default=[],
                    metavar="NAME:KEY=VALUE[,...]",
                    help="also time a second cluster with these properties, paired with "
                         "the first in every repetition (an A/B of a setting)")
    s3.add_argument("--s3-server", choices=("nginx", "moto"), default="nginx",
                    help="the S3 API server: nginx with its Lua module (fast; installed "
                         "by scripts/bench when root), or moto (slow: ~2 ms of CPU per "
                         "request). Default nginx, moto if nginx cannot be had")
    s3.add_argument("--s3-rclone-transfers", type=_positive, action="append", metavar="N",
                    help="time `rclone copy --transfers N`, repeatable (default: 32, 64, "
                         "128 and 256)")
    s3.add_argument("--s3-no-rclone", action="store_true",
                    help="time only alluxiojob (its clusters), not rclone")
    s3.add_argument("--s3-json", type=Path, help="also write the S3 figures to this file")

    ha = p.add_argument_group("HA part (scripts/bench_ha.py)")
    ha.add_argument("--ha-jobs", type=_positive,
                    help="jobs claimed by 3 coordinators (default 600; 100 with --quick)")
    ha.add_argument("--ha-latency-samples", type=_positive, default=200,
                    help="submissions timed for submit-to-RUNNING")
    ha.add_argument("--ha-json", type=Path, help="also write the HA figures to this file")

    read = p.add_argument_group("read part (scripts/bench_read.py)")
    read.add_argument("--read-clients", type=_positive, default=64,
                      help="concurrent GETs of the small objects")
    read.add_argument("--read-json", type=Path, help="also write the read figures to this file")
    return p


def parse(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The whole command line, checked; exits 2 naming what is wrong."""
    p = parser()
    args = p.parse_args(argv)
    only = [f"--{part}-only" for part in PARTS if getattr(args, f"{part}_only")]
    if len(only) > 1:
        p.error(f"{' and '.join(only)} exclude each other")
    for part in PARTS:
        if getattr(args, f"{part}_only") and getattr(args, f"no_{part}"):
            p.error(f"--{part}-only and --no-{part} exclude each other")
    if args.reps < 3:
        p.error("--reps must be at least 3 (the figures are medians of paired runs)")
    return args


def parts(args: argparse.Namespace) -> list[str]:
    """The parts this command line runs, in order."""
    for part in PARTS:
        if getattr(args, f"{part}_only"):
            return [part]
    return [part for part in PARTS if not getattr(args, f"no_{part}")]


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    fd = 1
    if argv[:1] == ["--parts-fd"] and len(argv) > 1:
        fd, argv = int(argv[1]), argv[2:]
    args = parse(argv)
    with os.fdopen(fd, "w", closefd=False) as out:
        out.write(" ".join(parts(args)) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
