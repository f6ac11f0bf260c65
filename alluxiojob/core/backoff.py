"""How long to wait before a retry, and how to spread a periodic wake-up. Pure.

Every retry loop asks ``backoff_delay`` (the coordinator's worker connections and job
resumption, the job store's compare-and-swap retries, the etcd client's failover passes)
and the ledger uses it for its per-file retries; every periodic poll asks ``jittered``.
One formula: ``first × 2^(attempt-1)``, at most ``cap``, times a factor drawn uniformly
from ``[1 - jitter, 1 + jitter]``. ``jitter=1.0`` is "full jitter" (anywhere from 0 to
twice the delay), which spreads contending retries the most.
"""

from __future__ import annotations

import math
import random

JITTER = 0.2  # ±20%: the spread of periodic polls and of per-file retries
_MAX_DOUBLINGS = 60  # past this the cap has long been reached; keeps 2**n a float


def backoff_delay(
    attempt: int,
    *,
    first: float,
    cap: float = math.inf,
    jitter: float = 0.0,
    rng: random.Random | None = None,
) -> float:
    """Seconds to wait before retry number ``attempt`` (1 is the first retry)."""
    if attempt < 1:
        raise ValueError(f"attempt counts from 1, got {attempt}")
    if not 0.0 <= jitter <= 1.0:
        raise ValueError(f"jitter must be between 0 and 1, got {jitter}")
    delay = min(first * 2.0 ** min(attempt - 1, _MAX_DOUBLINGS), cap)
    if jitter:
        delay *= (rng or random).uniform(1.0 - jitter, 1.0 + jitter)
    return delay


def jittered(interval: float, *, rng: random.Random | None = None) -> float:
    """``interval`` ±20%, so that peers polling the same thing do not stay in step."""
    return backoff_delay(1, first=interval, jitter=JITTER, rng=rng)
