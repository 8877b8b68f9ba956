"""Real peers for the edge tests: nginx (an HTTPS backend, a PROXY-protocol backend) and HAProxy
(an L4 balancer in front of lb that sends PROXY headers), run as processes on 127.0.0.1."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from pathlib import Path

import pytest

from tests.helpers import Proc, ProcessGroup, free_port, wait_port

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"


def need(binary: str) -> None:
    if not Path(binary).exists():
        pytest.skip(f"{binary} is not installed (.ci/run installs it)")


def nginx(procs: ProcessGroup, name: str, servers: str) -> Proc:
    """nginx in the foreground with ``servers`` (server blocks) in its http section."""
    need(NGINX)
    tmp = procs.tmp / name
    tmp.mkdir(exist_ok=True)
    user = "user root;" if os.geteuid() == 0 else ""
    conf = tmp / "nginx.conf"
    conf.write_text(f"""
{user}
worker_processes 1;
daemon off;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {tmp};
    proxy_temp_path {tmp};
    fastcgi_temp_path {tmp};
    uwsgi_temp_path {tmp};
    scgi_temp_path {tmp};
{servers}
}}
""")
    return procs.spawn(name, [NGINX, "-p", str(tmp), "-c", str(conf)])


def nginx_https(procs: ProcessGroup, cert: Path, key: Path) -> int:
    """An HTTPS backend answering 200 "tls-backend" with the given certificate."""
    port = free_port()
    nginx(
        procs,
        f"nginx-https-{port}",
        f"""
    server {{
        listen 127.0.0.1:{port} ssl;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        location / {{ default_type text/plain; return 200 "tls-backend $ssl_protocol\\n"; }}
    }}""",
    )
    wait_port(port)
    return port


def nginx_proxy_protocol(procs: ProcessGroup) -> int:
    """An HTTP backend that requires a PROXY header and answers with the address it carried."""
    port = free_port()
    nginx(
        procs,
        f"nginx-pp-{port}",
        f"""
    server {{
        listen 127.0.0.1:{port} proxy_protocol;
        location / {{ default_type text/plain; return 200 "client=$proxy_protocol_addr\\n"; }}
    }}""",
    )
    wait_port(port)
    return port


def haproxy_tcp(procs: ProcessGroup, target: int, send_proxy: str, source: str) -> int:
    """HAProxy in tcp mode in front of lb (``target``), connecting from ``source`` and sending
    a PROXY header (``send-proxy`` or ``send-proxy-v2``)."""
    need(HAPROXY)
    port = free_port()
    conf = procs.tmp / f"haproxy-{port}.cfg"
    conf.write_text(f"""
global
    nbthread 1
defaults
    mode tcp
    timeout connect 2s
    timeout client 10s
    timeout server 10s
frontend front
    bind 127.0.0.1:{port}
    default_backend lb
backend lb
    source {source}
    server lb 127.0.0.1:{target} {send_proxy}
""")
    check = subprocess.run([HAPROXY, "-c", "-f", str(conf)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    procs.spawn(f"haproxy-{port}", [HAPROXY, "-db", "-f", str(conf)])
    wait_port(port)
    return port


def request_from(
    source: str, port: int, path: str = "/headers", host: str = "test", timeout: float = 5.0
) -> bytes:
    """One HTTP/1.1 request with Connection: close from the local address ``source``; the
    whole answer (b"" when the connection was closed without one)."""
    with socket.socket() as s:
        s.settimeout(timeout)
        s.bind((source, 0))
        s.connect(("127.0.0.1", port))
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        data = b""
        try:
            while chunk := s.recv(65536):
                data += chunk
        except ConnectionResetError:
            pass
        return data
