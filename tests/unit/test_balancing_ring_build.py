"""``consistent_hash`` whole builds: the fast build gives exactly the ring the obvious
construction gives, and a build in slices (``lb.balancing.background``) answers every pick
with an eligible backend, keeps a key on one backend while it runs, and ends with the ring a
build at once gives, whatever changed meanwhile."""

from __future__ import annotations

import asyncio
import gc
import weakref
from array import array
from collections import Counter
from collections.abc import Iterator
from hashlib import shake_128

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import lb.balancing.consistent_hash as ch
from lb.balancing import ConsistentHash, StrategyOptions, background
from lb.balancing.roster import Members
from lb.model import AdminState, Backend

from .test_balancing_consistent_hash import KEYS, ring_points

# Bits 20 to 61 of a 64-bit word: a point's position (the module docstring).
POSITION = ((1 << 62) - 1) ^ ((1 << 20) - 1)
CROWD = 63 << 56  # the positions crowded_ring keeps: 64 of them, so most points tie


def reference_ring(
    backends: list[Backend], vnodes: int, crowded: bool = False
) -> list[tuple[int, str]]:
    """The ring by its definition, one point at a time: point ``i`` of a backend is the
    little-endian 64-bit word ``i`` of SHAKE-128 of its id, masked to a position; points are
    ordered by position, then by owner id."""
    points = []
    for b in backends:
        if not b.eligible:
            continue
        count = max(1, round(vnodes * b.effective_weight))
        digest = shake_128(b.id.encode()).digest(8 * count)
        for i in range(count):
            position = int.from_bytes(digest[8 * i : 8 * i + 8], "little") & POSITION
            points.append((position & CROWD if crowded else position, b.id))
    return sorted(points)


def owner_of(points: list[tuple[int, str]], key: bytes) -> str:
    position = ch.hash_key(key) & POSITION
    for p, owner in points:
        if p >= position:
            return owner
    return points[0][1]


@pytest.fixture
def tiny_units(monkeypatch: pytest.MonkeyPatch) -> None:
    """Batches and ranges of a few points, chunks of at most 16: many of each."""
    monkeypatch.setattr(ch, "BATCH_POINTS", 7)
    monkeypatch.setattr(ch, "RANGE_POINTS", 5)
    monkeypatch.setattr(ch, "CHUNK", 8)


@pytest.fixture
def crowded_ring(monkeypatch: pytest.MonkeyPatch) -> None:
    real = ch.point_positions

    def crowded(backend_id: str, start: int, stop: int) -> array[int]:
        return array("Q", [p & CROWD for p in real(backend_id, start, stop)])

    monkeypatch.setattr(ch, "point_positions", crowded)


@pytest.fixture
def steps(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[background.Step]]:
    """A scheduler that only collects the steps: the test runs them, a slice at a time. No
    build ends inline (a fast machine could finish these small ones within INLINE_S)."""
    monkeypatch.setattr(ch, "INLINE_S", -1.0)
    collected: list[background.Step] = []
    previous = background.set_scheduler(collected.append)
    yield collected
    background.set_scheduler(previous)


members = st.lists(
    st.tuples(
        st.text("abcxyz019-.:", min_size=1, max_size=8),
        st.sampled_from([0.05, 0.3, 0.5, 1.0, 1.5, 2.0, 3.7]),
        st.booleans(),
    ),
    min_size=0,
    max_size=40,
    unique_by=lambda t: t[0],
)


def make(spec: list[tuple[str, float, bool]]) -> list[Backend]:
    out = []
    for i, (name, weight, ready) in enumerate(spec):
        b = Backend(f"127.0.0.1:{9000 + i}", id=name, effective_weight=weight)
        if not ready:
            b.admin = AdminState.DRAIN
        out.append(b)
    return out


# The fixtures only patch constants, the same for every example.
@settings(
    max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(members, st.integers(min_value=1, max_value=12))
def test_build_gives_the_reference_ring(
    tiny_units: None, spec: list[tuple[str, float, bool]], vnodes: int
) -> None:
    backends = make(spec)
    strategy = ConsistentHash(StrategyOptions(vnodes=vnodes))
    strategy.update(backends)
    want = reference_ring(backends, vnodes)
    assert ring_points(strategy) == want
    for key in KEYS[:50]:
        picked = strategy.pick(key)
        assert (picked.id if picked else None) == (owner_of(want, key) if want else None)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(members, st.integers(min_value=1, max_value=12))
def test_build_orders_equal_positions_by_id(
    tiny_units: None, crowded_ring: None, spec: list[tuple[str, float, bool]], vnodes: int
) -> None:
    backends = make(spec)
    strategy = ConsistentHash(StrategyOptions(vnodes=vnodes))
    strategy.update(backends[::-1])
    assert ring_points(strategy) == reference_ring(backends, vnodes, crowded=True)


def test_build_at_default_sizes_gives_the_reference_ring() -> None:
    # 300 backends of mixed weights: 72,000 points, several batches and ranges of real size.
    backends = [
        Backend(f"127.0.{i // 250}.{i % 250 + 1}:80", id=f"b{i:04d}", effective_weight=1 + i % 3)
        for i in range(300)
    ]
    strategy = ConsistentHash(StrategyOptions())
    strategy.update(backends)
    assert ring_points(strategy) == reference_ring(backends, 160)


# -- builds in slices --------------------------------------------------------------------------


def big_pool(n: int = 300, weight: float = 1.0) -> list[Backend]:
    return [Backend(f"127.0.1.{i % 250 + 1}:{8000 + i}", effective_weight=weight) for i in range(n)]


def run_all(collected: list[background.Step]) -> int:
    """Run the collected steps to the end, one short slice at a time; returns the slices."""
    slices = 0
    while collected:
        step = collected.pop(0)
        while step(0.0):  # a deadline in the past: one unit of work per slice
            slices += 1
        slices += 1
    return slices


def test_a_big_first_build_runs_in_slices(steps: list[background.Step]) -> None:
    backends = big_pool()  # 48,000 points: more than SYNC_POINTS
    strategy = ConsistentHash(StrategyOptions())
    strategy.update(backends)
    assert strategy.building and len(steps) == 1
    # Meanwhile every pick is an eligible backend, a key stays on one backend, and keys
    # spread over the pool.
    during = [strategy.pick(key) for key in KEYS[:3_000]]
    assert all(b is not None and b.eligible for b in during)
    assert during == [strategy.pick(key) for key in KEYS[:3_000]]
    assert len(set(during)) > 250
    assert all(strategy.pick(None) is not None for _ in range(100))
    assert run_all(steps) > 100
    assert not strategy.building
    fresh = ConsistentHash(StrategyOptions())
    background.set_scheduler(None)
    fresh.update(backends)
    assert ring_points(strategy) == ring_points(fresh)


def test_a_small_build_is_done_at_once_even_with_a_scheduler(
    steps: list[background.Step],
) -> None:
    strategy = ConsistentHash(StrategyOptions())
    strategy.update(big_pool(20))  # 3,200 points
    assert not strategy.building and not steps


def test_provisional_picks_spread_by_weight(steps: list[background.Step]) -> None:
    backends = big_pool(250)
    for i, b in enumerate(backends):
        b.effective_weight = 3.0 if i < 50 else 1.0
    strategy = ConsistentHash(StrategyOptions())
    strategy.update(backends)
    assert strategy.building
    counts = Counter(strategy.pick(key) for key in KEYS)
    heavy = sum(counts[b] for b in backends[:50])
    # The 50 heavy backends hold 150 of 350 units of weight.
    assert abs(heavy / len(KEYS) - 150 / 350) < 0.03


edits_during = st.lists(
    st.tuples(
        st.sampled_from(["add", "remove", "drain", "ready", "weight", "copies", "step"]),
        st.integers(min_value=0, max_value=400),
        st.sampled_from([0.5, 1.0, 2.0]),
    ),
    min_size=1,
    max_size=12,
)


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(edits_during, st.sampled_from([None, 1.5]))
def test_changes_during_a_build_end_in_the_ring_a_fresh_build_gives(
    steps: list[background.Step], script: list[tuple[str, int, float]], bound: float | None
) -> None:
    steps.clear()
    backends = big_pool(240)
    made = len(backends)
    options = StrategyOptions(bounded_load=bound)
    strategy = ConsistentHash(options)
    lineage = object()
    generation = 1
    strategy.update(Members(backends, lineage, generation, None))
    assert strategy.building
    step = steps.pop()
    keys = KEYS[:300]
    for op, i, w in script:
        b = backends[i % len(backends)]
        touched: dict[str, Backend | None] = {b.id: b}
        if op == "step":
            for _ in range(i):
                if not step(0.0):
                    break
            continue
        if op == "add":
            b = Backend(f"127.0.2.{made % 250 + 1}:{8000 + made}")
            made += 1
            backends.append(b)
            touched = {b.id: b}
        elif op == "remove":
            backends.remove(b)
            touched = {b.id: None}
        elif op == "drain":
            b.admin = AdminState.DRAIN
        elif op == "ready":
            b.admin = AdminState.READY
        elif op == "weight":
            b.effective_weight = w
        else:  # fresh copies of every backend (a snapshot)
            copies = []
            for old in backends:
                new = Backend(old.address, effective_weight=old.effective_weight)
                new.admin = old.admin
                copies.append(new)
            backends = copies
            touched = None  # type: ignore[assignment]
        generation += 1
        strategy.update(Members(backends, lineage, generation, touched))
        if strategy.building:  # every pick an eligible backend, a key on one backend
            picks = [strategy.pick(key) for key in keys]
            assert all(p is not None and p.eligible and p in backends for p in picks)
            assert picks == [strategy.pick(key) for key in keys]
        assert strategy._load == sum(b.active for b in backends if b.eligible)
    while step(0.0):
        pass
    steps.clear()
    assert not strategy.building
    previous = background.set_scheduler(None)
    try:
        fresh = ConsistentHash(options)
        fresh.update(backends)
    finally:
        background.set_scheduler(previous)
    assert ring_points(strategy) == ring_points(fresh)
    assert [strategy.pick(k) for k in keys] == [fresh.pick(k) for k in keys]
    for b, slot in strategy._held.items():
        assert strategy._slots[slot] is b


def test_run_on_a_loop_builds_between_io_and_drops_a_replaced_strategy(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(ch, "INLINE_S", -1.0)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        slices: list[float] = []
        previous = background.set_scheduler(background.run_on(loop, on_slice=slices.append))
        try:
            kept = ConsistentHash(StrategyOptions())
            kept.update(big_pool())
            dropped = ConsistentHash(StrategyOptions())
            dropped.update(big_pool())
            assert kept.building and dropped.building
            gone = weakref.ref(dropped)
            del dropped  # a reload replaced it: its build is not finished for nobody
            gc.collect()
            assert gone() is None  # the scheduler does not keep it alive
            ticks = 0
            for _ in range(10_000):  # bounded: about 10 slices are needed
                if not kept.building:
                    break
                await asyncio.sleep(0)  # the loop goes round: one slice per iteration
                ticks += 1
            assert not kept.building
            assert ticks >= len(slices) - 1 > 3  # one slice per iteration, no more
        finally:
            background.set_scheduler(previous)

    asyncio.run(main())


def test_a_loop_that_is_not_running_builds_at_once() -> None:
    loop = asyncio.new_event_loop()
    previous = background.set_scheduler(background.run_on(loop))
    try:
        strategy = ConsistentHash(StrategyOptions())
        strategy.update(big_pool())
        assert not strategy.building
    finally:
        background.set_scheduler(previous)
        loop.close()


@pytest.mark.parametrize("bound", [None, 1.25])
def test_every_backend_leaving_during_a_build_leaves_nothing_to_pick(
    steps: list[background.Step], bound: float | None
) -> None:
    backends = big_pool(240)
    strategy = ConsistentHash(StrategyOptions(bounded_load=bound))
    lineage = object()
    strategy.update(Members(backends, lineage, 1, None))
    assert strategy.building
    generation = 1
    for b in list(backends):  # one at a time, as the pool removes them
        b.admin = AdminState.MAINT
        generation += 1
        strategy.update(Members(backends, lineage, generation, {b.id: b}))
        if not strategy.building:
            break
        picked = strategy.pick(b"key")
        assert picked is None or picked.eligible
    assert strategy.pick(b"key") is None and strategy.pick(None) is None
    run_all(steps)
    assert not strategy.building and strategy.pick(b"key") is None
