"""The load hooks as the pool drives them: ``PoolRuntime.acquire``/``release`` tell a strategy
that tracks load (``least_conn``, ``consistent_hash`` with ``bounded_load``) of every change of
``active``, and cost nothing for one that does not."""

from __future__ import annotations

import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lb.balancing import LeastConn, StrategyOptions, tracks_load
from lb.balancing.consistent_hash import ConsistentHash
from lb.config import parse_config
from lb.model import AdminState, Backend
from lb.proxy.pool import PoolRuntime
from lb.wire import BackendEntry


def config(**pool: Any) -> Any:
    return parse_config(
        {
            "listeners": [{"name": "l", "bind": "127.0.0.1:1", "pool": "p"}],
            "pools": {"p": {"strategy": "round_robin", **pool}},
        }
    ).pools["p"]


def entry(i: int, weight: int = 1, **changes: Any) -> BackendEntry:
    return BackendEntry(f"b{i}", f"127.0.0.1:{9000 + i}", weight, float(weight), **changes)


def test_which_strategies_track_load() -> None:
    assert tracks_load(LeastConn(StrategyOptions()))
    assert tracks_load(ConsistentHash(StrategyOptions(bounded_load=1.25)))
    assert not tracks_load(ConsistentHash(StrategyOptions()))
    for name in ("round_robin", "weighted", "random_two"):
        assert not PoolRuntime("p", config(strategy=name)).tracks_load
    assert PoolRuntime("p", config(strategy="least_conn")).tracks_load


def test_a_strategy_that_claims_hooks_it_lacks_is_refused() -> None:
    class Liar:
        tracks_load = True

        def update(self, backends: list[Backend]) -> None: ...

        def pick(self, key: bytes | None) -> Backend | None: ...

    with pytest.raises(TypeError, match="on_acquire"):
        tracks_load(Liar())


def test_reconfigure_switches_the_hooks_on_and_off() -> None:
    pool = PoolRuntime("p", config())
    pool.apply_snapshot([entry(i) for i in range(3)])
    assert not pool.tracks_load
    pool.reconfigure(config(strategy="least_conn"))
    assert pool.tracks_load
    busy = pool.pick(None)
    assert busy is not None
    pool.acquire(busy)
    assert busy not in {pool.pick(None) for _ in range(4)}  # the new strategy saw it
    pool.reconfigure(config())
    assert not pool.tracks_load


@settings(max_examples=50, deadline=None)
@given(
    st.lists(st.integers(min_value=1, max_value=4), min_size=1, max_size=8),
    st.lists(st.tuples(st.sampled_from(["req", "end", "drain", "ready"]), st.integers(0, 99))),
)
def test_least_conn_through_the_pool_always_picks_a_least_loaded_backend(
    weights: list[int], script: list[tuple[str, int]]
) -> None:
    pool = PoolRuntime("p", config(strategy="least_conn"))
    pool.apply_snapshot([entry(i, w) for i, w in enumerate(weights)])
    held: list[Backend] = []
    states = {f"b{i}": AdminState.READY for i in range(len(weights))}
    for op, k in script:
        if op == "req":
            picked = pool.pick(None)
            eligible = [b for b in pool.backends.values() if b.eligible]
            if not eligible:
                assert picked is None
                continue
            assert picked is not None
            least = min(b.active / b.effective_weight for b in eligible)
            assert picked.active / picked.effective_weight == least
            pool.acquire(picked)
            held.append(picked)
        elif op == "end" and held:
            pool.release(held.pop(k % len(held)))
        elif op in ("drain", "ready"):
            i = k % len(weights)
            states[f"b{i}"] = AdminState.DRAIN if op == "drain" else AdminState.READY
            pool.apply_backend(entry(i, weights[i], admin=states[f"b{i}"]))


def test_bounded_load_counts_only_what_its_eligible_backends_carry() -> None:
    pool = PoolRuntime("p", config(strategy="consistent_hash", bounded_load=1.25))
    pool.apply_snapshot([entry(i) for i in range(4)])
    strategy = pool.strategy
    assert isinstance(strategy, ConsistentHash)
    rng = random.Random(3)
    held = []
    for n in range(400):
        picked = pool.pick(b"client-%d" % rng.randrange(50))
        assert picked is not None
        pool.acquire(picked)
        held.append(picked)
        if n % 3 == 0:
            pool.release(held.pop(rng.randrange(len(held))))
        if n == 200:  # one drains with requests in flight; they end while it is out
            pool.apply_backend(entry(1, admin=AdminState.DRAIN))
        eligible = [b for b in pool.backends.values() if b.eligible]
        assert strategy._load == sum(b.active for b in eligible)
