"""``Roster``: what changed in a pool's eligible backends between two updates, and the ranks."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from lb.balancing.roster import Roster, _state_getters, eligible_column
from lb.model import AdminState, Backend, HealthState

edits = st.lists(
    st.tuples(
        st.sampled_from(
            ["append", "remove", "drain", "ready", "down", "up", "weight", "replace", "shuffle"]
        ),
        st.integers(min_value=0, max_value=50),
    ),
    max_size=40,
)


def expected(
    before: dict[str, tuple[Backend, float]], pool: list[Backend]
) -> tuple[set[str], set[str], set[str]]:
    """(joined, left, changed) ids, by brute force."""
    now = {b.id: (b, b.effective_weight) for b in pool if b.eligible}
    joined = now.keys() - before.keys()
    left = before.keys() - now.keys()
    changed = {
        i
        for i in now.keys() & before.keys()
        if now[i][0] is not before[i][0] or now[i][1] != before[i][1]
    }
    return joined, left, changed


@given(st.integers(min_value=0, max_value=8), edits)
def test_diff_matches_a_brute_force_comparison(n: int, script: list[tuple[str, int]]) -> None:
    made = n
    pool = [Backend(f"127.0.0.1:{9000 + i}") for i in range(n)]
    roster = Roster()
    roster.diff(pool)
    for op, i in script:
        before = {b.id: (b, roster.weights[b.id]) for b in roster.members.values()}
        b = pool[i % len(pool)] if pool else None
        if op == "append" or b is None:
            pool.append(Backend(f"127.0.0.1:{9000 + made}", weight=1 + i % 3))
            made += 1
        elif op == "remove":
            pool.remove(b)
        elif op == "drain":
            b.admin = AdminState.DRAIN
        elif op == "ready":
            b.admin = AdminState.READY
        elif op == "down":
            b.health = HealthState.DOWN
        elif op == "up":
            b.health = HealthState.UP
        elif op == "weight":
            b.effective_weight = float(i % 4)
        elif op == "replace":  # the pool makes a fresh object when an address changes
            fresh = Backend(b.address, effective_weight=b.effective_weight)
            pool[pool.index(b)] = fresh
        else:
            pool.insert(0, pool.pop(i % len(pool)))
        changes = roster.diff(pool)
        joined, left, changed = expected(before, pool)
        assert {b.id for b in changes.joined} == joined
        assert {b.id for b in changes.left} == left
        assert {new.id for _old, new in changes.changed} == changed
        assert all(before[old.id][0] is old for old, _new in changes.changed)
        assert all(before[b.id][0] is b for b in changes.left)
        assert roster.members == {b.id: b for b in pool if b.eligible}
        # Ranks follow the pool's order.
        ranks = [roster.rank[b.id] for b in pool]
        assert ranks == sorted(ranks) and len(set(ranks)) == len(ranks)
        assert roster.rank.keys() == {b.id for b in pool}


def test_an_unchanged_pool_is_no_change() -> None:
    pool = [Backend(f"127.0.0.1:{9000 + i}") for i in range(5)]
    roster = Roster()
    assert len(roster.diff(pool).joined) == 5
    assert not roster.diff(pool)
    assert not roster.diff(list(pool))


def test_eligible_column_is_backend_eligible() -> None:
    # Every combination of what Backend.eligible reads, in one list.
    pool = []
    for admin in AdminState:
        for health in HealthState:
            for ejected in (False, True):
                for weight in (0.0, 0.01, 1.0):
                    b = Backend("127.0.0.1:9000", effective_weight=weight)
                    b.admin, b.health, b.ejected = admin, health, ejected
                    pool.append(b)
    states = tuple(list(map(get, pool)) for get in _state_getters)
    assert eligible_column(states) == [b.eligible for b in pool]
    assert eligible_column(states, 7) == [b.eligible for b in pool[7:]]
    assert any(b.eligible for b in pool) and not all(b.eligible for b in pool)


@given(
    st.lists(
        st.tuples(st.integers(0, 30), st.booleans()),
        min_size=2,
        max_size=12,
        unique_by=lambda t: t[0],
    )
)
def test_a_first_list_joins_every_eligible_backend(spec: list[tuple[int, bool]]) -> None:
    pool = []
    for port, ready in spec:
        b = Backend(f"127.0.0.1:{9000 + port}")
        if not ready:
            b.admin = AdminState.DRAIN
        pool.append(b)
    roster = Roster()
    changes = roster.diff(pool)
    assert roster.members == {b.id: b for b in pool if b.eligible}
    assert changes.joined == [b for b in pool if b.eligible]
    assert [roster.rank[b.id] for b in pool] == list(range(len(pool)))
