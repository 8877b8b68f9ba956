"""/metrics without sockets: monotonic totals across worker restarts, failures by kind, the
exposition parsed back with prometheus-client's own parsers (and promtool when installed),
the scaler feed, and the dashboard's assets."""

from __future__ import annotations

import itertools
import re
import shutil
import subprocess
from types import SimpleNamespace
from typing import Any

import pytest
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families

import lb
from lb.config import Config
from lb.control.events import EventLog, NewEvent
from lb.control.metrics import (
    CounterTotals,
    EventLogFeed,
    Metrics,
    ScalerPool,
    histogram_buckets,
)
from lb.control.plane import ControlPlane
from lb.histogram import LATENCY_BOUNDS, LATENCY_BUCKETS
from lb.model import AdminState, HealthState
from lb.state import ClusterState
from lb.web import ASSETS, load_assets
from lb.wire import Failure, Stats

# -- monotonic totals ----------------------------------------------------------------------------


def snapshot(
    total: int, *, active: int = 0, accepted: int = 0, hist: list[int] | None = None
) -> Stats:
    # Partial counters on purpose: the totals keep what was sent.
    listeners: Any = {"web": {"accepted": accepted, "active": active, "requests": accepted}}
    pools: Any = {"p": {"b1": {"active": active, "connections": active, "total": total}}}
    latency = {"p": {"b1": tuple(hist)}} if hist is not None else {}
    return Stats(worker=1, listeners=listeners, pools=pools, latency=latency)


def test_totals_add_deltas_and_skip_gauges() -> None:
    t = CounterTotals()
    t.ingest((1, 0), snapshot(10, active=3, accepted=4))
    t.ingest((1, 0), snapshot(25, active=7, accepted=9))
    t.ingest((2, 0), snapshot(5, accepted=1))
    assert t.backends[("p", "b1")] == {"total": 30}
    assert t.listeners["web"] == {"accepted": 10, "requests": 10}


def test_a_restarted_worker_starts_a_new_series_and_nothing_goes_down() -> None:
    t = CounterTotals()
    t.ingest((1, 0), snapshot(100))
    # The worker died after counting 100 and its successor already counted 150: summing
    # latest snapshots would say 150 (or go down to 3 first); the totals say 250.
    t.ingest((1, 1), snapshot(150))
    assert t.backends[("p", "b1")]["total"] == 250
    t.ingest((1, 1), snapshot(160))
    assert t.backends[("p", "b1")]["total"] == 260


def test_a_counter_that_goes_down_within_a_worker_counts_its_new_value() -> None:
    # A backend removed and added again under the same id is a new object: it counts from 0.
    t = CounterTotals()
    t.ingest((1, 0), snapshot(50))
    t.ingest((1, 0), snapshot(4))
    assert t.backends[("p", "b1")]["total"] == 54


def test_latency_histograms_accumulate_per_bucket() -> None:
    t = CounterTotals()
    h1 = [0] * LATENCY_BUCKETS
    h1[2] = 5
    t.ingest((1, 0), snapshot(5, hist=h1))
    h2 = list(h1)
    h2[3] = 2
    t.ingest((1, 0), snapshot(7, hist=h2))
    t.ingest((1, 1), snapshot(1, hist=[1] + [0] * (LATENCY_BUCKETS - 1)))
    hist = t.latency[("p", "b1")]
    assert hist[0] == 1 and hist[2] == 5 and hist[3] == 2 and sum(hist) == 8


def test_forget_drops_a_removed_backend() -> None:
    t = CounterTotals()
    t.ingest((1, 0), snapshot(5, hist=[1] * LATENCY_BUCKETS))
    t.forget(("p", "b1"))
    assert ("p", "b1") not in t.backends and ("p", "b1") not in t.latency


def test_histogram_buckets_are_cumulative_with_inf_last() -> None:
    counts = [1] * LATENCY_BUCKETS
    buckets = histogram_buckets(counts)
    assert [le for le, _ in buckets] == [repr(b) for b in LATENCY_BOUNDS] + ["+Inf"]
    assert [v for _, v in buckets] == [float(i + 1) for i in range(LATENCY_BUCKETS)]


# -- the exposition ------------------------------------------------------------------------------


def make_config() -> Config:
    return Config.model_validate(
        {
            "listeners": [
                {"name": "web", "bind": "127.0.0.1:18080", "mode": "http", "pool": "p"},
                {"name": "raw", "bind": "127.0.0.1:18081", "mode": "tcp", "pool": "p"},
            ],
            "pools": {
                "p": {
                    "health": {"interval": "1s"},
                    "backends": [{"address": "127.0.0.1:9001"}, {"address": "127.0.0.1:9002"}],
                }
            },
        }
    )


class FakeWorker:
    """A ``WorkerLink``: what the control plane knows of a worker."""

    def __init__(self, index: int, restarts: int) -> None:
        self.index, self.restarts = index, restarts
        self.stats: Stats | None = None

    def send(self, frame: bytes) -> None:
        pass

    def latest_stats(self) -> Stats | None:
        return self.stats

    def alive(self) -> bool:
        return True


def make_plane() -> tuple[ControlPlane, list[FakeWorker]]:
    """The control plane ``Metrics`` reads, with two workers and a clock stopped at 100."""
    plane = ControlPlane(make_config(), "/etc/lb/config.toml", SimpleNamespace(time=lambda: 100.0))  # type: ignore[arg-type]
    workers = [FakeWorker(1, 2), FakeWorker(2, 0)]
    plane.workers = workers
    return plane, workers


def worker_snapshot(n: int, active: int) -> Stats:
    hist = [0] * LATENCY_BUCKETS
    hist[1], hist[4], hist[-1] = n - 3, 2, 1
    backend: Any = {
        "active": active,
        "connections": active + 1,
        "total": n,
        "connect_failures": 0,
        "errors": 1,
        "retries": 2,
        "bytes_in": 10 * n,
        "bytes_out": 20 * n,
        "responses_2xx": n - 1,
        "responses_5xx": 1,
        "latency_us": 1500 * n,
    }
    listener: Any = {
        "accepted": n,
        "active": active,
        "rejected": 0,
        "requests": n,
        "retries": 2,
        "bytes_in": 100 * n,
        "bytes_out": 200 * n,
        "responses_2xx": n - 1,
        "responses_5xx": 1,
    }
    raw: Any = {"accepted": 3, "active": 1, "bytes_in": 7}
    return Stats(
        worker=1,
        listeners={"web": listener, "raw": raw},
        pools={"p": {"127.0.0.1:9001": backend}},
        latency={"p": {"127.0.0.1:9001": tuple(hist)}},
    )


@pytest.fixture
def metrics() -> Metrics:
    plane, workers = make_plane()
    m = Metrics(plane)
    for w in (1, 2):
        snap = worker_snapshot(10, active=w)
        m.ingest(w, 0, snap)
        workers[w - 1].stats = snap
    m.failure(Failure(1, "p", "127.0.0.1:9001", "connect"))
    m.failure(Failure(1, "p", "127.0.0.1:9001", "timeout"))
    m.failure(Failure(1, "p", "127.0.0.1:9001", "reset"))
    m.failure(Failure(1, "p", "gone", "reset"))  # not a backend: ignored
    m.failure(Failure(1, "p", "127.0.0.1:9001", "5xx"))  # counted from responses
    return m


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(found: dict[Any, float], name: str, **labels: str) -> float:
    return found[(name, tuple(sorted(labels.items())))]


def test_exposition_parses_and_counts(metrics: Metrics) -> None:
    body, ctype = metrics.exposition()
    assert ctype.startswith("text/plain")
    text = body.decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    for name, family in families.items():
        assert name.startswith("lb_"), name
        assert family.documentation, name
    assert families["lb_listener_requests"].type == "counter"
    assert families["lb_backend_upstream_latency_seconds"].type == "histogram"
    found = samples(text)
    b = {"pool": "p", "backend": "127.0.0.1:9001"}
    assert value(found, "lb_listener_requests_total", listener="web") == 20
    assert value(found, "lb_listener_responses_total", listener="web", code="2xx") == 18
    assert value(found, "lb_listener_connections_active", listener="web") == 3
    assert value(found, "lb_listener_received_bytes_total", listener="web") == 2000
    assert value(found, "lb_listener_received_bytes_total", listener="raw") == 14
    assert value(found, "lb_backend_requests_total", **b) == 20
    assert value(found, "lb_backend_in_flight", **b) == 3
    assert value(found, "lb_backend_connections", **b) == 5
    assert value(found, "lb_backend_retries_total", **b) == 4
    for kind, n in (("connect", 1), ("timeout", 1), ("reset", 1), ("5xx", 2)):
        assert value(found, "lb_backend_errors_total", **b, kind=kind) == n
    assert value(found, "lb_backend_health_state", **b, state="checking") == 1
    assert value(found, "lb_backend_admin_state", **b, state="ready") == 1
    assert value(found, "lb_backend_weight", **b) == 1
    assert value(found, "lb_pool_backends", pool="p") == 2
    assert value(found, "lb_worker_restarts_total") == 2
    assert value(found, "lb_build_info", version=lb.__version__) == 1
    # The histogram: cumulative buckets, count = +Inf, the sum from latency_us.
    les = [
        (float(s.labels["le"]), s.value)
        for s in families["lb_backend_upstream_latency_seconds"].samples
        if s.name.endswith("_bucket") and s.labels["backend"] == b["backend"]
    ]
    assert [le for le, _ in les] == [*LATENCY_BOUNDS, float("inf")]
    assert all(a[1] <= c[1] for a, c in itertools.pairwise(les))
    assert les[-1][1] == 20
    assert value(found, "lb_backend_upstream_latency_seconds_count", **b) == 20
    assert value(found, "lb_backend_upstream_latency_seconds_sum", **b) == pytest.approx(0.03)
    # The second backend has no samples yet: zeros, and no histogram.
    other = {"pool": "p", "backend": "127.0.0.1:9002"}
    assert value(found, "lb_backend_requests_total", **other) == 0
    assert ("lb_backend_upstream_latency_seconds_count", tuple(sorted(other.items()))) not in found


def test_the_health_gauge_follows_the_state(metrics: Metrics) -> None:
    state: ClusterState = metrics.plane.state
    b = {"pool": "p", "backend": "127.0.0.1:9002"}
    state.set_health("p", "127.0.0.1:9002", HealthState.UP, "test", now=1.0)
    found = samples(metrics.exposition()[0].decode())
    assert value(found, "lb_backend_up", **b) == 1
    assert value(found, "lb_backend_eligible", **b) == 1
    state.set_health("p", "127.0.0.1:9002", HealthState.DOWN, "test", now=2.0)
    state.set_admin("p", "127.0.0.1:9002", AdminState.DRAIN)
    found = samples(metrics.exposition()[0].decode())
    assert value(found, "lb_backend_up", **b) == 0
    assert value(found, "lb_backend_health_state", **b, state="down") == 1
    assert value(found, "lb_backend_health_state", **b, state="up") == 0
    assert value(found, "lb_backend_admin_state", **b, state="drain") == 1
    assert value(found, "lb_backend_eligible", **b) == 0


def test_a_removed_backend_leaves_the_exposition(metrics: Metrics) -> None:
    metrics.plane.state.remove("p", "127.0.0.1:9001")
    metrics.forget("p", "127.0.0.1:9001")
    text = metrics.exposition()[0].decode()
    assert "127.0.0.1:9001" not in text


def test_openmetrics_on_request(metrics: Metrics) -> None:
    body, ctype = metrics.exposition("application/openmetrics-text; version=1.0.0")
    assert ctype.startswith("application/openmetrics-text")
    text = body.decode()
    assert text.endswith("# EOF\n")
    names = {f.name for f in openmetrics_families(text)}
    assert {"lb_listener_requests", "lb_backend_upstream_latency_seconds"} <= names


def test_counter_and_unit_naming(metrics: Metrics) -> None:
    text = metrics.exposition()[0].decode()
    for family in text_string_to_metric_families(text):
        if family.type == "counter":
            assert all(s.name.endswith(("_total", "_created")) for s in family.samples)
        for s in family.samples:
            assert re.fullmatch(r"lb_[a-z0-9_]+", s.name), s.name
            assert not re.search(r"_(ms|milliseconds|kb|kib)(_|$)", s.name), s.name


def test_promtool_accepts_the_exposition(metrics: Metrics) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (apt-get install prometheus)")
    body, _ = metrics.exposition()
    r = subprocess.run([promtool, "check", "metrics"], input=body, capture_output=True, timeout=30)
    assert r.returncode == 0, r.stdout.decode() + r.stderr.decode()
    assert not r.stdout.strip() and not r.stderr.strip(), r.stdout.decode() + r.stderr.decode()


# -- the scaler ----------------------------------------------------------------------------------


def decision(current: int, desired: int, action: str, t: float = 1.0) -> NewEvent:
    return NewEvent(
        time=t,
        kind="decision",
        message=f"{action} {current} -> {desired}",
        current=current,
        desired=desired,
        data={"action": action},
    )


def test_event_log_feed_counts_decisions_once_and_keeps_the_latest() -> None:
    log = EventLog()
    feed = EventLogFeed(lambda: log)
    assert feed.scaler_pools() == []
    log.add("app", "scaler", [decision(0, 2, "scale_up")], 1.0)
    log.add(
        "app",
        "scaler",
        [NewEvent(time=2.0, kind="registered", message="registered 127.0.0.1:9100")],
        2.0,
    )
    assert feed.scaler_pools() == [ScalerPool("app", 0, 2, {"up": 1, "down": 0, "hold": 0})]
    log.add("app", "scaler", [decision(2, 2, "hold"), decision(2, 1, "scale_down")], 3.0)
    (pool,) = feed.scaler_pools()
    assert (pool.current, pool.desired) == (2, 1)
    assert dict(pool.decisions) == {"up": 1, "down": 1, "hold": 1}
    assert feed.scaler_pools() == [pool]  # read again: nothing is counted twice


def test_scaler_families(metrics: Metrics) -> None:
    log = EventLog()
    log.add("p", "scaler", [decision(1, 3, "scale_up")], 1.0)
    metrics.scaler = EventLogFeed(lambda: log)
    found = samples(metrics.exposition()[0].decode())
    assert value(found, "lb_scaler_replicas", pool="p") == 1
    assert value(found, "lb_scaler_desired_replicas", pool="p") == 3
    assert value(found, "lb_scaler_decisions_total", pool="p", direction="up") == 1
    assert value(found, "lb_scaler_decisions_total", pool="p", direction="down") == 0


# -- the dashboard's files -----------------------------------------------------------------------


def test_dashboard_assets_are_packaged_and_self_contained() -> None:
    files = load_assets()
    assert set(files) == set(ASSETS)
    index = files["index.html"].decode()
    assert '<script src="/dashboard/app.js"' in index
    assert 'href="/dashboard/style.css"' in index
    assert 'name="viewport"' in index  # narrow screens
    for name, data in files.items():
        text = data.decode()
        # No CDN, no remote font, no inline script (the page's CSP forbids them anyway).
        assert not re.search(r"(src|href)=\"(https?:)?//", text), name
        assert "@import" not in text and "url(http" not in text, name
    assert "<script>" not in index
