"""End to end: lb as a real process in tcp mode, real demo backends, real sockets."""

from __future__ import annotations

import collections
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import Any

import pytest

from tests.helpers import ProcessGroup, children, free_port, http_get, rss_kib, to_toml, wait_port


def lb_config(port: int, backends: list[tuple[int, int]], **pool: Any) -> dict[str, Any]:
    lb_section = pool.pop("lb", {})
    listener = pool.pop("listener", {})
    return {
        "lb": {"workers": 2, "grace": "10s", **lb_section},
        "listeners": [
            {"name": "t", "bind": f"127.0.0.1:{port}", "mode": "tcp", "pool": "p", **listener}
        ],
        "pools": {
            "p": {
                "strategy": "weighted",
                "retries": 2,
                **pool,
                "backends": [{"address": f"127.0.0.1:{bp}", "weight": w} for bp, w in backends],
            }
        },
    }


def test_weighted_distribution_over_new_connections(procs: ProcessGroup) -> None:
    backends = [procs.backend(f"b{i}") for i in range(3)]
    weights = [1, 2, 3]
    port = free_port()
    procs.lb(lb_config(port, [(b.port, w) for b, w in zip(backends, weights, strict=True)]))
    counts: collections.Counter[str] = collections.Counter()
    n = 3000
    for _ in range(n):
        status, headers, _ = http_get(port)
        assert status == 200
        counts[headers["x-backend"]] += 1
    total_w = sum(weights)
    for b, w in zip(backends, weights, strict=True):
        share = counts[b.name] / n
        # Two workers each run smooth WRR; the kernel spreads connections between them, so the
        # share per backend is exact per worker and close to exact overall.
        assert abs(share - w / total_w) <= 0.05, (counts, b.name)


def test_round_robin_reaches_every_backend(procs: ProcessGroup) -> None:
    backends = [procs.backend(f"r{i}") for i in range(3)]
    port = free_port()
    procs.lb(lb_config(port, [(b.port, 1) for b in backends], strategy="round_robin"))
    seen = {http_get(port)[1]["x-backend"] for _ in range(30)}
    assert seen == {b.name for b in backends}


def test_connect_failure_retries_next_backend(procs: ProcessGroup) -> None:
    live = procs.backend("live")
    dead_port = free_port()  # nothing listens here: connect is refused
    port = free_port()
    procs.lb(lb_config(port, [(dead_port, 1), (live.port, 1)], strategy="round_robin"))
    for _ in range(20):
        status, headers, _ = http_get(port)
        assert (status, headers["x-backend"]) == (200, "live")


def test_no_reachable_backend_closes_client(procs: ProcessGroup) -> None:
    port = free_port()
    procs.lb(lb_config(port, [(free_port(), 1), (free_port(), 1)], retries=1))
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert s.recv(100) == b""  # closed without an answer


def test_half_close_is_relayed(procs: ProcessGroup) -> None:
    """The client shuts down its write side after the request; the reply still arrives."""
    b = procs.backend("hc")
    port = free_port()
    procs.lb(lb_config(port, [(b.port, 1)]))
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        s.shutdown(socket.SHUT_WR)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    assert data.startswith(b"HTTP/1.1 200")
    assert b"hc" in data


def test_idle_timeout_closes_silent_connection(procs: ProcessGroup) -> None:
    b = procs.backend("idle")
    port = free_port()
    procs.lb(lb_config(port, [(b.port, 1)], listener={"idle_timeout": "500ms"}))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        t0 = time.monotonic()
        assert s.recv(10) == b""
        elapsed = time.monotonic() - t0
    # Detection is at most two timer periods late by design (one integer per chunk).
    assert 0.4 < elapsed < 3.0


def test_sigterm_lets_transfer_finish(procs: ProcessGroup) -> None:
    b = procs.backend("slow", "--latency", "1500")
    port = free_port()
    lb = procs.lb(lb_config(port, [(b.port, 1)]))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        time.sleep(0.3)  # the request is in flight at the backend
        lb.popen.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        # New connections are refused while the old one finishes.
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    assert data.startswith(b"HTTP/1.1 200"), data[:200]
    assert lb.popen.wait(15) == 0


def test_worker_that_dies_is_restarted(procs: ProcessGroup) -> None:
    b = procs.backend("wr")
    port = free_port()
    lb = procs.lb(lb_config(port, [(b.port, 1)]))
    kids = _wait_children(lb.pid, 2)
    victim = kids[0]
    subprocess.run(["kill", "-KILL", str(victim)], check=True)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        now = children(lb.pid)
        if len(now) == 2 and victim not in now:
            break
        time.sleep(0.1)
    else:
        raise AssertionError(f"worker not restarted: {children(lb.pid)}")
    wait_port(port)
    for _ in range(10):
        assert http_get(port)[0] == 200
    assert "restarting" in lb.output()


def test_backpressure_bounds_memory(procs: ProcessGroup) -> None:
    """A client that stops reading while the backend streams 200 MB: lb's RSS stays bounded."""
    b = procs.backend("big")
    port = free_port()
    lb = procs.lb(lb_config(port, [(b.port, 1)], lb={"workers": 1}))
    worker = _wait_children(lb.pid, 1)[0]
    before = rss_kib(worker)
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    try:
        s.sendall(b"GET /stream?bytes=200000000 HTTP/1.1\r\nHost: x\r\n\r\n")
        s.recv(1024)  # the stream started
        time.sleep(2.0)  # the client reads nothing more; the backend keeps trying to send
        grown = rss_kib(worker) - before
        # Without flow control the worker would buffer most of 200 MB within two seconds.
        assert grown < 32 * 1024, f"worker RSS grew by {grown} KiB"
        # Reading resumes the flow: the whole body arrives.
        got = 1024
        t0 = time.monotonic()
        while got < 200_000_000 and time.monotonic() - t0 < 60:
            chunk = s.recv(1 << 20)
            if not chunk:
                break
            got += len(chunk)
        assert got >= 200_000_000
    finally:
        s.close()


def test_bad_config_is_refused_with_field_path(tmp_path: Any) -> None:
    port = free_port()
    cfg = lb_config(port, [(9001, 1), (9002, -3)])
    path = tmp_path / "bad.toml"
    path.write_text(to_toml(cfg))
    for cmd in (["check"], ["run"]):
        r = subprocess.run(
            [sys.executable, "-m", "lb", *cmd, "-c", str(path)],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert r.returncode == 2
        assert str(path) in r.stderr
        assert "pools.p.backends[1].weight" in r.stderr
        assert "-3" in r.stderr
        assert "greater than or equal to 0" in r.stderr
    # Nothing bound the port.
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))


def _wait_children(pid: int, n: int, timeout: float = 10.0) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        kids = children(pid)
        if len(kids) >= n:
            return kids
        time.sleep(0.05)
    raise AssertionError(f"expected {n} workers, found {children(pid)}")


def test_concurrent_clients_all_answered(procs: ProcessGroup) -> None:
    backends = [procs.backend(f"c{i}") for i in range(2)]
    port = free_port()
    procs.lb(lb_config(port, [(b.port, 1) for b in backends], strategy="least_conn"))
    errors: list[BaseException] = []

    def client() -> None:
        try:
            for _ in range(50):
                assert http_get(port)[0] == 200
        except BaseException as exc:  # collected and re-raised in the main thread
            errors.append(exc)

    threads = [threading.Thread(target=client) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors[:3]
