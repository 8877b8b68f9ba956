"""``send_proxy`` together with ``tls = true`` on a pool (HAProxy's ``ssl send-proxy-v2``), end
to end with a real peer: nginx listening with ``ssl proxy_protocol``, a certificate made at
test time, verification on against the test CA.

lb connects in plain TCP, writes the PROXY header, then starts TLS on the same connection. The
backend must see the address of the client lb saw (a client bound to 127.0.0.2 or .3, never
lb's own source address 127.0.0.1) and a TLS connection with our SNI, in http and tcp mode;
a backend whose certificate does not match the name gets no request (502, and the worker's log
line names the verification error).
"""

from __future__ import annotations

import contextlib
import json
import re
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lb.proxyproto import parse
from tests.certs import Authority, Pair
from tests.helpers import Proc, ProcessGroup, free_port, wait_port
from tests.integration.edge_peers import nginx, request_from


def nginx_tls_proxy_protocol(procs: ProcessGroup, pair: Pair) -> int:
    """An HTTPS backend that requires a PROXY header before its TLS handshake, and answers
    with the address the header carried, the SNI it got and the TLS version."""
    port = free_port()
    nginx(
        procs,
        f"nginx-tls-pp-{port}",
        f"""
    server {{
        listen 127.0.0.1:{port} ssl proxy_protocol;
        ssl_certificate {pair.cert};
        ssl_certificate_key {pair.key};
        location / {{
            default_type text/plain;
            return 200 "client=$proxy_protocol_addr sni=$ssl_server_name tls=$ssl_protocol\\n";
        }}
    }}""",
    )
    wait_port(port)
    return port


def body_of(answer: bytes) -> str:
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), answer
    return body.decode()


def status_of(answer: bytes) -> int:
    assert answer.startswith(b"HTTP/1.1 "), answer
    return int(answer.split(b" ", 2)[1])


def health_of(lb: Proc, pool: str) -> list[str]:
    r = subprocess.run(
        [sys.executable, "-m", "lb.control.lbctl", "-c", str(lb.extra["config_path"]),
         "--json", "backends", pool],
        capture_output=True, text=True, timeout=10, check=True,
    )  # fmt: skip
    return [b["health"] for b in json.loads(r.stdout)["backends"]]


def wait_for_line(lb: Proc, needle: str, timeout: float = 5.0) -> str:
    deadline = time.monotonic() + timeout
    while needle not in lb.output() and time.monotonic() < deadline:
        time.sleep(0.05)
    lines = [x for x in lb.output().splitlines() if needle in x]
    assert lines, f"no log line with {needle!r}:\n{lb.output()}"
    return lines[0]


@pytest.mark.parametrize("version", ["v2", "v1"])
def test_proxy_header_then_tls_reaches_nginx_in_http_and_tcp_mode(
    procs: ProcessGroup, tmp_path: Path, version: str
) -> None:
    ca = Authority(tmp_path / "certs")
    backend = nginx_tls_proxy_protocol(procs, ca.issue("nginx", "backend.test"))
    web, raw, wrong = free_port(), free_port(), free_port()
    pool: dict[str, Any] = {
        "send_proxy": version,
        "tls": True,
        "tls_ca": str(ca.ca_pem),
        "tls_server_name": "backend.test",
        "backends": [{"address": f"127.0.0.1:{backend}"}],
    }
    cfg: dict[str, Any] = {
        "lb": {"workers": 1},
        "listeners": [
            {"name": "web", "bind": f"127.0.0.1:{web}", "mode": "http", "pool": "pp"},
            {"name": "raw", "bind": f"127.0.0.1:{raw}", "mode": "tcp", "pool": "pp"},
            {"name": "wrong", "bind": f"127.0.0.1:{wrong}", "mode": "http", "pool": "mismatch"},
        ],
        "pools": {
            "pp": pool,
            # the same backend, verified against a name its certificate does not have
            "mismatch": {**pool, "tls_server_name": "other.test", "retries": 0},
        },
    }
    # a tcp check sends a LOCAL/UNKNOWN PROXY header, then its verified handshake: without
    # the header nginx would refuse the ClientHello and the backend would never come up
    cfg["pools"]["pp"]["health"] = {"type": "tcp", "interval": "200ms"}
    lb = procs.lb(cfg)
    assert health_of(lb, "pp") == ["up"]
    for source in ("127.0.0.2", "127.0.0.3"):
        for _ in range(2):  # a second request: a new connection, never another client's
            body = body_of(request_from(source, web, "/"))
            assert re.fullmatch(
                rf"client={re.escape(source)} sni=backend\.test tls=TLSv1\.[23]\n", body
            )
        # tcp mode: the client's bytes go on inside TLS, after the header
        body = body_of(request_from(source, raw, "/"))
        assert re.fullmatch(
            rf"client={re.escape(source)} sni=backend\.test tls=TLSv1\.[23]\n", body
        )

    assert status_of(request_from("127.0.0.2", wrong, "/")) == 502
    line = wait_for_line(lb, "certificate verification failed")
    assert "pool mismatch" in line and "other.test" in line, line


def _recv_exactly(conn: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = conn.recv(n - len(data))
        assert chunk, "closed early"
        data += chunk
    return data


@contextlib.contextmanager
def server_first_backend(pair: Pair) -> Iterator[int]:
    """A TLS backend behind a PROXY v2 header that speaks first (as SMTP, IMAP or MySQL do):
    its banner names the client the header carried, right after the handshake; then it echoes
    one line. One connection at a time, in a thread; bounded by the socket timeouts."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(str(pair.cert), str(pair.key))
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(5)
                fixed = _recv_exactly(conn, 16)  # signature, command, family, length
                raw = fixed + _recv_exactly(conn, int.from_bytes(fixed[14:16], "big"))
                header = parse(raw)
                assert header is not None and header.source is not None
                with ctx.wrap_socket(conn, server_side=True) as tls:
                    tls.sendall(f"220 hello {header.source[0]}\r\n".encode())
                    line = tls.recv(1024)
                    tls.sendall(b"echo " + line)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        thread.join(5)
        listener.close()


def test_a_backend_that_speaks_first_after_the_handshake(
    procs: ProcessGroup, tmp_path: Path
) -> None:
    """tcp mode: the banner the backend sends as soon as TLS is up must reach the client (it
    arrives while lb hands the TLS transport from the handshake to the relay)."""
    ca = Authority(tmp_path / "certs")
    with server_first_backend(ca.issue("backend", "backend.test")) as backend:
        port = free_port()
        cfg: dict[str, Any] = {
            "lb": {"workers": 1},
            "listeners": [{"name": "raw", "bind": f"127.0.0.1:{port}", "pool": "pp"}],
            "pools": {
                "pp": {
                    "send_proxy": "v2",
                    "tls": True,
                    "tls_ca": str(ca.ca_pem),
                    "tls_server_name": "backend.test",
                    "backends": [{"address": f"127.0.0.1:{backend}"}],
                }
            },
        }
        procs.lb(cfg)
        for _ in range(3):
            with socket.socket() as s:
                s.settimeout(5)
                s.bind(("127.0.0.2", 0))
                s.connect(("127.0.0.1", port))
                assert s.recv(1024) == b"220 hello 127.0.0.2\r\n"  # before we sent anything
                s.sendall(b"ping\n")
                assert s.recv(1024) == b"echo ping\n"
