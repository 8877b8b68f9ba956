"""HTTPS side by side: lb (1 worker) against HAProxy (``nbthread 1``), same certificate, same
ciphers, same nginx backend, one run.

    python -m benchmarks.tls                      # about 2 minutes
    python -m benchmarks.tls --duration 4 --idle 1000
    python -m benchmarks.tls --inproc 200000      # lb's TLS layer alone, in-process: seconds
    python -m benchmarks.tls --scenarios close --keys ecdsa --lb-old-src /work/main
    python -m benchmarks.tls --inproc-connections 2000 --keys ecdsa,ecdsa-full

For an ECDSA P-256 and an RSA 2048 certificate (made with ``openssl`` at run time), it measures:

* **keep-alive** req/s over HTTPS (wrk ``-t1 -c64``);
* **new TLS connections/s**: wrk with ``Connection: close``, so every request is a new TCP
  connection and a TLS handshake. wrk offers the session of the connection it replaces, so
  many of these are resumptions on both proxies (both have tickets and a session cache on);
  lb's own count of resumed sessions is printed beside it;
* **resumed handshakes/s**: ``openssl s_time -reuse`` against ``-new`` (one connection at a
  time, so these figures are per-handshake latency as much as throughput);
* **CPU µs per request** for both wrk runs: the utime + stime of the proxy's process tree
  over the run, divided by the requests (steadier than req/s on a shared machine, as in
  ``benchmarks/cpu.py``; for ``Connection: close`` it is per connection);
* **memory per idle TLS connection**: RSS growth of the proxy's process tree with ``--idle``
  connections open (handshake done, one request answered), per connection.

The two wrk rows run ``--rounds`` times (3 by default), lb and HAProxy alternating which goes
first; the table gives each proxy's median and, in the notes, the lowest and highest lb/HAProxy
ratio within a round (the machine's drift).

``--inproc N`` measures none of that: it runs lb's own TLS layer (``lb/proxy/tlsconn.py``, as
compiled or, with ``LB_NO_EXTENSIONS=1``, as plain Python) in one process, with no socket and
no event loop. A client ``ssl.SSLObject`` makes the handshake with a ``TlsConnection`` over
memory, then encrypts N keep-alive requests (one record each) ahead of time; the timed part
hands them to the connection one by one, as the socket would, and an app stub answers each
with a 33-byte response (one ``write``, one record). It prints the CPU µs per request of the
server side alone (decrypt, app call, encrypt); under ``valgrind --tool=callgrind`` two runs
with different N give its instructions per request (the difference divided by the
difference in N).

``--inproc-connections N`` does the same for N new connections: each a handshake (the client
offers the previous connection's session, as wrk does, so all but the first are TLS 1.3
resumptions; key kind ``ecdsa-full`` or ``rsa-full`` offers none), one request answered with
a write and ``close``, and ``connection_lost``. Only the server side's calls are timed.

``--scenarios`` picks the rows (``keep-alive``, ``close``, ``s_time``, ``idle``).
``--lb-old-src DIR`` adds ``lb-old``, the ``lb`` package in DIR (a worktree of main, say), run
alongside in every round: a before/after on the same machine in the same minutes.
``--lb-no-tickets`` runs ``lb`` (not ``lb-old``) with ``session_tickets = false``. The
``Connection: close`` row gives each proxy's share of resumed handshakes: lb's from its
``/metrics`` (read 1.5 s after the run, once the worker's snapshot is in), HAProxy's from its
stats socket (``ssl_reused_sess``).

Both proxies terminate TLS 1.3 (1.2 minimum), ALPN http/1.1, Mozilla intermediate ciphers,
and add the same forwarding headers as in ``configs.py``. Ratios are lb / HAProxy within the
run; the machine is shared, so absolute figures drift. Not a test: run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import re
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks import configs, wrk
from benchmarks.cpu import tree_cpu_seconds
from benchmarks.procs import Procs, free_port, raise_nofile, tree_rss_kib, wait_log, wait_port
from lb.tls import INTERMEDIATE_CIPHERS

KEYS = {
    "ecdsa": ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"],
    "rsa": ["-newkey", "rsa:2048"],
}
NAME = "bench.test"


def make_cert(tmp: Path, kind: str) -> tuple[Path, Path]:
    cert, key = tmp / f"{kind}.pem", tmp / f"{kind}.key"
    subprocess.run(
        ["openssl", "req", "-x509", *KEYS[kind], "-nodes", "-days", "30", "-subj", f"/CN={NAME}",
         "-addext", f"subjectAltName=DNS:{NAME}", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


def start_lb(
    procs: Procs,
    tmp: Path,
    kind: str,
    backend: int,
    src: Path | None = None,
    name: str = "lb",
    tickets: bool = True,
) -> tuple[int, int, int]:
    """lb with one worker (the ``lb`` package in ``src``, if given; ``session_tickets`` as
    ``tickets`` says); returns (port, admin port, pid)."""
    cert, key = tmp / f"{kind}.pem", tmp / f"{kind}.key"
    port, admin = free_port(), free_port()
    conf = tmp / f"{name}-tls-{kind}.toml"
    conf.write_text(f"""
[lb]
workers = 1
control_socket = "{tmp}/{name}-{kind}.sock"
state_file = "{tmp}/{name}-{kind}.json"
[admin]
bind = "127.0.0.1:{admin}"
[[listeners]]
name = "tls"
bind = "127.0.0.1:{port}"
mode = "http"
pool = "bench"
keepalive_timeout = "{configs.IDLE_TIMEOUT_S}s"
max_connections = 20000
backlog = 4096
[listeners.tls]
certificates = [{{ cert = "{cert}", key = "{key}" }}]
session_tickets = {"true" if tickets else "false"}
[pools.bench]
backends = [{{ address = "127.0.0.1:{backend}" }}]
""")
    log = tmp / f"{name}-tls-{kind}.log"
    args = [sys.executable, "-m", "lb", "run", "-c", str(conf)]
    proc = procs.start(args, log, cwd=src) if src else procs.start(args, log)
    wait_log(log, "lb: running", proc)
    wait_port(port)
    return port, admin, proc.pid


def start_haproxy(procs: Procs, tmp: Path, kind: str, backend: int) -> tuple[int, int]:
    cert, key = tmp / f"{kind}.pem", tmp / f"{kind}.key"
    combined = tmp / f"{kind}-haproxy.pem"
    combined.write_bytes(cert.read_bytes() + key.read_bytes())
    port = free_port()
    conf = tmp / f"haproxy-tls-{kind}.cfg"
    conf.write_text(f"""
global
    nbthread 1
    stats socket {tmp}/haproxy-{kind}.sock
    maxconn {configs.HAPROXY_MAXCONN}
    ssl-default-bind-ciphers {INTERMEDIATE_CIPHERS}
    ssl-default-bind-options ssl-min-ver TLSv1.2
defaults
    mode http
    timeout connect 2s
    timeout client {configs.IDLE_TIMEOUT_S}s
    timeout server {configs.IDLE_TIMEOUT_S}s
    timeout http-keep-alive {configs.IDLE_TIMEOUT_S}s
frontend fe
    bind 127.0.0.1:{port} ssl crt {combined} alpn http/1.1 backlog 4096
    maxconn {configs.HAPROXY_MAXCONN}
    option forwardfor
    unique-id-format %{{+X}}o%pid%Ts%rt
    unique-id-header X-Request-ID
    http-request set-header X-Forwarded-Proto https
    http-request set-header X-Forwarded-Host %[req.hdr(host)]
    default_backend be
backend be
    http-reuse always
    server s0 127.0.0.1:{backend}
""")
    proc = procs.start(["haproxy", "-db", "-f", str(conf)], tmp / f"haproxy-tls-{kind}.log")
    wait_port(port)
    return port, proc.pid


def s_time(port: int, reuse: bool, seconds: int) -> float:
    """Handshakes per second, one at a time, with ``openssl s_time``."""
    out = subprocess.run(
        ["openssl", "s_time", "-connect", f"127.0.0.1:{port}", "-reuse" if reuse else "-new",
         "-time", str(seconds)],
        capture_output=True, text=True, timeout=seconds + 30,
    ).stdout  # fmt: skip
    m = re.search(r"(\d+) connections in (\d+) real seconds", out)
    return int(m.group(1)) / max(1, int(m.group(2))) if m else float("nan")


async def _open_tls(port: int, count: int) -> list[asyncio.StreamWriter]:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    sem = asyncio.Semaphore(64)
    held: list[asyncio.StreamWriter] = []

    async def one() -> None:
        async with sem:
            with contextlib.suppress(OSError, TimeoutError, ssl.SSLError):
                async with asyncio.timeout(20):
                    reader, writer = await asyncio.open_connection(
                        "127.0.0.1", port, ssl=ctx, server_hostname=NAME
                    )
                    writer.write(b"GET / HTTP/1.1\r\nHost: bench.test\r\n\r\n")
                    await reader.readuntil(b"backend\n")
                    held.append(writer)

    await asyncio.gather(*(one() for _ in range(count)))
    return held


def idle_memory(port: int, pid: int, count: int) -> tuple[int, float]:
    """(connections held, KiB of RSS per connection) with ``count`` idle TLS connections."""

    async def run() -> tuple[int, float]:
        for w in await _open_tls(port, 20):  # warm-up
            w.close()
        await asyncio.sleep(1.0)
        before = tree_rss_kib(pid)
        held = await _open_tls(port, count)
        await asyncio.sleep(1.5)
        after = tree_rss_kib(pid)
        for w in held:
            w.close()
        await asyncio.sleep(0.5)
        return len(held), (after - before) / max(1, len(held))

    return asyncio.run(run())


INPROC_REQUEST = b"GET / HTTP/1.1\r\nHost: bench.test\r\nUser-Agent: wrk\r\n\r\n"
INPROC_RESPONSE = (
    b"HTTP/1.1 200 OK\r\nServer: nginx\r\nContent-Length: 33\r\nConnection: keep-alive\r\n\r\n"
    b"hello from the benchmark backend\n"
)


class _Handle:
    def cancel(self) -> None:
        pass


class _Loop:
    """What a ``TlsConnection`` asks of its loop: a timer it cancels, a callback run now."""

    def call_later(self, delay: float, callback: Any, *args: Any) -> _Handle:
        return _Handle()

    def call_soon(self, callback: Any, *args: Any) -> _Handle:
        callback(*args)
        return _Handle()


class _Socket:
    """The socket transport under the connection: it keeps what it is given while ``keep``."""

    def __init__(self) -> None:
        self.out: list[bytes] = []
        self.keep = True

    def write(self, data: bytes) -> None:
        if self.keep:
            self.out.append(data)

    def get_write_buffer_size(self) -> int:
        return 0

    def is_closing(self) -> bool:
        return False

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def close(self) -> None:
        pass

    def abort(self) -> None:
        pass


class _Answer:
    """The app stub: every read is a request, answered with one write."""

    def __init__(self) -> None:
        self.transport: Any = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.transport.write(INPROC_RESPONSE)

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        pass

    def pause_writing(self) -> None:
        pass

    def resume_writing(self) -> None:
        pass


def inproc(tmp: Path, kind: str, requests: int) -> float:
    """CPU µs per keep-alive request of lb's TLS layer alone (see the module docstring)."""
    from lb.proxy.edge import EdgeCounters
    from lb.proxy.tlsconn import TlsConnection
    from lb.tls import ServerOptions, ServerTls

    cert, key = make_cert(tmp, kind)
    server = ServerTls([(str(cert), str(key))], ServerOptions(alpn=("http/1.1",)))
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    cin, cout = ssl.MemoryBIO(), ssl.MemoryBIO()
    client = ctx.wrap_bio(cin, cout, server_hostname=NAME)
    sock = _Socket()
    conn = TlsConnection(_Loop(), _Answer(), server.default, EdgeCounters(), 10.0)  # type: ignore[arg-type]
    conn.connection_made(sock)  # type: ignore[arg-type]
    while True:
        try:
            client.do_handshake()
            break
        except ssl.SSLWantReadError:
            conn.data_received(cout.read())
            cin.write(b"".join(sock.out))
            sock.out.clear()
    conn.data_received(cout.read())  # the client's Finished
    answers = b""
    for _ in range(2):  # two requests end to end: the client reads its answers
        client.write(INPROC_REQUEST)
        conn.data_received(cout.read())
        cin.write(b"".join(sock.out))
        sock.out.clear()
        while True:
            try:
                answers += client.read(65536)
            except ssl.SSLWantReadError:
                break
    if answers != INPROC_RESPONSE * 2:
        raise RuntimeError(f"the TLS layer answered {answers!r}")
    records = []
    for _ in range(requests):
        client.write(INPROC_REQUEST)
        records.append(cout.read())
    sock.keep = False
    receive = conn.data_received
    t0 = time.process_time()
    for record in records:
        receive(record)
    used = time.process_time() - t0
    print(
        f"lb TLS layer in-process ({kind}, {client.version()} {(client.cipher() or ('',))[0]}): "
        f"{requests:,} requests, {1e6 * used / requests:.3f} µs CPU per request",
        flush=True,
    )
    return 1e6 * used / requests


class _Closer(_Answer):
    """The app stub of ``Connection: close``: answers the request, then closes."""

    def data_received(self, data: bytes) -> None:
        self.transport.write(INPROC_RESPONSE)
        self.transport.close()


def _client_read(client: ssl.SSLObject) -> bytes:
    out = b""
    with contextlib.suppress(ssl.SSLWantReadError, ssl.SSLZeroReturnError):
        while chunk := client.read(65536):
            out += chunk
    return out


def inproc_connections(tmp: Path, kind: str, count: int) -> float:
    """CPU µs per new TLS connection of lb's TLS layer alone: ``count`` connections, each a
    handshake, one request answered with ``Connection: close``, and the close. Each client
    offers the session of the connection before it, as wrk does, so all but the first are
    TLS 1.3 resumptions (with a fresh ECDHE share) unless ``kind`` ends in ``-full`` (no
    session offered: full handshakes). Only the server side's calls are timed."""
    from lb.proxy.edge import EdgeCounters
    from lb.proxy.tlsconn import TlsConnection
    from lb.tls import ServerOptions, ServerTls

    full = kind.endswith("-full")
    cert, key = make_cert(tmp, kind.removesuffix("-full"))
    server = ServerTls([(str(cert), str(key))], ServerOptions(alpn=("http/1.1",)))
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    counters = EdgeCounters()
    loop = _Loop()
    session: ssl.SSLSession | None = None
    clock = time.process_time
    used = 0.0
    for _ in range(count):
        cin, cout = ssl.MemoryBIO(), ssl.MemoryBIO()
        client = ctx.wrap_bio(cin, cout, server_hostname=NAME, session=None if full else session)
        sock = _Socket()
        with contextlib.suppress(ssl.SSLWantReadError):
            client.do_handshake()  # the ClientHello
        t0 = clock()
        conn = TlsConnection(loop, _Closer(), server.default, counters, 10.0)  # type: ignore[arg-type]
        conn.connection_made(sock)  # type: ignore[arg-type]
        conn.data_received(cout.read())
        used += clock() - t0
        cin.write(b"".join(sock.out))
        sock.out.clear()
        client.do_handshake()  # the client's Finished; then its request, as wrk sends them
        client.write(INPROC_REQUEST)
        t0 = clock()
        conn.data_received(cout.read())
        used += clock() - t0
        cin.write(b"".join(sock.out))
        answer = _client_read(client)
        if answer != INPROC_RESPONSE:
            raise RuntimeError(f"the TLS layer answered {answer!r}")
        session = client.session
        t0 = clock()
        conn.connection_lost(None)
        used += clock() - t0
    resumed = counters.resumed
    print(
        f"lb TLS layer in-process ({kind}): {count:,} connections, {resumed:,} resumed, "
        f"{1e6 * used / count:.1f} µs CPU per connection",
        flush=True,
    )
    return 1e6 * used / count


# lb's /metrics adds up the workers' counters, which they send about once a second.
LB_SNAPSHOT_LAG = 1.5


def resumed_count(admin: int) -> int:
    """lb's resumed handshakes so far (its /metrics, up to ``LB_SNAPSHOT_LAG`` old)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{admin}/metrics", timeout=5) as r:
        text = r.read().decode()
    m = re.search(r'^lb_tls_sessions_resumed_total\{listener="tls"\} (\S+)', text, re.M)
    return int(float(m.group(1))) if m else -1


def haproxy_resumed_count(sock: Path) -> int:
    """HAProxy's resumed handshakes so far (``ssl_reused_sess`` of its frontend)."""
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(5)
        s.connect(str(sock))
        s.sendall(b"show stat\n")
        text = s.makefile(encoding="ascii").read()
    lines = text.splitlines()
    header = lines[0].lstrip("# ").split(",")
    for line in lines[1:]:
        fields = line.split(",")
        if fields[:2] == ["fe", "FRONTEND"]:
            return int(fields[header.index("ssl_reused_sess")] or 0)
    return -1


@dataclass
class Row:
    what: str
    figures: dict[str, float] = field(default_factory=dict)
    note: str = ""
    rounds: dict[str, list[float]] = field(default_factory=dict)

    def add(self, proxy: str, value: float) -> None:
        """One round's figure: ``figures`` holds the median so far."""
        values = self.rounds.setdefault(proxy, [])
        values.append(value)
        self.figures[proxy] = statistics.median(values)

    def spread(self) -> str:
        """The lowest and highest lb/HAProxy ratio within a round."""
        lbs, has = self.rounds.get("lb", []), self.rounds.get("haproxy", [])
        ratios = [a / b for a, b in zip(lbs, has, strict=False) if b]
        if len(ratios) < 2:
            return ""
        return f"rounds {min(ratios):.2f}-{max(ratios):.2f}x"

    def ratio(self) -> str:
        lb, ha = self.figures.get("lb"), self.figures.get("haproxy")
        return f"{lb / ha:.2f}x" if lb and ha else "n/a"


SCENARIOS = ("keep-alive", "close", "s_time", "idle")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.tls")
    p.add_argument("--duration", type=float, default=8.0, help="seconds per wrk run")
    p.add_argument("--idle", type=int, default=5000, help="idle TLS connections (memory)")
    p.add_argument("--keys", default="ecdsa,rsa")
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds of the wrk rows")
    p.add_argument(
        "--scenarios",
        default=",".join(SCENARIOS),
        help=f"which rows, comma-separated, of: {', '.join(SCENARIOS)}",
    )
    p.add_argument(
        "--lb-old-src",
        type=Path,
        metavar="DIR",
        help="also run 'lb-old': the lb package in DIR (e.g. a worktree of main), before/after",
    )
    p.add_argument(
        "--lb-no-tickets",
        action="store_true",
        help="lb (not lb-old) with session_tickets = false: TLS 1.3 resumption by session ID "
        "from OpenSSL's cache instead of by ticket; --lb-old-src . compares the two",
    )
    p.add_argument(
        "--inproc",
        type=int,
        default=0,
        metavar="N",
        help="only lb's TLS layer, in-process, for N keep-alive requests (no proxies)",
    )
    p.add_argument(
        "--inproc-connections",
        type=int,
        default=0,
        metavar="N",
        help="only lb's TLS layer, in-process, for N new connections (Connection: close); "
        "a key kind ending in -full (ecdsa-full) offers no session",
    )
    args = p.parse_args(argv)
    if args.inproc or args.inproc_connections:
        with tempfile.TemporaryDirectory(prefix="lb-bench-tls-") as d:
            for kind in args.keys.split(","):
                if args.inproc:
                    inproc(Path(d), kind, args.inproc)
                if args.inproc_connections:
                    inproc_connections(Path(d), kind, args.inproc_connections)
        return 0
    scenarios = set(args.scenarios.split(","))
    if not scenarios <= set(SCENARIOS):
        p.error(f"--scenarios: unknown {', '.join(sorted(scenarios - set(SCENARIOS)))}")
    raise_nofile()
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="lb-bench-tls-") as d:
        tmp = Path(d)
        procs = Procs()
        try:
            backend = free_port()
            conf = configs.nginx_backend(tmp, [backend])
            procs.start(["nginx", "-p", str(tmp), "-c", str(conf)], tmp / "nginx.log")
            wait_port(backend)
            lua = wrk.script(tmp, None)
            for kind in args.keys.split(","):
                make_cert(tmp, kind)
                started = len(procs.procs)
                tickets = not args.lb_no_tickets
                lb_port, admin, lb_pid = start_lb(procs, tmp, kind, backend, tickets=tickets)
                ha_port, ha_pid = start_haproxy(procs, tmp, kind, backend)
                ports = {"lb": lb_port, "haproxy": ha_port}
                pids = {"lb": lb_pid, "haproxy": ha_pid}
                resumed: dict[str, Callable[[], int]] = {
                    "lb": functools.partial(resumed_count, admin),
                    "haproxy": functools.partial(
                        haproxy_resumed_count, tmp / f"haproxy-{kind}.sock"
                    ),
                }
                if args.lb_old_src:
                    old = start_lb(procs, tmp, kind, backend, args.lb_old_src, "lb-old")
                    ports["lb-old"], pids["lb-old"] = old[0], old[2]
                    resumed["lb-old"] = functools.partial(resumed_count, old[1])
                wrk_rows = [
                    (label, short, headers)
                    for label, short, headers in (
                        ("keep-alive req/s", "keep-alive", ()),
                        ("TLS connections/s (Connection: close)", "close", ("Connection: close",)),
                    )
                    if short in scenarios
                ]
                for label, short, headers in wrk_rows:
                    row = Row(f"{kind}: {label}")
                    cpu = Row(f"{kind}: CPU µs per request, {short}")
                    for n in range(max(1, args.rounds)):
                        order = list(ports) if n % 2 == 0 else list(reversed(ports))
                        for proxy in order:
                            before = resumed[proxy]() if headers else 0
                            cpu0 = tree_cpu_seconds(pids[proxy])
                            r = wrk.run(
                                port=ports[proxy], path="/", connections=64, threads=1,
                                duration=args.duration, lua=lua, headers=headers,
                                scheme="https",
                            )  # fmt: skip
                            used = tree_cpu_seconds(pids[proxy]) - cpu0
                            us = 1e6 * used / max(1, r.requests)
                            cpu.add(proxy, us)
                            row.add(proxy, r.rps)
                            if r.errors:
                                row.note += f"{proxy}: {r.errors} errors ({r.error_kinds}) "
                            share = ""
                            if headers:
                                if proxy != "haproxy":
                                    time.sleep(LB_SNAPSHOT_LAG)
                                got = resumed[proxy]() - before
                                share = f", {got / max(1, r.requests):.1%} resumed"
                                if n == 0:
                                    row.note += f"{proxy}{share} "
                            print(
                                f"{row.what} {proxy} round {n + 1}: {r.rps:,.0f} "
                                f"({us:.1f} µs CPU{share})",
                                flush=True,
                            )
                    for r_ in (row, cpu):
                        r_.note = "; ".join(x for x in (r_.note.strip(), r_.spread()) if x)
                    rows.append(row)
                    rows.append(cpu)
                for label, reuse in (("full", False), ("resumed", True)):
                    if "s_time" not in scenarios:
                        break
                    row = Row(f"{kind}: s_time {label} handshakes/s (sequential)")
                    for proxy in ports:
                        row.figures[proxy] = s_time(ports[proxy], reuse, max(2, int(args.duration)))
                        print(f"{row.what} {proxy}: {row.figures[proxy]:,.0f}", flush=True)
                    rows.append(row)
                if args.idle and "idle" in scenarios:
                    row = Row(f"{kind}: KiB per idle TLS connection")
                    for proxy in ports:
                        held, per = idle_memory(ports[proxy], pids[proxy], args.idle)
                        row.figures[proxy] = per
                        row.note += f"{proxy} held {held:,} "
                        print(f"{row.what} {proxy}: {per:.1f} ({held} held)", flush=True)
                    rows.append(row)
                for proc in procs.procs[started:]:  # this kind's proxies
                    proc.terminate()
                    proc.wait(15)
        finally:
            procs.stop_all()
    more = " | lb-old | lb-old/HAProxy" if args.lb_old_src else ""
    print(f"\n| scenario | lb | HAProxy | lb/HAProxy{more} | notes |")
    print("| --- " * (7 if more else 5) + "|")
    for row in rows:
        lb, ha = row.figures.get("lb", float("nan")), row.figures.get("haproxy", float("nan"))
        extra = ""
        if more:
            lo = row.figures.get("lb-old", float("nan"))
            extra = f" | {lo:,.1f} | {lo / ha if ha else float('nan'):.2f}x"
        print(f"| {row.what} | {lb:,.1f} | {ha:,.1f} | {row.ratio()}{extra} | {row.note.strip()} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
