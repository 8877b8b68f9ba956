"""Memory per idle client connection: lb (http and tcp listeners) against HAProxy and nginx.

    python -m benchmarks.memory                     # 1,000 and 10,000 connections
    python -m benchmarks.memory --counts 1000 --proxies lb

For each proxy and listener mode: start the proxy in front of one nginx backend, warm it up,
read the RSS of its process tree (the baseline), then open connections from this process, each
sending one ``GET /`` and reading the response before it goes idle (a kept-alive client between
two requests; through a tcp listener, an idle relayed connection with its upstream connection
open). After each step (1,000, then 10,000 in total) the RSS is read again:
``(RSS - baseline) / connections held`` is the figure. It is user-space memory only: the
kernel's socket buffers are not in anyone's RSS.

Limits, reported rather than hidden: the open-file limit here is 20,000 (the hard limit; this
process raises its soft limit to it, and the proxies inherit it). A tcp proxy needs two
descriptors per connection, so none of them can hold 10,000 relayed connections; HAProxy's
``maxconn`` stops at 9,900 for the same reason. Connections a proxy does not answer within a
few seconds count as refused, and the figure is per connection actually held.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from benchmarks import proxies
from benchmarks.procs import Procs, raise_nofile, tree_rss_kib
from benchmarks.scenarios import Mode

REQUEST = b"GET / HTTP/1.1\r\nHost: bench\r\nUser-Agent: lb-bench-memory\r\n\r\n"
DEFAULT_COUNTS = (1000, 10000)
#: (proxy, listener mode) pairs measured by default.
DEFAULT_TARGETS: tuple[tuple[str, Mode], ...] = (
    ("lb", "http"),
    ("haproxy", "http"),
    ("nginx", "http"),
    ("lb", "tcp"),
    ("haproxy", "tcp"),
    ("nginx", "tcp"),
)
OPEN_CONCURRENCY = 100
ANSWER_TIMEOUT_S = 3.0


@dataclass
class Step:
    target: int
    held: int
    rss_kib: int
    kib_per_conn: float


@dataclass
class MemoryResult:
    proxy: str
    mode: str
    baseline_kib: int
    steps: list[Step] = field(default_factory=list)
    note: str = ""


def _response_complete(buf: bytes) -> bool:
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        return False
    head = buf[:end].lower()
    i = head.find(b"content-length:")
    if i < 0:
        return True  # nothing to wait for: the backend always sends Content-Length here
    length = int(head[i + 15 :].split(b"\r\n", 1)[0])
    return len(buf) - end - 4 >= length


async def _open_one(loop: asyncio.AbstractEventLoop, port: int) -> socket.socket | None:
    sock = socket.socket()
    sock.setblocking(False)
    try:
        async with asyncio.timeout(ANSWER_TIMEOUT_S):
            await loop.sock_connect(sock, ("127.0.0.1", port))
            await loop.sock_sendall(sock, REQUEST)
            buf = b""
            while not _response_complete(buf):
                chunk = await loop.sock_recv(sock, 65536)
                if not chunk:
                    raise ConnectionError("closed before the response ended")
                buf += chunk
        return sock
    except (OSError, TimeoutError):
        sock.close()
        return None


async def open_idle(port: int, count: int) -> list[socket.socket]:
    """Open ``count`` connections that each completed one request; return those that did."""
    loop = asyncio.get_running_loop()
    gate = asyncio.Semaphore(OPEN_CONCURRENCY)

    async def one() -> socket.socket | None:
        async with gate:
            return await _open_one(loop, port)

    opened = await asyncio.gather(*(one() for _ in range(count)))
    return [s for s in opened if s is not None]


def _settled_rss(pid: int) -> int:
    """The median of a few readings a little apart, once allocations have settled."""
    time.sleep(1.0)
    readings = []
    for _ in range(3):
        readings.append(tree_rss_kib(pid))
        time.sleep(0.2)
    return int(statistics.median(readings))


def measure(
    tmp: Path,
    backend: int,
    proxy: str,
    mode: Mode,
    counts: tuple[int, ...],
    progress: Callable[[str], None],
    lb_src: Path | None = None,
) -> MemoryResult:
    procs = Procs()
    held: list[socket.socket] = []
    try:
        running = proxies.start(
            procs, tmp, proxy, name=f"mem-{mode}", mode=mode, backends=[backend], lb_src=lb_src
        )
        assert running.proc is not None
        pid = running.proc.pid
        # Warm up: the first requests allocate per-process state (pools, code paths) that
        # later connections reuse; it belongs in the baseline, not in the per-connection cost.
        for s in asyncio.run(open_idle(running.port, 50)):
            s.close()
        baseline = _settled_rss(pid)
        result = MemoryResult(proxy, mode, baseline)
        for target in counts:
            progress(f"[memory] {proxy} {mode}: opening up to {target:,} idle connections")
            held += asyncio.run(open_idle(running.port, target - len(held)))
            rss = _settled_rss(pid)
            per = (rss - baseline) / len(held) if held else float("nan")
            result.steps.append(Step(target, len(held), rss, per))
            progress(
                f"    held {len(held):,}/{target:,}  RSS {rss / 1024:,.1f} MiB  "
                f"{per:,.1f} KiB per connection"
            )
            if len(held) < target:
                result.note = f"held {len(held):,} of {target:,}"
        return result
    finally:
        for s in held:
            with contextlib.suppress(OSError):
                s.close()
        procs.stop_all()


def run(
    tmp: Path,
    backend: int,
    counts: tuple[int, ...] = DEFAULT_COUNTS,
    targets: tuple[tuple[str, Mode], ...] = DEFAULT_TARGETS,
    progress: Callable[[str], None] = print,
    lb_src: Path | None = None,
) -> list[MemoryResult]:
    raise_nofile()
    return [measure(tmp, backend, proxy, mode, counts, progress, lb_src) for proxy, mode in targets]


def render(results: list[MemoryResult]) -> str:
    if not results:
        return ""
    counts = [s.target for s in results[0].steps]
    head = "| proxy | listener | baseline MiB | " + " | ".join(
        f"KiB/conn at {c:,} | held at {c:,}" for c in counts
    )
    lines = [
        head + " |",
        "| --- | --- | ---: | " + " | ".join("---: | ---:" for _ in counts) + " |",
    ]
    for r in results:
        cells = " | ".join(f"{s.kib_per_conn:,.1f} | {s.held:,}" for s in r.steps)
        lines.append(f"| {r.proxy} | {r.mode} | {r.baseline_kib / 1024:,.1f} | {cells} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="benchmarks.memory", description=__doc__.split("\n\n")[0])
    ap.add_argument("--counts", default=",".join(map(str, DEFAULT_COUNTS)))
    ap.add_argument("--proxies", default=",".join(proxies.PROXIES))
    ap.add_argument("--modes", default="http,tcp")
    ap.add_argument("--json", help="also write the results to this file")
    ap.add_argument("--lb-src", type=Path, help="run the lb package from this directory")
    args = ap.parse_args(argv)
    counts = tuple(sorted(int(c) for c in args.counts.split(",")))
    wanted = args.proxies.split(",")
    modes = args.modes.split(",")
    targets = tuple(t for t in DEFAULT_TARGETS if t[0] in wanted and t[1] in modes)
    raise_nofile()
    with tempfile.TemporaryDirectory(prefix="lb-bench-mem-") as tmpdir:
        tmp = Path(tmpdir)
        procs = Procs()
        try:
            (backend,), _ = proxies.start_backends(procs, tmp, 1)
            results = run(tmp, backend, counts, targets, lb_src=args.lb_src)
        finally:
            procs.stop_all()
    print()
    print(render(results))
    if args.json:
        Path(args.json).write_text(json.dumps([asdict(r) for r in results], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
