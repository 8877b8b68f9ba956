"""``round_robin``, ``least_conn`` and ``random_two``: rotation and load-aware picks."""

from __future__ import annotations

import random
from collections import Counter

from hypothesis import given
from hypothesis import strategies as st

from lb.balancing import LeastConn, RandomTwo, RoundRobin, StrategyOptions
from lb.model import AdminState, Backend

weights = st.sampled_from([0.1, 0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 7.0])
loads = st.lists(
    st.tuples(st.integers(min_value=0, max_value=40), weights), min_size=1, max_size=12
)


def pool(spec: list[tuple[int, float]]) -> list[Backend]:
    out = []
    for i, (active, weight) in enumerate(spec):
        b = Backend(f"127.0.0.1:{9000 + i}", effective_weight=weight)
        b.active = active
        out.append(b)
    return out


def load(b: Backend) -> float:
    return b.active / b.effective_weight


def acquire(strategy: LeastConn, b: Backend) -> None:
    """What ``PoolRuntime.acquire`` does: count it, then tell the strategy."""
    b.active += 1
    strategy.on_acquire(b)


def release(strategy: LeastConn, b: Backend) -> None:
    b.active -= 1
    strategy.on_release(b)


def test_round_robin_visits_every_backend_once_per_cycle() -> None:
    backends = pool([(0, 1.0)] * 5)
    strategy = RoundRobin(StrategyOptions())
    strategy.update(backends)
    picks = [strategy.pick(None) for _ in range(15)]
    for lap in range(3):
        assert set(picks[lap * 5 : lap * 5 + 5]) == set(backends)
    assert picks[5:10] == picks[:5]


def test_round_robin_update_with_the_same_set_keeps_the_rotation() -> None:
    backends = pool([(0, 1.0)] * 4)
    strategy = RoundRobin(StrategyOptions())
    strategy.update(backends)
    first = [strategy.pick(None) for _ in range(2)]
    strategy.update(backends)
    rest = [strategy.pick(None) for _ in range(2)]
    assert set(first + rest) == set(backends)


@given(loads)
def test_least_conn_picks_a_minimum_load(spec: list[tuple[int, float]]) -> None:
    backends = pool(spec)
    strategy = LeastConn(StrategyOptions())
    strategy.update(backends)
    for _ in range(len(spec) + 1):
        picked = strategy.pick(None)
        assert picked is not None
        assert load(picked) == min(map(load, backends))
        acquire(strategy, picked)


@given(loads, st.integers(min_value=0, max_value=30))
def test_least_conn_ties_rotate(spec: list[tuple[int, float]], skip: int) -> None:
    backends = pool(spec)
    strategy = LeastConn(StrategyOptions())
    strategy.update(backends)
    for _ in range(skip):  # start the rotation anywhere
        strategy.pick(None)
    least = min(map(load, backends))
    tied = [b for b in backends if load(b) == least]
    # Loads do not change here, so the tied backends must take strict turns in list order.
    picks = [strategy.pick(None) for _ in range(2 * len(tied))]
    assert set(picks) == set(tied)
    start = tied.index(picks[0])  # type: ignore[arg-type]
    assert picks == (tied[start:] + tied[:start]) * 2


def test_least_conn_idle_pool_is_served_in_rotation() -> None:
    backends = pool([(0, 1.0), (0, 3.0), (0, 1.0)])
    strategy = LeastConn(StrategyOptions())
    strategy.update(backends)
    assert [strategy.pick(None) for _ in range(6)] == backends * 2


def test_least_conn_balances_by_weight_under_load() -> None:
    backends = pool([(0, 1.0), (0, 3.0)])
    strategy = LeastConn(StrategyOptions())
    strategy.update(backends)
    for _ in range(400):
        picked = strategy.pick(None)
        assert picked is not None
        acquire(strategy, picked)
    assert [b.active for b in backends] == [100, 300]


@given(loads, st.randoms(use_true_random=False))
def test_random_two_never_picks_the_unique_most_loaded(
    spec: list[tuple[int, float]], rnd: random.Random
) -> None:
    backends = pool(spec)
    strategy = RandomTwo(StrategyOptions())
    strategy.update(backends)
    random.seed(rnd.random())
    worst = max(map(load, backends))
    unique_worst = [load(b) for b in backends].count(worst) == 1 and len(backends) > 1
    for _ in range(20):
        picked = strategy.pick(None)
        assert picked in backends
        if unique_worst:
            assert load(picked) < worst
        if len(backends) == 2:
            assert load(picked) == min(map(load, backends))


def test_random_two_spreads_an_idle_pool() -> None:
    backends = pool([(0, 1.0)] * 4)
    strategy = RandomTwo(StrategyOptions())
    strategy.update(backends)
    random.seed(7)
    counts = Counter(strategy.pick(None) for _ in range(4000))
    assert all(800 <= counts[b] <= 1200 for b in backends)


def test_random_two_keeps_loads_close() -> None:
    backends = pool([(0, 1.0)] * 10)
    strategy = RandomTwo(StrategyOptions())
    strategy.update(backends)
    random.seed(11)
    for _ in range(5000):
        picked = strategy.pick(None)
        assert picked is not None
        picked.active += 1
    # Two choices keep the gap to O(log log n); one random choice would spread ~ +-3 sqrt(500).
    assert max(b.active for b in backends) - min(b.active for b in backends) <= 10


class LeastConnModel:
    """The O(n) specification of ``least_conn``: the minimum of ``(load, since)``, where
    ``since`` is when the backend reached its current load, joined, or was last picked (so
    equal loads are served in the order they reached that load: round-robin ties)."""

    def __init__(self) -> None:
        self.since: dict[str, int] = {}
        self.clock = 0

    def _stamp(self, b: Backend) -> None:
        self.clock += 1
        self.since[b.id] = self.clock

    def update(self, backends: list[Backend]) -> None:
        eligible = [b for b in backends if b.eligible]
        old = self.since
        self.since = {b.id: old[b.id] for b in eligible if b.id in old}
        for b in eligible:
            if b.id not in self.since:
                self._stamp(b)
        self.members = eligible

    def moved(self, b: Backend) -> None:
        if b.id in self.since:
            self._stamp(b)

    def pick(self) -> Backend | None:
        if not self.members:
            return None
        best = min(self.members, key=lambda b: (load(b), self.since[b.id]))
        self._stamp(best)
        return best


ops = st.lists(
    st.one_of(
        st.tuples(st.just("pick"), st.integers(0, 0)),
        st.tuples(st.just("release"), st.integers(0, 11)),
        st.tuples(st.just("drain"), st.integers(0, 11)),
        st.tuples(st.just("ready"), st.integers(0, 11)),
        st.tuples(st.just("weight"), st.integers(0, 11)),
    ),
    max_size=80,
)


@given(loads, ops, weights)
def test_least_conn_matches_its_specification(
    spec: list[tuple[int, float]], steps: list[tuple[str, int]], new_weight: float
) -> None:
    backends = pool(spec)
    strategy = LeastConn(StrategyOptions())
    model = LeastConnModel()
    strategy.update(backends)
    model.update(backends)
    for op, i in steps:
        b = backends[i % len(backends)]
        if op == "pick":
            picked = strategy.pick(None)
            assert picked is model.pick()
            if picked is not None:
                acquire(strategy, picked)
                model.moved(picked)
        elif op == "release" and b.active:
            release(strategy, b)
            model.moved(b)
        elif op in ("drain", "ready", "weight"):
            if op == "drain":
                b.admin = AdminState.DRAIN
            elif op == "ready":
                b.admin = AdminState.READY
            elif b.effective_weight == new_weight:
                continue
            else:
                b.effective_weight = new_weight
            was = b.id in model.since
            strategy.update(backends)
            model.update(backends)
            if was and b.id in model.since and op == "weight":
                model._stamp(b)  # a weight change moves it to the end of its new bucket


def test_least_conn_ignores_backends_it_does_not_hold() -> None:
    backends = pool([(0, 1.0), (0, 1.0)])
    strategy = LeastConn(StrategyOptions())
    strategy.update(backends[:1])
    acquire(strategy, backends[1])  # a draining or removed backend finishing a request
    release(strategy, backends[1])
    assert [strategy.pick(None) for _ in range(3)] == [backends[0]] * 3
