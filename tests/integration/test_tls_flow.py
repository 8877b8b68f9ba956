"""The TLS connection layer (``lb/proxy/tlsconn.py``) end to end: flow control both ways and
the close path, with lb as a real process and Python's ``ssl`` as the client.

- A big response to a TLS client that does not read keeps the worker's memory bounded (the
  socket's write buffer pauses the backend), and then arrives whole.
- A big upload over TLS streams through (reading pauses while the backend is slow to take it).
- A response that ends the connection ends it with ``close_notify``: a client that treats a
  bare FIN as an error (``suppress_ragged_eofs=False``) reads a clean end.
- A response cut short by its backend aborts the client connection: no ``close_notify``, so
  the client can tell the body is truncated.
- Several keep-alive requests and pipelined requests in one TLS record each get their answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import signal
import socket
import ssl
import threading
import time
from pathlib import Path

import pytest

from tests.certs import Authority
from tests.helpers import ProcessGroup, children, free_port, rss_kib
from tests.integration.test_tls import client_context, tls_config

MIB = 1024 * 1024


@pytest.fixture
def ca(tmp_path: Path) -> Authority:
    return Authority(tmp_path / "certs")


def _connect(port: int, ctx: ssl.SSLContext, timeout: float = 30) -> ssl.SSLSocket:
    raw = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    return ctx.wrap_socket(raw, server_hostname="a.test", suppress_ragged_eofs=False)


def _read_head(s: ssl.SSLSocket) -> tuple[bytes, bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(65536)
        assert chunk, data
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    return head, rest


class Peak(threading.Thread):
    """The highest RSS of a process while it runs."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.peak = rss_kib(pid)
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.05):
            self.peak = max(self.peak, rss_kib(self.pid))

    def stop(self) -> int:
        self.done.set()
        self.join()
        return self.peak


def test_big_response_to_a_slow_tls_reader_keeps_memory_bounded(
    procs: ProcessGroup, ca: Authority
) -> None:
    pair = ca.issue("a", "a.test")
    be = procs.backend("be")
    port = free_port()
    lb = procs.lb(tls_config(port, be.port, [pair]))
    worker = children(lb.pid)[0]
    ctx = client_context(ca)
    size = 64 * MIB
    with _connect(port, ctx) as s:  # warm up the worker's allocator
        s.sendall(b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n")
        _read_head(s)
    peak = Peak(worker)
    before = peak.peak
    peak.start()
    try:
        with _connect(port, ctx) as s:
            s.sendall(b"GET /stream?bytes=%d HTTP/1.1\r\nHost: a.test\r\n\r\n" % size)
            time.sleep(1.5)  # not reading: the backend must be paused, not buffered
            stalled = rss_kib(worker) - before
            head, body = _read_head(s)
            assert head.startswith(b"HTTP/1.1 200")
            got = len(body)
            while got < size:
                chunk = s.recv(MIB)
                assert chunk
                got += len(chunk)
            assert got == size
    finally:
        grown = peak.stop() - before
    assert stalled < 16 * 1024, f"the worker buffered {stalled} KiB for a client not reading"
    assert grown < 32 * 1024, f"worker RSS grew by {grown} KiB for a {size >> 20} MiB body"


def test_big_upload_streams_through_tls(procs: ProcessGroup, ca: Authority) -> None:
    pair = ca.issue("a", "a.test")
    be = procs.backend("be")
    port = free_port()
    lb = procs.lb(tls_config(port, be.port, [pair]))
    worker = children(lb.pid)[0]
    ctx = client_context(ca)
    size = 48 * MIB
    block = bytes(range(256)) * 256  # 64 KiB

    async def upload() -> tuple[str, str, int]:
        sent, echoed = hashlib.sha256(), hashlib.sha256()
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=ctx, server_hostname="a.test"
        )
        writer.write(b"POST /echo HTTP/1.1\r\nHost: a.test\r\nContent-Length: %d\r\n\r\n" % size)

        async def send() -> None:
            for _ in range(size // len(block)):
                writer.write(block)
                sent.update(block)
                await writer.drain()

        async def receive() -> int:
            head = await reader.readuntil(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200"), head
            got = 0
            while got < size:
                chunk = await reader.read(MIB)
                if not chunk:
                    break
                echoed.update(chunk)
                got += len(chunk)
            return got

        async with asyncio.timeout(120):
            _, got = await asyncio.gather(send(), receive())
        writer.close()
        with contextlib.suppress(OSError, ssl.SSLError):
            await writer.wait_closed()
        return sent.hexdigest(), echoed.hexdigest(), got

    peak = Peak(worker)
    before = peak.peak
    peak.start()
    try:
        sent, echoed, got = asyncio.run(upload())
    finally:
        grown = peak.stop() - before
    assert got == size
    assert echoed == sent
    assert grown < 48 * 1024, f"worker RSS grew by {grown} KiB for a {size >> 20} MiB upload"


def test_a_closing_response_ends_with_close_notify(procs: ProcessGroup, ca: Authority) -> None:
    pair = ca.issue("a", "a.test")
    be = procs.backend("be")
    port = free_port()
    procs.lb(tls_config(port, be.port, [pair]))
    ctx = client_context(ca)
    with _connect(port, ctx, timeout=10) as s:
        # two keep-alive requests, then two pipelined in one record, the last one closing
        for _ in range(2):
            s.sendall(b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n")
            head, _ = _read_head(s)
            assert head.startswith(b"HTTP/1.1 200")
        s.sendall(
            b"GET /status/204 HTTP/1.1\r\nHost: a.test\r\n\r\n"
            b"GET / HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n"
        )
        data = b""
        while True:
            chunk = s.recv(65536)  # SSLEOFError on a FIN without close_notify
            if not chunk:
                break
            data += chunk
        assert data.startswith(b"HTTP/1.1 204")
        assert data.count(b"HTTP/1.1 ") == 2
        assert b'"backend":"be"' in data


def test_a_response_cut_short_aborts_without_close_notify(
    procs: ProcessGroup, ca: Authority
) -> None:
    pair = ca.issue("a", "a.test")
    be = procs.backend("be")
    port = free_port()
    procs.lb(tls_config(port, be.port, [pair]))
    ctx = client_context(ca)
    with _connect(port, ctx, timeout=10) as s:
        s.sendall(b"GET /stream?bytes=%d HTTP/1.1\r\nHost: a.test\r\n\r\n" % (256 * MIB))
        head, _ = _read_head(s)
        assert b"Content-Length: %d" % (256 * MIB) in head
        be.stop(signal.SIGKILL)
        got = 0
        with pytest.raises((ssl.SSLEOFError, ConnectionResetError)):
            while s.recv(MIB):
                got += 1
                assert got < 10_000
