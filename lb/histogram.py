"""Counter shapes shared by the data plane (which counts) and the control plane (which sums).

Latency is a histogram with fixed bucket bounds, so workers' histograms add up exactly and
percentiles over a window come from the difference of two cumulative snapshots. Pure: no I/O.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence

# Upper bounds in seconds (Prometheus-style); the last bucket is +Inf.
LATENCY_BOUNDS: tuple[float, ...] = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
LATENCY_BUCKETS = len(LATENCY_BOUNDS) + 1


def latency_bucket(seconds: float) -> int:
    return bisect_left(LATENCY_BOUNDS, seconds)


def percentile(counts: Sequence[int], q: float) -> float | None:
    """The q-quantile (0..1) of a histogram, interpolated linearly inside its bucket.

    Returns seconds, or None for an empty histogram. Values in the +Inf bucket report the last
    finite bound (the histogram cannot know more).
    """
    total = sum(counts)
    if total == 0:
        return None
    rank = q * total
    seen = 0
    for i, n in enumerate(counts):
        if n and seen + n >= rank:
            if i >= len(LATENCY_BOUNDS):
                return LATENCY_BOUNDS[-1]
            lo = LATENCY_BOUNDS[i - 1] if i else 0.0
            hi = LATENCY_BOUNDS[i]
            return lo + (hi - lo) * max(0.0, rank - seen) / n
        seen += n
    return LATENCY_BOUNDS[-1]
