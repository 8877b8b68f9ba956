"""A big snapshot is applied in slices on a worker's loop (``PoolRuntime.apply_snapshot`` with
the scheduler of ``lb.balancing.background``): the pool serves from the set it had until the
new one is whole, unchanged backends are kept as they are, a newer snapshot supersedes one in
progress, and the worker queues the messages that come meanwhile behind it, in order.

The slices are made as small as they can be (one batch of entries, one chunk of backends for
the strategy, per loop iteration), so that every test sees the snapshot in progress whatever
the machine's speed; nothing here measures time (``benchmarks.stall`` does)."""

from __future__ import annotations

import asyncio
import gc
import weakref
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest

from lb import wire
from lb.balancing import StrategyOptions, background, create_strategy
from lb.balancing.roster import Roster
from lb.config import parse_config
from lb.model import AdminState
from lb.proxy import pool as pool_module
from lb.proxy.pool import PoolRuntime
from lb.wire import BackendEntry
from lb.worker import DataPlane

STRATEGIES = ["round_robin", "weighted", "least_conn", "random_two", "consistent_hash"]


def config_of(strategy: str = "weighted", **extra: Any) -> Any:
    return parse_config(
        {
            "listeners": [{"name": "l", "bind": "127.0.0.1:1", "mode": "http", "pool": "p"}],
            "pools": {"p": {"strategy": strategy, "vnodes": 4, **extra}},
        }
    )


def make_pool(strategy: str = "weighted", **extra: Any) -> PoolRuntime:
    return PoolRuntime("p", config_of(strategy, **extra).pools["p"])


def entry(i: int, group: str = "b", **changes: Any) -> BackendEntry:
    fields: dict[str, Any] = {
        "id": f"{group}{i}",
        "address": f"127.0.{i // 250}.{i % 250 + 1}:{8000 if group == 'b' else 9000}",
        "weight": 1 + i % 3,
        "effective_weight": float(1 + i % 3),
    }
    fields.update(changes)
    return BackendEntry(**fields)


@pytest.fixture
async def tiny_slices(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[None]:
    """Each slice does the least it can: one look at the clock per batch, always late."""
    monkeypatch.setattr(background, "SLICE_S", -1.0)
    monkeypatch.setattr(pool_module, "STRATEGY_CHUNK", 100)
    loop = asyncio.get_running_loop()
    previous = background.set_scheduler(background.run_on(loop, slice_s=-1.0))
    yield
    background.set_scheduler(previous)


async def until(check: Any, limit: int = 100_000) -> int:
    """Loop iterations until ``check()`` (bounded)."""
    for n in range(limit):
        if check():
            return n
        await asyncio.sleep(0)
    raise AssertionError("never happened")


def eligible_ids(pool: PoolRuntime) -> list[str]:
    return [b.id for b in pool.backends.values() if b.eligible]


def assert_strategy_holds_the_pool(pool: PoolRuntime) -> None:
    """The strategy's members are the pool's eligible backends, as a whole-list diff says
    (in any order: a backend drained and readied joins the members' end)."""
    plain = create_strategy(pool.config.strategy, StrategyOptions(vnodes=pool.config.vnodes))
    plain.update(list(pool.backends.values()))
    hinted: Roster = pool.strategy._roster  # type: ignore[attr-defined]
    whole: Roster = plain._roster  # type: ignore[attr-defined]
    assert hinted.members == whole.members
    assert hinted.weights == whole.weights


@pytest.mark.parametrize("strategy", STRATEGIES)
async def test_picks_come_from_the_old_set_until_the_new_one_is_whole(
    strategy: str, tiny_slices: None
) -> None:
    pool = make_pool(strategy)
    pool.apply_snapshot([entry(i, "old") for i in range(10)])  # small: at once
    assert not pool.applying
    done: list[bool] = []
    pool.apply_snapshot([entry(i) for i in range(1500)], lambda: done.append(True))
    assert pool.applying and not done
    seen_old = seen_new = 0
    key = 0
    while pool.applying:
        for _ in range(3):
            key += 1
            b = pool.pick(b"k%d" % key)
            assert b is not None, "a pick during the snapshot found nothing"
            assert pool.backends.get(b.id) is b and b.eligible
            if b.id.startswith("old"):
                seen_old += 1
                assert seen_new == 0, "an old backend after a new one: the sets mixed"
            else:
                seen_new += 1
        await asyncio.sleep(0)
    assert seen_old > 0  # the old set served while the new one was staged
    assert done == [True]
    assert len(pool.backends) == 1500 and pool.eligible == 1500
    assert all(not b.id.startswith("old") for b in (pool.pick(b"x%d" % i) for i in range(50)))
    assert_strategy_holds_the_pool(pool)


@pytest.mark.parametrize("strategy", STRATEGIES)
async def test_a_reload_keeps_unchanged_backends_and_changes_the_rest_in_place(
    strategy: str, tiny_slices: None
) -> None:
    pool = make_pool(strategy)
    pool.apply_snapshot([entry(i) for i in range(1200)])
    await until(lambda: not pool.applying)
    before = dict(pool.backends)
    busy = before["b5"]
    pool.acquire(busy)
    again = [entry(i) for i in range(1200)]  # new objects, as a decoded frame gives
    again[5] = entry(5, admin=AdminState.DRAIN)
    again[6] = entry(6, effective_weight=0.5)
    again[7] = entry(7, address="127.0.9.9:8000")
    del again[8]
    again.append(entry(5000))
    pool.apply_snapshot(again)
    assert pool.applying
    assert pool.backends["b5"].admin is AdminState.READY  # staged, not applied yet
    await until(lambda: not pool.applying)
    assert pool.backends["b5"] is busy and busy.admin is AdminState.DRAIN and busy.active == 1
    assert pool.backends["b6"] is before["b6"] and pool.backends["b6"].effective_weight == 0.5
    assert pool.backends["b7"] is not before["b7"] and pool.backends["b7"].host == "127.0.9.9"
    assert "b8" not in pool.backends and "b5000" in pool.backends
    unchanged = [k for k in before if k not in ("b5", "b6", "b7", "b8")]
    assert all(pool.backends[k] is before[k] for k in unchanged)
    assert pool.eligible == sum(1 for b in pool.backends.values() if b.eligible) == 1199
    assert_strategy_holds_the_pool(pool)
    pool.release(busy)


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("when", ["staging", "feeding"])
async def test_a_newer_snapshot_supersedes_one_in_progress(
    strategy: str, when: str, tiny_slices: None
) -> None:
    pool = make_pool(strategy)
    pool.apply_snapshot([entry(i, "old") for i in range(10)])
    first: list[str] = []
    pool.apply_snapshot([entry(i) for i in range(1500)], lambda: first.append("first"))
    job = pool._snapshot
    assert job is not None
    if when == "feeding":  # the first one is committed, its backends partly fed
        await until(lambda: job.committed)
        if not pool.applying:
            pytest.skip("this strategy took every backend at once")
    else:
        await asyncio.sleep(0)
    second: list[str] = []
    newer = [entry(i) for i in range(700, 2100)] + [entry(3, "old")]
    pool.apply_snapshot(newer, lambda: second.append("second"))
    await until(lambda: not pool.applying)
    for _ in range(5):
        await asyncio.sleep(0)  # the superseded job's slices, if any, come and go
    assert first == [] and second == ["second"]
    assert list(pool.backends) == [e.id for e in newer] or set(pool.backends) == {
        e.id for e in newer
    }
    assert pool.eligible == len(newer)
    assert_strategy_holds_the_pool(pool)


async def test_without_a_scheduler_a_snapshot_is_applied_at_once() -> None:
    previous = background.set_scheduler(None)
    try:
        pool = make_pool("least_conn")
        done: list[bool] = []
        pool.apply_snapshot([entry(i) for i in range(2000)], lambda: done.append(True))
        assert done == [True] and not pool.applying and len(pool.backends) == 2000
    finally:
        background.set_scheduler(previous)


def test_a_bad_address_in_a_snapshot_is_skipped_and_named(
    caplog: pytest.LogCaptureFixture,
) -> None:
    pool = make_pool("round_robin")
    pool.apply_snapshot([entry(0), entry(1, address="nowhere"), entry(2)])
    assert list(pool.backends) == ["b0", "b2"]
    assert "backend b1 ignored: address" in caplog.text


# -- the worker: messages that come during a snapshot wait behind it --------------------------


def worker_config(strategy: str = "weighted") -> Any:
    return config_of(strategy)


async def test_the_worker_applies_later_messages_after_the_snapshot_in_order(
    tiny_slices: None,
) -> None:
    previous = background.scheduler()
    plane = DataPlane(0)
    background.set_scheduler(previous)  # keep the tiny slices (DataPlane installs its own)
    plane.on_message(1, wire.NewConfig(worker_config()))
    plane.on_message(2, wire.PoolsSnapshot({"p": tuple(entry(i) for i in range(1500))}))
    assert plane.applying and not plane.configured.done()
    assert plane.seq == 1  # the snapshot counts as applied only once it is whole
    # A drain, a removal, an add, and a drain undone, while the snapshot is applied.
    plane.on_message(3, wire.BackendUpdate("p", entry(5, admin=AdminState.DRAIN)))
    plane.on_message(4, wire.RemoveBackend("p", "b7"))
    plane.on_message(5, wire.BackendUpdate("p", entry(9000)))
    plane.on_message(6, wire.BackendUpdate("p", entry(11, admin=AdminState.DRAIN)))
    plane.on_message(7, wire.BackendUpdate("p", entry(11)))
    pool = plane.pools["p"]
    assert "b9000" not in pool.backends
    await until(lambda: not plane.applying)
    assert plane.configured.done()
    assert plane.seq == 7
    assert pool.backends["b5"].admin is AdminState.DRAIN
    assert "b7" not in pool.backends and "b9000" in pool.backends
    assert pool.backends["b11"].admin is AdminState.READY
    assert pool.eligible == 1500 - 2 + 1
    assert_strategy_holds_the_pool(pool)


async def test_the_worker_lets_a_newer_snapshot_supersede_one_in_progress(
    tiny_slices: None,
) -> None:
    previous = background.scheduler()
    plane = DataPlane(0)
    background.set_scheduler(previous)
    plane.on_message(1, wire.NewConfig(worker_config("least_conn")))
    plane.on_message(2, wire.PoolsSnapshot({"p": tuple(entry(i) for i in range(1500))}))
    await asyncio.sleep(0)
    assert plane.applying
    plane.on_message(3, wire.PoolsSnapshot({"p": tuple(entry(i) for i in range(600))}))
    plane.on_message(4, wire.BackendUpdate("p", entry(1, admin=AdminState.MAINT)))
    await until(lambda: not plane.applying)
    pool = plane.pools["p"]
    assert plane.seq == 4 and plane.configured.done()
    assert len(pool.backends) == 600 and pool.backends["b1"].admin is AdminState.MAINT
    assert pool.eligible == 599
    assert_strategy_holds_the_pool(pool)


async def test_a_decoded_snapshot_makes_its_entries_in_the_slices(
    tiny_slices: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A snapshot frame as the worker gets it (wire.EntryColumns): the pool reads its entries
    a batch per slice, and ends with the same backends as from the entries themselves."""
    previous = background.scheduler()
    plane = DataPlane(0)
    background.set_scheduler(previous)
    plane.on_frame(wire.encode(wire.NewConfig(worker_config()), 1))
    made: list[int] = []
    plain = wire.EntryColumns.__getitem__

    def counted(self: wire.EntryColumns, index: Any) -> Any:
        got = plain(self, index)
        made.append(len(got) if isinstance(index, slice) else 1)
        return got

    monkeypatch.setattr(wire.EntryColumns, "__getitem__", counted)
    snapshot = tuple(entry(i, weight=2, effective_weight=1.5) for i in range(1500))
    plane.on_frame(wire.encode(wire.PoolsSnapshot({"p": snapshot}), 2))
    assert plane.applying
    assert sum(made) < len(snapshot)  # not all made when the frame was decoded
    await until(lambda: not plane.applying)
    assert sum(made) == len(snapshot) and len(made) > 2  # one batch at a time
    pool = plane.pools["p"]
    assert plane.seq == 2 and pool.eligible == 1500
    assert [(b.id, b.address, b.weight, b.effective_weight) for b in pool.backends.values()] == [
        (e.id, e.address, e.weight, e.effective_weight) for e in snapshot
    ]
    assert_strategy_holds_the_pool(pool)


# -- decoding a snapshot: the quick reader refuses what the generic one refuses ---------------


def test_a_snapshot_with_a_bad_entry_is_refused_naming_its_field() -> None:
    frame = wire.encode(wire.PoolsSnapshot({"p": tuple(entry(i) for i in range(5))}), 2)
    doc = orjson.loads(frame)
    columns = doc["pools"]["p"]  # the snapshot travels by column (wire.EntryColumns)
    columns["admin"][3] = "gone"
    with pytest.raises(wire.WireError) as ei:
        wire.decode_to_worker(orjson.dumps(doc))
    assert "field pools.p.admin.3: expected one of ready, drain, maint" in str(ei.value)
    columns["admin"][3] = "drain"
    columns["effective_weight"][1] = 2  # an integer weight: read as a float
    _, msg = wire.decode_to_worker(orjson.dumps(doc))
    assert isinstance(msg, wire.PoolsSnapshot)
    got = msg.pools["p"]
    assert got[3].admin is AdminState.DRAIN and got[1].effective_weight == 2.0
    assert type(got[1].effective_weight) is float and got[0] == entry(0)


# -- a reload that changes the strategy: the new one takes the backends in slices -----------


@pytest.mark.parametrize(
    ("before", "after"), [("weighted", "least_conn"), ("round_robin", "consistent_hash")]
)
async def test_a_new_strategy_takes_a_big_pool_in_slices(
    tiny_slices: None, before: str, after: str
) -> None:
    pool = make_pool(before)
    background.set_scheduler(None)
    pool.apply_snapshot([entry(i) for i in range(1500)])
    background.set_scheduler(background.run_on(asyncio.get_running_loop(), slice_s=-1.0))
    pool.reconfigure(config_of(after).pools["p"])
    assert pool.config.strategy == after
    # (consistent_hash takes them all at once, and builds its ring in slices itself.)
    assert pool.applying or getattr(pool.strategy, "settling", False)
    # Meanwhile every pick is one of the pool's eligible backends.
    assert all(pool.pick(b"k%d" % i) in pool.backends.values() for i in range(50))
    # Changes meanwhile: a backend removed is never fed, one with a new address is fed new.
    pool.remove("b3")
    pool.apply_backend(entry(1400, address="127.0.9.9:8000"))
    await until(lambda: not pool.applying)
    await until(lambda: not getattr(pool.strategy, "settling", False))
    assert len(pool.backends) == 1499 and pool.eligible == 1499
    assert_strategy_holds_the_pool(pool)
    held = pool.strategy._roster.members  # type: ignore[attr-defined]
    assert "b3" not in held and held["b1400"] is pool.backends["b1400"]
    assert held["b1400"].address == "127.0.9.9:8000"


async def test_a_replaced_ring_is_freed_in_slices(tiny_slices: None) -> None:
    pool = make_pool("consistent_hash")
    background.set_scheduler(None)
    pool.apply_snapshot([entry(i) for i in range(1500)])
    background.set_scheduler(background.run_on(asyncio.get_running_loop(), slice_s=-1.0))
    old = weakref.ref(pool.strategy)
    assert pool.strategy._size  # type: ignore[attr-defined]
    pool.reconfigure(config_of("round_robin").pools["p"])
    gc.collect()
    assert old() is not None  # kept for its slices
    slices = await until(lambda: old() is None)
    assert slices > 2  # a part at a time
    await until(lambda: not pool.applying)
    assert_strategy_holds_the_pool(pool)


async def test_the_worker_frees_a_removed_pools_ring_in_slices(tiny_slices: None) -> None:
    previous = background.scheduler()
    plane = DataPlane(0)
    background.set_scheduler(previous)
    plane.on_message(1, wire.NewConfig(worker_config("consistent_hash")))
    plane.on_message(2, wire.PoolsSnapshot({"p": tuple(entry(i) for i in range(1500))}))
    await until(lambda: not plane.applying)
    await until(lambda: not plane.pools["p"].strategy.settling)  # type: ignore[attr-defined]
    old = weakref.ref(plane.pools["p"].strategy)
    other = parse_config(
        {
            "listeners": [{"name": "l", "bind": "127.0.0.1:1", "mode": "http", "pool": "q"}],
            "pools": {"q": {"backends": [{"address": "127.0.0.1:2"}]}},
        }
    )
    plane.on_message(3, wire.NewConfig(other))  # pool p is gone
    assert "p" not in plane.pools
    gc.collect()
    assert old() is not None  # kept for its slices
    assert await until(lambda: old() is None) > 2
