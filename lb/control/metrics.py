"""Prometheus metrics for the admin listener's ``/metrics``, built by the supervisor at scrape time.

Theory of operation
-------------------
Workers do no Prometheus work at all: they keep plain integer counters and send them in the
stats snapshot about once a second (``lb/worker.py``), and report failures as bus events. The
supervisor keeps three small things here:

* ``CounterTotals`` turns each worker's cumulative counters into **monotonic** totals. A
  worker that dies and is restarted starts again from zero; summing the workers' latest
  snapshots would then go *down*, which Prometheus reads as a reset of the whole series and
  turns into a spike in ``rate()``. Totals are kept per worker *generation* (index and restart
  count), so a new process starts a new series that is added to what the old one had counted.
* ``FailureCounts`` counts the workers' failure events (``connect``, ``timeout``, ``reset``)
  per backend, so that errors by kind cost the data path nothing beyond the event it already
  sends for passive health. 5xx answers come from the workers' response-class counters (a 5xx
  event is only sent when passive health looks at 5xx).
* ``LbCollector`` is a prometheus-client custom collector: on each scrape it builds metric
  families from those totals, the gauges of the live workers' latest snapshots, the
  authoritative pool state (``ClusterState``: health, admin state, weights) and the scaler's
  recent decisions (``ScalerFeed``). Nothing is kept per scrape. It reads all of these
  through the ``ControlPlane`` (``lb/control/plane.py``), never the supervisor itself.

Names follow the Prometheus conventions: ``lb_`` prefix, ``_total`` for counters, base units
(``_seconds``, ``_bytes``). The upstream latency histogram is the workers' per-bucket counts
(``lb.histogram.LATENCY_BOUNDS``) made cumulative, with ``le`` labels.

This module never runs in a worker and never touches a data-plane socket.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from aiohttp import web
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import CollectorRegistry

import lb
from lb.control.events import EventLog, EventView
from lb.control.plane import ControlPlane
from lb.control.server import ControlServer
from lb.control.tlsmetrics import families as tls_families
from lb.control.tlsmetrics import warn_expiring
from lb.histogram import LATENCY_BOUNDS, LATENCY_BUCKETS
from lb.model import AdminState, HealthState
from lb.wire import Failure, Stats, counter_items, counters_of

log = logging.getLogger("lb.metrics")

# Snapshot fields that are gauges (current values), not cumulative counters.
LISTENER_GAUGES = frozenset({"active"})
BACKEND_GAUGES = frozenset({"active", "connections"})
POOL_GAUGES = frozenset({"in_flight", "queued", "held"})
STATUS_CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx")
# Failure kinds workers report as events (lb/worker.py ``_report_failure``).
EVENT_KINDS = ("connect", "timeout", "reset")
ERROR_KINDS = (*EVENT_KINDS, "5xx")
DIRECTIONS = ("up", "down", "hold")

BackendKey = tuple[str, str]  # (pool, backend id)


# -- counting in the supervisor ------------------------------------------------------------------


class CounterTotals:
    """Monotonic totals of the workers' cumulative counters (see the module docstring).

    ``ingest(generation, snapshot)`` with ``generation`` = (worker index, restarts): a new
    generation starts from zero. Within one, a counter that went down (a backend removed and
    added again under the same id starts a new ``Backend`` object) counts its new value."""

    def __init__(self) -> None:
        self.listeners: dict[str, dict[str, int]] = {}
        self.backends: dict[BackendKey, dict[str, int]] = {}
        self.pools: dict[str, dict[str, int]] = {}  # queue and retry-budget counters
        self.latency: dict[BackendKey, list[int]] = {}
        self.queue_wait: dict[BackendKey, list[int]] = {}  # by (pool, "")
        self._last: dict[tuple[int, int], dict[tuple[str, ...], int]] = {}
        self._last_hist: dict[tuple[int, int], dict[BackendKey, list[int]]] = {}

    def ingest(self, generation: tuple[int, int], snapshot: Stats) -> None:
        index = generation[0]
        for old in [g for g in self._last if g[0] == index and g != generation]:
            del self._last[old]  # that process is gone: what it counted stays in the totals
            self._last_hist.pop(old, None)
        prev = self._last.get(generation, {})
        cur: dict[tuple[str, ...], int] = {}
        for name, lc in snapshot.listeners.items():
            acc = self.listeners.setdefault(name, {})
            for k, v in counter_items(lc):
                if k not in LISTENER_GAUGES:
                    _add(acc, k, ("l", name, k), v, prev, cur)
        for pool, backends in snapshot.pools.items():
            for bid, bc in backends.items():
                acc = self.backends.setdefault((pool, bid), {})
                for k, v in counter_items(bc):
                    if k not in BACKEND_GAUGES:
                        _add(acc, k, ("b", pool, bid, k), v, prev, cur)
        for pool, pc in snapshot.queues.items():
            acc = self.pools.setdefault(pool, {})
            for k, v in counter_items(pc):
                if k not in POOL_GAUGES:
                    _add(acc, k, ("p", pool, k), v, prev, cur)
        self._last[generation] = cur
        prev_h = self._last_hist.get(generation, {})
        cur_h: dict[BackendKey, list[int]] = {}
        for pool, hists in snapshot.latency.items():
            for bid, counts in hists.items():
                _add_histogram(self.latency, (pool, bid), counts, prev_h, cur_h)
        for pool, counts in snapshot.queue_wait.items():
            _add_histogram(self.queue_wait, (pool, ""), counts, prev_h, cur_h)
        self._last_hist[generation] = cur_h

    def forget(self, key: BackendKey) -> None:
        """A backend was removed: its series leave /metrics."""
        self.backends.pop(key, None)
        self.latency.pop(key, None)


def _add_histogram(
    totals: dict[BackendKey, list[int]],
    key: BackendKey,
    counts: Sequence[int],
    prev: Mapping[BackendKey, list[int]],
    cur: dict[BackendKey, list[int]],
) -> None:
    """Add what a cumulative histogram gained since the same process's last snapshot."""
    now_h = list(counts[:LATENCY_BUCKETS])
    before = prev.get(key)
    if before is None or sum(now_h) < sum(before):
        delta = now_h  # new, or a new Backend object under the same id
    else:
        delta = [max(0, a - b) for a, b in zip(now_h, before, strict=False)]
    hist = totals.setdefault(key, [0] * LATENCY_BUCKETS)
    for i, d in enumerate(delta):
        hist[i] += d
    cur[key] = now_h


def _add(
    acc: dict[str, int],
    name: str,
    key: tuple[str, ...],
    value: int,
    prev: Mapping[tuple[str, ...], int],
    cur: dict[tuple[str, ...], int],
) -> None:
    before = prev.get(key, 0)
    acc[name] = acc.get(name, 0) + (value - before if value >= before else value)
    cur[key] = value


class FailureCounts:
    """Failure events from the workers, counted per backend and kind."""

    def __init__(self) -> None:
        self.counts: dict[BackendKey, dict[str, int]] = {}

    def record(self, pool: str, backend_id: str, kind: str) -> None:
        kinds = self.counts.setdefault((pool, backend_id), {})
        kinds[kind] = kinds.get(kind, 0) + 1

    def get(self, key: BackendKey) -> Mapping[str, int]:
        return self.counts.get(key, {})

    def forget(self, key: BackendKey) -> None:
        self.counts.pop(key, None)


# -- the scaler's side ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ScalerPool:
    """What /metrics shows of the scaler for one pool.

    ``current``/``desired``: replicas in the scaler's latest decision (None before any);
    ``decisions``: decisions since lb started, by direction (``up``, ``down``, ``hold``)."""

    pool: str
    current: int | None = None
    desired: int | None = None
    decisions: Mapping[str, int] = field(default_factory=dict)


class ScalerFeed(Protocol):
    """Where the scaler's decisions come from (the store behind the scaler's events route)."""

    def scaler_pools(self) -> Sequence[ScalerPool]: ...


# A decision event's ``data.action`` (scaler/controller.py) -> the direction label.
_ACTION_DIRECTION = {"scale_up": "up", "scale_down": "down", "hold": "hold"}


def decision_direction(e: EventView) -> str:
    action = e.data.get("action")
    if isinstance(action, str) and action in _ACTION_DIRECTION:
        return _ACTION_DIRECTION[action]
    if e.current is not None and e.desired is not None:
        return "up" if e.desired > e.current else "down" if e.desired < e.current else "hold"
    return "hold"


class EventLogFeed:
    """``ScalerFeed`` over the control API's scaling-event log (``lb/control/events.py``).

    The scaler posts a ``decision`` event whenever it scales, and when a holding decision
    changes. The latest decision per pool gives current and desired replicas; decisions are
    counted as they are read, by ``seq``, at each scrape. The log keeps only its last
    ``events.KEEP`` events: more than that between two scrapes would go uncounted."""

    def __init__(self, log: Callable[[], EventLog]) -> None:
        self._log = log
        self._seen = 0
        self._latest: dict[str, tuple[int | None, int | None]] = {}
        self._counts: dict[str, dict[str, int]] = {}

    def scaler_pools(self) -> Sequence[ScalerPool]:
        log = self._log()
        if log.seq < self._seen:
            self._seen = 0  # a new log (cannot happen within one lb; keep counting anyway)
        for e in log.events:
            if e.seq <= self._seen:
                continue
            self._seen = e.seq
            if e.kind != "decision":
                continue
            counts = self._counts.setdefault(e.pool, dict.fromkeys(DIRECTIONS, 0))
            counts[decision_direction(e)] += 1
            self._latest[e.pool] = (e.current, e.desired)
        return [
            ScalerPool(pool, *self._latest.get(pool, (None, None)), decisions=counts)
            for pool, counts in self._counts.items()
        ]


# -- the collector -------------------------------------------------------------------------------


def _counter(name: str, doc: str, labels: Sequence[str]) -> CounterMetricFamily:
    return CounterMetricFamily(name, doc, labels=labels)


def _gauge(name: str, doc: str, labels: Sequence[str]) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, labels=labels)


def histogram_buckets(counts: Sequence[int]) -> list[tuple[str, float]]:
    """Per-bucket counts (bounds ``LATENCY_BOUNDS`` plus +Inf) as cumulative ``le`` buckets."""
    out: list[tuple[str, float]] = []
    running = 0
    for i, n in enumerate(counts[:LATENCY_BUCKETS]):
        running += n
        le = repr(float(LATENCY_BOUNDS[i])) if i < len(LATENCY_BOUNDS) else "+Inf"
        out.append((le, float(running)))
    return out


class LbCollector:
    """Builds every ``lb_*`` family from the control plane's state at scrape time."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        plane = self.metrics.plane
        yield from self._process(plane)
        yield from self._listeners(plane)
        yield from self._backends(plane)
        yield from self._queues(plane)
        yield from self._scaler()
        yield from self._tls(plane)
        yield from self._limits(plane)

    # -- lb itself ----------------------------------------------------------------------------

    def _process(self, plane: ControlPlane) -> Iterator[Metric]:
        yield InfoMetricFamily("lb_build", "lb's version", value={"version": lb.__version__})
        yield GaugeMetricFamily(
            "lb_start_time_seconds",
            "When the lb supervisor started, in seconds since the Unix epoch",
            value=self.metrics.started,
        )
        yield GaugeMetricFamily(
            "lb_workers",
            "Data-plane worker processes (1 with workers = 0)",
            value=len(plane.workers),
        )
        yield CounterMetricFamily(
            "lb_worker_restarts_total",
            "Worker processes that died and were restarted",
            value=plane.restarts(),
        )

    # -- listeners ----------------------------------------------------------------------------

    def _listeners(self, plane: ControlPlane) -> Iterator[Metric]:
        totals = self.metrics.totals.listeners
        active: dict[str, int] = {}
        for snap in plane.snapshots():
            for name, counters in snap.listeners.items():
                active[name] = active.get(name, 0) + counters.get("active", 0)
        lab = ["listener"]
        info = InfoMetricFamily(
            "lb_listener",
            "A configured listener: its address, mode, and default pool (none: routes only)",
            labels=lab,
        )
        accepted = _counter(
            "lb_listener_connections_accepted_total", "Client connections accepted", lab
        )
        act = _gauge("lb_listener_connections_active", "Client connections open now", lab)
        rejected = _counter(
            "lb_listener_connections_rejected_total",
            "Client connections refused at max_connections",
            lab,
        )
        no_backend = _counter(
            "lb_listener_no_backend_total",
            "tcp: client connections closed because no backend could be reached",
            lab,
        )
        requests = _counter("lb_listener_requests_total", "http: requests received", lab)
        responses = _counter(
            "lb_listener_responses_total",
            "http: responses sent to clients, by status class (lb's own answers included)",
            [*lab, "code"],
        )
        retries = _counter(
            "lb_listener_retries_total",
            "http: requests retried on another backend (they never reached the first)",
            lab,
        )
        rx = _counter(
            "lb_listener_received_bytes_total",
            "Bytes received from clients (tcp: added when a connection ends; http: request "
            "heads and bodies)",
            lab,
        )
        tx = _counter(
            "lb_listener_sent_bytes_total",
            "Bytes sent to clients (tcp: added when a connection ends; http: responses as the "
            "backend sent them, and lb's own answers)",
            lab,
        )
        for lc in plane.config.listeners:
            name = lc.name
            c = totals.get(name, {})
            info.add_metric([name], {"bind": lc.bind, "mode": lc.mode, "pool": lc.pool or ""})
            accepted.add_metric([name], c.get("accepted", 0))
            act.add_metric([name], active.get(name, 0))
            rejected.add_metric([name], c.get("rejected", 0))
            rx.add_metric([name], c.get("bytes_in", 0))
            tx.add_metric([name], c.get("bytes_out", 0))
            if lc.mode == "http":
                requests.add_metric([name], c.get("requests", 0))
                retries.add_metric([name], c.get("retries", 0))
                for cls in STATUS_CLASSES:
                    responses.add_metric([name, cls], c.get(f"responses_{cls}", 0))
            else:
                no_backend.add_metric([name], c.get("no_backend", 0))
        yield from (info, accepted, act, rejected, no_backend)
        yield from (requests, responses, retries, rx, tx)

    # -- TLS and PROXY protocol (lb/control/tlsmetrics.py) -------------------------------------

    def _tls(self, plane: ControlPlane) -> Iterator[Metric]:
        if any(lc.tls is not None or lc.proxy_protocol for lc in plane.config.listeners):
            yield from tls_families(plane.config, self.metrics.totals.listeners)

    # -- pools and backends -------------------------------------------------------------------

    def _backends(self, plane: ControlPlane) -> Iterator[Metric]:
        m = self.metrics
        now = plane.now()
        gauges: dict[BackendKey, dict[str, int]] = {}
        for snap in plane.snapshots():
            for pool, per_backend in snap.pools.items():
                for bid, counters in per_backend.items():
                    g = gauges.setdefault((pool, bid), {"active": 0, "connections": 0})
                    a = counters.get("active", 0)
                    g["active"] += a
                    g["connections"] += counters.get("connections", a)
        pl = ["pool"]
        bl = ["pool", "backend"]
        n_backends = _gauge("lb_pool_backends", "Backends in the pool (any state)", pl)
        n_eligible = _gauge(
            "lb_pool_backends_eligible",
            "Backends that may take new traffic: ready, up, not ejected, weight above 0",
            pl,
        )
        info = InfoMetricFamily(
            "lb_backend", "A backend: its address, and whether it was added at runtime", labels=bl
        )
        requests = _counter(
            "lb_backend_requests_total",
            "Requests (http) or connections (tcp) sent to the backend",
            bl,
        )
        in_flight = _gauge(
            "lb_backend_in_flight",
            "Requests in flight (http) or connections open (tcp) to the backend, all workers",
            bl,
        )
        conns = _gauge(
            "lb_backend_connections",
            "Open connections to the backend, pooled idle keep-alive ones included",
            bl,
        )
        responses = _counter(
            "lb_backend_responses_total",
            "http: responses from the backend by status class",
            [*bl, "code"],
        )
        errors = _counter(
            "lb_backend_errors_total",
            "Failed requests or connections by kind: connect (refused or timed out), timeout "
            "(no response in time), reset (closed before a response), 5xx (http answers)",
            [*bl, "kind"],
        )
        retries = _counter(
            "lb_backend_retries_total",
            "Requests (http) or connections (tcp) that failed on this backend before reaching "
            "it and were retried on another",
            bl,
        )
        sent = _counter("lb_backend_sent_bytes_total", "tcp: bytes relayed to the backend", bl)
        received = _counter(
            "lb_backend_received_bytes_total", "tcp: bytes relayed from the backend", bl
        )
        health = _gauge(
            "lb_backend_health_state",
            "Health state (checking, up, down): 1 for the current state, 0 for the others",
            [*bl, "state"],
        )
        up = _gauge("lb_backend_up", "1 when the backend's health state is up", bl)
        admin = _gauge(
            "lb_backend_admin_state",
            "Admin state (ready, drain, maint): 1 for the current state, 0 for the others",
            [*bl, "state"],
        )
        eligible = _gauge("lb_backend_eligible", "1 when the backend may take new traffic", bl)
        ejected = _gauge("lb_backend_ejected", "1 while passive health has ejected the backend", bl)
        weight = _gauge("lb_backend_weight", "Configured weight", bl)
        eff = _gauge(
            "lb_backend_effective_weight",
            "Weight the strategies use now (below weight during slow start)",
            bl,
        )
        latency = HistogramMetricFamily(
            "lb_backend_upstream_latency_seconds",
            "http: time from sending a request to the backend to the end of its response",
            labels=bl,
        )
        for pool, backends in plane.state.pools.items():
            eligible_count = 0
            for b in backends.values():
                key = (pool, b.id)
                labels = [pool, b.id]
                c = m.totals.backends.get(key, {})
                g = gauges.get(key, {})
                fails = m.failures.get(key)
                info.add_metric(
                    labels, {"address": b.address, "dynamic": "true" if b.dynamic else "false"}
                )
                requests.add_metric(labels, c.get("total", 0))
                in_flight.add_metric(labels, g.get("active", 0))
                conns.add_metric(labels, g.get("connections", 0))
                for cls in STATUS_CLASSES:
                    responses.add_metric([*labels, cls], c.get(f"responses_{cls}", 0))
                for kind in EVENT_KINDS:
                    errors.add_metric([*labels, kind], fails.get(kind, 0))
                errors.add_metric([*labels, "5xx"], c.get("responses_5xx", c.get("errors", 0)))
                retries.add_metric(labels, c.get("retries", 0))
                sent.add_metric(labels, c.get("bytes_in", 0))
                received.add_metric(labels, c.get("bytes_out", 0))
                for state in HealthState:
                    health.add_metric([*labels, state.value], int(b.health is state))
                up.add_metric(labels, int(b.health is HealthState.UP))
                for admin_state in AdminState:
                    admin.add_metric([*labels, admin_state.value], int(b.admin is admin_state))
                is_ejected = b.ejected(now)
                is_eligible = b.eligible(now)
                eligible_count += is_eligible
                eligible.add_metric(labels, int(is_eligible))
                ejected.add_metric(labels, int(is_ejected))
                weight.add_metric(labels, b.weight)
                eff.add_metric(labels, b.effective_weight)
                hist = m.totals.latency.get(key)
                if hist is not None:
                    latency.add_metric(
                        labels, histogram_buckets(hist), c.get("latency_us", 0) / 1e6
                    )
            n_backends.add_metric([pool], len(backends))
            n_eligible.add_metric([pool], eligible_count)
        yield from (n_backends, n_eligible, info, requests, in_flight, conns, responses, errors)
        yield from (retries, sent, received, health, up, admin, eligible, ejected, weight, eff)
        yield latency

    # -- the pools' queues (lb/proxy/pool.py) --------------------------------------------------

    def _queues(self, plane: ControlPlane) -> Iterator[Metric]:
        m = self.metrics
        pl = ["pool"]
        now: dict[str, dict[str, int]] = {}
        for snap in plane.snapshots():
            for pool, pc in snap.queues.items():
                g = now.setdefault(pool, {})
                for k in POOL_GAUGES:
                    g[k] = g.get(k, 0) + counters_of(pc).get(k, 0)
        in_flight = _gauge(
            "lb_pool_in_flight",
            "Requests (http) or connections (tcp) holding a backend of the pool, all workers",
            pl,
        )
        depth = _gauge(
            "lb_pool_queue_depth",
            "Requests or connections waiting in the pool's queue now (queued + held)",
            pl,
        )
        held = _gauge(
            "lb_pool_held", "Of those, held because no backend of the pool is eligible", pl
        )
        demand = _gauge(
            "lb_pool_demand", "In flight + queued + held: what a scaler should serve", pl
        )
        rejected = _counter(
            "lb_pool_queue_rejected_total",
            "Refused (503, or a tcp close) by the queue: full (max_queue), timeout "
            "(queue_timeout), hold_timeout (held with no eligible backend)",
            [*pl, "reason"],
        )
        served = _counter(
            "lb_pool_queue_served_total", "Requests or connections served after waiting", pl
        )
        budget = _counter(
            "lb_pool_retry_budget_exhausted_total",
            "Retries refused because the pool's retry budget was spent",
            pl,
        )
        wait = HistogramMetricFamily(
            "lb_pool_queue_wait_seconds",
            "Time spent waiting in the pool's queue, by those that got a backend",
            labels=pl,
        )
        max_conn = _gauge(
            "lb_backend_max_conn",
            "The backend's limit of concurrent requests (http) or connections (tcp) for all "
            "workers; 0: none",
            ["pool", "backend"],
        )
        for pool, backends in plane.state.pools.items():
            g = now.get(pool, {})
            c = m.totals.pools.get(pool, {})
            in_flight.add_metric([pool], g.get("in_flight", 0))
            depth.add_metric([pool], g.get("queued", 0) + g.get("held", 0))
            held.add_metric([pool], g.get("held", 0))
            demand.add_metric([pool], sum(g.values()))
            rejected.add_metric([pool, "full"], c.get("queue_full", 0))
            rejected.add_metric([pool, "timeout"], c.get("queue_timeouts", 0))
            rejected.add_metric([pool, "hold_timeout"], c.get("hold_timeouts", 0))
            served.add_metric([pool], c.get("waited", 0))
            budget.add_metric([pool], c.get("retry_budget_exhausted", 0))
            hist = m.totals.queue_wait.get((pool, ""), [0] * LATENCY_BUCKETS)
            wait.add_metric([pool], histogram_buckets(hist), c.get("wait_us", 0) / 1e6)
            for b in backends.values():
                max_conn.add_metric([pool, b.id], plane.state.max_conn_of(b))
        yield from (in_flight, depth, held, demand, rejected, served, budget, wait, max_conn)

    # -- the scaler ---------------------------------------------------------------------------

    def _scaler(self) -> Iterator[Metric]:
        feed = self.metrics.scaler
        pools = list(feed.scaler_pools()) if feed is not None else []
        current = _gauge(
            "lb_scaler_replicas", "Replicas in the scaler's latest decision for the pool", ["pool"]
        )
        desired = _gauge(
            "lb_scaler_desired_replicas",
            "Replicas the scaler's latest decision asked for",
            ["pool"],
        )
        decisions = _counter(
            "lb_scaler_decisions_total",
            "Scaler decisions reported to lb since it started, by direction (up, down, hold)",
            ["pool", "direction"],
        )
        for p in pools:
            if p.current is not None:
                current.add_metric([p.pool], p.current)
            if p.desired is not None:
                desired.add_metric([p.pool], p.desired)
            for direction in DIRECTIONS:
                decisions.add_metric([p.pool, direction], p.decisions.get(direction, 0))
        yield from (current, desired, decisions)

    # -- what the alert rules compare with (deploy/prometheus/lb-rules.yml) ------------------

    def _limits(self, plane: ControlPlane) -> Iterator[Metric]:
        """Live workers against ``lb_workers`` (the configured slots), and each scaled pool's
        bounds from ``[[scalers]]``, so that an alert can say "below configured" and "at max"."""
        yield GaugeMetricFamily(
            "lb_workers_live",
            "Data-plane worker processes running now (below lb_workers while one restarts)",
            value=sum(1 for w in plane.workers if w.alive()),
        )
        lo = _gauge("lb_scaler_min_replicas", "[[scalers]] min of the pool", ["pool"])
        hi = _gauge("lb_scaler_max_replicas", "[[scalers]] max of the pool", ["pool"])
        for entry in plane.config.scalers:
            pool = entry.get("pool")
            if not isinstance(pool, str):
                continue
            for family, key in ((lo, "min"), (hi, "max")):
                value = entry.get(key, 1 if key == "min" else None)
                if isinstance(value, int) and not isinstance(value, bool):
                    family.add_metric([pool], value)
        yield from (lo, hi)


# -- the supervisor's side -----------------------------------------------------------------------


class Metrics:
    """The control plane's metrics: counting hooks, the registry, and the ``/metrics`` handler.

    ``ControlService`` calls ``ingest`` with every worker stats snapshot, ``failure`` with
    every failure event, ``forget`` when a backend is removed, and ``install`` before the
    admin listener starts. ``events``: the scaling-event log the scaler posts to."""

    def __init__(self, plane: ControlPlane, events: EventLog | None = None) -> None:
        self.plane = plane
        self.started = time.time()
        self.totals = CounterTotals()
        self.failures = FailureCounts()
        # The scaler's decisions, as posted to the control API.
        self.scaler: ScalerFeed | None = (
            EventLogFeed(lambda: events) if events is not None else None
        )
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(LbCollector(self))
        # Certificates close to expiry: a warning at start and at every reload.
        plane.on_config.append(warn_expiring)
        warn_expiring(plane.config)

    # -- hooks ----------------------------------------------------------------------------------

    def ingest(self, worker: int, restarts: int, snapshot: Stats) -> None:
        self.totals.ingest((worker, restarts), snapshot)

    def failure(self, event: Failure) -> None:
        pool, bid, kind = event.pool, event.id, event.kind
        if kind in EVENT_KINDS and bid in self.plane.state.pools.get(pool, {}):
            self.failures.record(pool, bid, kind)

    def forget(self, pool: str, backend_id: str) -> None:
        self.totals.forget((pool, backend_id))
        self.failures.forget((pool, backend_id))

    # -- HTTP -----------------------------------------------------------------------------------

    def exposition(self, accept: str = "") -> tuple[bytes, str]:
        """The body and content type for a scrape (OpenMetrics when the scraper asks for it)."""
        encoder, content_type = choose_encoder(accept)
        return encoder(self.registry), content_type

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body, content_type = self.exposition(request.headers.get("Accept", ""))
        return web.Response(body=body, headers={"Content-Type": content_type})

    def install(self, server: ControlServer) -> None:
        server.add_admin_route("GET", "/metrics", self.handle)
