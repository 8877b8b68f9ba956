"""Overload protection end to end (issue 15): per-backend ``max_conn``, the per-pool queue,
hold when no backend is eligible, the retry budget, and ``max_conn`` through the control API.

lb and the demo backends run as real processes on 127.0.0.1; clients are raw asyncio streams
(one coroutine per keep-alive connection, cheap enough for the 2-core machine). Every load loop
is bounded in count and in time. The only latency bounds asserted are the features themselves:
a 503 no later than ``queue_timeout`` + 100 ms (the issue's acceptance), a held request
released before its ``hold_timeout``, a queued client gone from the queue within the
supervisor's one-second demand refresh.
"""

from __future__ import annotations

import asyncio
import math
import re
import time
import urllib.request
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson
import pytest

from lb.proxy.pool import BUDGET_WINDOW, worker_share
from tests.helpers import Proc, ProcessGroup, children, free_port, rss_kib
from tests.integration.test_control import lbctl, socket_of

Response = tuple[int, dict[str, str], bytes]


# -- clients --------------------------------------------------------------------------------


class Client:
    """One keep-alive HTTP/1.1 client connection: a request at a time, whole responses."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, port: int) -> Client:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer)

    def send(self, path: str = "/") -> None:
        self.writer.write(f"GET {path} HTTP/1.1\r\nHost: test\r\n\r\n".encode())

    async def response(self) -> Response:
        """The next whole response (raises IncompleteReadError if the connection closes)."""
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers: dict[str, str] = {}
        for line in lines[1:]:
            k, _, v = line.partition(":")
            if k:
                headers[k.strip().lower()] = v.strip()
        body = await self.reader.readexactly(int(headers.get("content-length", "0")))
        return int(lines[0].split()[1]), headers, body

    async def get(self, path: str = "/", within: float = 10.0) -> Response:
        self.send(path)
        async with asyncio.timeout(within):
            return await self.response()

    async def closed_by_peer(self, within: float) -> bool:
        """Whether lb closes the connection (EOF or reset) within ``within`` seconds, having
        sent nothing."""
        try:
            async with asyncio.timeout(within):
                data = await self.reader.read(1)
        except TimeoutError:
            return False
        except ConnectionError:
            return True
        assert data == b"", f"got bytes instead of a close: {data!r}"
        return True

    def close(self) -> None:
        self.writer.close()


async def http_json(port: int, path: str) -> Any:
    client = await Client.open(port)
    try:
        status, _, body = await client.get(path)
        assert status == 200, (path, status, body)
        return orjson.loads(body)
    finally:
        client.close()


async def backend_stats(b: Proc) -> dict[str, Any]:
    """The demo backend's own counters (``/stats`` is never delayed by ``--latency``)."""
    stats: dict[str, Any] = await http_json(b.port, "/stats")
    return stats


async def burst(port: int, clients: int, path: str = "/", within: float = 10.0) -> list[int]:
    """``clients`` concurrent requests, each on its own connection; their statuses."""

    async def one() -> int:
        c = await Client.open(port)
        try:
            return (await c.get(path, within))[0]
        finally:
            c.close()

    return list(await asyncio.gather(*(one() for _ in range(clients))))


# -- the control API -------------------------------------------------------------------------


async def api(lb: Proc, method: str, path: str, body: object = None) -> tuple[int, str, Any]:
    """One control API call over the unix socket: (status, content type, parsed JSON)."""
    conn = aiohttp.UnixConnector(path=str(socket_of(lb)))
    async with aiohttp.ClientSession(connector=conn) as session:
        data = orjson.dumps(body) if body is not None else None
        headers = {"Content-Type": "application/json"} if data is not None else None
        async with session.request(
            method,
            f"http://lb{path}",
            data=data,
            headers=headers,
            timeout=aiohttp.ClientTimeout(10),
        ) as r:
            raw = await r.read()
            return r.status, r.headers.get("Content-Type", ""), orjson.loads(raw) if raw else None


async def demand(lb: Proc, pool: str) -> dict[str, Any]:
    status, _, doc = await api(lb, "GET", f"/v1/pools/{pool}/demand")
    assert status == 200, doc
    result: dict[str, Any] = doc
    return result


async def poll(check: Callable[[], Awaitable[bool]], within: float, what: str) -> float:
    """Poll ``check`` every 20 ms until it is true; how long it took. Fails after ``within``."""
    t0 = time.monotonic()
    while not await check():
        if time.monotonic() - t0 > within:
            raise AssertionError(f"{what}: not within {within}s")
        await asyncio.sleep(0.02)
    return time.monotonic() - t0


def metric(text: str, name: str, **labels: str) -> float:
    """The value of one sample of a Prometheus text exposition (0 when absent)."""
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    pattern = re.compile(rf"^{re.escape(name)}\{{([^}}]*)\}} (\S+)$", re.M)
    for m in pattern.finditer(text):
        if all(part in m.group(1).split(",") for part in want.split(",")):
            return float(m.group(2))
    return 0.0


def scrape(admin: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{admin}/metrics", timeout=5) as r:
        text: str = r.read().decode()
        return text


def http_lb(port: int, pool: dict[str, Any], *, workers: int = 1, **extra: Any) -> dict[str, Any]:
    return {
        "lb": {"workers": workers, "grace": "1s"},
        **extra,
        "listeners": [{"name": "web", "bind": f"127.0.0.1:{port}", "mode": "http", "pool": "p"}],
        "pools": {"p": pool},
    }


def lb_rss_kib(lb: Proc) -> dict[str, int]:
    """The supervisor's and each worker's RSS, by pid."""
    pids = [lb.pid, *children(lb.pid)]
    return {f"pid {pid}": rss_kib(pid) for pid in pids}


# -- the limit holds under a burst -----------------------------------------------------------

LATENCY_MS = 100
MAX_CONN = 4
QUEUE_TIMEOUT = 2.0
SLACK = 0.1  # the "no later than queue_timeout plus 100 ms"
BURST_CLIENTS = 200
# The workers = 1 run keeps the 10 s; the workers = 2 run is shorter to keep CI time
# down (the queue reaches its steady state, timeouts included, within 2-3 s).
BURST_SECONDS = {1: 10.0, 2: 6.0}
RSS_GROWTH_KIB = 64 * 1024  # generous: 200 waiting requests need a few hundred KiB


@dataclass
class BurstLog:
    sent: int = 0
    ok: int = 0
    busy: int = 0
    busy_then_ok: int = 0  # a 503, then a 200 on the same connection
    slowest_503: float = 0.0
    slowest_200: float = 0.0
    problems: list[str] = field(default_factory=list)


async def burst_client(port: int, deadline: float, log: BurstLog) -> None:
    """Requests one after another on one keep-alive connection until ``deadline``."""
    loop = asyncio.get_running_loop()
    client = await Client.open(port)
    last_busy = False
    try:
        while loop.time() < deadline:
            t0 = loop.time()
            client.send("/")
            log.sent += 1
            try:
                async with asyncio.timeout(QUEUE_TIMEOUT + LATENCY_MS / 1000 + 10):
                    status, headers, _ = await client.response()
            except (asyncio.IncompleteReadError, ConnectionError, TimeoutError) as exc:
                log.problems.append(f"{'after a 503: ' if last_busy else ''}{exc!r}")
                return
            took = loop.time() - t0
            if status == 200:
                log.ok += 1
                log.slowest_200 = max(log.slowest_200, took)
                log.busy_then_ok += last_busy
                last_busy = False
            elif status == 503:
                log.busy += 1
                log.slowest_503 = max(log.slowest_503, took)
                if "retry-after" not in headers:
                    log.problems.append(f"a 503 without Retry-After: {headers}")
                if headers.get("connection", "").lower() == "close":
                    log.problems.append("a 503 closed the connection")
                last_busy = True
            else:
                log.problems.append(f"status {status}")
    finally:
        client.close()


@pytest.mark.parametrize("workers", [1, 2])
async def test_the_limit_holds_under_a_burst(procs: ProcessGroup, workers: int) -> None:
    backends = [
        procs.backend(f"slow{i}-w{workers}", "--latency", str(LATENCY_MS)) for i in range(2)
    ]
    port = free_port()
    pool = {
        "max_conn": MAX_CONN,
        "queue_timeout": f"{QUEUE_TIMEOUT:g}s",
        "backends": [{"address": f"127.0.0.1:{b.port}"} for b in backends],
    }
    lb = procs.lb(http_lb(port, pool, workers=workers))
    # What a backend may see at once: each worker's share (rounded up, at least 1), summed.
    allowed = workers * worker_share(MAX_CONN, workers)
    assert allowed == MAX_CONN  # 4 = 2 workers x ceil(4 / 2)

    assert await burst(port, 4) == [200] * 4  # warm up: every worker connected to both
    before = lb_rss_kib(lb)
    assert len(before) == 1 + workers

    loop = asyncio.get_running_loop()
    log = BurstLog()
    deadline = loop.time() + BURST_SECONDS[workers]
    await asyncio.gather(*(burst_client(port, deadline, log) for _ in range(BURST_CLIENTS)))

    after = lb_rss_kib(lb)
    seen = [await backend_stats(b) for b in backends]
    summary = (
        f"workers {workers}: sent {log.sent}, 200 {log.ok}, 503 {log.busy}, slowest 200 "
        f"{log.slowest_200:.3f}s, slowest 503 {log.slowest_503:.3f}s, backends' max in flight "
        f"{[s['max_in_flight'] for s in seen]}, rss before {before} after {after}"
    )
    print(summary)
    assert not log.problems, f"{log.problems[:5]} ({len(log.problems)} in all); {summary}"
    assert log.ok + log.busy == log.sent
    # The backend-side counter: never more than the limit (its workers' shares, summed).
    for s in seen:
        assert 1 <= s["max_in_flight"] <= allowed, summary
        assert s["in_flight"] == 0, summary
    # 200 clients against 8 slots of 100 ms: some wait and are served, others time out.
    assert log.ok > 0 and log.busy > 0, summary
    assert log.slowest_503 <= QUEUE_TIMEOUT + SLACK, summary
    # A served request waited at most queue_timeout, then had the backend's time (a sanity
    # bound, generous: the issue bounds the 503s, above).
    assert log.slowest_200 <= QUEUE_TIMEOUT + LATENCY_MS / 1000 + 0.5, summary
    # The connection stays usable after a 503: the next request on it was served.
    assert log.busy_then_ok > 0, summary
    # Memory stays bounded (a generous bound: a leak per request would pass it in seconds).
    for pid, kib in after.items():
        assert kib - before.get(pid, kib) < RSS_GROWTH_KIB, summary


# -- a queued client that disconnects leaves the queue at once -------------------------------


async def test_a_queued_client_that_disconnects_leaves_the_queue(procs: ProcessGroup) -> None:
    backend = procs.backend("q")
    port = free_port()
    pool = {
        "max_conn": 2,
        "queue_timeout": "20s",
        "backends": [{"address": f"127.0.0.1:{backend.port}"}],
    }
    lb = procs.lb(http_lb(port, pool))
    # Fill both slots with slow requests.
    slow = [await Client.open(port) for _ in range(2)]
    for c in slow:
        c.send("/sleep?ms=3000")

    async def slots_full() -> bool:
        return bool((await backend_stats(backend))["in_flight"] == 2)

    await poll(slots_full, 5, "the slow requests reached the backend")
    served_before = (await backend_stats(backend))["requests"]
    # Queue N more.
    n = 6
    queued = [await Client.open(port) for _ in range(n)]
    for c in queued:
        c.send("/")

    async def all_queued() -> bool:
        d = await demand(lb, "p")
        return bool(d["queued"] == n and d["in_flight"] == 2 and d["held"] == 0)

    await poll(all_queued, 3, f"{n} requests queued")
    # They leave: the queue depth falls to 0 (the supervisor's figures are refreshed within
    # a second; the worker drops them at once, which the backend's counter shows below).
    for c in queued:
        c.close()

    async def queue_empty() -> bool:
        d = await demand(lb, "p")
        return bool(d["queued"] == 0 and d["demand"] == 2)

    took = await poll(queue_empty, 2.5, "the queue emptied")
    print(f"the queue emptied {took:.3f}s after the clients left")
    status, _, stats = await api(lb, "GET", "/v1/pools/p/stats")
    assert status == 200 and stats["pools"]["p"]["queued"] == 0, stats
    # The slow requests end; none of the gone clients' requests reach the backend.
    for c in slow:
        async with asyncio.timeout(10):
            assert (await c.response())[0] == 200
        c.close()
    await asyncio.sleep(0.3)
    served = (await backend_stats(backend))["requests"]
    # (each /stats read counts itself: this one is the only request since served_before)
    assert served - served_before == 1, (served_before, served)
    # The queue still works for clients that stay.
    assert await burst(port, 5) == [200] * 5
    assert (await demand(lb, "p"))["in_flight"] <= 2


@pytest.mark.parametrize("mode", ["http-with-body", "tcp-with-bytes"])
async def test_a_queued_client_that_sent_bytes_and_left_leaves_the_queue(
    procs: ProcessGroup, mode: str
) -> None:
    """lb stops reading a queued client once it has sent bytes (a body, tcp bytes), so no EOF
    reaches it; the worker looks at the socket's TCP state instead (lb/proxy/peer.py)."""
    backend = procs.backend("qb")
    port = free_port()
    kind = "http" if mode.startswith("http") else "tcp"
    lb = procs.lb(
        {
            "lb": {"workers": 1, "grace": "1s"},
            "listeners": [{"name": "q", "bind": f"127.0.0.1:{port}", "mode": kind, "pool": "p"}],
            "pools": {
                "p": {
                    "max_conn": 1,
                    "queue_timeout": "20s",
                    "backends": [{"address": f"127.0.0.1:{backend.port}"}],
                }
            },
        }
    )

    def queued(n: int) -> Callable[[], Awaitable[bool]]:
        async def check() -> bool:
            return bool((await demand(lb, "p"))["queued"] == n)

        return check

    async def slot_taken() -> bool:
        return bool((await backend_stats(backend))["in_flight"] == 1)

    holder = await Client.open(port)
    gone = await Client.open(port)
    try:
        holder.send("/sleep?ms=10000")  # (tcp: the connection itself holds the slot)
        await poll(slot_taken, 5, "the slot is taken")
        gone.writer.write(b"POST /echo HTTP/1.1\r\nHost: test\r\nContent-Length: 4\r\n\r\nbody")
        await poll(queued(1), 3, "the client is queued")
        gone.close()
        await poll(queued(0), 2.5, "the client that left is gone from the queue")
    finally:
        gone.close()
        holder.close()
        await asyncio.sleep(0)


# -- hold when no backend is eligible --------------------------------------------------------

HOLD = 5.0
HOLD_SHORT = 0.5


def hold_config(ports: dict[str, int], interval: float) -> dict[str, Any]:
    checks = {"interval": f"{interval}s", "rise": 1, "fall": 1}
    return {
        "lb": {"workers": 1, "grace": "1s"},
        "listeners": [
            {"name": name, "bind": f"127.0.0.1:{port}", "mode": "http", "pool": name}
            for name, port in ports.items()
        ],
        "pools": {
            "hold": {"hold_timeout": f"{HOLD:g}s"},
            "hold_checked": {"hold_timeout": f"{HOLD:g}s", "health": checks},
            "nohold": {},
            "short": {"hold_timeout": f"{HOLD_SHORT:g}s"},
        },
    }


@pytest.mark.parametrize("pool", ["hold", "hold_checked"])
async def test_held_requests_go_out_in_order_when_a_backend_is_registered(
    procs: ProcessGroup, pool: str
) -> None:
    backend = procs.backend("late", "--latency", "20")
    ports = {name: free_port() for name in ("hold", "hold_checked", "nohold", "short")}
    lb = procs.lb(hold_config(ports, interval=0.2))
    loop = asyncio.get_running_loop()
    n = 4
    clients = [await Client.open(ports[pool]) for _ in range(n)]
    sent_at = []
    for i, c in enumerate(clients):
        c.send(f"/?n={i}")
        sent_at.append(loop.time())
        await asyncio.sleep(0.05)  # a clear arrival order
    answered: list[tuple[float, int, Response]] = []

    async def wait_answer(i: int, c: Client) -> None:
        async with asyncio.timeout(HOLD + 5):
            r = await c.response()
        answered.append((loop.time(), i, r))

    waits = [asyncio.create_task(wait_answer(i, c)) for i, c in enumerate(clients)]

    async def all_held() -> bool:
        d = await demand(lb, pool)
        return bool(d["held"] == n and d["eligible"] == 0)

    await poll(all_held, 3, f"{n} requests held")
    assert not answered, "a held request was answered before any backend existed"
    # One slot at a time, so the order the backend serves them in is the order they leave.
    registered = loop.time()
    status, _, added = await api(
        lb,
        "POST",
        f"/v1/pools/{pool}/backends",
        {"address": f"127.0.0.1:{backend.port}", "max_conn": 1},
    )
    assert status == 201, added
    await asyncio.gather(*waits)
    for c in clients:
        c.close()
    order = [i for _, i, _ in sorted(answered)]
    statuses = [r[0] for _, _, r in answered]
    released = max(t for t, _, _ in answered) - registered
    print(f"{pool}: released in {released:.3f}s after the backend was registered")
    assert statuses == [200] * n, answered
    assert order == list(range(n)), "held requests left out of arrival order"
    # Released by the registration (or the first check, 0.2 s), not by a timer: well before
    # the hold would have ended.
    assert all(t - sent_at[i] < HOLD for t, i, _ in answered)
    assert released < HOLD / 2


async def test_no_hold_is_an_immediate_503_and_a_hold_ends_with_a_503(
    procs: ProcessGroup,
) -> None:
    ports = {name: free_port() for name in ("hold", "hold_checked", "nohold", "short")}
    procs.lb(hold_config(ports, interval=0.2))
    loop = asyncio.get_running_loop()
    # hold_timeout = 0 (a static pool's default): 503 at once, and the connection stays.
    c = await Client.open(ports["nohold"])
    t0 = loop.time()
    status, headers, _ = await c.get(within=5)
    took = loop.time() - t0
    assert status == 503 and "retry-after" in headers, headers
    assert took < 0.5, f"no hold, yet the 503 took {took:.3f}s"
    assert (await c.get(within=5))[0] == 503  # the same connection answers again
    c.close()
    # Held past hold_timeout: 503 with Retry-After, after the hold and not much later.
    c = await Client.open(ports["short"])
    t0 = loop.time()
    status, headers, _ = await c.get(within=5)
    took = loop.time() - t0
    c.close()
    assert status == 503 and "retry-after" in headers, headers
    assert HOLD_SHORT - 0.05 <= took <= HOLD_SHORT + SLACK, f"held {took:.3f}s"


# -- the retry budget ------------------------------------------------------------------------


async def test_the_retry_budget_caps_retries_when_every_backend_refuses(
    procs: ProcessGroup,
) -> None:
    port, admin = free_port(), free_port()
    dead = [free_port() for _ in range(3)]  # nothing listens there
    budget, per_second, retries = 0.2, 3, 3
    pool = {
        "retries": retries,
        "retry_budget": budget,
        "retry_budget_min": per_second,
        "backends": [{"address": f"127.0.0.1:{p}"} for p in dead],
    }
    started = time.monotonic()  # (the budget's windows count from the worker's start)
    lb = procs.lb(http_lb(port, pool, admin={"bind": f"127.0.0.1:{admin}"}))
    n = 100
    statuses = []
    for _ in range(n):  # sequential; refused connects are fast
        client = await Client.open(port)  # (a 502 closes the connection)
        statuses.append((await client.get(within=10))[0])
        client.close()
    windows = 1 + int((time.monotonic() - started) / BUDGET_WINDOW)
    assert set(statuses) == {502}, statuses

    async def counted() -> bool:
        _, _, doc = await api(lb, "GET", "/v1/listeners")
        return bool(doc["listeners"][0]["requests"] == n)

    await poll(counted, 5, "the worker's stats reached the supervisor")
    text = scrape(admin)
    retried = metric(text, "lb_listener_retries_total", listener="web")
    exhausted = metric(text, "lb_pool_retry_budget_exhausted_total", pool="p")
    _, _, doc = await api(lb, "GET", "/v1/listeners")
    assert doc["listeners"][0]["retries"] == retried
    # Within one window: retry_budget_min per second over the window, plus retry_budget of the
    # first tries. (A window that ends halves the counts: each one started allows as much.)
    floor = per_second * BUDGET_WINDOW
    cap = windows * (floor + budget * n)
    print(f"{n} requests: {retried:g} retries (cap {cap:g}, without a budget {retries * n})")
    assert min(floor, retries * n) <= retried <= cap + 1, f"{retried} retries"
    assert retried < retries * n
    assert exhausted > 0
    # Each request that was refused a retry counts once: every request not retried 3 times.
    assert exhausted >= n - retried


# -- tcp: the connection waits, reading nothing ----------------------------------------------


async def test_tcp_connection_waits_for_a_slot_then_relays_or_times_out(
    procs: ProcessGroup,
) -> None:
    backend = procs.backend("t")
    wait_port, short_port = free_port(), free_port()
    one = [{"address": f"127.0.0.1:{backend.port}"}]
    procs.lb(
        {
            "lb": {"workers": 1, "grace": "1s"},
            "listeners": [
                {"name": "wait", "bind": f"127.0.0.1:{wait_port}", "mode": "tcp", "pool": "w"},
                {"name": "short", "bind": f"127.0.0.1:{short_port}", "mode": "tcp", "pool": "s"},
            ],
            "pools": {
                "w": {"max_conn": 1, "queue_timeout": "20s", "backends": one},
                "s": {"max_conn": 1, "queue_timeout": "0.5s", "backends": one},
            },
        }
    )
    loop = asyncio.get_running_loop()
    first = await Client.open(wait_port)
    assert (await first.get())[0] == 200
    second = await Client.open(wait_port)
    second.send("/")
    # It waits: nothing is relayed while the first connection holds the slot.
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(1.0):
            await second.response()
    assert (await first.get())[0] == 200  # the first one is still served meanwhile
    first.close()
    async with asyncio.timeout(5):
        status, headers, _ = await second.response()
    assert status == 200, headers
    assert (await second.get())[0] == 200
    second.close()

    # With a short queue_timeout the waiting connection is closed after it.
    first = await Client.open(short_port)
    assert (await first.get())[0] == 200
    second = await Client.open(short_port)
    second.send("/")
    t0 = loop.time()
    assert await second.closed_by_peer(5), "the waiting connection was never closed"
    took = loop.time() - t0
    assert 0.45 <= took <= 0.5 + 0.5, f"closed after {took:.3f}s"
    assert (await first.get())[0] == 200
    first.close()
    second.close()


# -- max_conn through the control API --------------------------------------------------------


async def test_max_conn_through_the_api_and_lbctl_survives_a_restart(
    procs: ProcessGroup,
) -> None:
    backend = procs.backend("m", "--latency", str(LATENCY_MS))
    port = free_port()
    address = f"127.0.0.1:{backend.port}"
    cfg = http_lb(port, {"queue_timeout": "10s", "backends": [{"address": address}]})
    lb = procs.lb(cfg)
    path = f"/v1/pools/p/backends/{address}"
    clients = 10

    status, _, view = await api(lb, "PATCH", path, {"max_conn": 2})
    assert status == 200 and view["max_conn"] == 2, view
    assert await burst(port, clients) == [200] * clients
    assert (await backend_stats(backend))["max_in_flight"] == 2

    for bad in (-1, 1_000_001, "3", 2.5, None, True):
        status, ctype, doc = await api(lb, "PATCH", path, {"max_conn": bad})
        if bad is None:  # {"max_conn": null} changes nothing: "nothing to change"
            assert status == 422, doc
            continue
        assert status == 422, (bad, doc)
        assert ctype.startswith("application/json")
        assert "max_conn" in orjson.dumps(doc).decode(), (bad, doc)
    status, _, view = await api(lb, "GET", path)
    assert view["max_conn"] == 2, "a refused value changed the limit"

    r = lbctl(lb, "max-conn", "p", address, "3")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "max_conn 3" in r.stdout
    assert await burst(port, clients) == [200] * clients
    assert (await backend_stats(backend))["max_in_flight"] == 3  # raised live, and held

    # The state file keeps it across a restart (the config file says nothing about it).
    assert lb.stop() == 0
    lb = procs.lb(cfg, name="lb-again")
    status, _, view = await api(lb, "GET", path)
    assert status == 200 and view["max_conn"] == 3, view
    assert await burst(port, clients) == [200] * clients
    assert (await backend_stats(backend))["max_in_flight"] == 3


def test_worker_share_is_what_the_docs_state() -> None:
    # DESIGN.md / docs: each worker gets ceil(max_conn / workers), at least 1; 0 is no limit.
    assert [worker_share(4, w) for w in (1, 2, 3, 4, 8)] == [4, 2, 2, 1, 1]
    assert worker_share(0, 2) == 0
    assert all(worker_share(m, w) == max(1, math.ceil(m / w)) for m in (1, 5, 9) for w in (1, 2))
