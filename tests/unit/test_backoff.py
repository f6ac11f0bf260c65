"""The one retry-delay formula (``core/backoff.py``)."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from alluxiojob.core.backoff import backoff_delay, jittered


def test_without_jitter_the_delay_doubles_up_to_the_cap() -> None:
    delays = [backoff_delay(n, first=0.05, cap=1.0) for n in range(1, 8)]
    assert delays == [0.05, 0.1, 0.2, 0.4, 0.8, 1.0, 1.0]


def test_a_huge_attempt_count_stays_at_the_cap_without_overflow() -> None:
    assert backoff_delay(10_000, first=0.3, cap=1.0) == 1.0
    assert backoff_delay(10_000, first=0.5) > 1e17  # no cap: still a float


@given(attempt=st.integers(1, 200), first=st.floats(0.001, 10.0),
       jitter=st.floats(0.0, 1.0), seed=st.integers(0, 2**32))
def test_jitter_stays_within_its_band(attempt: int, first: float, jitter: float,
                                      seed: int) -> None:
    base = backoff_delay(attempt, first=first, cap=60.0)
    delay = backoff_delay(attempt, first=first, cap=60.0, jitter=jitter,
                          rng=random.Random(seed))
    assert base * (1 - jitter) * (1 - 1e-9) <= delay <= base * (1 + jitter) * (1 + 1e-9)


def test_the_ledger_formula_is_unchanged_for_a_seeded_rng() -> None:
    """The ledger's retries drew ``backoff × 2^(n-1) × uniform(0.8, 1.2)``; same draws now."""
    old, new = random.Random(7), random.Random(7)
    for attempt in range(1, 6):
        expected = 0.5 * 2 ** (attempt - 1) * old.uniform(0.8, 1.2)
        assert backoff_delay(attempt, first=0.5, jitter=0.2, rng=new) == expected


def test_full_jitter_matches_the_store_retry_distribution() -> None:
    """The job store waited ``uniform(0, min(0.05, 0.002 × 2^n))`` between CAS retries."""
    old, new = random.Random(3), random.Random(3)
    for attempt in (1, 2, 5, 9, 30):
        expected = old.uniform(0, min(0.05, 0.002 * 2 ** min(attempt, 10)))
        got = backoff_delay(attempt, first=0.002, cap=0.025, jitter=1.0, rng=new)
        assert got == pytest.approx(expected, rel=1e-12)


def test_jittered_spreads_an_interval_by_a_fifth() -> None:
    rng = random.Random(1)
    samples = [jittered(2.0, rng=rng) for _ in range(1000)]
    assert min(samples) >= 1.6
    assert max(samples) <= 2.4
    assert max(samples) - min(samples) > 0.6  # it does spread


@pytest.mark.parametrize(("attempt", "jitter"), [(0, 0.0), (1, -0.1), (1, 1.5)])
def test_nonsense_is_refused(attempt: int, jitter: float) -> None:
    with pytest.raises(ValueError, match="attempt|jitter"):
        backoff_delay(attempt, first=1.0, jitter=jitter)
