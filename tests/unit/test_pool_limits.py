"""``PoolRuntime``'s limits, queue, demand reports and retry budget, without sockets."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lb.config import parse_config
from lb.model import Backend
from lb.proxy.pool import PoolRuntime, worker_share
from lb.wire import BackendEntry


def pool(n: int = 2, max_conn: int = 0, workers: int = 1, **cfg: Any) -> PoolRuntime:
    config = parse_config(
        {
            "listeners": [{"name": "l", "bind": "127.0.0.1:1", "pool": "p"}],
            "pools": {"p": {"strategy": cfg.pop("strategy", "round_robin"), **cfg}},
        }
    )
    p = PoolRuntime("p", config.pools["p"], workers)
    p.apply_snapshot(
        [
            BackendEntry(f"b{i}", f"127.0.0.1:{9000 + i}", 1, 1.0, max_conn=max_conn)
            for i in range(n)
        ]
    )
    return p


class Waiter:
    def __init__(self, key: bytes | None = None) -> None:
        self.key = key
        self.got: Backend | None = None

    def granted(self, backend: Backend) -> None:
        self.got = backend


@pytest.mark.parametrize(
    ("max_conn", "workers", "share"),
    [(0, 4, 0), (4, 1, 4), (4, 2, 2), (5, 2, 3), (1, 4, 1), (10, 3, 4)],
)
def test_a_limit_is_split_between_workers_rounded_up(
    max_conn: int, workers: int, share: int
) -> None:
    assert worker_share(max_conn, workers) == share
    # The total never exceeds the limit by more than the rounding.
    assert share * workers - max_conn < workers or max_conn == 0


def test_the_worker_count_sets_each_backends_share() -> None:
    p = pool(max_conn=4, workers=2)
    assert {b.limit for b in p.backends.values()} == {2}
    config = p.config
    p.reconfigure(config, workers=1)
    assert {b.limit for b in p.backends.values()} == {4}


@pytest.mark.parametrize("strategy", ["round_robin", "weighted", "least_conn", "consistent_hash"])
def test_picks_skip_backends_at_their_limit(strategy: str) -> None:
    p = pool(n=3, max_conn=2, strategy=strategy)
    taken = []
    for i in range(6):
        b = p.pick(b"key-%d" % (i % 2))
        assert b is not None
        p.acquire(b)
        taken.append(b)
    assert sorted(b.active for b in p.backends.values()) == [2, 2, 2]
    assert p.pick(b"key-0") is None  # all full: the caller queues


@settings(max_examples=200, deadline=None)
@given(
    limit=st.integers(1, 3),
    ops=st.lists(st.tuples(st.booleans(), st.integers(0, 50)), max_size=60),
)
def test_the_limit_holds_and_a_freed_slot_goes_to_the_oldest_waiter(
    limit: int, ops: list[tuple[bool, int]]
) -> None:
    """Requests arrive (True) or in-flight ones end (False, the n-th modulo those running),
    in any order: no backend ever exceeds its limit, nobody waits while a slot is free, and
    waiters are served first come, first served."""
    p = pool(n=2, max_conn=limit, max_queue=10_000, queue_timeout="1h")
    running: list[Backend] = []
    waiting: list[Waiter] = []
    served: list[Waiter] = []

    def on_grant(w: Waiter) -> None:
        assert w.got is not None
        served.append(w)
        running.append(w.got)

    for arrive, n in ops:
        if arrive:
            b = p.pick(None)
            if b is not None:
                p.acquire(b)
                running.append(b)
            else:
                w = Waiter()
                assert p.enqueue(w) > 0
                waiting.append(w)
        elif running:
            b = running.pop(n % len(running))
            before = [w for w in waiting if w.got is None]
            p.release(b)
            for w in before:
                if w.got is not None:
                    on_grant(w)
        assert all(b.active <= limit for b in p.backends.values())
        pending = [w for w in waiting if w.got is None]
        assert p.waiting == len(pending)
        if pending:  # somebody waits: every slot is taken
            assert all(b.active == limit for b in p.backends.values())
    order = [w for w in waiting if w.got is not None]
    assert served == order  # FIFO


def test_a_full_queue_and_a_pool_that_does_not_hold_refuse() -> None:
    p = pool(n=1, max_conn=1, max_queue=1)
    b = p.pick(None)
    assert b is not None
    p.acquire(b)
    assert p.enqueue(Waiter()) == 5.0  # queue_timeout's default
    assert p.enqueue(Waiter()) == 0.0 and p.queue_full == 1
    # No eligible backend, hold_timeout 0 (the default): refused, not held.
    empty = pool(n=0)
    assert empty.enqueue(Waiter()) == 0.0
    holding = pool(n=0, hold_timeout="30s")
    w = Waiter()
    assert holding.enqueue(w) == 30.0 and holding.held == 1
    holding.apply_backend(BackendEntry("x", "127.0.0.1:9100", 1, 1.0))
    assert w.got is not None and w.got.id == "x" and holding.held == 0


def test_leave_and_expire_take_a_waiter_out_once() -> None:
    p = pool(n=1, max_conn=1)
    b = p.pick(None)
    assert b is not None
    p.acquire(b)
    w1, w2 = Waiter(), Waiter()
    p.enqueue(w1)
    p.enqueue(w2)
    p.leave(w1)
    assert p.waiting == 1
    assert p.expire(w2) and not p.expire(w2)
    assert p.waiting == 0 and p.queue_timeouts == 1
    p.release(b)
    assert w1.got is None and w2.got is None


def test_demand_is_reported_at_once_when_it_leaves_zero_or_doubles() -> None:
    p = pool(n=1)
    seen: list[int] = []
    p.on_demand = lambda pool: seen.append(pool.demand)
    b = p.backends["b0"]
    for _ in range(8):
        p.acquire(b)
    for _ in range(8):
        p.release(b)
    assert seen == [1, 3, 7]  # falls go with the stats snapshot, every second
    # A pool that goes 0, 1, 0, 1 reports once until the next snapshot re-arms it.
    for _ in range(5):
        p.acquire(b)
        p.release(b)
    assert seen == [1, 3, 7]
    p.demand_reported()  # the snapshot said 0
    p.acquire(b)
    assert seen == [1, 3, 7, 1]


@pytest.mark.parametrize("per_second", [0, 1])
def test_the_retry_budget_caps_retries_at_a_share_of_first_tries(per_second: int) -> None:
    p = pool(n=1, retry_budget=0.2, retry_budget_min=per_second)
    b = p.backends["b0"]
    allowed = 0
    for _ in range(100):  # 100 requests, each trying up to 3 retries
        p.acquire(b)
        p.release(b)
        for _ in range(3):
            if not p.retry_allowed():
                break
            allowed += 1
            p.acquire(b)
            p.release(b)
    floor = per_second * 10  # the budget's window is 10 s; this loop takes far less
    assert floor + 0.2 * 100 - 1 <= allowed <= floor + 0.2 * 100 + 1
    assert p.budget_exhausted > 0
