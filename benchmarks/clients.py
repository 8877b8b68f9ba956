"""Load clients other than wrk: ``ab -k`` (HTTP/1.0 keep-alive) and ``h2load --h1``.

Real users benchmark with these too, and they send heads wrk does not: ``ab`` speaks HTTP/1.0
with ``Connection: Keep-Alive`` (Debian's apache2-utils), ``h2load --h1`` HTTP/1.1 with its own
header set (Debian's nghttp2-client). Each runner runs its tool once, for a bounded time, and
reads its figures into a :class:`benchmarks.wrk.WrkResult`, so that the suite reports them like
wrk's. A scenario whose tool is missing is skipped with a message naming the package
(:func:`missing`), never failed.

``ab`` reports percentiles only in whole milliseconds on its summary; its ``-e`` CSV gives them
as decimals, and that is what is read. ``h2load`` prints no percentiles: its ``--log-file``
(one line per request: start, status, microseconds) gives p50 and p99.
"""

from __future__ import annotations

import re
import shutil
import statistics
import subprocess
from pathlib import Path

from benchmarks.procs import pinned
from benchmarks.wrk import RssSampler, WrkResult

#: client -> (executable, Debian package)
TOOLS: dict[str, tuple[str, str]] = {
    "wrk": ("wrk", "wrk"),
    "ab": ("ab", "apache2-utils"),
    "h2load": ("h2load", "nghttp2-client"),
}


def missing(client: str) -> str | None:
    """Why ``client`` cannot run here, or None when its tool is installed."""
    tool, package = TOOLS[client]
    if shutil.which(tool) is None:
        return f"{tool} is not installed (apt-get install -y {package})"
    return None


def _number(pattern: str, text: str, what: str) -> float:
    m = re.search(pattern, text, re.M)
    if m is None:
        raise RuntimeError(f"{what}: no match for {pattern!r} in its output:\n{text[-1500:]}")
    return float(m.group(1))


def parse_ab(stdout: str, csv: str) -> tuple[int, float, int, float, float, float, float]:
    """(complete requests, seconds taken, failed + non-2xx, mean ms, p50, p99 and max ms) from
    ab's summary and its ``-e`` CSV (``percentage,ms`` per line, 0 to 100)."""
    complete = int(_number(r"^Complete requests:\s+(\d+)", stdout, "ab"))
    seconds = _number(r"^Time taken for tests:\s+([\d.]+) seconds", stdout, "ab")
    failed = int(_number(r"^Failed requests:\s+(\d+)", stdout, "ab"))
    m = re.search(r"^Non-2xx responses:\s+(\d+)", stdout, re.M)
    non2xx = int(m.group(1)) if m else 0
    # "Time per request: X [ms] (mean)" is per concurrent request, i.e. the latency.
    mean = _number(r"^Time per request:\s+([\d.]+) \[ms\] \(mean\)$", stdout, "ab")
    pct: dict[int, float] = {}
    for line in csv.splitlines()[1:]:
        p, _, ms = line.partition(",")
        if p.strip().isdigit():
            pct[int(p)] = float(ms)
    if 50 not in pct or 99 not in pct:
        raise RuntimeError(f"ab: no percentiles in its CSV:\n{csv[:500]}")
    return complete, seconds, failed + non2xx, mean, pct[50], pct[99], pct.get(100, pct[99])


def run_ab(
    *,
    tmp: Path,
    port: int,
    path: str,
    connections: int,
    duration: float,
    rss_pid: int | None = None,
) -> WrkResult:
    """``ab -k`` for ``duration`` seconds (``-n`` is only a cap: ``-t`` ends the run)."""
    csv_path = tmp / "ab-percentiles.csv"
    args = [
        "ab",
        "-k",
        "-q",
        "-c",
        str(connections),
        "-t",
        str(max(1, round(duration))),
        "-n",
        "50000000",
        "-s",
        "5",
        "-e",
        str(csv_path),
        f"http://127.0.0.1:{port}{path}",
    ]
    sampler = RssSampler(rss_pid)
    sampler.start()
    try:
        out = subprocess.run(
            pinned(args, "other"), capture_output=True, text=True, timeout=duration + 60
        )
    finally:
        peak = sampler.stop()
    if out.returncode != 0:
        raise RuntimeError(f"ab exited {out.returncode}: {out.stderr.strip()[-500:]}")
    complete, seconds, errors, mean, p50, p99, worst = parse_ab(out.stdout, csv_path.read_text())
    return WrkResult(
        rps=complete / seconds if seconds else 0.0,
        p50_ms=p50,
        p99_ms=p99,
        mean_ms=mean,
        max_ms=worst,
        requests=complete,
        errors=errors,
        peak_rss_kib=peak,
        error_kinds=f"failed or non-2xx {errors}" if errors else "",
    )


def parse_h2load(stdout: str) -> tuple[int, float, int]:
    """(succeeded requests, seconds, failed + errored + timed out + non-2xx) from h2load."""
    seconds = _number(r"^finished in ([\d.]+)s,", stdout, "h2load")
    m = re.search(
        r"^requests: \d+ total, \d+ started, \d+ done, (\d+) succeeded, (\d+) failed, "
        r"(\d+) errored, (\d+) timeout",
        stdout,
        re.M,
    )
    if m is None:
        raise RuntimeError(f"h2load: no request counts in its output:\n{stdout[-1500:]}")
    succeeded, failed, errored, timeout = (int(g) for g in m.groups())
    codes = re.search(r"^status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", stdout, re.M)
    bad = int(codes.group(3)) + int(codes.group(4)) if codes else 0
    return succeeded, seconds, failed + errored + timeout + bad


def log_percentiles(log: str) -> tuple[float, float, float, float]:
    """(p50, p99, mean, max) in ms from h2load's ``--log-file`` (start, status, µs per line)."""
    us = sorted(int(f[2]) for f in (ln.split("\t") for ln in log.splitlines()) if len(f) == 3)
    if not us:
        return (float("nan"),) * 4
    n = len(us)
    return (
        us[n // 2] / 1000,
        us[min(n - 1, n * 99 // 100)] / 1000,
        statistics.fmean(us) / 1000,
        us[-1] / 1000,
    )


def run_h2load(
    *,
    tmp: Path,
    port: int,
    path: str,
    connections: int,
    threads: int,
    duration: float,
    rss_pid: int | None = None,
) -> WrkResult:
    """``h2load --h1`` (HTTP/1.1 keep-alive, one request at a time per connection)."""
    log_path = tmp / "h2load.log"
    args = [
        "h2load",
        "--h1",
        "-t",
        str(threads),
        "-c",
        str(connections),
        "-m",
        "1",
        "-D",
        str(max(1, round(duration))),
        "--log-file",
        str(log_path),
        f"http://127.0.0.1:{port}{path}",
    ]
    sampler = RssSampler(rss_pid)
    sampler.start()
    try:
        out = subprocess.run(
            pinned(args, "other"), capture_output=True, text=True, timeout=duration + 60
        )
    finally:
        peak = sampler.stop()
    if out.returncode != 0:
        raise RuntimeError(f"h2load exited {out.returncode}: {out.stderr.strip()[-500:]}")
    succeeded, seconds, errors = parse_h2load(out.stdout)
    p50, p99, mean, worst = log_percentiles(log_path.read_text())
    log_path.unlink()
    return WrkResult(
        rps=succeeded / seconds if seconds else 0.0,
        p50_ms=p50,
        p99_ms=p99,
        mean_ms=mean,
        max_ms=worst,
        requests=succeeded,
        errors=errors,
        peak_rss_kib=peak,
        error_kinds=f"failed, errored, timed out or 4xx/5xx {errors}" if errors else "",
    )
