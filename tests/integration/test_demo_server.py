"""The demo backend (``python -m lb.demo_server``) as a real process, driven by real clients."""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httptools
import orjson
import pytest

ROOT = Path(__file__).resolve().parents[2]
NAME = "be-1"


@dataclass
class Backend:
    proc: subprocess.Popen[str]
    port: int

    def connect(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)

    def socket(self) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.port), timeout=5)


@contextlib.contextmanager
def run_backend(*args: str) -> Iterator[Backend]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "lb.demo_server", "--port", "0", *args],
        stdout=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        cwd=ROOT,
        env=env,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("listening on 127.0.0.1:"), f"unexpected first line: {line!r}"
        yield Backend(proc, int(line.rsplit(":", 1)[1]))
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


@pytest.fixture(scope="module")
def backend() -> Iterator[Backend]:
    with run_backend("--name", NAME) as b:
        yield b


@pytest.fixture
def conn(backend: Backend) -> Iterator[http.client.HTTPConnection]:
    c = backend.connect()
    try:
        yield c
    finally:
        c.close()


@dataclass
class Response:
    status: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""


class _Collector:
    """httptools callbacks that gather whole responses from a raw byte stream."""

    def __init__(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.done: list[Response] = []
        self.current = Response()

    def on_header(self, name: bytes, value: bytes) -> None:
        self.current.headers[name.decode().lower()] = value.decode()

    def on_headers_complete(self) -> None:
        self.current.status = self.parser.get_status_code()

    def on_body(self, body: bytes) -> None:
        self.current.body += body

    def on_message_complete(self) -> None:
        self.done.append(self.current)
        self.current = Response()


def read_responses(sock: socket.socket, count: int) -> list[Response]:
    """Read exactly ``count`` whole responses from ``sock``."""
    collector = _Collector()
    while len(collector.done) < count:
        data = sock.recv(65536)
        assert data, f"connection closed after {len(collector.done)} of {count} responses"
        collector.parser.feed_data(data)
    return collector.done


def read_heads(sock: socket.socket, count: int) -> list[Response]:
    """Read ``count`` bodiless (HEAD) responses, and check nothing else arrives."""
    data = b""
    while data.count(b"\r\n\r\n") < count:
        chunk = sock.recv(65536)
        assert chunk, "connection closed early"
        data += chunk
    messages = data.split(b"\r\n\r\n")
    assert len(messages) == count + 1
    assert messages[-1] == b"", f"bytes after the last head: {messages[-1]!r}"
    heads = []
    for message in messages[:-1]:
        status_line, *header_lines = message.decode().split("\r\n")
        fields = (line.split(": ", 1) for line in header_lines)
        heads.append(Response(int(status_line.split()[1]), {k.lower(): v for k, v in fields}))
    return heads


def get(conn: http.client.HTTPConnection, path: str, method: str = "GET") -> Response:
    conn.request(method, path)
    resp = conn.getresponse()
    headers = {k.lower(): v for k, v in resp.getheaders()}
    return Response(resp.status, headers, resp.read())


def test_identity_body_and_header(backend: Backend, conn: http.client.HTTPConnection) -> None:
    resp = get(conn, "/")
    assert resp.status == 200
    assert resp.headers["x-backend"] == NAME
    assert resp.body == b'{"backend":"%s","port":%d}\n' % (NAME.encode(), backend.port)
    assert orjson.loads(resp.body) == {"backend": NAME, "port": backend.port}


def test_default_name_is_host_and_port() -> None:
    with run_backend() as b, contextlib.closing(b.connect()) as c:
        resp = get(c, "/")
        assert resp.headers["x-backend"] == f"127.0.0.1:{b.port}"
        assert orjson.loads(resp.body)["backend"] == f"127.0.0.1:{b.port}"


def test_keep_alive_reuses_one_connection(conn: http.client.HTTPConnection) -> None:
    conn.connect()
    assert conn.sock is not None
    first_socket = conn.sock
    local = first_socket.getsockname()
    for path in ["/", "/healthz", "/status/404", "/headers"] * 25:
        resp = get(conn, path)
        assert resp.headers.get("connection") is None  # HTTP/1.1: persistent by default
        assert conn.sock is first_socket
    assert first_socket.getsockname() == local


def test_pipelined_requests_answered_in_order(backend: Backend) -> None:
    # The first request is the slowest: its answer must still come first.
    requests = (
        b"GET /sleep?ms=50 HTTP/1.1\r\nHost: t\r\n\r\n"
        b"GET /status/404 HTTP/1.1\r\nHost: t\r\n\r\n"
        b"GET / HTTP/1.1\r\nHost: t\r\n\r\n"
    )
    with backend.socket() as sock:
        sock.sendall(requests)
        responses = read_responses(sock, 3)
    assert [r.status for r in responses] == [200, 404, 200]
    assert responses[0].body == b"slept 50 ms\n"
    assert responses[1].body == b"404 Not Found\n"
    assert orjson.loads(responses[2].body)["backend"] == NAME


def test_connection_close_and_http10(backend: Backend) -> None:
    with backend.socket() as sock:
        sock.sendall(
            b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\nGET / HTTP/1.1\r\n\r\n"
        )
        (resp,) = read_responses(sock, 1)
        assert resp.headers["connection"] == "close"
        assert sock.recv(1024) == b""  # closed, and the second request was not answered
    with backend.socket() as sock:
        sock.sendall(
            b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET /healthz HTTP/1.0\r\n\r\n"
        )
        first, second = read_responses(sock, 2)
        assert first.headers["connection"] == "keep-alive"
        assert second.headers["connection"] == "close"
        assert second.body == b"ok"
        assert sock.recv(1024) == b""


def test_size_pads_body_to_exact_length() -> None:
    with run_backend("--name", "big", "--size", "5000") as b, contextlib.closing(b.connect()) as c:
        resp = get(c, "/")
        line = b'{"backend":"big","port":%d}\n' % b.port
        assert len(resp.body) == 5000
        assert resp.body.startswith(line)
        assert resp.headers["content-length"] == "5000"
        assert get(c, "/", "HEAD").headers["content-length"] == "5000"


def test_echo_chunked_body(conn: http.client.HTTPConnection) -> None:
    chunks = [b"hello ", b"chunked ", b"world" * 1000]
    conn.request("POST", "/echo", body=iter(chunks), encode_chunked=True)
    resp = conn.getresponse()
    assert resp.status == 200
    assert resp.getheader("Transfer-Encoding") == "chunked"
    assert resp.read() == b"".join(chunks)


def test_echo_content_length_body(conn: http.client.HTTPConnection) -> None:
    body = os.urandom(300_000)
    conn.request("PUT", "/echo", body=body)
    resp = conn.getresponse()
    assert resp.getheader("Content-Length") == str(len(body))
    assert resp.read() == body


def test_bodies_are_discarded_and_counted(conn: http.client.HTTPConnection) -> None:
    before = orjson.loads(get(conn, "/stats").body)["body_bytes"]
    conn.request("POST", "/", body=b"x" * 100_000)
    assert orjson.loads(conn.getresponse().read())["backend"] == NAME
    assert orjson.loads(get(conn, "/stats").body)["body_bytes"] - before == 100_000


def test_healthz(conn: http.client.HTTPConnection) -> None:
    resp = get(conn, "/healthz")
    assert (resp.status, resp.body) == (200, b"ok")


def test_head_sends_headers_only(backend: Backend) -> None:
    with backend.socket() as sock:
        sock.sendall(b"HEAD / HTTP/1.1\r\nHost: t\r\n\r\nHEAD /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
        first, second = read_heads(sock, 2)
    expected = len(b'{"backend":"%s","port":%d}\n' % (NAME.encode(), backend.port))
    assert (first.status, first.headers["content-length"]) == (200, str(expected))
    assert (second.status, second.headers["content-length"]) == (200, "2")


def test_headers_and_status(conn: http.client.HTTPConnection) -> None:
    conn.request("GET", "/headers", headers={"X-Test": "1"})
    seen = orjson.loads(conn.getresponse().read())
    assert seen["headers"]["x-test"] == "1"
    assert seen["method"] == "GET"
    assert get(conn, "/status/503").status == 503
    assert get(conn, "/status/204").body == b""


def test_stream_with_backpressure(conn: http.client.HTTPConnection) -> None:
    conn.request("GET", "/stream?bytes=3000000")
    resp = conn.getresponse()
    assert resp.getheader("Content-Length") == "3000000"
    total = 0
    while chunk := resp.read(65536):
        total += len(chunk)
        if total < 300_000:
            time.sleep(0.01)  # a slow reader for a while: the server must wait, not fail
    assert total == 3_000_000
    assert get(conn, "/healthz").body == b"ok"


def test_sigterm_exits_zero_quickly() -> None:
    with run_backend("--name", "term") as b, b.socket() as idle:
        idle.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        read_responses(idle, 1)
        started = time.monotonic()
        b.proc.send_signal(signal.SIGTERM)
        assert b.proc.wait(5) == 0
        assert time.monotonic() - started < 1.5
        assert idle.recv(1024) == b""  # the idle keep-alive connection was closed
