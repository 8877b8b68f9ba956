"""The load scenarios: what wrk sends, through which kind of listener, to how many backends.

A scenario is a value; ``configs.py`` turns it into equivalent lb, HAProxy and nginx configs and
``wrk.py`` into a wrk command. Groups are run (and reported) together:

* ``core``: L4 and L7 keep-alive, L7 ``Connection: close``, 16 KiB and 256 KiB responses;
* ``clients``: the heads real clients send, L7 keep-alive: a browser's head (wrk with
  ``wrk.BROWSER_HEADERS``, about 560 bytes), ``ab -k`` (HTTP/1.0 with ``Connection:
  Keep-Alive``) and ``h2load --h1`` (``benchmarks/clients.py``; skipped where the tool is
  missing);
* ``many``: 5,000 concurrent keep-alive connections (req/s, p99 and the proxies' RSS);
* ``workers``: lb ``workers = 2`` against HAProxy ``nbthread 2`` and nginx
  ``worker_processes 2`` (compare with the 1-worker rows of ``core``);
* ``strategies``: every built-in strategy with 2, 10 and 100 backends;
* ``overload``: 5,000 connections to backends with a concurrency limit and a queue (lb
  ``max_conn`` + ``queue_timeout``, HAProxy ``maxconn`` per server + ``timeout queue``, nginx
  ``max_conns``, which has no queue in open-source nginx); ``benchmarks/overload.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Mode = Literal["tcp", "http"]
#: What drives the load: wrk (``wrk.py``), or ab / h2load (``clients.py``).
Client = Literal["wrk", "ab", "h2load"]

#: Strategy name in lb -> what HAProxy and nginx call the same policy.
STRATEGIES: dict[str, tuple[str, str]] = {
    "round_robin": ("roundrobin", "(default round-robin)"),
    "weighted": ("roundrobin + weights", "round-robin + weights"),
    "least_conn": ("leastconn", "least_conn"),
    "consistent_hash": ("hdr(X-User) + hash-type consistent", "hash $http_x_user consistent"),
    "random_two": ("random(2)", "random two least_conn"),
}
#: The header the consistent_hash scenarios hash on; wrk sends 1,000 distinct values.
HASH_HEADER = "X-User"
BACKEND_COUNTS = (2, 10, 100)


@dataclass(frozen=True)
class Scenario:
    name: str
    group: str
    mode: Mode
    title: str
    path: str = "/"
    connections: int = 64
    threads: int = 1
    headers: tuple[str, ...] = ()
    strategy: str = "round_robin"
    backends: int = 1
    workers: int = 1
    #: lb/HAProxy ratio the issue asks for (1 worker against nbthread 1), if any.
    target: float | None = None
    #: Short runs for the sweeps, so that the whole suite fits its time budget.
    sweep: bool = False
    #: Each backend's concurrency limit (0: none) and how long a request may wait for a slot.
    max_conn: int = 0
    queue_timeout_s: float = 0.0
    client: Client = "wrk"
    #: wrk sends a browser's head (``wrk.BROWSER_HEADERS``) instead of its minimal one.
    browser: bool = False

    @property
    def hash_header(self) -> str | None:
        return HASH_HEADER if self.strategy == "consistent_hash" else None

    @property
    def weights(self) -> list[int]:
        """Backend weights: 1, 2, 3, 1, 2, 3, ... for ``weighted``, else all 1."""
        if self.strategy == "weighted":
            return [1 + i % 3 for i in range(self.backends)]
        return [1] * self.backends


def _all() -> list[Scenario]:
    from benchmarks import overload  # (it builds on Scenario)

    core = [
        Scenario("l4", "core", "tcp", "L4 relay, HTTP keep-alive through it", target=0.9),
        Scenario("l7", "core", "http", "L7 keep-alive, small responses", target=0.75),
        Scenario(
            "l7-close",
            "core",
            "http",
            "L7, Connection: close (a new client connection per request)",
            headers=("Connection: close",),
            target=0.75,
        ),
        Scenario("l7-16k", "core", "http", "L7 keep-alive, 16 KiB responses", path="/16k"),
        Scenario("l7-256k", "core", "http", "L7 keep-alive, 256 KiB responses", path="/256k"),
    ]
    clients = [
        Scenario(
            "l7-browser",
            "clients",
            "http",
            "L7 keep-alive, a browser's head (wrk, 12 fields, about 560 bytes)",
            browser=True,
            target=0.85,
        ),
        Scenario(
            "l7-browser-close",
            "clients",
            "http",
            "L7, a browser's head with Connection: close",
            browser=True,
            headers=("Connection: close",),
        ),
        Scenario(
            "l7-ab-k",
            "clients",
            "http",
            "L7, ab -k: HTTP/1.0 with Connection: Keep-Alive",
            client="ab",
            target=0.85,
        ),
        Scenario(
            "l7-h2load-h1",
            "clients",
            "http",
            "L7 keep-alive, h2load --h1",
            client="h2load",
        ),
    ]
    many = [
        Scenario(
            "l7-5k-conns",
            "many",
            "http",
            "L7 keep-alive, 5,000 concurrent connections",
            connections=5000,
        ),
    ]
    workers = [
        Scenario("l4-w2", "workers", "tcp", "L4, 2 workers / nbthread 2", workers=2),
        Scenario("l7-w2", "workers", "http", "L7 keep-alive, 2 workers / nbthread 2", workers=2),
    ]
    strategies = [
        Scenario(
            f"{strategy}-{n}",
            "strategies",
            "http",
            f"L7 keep-alive, {strategy}, {n} backends",
            strategy=strategy,
            backends=n,
            sweep=True,
        )
        for strategy in STRATEGIES
        for n in BACKEND_COUNTS
    ]
    return core + clients + many + workers + strategies + overload.scenarios()


SCENARIOS: dict[str, Scenario] = {s.name: s for s in _all()}
GROUPS: tuple[str, ...] = ("core", "clients", "many", "workers", "strategies", "overload")


def select(groups: list[str], names: list[str] | None, quick: bool) -> list[Scenario]:
    """The scenarios to run, in suite order.

    ``--quick`` keeps every group but sweeps the strategies at 10 backends only, plus
    least_conn and consistent_hash (the strategies whose cost depends on the pool size) at 100.
    """
    chosen = [s for s in SCENARIOS.values() if s.group in groups]
    if names:
        unknown = sorted(set(names) - set(SCENARIOS))
        if unknown:
            raise SystemExit(
                f"benchmarks: unknown scenario(s) {', '.join(unknown)}; "
                f"known: {', '.join(SCENARIOS)}"
            )
        chosen = [s for s in SCENARIOS.values() if s.name in names]
    if quick:
        chosen = [
            s
            for s in chosen
            if s.group != "strategies"
            or s.backends == 10
            or (s.backends == 100 and s.strategy in ("least_conn", "consistent_hash"))
        ]
    return chosen
