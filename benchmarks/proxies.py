"""Start lb, HAProxy or nginx as a proxy (or nothing: ``direct`` is the backend itself).

One function, :func:`start`, so the suite, the memory benchmark and the locust runner start
the proxies the same way, with the configs from ``configs.py``.
"""

from __future__ import annotations

import http.client
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from benchmarks import configs
from benchmarks.procs import ROOT, Procs, free_port, free_ports, pinned, wait_log, wait_port
from benchmarks.scenarios import Mode

PROXIES: tuple[str, ...] = ("lb", "haproxy", "nginx")
#: A reference row: wrk straight at the backend, no proxy (opt in with ``--proxies``).
DIRECT = "direct"


@dataclass
class Running:
    proxy: str
    port: int
    #: The process whose tree's memory is the proxy's (None for ``direct``).
    proc: subprocess.Popen[bytes] | None


def start(
    procs: Procs,
    tmp: Path,
    proxy: str,
    *,
    name: str,
    mode: Mode,
    backends: list[int],
    weights: list[int] | None = None,
    strategy: str = "round_robin",
    workers: int = 1,
    sticky_cookie: str | None = None,
    lb_src: Path | None = None,
    max_conn: int = 0,
    queue_timeout_s: float = 0.0,
) -> Running:
    """Start ``proxy`` in front of ``backends`` and wait until it accepts connections.

    ``lb_src``: run the ``lb`` package found in this directory instead of this checkout's (a
    ``git worktree`` of another commit, for before/after figures). ``python -m`` puts the
    working directory first on ``sys.path``, ahead of the editable install.
    """
    if proxy == DIRECT:
        return Running(proxy, backends[0], None)
    port = free_port()
    log = tmp / f"{proxy}-{name}.log"
    if proxy == "lb":
        conf = configs.lb(
            tmp,
            name,
            mode=mode,
            port=port,
            backends=backends,
            weights=weights,
            strategy=strategy,
            workers=workers,
            sticky_cookie=sticky_cookie,
            max_conn=max_conn,
            queue_timeout_s=queue_timeout_s,
        )
        proc = procs.start(
            pinned([sys.executable, "-m", "lb", "run", "-c", str(conf)], "proxy", workers),
            log,
            cwd=lb_src or ROOT,
        )
        wait_log(log, "lb: running", proc)
    elif proxy == "haproxy":
        conf = configs.haproxy(
            tmp,
            name,
            mode=mode,
            port=port,
            backends=backends,
            weights=weights,
            strategy=strategy,
            threads=workers,
            max_conn=max_conn,
            queue_timeout_s=queue_timeout_s,
        )
        proc = procs.start(pinned(["haproxy", "-db", "-f", str(conf)], "proxy", workers), log)
    elif proxy == "nginx":
        conf = configs.nginx_proxy(
            tmp,
            name,
            mode=mode,
            port=port,
            backends=backends,
            weights=weights,
            strategy=strategy,
            workers=workers,
            max_conn=max_conn,
        )
        proc = procs.start(
            pinned(["nginx", "-p", str(tmp), "-c", str(conf)], "proxy", workers), log
        )
    else:
        raise ValueError(f"unknown proxy {proxy!r}; known: {', '.join((*PROXIES, DIRECT))}")
    try:
        wait_port(port)
    except RuntimeError:
        raise RuntimeError(f"{proxy} did not start; see {log}") from None
    return Running(proxy, port, proc)


def probe(port: int, path: str, headers: tuple[str, ...] = ()) -> None:
    """One request through a proxy before measuring it: a 200 with the full body, or raise.

    A misconfigured proxy answers errors very fast; without this, a wall of 403s or 502s
    would show up as a great req/s figure (wrk counts them apart, but only as a number).
    """
    sent = dict(h.split(": ", 1) for h in headers)
    sent["Connection"] = "close"
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", path, headers=sent)
        response = conn.getresponse()
        body = response.read()
    finally:
        conn.close()
    expected = configs.BODY_SIZES.get(path)
    if response.status != 200 or (expected is not None and len(body) != expected):
        raise RuntimeError(
            f"GET {path} through port {port} gave {response.status} with {len(body)} bytes "
            f"(expected 200 with {expected} bytes): check the config"
        )


def start_backends(
    procs: Procs, tmp: Path, count: int
) -> tuple[list[int], subprocess.Popen[bytes]]:
    """One nginx serving the benchmark content on ``count`` ports."""
    ports = free_ports(count)
    conf = configs.nginx_backend(tmp, ports)
    proc = procs.start(
        pinned(["nginx", "-p", str(tmp), "-c", str(conf)], "other"), tmp / "nginx-backend.log"
    )
    for port in ports:
        wait_port(port)
    return ports, proc
