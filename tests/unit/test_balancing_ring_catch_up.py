"""``consistent_hash`` changes in slices: a change that moves many ring points (a backend of
high weight joining or leaving a big ring) moves them in slices of the scheduler
(``lb.balancing.background``) rather than in one go. Meanwhile every pick is an eligible
backend of the pool, and at the end the ring is bit for bit the one a build at once gives,
whatever changed in between."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import lb.balancing.consistent_hash as ch
from lb.balancing import ConsistentHash, StrategyOptions, background
from lb.balancing.roster import Members
from lb.model import AdminState, Backend

from .test_balancing_consistent_hash import KEYS, ring_points
from .test_balancing_consistent_hash import crowded_ring as crowded_ring  # the fixture


@pytest.fixture
def steps(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[background.Step]]:
    """A scheduler that only collects the steps (the test runs them, a slice at a time), and
    no time for work inline: every change that moves points leaves them to the slices."""
    monkeypatch.setattr(ch, "INLINE_S", -1.0)
    monkeypatch.setattr(ch, "CHUNK", 8)  # chunks split and merge as points move
    monkeypatch.setattr(ch, "MOVE_POINTS", 1)  # a look at the clock after every point
    collected: list[background.Step] = []
    previous = background.set_scheduler(collected.append)
    yield collected
    background.set_scheduler(previous)


def big_pool(n: int, weight: float = 1.0) -> list[Backend]:
    return [Backend(f"127.0.1.{i % 250 + 1}:{8000 + i}", effective_weight=weight) for i in range(n)]


def built_at_once(backends: list[Backend], options: StrategyOptions) -> ConsistentHash:
    previous = background.set_scheduler(None)
    try:
        strategy = ConsistentHash(options)
        strategy.update(backends)
    finally:
        background.set_scheduler(previous)
    return strategy


def run_all(collected: list[background.Step]) -> int:
    """Run the collected steps to the end, one unit of work per slice; returns the slices."""
    slices = 0
    while collected:
        step = collected.pop(0)
        while step(0.0):
            slices += 1
        slices += 1
    return slices


def assert_valid_picks(strategy: ConsistentHash, backends: list[Backend]) -> None:
    """Every pick is an eligible backend of the pool (None only when none is), and keyless
    picks too."""
    eligible = [b for b in backends if b.eligible]
    for key in [*KEYS[:200], None, None, None]:
        picked = strategy.pick(key)
        if not eligible:
            assert picked is None
        else:
            assert picked is not None and picked.eligible and picked in backends


def test_a_heavy_backend_joining_a_big_ring_is_placed_in_slices(
    steps: list[background.Step],
) -> None:
    backends = big_pool(100)
    lineage = object()
    strategy = built_at_once([], StrategyOptions())
    strategy.update(Members(backends, lineage, 1, None))
    run_all(steps)  # the first build, in slices too
    before = {key: strategy.pick(key) for key in KEYS[:2_000]}
    heavy = Backend("127.0.2.1:9000", effective_weight=5.0)  # 800 points
    strategy.update(Members([*backends, heavy], lineage, 2, {heavy.id: heavy}))
    assert strategy.settling and not strategy.building and len(steps) == 1
    # Meanwhile keys stay where they were, or move to the new backend only.
    for _ in range(5):
        steps[0](0.0)
        for key, was in before.items():
            assert strategy.pick(key) in (was, heavy)
    assert run_all(steps) > 10
    assert not strategy.settling
    fresh = built_at_once([*backends, heavy], StrategyOptions())
    assert ring_points(strategy) == ring_points(fresh)
    # And it leaves in slices too: its keys go back where they were.
    strategy.update(Members(backends, lineage, 3, {heavy.id: None}))
    assert strategy.settling
    steps[0](0.0)
    assert all(strategy.pick(key) is not heavy for key in KEYS[:2_000])
    run_all(steps)
    assert {key: strategy.pick(key) for key in KEYS[:2_000]} == before
    assert ring_points(strategy) == ring_points(built_at_once(backends, StrategyOptions()))


def test_replacing_the_only_backend_never_leaves_a_pick_empty(
    steps: list[background.Step],
) -> None:
    a, b = Backend("127.0.0.1:9001"), Backend("127.0.0.1:9002")
    lineage = object()
    strategy = ConsistentHash(StrategyOptions())
    strategy.update(Members([a], lineage, 1, None))
    run_all(steps)
    strategy.update(Members([b], lineage, 2, {a.id: None, b.id: b}))
    assert strategy.settling
    while steps and steps[0](0.0):
        assert strategy.pick(b"key") is b and strategy.pick(None) is b
    steps.clear()
    assert ring_points(strategy) == ring_points(built_at_once([b], StrategyOptions()))


edits = st.lists(
    st.tuples(
        st.sampled_from(["add", "remove", "drain", "ready", "weight", "copies", "step", "acquire"]),
        st.integers(min_value=0, max_value=400),
        st.sampled_from([0.05, 0.5, 1.0, 2.0, 3.0]),
    ),
    min_size=1,
    max_size=14,
)


def check_slices(
    steps: list[background.Step], script: list[tuple[str, int, float]], bound: float | None
) -> None:
    steps.clear()
    options = StrategyOptions(bounded_load=bound, vnodes=12)
    backends = big_pool(40)
    made = len(backends)
    lineage = object()
    strategy = ConsistentHash(options)
    strategy.update(Members(backends, lineage, 1, None))
    run_all(steps)
    generation = 1
    for op, i, w in script:
        b = backends[i % len(backends)] if backends else None
        touched: dict[str, Backend | None] | None
        if op == "step":
            if steps:
                for _ in range(i % 40):
                    if not steps[0](0.0):
                        steps.pop(0)
                        break
            assert_valid_picks(strategy, backends)
            continue
        if op == "acquire":
            if b is not None and b.eligible:
                b.active += 1
                strategy.on_acquire(b)
            continue
        if op == "add" or b is None:
            b = Backend(f"127.0.2.{made % 250 + 1}:{8000 + made}", effective_weight=w)
            made += 1
            backends.append(b)
            touched = {b.id: b}
        elif op == "remove":
            backends.remove(b)
            touched = {b.id: None}
        elif op == "drain":
            b.admin = AdminState.DRAIN
            touched = {b.id: b}
        elif op == "ready":
            b.admin = AdminState.READY
            touched = {b.id: b}
        elif op == "weight":
            b.effective_weight = w
            touched = {b.id: b}
        else:  # fresh copies of every backend (a snapshot)
            copies = []
            for old in backends:
                new = Backend(old.address, effective_weight=old.effective_weight)
                new.admin = old.admin
                new.active = old.active
                copies.append(new)
            backends = copies
            touched = None
        generation += 1
        strategy.update(Members(backends, lineage, generation, touched))
        assert_valid_picks(strategy, backends)
        assert strategy._load == sum(b.active for b in backends if b.eligible)
    run_all(steps)
    assert not strategy.settling
    fresh = built_at_once(backends, options)
    assert ring_points(strategy) == ring_points(fresh)
    keys = KEYS[:300]
    if bound is None:
        assert [strategy.pick(k) for k in keys] == [fresh.pick(k) for k in keys]
    for b, slot in strategy._held.items():
        assert strategy._slots[slot] is b and strategy._active[slot] == b.active
    # Every slot is held by one backend or free, never both, and none twice.
    free = strategy._free
    assert len(set(free)) == len(free)
    assert {s for s in range(len(strategy._slots)) if strategy._slots[s] is None} == set(free)


# The fixtures only patch constants, the same for every example.
@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(edits, st.sampled_from([None, 1.5]))
def test_changes_in_slices_end_in_the_ring_a_build_at_once_gives(
    steps: list[background.Step], script: list[tuple[str, int, float]], bound: float | None
) -> None:
    check_slices(steps, script, bound)


# The fixtures only patch constants, the same for every example.
@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(edits, st.sampled_from([None, 1.5]))
def test_changes_in_slices_order_equal_positions_by_id(
    steps: list[background.Step],
    crowded_ring: None,
    script: list[tuple[str, int, float]],
    bound: float | None,
) -> None:
    check_slices(steps, script, bound)


# -- a big first build: its setup in a slice of its own -------------------------------------


def test_a_big_first_build_sets_up_in_the_next_slice(steps: list[background.Step]) -> None:
    """The update of a first list only takes it (the roster's diff); the setup of the build
    (sort by id, slot tables) is the next slice's work, so that neither is one long block."""
    backends = big_pool(300)  # 48,000 points: a build in slices
    strategy = ConsistentHash(StrategyOptions())
    strategy.update(backends)
    assert strategy.building and strategy.settling and len(steps) == 1
    assert strategy._slots == [] and strategy._build is None  # not set up yet
    assert steps[0](0.0)  # the setup, and nothing else, in this slice
    assert len(strategy._slots) == 300 and strategy._build is not None
    assert not strategy._build.prepared
    run_all(steps)
    assert not strategy.settling
    assert ring_points(strategy) == ring_points(built_at_once(backends, StrategyOptions()))


@pytest.mark.parametrize("bound", [None, 1.25])
def test_a_pick_before_that_slice_sets_up_at_once(
    steps: list[background.Step], bound: float | None
) -> None:
    backends = big_pool(300)
    strategy = ConsistentHash(StrategyOptions(bounded_load=bound))
    strategy.update(backends)
    assert strategy._build is None
    picked = strategy.pick(b"key")
    assert picked is not None and picked in backends and strategy._build is not None
    assert all(strategy.pick(k) in backends for k in [*KEYS[:100], None])
    run_all(steps)
    assert ring_points(strategy) == ring_points(
        built_at_once(backends, StrategyOptions(bounded_load=bound))
    )


def test_changes_before_that_slice_are_in_the_build(steps: list[background.Step]) -> None:
    backends = big_pool(300)
    lineage = object()
    strategy = ConsistentHash(StrategyOptions())
    strategy.update(Members(backends, lineage, 1, None))
    gone, drained = backends.pop(7), backends[8]
    drained.admin = AdminState.DRAIN
    strategy.update(Members(backends, lineage, 2, {gone.id: None, drained.id: drained}))
    added = Backend("127.0.3.1:9000", effective_weight=2.0)
    backends.append(added)
    strategy.update(Members(backends, lineage, 3, {added.id: added}))
    assert strategy._build is None and len(steps) == 1
    run_all(steps)
    assert not strategy.settling
    assert ring_points(strategy) == ring_points(built_at_once(backends, StrategyOptions()))
    assert {b.id for b in strategy._held} == {b.id for b in backends if b.eligible}
