"""``peak_ewma`` end to end: a real lb in front of three demo backends, one of which turns slow
(``/latency?ms=N`` on the backend) and later recovers. Real keep-alive clients count who
answered (``X-Backend``): the slow backend gets clearly fewer requests than its third, and once
it is fast again it gets traffic again within a few decay times. With half of four backends
slow and 16 clients at once, the slow pair gets only probes."""

from __future__ import annotations

import asyncio
import http.client
import time
from collections import Counter
from typing import Any

import aiohttp

from tests.helpers import ProcessGroup, free_port

CLIENTS = 6
DECAY = 0.5  # seconds: a slow backend is tried again after DECAY x ln(latency / floor)


def config(port: int, backends: list[int], strategy: str) -> dict[str, Any]:
    pool: dict[str, Any] = {
        "strategy": strategy,
        "backends": [{"address": f"127.0.0.1:{p}"} for p in backends],
    }
    if strategy == "peak_ewma":
        pool["peak_ewma"] = {"decay": f"{DECAY}s"}
    return {
        "lb": {"workers": 1, "grace": "2s"},
        "listeners": [{"name": "web", "bind": f"127.0.0.1:{port}", "mode": "http", "pool": "p"}],
        "pools": {"p": pool},
    }


def set_latency(port: int, ms: int) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", f"/latency?ms={ms}")
        response = conn.getresponse()
        assert response.status == 200, response.read()
        response.read()
    finally:
        conn.close()


async def traffic(port: int, seconds: float, clients: int = CLIENTS) -> Counter[str]:
    """``clients`` keep-alive clients, one request after another each, for ``seconds``."""
    counts: Counter[str] = Counter()
    deadline = time.monotonic() + seconds
    url = f"http://127.0.0.1:{port}/"

    async def client(session: aiohttp.ClientSession) -> None:
        while time.monotonic() < deadline:
            async with session.get(url) as response:
                await response.read()
                assert response.status == 200
                counts[response.headers["X-Backend"]] += 1

    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(connector=connector) as session:
        await asyncio.gather(*(client(session) for _ in range(clients)))
    return counts


def start(procs: ProcessGroup, strategy: str, n: int = 3) -> tuple[int, list[int]]:
    backends = [procs.backend(f"b{i}").port for i in range(n)]
    port = free_port()
    procs.lb(config(port, backends, strategy))
    return port, backends


def test_a_slow_backend_gets_few_requests_and_traffic_again_once_it_recovers(
    procs: ProcessGroup,
) -> None:
    port, backends = start(procs, "peak_ewma")
    asyncio.run(traffic(port, 0.5))  # every backend answered once: estimates exist
    set_latency(backends[0], 60)
    counts = asyncio.run(traffic(port, 3.0))
    total = sum(counts.values())
    assert total > 100, counts
    # A third would be its share by count; it gets probes and what the others cannot take.
    assert counts["b0"] / total < 0.08, counts
    assert counts["b1"] > counts["b0"] * 4 and counts["b2"] > counts["b0"] * 4, counts

    set_latency(backends[0], 0)
    # Its estimate decays to the floor within DECAY x ln(60 ms / 1 ms) ~ 2 s; the next pick
    # of it answers fast and it keeps its share. Bounded: 10 windows of 1 s.
    shares = []
    for _ in range(10):
        counts = asyncio.run(traffic(port, 1.0))
        shares.append(counts["b0"] / max(1, sum(counts.values())))
        if shares[-1] > 0.2:
            break
    assert shares[-1] > 0.2, shares


def test_two_slow_backends_of_four_get_only_probes_under_concurrency(
    procs: ProcessGroup,
) -> None:
    """benchmarks/heterogeneous.py in small: half the pool slow, 16 clients at once. Two
    choices used to draw both slow ones for 1 pick in 6, and latency x (in-flight + 1) sent
    them requests while the fast ones had a few in flight: 17% of the requests between
    them in this test. Now: probes (and what a pause of the machine sends them)."""
    port, backends = start(procs, "peak_ewma", 4)
    asyncio.run(traffic(port, 0.5, 16))  # every backend answered: estimates exist
    set_latency(backends[0], 40)
    set_latency(backends[1], 40)
    counts = asyncio.run(traffic(port, 3.0, 16))
    total = sum(counts.values())
    assert total > 300, counts
    assert (counts["b0"] + counts["b1"]) / total < 0.03, counts


def test_round_robin_gives_the_slow_backend_its_third(procs: ProcessGroup) -> None:
    """The same traffic under round_robin: what the assertion above would see without
    latency awareness (so that it can fail)."""
    port, backends = start(procs, "round_robin")
    set_latency(backends[0], 60)
    counts = asyncio.run(traffic(port, 2.0))
    total = sum(counts.values())
    assert total > 30, counts
    assert counts["b0"] / total > 0.25, counts


def test_the_demo_backend_changes_its_latency_while_it_serves(procs: ProcessGroup) -> None:
    port = procs.backend("b").port

    def timed_get(path: str) -> float:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        try:
            started = time.monotonic()
            conn.request("GET", path)
            response = conn.getresponse()
            response.read()
            assert response.status == 200
            return time.monotonic() - started
        finally:
            conn.close()

    set_latency(port, 150)
    # The backend's delay is a uvloop timer: libuv counts in whole milliseconds from the loop
    # time cached at the start of the pass, so it can end up to ~1 ms before 150 ms of wall
    # time have passed (CI measured 149.99 ms). 145 ms still tells a delayed answer from one
    # that was not (the two lines below: well under 150 ms).
    assert timed_get("/") >= 0.145
    assert timed_get("/healthz") < 0.15  # never delayed
    set_latency(port, 0)
    assert timed_get("/") < 0.15
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    conn.request("GET", "/latency?ms=soon")
    response = conn.getresponse()
    assert response.status == 400 and b"ms must be" in response.read()
    conn.close()


def test_tcp_mode_feeds_connect_times_and_serves(procs: ProcessGroup) -> None:
    """In tcp mode the sample is the connect time: connections flow, to both backends."""
    from tests.helpers import http_get

    backends = [procs.backend(f"t{i}").port for i in range(2)]
    port = free_port()
    cfg = config(port, backends, "peak_ewma")
    cfg["listeners"][0]["mode"] = "tcp"
    procs.lb(cfg)
    seen: Counter[str] = Counter()
    for _ in range(40):
        status, headers, _ = http_get(port)
        assert status == 200
        seen[headers["x-backend"]] += 1
    assert set(seen) == {"t0", "t1"}, seen
