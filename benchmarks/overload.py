"""The overload scenario (issue 15): 5,000 keep-alive connections to backends that take
``MAX_CONN`` requests at a time each, the rest waiting in a queue.

    python -m benchmarks.overload               # this scenario alone, lb / HAProxy / nginx
    python -m benchmarks.overload --rounds 1 --duration 3
    python -m benchmarks.run --groups overload  # the same, through the suite's options

The same limit on every proxy, in front of the suite's nginx backend (2 ports):

* lb: ``max_conn = MAX_CONN`` on the pool (``workers = 1``, so the whole limit is the one
  worker's), ``max_queue`` large enough for every connection (HAProxy's queue is unbounded),
  ``queue_timeout = QUEUE_TIMEOUT_S``;
* HAProxy: ``maxconn MAX_CONN`` on each server, ``timeout queue QUEUE_TIMEOUT_S``;
* nginx: ``max_conns=MAX_CONN`` on each upstream server. Open-source nginx has no queue (the
  ``queue`` directive is NGINX Plus only): a request that finds every server at its limit gets
  a 502 at once. Its row is reported as it is, errors included, and is not comparable.

The issue's target: lb's p99 at most 1.5x HAProxy's, with req/s at least 0.9x. The figures
are reported, never asserted (``python -m benchmarks.run --smoke`` runs it lb-only, to check
that the scenario works).
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from benchmarks.scenarios import Scenario

if TYPE_CHECKING:  # (scenarios.py imports this module while it is being built)
    from benchmarks.suite import ScenarioResult

NAME = "l7-5k-maxconn"
CONNECTIONS = 5000
BACKENDS = 2
MAX_CONN = 32  # per backend: 64 requests at a backend at once, as wrk -c64 in the core group
QUEUE_TIMEOUT_S = 10.0  # longer than wrk's 5 s timeout: a wait past it shows as a timeout
#: The issue's targets for lb against HAProxy.
P99_TARGET = 1.5  # lb p99 / HAProxy p99, at most
RPS_TARGET = 0.9  # lb req/s / HAProxy req/s, at least


def scenarios() -> list[Scenario]:
    return [
        Scenario(
            NAME,
            "overload",
            "http",
            f"L7 keep-alive, {CONNECTIONS:,} connections, max_conn {MAX_CONN} per backend "
            f"x {BACKENDS}, queued",
            connections=CONNECTIONS,
            backends=BACKENDS,
            max_conn=MAX_CONN,
            queue_timeout_s=QUEUE_TIMEOUT_S,
        )
    ]


_NAMES = {"lb": "lb", "haproxy": "HAProxy", "nginx": "nginx (max_conns, no queue)"}


def _ratio(a: float, b: float) -> float | None:
    return a / b if b and a == a and b == b else None  # (NaN when a proxy made no run)


def table(results: list[ScenarioResult], proxies: list[str]) -> str:
    """Per proxy: req/s, p50, p99, errors, and the ratios to HAProxy with the issue's targets."""
    rows = [r for r in results if r.scenario.group == "overload" and not r.failure]
    if not rows:
        return ""
    lines = [
        "| scenario | proxy | req/s | p50 ms | p99 ms | errors | req/s / HAProxy "
        f"(>= {RPS_TARGET}) | p99 / HAProxy (<= {P99_TARGET}) |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        ref = r.proxies.get("haproxy")
        for p in proxies:
            runs = r.proxies[p]
            if not runs.runs:
                continue
            rps = _ratio(runs.rps, ref.rps) if ref is not None and ref.runs else None
            p99 = _ratio(runs.p99_ms, ref.p99_ms) if ref is not None and ref.runs else None
            rps_cell = p99_cell = "-"
            if rps is not None and p99 is not None and p != "haproxy":
                rps_cell = f"{rps:.2f}x"
                p99_cell = f"{p99:.2f}x"
                if p == "lb":
                    rps_cell += " met" if rps >= RPS_TARGET else " **missed**"
                    p99_cell += " met" if p99 <= P99_TARGET else " **missed**"
            lines.append(
                f"| {r.scenario.name} | {_NAMES.get(p, p)} | {runs.rps:,.0f} | "
                f"{runs.p50_ms:.1f} | {runs.p99_ms:.1f} | {runs.errors:,} | {rps_cell} | "
                f"{p99_cell} |"
            )
    notes = (
        f"\nEach backend takes {MAX_CONN} requests at a time; lb `max_conn` + `queue_timeout "
        f'= "{QUEUE_TIMEOUT_S:g}s"`, HAProxy `maxconn` per server + `timeout queue`. nginx\'s '
        "`max_conns` has no queue in open-source nginx: what finds both servers full is a 502 "
        "(its errors), so its figures are not comparable.\n"
    )
    return "\n".join(lines) + "\n" + notes


def main(argv: list[str] | None = None) -> int:
    from benchmarks import run

    args = list(sys.argv[1:] if argv is None else argv)
    return run.main(["--groups", "overload", *args])


if __name__ == "__main__":
    sys.exit(main())
