"""Run wrk once and read its numbers exactly, through a Lua ``done`` hook.

wrk's human summary rounds and changes units (``987.65us``, ``1.02ms``, ``2.00s``); the hook
prints the raw figures (microseconds) as one JSON line instead. For the consistent_hash
scenarios the script also makes wrk send 1,000 distinct ``X-User`` values in turn, so the hash
spreads requests over the backends; for the browser-head scenarios it sends the head a browser
sends (``BROWSER_HEADERS``: about 560 bytes, 12 header fields with a cookie), built once, so
wrk's cost per request stays that of the minimal head. While wrk runs, a thread samples the
proxy's RSS (the sum over its process tree) and keeps the peak.
"""

from __future__ import annotations

import json
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path

from benchmarks.procs import pinned, tree_rss_kib

_DONE = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests":%d,"duration_us":%d,"bytes":%d,"p50_us":%d,"p90_us":%d,'
    .. '"p99_us":%d,"mean_us":%.1f,"max_us":%d,"connect":%d,"read":%d,"write":%d,'
    .. '"status":%d,"timeout":%d}\\n',
    summary.requests, summary.duration, summary.bytes,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.mean, latency.max, e.connect, e.read, e.write, e.status, e.timeout))
end
"""

_VARY_HEADER = """
local reqs = {}
local n = 0
init = function(args)
  for i = 1, 1000 do
    reqs[i] = wrk.format(nil, nil, {["%(header)s"] = "user-" .. i})
  end
end
request = function()
  n = n + 1
  if n > 1000 then n = 1 end
  return reqs[n]
end
"""


#: What a desktop Chrome sends for a page (wrk adds Host): the browser-head scenarios' head.
BROWSER_HEADERS: tuple[tuple[str, str], ...] = (
    ("Connection", "keep-alive"),
    ("Upgrade-Insecure-Requests", "1"),
    (
        "User-Agent",
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/120.0.0.0 Safari/537.36",
    ),
    (
        "Accept",
        "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8",
    ),
    ("Sec-Fetch-Site", "same-origin"),
    ("Sec-Fetch-Mode", "navigate"),
    ("Sec-Fetch-Dest", "document"),
    ("Referer", "http://127.0.0.1/index.html"),
    ("Accept-Encoding", "gzip, deflate, br"),
    ("Accept-Language", "en-US,en;q=0.9,de;q=0.8"),
    (
        "Cookie",
        "session=8f14e45fceea167a5a36dedd4bea2543; theme=dark; _ga=GA1.1.1234567.1700000000",
    ),
)


def _lua_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


# (A header given with -H, e.g. Connection: close, wins: wrk sets those before this runs.)
_BROWSER = "".join(
    f"wrk.headers[{_lua_string(name)}] = wrk.headers[{_lua_string(name)}] or {_lua_string(value)}\n"
    for name, value in BROWSER_HEADERS
)


@dataclass
class WrkResult:
    rps: float
    p50_ms: float
    p99_ms: float
    mean_ms: float
    max_ms: float
    requests: int
    #: Socket errors (connect, read, write, timeout) plus non-2xx/3xx responses.
    errors: int
    #: The proxy's peak process-tree RSS during the run (0 when not measured).
    peak_rss_kib: int
    #: What the errors were, e.g. ``"connect 240, read 8"`` (empty without errors).
    error_kinds: str = ""


def script(tmp: Path, vary_header: str | None, browser: bool = False) -> Path:
    """The Lua script for a scenario: the summary hook, plus the varying hash header or the
    browser head (wrk sends ``wrk.headers`` set at load time as a static request)."""
    path = tmp / f"wrk{'-' + vary_header if vary_header else ''}{'-browser' if browser else ''}.lua"
    text = _DONE + (_VARY_HEADER % {"header": vary_header} if vary_header else "")
    if browser:
        text += _BROWSER
    path.write_text(text)
    return path


class RssSampler(threading.Thread):
    def __init__(self, pid: int | None, period: float = 0.25) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.period = period
        self.peak = 0
        self._stop_event = threading.Event()

    def run(self) -> None:
        if self.pid is None:
            return
        while not self._stop_event.wait(self.period):
            self.peak = max(self.peak, tree_rss_kib(self.pid))

    def stop(self) -> int:
        self._stop_event.set()
        self.join()
        if self.pid is not None:
            self.peak = max(self.peak, tree_rss_kib(self.pid))
        return self.peak


def run(
    *,
    port: int,
    path: str,
    connections: int,
    threads: int,
    duration: float,
    lua: Path,
    headers: tuple[str, ...] = (),
    rss_pid: int | None = None,
    scheme: str = "http",
) -> WrkResult:
    args = [
        "wrk",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{max(1, round(duration))}s",
        "--timeout",
        "5s",
        "-s",
        str(lua),
        *[a for h in headers for a in ("-H", h)],
        f"{scheme}://127.0.0.1:{port}{path}",
    ]
    sampler = RssSampler(rss_pid)
    sampler.start()
    try:
        out = subprocess.run(
            pinned(args, "other"), capture_output=True, text=True, timeout=duration + 60
        )
    finally:
        peak = sampler.stop()
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("WRKJSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk gave no summary (exit {out.returncode}): {out.stderr.strip()}")
    d = json.loads(line.removeprefix("WRKJSON "))
    seconds = d["duration_us"] / 1e6
    return WrkResult(
        rps=d["requests"] / seconds if seconds else 0.0,
        p50_ms=d["p50_us"] / 1000,
        p99_ms=d["p99_us"] / 1000,
        mean_ms=d["mean_us"] / 1000,
        max_ms=d["max_us"] / 1000,
        requests=d["requests"],
        errors=d["connect"] + d["read"] + d["write"] + d["timeout"] + d["status"],
        peak_rss_kib=peak,
        error_kinds=", ".join(
            f"{kind} {d[kind]}"
            for kind in ("connect", "read", "write", "timeout", "status")
            if d[kind]
        ),
    )
