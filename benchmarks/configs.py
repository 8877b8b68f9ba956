"""Equivalent configs for lb, HAProxy and nginx, and the nginx that plays every backend.

"Equivalent" means the three proxies do the same work per request:

* one listener on 127.0.0.1, the same backends, the same balancing policy (the table in
  ``scenarios.STRATEGIES``);
* L7: keep-alive to the client and pooled keep-alive connections to the backends (lb's pool,
  HAProxy ``http-reuse always``, nginx ``keepalive`` in the upstream), no per-connection request
  cap on either side, and the same headers added: X-Forwarded-For, -Proto, -Host and
  X-Request-ID (HAProxy ``unique-id-header``, nginx ``$request_id``), Host passed through;
* nginx buffers responses in memory only (``proxy_max_temp_file_size 0``), so a 256 KiB
  response is never written to a temporary file; lb and HAProxy stream;
* no access logs; timeouts long enough not to fire during a run (120 s for idle connections,
  which the memory benchmark holds open).

The backend is one nginx process (1 worker) listening on as many ports as the run needs, all
serving the same content: ``/`` a 33-byte body, ``/16k`` and ``/256k`` static files.
"""

from __future__ import annotations

import os
from pathlib import Path

from benchmarks.scenarios import HASH_HEADER, Mode

NGINX_STREAM_MODULE = "/usr/lib/nginx/modules/ngx_stream_module.so"
BODY = "hello from the benchmark backend"
#: Leaves HAProxy room under a 20,000 open-file limit: it reserves about 2 fds per
#: connection and refuses to start when ``2 * maxconn + 17`` exceeds the limit (10,000 fails).
HAPROXY_MAXCONN = 9900
#: Path -> response body size, for the probe made before each measurement.
BODY_SIZES = {"/": len(BODY) + 1, "/16k": 16 * 1024, "/256k": 256 * 1024}
NOFILE = 20000
IDLE_TIMEOUT_S = 120


def nginx_backend(tmp: Path, ports: list[int]) -> Path:
    www = tmp / "www"
    www.mkdir(exist_ok=True)
    (www / "16k").write_bytes(b"x" * 16 * 1024)
    (www / "256k").write_bytes(b"x" * 256 * 1024)
    servers = "\n".join(
        f"""    server {{
        listen 127.0.0.1:{port} backlog=4096;
        root {www};
        location / {{ default_type text/plain; return 200 "{BODY}\\n"; }}
        location = /16k {{ default_type application/octet-stream; }}
        location = /256k {{ default_type application/octet-stream; }}
    }}"""
        for port in ports
    )
    conf = tmp / "nginx-backend.conf"
    # As root, nginx's workers run as an unprivileged user that cannot read the temporary
    # directory (mode 0700): the static files would be 403s.
    user = "user root;" if os.geteuid() == 0 else ""
    conf.write_text(f"""
{user}
worker_processes 1;
worker_rlimit_nofile {NOFILE};
daemon off;
pid {tmp}/nginx-backend.pid;
error_log {tmp}/nginx-backend.err warn;
events {{ worker_connections {NOFILE}; }}
http {{
    access_log off;
    keepalive_requests 1000000;
    keepalive_timeout {IDLE_TIMEOUT_S}s;
{servers}
}}
""")
    return conf


def lb(
    tmp: Path,
    name: str,
    *,
    mode: Mode,
    port: int,
    backends: list[int],
    weights: list[int] | None = None,
    strategy: str = "round_robin",
    workers: int = 1,
    sticky_cookie: str | None = None,
    max_conn: int = 0,
    queue_timeout_s: float = 0.0,
) -> Path:
    weights = weights or [1] * len(backends)
    pool = [f'strategy = "{strategy}"']
    if max_conn:
        # The queue is per worker and HAProxy's is unbounded: room for every connection.
        pool += [
            f"max_conn = {max_conn}",
            f"max_queue = {NOFILE}",
            f'queue_timeout = "{queue_timeout_s:g}s"',
        ]
    if strategy == "consistent_hash":
        pool.append(f'hash_key = "header:{HASH_HEADER.lower()}"')
    if sticky_cookie:
        pool.append(f'sticky_cookie = "{sticky_cookie}"')
    members = "\n".join(
        f'[[pools.bench.backends]]\naddress = "127.0.0.1:{p}"\nweight = {w}\n'
        for p, w in zip(backends, weights, strict=True)
    )
    http_only = f'keepalive_timeout = "{IDLE_TIMEOUT_S}s"\n' if mode == "http" else ""
    conf = tmp / f"lb-{name}.toml"
    conf.write_text(f"""
[lb]
workers = {workers}
log_level = "warning"
grace = "1s"
control_socket = "{tmp}/lb-{name}.sock"
state_file = "{tmp}/lb-{name}.state.json"

[[listeners]]
name = "bench"
bind = "127.0.0.1:{port}"
mode = "{mode}"
pool = "bench"
max_connections = {NOFILE}
backlog = 4096
idle_timeout = "{IDLE_TIMEOUT_S}s"
{http_only}
[pools.bench]
{chr(10).join(pool)}

{members}""")
    return conf


_HAPROXY_BALANCE = {
    "round_robin": "balance roundrobin",
    "weighted": "balance roundrobin",
    "least_conn": "balance leastconn",
    "consistent_hash": f"balance hdr({HASH_HEADER})\n    hash-type consistent",
    "random_two": "balance random(2)",
}


def haproxy(
    tmp: Path,
    name: str,
    *,
    mode: Mode,
    port: int,
    backends: list[int],
    weights: list[int] | None = None,
    strategy: str = "round_robin",
    threads: int = 1,
    max_conn: int = 0,
    queue_timeout_s: float = 0.0,
) -> Path:
    weights = weights or [1] * len(backends)
    limit = f" maxconn {max_conn}" if max_conn else ""
    servers = "\n".join(
        f"    server s{i} 127.0.0.1:{p} weight {w}{limit}"
        for i, (p, w) in enumerate(zip(backends, weights, strict=True))
    )
    queue = f"\n    timeout queue {queue_timeout_s * 1000:.0f}ms" if max_conn else ""
    http = (
        """    option forwardfor
    unique-id-format %{+X}o%pid%Ts%rt
    unique-id-header X-Request-ID
    http-request set-header X-Forwarded-Proto http
    http-request set-header X-Forwarded-Host %[req.hdr(host)]
"""
        if mode == "http"
        else ""
    )
    conf = tmp / f"haproxy-{name}.cfg"
    conf.write_text(f"""
global
    nbthread {threads}
    maxconn {HAPROXY_MAXCONN}
defaults
    mode {mode}
    timeout connect 2s
    timeout client {IDLE_TIMEOUT_S}s
    timeout server {IDLE_TIMEOUT_S}s
    timeout http-keep-alive {IDLE_TIMEOUT_S}s{queue}
frontend fe
    bind 127.0.0.1:{port} backlog 4096
    maxconn {HAPROXY_MAXCONN}
{http}    default_backend be
backend be
    {_HAPROXY_BALANCE[strategy]}
    {"http-reuse always" if mode == "http" else ""}
{servers}
""")
    return conf


_NGINX_BALANCE = {
    "round_robin": "",
    "weighted": "",
    "least_conn": "least_conn;",
    "consistent_hash": f"hash $http_{HASH_HEADER.lower().replace('-', '_')} consistent;",
    "random_two": "random two least_conn;",
}


def nginx_proxy(
    tmp: Path,
    name: str,
    *,
    mode: Mode,
    port: int,
    backends: list[int],
    weights: list[int] | None = None,
    strategy: str = "round_robin",
    workers: int = 1,
    max_conn: int = 0,
) -> Path:
    """``max_conn``: ``max_conns=`` on each server. Open-source nginx has no queue: a request
    that finds every server at its limit fails at once (502), it does not wait."""
    weights = weights or [1] * len(backends)
    limit = f" max_conns={max_conn}" if max_conn else ""
    servers = "\n".join(
        f"        server 127.0.0.1:{p} weight={w}{limit};"
        for p, w in zip(backends, weights, strict=True)
    )
    head = f"""
{"load_module " + NGINX_STREAM_MODULE + ";" if mode == "tcp" else ""}
worker_processes {workers};
worker_rlimit_nofile {NOFILE};
daemon off;
pid {tmp}/nginx-{name}.pid;
error_log {tmp}/nginx-{name}.err warn;
events {{ worker_connections {NOFILE}; }}
"""
    if mode == "tcp":
        body = f"""
stream {{
    upstream be {{
        {_NGINX_BALANCE[strategy]}
{servers}
    }}
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        proxy_pass be;
        proxy_timeout {IDLE_TIMEOUT_S}s;
    }}
}}
"""
    else:
        body = f"""
http {{
    access_log off;
    keepalive_requests 1000000;
    keepalive_timeout {IDLE_TIMEOUT_S}s;
    upstream be {{
        {_NGINX_BALANCE[strategy]}
{servers}
        keepalive 512;
        keepalive_requests 1000000;
    }}
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location / {{
            proxy_pass http://be;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $http_host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_set_header X-Forwarded-Host $host;
            proxy_set_header X-Request-ID $request_id;
            proxy_max_temp_file_size 0;
        }}
    }}
}}
"""
    conf = tmp / f"nginx-{name}.conf"
    conf.write_text(head + body)
    return conf
