"""Stats for the scaler: sums of worker counters and merged latency histograms over a window.

Theory of operation
-------------------
Every worker sends a counter snapshot about once a second (``lb/worker.py``). Counters in it
are cumulative since the worker started, so a worker that restarts starts again from zero.
``StatsAggregator.ingest`` turns each snapshot into per-worker deltas (a counter that went
down means the worker restarted: its new value is the delta) and adds them to monotonic
totals per backend, per worker. About once a second it records a sample of those totals; a
window query subtracts the sample at the start of the window from the newest totals, worker
by worker, and adds the results up: rates, error rates and latency percentiles over the
window, without keeping per-request data.

The worker snapshot is ``lb.wire.Stats`` (its fields and their meaning are documented there):
this module reads ``total``, ``errors``, ``connect_failures``, ``bytes_in`` and ``bytes_out``
of every backend, and the ``latency`` histograms.

This module is pure: no I/O, no asyncio.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

from lb.histogram import LATENCY_BUCKETS as N_BUCKETS
from lb.histogram import percentile
from lb.wire import Stats, counters_of

__all__ = ["N_BUCKETS", "StatsAggregator", "WindowStats", "merge_histograms", "percentile"]

COUNTERS = ("total", "errors", "connect_failures", "bytes_in", "bytes_out")
WINDOW_MAX = 60.0
SAMPLE_EVERY = 1.0

Key = tuple[str, str]  # (pool, backend id)
QUEUE = ""  # the backend id under which a pool's queue-wait histogram is kept: (pool, QUEUE)


@dataclass(frozen=True)
class WindowStats:
    total: int  # delta over the window
    rate: float  # per second
    errors: int  # errors + connect failures over the window
    attempts: int  # total + connect failures over the window
    error_rate: float  # errors / attempts over the window (0 when there was no attempt)
    latency: tuple[int, ...] | None  # histogram delta over the window


def _add_into(acc: list[int], values: Iterable[int]) -> None:
    for i, v in enumerate(values):
        if i < len(acc):
            acc[i] += v


_Sample = tuple[float, dict[Key, tuple[int, int, int]], dict[Key, tuple[int, ...]]]


class _Series:
    """One worker's monotonic totals and their samples over time. Rates are computed per
    worker (its snapshots are mutually consistent) and then added up: mixing snapshots of
    different workers taken at different moments would skew a rate by up to one interval."""

    __slots__ = ("frozen", "hist", "last_counters", "last_hist", "samples", "totals", "updated")

    def __init__(self) -> None:
        self.last_counters: dict[Key, dict[str, int]] = {}
        self.last_hist: dict[Key, list[int]] = {}
        self.totals: dict[Key, list[int]] = {}  # COUNTERS order, monotonic
        self.hist: dict[Key, list[int]] = {}  # monotonic
        self.frozen: dict[Key, tuple[int, ...]] = {}  # hist as last sampled (shared)
        self.samples: deque[_Sample] = deque()
        self.updated = 0.0

    def ingest(self, snapshot: Stats, now: float) -> None:
        seen: dict[Key, dict[str, int]] = {}
        for pool, backends in snapshot.pools.items():
            for bid, bc in backends.items():
                key = (pool, bid)
                prev = self.last_counters.get(key, {})
                acc = self.totals.setdefault(key, [0] * len(COUNTERS))
                cur: dict[str, int] = {}
                flat = counters_of(bc)
                for i, name in enumerate(COUNTERS):
                    v = flat.get(name, 0)
                    p = prev.get(name, 0)
                    acc[i] += v - p if v >= p else v  # went down: the worker restarted
                    cur[name] = v
                seen[key] = cur
        self.last_counters = seen
        seen_h: dict[Key, list[int]] = {}
        latest = [
            ((pool, bid), counts)
            for pool, per_backend in snapshot.latency.items()
            for bid, counts in per_backend.items()
        ]
        latest += [((pool, QUEUE), counts) for pool, counts in snapshot.queue_wait.items()]
        for key, counts in latest:
            cur_h = list(counts[:N_BUCKETS])
            prev_h = self.last_hist.get(key)
            if prev_h is None or sum(cur_h) < sum(prev_h):
                delta = cur_h
            else:
                delta = [max(0, c - p) for c, p in zip(cur_h, prev_h, strict=False)]
            _add_into(self.hist.setdefault(key, [0] * N_BUCKETS), delta)
            self.frozen.pop(key, None)
            seen_h[key] = cur_h
        self.last_hist = seen_h
        self.updated = now
        if not self.samples or now - self.samples[-1][0] >= SAMPLE_EVERY / 2:
            counters = {k: (v[0], v[1], v[2]) for k, v in self.totals.items()}
            hists: dict[Key, tuple[int, ...]] = {}
            for k, h in self.hist.items():
                frozen = self.frozen.get(k)
                if frozen is None:
                    frozen = self.frozen[k] = tuple(h)
                hists[k] = frozen  # unchanged histograms share one tuple between samples
            self.samples.append((now, counters, hists))
            while now - self.samples[0][0] > WINDOW_MAX + SAMPLE_EVERY:
                self.samples.popleft()

    def base(self, seconds: float) -> _Sample:
        start = self.updated - min(seconds, WINDOW_MAX)
        base = self.samples[0]
        for sample in self.samples:
            if sample[0] > start:
                break
            base = sample
        return base

    def forget(self, key: Key) -> None:
        for d in (self.last_counters, self.last_hist, self.totals, self.hist, self.frozen):
            d.pop(key, None)


class StatsAggregator:
    def __init__(self) -> None:
        self._workers: dict[int, _Series] = {}

    def ingest(self, worker: int, snapshot: Stats, now: float) -> None:
        self._workers.setdefault(worker, _Series()).ingest(snapshot, now)

    def forget(self, key: Key) -> None:
        for series in self._workers.values():
            series.forget(key)

    def window(self, seconds: float) -> tuple[float, dict[Key, WindowStats]]:
        """Stats over about the last ``seconds`` (at most ``WINDOW_MAX``), ending at each
        worker's newest snapshot. Returns (seconds covered, stats per backend)."""
        span = 0.0
        counts: dict[Key, list[float]] = {}  # total, errors, attempts, rate
        hists: dict[Key, list[int]] = {}
        for series in self._workers.values():
            if not series.samples:
                continue
            t0, c0, h0 = series.base(seconds)
            dt = series.updated - t0
            span = max(span, dt)
            for key, acc in series.totals.items():
                total0, err0, cf0 = c0.get(key, (0, 0, 0))
                total = max(0, acc[0] - total0)
                failed = max(0, acc[1] - err0) + max(0, acc[2] - cf0)
                cfails = max(0, acc[2] - cf0)
                row = counts.setdefault(key, [0.0, 0.0, 0.0, 0.0])
                row[0] += total
                row[1] += failed
                row[2] += total + cfails
                row[3] += total / dt if dt > 0 else 0.0
            for key, hist in series.hist.items():
                before = h0.get(key)
                delta = (
                    hist
                    if before is None
                    else [max(0, a - b) for a, b in zip(hist, before, strict=False)]
                )
                _add_into(hists.setdefault(key, [0] * N_BUCKETS), delta)
        out: dict[Key, WindowStats] = {}
        for key in hists.keys() - counts.keys():  # a queue's waits: a histogram only
            counts[key] = [0.0, 0.0, 0.0, 0.0]
        for key, (n_total, n_failed, n_tried, rate) in counts.items():
            h = hists.get(key)
            out[key] = WindowStats(
                total=int(n_total),
                rate=rate,
                errors=int(n_failed),
                attempts=int(n_tried),
                error_rate=n_failed / n_tried if n_tried else 0.0,
                latency=tuple(h) if h is not None else None,
            )
        return span, out


def merge_histograms(hists: Iterable[tuple[int, ...] | None]) -> tuple[int, ...] | None:
    acc: list[int] | None = None
    for h in hists:
        if h is None:
            continue
        if acc is None:
            acc = [0] * N_BUCKETS
        _add_into(acc, h)
    return None if acc is None else tuple(acc)
