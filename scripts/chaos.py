"""Driver of ``scripts/chaos``: one chaos run (see tests/integration/chaos.py for what it
does and checks), its report, and an exit code that is non-zero if anything was lost or
a check failed."""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from types import FrameType

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.integration.chaos import ChaosConfig, ChaosRun  # noqa: E402


def _interrupted(signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main() -> int:
    parser = argparse.ArgumentParser(prog="scripts/chaos", description=__doc__)
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--faults", type=int, default=50, help="faults to inject (default 50)")
    parser.add_argument("--duration", type=float, default=900.0,
                        help="seconds of faults at most, even if fewer were injected "
                        "(default 900)")
    parser.add_argument("--grace", type=float, default=180.0,
                        help="seconds for the last jobs to end after the faults (default 180)")
    parser.add_argument("--lanes", type=int, default=4, help="concurrent job lanes (default 4)")
    parser.add_argument("--mean-gap", type=float, default=2.5,
                        help="mean seconds between faults (default 2.5)")
    parser.add_argument("--workdir", type=Path, help="keep everything here (default: a temp "
                        "dir, removed at the end unless --keep)")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir and its logs")
    parser.add_argument("--json", type=Path, help="also write the summary as JSON here")
    args = parser.parse_args()
    for signum in (signal.SIGTERM, signal.SIGHUP, signal.SIGALRM):
        signal.signal(signum, _interrupted)
    # Bounded whatever happens: faults end at --duration, jobs get --grace, checks and
    # teardown get 10 minutes more; then the run is interrupted (and cleans up).
    signal.alarm(int(args.duration + args.grace + 600))

    root = args.workdir or Path(tempfile.mkdtemp(prefix=f"alluxiojob-chaos-{args.seed}-"))
    config = ChaosConfig(seed=args.seed, root=root, faults=args.faults,
                         duration=args.duration, grace=args.grace, lanes=args.lanes,
                         mean_gap=args.mean_gap,
                         log=lambda line: print(line, flush=True))
    started = time.monotonic()
    try:
        report = ChaosRun(config).run()  # stops everything it started before returning
    except KeyboardInterrupt as exc:
        print(f"chaos run interrupted ({exc or 'Ctrl-C'}); work dir: {root}", file=sys.stderr)
        return 130
    print()
    print(report.render())
    if args.json:
        args.json.write_text(json.dumps(report.summary(), indent=2) + "\n")
    if args.workdir is None and not args.keep and report.failed_checks == 0:
        shutil.rmtree(root, ignore_errors=True)
    else:
        print(f"work dir (logs of every process): {root}")
    print(f"chaos run took {time.monotonic() - started:.0f}s; "
          + ("nothing lost" if report.lost == 0 else f"{report.lost} LOST")
          + ("" if report.failed_checks == report.lost
             else f"; {report.failed_checks - report.lost} other checks FAILED"))
    return 0 if report.failed_checks == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
