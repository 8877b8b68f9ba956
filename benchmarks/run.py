"""Side-by-side benchmark: lb, HAProxy and nginx in one run, driven by wrk on loopback.

    python -m benchmarks.run                      # every scenario, 2 rounds of 10 s each
    python -m benchmarks.run --scenarios l4 --duration 5 --rounds 1

Each scenario starts one nginx as the backend, then lb, HAProxy and nginx as proxies with
equivalent configs, and runs wrk against each in turn (alternating, ``--rounds`` times). The
figures that matter are the ratios to HAProxy measured in the same run: this machine is shared
and noisy, so absolute numbers drift from run to run while ratios hold.

Writes ``benchmarks/results/<date>/results.json`` and ``results.md``; ``--update-results``
also rewrites ``benchmarks/RESULTS.md``. Traffic stays on 127.0.0.1 and every wrk run is
bounded by ``--duration``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NGINX_STREAM_MODULE = "/usr/lib/nginx/modules/ngx_stream_module.so"
BODY = "hello from the benchmark backend\n"


@dataclass(frozen=True)
class Scenario:
    name: str
    mode: str  # "tcp" | "http"
    path: str = "/"
    connections: int = 64
    threads: int = 1
    headers: tuple[str, ...] = ()
    description: str = ""


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario("l4", "tcp", description="L4 relay, HTTP keep-alive through it, wrk -t1 -c64"),
        Scenario("l7", "http", description="L7 keep-alive, small responses, wrk -t1 -c64"),
        Scenario(
            "l7-close",
            "http",
            headers=("Connection: close",),
            description="L7, a new client connection per request",
        ),
        Scenario("l7-16k", "http", path="/16k", description="L7 keep-alive, 16 KiB responses"),
    )
}


@dataclass
class Result:
    scenario: str
    proxy: str
    rps: list[float] = field(default_factory=list)
    p50_ms: list[float] = field(default_factory=list)
    p99_ms: list[float] = field(default_factory=list)
    errors: int = 0

    @property
    def rps_mean(self) -> float:
        return statistics.fmean(self.rps) if self.rps else 0.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listening on 127.0.0.1:{port}")


class Procs:
    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, args: list[str], log: Path) -> subprocess.Popen[bytes]:
        with log.open("wb") as fh:
            p = subprocess.Popen(args, stdout=fh, stderr=subprocess.STDOUT, cwd=ROOT)
        self.procs.append(p)
        return p

    def stop_all(self) -> None:
        for p in reversed(self.procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self.procs.clear()


# -- configs -------------------------------------------------------------------------------


def nginx_backend_conf(tmp: Path, port: int) -> Path:
    conf = tmp / "nginx-backend.conf"
    (tmp / "www").mkdir(exist_ok=True)
    (tmp / "www" / "16k").write_bytes(b"x" * 16384)
    conf.write_text(f"""
worker_processes 1;
daemon off;
pid {tmp}/nginx-backend.pid;
error_log {tmp}/nginx-backend.err warn;
events {{ worker_connections 8192; }}
http {{
    access_log off;
    keepalive_requests 1000000;
    server {{
        listen 127.0.0.1:{port} reuseport backlog=4096;
        root {tmp}/www;
        location / {{ default_type text/plain; return 200 "{BODY.strip()}\\n"; }}
        location = /16k {{ default_type application/octet-stream; }}
    }}
}}
""")
    return conf


def lb_conf(tmp: Path, sc: Scenario, port: int, backend: int, workers: int) -> Path:
    conf = tmp / f"lb-{sc.name}.toml"
    conf.write_text(f"""
[lb]
workers = {workers}
log_level = "warning"
grace = "1s"

[[listeners]]
name = "bench"
bind = "127.0.0.1:{port}"
mode = "{sc.mode}"
pool = "bench"
max_connections = 20000

[pools.bench]
strategy = "round_robin"

[[pools.bench.backends]]
address = "127.0.0.1:{backend}"
""")
    return conf


def haproxy_conf(tmp: Path, sc: Scenario, port: int, backend: int, threads: int) -> Path:
    conf = tmp / f"haproxy-{sc.name}.cfg"
    conf.write_text(f"""
global
    nbthread {threads}
    maxconn 4000
defaults
    mode {sc.mode}
    {"http-reuse always" if sc.mode == "http" else ""}
    timeout connect 2s
    timeout client 60s
    timeout server 60s
frontend fe
    bind 127.0.0.1:{port}
    default_backend be
backend be
    balance roundrobin
    server s1 127.0.0.1:{backend}
""")
    return conf


def nginx_proxy_conf(tmp: Path, sc: Scenario, port: int, backend: int) -> Path:
    conf = tmp / f"nginx-proxy-{sc.name}.conf"
    head = f"""
{"load_module " + NGINX_STREAM_MODULE + ";" if sc.mode == "tcp" else ""}
worker_processes 1;
daemon off;
pid {tmp}/nginx-proxy.pid;
error_log {tmp}/nginx-proxy.err warn;
events {{ worker_connections 8192; }}
"""
    if sc.mode == "tcp":
        body = f"""
stream {{
    upstream be {{ server 127.0.0.1:{backend}; }}
    server {{ listen 127.0.0.1:{port}; proxy_pass be; }}
}}
"""
    else:
        body = f"""
http {{
    access_log off;
    upstream be {{ server 127.0.0.1:{backend}; keepalive 128; }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://be;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
}}
"""
    conf.write_text(head + body)
    return conf


# -- wrk -----------------------------------------------------------------------------------

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0}


def _ms(text: str) -> float:
    m = re.match(r"([\d.]+)(us|ms|s)", text)
    if not m:
        return float("nan")
    return float(m.group(1)) * _UNITS[m.group(2)]


def run_wrk(sc: Scenario, port: int, duration: float) -> tuple[float, float, float, int]:
    args = [
        "wrk",
        f"-t{sc.threads}",
        f"-c{sc.connections}",
        f"-d{duration:.0f}s",
        "--latency",
        *[a for h in sc.headers for a in ("-H", h)],
        f"http://127.0.0.1:{port}{sc.path}",
    ]
    out = subprocess.run(args, capture_output=True, text=True, timeout=duration + 30).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = _ms(re.search(r"50%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"99%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    errors = 0
    m = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    if m:
        errors += int(m.group(1))
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if m:
        errors += sum(int(x) for x in m.groups())
    return rps, p50, p99, errors


# -- the run -------------------------------------------------------------------------------


@contextlib.contextmanager
def proxies(
    tmp: Path, sc: Scenario, backend: int, workers: int, which: list[str]
) -> Iterator[dict[str, int]]:
    procs = Procs()
    ports: dict[str, int] = {}
    try:
        for name in which:
            port = free_port()
            if name == "lb":
                conf = lb_conf(tmp, sc, port, backend, workers)
                procs.start([sys.executable, "-m", "lb", "run", "-c", str(conf)], tmp / "lb.log")
            elif name == "haproxy":
                conf = haproxy_conf(tmp, sc, port, backend, max(workers, 1))
                procs.start(["haproxy", "-db", "-f", str(conf)], tmp / "haproxy.log")
            elif name == "nginx":
                conf = nginx_proxy_conf(tmp, sc, port, backend)
                procs.start(["nginx", "-p", str(tmp), "-c", str(conf)], tmp / "nginx.log")
            elif name == "direct":
                port = backend
            wait_port(port)
            ports[name] = port
        yield ports
    finally:
        procs.stop_all()


def machine() -> str:
    model = "unknown cpu"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return (
        f"{model}, {os.cpu_count()} cores, Linux {platform.release()}, "
        f"Python {platform.python_version()}"
    )


def versions() -> dict[str, str]:
    def first(cmd: list[str]) -> str:
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
        except OSError:
            return "missing"
        return (r.stdout or r.stderr).strip().splitlines()[0]

    return {
        "haproxy": first(["haproxy", "-v"]),
        "nginx": first(["nginx", "-v"]),
        "wrk": first(["wrk", "--version"]),
    }


def render(results: list[Result], meta: dict[str, object]) -> str:
    lines = [
        f"Date: {meta['date']}  ",
        f"Machine: {meta['machine']}  ",
        f"Method: wrk, {meta['rounds']} alternating round(s) of {meta['duration']} s per proxy; "
        f"lb workers = {meta['workers']}, HAProxy nbthread = {max(int(str(meta['workers'])), 1)}, "
        "nginx worker_processes 1; backend: one nginx worker.",
        "",
        "| scenario | proxy | req/s | p50 ms | p99 ms | errors | ratio to HAProxy |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    by_sc: dict[str, dict[str, Result]] = {}
    for r in results:
        by_sc.setdefault(r.scenario, {})[r.proxy] = r
    for sc, rows in by_sc.items():
        ref = rows.get("haproxy")
        for proxy, r in rows.items():
            ratio = f"{r.rps_mean / ref.rps_mean:.2f}x" if ref and ref.rps_mean else "n/a"
            lines.append(
                f"| {sc} | {proxy} | {r.rps_mean:,.0f} | {statistics.fmean(r.p50_ms):.2f} | "
                f"{statistics.fmean(r.p99_ms):.2f} | {r.errors} | {ratio} |"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="benchmarks.run", description=__doc__.split("\n\n")[0])
    ap.add_argument("--scenarios", default=",".join(SCENARIOS), help="comma-separated names")
    ap.add_argument("--duration", type=float, default=10.0, help="seconds per wrk run")
    ap.add_argument("--rounds", type=int, default=2, help="alternating rounds per scenario")
    ap.add_argument("--workers", type=int, default=1, help="lb workers / HAProxy nbthread")
    ap.add_argument("--proxies", default="lb,haproxy,nginx,direct")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    ap.add_argument("--update-results", action="store_true", help="rewrite benchmarks/RESULTS.md")
    args = ap.parse_args(argv)

    for tool in ("wrk", "haproxy", "nginx"):
        if shutil.which(tool) is None:
            print(
                f"benchmarks: {tool} is not installed (apt-get install -y {tool})", file=sys.stderr
            )
            return 2
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    which = [p.strip() for p in args.proxies.split(",") if p.strip()]
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="lb-bench-") as tmpdir:
        tmp = Path(tmpdir)
        backend_procs = Procs()
        bport = free_port()
        backend_procs.start(
            ["nginx", "-p", str(tmp), "-c", str(nginx_backend_conf(tmp, bport))],
            tmp / "nginx-backend.log",
        )
        try:
            wait_port(bport)
            for name in args.scenarios.split(","):
                sc = SCENARIOS[name]
                rows = {p: Result(sc.name, p) for p in which}
                with proxies(tmp, sc, bport, args.workers, which) as ports:
                    for rnd in range(args.rounds):
                        order = which if rnd % 2 == 0 else list(reversed(which))
                        for proxy in order:
                            print(
                                f"[{sc.name}] round {rnd + 1}/{args.rounds}: {proxy} ...",
                                flush=True,
                            )
                            rps, p50, p99, errs = run_wrk(sc, ports[proxy], args.duration)
                            r = rows[proxy]
                            r.rps.append(rps)
                            r.p50_ms.append(p50)
                            r.p99_ms.append(p99)
                            r.errors += errs
                            print(f"    {rps:,.0f} req/s  p50 {p50:.2f} ms  p99 {p99:.2f} ms")
                results.extend(rows.values())
        finally:
            backend_procs.stop_all()

    now = dt.datetime.now()
    meta: dict[str, object] = {
        "date": now.strftime("%Y-%m-%d %H:%M"),
        "machine": machine(),
        "versions": versions(),
        "duration": args.duration,
        "rounds": args.rounds,
        "workers": args.workers,
    }
    table = render(results, meta)
    out = Path(args.out) / now.strftime("%Y-%m-%d_%H%M%S")
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(
        json.dumps({"meta": meta, "results": [asdict(r) for r in results]}, indent=2)
    )
    (out / "results.md").write_text(table)
    print()
    print(table)
    print(f"written to {out}")
    if args.update_results:
        (ROOT / "benchmarks" / "RESULTS.md").write_text(
            "# Benchmark results\n\nThe latest run of `python -m benchmarks.run --update-results`. "
            "Read the ratios, not the absolute figures (see README.md).\n\n" + table
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
