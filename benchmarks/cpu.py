"""CPU time per request: each proxy's process tree, under the same wrk load, side by side.

    python -m benchmarks.cpu                          # lb and HAProxy, L7 keep-alive, 3 rounds
    python -m benchmarks.cpu --proxies lb,lb-old --lb-old-src /tmp/wt   # before/after a change
    python -m benchmarks.cpu --mode tcp --rounds 5
    python -m benchmarks.cpu --close                  # a new connection per request
    python -m benchmarks.cpu --proxies lb@round_robin,lb@least_conn,lb@peak_ewma --backends 4

req/s moves by up to 2x on a shared 2-core machine; CPU microseconds per request move much less,
because they do not count the time a proxy waits for the CPU. So this is the figure to compare
for a hot-path change (``lb-old`` runs the ``lb`` package found in ``--lb-old-src``, e.g. a
``git worktree`` of the previous commit). Each round runs ``wrk -t1 -c64`` for ``--duration``
seconds against each proxy in turn, and reads the utime + stime of the proxy's whole process
tree from ``/proc`` before and after; the summary gives the lowest (least disturbed) and the
median figure per proxy. Loopback only; the backends are one nginx worker (serving
``--backends`` ports, 1 by default), as in ``run.py``. ``NAME@STRATEGY`` runs a proxy with that
balancing strategy (lb's names; HAProxy and nginx get their equivalent), so that strategies
compare side by side: ``lb@peak_ewma``. ``--close`` adds ``Connection: close`` to wrk's
requests (http mode): every request is a new client connection, so the figure is the CPU cost
of a whole connection (accept, first request, close), as in ``run.py``'s ``l7-close`` scenario.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks import proxies
from benchmarks.procs import Procs, descendants, raise_nofile
from benchmarks.scenarios import Mode

_TICK = os.sysconf("SC_CLK_TCK")


def tree_cpu_seconds(pid: int) -> float:
    """utime + stime of a process and its descendants, in seconds."""
    total = 0
    for p in (pid, *descendants(pid)):
        try:
            with open(f"/proc/{p}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / _TICK


def measure(port: int, pid: int, duration: int, close: bool = False) -> tuple[float, float]:
    """(req/s, CPU microseconds per request) for one wrk run (``close``: a connection each)."""
    before = tree_cpu_seconds(pid)
    t0 = time.monotonic()
    header = ["-H", "Connection: close"] if close else []
    out = subprocess.run(
        ["wrk", "-t1", "-c64", f"-d{duration}s", *header, f"http://127.0.0.1:{port}/"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    elapsed = time.monotonic() - t0
    used = tree_cpu_seconds(pid) - before
    m = re.search(r"(\d+) requests in", out)
    if m is None or int(m.group(1)) == 0:
        raise RuntimeError(f"wrk served no requests:\n{out}")
    requests = int(m.group(1))
    return requests / elapsed, used / requests * 1e6


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--proxies",
        default="lb,haproxy",
        help="lb, lb-old, haproxy, nginx; NAME@STRATEGY for another strategy than round_robin",
    )
    ap.add_argument("--backends", type=int, default=1, help="backend ports (one nginx)")
    ap.add_argument("--mode", choices=("http", "tcp"), default="http")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=int, default=5, help="seconds per wrk run")
    ap.add_argument("--lb-old-src", type=Path, help="where lb-old's lb package is")
    ap.add_argument(
        "--close",
        action="store_true",
        help="http only: wrk sends Connection: close (a new client connection per request)",
    )
    args = ap.parse_args(argv)
    if args.close and args.mode != "http":
        ap.error("--close is for --mode http")
    names = [p.strip() for p in args.proxies.split(",") if p.strip()]
    if any(n.partition("@")[0] == "lb-old" for n in names) and args.lb_old_src is None:
        ap.error("lb-old needs --lb-old-src")
    if args.backends < 1:
        ap.error("--backends must be at least 1")
    mode: Mode = args.mode
    raise_nofile()
    procs = Procs()
    tmp = Path(tempfile.mkdtemp(prefix="lb-cpu-"))
    figures: dict[str, list[tuple[float, float]]] = {n: [] for n in names}
    try:
        ports, _ = proxies.start_backends(procs, tmp, args.backends)
        running = {}
        for n in names:
            proxy, _, strategy = n.partition("@")
            running[n] = proxies.start(
                procs,
                tmp,
                "lb" if proxy == "lb-old" else proxy,
                name=n.replace("@", "-"),
                mode=mode,
                backends=ports,
                strategy=strategy or "round_robin",
                lb_src=args.lb_old_src if proxy == "lb-old" else None,
            )
        for r in range(args.rounds):
            for n, run in running.items():
                assert run.proc is not None
                rps, us = measure(run.port, run.proc.pid, args.duration, args.close)
                figures[n].append((rps, us))
                print(f"round {r + 1}  {n:14}  {rps:9,.0f} req/s  {us:6.2f} us CPU/request")
    finally:
        procs.stop_all()
    close = ", Connection: close" if args.close else ""
    print(f"\n{mode}{close}, wrk -t1 -c64, {args.rounds} x {args.duration} s per proxy:")
    for n, rows in figures.items():
        us = [u for _, u in rows]
        rps = [r for r, _ in rows]
        print(
            f"  {n:14}  CPU/request min {min(us):6.2f} us, median {statistics.median(us):6.2f} us;"
            f"  req/s median {statistics.median(rps):9,.0f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
