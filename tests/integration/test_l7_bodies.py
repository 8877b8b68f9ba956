"""End to end: big bodies through lb, both ways, with slow readers on either side.

The worker relays response bodies from one read buffer it shares between all its backend
connections (``lb.proxy.exchange.ReadBuffer``), so these tests check what that must never
break: every byte arrives, in order, unchanged (random bodies, compared by digest), for two
downloads at once where one client reads slowly and the other fast, for Content-Length and
chunked bodies; an upload to a backend that starts reading late arrives whole; and the
worker's memory stays bounded meanwhile (flow control pauses the side that is ahead).
"""

from __future__ import annotations

import hashlib
import random
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.certs import Authority
from tests.helpers import ProcessGroup, children, free_port, rss_kib

SIZE = 16 * 1024 * 1024


def body_of(seed: int, size: int) -> bytes:
    return random.Random(seed).randbytes(size)


def read_head(f: Any) -> tuple[bytes, dict[bytes, bytes]]:
    line = f.readline()
    headers = {}
    while True:
        h = f.readline()
        if h in (b"\r\n", b""):
            break
        name, _, value = h.partition(b":")
        headers[name.strip().lower()] = value.strip()
    return line, headers


def read_body(f: Any, headers: dict[bytes, bytes], slow: bool) -> bytes:
    """The body, de-chunked; ``slow``: read 64 KiB at a time with pauses for the first MiBs."""
    out = bytearray()
    pauses = 40 if slow else 0

    def take(n: int) -> None:
        nonlocal pauses
        while n:
            piece = f.read(min(n, 65536))
            assert piece, "the connection closed inside the body"
            out.extend(piece)
            n -= len(piece)
            if pauses:
                pauses -= 1
                time.sleep(0.02)

    if headers.get(b"transfer-encoding") == b"chunked":
        while True:
            size = int(f.readline().split(b";")[0], 16)
            if size == 0:
                assert f.readline() == b"\r\n"
                break
            take(size)
            assert f.readline() == b"\r\n"
    else:
        take(int(headers[b"content-length"]))
    return bytes(out)


class Backend:
    """A raw-socket backend, keep-alive: ``GET /down?seed=S&chunked=C`` answers ``SIZE``
    random bytes (seeded; chunked in random chunk sizes when C is 1); ``POST /up`` waits a
    second before it reads the body, then answers its SHA-256."""

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        if tls is not None:
            self.sock = tls.wrap_socket(self.sock, server_side=True)
        self.port = self.sock.getsockname()[1]
        self.threads: list[threading.Thread] = []
        self.closed = False
        t = threading.Thread(target=self.accept, daemon=True)
        t.start()

    def accept(self) -> None:
        while not self.closed:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            t = threading.Thread(target=self.serve, args=(conn,), daemon=True)
            t.start()
            self.threads.append(t)

    def serve(self, conn: socket.socket) -> None:
        with conn, conn.makefile("rb") as f:
            while True:
                line, headers = read_head(f)
                if not line:
                    return
                target = line.split()[1]
                if target.startswith(b"/up"):
                    time.sleep(1.0)  # the client's bytes back up meanwhile
                    digest = hashlib.sha256(read_body(f, headers, slow=True)).hexdigest()
                    answer = digest.encode()
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 64\r\n\r\n" + answer)
                    continue
                query = dict(p.split(b"=") for p in target.partition(b"?")[2].split(b"&"))
                body = body_of(int(query[b"seed"]), SIZE)
                if query[b"chunked"] == b"1":
                    conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
                    rng = random.Random(7)
                    pos = 0
                    while pos < len(body):
                        n = rng.randint(1, 200_000)
                        piece = body[pos : pos + n]
                        conn.sendall(b"%x\r\n" % len(piece) + piece + b"\r\n")
                        pos += n
                    conn.sendall(b"0\r\n\r\n")
                else:
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body))
                    view = memoryview(body)
                    for i in range(0, len(body), 1 << 20):
                        conn.sendall(view[i : i + (1 << 20)])

    def close(self) -> None:
        self.closed = True
        self.sock.close()


@pytest.fixture
def backend() -> Iterator[Backend]:
    b = Backend()
    yield b
    b.close()


def lb_config(port: int, backend_port: int, **pool: Any) -> dict[str, Any]:
    return {
        "lb": {"workers": 1, "grace": "5s"},
        "listeners": [{"name": "web", "bind": f"127.0.0.1:{port}", "mode": "http", "pool": "p"}],
        "pools": {"p": {**pool, "backends": [{"address": f"127.0.0.1:{backend_port}"}]}},
    }


class PeakRss:
    """The worker's peak RSS while the block runs, sampled every 20 ms."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.before = rss_kib(pid)
        self.peak = self.before
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.watch)

    def watch(self) -> None:
        while not self.stop.is_set():
            self.peak = max(self.peak, rss_kib(self.pid))
            time.sleep(0.02)

    def __enter__(self) -> PeakRss:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()

    @property
    def growth_kib(self) -> int:
        return self.peak - self.before


def download(port: int, seed: int, chunked: int, slow: bool, results: dict[int, bytes]) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s, s.makefile("rb") as f:
        s.sendall(b"GET /down?seed=%d&chunked=%d HTTP/1.1\r\nHost: t\r\n\r\n" % (seed, chunked))
        if slow:
            time.sleep(1.0)  # lb must stop reading the backend, not buffer the body
        line, headers = read_head(f)
        assert line.startswith(b"HTTP/1.1 200"), line
        results[seed] = hashlib.sha256(read_body(f, headers, slow)).digest()
        # The connection stays usable: a second request on it is answered too.
        s.sendall(b"GET /down?seed=%d&chunked=0 HTTP/1.1\r\nHost: t\r\n\r\n" % (seed + 100))
        line, headers = read_head(f)
        results[seed + 100] = hashlib.sha256(read_body(f, headers, False)).digest()


@pytest.mark.parametrize("chunked", [0, 1], ids=["content-length", "chunked"])
def test_downloads_arrive_exactly_with_one_slow_and_one_fast_reader(
    procs: ProcessGroup, backend: Backend, chunked: int
) -> None:
    port = free_port()
    lb = procs.lb(lb_config(port, backend.port))
    worker = children(lb.pid)[0]
    results: dict[int, bytes] = {}
    with PeakRss(worker) as rss:
        threads = [
            threading.Thread(target=download, args=(port, seed, chunked, seed == 1, results))
            for seed in (1, 2)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
    for seed in (1, 2, 101, 102):
        assert results.get(seed) == hashlib.sha256(body_of(seed, SIZE)).digest(), seed
    assert rss.growth_kib < 24 * 1024, f"worker RSS grew by {rss.growth_kib} KiB"


def test_upload_to_a_backend_that_reads_late_arrives_exactly(
    procs: ProcessGroup, backend: Backend
) -> None:
    port = free_port()
    lb = procs.lb(lb_config(port, backend.port))
    worker = children(lb.pid)[0]
    body = body_of(5, SIZE)
    with PeakRss(worker) as rss, socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(b"POST /up HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % SIZE)
        s.sendall(body)
        with s.makefile("rb") as f:
            line, headers = read_head(f)
            answer = read_body(f, headers, False)
    assert line.startswith(b"HTTP/1.1 200"), line
    assert answer == hashlib.sha256(body).hexdigest().encode()
    assert rss.growth_kib < 24 * 1024, f"worker RSS grew by {rss.growth_kib} KiB"


def test_downloads_from_a_tls_backend_arrive_exactly(procs: ProcessGroup, tmp_path: Path) -> None:
    """uvloop's TLS transport reads into the same buffer (decrypted) and hands it on alike."""
    ca = Authority(tmp_path / "pki")
    pair = ca.issue("backend", "backend.test")
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(pair.cert, pair.key)
    b = Backend(ctx)
    try:
        port = free_port()
        tls = {"tls": True, "tls_ca": str(ca.ca_pem), "tls_server_name": "backend.test"}
        procs.lb(lb_config(port, b.port, **tls))
        results: dict[int, bytes] = {}
        download(port, 3, 0, True, results)
    finally:
        b.close()
    for seed in (3, 103):
        assert results.get(seed) == hashlib.sha256(body_of(seed, SIZE)).digest(), seed
