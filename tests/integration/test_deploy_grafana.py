"""deploy/grafana/lb.json against a live lb: the dashboard is valid JSON of the shape Grafana
imports, and every metric that its queries name is in the ``/metrics`` of a real lb (an http
and a tcp listener, a pool with a backend that served requests, a ``[[scalers]]`` entry).

Metrics that other issues are adding (15: the queue; 16: TLS) may not be on main yet: the
dashboard already queries them, and exactly the names in ``PENDING`` may be missing from
/metrics. Any other missing name fails, and so does a pending name that is missing from the
dashboard (the list would be stale)."""

from __future__ import annotations

import json
import re
import urllib.request
from typing import Any

from tests.helpers import ROOT, ProcessGroup, free_port, http_get

DASHBOARD = ROOT / "deploy" / "grafana" / "lb.json"

# Issue 15 (queue, limits, retry budget) and issue 16 (TLS): being added on other branches.
PENDING = frozenset(
    {
        "lb_pool_queue_depth",
        "lb_pool_held",
        "lb_pool_in_flight",
        "lb_pool_demand",
        "lb_pool_queue_wait_seconds_bucket",
        "lb_pool_queue_wait_seconds_count",
        "lb_pool_queue_rejected_total",
        "lb_pool_retry_budget_exhausted_total",
        "lb_backend_max_conn",
        "lb_tls_handshakes_total",
        "lb_tls_handshake_failures_total",
        "lb_tls_sessions_resumed_total",
        "lb_tls_certificate_expiry_days",
    }
)

METRIC = re.compile(r"\blb_[a-z0-9_]+\b")
SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{|\s)")
SUFFIXES = {"histogram": ("_bucket", "_sum", "_count"), "summary": ("_sum", "_count")}


def queries(dashboard: dict[str, Any]) -> list[str]:
    """Every PromQL expression: panel targets (rows' nested panels too) and template queries."""
    out: list[str] = []

    def walk(panels: list[dict[str, Any]]) -> None:
        for p in panels:
            out.extend(t["expr"] for t in p.get("targets", []) if t.get("expr"))
            walk(p.get("panels", []))

    walk(dashboard["panels"])
    for v in dashboard["templating"]["list"]:
        q = v.get("query")
        if isinstance(q, dict):
            q = q.get("query")
        if v.get("type") == "query" and isinstance(q, str):
            out.append(q)
    return out


def exposed(text: str) -> set[str]:
    """Names a query may use: sample names, and every family's names from its TYPE line (a
    family with no sample yet still has one)."""
    names: set[str] = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            names.add(name)
            names.update(name + s for s in SUFFIXES.get(kind, ()))
        elif line and not line.startswith("#") and (m := SAMPLE.match(line)):
            names.add(m.group(1))
    return names


def test_dashboard_shape() -> None:
    d = json.loads(DASHBOARD.read_text())
    assert d["title"] and d["uid"]
    assert d["__inputs"][0]["name"] == "DS_PROMETHEUS"
    ids = []
    for p in d["panels"]:
        ids.append(p["id"])
        assert {"type", "title", "gridPos"} <= p.keys(), p
        for t in p.get("targets", []):
            assert t["expr"].strip() and t["refId"], p["title"]
            assert t["datasource"]["uid"] == "${DS_PROMETHEUS}"
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    titles = " ".join(p["title"] for p in d["panels"] if p["type"] == "row")
    for row in ("Listeners", "Pools", "Latency", "Queue", "TLS", "scaler"):
        assert row in titles
    used = {m for q in queries(d) for m in METRIC.findall(q)}
    assert used >= PENDING, f"PENDING lists names the dashboard does not use: {PENDING - used}"


def test_every_queried_metric_is_in_a_live_metrics(procs: ProcessGroup) -> None:
    backend = procs.backend("g1")
    web, raw, admin = free_port(), free_port(), free_port()
    lb = procs.lb(
        {
            "lb": {"workers": 1, "grace": "1s"},
            "admin": {"bind": f"127.0.0.1:{admin}"},
            "listeners": [
                {"name": "web", "bind": f"127.0.0.1:{web}", "mode": "http", "pool": "p"},
                {"name": "raw", "bind": f"127.0.0.1:{raw}", "mode": "tcp", "pool": "p"},
            ],
            "pools": {
                "p": {
                    "health": {"interval": "200ms"},
                    "backends": [{"address": f"127.0.0.1:{backend.port}"}],
                }
            },
            "scalers": [
                {
                    "pool": "p",
                    "min": 1,
                    "max": 3,
                    "target": 10,
                    "process": {
                        "command": "{python} -m lb.demo_server --port {port}",
                        "port_range": "20000-20010",
                    },
                }
            ],
        }
    )
    for _ in range(5):
        assert http_get(lb.port, "/")[0] == 200
    with urllib.request.urlopen(f"http://127.0.0.1:{admin}/metrics", timeout=5) as r:
        text = r.read().decode()
    live = exposed(text)
    d = json.loads(DASHBOARD.read_text())
    used = {m for q in queries(d) for m in METRIC.findall(q)}
    missing = used - live
    assert not missing - PENDING, f"queried but not in /metrics: {sorted(missing - PENDING)}"
    # The alert rules query the same names (deploy/prometheus/lb-rules.yml).
    rules = (ROOT / "deploy" / "prometheus" / "lb-rules.yml").read_text()
    missing_rules = set(METRIC.findall(rules)) - live
    assert not missing_rules - PENDING, f"alert rules query {sorted(missing_rules - PENDING)}"
    assert "lb_workers_live 1.0" in text
    assert 'lb_scaler_max_replicas{pool="p"} 3.0' in text


def test_pending_names_are_the_documented_ones() -> None:
    """The same list is in docs/deploy.md, for whoever lands the queue and TLS metrics."""
    doc = (ROOT / "docs" / "deploy.md").read_text()
    for name in PENDING:
        base = name.removesuffix("_bucket").removesuffix("_count")
        assert f"`{base}" in doc, name
