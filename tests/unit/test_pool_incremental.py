"""A runtime change costs O(1) outside the strategy: ``PoolRuntime`` keeps its eligible and
limited counts and its sticky tokens incrementally, and tells the strategy's ``Roster`` which
backends it touched. Each is checked against what a full recount or a whole-list diff gives."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lb.balancing import StrategyOptions, create_strategy
from lb.balancing.roster import Members, Roster
from lb.config import parse_config
from lb.model import AdminState, Backend, HealthState
from lb.proxy.pool import PoolRuntime, sticky_token
from lb.wire import BackendEntry

STRATEGIES = ["round_robin", "weighted", "least_conn", "random_two", "consistent_hash"]


def make_pool(strategy: str, workers: int = 1, **extra: Any) -> PoolRuntime:
    config = parse_config(
        {
            "listeners": [{"name": "l", "bind": "127.0.0.1:1", "mode": "http", "pool": "p"}],
            "pools": {"p": {"strategy": strategy, "sticky_cookie": "lb", "vnodes": 4, **extra}},
        }
    )
    return PoolRuntime("p", config.pools["p"], workers)


def entry(i: int, state: int, port: int = 0) -> BackendEntry:
    """Backend ``i`` in one of a few states: admin, health, ejection, weight and limit."""
    return BackendEntry(
        f"b{i}",
        f"127.0.0.1:{9000 + i + 100 * port}",
        1 + state % 3,
        [1.0, 0.0, 2.5, 1.0, 0.5][state % 5],
        admin=[AdminState.READY, AdminState.READY, AdminState.DRAIN, AdminState.MAINT][state % 4],
        health=HealthState.DOWN if state % 7 == 3 else HealthState.UP,
        ejected=state % 11 == 5,
        max_conn=[0, 0, 3, 1][state % 4],
    )


ops = st.lists(
    st.one_of(
        st.tuples(st.just("backend"), st.integers(0, 12), st.integers(0, 40), st.integers(0, 1)),
        st.tuples(st.just("remove"), st.integers(0, 12), st.just(0), st.just(0)),
        st.tuples(
            st.just("snapshot"),
            st.integers(0, 12),
            st.integers(0, 40),
            st.integers(0, 1),
        ),
        st.tuples(st.just("workers"), st.integers(1, 4), st.just(0), st.just(0)),
    ),
    max_size=40,
)


def recount(pool: PoolRuntime) -> tuple[int, bool, dict[bytes, Backend]]:
    backends = list(pool.backends.values())
    return (
        sum(1 for b in backends if b.eligible),
        any(b.limit for b in backends),
        {sticky_token(b.id): b for b in backends},
    )


@pytest.mark.parametrize("strategy", STRATEGIES)
@settings(max_examples=60, deadline=None)
@given(script=ops)
def test_counts_tokens_and_strategy_follow_every_change(
    strategy: str, script: list[tuple[str, int, int, int]]
) -> None:
    pool = make_pool(strategy)
    pool.apply_snapshot([entry(i, i) for i in range(5)])
    # The same strategy given plain lists: it diffs the whole list every time.
    plain = create_strategy(pool.config.strategy, StrategyOptions(vnodes=pool.config.vnodes))
    plain.update(list(pool.backends.values()))
    for op, i, state, port in script:
        if op == "backend":
            pool.apply_backend(entry(i, state, port))
        elif op == "remove":
            pool.remove(f"b{i}")
        elif op == "snapshot":  # the first i backends, in their states
            pool.apply_snapshot([entry(j, state + j, port) for j in range(i)])
        else:
            pool.reconfigure(pool.config, workers=i)
        eligible, limited, tokens = recount(pool)
        assert pool.eligible == eligible
        assert pool.limited == limited
        assert pool.limits == sum(1 for b in pool.backends.values() if b.limit)
        assert pool.by_token == tokens
        plain.update(list(pool.backends.values()))
        hinted: Roster = pool.strategy._roster  # type: ignore[attr-defined]
        whole: Roster = plain._roster  # type: ignore[attr-defined]
        assert list(hinted.members.items()) == list(whole.members.items())
        assert hinted.weights == whole.weights
        assert hinted.rank == whole.rank
        if strategy in ("weighted", "consistent_hash"):  # deterministic picks
            for k in range(12):
                key = b"k%d" % k
                assert pool.strategy.pick(key) is plain.pick(key)


def test_a_change_without_a_sticky_cookie_keeps_no_tokens() -> None:
    config = parse_config(
        {
            "listeners": [{"name": "l", "bind": "127.0.0.1:1", "pool": "p"}],
            "pools": {"p": {"strategy": "round_robin"}},
        }
    )
    pool = PoolRuntime("p", config.pools["p"])
    pool.apply_snapshot([entry(i, 0) for i in range(3)])
    pool.apply_backend(entry(7, 0))
    pool.remove("b1")
    assert pool.by_token == {}
    assert pool.eligible == 3


def test_a_reload_that_keeps_the_strategy_settings_keeps_the_strategy() -> None:
    pool = make_pool("weighted")
    pool.apply_snapshot([entry(i, 0) for i in range(3)])
    before = pool.strategy
    reloaded = pool.config.model_copy(update={"queue_timeout": 7.0})
    pool.reconfigure(reloaded)
    assert pool.strategy is before
    assert pool.config is reloaded
    pool.reconfigure(reloaded.model_copy(update={"strategy": "round_robin"}))
    assert pool.strategy is not before
    assert type(pool.strategy).__name__ == "RoundRobin"
    assert pool.pick(None) is not None


# -- the Roster's hint ------------------------------------------------------------------------

changes_script = st.lists(
    st.tuples(
        st.sampled_from(["add", "remove", "drain", "ready", "weight", "readdress"]),
        st.integers(0, 30),
        st.sampled_from([0.0, 0.5, 1.0, 2.0]),
    ),
    max_size=40,
)


def described(roster: Roster, changes: Any) -> tuple[Any, ...]:
    return (
        [b.id for b in changes.joined],
        [b.id for b in changes.left],
        [(o.id, n.id, o is n) for o, n in changes.changed],
        list(roster.members.items()),
        dict(roster.weights),
        dict(roster.rank),
    )


@settings(max_examples=200, deadline=None)
@given(changes_script)
def test_a_hinted_diff_says_what_a_whole_list_diff_says(
    script: list[tuple[str, int, float]],
) -> None:
    backends = {f"b{i}": Backend(f"127.0.0.1:{9000 + i}", id=f"b{i}") for i in range(6)}
    hinted, whole = Roster(), Roster()
    lineage = object()
    generation = 1
    hinted.diff(Members(backends.values(), lineage, generation, None))
    whole.diff(list(backends.values()))
    made = 6
    for op, i, w in script:
        ids = list(backends)
        if op == "add" or not ids:
            b = Backend(f"127.0.0.1:{9000 + made}", id=f"b{made}")
            made += 1
            backends[b.id] = b
            touched: dict[str, Backend | None] = {b.id: b}
        else:
            b = backends[ids[i % len(ids)]]
            touched = {b.id: b}
            if op == "remove":
                del backends[b.id]
                touched = {b.id: None}
            elif op == "drain":
                b.admin = AdminState.DRAIN
            elif op == "ready":
                b.admin = AdminState.READY
            elif op == "weight":
                b.effective_weight = w
            else:  # a new address: the pool makes a new object in the same place
                fresh = Backend(f"127.0.1.1:{9000 + i}", id=b.id)
                fresh.admin, fresh.effective_weight = b.admin, b.effective_weight
                backends[b.id] = fresh
                touched = {b.id: fresh}
        generation += 1
        got = hinted.diff(Members(backends.values(), lineage, generation, touched))
        want = whole.diff(list(backends.values()))
        assert described(hinted, got) == described(whole, want)
    # A whole-list diff after hinted ones starts from what they left.
    generation += 5  # not the next list: the hint is not trusted
    some = next(iter(backends.values()), None)
    if some is not None:
        some.admin = AdminState.MAINT
    got = hinted.diff(Members(backends.values(), lineage, generation, {}))
    want = whole.diff(list(backends.values()))
    assert described(hinted, got) == described(whole, want)


def test_a_hint_from_another_pool_or_an_older_list_is_not_trusted() -> None:
    backends = [Backend(f"127.0.0.1:{9000 + i}") for i in range(3)]
    roster = Roster()
    mine = object()
    roster.diff(Members(backends, mine, 1, None))
    backends[0].admin = AdminState.DRAIN
    # An empty hint would say "nothing changed": from another lineage it is ignored.
    changes = roster.diff(Members(backends, object(), 2, {}))
    assert [b.id for b in changes.left] == [backends[0].id]
    backends[1].admin = AdminState.DRAIN
    changes = roster.diff(Members(backends, mine, 1, {}))  # not the list after the last one
    assert [b.id for b in changes.left] == [backends[1].id]
