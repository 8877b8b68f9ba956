"""End to end: ``Connection: close`` traffic, a new client connection per request.

lb as a real process in http mode, real backends, raw-socket clients. What a new connection
must cost is small (lb/proxy/http.py); what it must not change: every client connection gets
one whole answer that says ``Connection: close`` and then the close, with its own address in
``X-Forwarded-For``, and the backend connections stay pooled across client connections.
"""

from __future__ import annotations

import json
import socket

from tests.helpers import ProcessGroup, free_port
from tests.integration.test_l7 import exchange, http_config


def backend_connections(port: int) -> int:
    raw = exchange(port, b"GET /stats HTTP/1.0\r\n\r\n")
    return int(json.loads(raw.split(b"\r\n\r\n", 1)[1])["connections_total"])


def test_close_clients_answered_and_upstreams_reused(procs: ProcessGroup) -> None:
    b = procs.backend("b1")
    port = free_port()
    procs.lb(http_config(port, {"p": [b.port]}))
    before = backend_connections(b.port)
    n = 200
    for i in range(n):
        raw = exchange(port, b"GET /echo/%d HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n" % i)
        head, _, _ = raw.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        assert lines[0].startswith(b"HTTP/1.1 200"), raw[:200]
        connection = [ln for ln in lines[1:] if ln.lower().startswith(b"connection:")]
        assert connection == [b"Connection: close"], lines
    # One backend connection (or a few, should one be closed under us): not one per client.
    used = backend_connections(b.port) - before - 1  # (the /stats reads are connections too)
    assert 0 < used <= 4, used


def test_each_new_connection_has_its_own_client_address(procs: ProcessGroup) -> None:
    b = procs.backend("b1")
    port = free_port()
    procs.lb(http_config(port, {"p": [b.port]}))
    seen: list[str | None] = []
    for src in ("127.0.0.2", "127.0.0.3", "127.0.0.2"):
        with socket.create_connection(("127.0.0.1", port), timeout=5, source_address=(src, 0)) as s:
            s.sendall(b"GET /headers HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            out = b""
            while chunk := s.recv(65536):
                out += chunk
        seen.append(json.loads(out.split(b"\r\n\r\n", 1)[1])["headers"].get("x-forwarded-for"))
    assert seen == ["127.0.0.2", "127.0.0.3", "127.0.0.2"], seen
