"""/metrics end to end: a real lb with two workers under bounded load, scraped while the load
runs and after it; the totals must equal what the clients counted, and the health-state gauge
must flip when a backend is stopped."""

from __future__ import annotations

import itertools
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

import orjson
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers import Proc, ProcessGroup, free_port, http_get

INTERVAL = 0.2  # health checks
FALL = 2
CLIENTS = 4
PER_CLIENT = 150
PAUSE = 0.005  # between a client's requests: the load lasts about a second
TCP_CONNECTIONS = 5

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(admin: int) -> tuple[str, Samples]:
    with urllib.request.urlopen(f"http://127.0.0.1:{admin}/metrics", timeout=5) as r:
        assert r.headers["Content-Type"].startswith("text/plain")
        text = r.read().decode()
    found: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            found[(s.name, frozenset(s.labels.items()))] = s.value
    return text, found


def get(found: Samples, name: str, **labels: str) -> float:
    return found.get((name, frozenset(labels.items())), 0.0)


def total(found: Samples, name: str, **labels: str) -> float:
    """Sum over every series of ``name`` whose labels include ``labels``."""
    want = set(labels.items())
    return sum(v for (n, ls), v in found.items() if n == name and want <= ls)


def wait_for(cond: Callable[[], bool], limit: float, what: str) -> float:
    t0 = time.monotonic()
    while not cond():
        if time.monotonic() - t0 > limit:
            raise AssertionError(f"not within {limit}s: {what}")
        time.sleep(0.05)
    return time.monotonic() - t0


def start(procs: ProcessGroup) -> tuple[Proc, Proc, Proc, int, int, int]:
    b1, b2 = procs.backend("m1"), procs.backend("m2")
    web, raw, admin = free_port(), free_port(), free_port()
    lb = procs.lb(
        {
            "lb": {"workers": 2, "grace": "2s"},
            "admin": {"bind": f"127.0.0.1:{admin}"},
            "listeners": [
                {"name": "web", "bind": f"127.0.0.1:{web}", "mode": "http", "pool": "p"},
                {"name": "raw", "bind": f"127.0.0.1:{raw}", "mode": "tcp", "pool": "p"},
            ],
            "pools": {
                "p": {
                    "strategy": "round_robin",
                    "health": {"interval": f"{INTERVAL}s", "fall": FALL, "rise": 1},
                    "backends": [
                        {"address": f"127.0.0.1:{b1.port}"},
                        {"address": f"127.0.0.1:{b2.port}"},
                    ],
                }
            },
        }
    )
    assert f"metrics: http://127.0.0.1:{admin}/metrics" in lb.output()
    return lb, b1, b2, web, raw, admin


def test_metrics_count_what_clients_did_and_follow_health(procs: ProcessGroup) -> None:
    lb, b1, b2, web, raw, admin = start(procs)
    ok: list[int] = []
    failed: list[str] = []

    def client() -> None:
        n = 0
        for _ in range(PER_CLIENT):
            try:
                status, _, body = http_get(web)
                if status == 200 and body:
                    n += 1
                else:
                    failed.append(f"status {status}")
            except OSError as exc:
                failed.append(repr(exc))
            time.sleep(PAUSE)
        ok.append(n)

    # Scrape while the load runs: every counter only ever goes up.
    scrapes: list[Samples] = []
    done = threading.Event()

    def scraper() -> None:
        while not done.is_set():
            scrapes.append(scrape(admin)[1])
            time.sleep(0.1)

    threads = [threading.Thread(target=client) for _ in range(CLIENTS)]
    watcher = threading.Thread(target=scraper)
    watcher.start()
    for t in threads:
        t.start()
    tcp_bytes = 0
    for _ in range(TCP_CONNECTIONS):
        with socket.create_connection(("127.0.0.1", raw), timeout=5) as s:
            s.sendall(b"GET / HTTP/1.0\r\n\r\n")
            while chunk := s.recv(65536):
                tcp_bytes += len(chunk)
    for t in threads:
        t.join(60)
    done.set()
    watcher.join(10)
    assert not failed, failed[:5]
    sent = sum(ok)
    assert sent == CLIENTS * PER_CLIENT

    # Workers report about once a second: wait for the last snapshots, then compare.
    def settled() -> bool:
        return get(scrape(admin)[1], "lb_listener_requests_total", listener="web") >= sent

    wait_for(settled, 5, f"lb_listener_requests_total reaches {sent}")
    time.sleep(1.2)  # one more report: nothing beyond what the clients sent shows up
    text, m = scrape(admin)
    assert get(m, "lb_listener_requests_total", listener="web") == sent
    assert get(m, "lb_listener_responses_total", listener="web", code="2xx") == sent
    assert total(m, "lb_listener_responses_total", listener="web") == sent
    assert get(m, "lb_listener_connections_accepted_total", listener="web") == sent
    assert total(m, "lb_backend_requests_total", pool="p") == sent + TCP_CONNECTIONS
    assert total(m, "lb_backend_responses_total", pool="p", code="2xx") == sent
    assert total(m, "lb_backend_upstream_latency_seconds_count", pool="p") == sent
    assert total(m, "lb_backend_upstream_latency_seconds_bucket", pool="p", le="+Inf") == sent
    assert total(m, "lb_backend_upstream_latency_seconds_sum", pool="p") > 0
    assert total(m, "lb_backend_errors_total", pool="p") == 0
    assert get(m, "lb_listener_connections_accepted_total", listener="raw") == TCP_CONNECTIONS
    assert get(m, "lb_listener_sent_bytes_total", listener="raw") == tcp_bytes
    assert get(m, "lb_listener_received_bytes_total", listener="web") > 0
    assert get(m, "lb_listener_sent_bytes_total", listener="web") > 0
    assert get(m, "lb_listener_connections_active", listener="web") == 0
    assert get(m, "lb_workers") == 2
    # Round robin across two backends, each worker on its own: both got a fair share.
    for b in (b1, b2):
        share = get(m, "lb_backend_requests_total", pool="p", backend=f"127.0.0.1:{b.port}")
        assert share > sent / 4

    # Counters never went down between scrapes taken under load.
    assert len(scrapes) >= 3
    counters = [k for k in scrapes[-1] if k[0].endswith("_total")]
    for before, after in itertools.pairwise(scrapes):
        for k in counters:
            assert after.get(k, 0) >= before.get(k, 0), k

    promtool = shutil.which("promtool")
    if promtool is not None:
        r = subprocess.run(
            [promtool, "check", "metrics"], input=text.encode(), capture_output=True, timeout=30
        )
        assert r.returncode == 0, r.stdout.decode() + r.stderr.decode()

    # Stop a backend: its health-state gauge flips within the checks' window.
    addr = f"127.0.0.1:{b2.port}"
    m = scrape(admin)[1]
    assert get(m, "lb_backend_health_state", pool="p", backend=addr, state="up") == 1
    assert get(m, "lb_backend_up", pool="p", backend=addr) == 1
    b2.stop(signal.SIGKILL)
    window = FALL * INTERVAL + 1.0 + 1.0  # fall checks, the check timeout, slack

    def down() -> bool:
        found = scrape(admin)[1]
        return get(found, "lb_backend_health_state", pool="p", backend=addr, state="down") == 1

    took = wait_for(down, window, f"{addr} reported down in /metrics")
    print(f"lb_backend_health_state flipped to down {took:.2f}s after the backend was killed")
    m = scrape(admin)[1]
    assert get(m, "lb_backend_health_state", pool="p", backend=addr, state="up") == 0
    assert get(m, "lb_backend_up", pool="p", backend=addr) == 0
    assert get(m, "lb_backend_eligible", pool="p", backend=addr) == 0
    assert get(m, "lb_pool_backends_eligible", pool="p") == 1
    assert get(m, "lb_backend_up", pool="p", backend=f"127.0.0.1:{b1.port}") == 1
    log = lb.output()
    assert f"{addr} up -> down" in log and "event=health_state" in log


def test_admin_listener_serves_dashboard_and_metrics_without_a_token(
    procs: ProcessGroup,
) -> None:
    _lb, _b1, _b2, _web, _raw, admin = start(procs)
    base = f"http://127.0.0.1:{admin}"
    pages: dict[str, Any] = {}
    for path in ("/", "/dashboard/app.js", "/dashboard/style.css", "/v1/listeners"):
        with urllib.request.urlopen(base + path, timeout=5) as r:
            pages[path] = (r.status, r.headers, r.read())
    status, headers, body = pages["/"]
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert "default-src 'none'" in headers["Content-Security-Policy"]
    assert b"/dashboard/app.js" in body
    assert pages["/dashboard/app.js"][1]["Content-Type"].startswith("text/javascript")
    listeners = orjson.loads(pages["/v1/listeners"][2])["listeners"]
    assert [(x["name"], x["mode"]) for x in listeners] == [("web", "http"), ("raw", "tcp")]
    req = urllib.request.Request(base + "/metrics", method="POST")
    try:
        urllib.request.urlopen(req, timeout=5)
        raise AssertionError("POST /metrics was accepted")
    except urllib.error.HTTPError as exc:
        assert exc.code in (403, 405)
