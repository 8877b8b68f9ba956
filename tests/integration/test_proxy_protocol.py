"""PROXY protocol end to end, with real peers: HAProxy in tcp mode in front of lb sending v2 and
v1 headers (from 127.0.0.2, the only trusted source), clients on other loopback addresses
(127.0.0.10-29), and nginx behind lb requiring a PROXY header (``send_proxy``).

The carried address must be the client's everywhere: X-Forwarded-For, ``source_ip``
hashing, the access log; a connection from outside ``trusted_proxies`` is closed before any
byte is read, a trusted one without a header is closed too, and both are counted.
"""

from __future__ import annotations

import contextlib
import json
import socket
import ssl
import time
import urllib.request
from pathlib import Path
from typing import Any

import orjson
import pytest

from lb.proxyproto import build_v1
from tests.certs import Authority
from tests.helpers import ProcessGroup, free_port, read_until_close
from tests.integration.edge_peers import haproxy_tcp, nginx_proxy_protocol, request_from

SOURCES = [f"127.0.0.{i}" for i in range(10, 30)]


def body_of(answer: bytes) -> bytes:
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), answer
    return body


def metric(admin: int, name: str, **labels: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{admin}/metrics", timeout=5) as r:
        text = r.read().decode()
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        if line.startswith(f"{name}{{{want}}} "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name}{{{want}}} not in /metrics:\n{text}")


def wait_metric(admin: int, name: str, value: float, **labels: str) -> None:
    deadline = time.monotonic() + 5
    while metric(admin, name, **labels) != value and time.monotonic() < deadline:
        time.sleep(0.1)
    assert metric(admin, name, **labels) == value


@pytest.mark.parametrize("send_proxy", ["send-proxy-v2", "send-proxy"])
def test_behind_haproxy_the_client_address_is_used_everywhere(
    procs: ProcessGroup, tmp_path: Path, send_proxy: str
) -> None:
    backends = [procs.backend(f"b{i}") for i in range(3)]
    port, tls_port, admin = free_port(), free_port(), free_port()
    ca = Authority(tmp_path / "certs")
    pair = ca.issue("web", "web.test")
    access = tmp_path / "access.log"
    edge = {"proxy_protocol": True, "trusted_proxies": ["127.0.0.2/32"]}
    cfg: dict[str, Any] = {
        "lb": {"workers": 1},
        "admin": {"bind": f"127.0.0.1:{admin}"},
        "listeners": [
            {
                "name": "web",
                "bind": f"127.0.0.1:{port}",
                "mode": "http",
                "pool": "p",
                "access_log": str(access),
                **edge,
            },
            {
                "name": "secure",
                "bind": f"127.0.0.1:{tls_port}",
                "mode": "http",
                "pool": "p",
                **edge,
                "tls": {"certificates": [{"cert": str(pair.cert), "key": str(pair.key)}]},
            },
        ],
        "pools": {
            "p": {
                "strategy": "consistent_hash",
                "hash_key": "source_ip",
                "backends": [{"address": f"127.0.0.1:{b.port}"} for b in backends],
            }
        },
    }
    procs.lb(cfg)
    front = haproxy_tcp(procs, port, send_proxy, source="127.0.0.2")

    picked: dict[str, str] = {}
    for source in SOURCES:
        for _ in range(2):
            seen = json.loads(body_of(request_from(source, front)))
            assert seen["headers"]["x-forwarded-for"] == source
            assert seen["peer"][0] == "127.0.0.1"  # (lb's own address towards the backend)
            assert picked.setdefault(source, seen["backend"]) == seen["backend"]
    # hashing on the carried address spreads the clients (all would share 127.0.0.2's backend)
    assert len(set(picked.values())) >= 2

    # TLS after the PROXY header: HAProxy relays the client's handshake untouched
    tls_front = haproxy_tcp(procs, tls_port, send_proxy, source="127.0.0.2")
    ctx = ssl.create_default_context(cafile=str(ca.ca_pem))
    with socket.socket() as raw:
        raw.settimeout(5)
        raw.bind(("127.0.0.17", 0))
        raw.connect(("127.0.0.1", tls_front))
        with ctx.wrap_socket(raw, server_hostname="web.test") as s:
            s.sendall(b"GET /headers HTTP/1.1\r\nHost: web.test\r\nConnection: close\r\n\r\n")
            data = b""
            while chunk := s.recv(65536):
                data += chunk
    seen = json.loads(body_of(data))
    assert seen["headers"]["x-forwarded-for"] == "127.0.0.17"
    assert seen["headers"]["x-forwarded-proto"] == "https"
    assert seen["backend"] == picked["127.0.0.17"]

    # straight to lb from outside trusted_proxies: closed before any byte is read
    for source in ("127.0.0.1", "127.0.0.3"):
        assert request_from(source, port) == b""
    wait_metric(admin, "lb_proxy_protocol_rejected_total", 2, listener="web", reason="untrusted")
    wait_metric(admin, "lb_tls_handshakes_total", 1, listener="secure", version="TLSv1.3")

    # the access log names the clients
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        lines = access.read_bytes().splitlines() if access.exists() else []
        if len(lines) >= 2 * len(SOURCES):
            break
        time.sleep(0.1)
    clients = {orjson.loads(line)["client"] for line in lines}
    assert clients == set(SOURCES)


def test_trusted_peer_must_send_a_valid_header(procs: ProcessGroup) -> None:
    be = procs.backend("be")
    port, admin = free_port(), free_port()
    cfg: dict[str, Any] = {
        "lb": {"workers": 1},
        "admin": {"bind": f"127.0.0.1:{admin}"},
        "listeners": [
            {
                "name": "web",
                "bind": f"127.0.0.1:{port}",
                "mode": "http",
                "pool": "p",
                "proxy_protocol": True,
                "trusted_proxies": ["127.0.0.0/24"],
                "proxy_protocol_timeout": "300ms",
            }
        ],
        "pools": {"p": {"backends": [{"address": f"127.0.0.1:{be.port}"}]}},
    }
    procs.lb(cfg)

    def send(data: bytes, wait: float = 5.0) -> bytes:
        with socket.create_connection(("127.0.0.1", port), timeout=wait) as s:
            s.sendall(data)
            return read_until_close(s)

    request = b"GET /headers HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
    assert send(request) == b""  # no header
    assert send(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n" + request) == b""  # a bad one
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:  # none in time
        assert s.recv(10) == b""
    # a good one, with the request in the same packet
    header = build_v1(("203.0.113.9", 40000), ("127.0.0.1", port))
    seen = json.loads(body_of(send(header + request)))
    assert seen["headers"]["x-forwarded-for"] == "203.0.113.9"
    wait_metric(admin, "lb_proxy_protocol_rejected_total", 1, listener="web", reason="missing")
    wait_metric(admin, "lb_proxy_protocol_rejected_total", 1, listener="web", reason="invalid")
    wait_metric(admin, "lb_proxy_protocol_rejected_total", 1, listener="web", reason="timeout")


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_send_proxy_to_nginx_in_http_and_tcp_mode(procs: ProcessGroup, version: str) -> None:
    nginx = nginx_proxy_protocol(procs)
    web, raw = free_port(), free_port()
    cfg: dict[str, Any] = {
        "lb": {"workers": 1},
        "listeners": [
            {"name": "web", "bind": f"127.0.0.1:{web}", "mode": "http", "pool": "pp"},
            {
                # a tcp listener behind a balancer: the address it carried goes on to nginx
                "name": "raw",
                "bind": f"127.0.0.1:{raw}",
                "mode": "tcp",
                "pool": "pp",
                "proxy_protocol": True,
                "trusted_proxies": ["127.0.0.1/32"],
            },
        ],
        "pools": {"pp": {"send_proxy": version, "backends": [{"address": f"127.0.0.1:{nginx}"}]}},
    }
    procs.lb(cfg)
    for source in ("127.0.0.11", "127.0.0.12"):
        for _ in range(2):  # a second request: never a pooled connection of another client
            assert body_of(request_from(source, web, "/")) == f"client={source}\n".encode()
    with socket.create_connection(("127.0.0.1", raw), timeout=5) as s:
        s.sendall(build_v1(("198.51.100.4", 5555), ("127.0.0.1", raw)))
        s.sendall(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    assert body_of(data) == b"client=198.51.100.4\n"


def test_proxy_header_and_client_hello_in_one_packet(procs: ProcessGroup, tmp_path: Path) -> None:
    """The bytes after the header are the start of the TLS handshake: lb must not lose them."""
    ca = Authority(tmp_path / "certs")
    pair = ca.issue("web", "web.test")
    be = procs.backend("be")
    port = free_port()
    cfg: dict[str, Any] = {
        "lb": {"workers": 1},
        "listeners": [
            {
                "name": "secure",
                "bind": f"127.0.0.1:{port}",
                "mode": "http",
                "pool": "p",
                "proxy_protocol": True,
                "trusted_proxies": ["127.0.0.1/32"],
                "tls": {"certificates": [{"cert": str(pair.cert), "key": str(pair.key)}]},
            }
        ],
        "pools": {"p": {"backends": [{"address": f"127.0.0.1:{be.port}"}]}},
    }
    procs.lb(cfg)
    ctx = ssl.create_default_context(cafile=str(ca.ca_pem))
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ctx.wrap_bio(incoming, outgoing, server_hostname="web.test")
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        with pytest.raises(ssl.SSLWantReadError):
            tls.do_handshake()
        header = build_v1(("192.0.2.44", 1234), ("127.0.0.1", port))
        s.sendall(header + outgoing.read())  # one write: header and ClientHello together
        while True:
            try:
                tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                s.sendall(outgoing.read())
                data = s.recv(65536)
                assert data, "closed during the handshake"
                incoming.write(data)
        tls.write(b"GET /headers HTTP/1.1\r\nHost: web.test\r\nConnection: close\r\n\r\n")
        s.sendall(outgoing.read())
        answer = b""
        closed = False  # lb's close_notify after its answer (Connection: close)
        while not closed and (data := s.recv(65536)):
            incoming.write(data)
            with contextlib.suppress(ssl.SSLWantReadError):
                try:
                    while chunk := tls.read(65536):
                        answer += chunk
                    closed = True  # read() gives b"" at the close_notify
                except ssl.SSLZeroReturnError:
                    closed = True
        with contextlib.suppress(ssl.SSLError):
            tls.unwrap()  # our close_notify back, as a TLS client does
        s.sendall(outgoing.read())
    seen = json.loads(body_of(answer))
    assert seen["headers"]["x-forwarded-for"] == "192.0.2.44"
