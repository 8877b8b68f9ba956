"""Stats aggregation: counter deltas across worker restarts, windows, merged histograms."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lb.control.aggregate import N_BUCKETS, StatsAggregator, merge_histograms, percentile
from lb.histogram import LATENCY_BOUNDS, latency_bucket
from lb.wire import Stats


class Histogram:
    """What an L7 worker keeps per backend (``Backend.latency``)."""

    def __init__(self) -> None:
        self.counts = [0] * N_BUCKETS

    def observe(self, seconds: float) -> None:
        self.counts[latency_bucket(seconds)] += 1

    def snapshot(self) -> list[int]:
        return list(self.counts)


def snap(total: int, errors: int = 0, cf: int = 0, hist: list[int] | None = None) -> Stats:
    counters: Any = {"active": 1, "total": total, "errors": errors, "connect_failures": cf}
    latency = {"web": {"b": tuple(hist)}} if hist is not None else {}
    return Stats(worker=1, pools={"web": {"b": counters}}, latency=latency)


def test_rate_over_window_sums_workers() -> None:
    agg = StatsAggregator()
    for t in range(11):
        agg.ingest(1, snap(100 * t), float(t))
        agg.ingest(2, snap(50 * t), float(t) + 0.01)
    span, stats = agg.window(5.0)
    assert span == pytest.approx(5.0, abs=0.05)
    assert stats[("web", "b")].rate == pytest.approx(150, rel=0.02)


def test_worker_restart_does_not_go_negative() -> None:
    agg = StatsAggregator()
    agg.ingest(1, snap(1000), 0.0)
    agg.ingest(1, snap(1100), 1.0)
    agg.ingest(1, snap(30), 2.0)  # restarted: counts from zero again
    _, stats = agg.window(10)
    assert stats[("web", "b")].total == 130  # 100 before the restart, 30 after


def test_error_rate_counts_connect_failures_as_attempts() -> None:
    agg = StatsAggregator()
    agg.ingest(1, snap(0), 0.0)
    agg.ingest(1, snap(90, errors=5, cf=10), 1.0)
    _, stats = agg.window(10)
    s = stats[("web", "b")]
    assert (s.errors, s.attempts) == (15, 100)
    assert s.error_rate == pytest.approx(0.15)


def test_latency_percentiles_over_the_window_only() -> None:
    h = Histogram()
    agg = StatsAggregator()
    for _ in range(1000):
        h.observe(0.5)  # old and slow: before the window
    agg.ingest(1, snap(1000, hist=h.snapshot()), 0.0)
    for t in range(1, 11):
        for _ in range(100):
            h.observe(0.002)
        agg.ingest(1, snap(1000 + 100 * t, hist=h.snapshot()), float(t))
    _, stats = agg.window(5)
    lat = stats[("web", "b")].latency
    assert lat is not None and sum(lat) == 500
    p99 = percentile(lat, 0.99)
    assert p99 is not None and 0.001 < p99 <= 0.0025  # the 1-2.5 ms bucket, not 0.5 s


latencies = st.floats(min_value=1e-5, max_value=9.0)


@given(st.lists(latencies, min_size=1, max_size=300))
def test_percentile_lies_in_the_true_values_bucket(samples: list[float]) -> None:
    h = Histogram()
    for s in samples:
        h.observe(s)
    ordered = sorted(samples)
    for q in (0.5, 0.95, 0.99):
        est = percentile(h.counts, q)
        true = ordered[max(0, math.ceil(q * len(ordered)) - 1)]
        i = latency_bucket(true)
        lo = LATENCY_BOUNDS[i - 1] if i else 0.0
        assert est is not None and lo - 1e-12 <= est <= LATENCY_BOUNDS[i] + 1e-12, (q, est, true)


def test_merge_histograms() -> None:
    a = tuple([1] * N_BUCKETS)
    assert merge_histograms([None, None]) is None
    merged = merge_histograms([a, None, a])
    assert merged is not None and sum(merged) == 2 * N_BUCKETS
    assert percentile([0] * N_BUCKETS, 0.5) is None


def test_forget_drops_a_removed_backend() -> None:
    agg = StatsAggregator()
    agg.ingest(1, snap(5), 0.0)
    agg.forget(("web", "b"))
    assert agg.window(10)[1] == {}
