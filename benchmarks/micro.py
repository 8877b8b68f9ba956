"""Micro-benchmarks of the pure hot-path code: ``pick()``, ``update()``, and the HTTP head work.

    python -m benchmarks.micro              # about a minute
    python -m benchmarks.micro --quick      # fewer repeats, a few seconds

Plain ``timeit`` with repeats: each figure is the *minimum* over the repeats of the mean time
per call, the usual estimate of the cost without the noise of a shared machine. Every timed
loop is ``for key in keys: pick(key)`` over 1,000 keys (``None`` for the strategies that take
no key), so the ~15 ns of loop overhead is in every figure, at every size alike.

What is measured:

* ``pick()`` for each built-in strategy at 10, 100, 1,000 and 10,000 eligible backends. The
  goal is a flat curve: pick at 10,000 backends costs at most 2x pick at 10 (issue 17). The
  pools are "busy": ``active`` is 1-8 per backend (set before the first update, which is where
  the load-tracking strategies read it).
* ``update()`` at the same sizes, with the lists a worker's pool hands its strategy
  (``lb.balancing.roster.Members``: a snapshot says nothing of what changed, a single change
  names its backend): on a fresh strategy ("cold": the whole first build; consistent_hash
  hashes every virtual node and builds its ring), the part of it that blocks the loop when
  the worker's scheduler for long work is installed (``lb.balancing.background``: the rest
  runs in slices between I/O), the same snapshot again ("warm"), and the pool's common
  changes, one backend added and one removed (the strategies apply only what changed).
* the per-request hooks of the strategies that have them, per request: ``least_conn``'s
  ``on_acquire`` + ``on_release``, and ``peak_ewma``'s ``on_latency`` (answers 0.2 ms apart,
  the busy case, and 2 s apart, where the weight takes an ``exp()``). ``peak_ewma``'s pick rows
  are measured after one answer from every backend (1-3 ms; "half slow": every other backend
  answered in 20 ms, so a sixth of the picks draw two slow candidates and compare four).
* the request head path: ``RequestParser.feed`` + ``build_upstream_head`` for a browser-like
  head and for wrk's minimal one, and the response head path (``ResponseParser`` +
  ``rewrite_response_head``).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
import timeit
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from lb.balancing import Strategy, StrategyOptions, background, create_strategy
from lb.balancing.roster import Members
from lb.http import (
    RequestHead,
    RequestParser,
    ResponseHead,
    ResponseParser,
    build_upstream_head,
    rewrite_response_head,
)
from lb.model import Backend

SIZES = (10, 100, 1000, 10000)
FLAT_LIMIT = 2.0

#: Benchmark name -> (lb strategy, options, keyed, weighted).
PICK_CASES: dict[str, tuple[str, StrategyOptions, bool, bool]] = {
    "round_robin": ("round_robin", StrategyOptions(), False, False),
    "weighted": ("weighted", StrategyOptions(), False, True),
    "least_conn": ("least_conn", StrategyOptions(), False, False),
    "least_conn (weights differ)": ("least_conn", StrategyOptions(), False, True),
    "random_two": ("random_two", StrategyOptions(), False, False),
    "peak_ewma": ("peak_ewma", StrategyOptions(), False, False),
    "peak_ewma (half slow)": ("peak_ewma", StrategyOptions(), False, False),
    "peak_ewma (choices 3)": ("peak_ewma", StrategyOptions(ewma_choices=3), False, False),
    "consistent_hash": ("consistent_hash", StrategyOptions(), True, False),
    "consistent_hash (bounded_load 1.25)": (
        "consistent_hash",
        StrategyOptions(bounded_load=1.25),
        True,
        False,
    ),
}

#: Why a curve is not flat, for the report (keyed by benchmark name).
EXPLAIN = {
    "weighted": "O(k + log n): nginx's sequence from one heap per weight class (k classes)",
    "least_conn": "O(1): buckets by load, kept by the pool's acquire/release hooks",
    "least_conn (weights differ)": "as least_conn",
    "consistent_hash": "O(log n) bisect on a chunked ring of 160 points per backend; at "
    "10,000 backends the 12.8 MB ring no longer fits in cache",
    "consistent_hash (bounded_load 1.25)": "as consistent_hash; the total load is kept by the "
    "pool's hooks and the walk reads compact per-slot counts",
    "peak_ewma (half slow)": "O(1): two candidates, four when both read far slower than usual",
}

BROWSER_HEAD = (
    b"GET /products/42/reviews?page=2&sort=recent HTTP/1.1\r\n"
    b"Host: shop.example.com\r\n"
    b"User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0\r\n"
    b"Accept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8\r\n"
    b"Accept-Language: en-GB,en;q=0.5\r\n"
    b"Accept-Encoding: gzip, deflate, br, zstd\r\n"
    b"Referer: https://shop.example.com/products/42\r\n"
    b"Connection: keep-alive\r\n"
    b"Cookie: session=6f1c2a9e0b7d4c3e8a5f; lb=3a9c0f12be47; theme=dark\r\n"
    b"Upgrade-Insecure-Requests: 1\r\n"
    b"Sec-Fetch-Dest: document\r\n"
    b"Sec-Fetch-Mode: navigate\r\n"
    b"Sec-Fetch-Site: same-origin\r\n"
    b"Priority: u=0, i\r\n"
    b"\r\n"
)
WRK_HEAD = b"GET / HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n"
RESPONSE = (
    b"HTTP/1.1 200 OK\r\n"
    b"Server: nginx/1.22.1\r\n"
    b"Date: Tue, 25 Nov 2026 18:00:00 GMT\r\n"
    b"Content-Type: text/plain\r\n"
    b"Content-Length: 33\r\n"
    b"Connection: keep-alive\r\n"
    b"\r\n"
    b"hello from the benchmark backend\n"
)


@dataclass
class Curve:
    name: str
    #: Backends -> nanoseconds per call.
    ns: dict[int, float] = field(default_factory=dict)
    note: str = ""

    @property
    def growth(self) -> float:
        """Cost at the largest size over the cost at the smallest."""
        sizes = sorted(self.ns)
        return self.ns[sizes[-1]] / self.ns[sizes[0]] if len(sizes) > 1 else 1.0

    @property
    def flat(self) -> bool:
        return self.growth <= FLAT_LIMIT


@dataclass
class MicroResults:
    pick: list[Curve] = field(default_factory=list)
    update_cold: list[Curve] = field(default_factory=list)
    update_warm: list[Curve] = field(default_factory=list)
    update_add: list[Curve] = field(default_factory=list)
    update_remove: list[Curve] = field(default_factory=list)
    #: Of update_cold, what blocks the loop with the worker's scheduler installed.
    update_first_blocking: list[Curve] = field(default_factory=list)
    #: Benchmark name -> nanoseconds per request (or response) head.
    http: dict[str, float] = field(default_factory=dict)
    #: Per-request strategy hooks: benchmark name -> nanoseconds per request.
    hooks: dict[str, float] = field(default_factory=dict)


def backends(n: int, *, weighted: bool, rng: random.Random) -> list[Backend]:
    pool = []
    for i in range(n):
        b = Backend(
            f"127.0.{i // 250}.{i % 250 + 1}:8080", 1 + i % 5 if weighted else 1, id=f"b{i:05d}"
        )
        b.active = rng.randint(1, 8)
        pool.append(b)
    return pool


def best_ns(func: Callable[[], object], calls_per_run: int, repeat: int, budget_s: float) -> float:
    """Minimum over ``repeat`` runs of the mean ns per call; each run takes about ``budget_s``."""
    timer = timeit.Timer(func)
    once = timer.timeit(1)
    number = max(1, int(budget_s / max(once, 1e-9)))
    runs = timer.repeat(repeat=repeat, number=number)
    return min(runs) / number / calls_per_run * 1e9


def _pick_loop(
    pick: Callable[[bytes | None], Backend | None], keys: list[bytes | None]
) -> Callable[[], None]:
    def loop() -> None:
        for key in keys:
            pick(key)

    return loop


def _answered(s: Strategy, pool: list[Backend], half_slow: bool, rng: random.Random) -> None:
    """One answer from every backend, at time 100 s, so that a latency-aware strategy has an
    estimate for each (1-3 ms; 20 ms for every other one when ``half_slow``)."""
    on_latency = getattr(s, "on_latency", None)
    if on_latency is None:
        return
    for i, b in enumerate(pool):
        rtt = 0.020 if half_slow and i % 2 else rng.uniform(0.001, 0.003)
        on_latency(b, rtt, 100.0)


def bench_pick(repeat: int, budget_s: float, sizes: tuple[int, ...]) -> list[Curve]:
    rng = random.Random(8)
    keys_bytes = [b"user-%d" % rng.randrange(10**9) for _ in range(1000)]
    curves = []
    for name, (strategy, options, keyed, weighted) in PICK_CASES.items():
        curve = Curve(name, note=EXPLAIN.get(name, ""))
        keys: list[bytes | None] = list(keys_bytes) if keyed else [None] * 1000
        for n in sizes:
            s = create_strategy(strategy, options)
            pool = backends(n, weighted=weighted, rng=rng)
            s.update(Members(pool, object(), 1, None))
            _answered(s, pool, "half slow" in name, rng)
            curve.ns[n] = best_ns(_pick_loop(s.pick, keys), len(keys), repeat, budget_s)
        curves.append(curve)
    return curves


def bench_hooks(repeat: int, budget_s: float, n: int = 10) -> dict[str, float]:
    """The per-request hooks, per request, on a pool of ``n`` busy backends."""
    rng = random.Random(10)
    out: dict[str, float] = {}
    pool = backends(n, weighted=False, rng=rng)
    lc = create_strategy("least_conn", StrategyOptions())
    lc.update(Members(pool, object(), 1, None))
    acquire, release = lc.on_acquire, lc.on_release  # type: ignore[attr-defined]
    order = [pool[rng.randrange(n)] for _ in range(1000)]

    def least_conn_hooks() -> None:
        for b in order:
            b.active += 1
            acquire(b)
            b.active -= 1
            release(b)

    out["least_conn on_acquire + on_release (and the two active updates)"] = best_ns(
        least_conn_hooks, len(order), repeat, budget_s
    )
    active_only = best_ns(_active_updates(order), len(order), repeat, budget_s)
    out["(of that, the two active updates alone)"] = active_only
    for label, gap in (("answers 0.2 ms apart", 0.0002), ("answers 2 s apart: exp()", 2.0)):
        s = create_strategy("peak_ewma", StrategyOptions())
        s.update(Members(pool, object(), 1, None))
        _answered(s, pool, False, rng)
        on_latency = s.on_latency  # type: ignore[attr-defined]
        rtts = [rng.uniform(0.001, 0.003) for _ in order]
        clock = [100.0]

        def peak_ewma_hook(
            on_latency: Callable[[Backend, float, float], None] = on_latency,
            rtts: list[float] = rtts,
            clock: list[float] = clock,
            gap: float = gap,
        ) -> None:
            t = clock[0]
            for b, rtt in zip(order, rtts, strict=True):
                t += gap
                on_latency(b, rtt, t)
            clock[0] = t

        out[f"peak_ewma on_latency, {label}"] = best_ns(
            peak_ewma_hook, len(order), repeat, budget_s
        )
    return out


def _active_updates(order: list[Backend]) -> Callable[[], None]:
    def loop() -> None:
        for b in order:
            b.active += 1
            b.active -= 1

    return loop


def _update_s(strategy: Strategy, pool: list[Backend]) -> float:
    """CPU time of one ``update`` (``thread_time``: a shared machine's other processes are
    not counted)."""
    started = time.thread_time()
    strategy.update(pool)
    return time.thread_time() - started


class _Lists:
    """The lists one pool hands its strategy, as ``PoolRuntime`` makes them."""

    def __init__(self) -> None:
        self.lineage = object()
        self.generation = 0

    def snapshot(self, pool: list[Backend]) -> Members:
        self.generation += 1
        return Members(pool, self.lineage, self.generation, None)

    def change(self, pool: list[Backend], b: Backend, gone: bool = False) -> Members:
        self.generation += 1
        return Members(pool, self.lineage, self.generation, {b.id: None if gone else b})


def _first_blocking_s(strategy: Strategy, pool: list[Backend]) -> float:
    """CPU time of a first ``update`` with a scheduler installed: what blocks the loop (the
    work handed to the scheduler is dropped, not timed)."""
    previous = background.set_scheduler(lambda step: None)
    try:
        return _update_s(strategy, Members(pool, object(), 1, None))
    finally:
        background.set_scheduler(previous)


def bench_update(
    repeat: int, sizes: tuple[int, ...]
) -> tuple[list[Curve], list[Curve], list[Curve], list[Curve], list[Curve]]:
    rng = random.Random(9)
    cold_curves, blocking_curves, warm_curves, add_curves, remove_curves = [], [], [], [], []
    for name, (strategy, options, _keyed, weighted) in PICK_CASES.items():
        if " (" in name:
            continue  # same update() as the plain variant
        cold = Curve(name)
        blocking = Curve(name)
        warm = Curve(name)
        add = Curve(name)
        remove = Curve(name)
        for n in sizes:
            pool = backends(n, weighted=weighted, rng=rng)
            # A cold consistent_hash at 10,000 backends hashes 1.6M points (a second or
            # more): fewer repeats.
            times = repeat if n < 10000 else 1
            # A fresh strategy each time: for consistent_hash this hashes every virtual node.
            cold.ns[n] = (
                min(
                    _update_s(create_strategy(strategy, options), Members(pool, object(), 1, None))
                    for _ in range(times)
                )
                * 1e9
            )
            blocking.ns[n] = (
                min(
                    _first_blocking_s(create_strategy(strategy, options), pool)
                    for _ in range(max(3, repeat))
                )
                * 1e9
            )
            # The same strategy, the same members again (a snapshot that changes nothing here).
            s = create_strategy(strategy, options)
            lists = _Lists()
            s.update(lists.snapshot(pool))
            warm.ns[n] = min(_update_s(s, lists.snapshot(pool)) for _ in range(times)) * 1e9
            # One backend joins at the end of the list, then leaves again (the pool's
            # apply_backend and remove); each timed on its own, the best of a few rounds.
            extra = backends(n + 1, weighted=weighted, rng=rng)[n]
            adds, removes = [], []
            for _ in range(max(3, repeat)):
                adds.append(_update_s(s, lists.change([*pool, extra], extra)))
                removes.append(_update_s(s, lists.change(pool, extra, gone=True)))
            add.ns[n] = min(adds) * 1e9
            remove.ns[n] = min(removes) * 1e9
        cold_curves.append(cold)
        blocking_curves.append(blocking)
        warm_curves.append(warm)
        add_curves.append(add)
        remove_curves.append(remove)
    return cold_curves, blocking_curves, warm_curves, add_curves, remove_curves


class _Requests:
    __slots__ = ("head",)

    def __init__(self) -> None:
        self.head: RequestHead | None = None

    def on_request_head(self, head: RequestHead) -> None:
        self.head = head

    def on_request_body(self, data: bytes) -> None:
        pass

    def on_request_end(self) -> None:
        pass

    def on_request_error(self, status: int, reason: str) -> None:
        raise AssertionError(f"benchmark head rejected: {status} {reason}")


class _Responses:
    __slots__ = ("head", "reusable")

    def __init__(self) -> None:
        self.head: ResponseHead | None = None
        self.reusable = False

    def on_response_interim(self, head: ResponseHead) -> None:
        pass

    def on_response_head(self, head: ResponseHead) -> None:
        self.head = head

    def on_response_body(self, data: bytes) -> None:
        pass

    def on_response_end(self, reusable: bool) -> None:
        self.reusable = reusable

    def on_response_whole(self, head: ResponseHead, body: bytes, reusable: bool) -> None:
        self.head = head
        self.reusable = reusable

    def on_response_upgrade(self, data: bytes) -> None:
        pass

    def on_response_error(self, reason: str) -> None:
        raise AssertionError(f"benchmark response rejected: {reason}")


def bench_http(repeat: int, budget_s: float) -> dict[str, float]:
    out: dict[str, float] = {}
    for label, raw in (("browser head (550 B)", BROWSER_HEAD), ("wrk head", WRK_HEAD)):
        handler = _Requests()
        parser = RequestParser(handler)

        def parse_only(parser: RequestParser = parser, raw: bytes = raw) -> None:
            parser.feed(raw)
            parser.resume()

        def parse_and_rewrite(
            parser: RequestParser = parser, raw: bytes = raw, handler: _Requests = handler
        ) -> None:
            parser.feed(raw)
            assert handler.head is not None
            build_upstream_head(handler.head, client_ip=b"127.0.0.1", proto=b"http")
            parser.resume()

        parse_and_rewrite()  # the handler has a head from here on
        out[f"request: parse, {label}"] = best_ns(parse_only, 1, repeat, budget_s)
        out[f"request: parse + rewrite, {label}"] = best_ns(parse_and_rewrite, 1, repeat, budget_s)

    responses = _Responses()
    rparser = ResponseParser(responses)

    def response(rparser: ResponseParser = rparser, responses: _Responses = responses) -> None:
        rparser.start()
        rparser.feed(RESPONSE)
        assert responses.head is not None
        rewrite_response_head(responses.head)

    response()
    out["response: parse + rewrite (nginx, 33 B body)"] = best_ns(response, 1, repeat, budget_s)
    return out


def run(
    quick: bool = False,
    progress: Callable[[str], None] = print,
    sizes: tuple[int, ...] = SIZES,
    updates_only: bool = False,
) -> MicroResults:
    repeat = 3 if quick else 5
    budget = 0.02 if quick else 0.1
    results = MicroResults()
    if not updates_only:
        progress(f"[micro] pick() at {', '.join(f'{n:,}' for n in sizes)} backends")
        results.pick = bench_pick(repeat, budget, sizes)
        progress("[micro] per-request hooks (least_conn, peak_ewma)")
        results.hooks = bench_hooks(repeat, budget)
    progress("[micro] update() (consistent_hash at 10,000 backends takes a few seconds)")
    (
        results.update_cold,
        results.update_first_blocking,
        results.update_warm,
        results.update_add,
        results.update_remove,
    ) = bench_update(repeat if not quick else 2, sizes)
    if not updates_only:
        progress("[micro] request and response heads")
        results.http = bench_http(repeat, budget)
    return results


def _fmt_ns(ns: float) -> str:
    if ns >= 1e6:
        return f"{ns / 1e6:,.1f} ms"
    if ns >= 1e3:
        return f"{ns / 1e3:,.1f} µs"
    return f"{ns:,.0f} ns"


def render(results: MicroResults) -> str:
    sizes = sorted({n for c in results.pick + results.update_cold for n in c.ns})
    cols = " | ".join(f"{n:,}" for n in sizes)
    align = " | ".join("---:" for _ in sizes)
    lines = []
    if results.pick:
        lines += [
            f"pick(), per call, by number of backends (goal: {sizes[-1]:,} at most "
            f"{FLAT_LIMIT:g}x {sizes[0]:,}):",
            "",
            f"| strategy | {cols} | {sizes[-1]:,} / {sizes[0]:,} | flat? |",
            f"| --- | {align} | ---: | --- |",
        ]
    for c in results.pick:
        cells = " | ".join(_fmt_ns(c.ns[n]) for n in sizes)
        lines.append(
            f"| {c.name} | {cells} | {c.growth:.1f}x | {'yes' if c.flat else 'no: ' + c.note} |"
        )
    for title, curves in (
        ("update() on a fresh strategy (cold: the whole first build, CPU)", results.update_cold),
        (
            "of that, what blocks the loop with the worker's scheduler installed (CPU)",
            results.update_first_blocking,
        ),
        ("update() with the same snapshot again (warm)", results.update_warm),
        ("update() with one backend added at the end", results.update_add),
        ("update() with that backend removed again", results.update_remove),
    ):
        lines += ["", f"{title}, per call:", "", f"| strategy | {cols} |", f"| --- | {align} |"]
        for c in curves:
            lines.append(f"| {c.name} | " + " | ".join(_fmt_ns(c.ns[n]) for n in sizes) + " |")
    if results.hooks:
        lines += ["", "Per-request strategy hooks (10 backends), per request:", ""]
        lines += ["| what | time |", "| --- | ---: |"]
        lines += [f"| {k} | {_fmt_ns(v)} |" for k, v in results.hooks.items()]
    if results.http:
        lines += ["", "HTTP heads, per message:", "", "| what | time |", "| --- | ---: |"]
        lines += [f"| {k} | {_fmt_ns(v)} |" for k, v in results.http.items()]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="benchmarks.micro", description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer repeats and shorter runs")
    ap.add_argument("--json", help="also write the results to this file")
    ap.add_argument(
        "--updates-only", action="store_true", help="only the update() tables (no pick, no heads)"
    )
    args = ap.parse_args(argv)
    results = run(args.quick, updates_only=args.updates_only)
    print()
    print(render(results))
    if args.json:
        Path(args.json).write_text(json.dumps(asdict(results), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
