"""How long one control-plane change blocks a worker's loop, at 10,000 backends.

    python -m benchmarks.stall                 # every strategy, 10,000 backends, a few minutes
    python -m benchmarks.stall --quick         # fewer changes
    python -m benchmarks.stall --backends 1000 --strategy least_conn

A worker applies a change (a backend added, removed, drained, a slow-start weight step) with
``PoolRuntime.apply_backend``/``remove``: synchronous code on the worker's loop, so its run time
is the stall every connection of that worker sees. For each strategy this runs a uvloop loop
carrying traffic (a callback chain that picks, acquires and releases a backend, as requests
do) with the worker's scheduler for long strategy work installed (``lb.balancing.background``),
and on it:

* applies three snapshots to a new pool of N backends (``PoolRuntime.apply_snapshot``,
  in slices through that scheduler when big), while traffic goes to a small pool: its first
  (a worker's start, or a reload that adds the pool), the same one again as fresh objects (a
  reload that changes nothing in the pool: the supervisor sends every pool whole), and one
  that changes six backends. Reported for each: the CPU time of the call itself, the wall time
  until the pool had it whole (and ``consistent_hash``'s sliced ring work was done), the
  slices and the worst one (CPU), the time in the strategy's ``update()``, and the worst loop
  lag meanwhile. ``gc.freeze()`` is called before the first, and after each once the pool has
  it whole (the strategy's own slices may go on), as a worker does.
  Then traffic moves to that pool. Also reported: the CPU time of decoding the snapshot
  frame (``wire.decode_to_worker``), which a worker does on its loop in one go (the entries
  themselves are made as the pool reads them, in its slices);
* applies a series of changes between traffic callbacks, and reports:

* per kind of change, the median, the 99th percentile and the worst time of the change
  itself, and of that the strategy's ``update()`` (the rest is ``PoolRuntime``'s own: counts,
  sticky tokens, the list it hands over, ``_wake``);
* the worst CPU time of a change (``time.thread_time``): on a shared machine a change's wall
  time also holds the time the kernel gave other processes, which this leaves out;
* the worst slice of work a change left to the scheduler (``consistent_hash`` moves the ring
  points of a big change in slices), CPU;
* the worst loop lag seen by a probe that sleeps 1 ms at a time (how late it woke), so what
  the loop as a whole suffered, traffic included.

The goal (issue 17) is at most 10 ms per change at 10,000 backends.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import math
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import uvloop

from lb import wire
from lb.balancing import background
from lb.config import parse_config
from lb.model import AdminState
from lb.proxy.pool import PoolRuntime
from lb.wire import BackendEntry

#: Name -> (strategy, extra pool settings).
CASES: dict[str, tuple[str, dict[str, object]]] = {
    "round_robin": ("round_robin", {}),
    "weighted": ("weighted", {}),
    "least_conn": ("least_conn", {}),
    "random_two": ("random_two", {}),
    "peak_ewma": ("peak_ewma", {}),
    "consistent_hash": ("consistent_hash", {}),
    "consistent_hash (bounded_load 1.25)": ("consistent_hash", {"bounded_load": 1.25}),
}

KINDS = ("add", "remove", "drain", "ready", "weight")


def entry(i: int, **changes: object) -> BackendEntry:
    fields: dict[str, object] = {
        "id": f"b{i:05d}",
        "address": f"127.{i // 62500}.{i // 250 % 250}.{i % 250 + 1}:8080",
        "weight": 1 + i % 5,
        "effective_weight": float(1 + i % 5),
    }
    fields.update(changes)
    return BackendEntry(**fields)  # type: ignore[arg-type]


def make_pool(strategy: str, extra: dict[str, object]) -> PoolRuntime:
    cfg = parse_config(
        {
            "listeners": [{"name": "h", "bind": "127.0.0.1:1", "mode": "http", "pool": "p"}],
            "pools": {
                "p": {
                    "strategy": strategy,
                    "backends": [{"address": "127.0.0.1:2"}],
                    **extra,
                }
            },
        }
    )
    return PoolRuntime("p", cfg.pools["p"])


@dataclass
class Snapshot:
    """One snapshot applied under load: the CPU time of the call itself (its first slice, or
    all of it without slices), the wall time until the pool had it whole and the strategy's
    own sliced work was done, how many slices that took and the worst one (CPU), the time in
    the strategy's ``update()``, and the worst loop lag a 1 ms probe saw meanwhile."""

    call_cpu_s: float = 0.0
    whole_s: float = 0.0
    slices: int = 0
    slice_worst_s: float = 0.0
    update_s: float = 0.0
    lag_s: float = 0.0


#: The snapshots measured: the pool's first (a worker's start, or a reload that adds the
#: pool), the same one again (a reload that changes nothing in the pool), and one that
#: changes a few backends (two drained, two weights, one added, one removed).
SNAPSHOTS = ("first", "reload, unchanged", "reload, 6 changed")


@dataclass
class Result:
    name: str
    backends: int
    snapshots: dict[str, Snapshot] = field(default_factory=dict)
    #: kind -> (total seconds, seconds in strategy.update, CPU seconds) per change.
    changes: dict[str, list[tuple[float, float, float]]] = field(default_factory=dict)
    worst_lag_s: float = 0.0
    #: The worst slice (CPU) the scheduler ran during the changes.
    change_slice_worst_s: float = 0.0
    traffic: int = 0


class _TimedStrategy:
    """Wraps the pool's strategy to time its ``update`` apart from the rest of the change."""

    def __init__(self, inner: object) -> None:
        self.inner = inner
        self.spent = 0.0

    def update(self, backends: object) -> None:
        t0 = time.perf_counter()
        self.inner.update(backends)  # type: ignore[attr-defined]
        self.spent += time.perf_counter() - t0

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)


def as_received(entries: list[BackendEntry]) -> Sequence[BackendEntry]:
    """A pool's entries as a worker has them: through the snapshot frame, encoded and decoded
    (a ``wire.EntryColumns``, which makes each entry as it is read), rather than 10,000
    entry objects made beforehand, which a worker never holds."""
    _, msg = wire.decode_to_worker(wire.encode(wire.PoolsSnapshot({"p": tuple(entries)}), 1))
    assert isinstance(msg, wire.PoolsSnapshot)
    return msg.pools["p"]


def _settling(strategy: object) -> bool:
    """The strategy still has work in slices (``settling``; ``building`` for one that has only
    that: an older ``consistent_hash``, to compare with)."""
    return bool(getattr(strategy, "settling", getattr(strategy, "building", False)))


def change_plan(n: int, rounds: int) -> list[tuple[str, Callable[[PoolRuntime], None]]]:
    plan: list[tuple[str, Callable[[PoolRuntime], None]]] = []
    for r in range(rounds):
        new = n + r
        victim = (r * 7919) % n
        drained = (r * 104729 + 13) % n
        ramped = (r * 1299709 + 29) % n
        plan += [
            ("add", lambda p, new=new: p.apply_backend(entry(new))),
            ("drain", lambda p, d=drained: p.apply_backend(entry(d, admin=AdminState.DRAIN))),
            ("weight", lambda p, w=ramped: p.apply_backend(entry(w, effective_weight=0.37))),
            ("ready", lambda p, d=drained: p.apply_backend(entry(d))),
            ("weight", lambda p, w=ramped: p.apply_backend(entry(w))),
            ("remove", lambda p, v=victim: p.remove(entry(v).id)),
            ("add", lambda p, v=victim: p.apply_backend(entry(v))),
            ("remove", lambda p, new=new: p.remove(entry(new).id)),
        ]
    return plan


async def _run(name: str, n: int, rounds: int) -> Result:
    strategy, extra = CASES[name]
    result = Result(name, n)
    loop = asyncio.get_running_loop()
    slices: list[float] = []
    previous = background.set_scheduler(background.run_on(loop, on_slice=slices.append))
    try:
        return await _measure(result, strategy, extra, n, rounds, slices)
    finally:
        background.set_scheduler(previous)


async def _measure(
    result: Result,
    strategy: str,
    extra: dict[str, object],
    n: int,
    rounds: int,
    slices: list[float],
) -> Result:
    loop = asyncio.get_running_loop()
    warm = make_pool("round_robin", {})
    warm.apply_snapshot([entry(i) for i in range(10)])
    pool = warm
    stop = False
    in_flight: list[tuple[PoolRuntime, object]] = []

    def traffic() -> None:
        # A request arrives, and the oldest of 64 in flight ends.
        b = pool.pick(None if not pool.needs_key else b"k%d" % result.traffic)
        if b is not None:
            pool.acquire(b)
            in_flight.append((pool, b))
        if len(in_flight) > 64:
            owner, done = in_flight.pop(0)
            owner.release(done)  # type: ignore[arg-type]
        result.traffic += 1
        if not stop:
            loop.call_soon(traffic)

    async def probe() -> None:
        while not stop:
            t = loop.time()
            await asyncio.sleep(0.001)
            result.worst_lag_s = max(result.worst_lag_s, loop.time() - t - 0.001)

    loop.call_soon(traffic)
    probing = asyncio.ensure_future(probe())
    await asyncio.sleep(0.05)
    # The pool is created under load: its first snapshot, then the strategy's work in slices.
    created = make_pool(strategy, extra)
    timed = _TimedStrategy(created.strategy)
    created.strategy = timed  # type: ignore[assignment]

    async def apply(listed: list[BackendEntry]) -> Snapshot:
        entries = as_received(listed)
        await asyncio.sleep(0.005)
        slices.clear()
        timed.spent = 0.0
        result.worst_lag_s = 0.0
        c0 = time.thread_time()
        t0 = time.perf_counter()
        created.apply_snapshot(entries)
        phase = Snapshot(call_cpu_s=time.thread_time() - c0)
        for _ in range(600_000):  # bounded: 10 minutes of 1 ms sleeps
            if not created.applying:
                break
            await asyncio.sleep(0.001)
        gc.freeze()  # as a worker does once its pools have the snapshot (lb/worker.py)
        for _ in range(600_000):  # and the strategy's own slices (consistent_hash)
            if not _settling(timed.inner):
                break
            await asyncio.sleep(0.001)
        phase.whole_s = time.perf_counter() - t0
        phase.slices = len(slices)
        phase.slice_worst_s = max(slices, default=0.0)
        phase.update_s = timed.spent
        await asyncio.sleep(0.005)
        phase.lag_s = result.worst_lag_s
        return phase

    gc.freeze()  # as a worker does before its first snapshot, and after each (lb/worker.py)
    result.snapshots["first"] = await apply([entry(i) for i in range(n)])
    pool = created
    # A reload: the supervisor sends the whole pool again, decoded afresh (new objects).
    result.snapshots["reload, unchanged"] = await apply([entry(i) for i in range(n)])
    changed = [entry(i) for i in range(n + 1) if i != 3]
    changed[10] = entry(10, admin=AdminState.DRAIN)
    changed[20] = entry(21, admin=AdminState.MAINT)
    changed[30] = entry(32, effective_weight=0.5)
    changed[40] = entry(42, weight=7, effective_weight=7.0)
    result.snapshots["reload, 6 changed"] = await apply(changed)
    await apply([entry(i) for i in range(n)])  # back to the plan's starting point
    result.worst_lag_s = 0.0  # from here on, only what the changes cause
    slices.clear()
    for kind, apply in change_plan(n, rounds):
        timed.spent = 0.0
        c0 = time.thread_time()
        t0 = time.perf_counter()
        apply(pool)
        total = time.perf_counter() - t0
        cpu = time.thread_time() - c0
        result.changes.setdefault(kind, []).append((total, timed.spent, cpu))
        await asyncio.sleep(0.005)  # let traffic and the probe run between changes
    for _ in range(600_000):  # the last change's slices (bounded: 10 minutes)
        if not _settling(timed.inner):
            break
        await asyncio.sleep(0.001)
    result.change_slice_worst_s = max(slices, default=0.0)
    stop = True
    await probing
    for owner, b in in_flight:
        owner.release(b)  # type: ignore[arg-type]
    return result


def run(
    names: list[str], n: int, rounds: int, progress: Callable[[str], None] = print
) -> list[Result]:
    results = []
    for name in names:
        progress(f"[stall] {name}: {n:,} backends")
        results.append(uvloop.run(_run(name, n, rounds)))
    return results


def _ms(s: float) -> str:
    return f"{s * 1e3:,.1f}"


def p99(values: list[float]) -> float:
    """The 99th percentile (nearest rank): the worst value below 100 samples."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, -(-99 * len(ordered) // 100) - 1)]


def decode_cpu(n: int) -> float:
    """CPU seconds to decode a snapshot frame of ``n`` backends (a worker does it on its loop
    before applying it), the best of 3."""
    frame = wire.encode(wire.PoolsSnapshot({"p": tuple(entry(i) for i in range(n))}), 1)
    best = math.inf
    for _ in range(3):
        c0 = time.thread_time()
        wire.decode_to_worker(frame)
        best = min(best, time.thread_time() - c0)
    return best


def render(results: list[Result], decode_s: float | None = None) -> str:
    lines = [
        "Snapshots applied under load (ms): the CPU time of the call (its first slice, or all",
        "of it), the wall time until the pool had it whole (and a sliced strategy build was",
        "done), the slices that took and the worst one (CPU), the time in the strategy's",
        "update(), the worst loop lag a 1 ms probe saw.",
        "",
        "| strategy | backends | snapshot | call CPU | until whole | slices | worst slice"
        " | update() | worst lag |",
        "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in results:
        for phase_name in SNAPSHOTS:
            ph = r.snapshots[phase_name]
            lines.append(
                f"| {r.name} | {r.backends:,} | {phase_name} | {_ms(ph.call_cpu_s)}"
                f" | {_ms(ph.whole_s)} | {ph.slices} | {_ms(ph.slice_worst_s)}"
                f" | {_ms(ph.update_s)} | {_ms(ph.lag_s)} |"
            )
    if decode_s is not None and results:
        lines += [
            "",
            f"Decoding the snapshot frame of {results[0].backends:,} backends"
            f" (wire.decode_to_worker, CPU, best of 3): {_ms(decode_s)} ms, in one go"
            " (the entries are made in the snapshot's slices, above).",
        ]
    lines += [
        "",
        "Worker loop time per control-plane change (ms): median / p99 / worst of the change; the",
        "worst of the strategy's update() in it; the worst CPU time of a change; the worst slice",
        "(CPU) of the work changes left to the scheduler; the worst loop lag a 1 ms probe saw.",
        "",
        "| strategy | backends | "
        + " | ".join(KINDS)
        + " | update() worst | CPU worst | worst slice | worst lag |",
        "| --- | ---: | " + " | ".join("---:" for _ in KINDS) + " | ---: | ---: | ---: | ---: |",
    ]
    for r in results:
        cells = []
        for kind in KINDS:
            totals = [t for t, _, _ in r.changes.get(kind, [])]
            cells.append(
                f"{_ms(statistics.median(totals))} / {_ms(p99(totals))} / {_ms(max(totals))}"
                if totals
                else ""
            )
        update_worst = max(u for ch in r.changes.values() for _, u, _ in ch)
        cpu_worst = max(c for ch in r.changes.values() for _, _, c in ch)
        lines.append(
            f"| {r.name} | {r.backends:,} | "
            + " | ".join(cells)
            + f" | {_ms(update_worst)} | {_ms(cpu_worst)} | {_ms(r.change_slice_worst_s)}"
            f" | {_ms(r.worst_lag_s)} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="benchmarks.stall", description=__doc__.split("\n\n")[0])
    ap.add_argument("--backends", type=int, default=10_000)
    ap.add_argument("--quick", action="store_true", help="3 rounds of changes instead of 10")
    ap.add_argument("--rounds", type=int, help="rounds of changes (8 changes a round)")
    ap.add_argument("--strategy", action="append", choices=list(CASES), help="(repeatable)")
    args = ap.parse_args(argv)
    names = args.strategy or list(CASES)
    results = run(names, args.backends, args.rounds or (3 if args.quick else 10))
    print()
    print(render(results, decode_cpu(args.backends)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
