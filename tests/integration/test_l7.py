"""End to end: lb as a real process in http mode, real backends, real clients.

Each test reads as a transcript: what the client sends, what the backend sees, what the client
gets back.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import weakref
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.helpers import (
    ProcessGroup,
    children,
    free_port,
    read_until_close,
    rss_kib,
    wait_port,
)


def http_config(
    port: int, pools: dict[str, list[int]], *, listener: Any = None, **pool_opts: Any
) -> dict[str, Any]:
    first = next(iter(pools))
    return {
        "lb": {"workers": 1, "grace": "5s"},
        "listeners": [
            {
                "name": "web",
                "bind": f"127.0.0.1:{port}",
                "mode": "http",
                "pool": first,
                **(listener or {}),
            }
        ],
        "pools": {
            name: {
                "strategy": "round_robin",
                **pool_opts,
                "backends": [{"address": f"127.0.0.1:{p}"} for p in ports],
            }
            for name, ports in pools.items()
        },
    }


def exchange(port: int, data: bytes, timeout: float = 5.0) -> bytes:
    """Send raw bytes, read until the proxy closes the connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        return read_until_close(s)


def status_of(raw: bytes) -> int:
    return int(raw.split(b" ", 2)[1]) if raw.startswith(b"HTTP/1.1 ") else -1


# Bytes read past the end of a response (pipelined responses can share one read), by socket.
_leftover: weakref.WeakKeyDictionary[socket.socket, bytes] = weakref.WeakKeyDictionary()


def recv_response(s: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """Read one Content-Length-framed response from a keep-alive socket."""
    buf = _leftover.pop(s, b"")
    while b"\r\n\r\n" not in buf:
        chunk = s.recv(65536)
        assert chunk, f"closed before a response head: {buf!r}"
        buf += chunk
    head, _, rest = buf.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
    n = int(headers.get("content-length", "0"))
    while len(rest) < n:
        rest += s.recv(65536)
    if len(rest) > n:
        _leftover[s] = rest[n:]
    return int(lines[0].split()[1]), headers, rest[:n]


@pytest.fixture
def two(procs: ProcessGroup) -> tuple[Any, Any]:
    return procs.backend("b1"), procs.backend("b2")


def test_keepalive_reuses_upstream_connections(procs: ProcessGroup, two: Any) -> None:
    port = free_port()
    procs.lb(http_config(port, {"p": [b.port for b in two]}))
    n = 0
    for _ in range(4):
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            for _ in range(50):
                s.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
                status, headers, _ = recv_response(s)
                assert status == 200 and headers["x-request-id"]
                n += 1
    upstream_conns = 0
    for b in two:
        stats = json.loads(exchange(b.port, b"GET /stats HTTP/1.0\r\n\r\n").split(b"\r\n\r\n")[1])
        upstream_conns += stats["connections_total"]
    assert n == 200
    assert upstream_conns <= 8, upstream_conns  # reused, not one per request


def test_pipelined_requests_answered_in_order(procs: ProcessGroup, two: Any) -> None:
    port = free_port()
    procs.lb(http_config(port, {"p": [two[0].port]}))
    req = b"".join(b"GET /status/%d HTTP/1.1\r\nHost: t\r\n\r\n" % code for code in (201, 202, 203))
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(
            req + b"GET /sleep?ms=200 HTTP/1.1\r\nHost: t\r\n\r\nGET /status/204 HTTP/1.1\r\n"
        )
        s.sendall(b"Host: t\r\n\r\n")
        got = [recv_response(s)[0] for _ in range(5)]
    assert got == [201, 202, 203, 200, 204]


def test_forwarding_headers(procs: ProcessGroup, two: Any) -> None:
    port = free_port()
    procs.lb(http_config(port, {"p": [two[0].port]}, listener={"via": "lb"}))
    raw = exchange(
        port,
        b"GET /headers HTTP/1.1\r\nHost: app.test\r\nConnection: close, X-Secret\r\n"
        b"X-Secret: 1\r\nKeep-Alive: 5\r\nX-Forwarded-For: 203.0.113.9\r\n\r\n",
    )
    head, _, body = raw.partition(b"\r\n\r\n")
    seen = json.loads(body)["headers"]
    assert seen["x-forwarded-for"] == "203.0.113.9, 127.0.0.1"
    assert seen["x-forwarded-proto"] == "http"
    assert seen["x-forwarded-host"] == "app.test"
    assert seen["via"] == "1.1 lb"
    assert "x-secret" not in seen and "keep-alive" not in seen
    rid = seen["x-request-id"]
    assert f"X-Request-ID: {rid}".encode() in head  # passed back to the client
    # A client's own request ID is kept.
    raw = exchange(
        port,
        b"GET /headers HTTP/1.1\r\nHost: a\r\nX-Request-ID: abc-123\r\nConnection: close\r\n\r\n",
    )
    assert json.loads(raw.partition(b"\r\n\r\n")[2])["headers"]["x-request-id"] == "abc-123"


def test_head_204_304_framing(procs: ProcessGroup, two: Any) -> None:
    port = free_port()
    procs.lb(http_config(port, {"p": [two[0].port]}))
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"HEAD / HTTP/1.1\r\nHost: t\r\n\r\n")
        buf = b""
        while b"\r\n\r\n" not in buf:
            buf += s.recv(65536)
        assert buf.startswith(b"HTTP/1.1 200") and b"Content-Length: " in buf
        assert buf.endswith(b"\r\n\r\n")  # no body after a HEAD response
        for code in (204, 304):
            s.sendall(b"GET /status/%d HTTP/1.1\r\nHost: t\r\n\r\n" % code)
            status, _, body = recv_response(s)
            assert (status, body) == (code, b"")
        s.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")  # the connection is still in step
        assert recv_response(s)[0] == 200


def test_routing_by_host_and_path(procs: ProcessGroup) -> None:
    api, static, site, default = (procs.backend(n) for n in ("api", "static", "site", "default"))
    port = free_port()
    cfg = http_config(
        port,
        {
            "default": [default.port],
            "api": [api.port],
            "static": [static.port],
            "site": [site.port],
        },
        listener={
            "routes": [
                {"host": "api.example.com", "pool": "api"},
                {"path_prefix": "/static/", "pool": "static"},
                {"host": "*.example.com", "pool": "site"},
            ]
        },
    )
    procs.lb(cfg)
    cases = {
        (b"api.example.com", b"/x"): "api",
        (b"www.example.com", b"/static/a.css"): "static",
        (b"www.example.com", b"/"): "site",
        (b"other.org", b"/"): "default",
    }
    for (host, path), want in cases.items():
        raw = exchange(
            port, b"GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n" % (path, host)
        )
        assert b"X-Backend: " + want.encode() in raw, (host, path, raw[:300])
    # Without a default pool, a request that matches no route gets 404.
    del cfg["listeners"][0]["pool"]
    cfg["listeners"][0]["bind"] = f"127.0.0.1:{(port2 := free_port())}"
    cfg["lb"]["control_socket"] = "run/second.sock"
    cfg["lb"]["state_file"] = "run/second.json"
    procs.lb(cfg, name="lb2")
    assert status_of(exchange(port2, b"GET / HTTP/1.1\r\nHost: other.org\r\n\r\n")) == 404


def test_sticky_cookie(procs: ProcessGroup, two: Any) -> None:
    port = free_port()
    procs.lb(http_config(port, {"p": [b.port for b in two]}, sticky_cookie="LBSRV"))
    raw = exchange(port, b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    cookie = next(
        line.split(b": ", 1)[1].split(b";")[0]
        for line in raw.split(b"\r\n")
        if line.lower().startswith(b"set-cookie: lbsrv=")
    )
    first = raw.split(b"X-Backend: ")[1].split(b"\r\n")[0]
    for _ in range(10):
        raw = exchange(
            port,
            b"GET / HTTP/1.1\r\nHost: t\r\nCookie: a=1; %s\r\nConnection: close\r\n\r\n" % cookie,
        )
        assert raw.split(b"X-Backend: ")[1].split(b"\r\n")[0] == first
        assert b"Set-Cookie" not in raw  # already pinned: no new cookie


def test_consistent_hash_on_header(procs: ProcessGroup) -> None:
    backends = [procs.backend(f"h{i}") for i in range(3)]
    port = free_port()
    procs.lb(
        http_config(
            port,
            {"p": [b.port for b in backends]},
            strategy="consistent_hash",
            hash_key="header:X-User",
        )
    )
    seen: dict[str, set[bytes]] = {}
    for i in range(60):
        user = f"user-{i % 20}"
        raw = exchange(
            port,
            f"GET / HTTP/1.1\r\nHost: t\r\nX-User: {user}\r\nConnection: close\r\n\r\n".encode(),
        )
        seen.setdefault(user, set()).add(raw.split(b"X-Backend: ")[1].split(b"\r\n")[0])
    assert all(len(v) == 1 for v in seen.values()), seen
    assert len(set().union(*seen.values())) >= 2  # keys are spread, not all on one backend


WS_BACKEND = """
import sys
from aiohttp import web
async def ws(request):
    sock = web.WebSocketResponse()
    await sock.prepare(request)
    async for msg in sock:
        await sock.send_str("echo:" + msg.data)
    return sock
app = web.Application()
app.router.add_get("/ws", ws)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=lambda *a: print("up", flush=True))
"""


def test_websocket_echo(procs: ProcessGroup) -> None:
    bport = free_port()
    procs.spawn("ws", [sys.executable, "-c", WS_BACKEND, str(bport)], bport)
    wait_port(bport)
    port = free_port()
    procs.lb(http_config(port, {"p": [bport]}))

    async def talk() -> list[str]:
        async with (
            aiohttp.ClientSession() as session,
            session.ws_connect(f"http://127.0.0.1:{port}/ws") as ws,
        ):
            out = []
            for word in ("one", "two", "three"):
                await ws.send_str(word)
                out.append((await ws.receive(timeout=5)).data)
            return out

    assert asyncio.run(talk()) == ["echo:one", "echo:two", "echo:three"]


def test_retries_hide_a_killed_backend(procs: ProcessGroup, two: Any) -> None:
    # Passive health ejects the dead backend after a few refused connects; until then the
    # retries (within the pool's retry budget) hide it.
    port = free_port()
    passive = {"consecutive_failures": 3}
    procs.lb(http_config(port, {"p": [b.port for b in two]}, retries=2, passive=passive))

    async def load() -> Counter[int]:
        statuses: Counter[int] = Counter()
        async with aiohttp.ClientSession() as session:
            for i in range(400):
                if i == 100:
                    two[1].stop(signal.SIGKILL)
                async with session.get(f"http://127.0.0.1:{port}/") as r:
                    await r.read()
                    statuses[r.status] += 1
        return statuses

    assert asyncio.run(load()) == Counter({200: 400})


def test_large_bodies_stream_both_ways_with_bounded_memory(procs: ProcessGroup, two: Any) -> None:
    port = free_port()
    lb = procs.lb(http_config(port, {"p": [two[0].port]}))
    worker = children(lb.pid)[0]
    before = rss_kib(worker)
    size = 100 * 1024 * 1024
    peak = [0]
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], rss_kib(worker))
            time.sleep(0.05)

    t = threading.Thread(target=watch)
    t.start()
    try:
        # Download: 100 MB, read slowly at first.
        with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
            s.sendall(b"GET /stream?bytes=%d HTTP/1.1\r\nHost: t\r\n\r\n" % size)
            time.sleep(1.0)
            got = 0
            while got < size:
                chunk = s.recv(1 << 20)
                assert chunk
                got += len(chunk)
        # Upload: 100 MB chunked to /echo, which streams it back.
        chunk = b"x" * 65536
        with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
            s.sendall(b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n")
            received = [0]

            def reader() -> None:
                while True:
                    data = s.recv(1 << 20)
                    if not data:
                        return
                    received[0] += len(data)
                    if data.endswith(b"0\r\n\r\n") and received[0] > size:
                        return

            rt = threading.Thread(target=reader)
            rt.start()
            for _ in range(size // len(chunk)):
                s.sendall(b"10000\r\n" + chunk + b"\r\n")
            s.sendall(b"0\r\n\r\n")
            rt.join(60)
            assert received[0] > size
    finally:
        stop.set()
        t.join()
    assert peak[0] - before < 48 * 1024, f"worker RSS grew by {peak[0] - before} KiB"


BAD_REQUESTS = [
    (b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabc", 400),
    (b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: abc\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: t\r\nBad Name: x\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: t\r\nX-A: a\r\n  folded\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nX-A: a\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
    (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: t\r\n\r\n", 414),
    (
        b"GET / HTTP/1.1\r\nHost: t\r\n"
        + b"".join(b"X-%d: v\r\n" % i for i in range(120))
        + b"\r\n",
        431,
    ),
    (b"GET / HTTP/1.1\r\nHost: t\r\nX-Big: " + b"v" * 40000 + b"\r\n\r\n", 431),
    (b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 2000\r\n\r\n", 413),
]


def test_limits_and_smuggling(procs: ProcessGroup, two: Any) -> None:
    port = free_port()
    procs.lb(http_config(port, {"p": [two[0].port]}, listener={"max_body_bytes": 1000}))
    for raw, want in BAD_REQUESTS:
        got = exchange(port, raw)
        assert status_of(got) == want, (raw[:80], got[:200])
        assert b"Connection: close" in got
    # A chunked body that grows past max_body_bytes is cut off with 413 too.
    got = exchange(
        port,
        b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
        + b"400\r\n"
        + b"y" * 1024
        + b"\r\n0\r\n\r\n",
    )
    assert status_of(got) == 413


def test_slowloris_gets_408(procs: ProcessGroup, two: Any) -> None:
    port = free_port()
    procs.lb(http_config(port, {"p": [two[0].port]}, listener={"header_timeout": "1s"}))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        t0 = time.monotonic()
        s.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n")
        for _ in range(10):
            time.sleep(0.2)
            try:
                s.sendall(b"X-Drip: 1\r\n")
            except OSError:
                break
        out = b""
        while chunk := s.recv(4096):
            out += chunk
        assert status_of(out) == 408
        assert time.monotonic() - t0 < 4


def test_upstream_errors_502_503_504(procs: ProcessGroup, two: Any) -> None:
    port = free_port()
    dead = free_port()
    cfg = http_config(
        port,
        {"p": [two[0].port], "gone": [dead], "empty": []},
        listener={
            "response_timeout": "500ms",
            "routes": [
                {"path_prefix": "/gone", "pool": "gone"},
                {"path_prefix": "/empty", "pool": "empty"},
            ],
        },
        retries=1,
    )
    procs.lb(cfg)
    assert status_of(exchange(port, b"GET /gone HTTP/1.1\r\nHost: t\r\n\r\n")) == 502
    got = exchange(port, b"GET /empty HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    assert status_of(got) == 503 and b"Retry-After: " in got
    t0 = time.monotonic()
    assert status_of(exchange(port, b"GET /sleep?ms=3000 HTTP/1.1\r\nHost: t\r\n\r\n")) == 504
    assert time.monotonic() - t0 < 2.5


def test_a_single_backend_is_retried_when_it_drops_a_connection(procs: ProcessGroup) -> None:
    """With one backend there is no other to retry on: the retry goes back to the same one (as
    HAProxy's retries do) instead of answering 502 at once."""
    backend = socket.create_server(("127.0.0.1", 0))
    backend.settimeout(10)
    port = free_port()
    accepted: list[int] = []

    def serve() -> None:
        with backend:
            for n in range(2):
                conn, _ = backend.accept()
                with conn:
                    conn.recv(65536)  # the request
                    accepted.append(n)
                    if n == 0:
                        continue  # closed without a response byte: the keep-alive race
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                    conn.recv(1)  # until lb closes or the test ends

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    procs.lb(http_config(port, {"p": [backend.getsockname()[1]]}, retries=1))
    got = exchange(port, b"GET /x HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    assert status_of(got) == 200 and got.endswith(b"ok"), got
    assert accepted == [0, 1]


def test_expect_100_continue(procs: ProcessGroup, two: Any) -> None:
    port = free_port()
    procs.lb(http_config(port, {"p": [two[0].port]}))
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(
            b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n"
        )
        interim = s.recv(4096)
        assert interim.startswith(b"HTTP/1.1 100"), interim
        s.sendall(b"hello")
        status, _, body = recv_response(s)
        assert (status, body) == (200, b"hello")


def test_access_log_and_real_clients(procs: ProcessGroup, two: Any, tmp_path: Path) -> None:
    port = free_port()
    log = tmp_path / "access.log"
    procs.lb(http_config(port, {"p": [b.port for b in two]}, listener={"access_log": str(log)}))
    if shutil.which("curl"):
        out = subprocess.run(
            ["curl", "-s", "-i", f"http://127.0.0.1:{port}/"],
            capture_output=True,
            timeout=10,
            check=True,
        ).stdout
        assert out.startswith(b"HTTP/1.1 200")
    if shutil.which("wrk"):
        out = subprocess.run(
            ["wrk", "-t1", "-c8", "-d1s", f"http://127.0.0.1:{port}/"],
            capture_output=True,
            text=True,
            timeout=20,
            check=True,
        ).stdout
        assert "Non-2xx" not in out and "Socket errors" not in out, out
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not log.exists():
        time.sleep(0.1)
    time.sleep(1.5)  # flushed about once a second
    entries = [json.loads(line) for line in log.read_text().splitlines()]
    assert entries and entries[0]["status"] == 200
    assert set(entries[0]) >= {
        "time",
        "client",
        "method",
        "path",
        "status",
        "bytes_in",
        "backend",
        "upstream_time",
        "total_time",
        "request_id",
        "retries",
    }
