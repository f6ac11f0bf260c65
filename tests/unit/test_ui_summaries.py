"""The web page's cache of finished jobs' summaries: bounded, and keyed by update time."""

from __future__ import annotations

from alluxiojob.coordinator.ui import FinalSummaries


def test_a_summary_is_valid_only_for_the_update_it_was_made_from() -> None:
    cache = FinalSummaries(limit=10)
    cache.put("job", 1.0, {"n": 1})
    assert cache.get("job", 1.0) == {"n": 1}
    assert cache.get("job", 2.0) is None, "a rerun job changed: read it afresh"
    assert cache.get("other", 1.0) is None


def test_the_oldest_summaries_go_first() -> None:
    cache = FinalSummaries(limit=3)
    for i in range(5):
        cache.put(f"job{i}", 1.0, {"n": i})
    assert [cache.get(f"job{i}", 1.0) for i in range(5)] == [
        None, None, {"n": 2}, {"n": 3}, {"n": 4}]
    cache.put("job2", 1.0, {"n": 2})  # refreshed: now the newest
    cache.put("job5", 1.0, {"n": 5})
    assert cache.get("job3", 1.0) is None
    assert cache.get("job2", 1.0) == {"n": 2}
