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
``--backends`` ports, 1 by default), as in ``run.py``. ``--pin`` runs each proxy alone on
the last CPU and wrk and the backend on the others, as ``benchmarks.run --pin`` does (one
worker each). ``NAME@STRATEGY`` runs a proxy with that
balancing strategy (lb's names; HAProxy and nginx get their equivalent), so that strategies
compare side by side: ``lb@peak_ewma``. ``--close`` adds ``Connection: close`` to wrk's
requests (http mode): every request is a new client connection, so the figure is the CPU cost
of a whole connection (accept, first request, close), as in ``run.py``'s ``l7-close`` scenario.

``--sched`` adds, per run, how the kernel scheduled the proxy (its busiest process): context
switches per request, voluntary (it slept in epoll) and involuntary (it was runnable and
another task took the CPU: a preemption), the microseconds per request it ran and waited
runnable (``/proc/PID/schedstat``), and the share of samples (every 20 ms) in which it was
on the same CPU as wrk and as the backend nginx. On 2 cores, a run where the proxy shares a
CPU with wrk or nginx while the other CPU idles is the slow one; this says which it was.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from benchmarks import procs as procs_module
from benchmarks import proxies
from benchmarks.procs import Procs, descendants, pinned, raise_nofile
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


def _read(path: str) -> str:
    try:
        with open(path) as fh:
            return fh.read()
    except OSError:
        return ""


def _on_cpu(pid: int) -> int:
    """The CPU a process's busiest thread runs on, or last ran on (field 39 of its
    ``/proc/PID/task/TID/stat``); -1 if the process is gone. The busiest thread, not the
    main one: wrk's main thread only waits for its worker threads."""
    best, cpu = -1, -1
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return -1
    for tid in tids:
        text = _read(f"/proc/{pid}/task/{tid}/stat")
        if not text:
            continue
        fields = text.rsplit(")", 1)[1].split()
        ticks = int(fields[11]) + int(fields[12])
        if ticks > best:
            best, cpu = ticks, int(fields[36])
    return cpu


@dataclass
class SchedCounts:
    """A process's scheduler counters at one moment."""

    cpu_ticks: int = 0
    voluntary: int = 0
    involuntary: int = 0
    run_ns: int = 0
    wait_ns: int = 0

    @classmethod
    def of(cls, pid: int) -> SchedCounts:
        counts = cls()
        stat = _read(f"/proc/{pid}/stat")
        if stat:
            fields = stat.rsplit(")", 1)[1].split()
            counts.cpu_ticks = int(fields[11]) + int(fields[12])
        for line in _read(f"/proc/{pid}/status").splitlines():
            if line.startswith("voluntary_ctxt_switches:"):
                counts.voluntary = int(line.split()[1])
            elif line.startswith("nonvoluntary_ctxt_switches:"):
                counts.involuntary = int(line.split()[1])
        sched = _read(f"/proc/{pid}/schedstat").split()
        if len(sched) >= 2:
            counts.run_ns, counts.wait_ns = int(sched[0]), int(sched[1])
        return counts


@dataclass
class Sched:
    """How the kernel scheduled the proxy's busiest process during one run (per request)."""

    voluntary: float
    involuntary: float
    run_us: float
    wait_us: float
    with_wrk: float  # share of samples on wrk's CPU
    with_backend: float  # share of samples on the backend nginx's CPU

    def line(self) -> str:
        return (
            f"ctx switches/request: slept {self.voluntary:.3f}, preempted {self.involuntary:.3f};"
            f" run {self.run_us:5.2f} us, waited {self.wait_us:5.2f} us;"
            f" on wrk's CPU {self.with_wrk:4.0%}, on nginx's {self.with_backend:4.0%}"
        )


class _Sampler(threading.Thread):
    """Samples which CPU each of ``pids`` (and ``wrk``, ``backend``) is on, every 20 ms."""

    def __init__(self, pids: list[int], wrk: int, backend: list[int]) -> None:
        super().__init__(daemon=True)
        self.pids, self.wrk, self.backend = pids, wrk, backend
        self.stop = threading.Event()
        self.samples: list[tuple[dict[int, int], int, set[int]]] = []

    def run(self) -> None:
        while not self.stop.wait(0.02):
            proxy = {p: _on_cpu(p) for p in self.pids}
            backend = {_on_cpu(p) for p in self.backend}
            self.samples.append((proxy, _on_cpu(self.wrk), backend))

    def shares(self, pid: int) -> tuple[float, float]:
        rows = [(proxy[pid], wrk, backend) for proxy, wrk, backend in self.samples]
        if not rows:
            return 0.0, 0.0
        with_wrk = sum(1 for cpu, wrk, _ in rows if cpu == wrk) / len(rows)
        with_backend = sum(1 for cpu, _, backend in rows if cpu in backend) / len(rows)
        return with_wrk, with_backend


def measure(
    port: int,
    pid: int,
    duration: int,
    close: bool = False,
    backend: list[int] | None = None,
) -> tuple[float, float, Sched | None]:
    """(req/s, CPU microseconds per request, how the proxy was scheduled) for one wrk run
    (``close``: a connection each). The last is given when ``backend`` names the backend's
    processes (for the samples of which CPU it is on), else None."""
    before = tree_cpu_seconds(pid)
    tree = [pid, *descendants(pid)]
    counts = {p: SchedCounts.of(p) for p in tree}
    t0 = time.monotonic()
    header = ["-H", "Connection: close"] if close else []
    wrk = subprocess.Popen(
        pinned(
            ["wrk", "-t1", "-c64", f"-d{duration}s", *header, f"http://127.0.0.1:{port}/"], "other"
        ),
        stdout=subprocess.PIPE,
        text=True,
    )
    sampler = None
    if backend is not None:
        sampler = _Sampler(tree, wrk.pid, backend)
        sampler.start()
    out, _ = wrk.communicate(timeout=duration + 30)
    if sampler is not None:
        sampler.stop.set()
        sampler.join()
    if wrk.returncode != 0:
        raise RuntimeError(f"wrk failed ({wrk.returncode}):\n{out}")
    elapsed = time.monotonic() - t0
    used = tree_cpu_seconds(pid) - before
    m = re.search(r"(\d+) requests in", out)
    if m is None or int(m.group(1)) == 0:
        raise RuntimeError(f"wrk served no requests:\n{out}")
    requests = int(m.group(1))
    sched = None
    if sampler is not None:
        after = {p: SchedCounts.of(p) for p in tree}
        # The busiest process of the tree: lb's worker, HAProxy itself, nginx's worker.
        busiest = max(tree, key=lambda p: after[p].cpu_ticks - counts[p].cpu_ticks)
        a, b = after[busiest], counts[busiest]
        sched = Sched(
            (a.voluntary - b.voluntary) / requests,
            (a.involuntary - b.involuntary) / requests,
            (a.run_ns - b.run_ns) / 1e3 / requests,
            (a.wait_ns - b.wait_ns) / 1e3 / requests,
            *sampler.shares(busiest),
        )
    return requests / elapsed, used / requests * 1e6, sched


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
    ap.add_argument(
        "--sched",
        action="store_true",
        help="also report how the kernel scheduled each proxy (switches, waits, shared CPUs)",
    )
    ap.add_argument(
        "--pin",
        action="store_true",
        help="as benchmarks.run --pin: each proxy alone on the last CPU, wrk and nginx elsewhere",
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
    if args.pin:
        if shutil.which("taskset") is None:
            ap.error("--pin needs taskset (apt-get install -y util-linux)")
        procs_module.PIN = True
    raise_nofile()
    procs = Procs()
    tmp = Path(tempfile.mkdtemp(prefix="lb-cpu-"))
    figures: dict[str, list[tuple[float, float]]] = {n: [] for n in names}
    try:
        ports, backend_proc = proxies.start_backends(procs, tmp, args.backends)
        # (nginx's workers: its master sleeps, and where it last ran says nothing)
        backend = (descendants(backend_proc.pid) or [backend_proc.pid]) if args.sched else None
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
                rate, per_request, sched = measure(
                    run.port, run.proc.pid, args.duration, args.close, backend
                )
                figures[n].append((rate, per_request))
                print(
                    f"round {r + 1}  {n:14}  {rate:9,.0f} req/s  {per_request:6.2f} us CPU/request"
                )
                if sched is not None:
                    print(f"          {sched.line()}")
    finally:
        procs.stop_all()
    close = ", Connection: close" if args.close else ""
    print(f"\n{mode}{close}, wrk -t1 -c64, {args.rounds} x {args.duration} s per proxy:")
    for n, rows in figures.items():
        us = [u for _, u in rows]
        rates = [r for r, _ in rows]
        print(
            f"  {n:14}  CPU/request min {min(us):6.2f} us, median {statistics.median(us):6.2f} us;"
            f"  req/s median {statistics.median(rates):9,.0f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
