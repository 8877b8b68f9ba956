"""Removability: pure function of the backend, the drain and the worker snapshots."""

from __future__ import annotations

import asyncio
from typing import Any

from lb.control.drain import Drain, DrainTracker, removability
from lb.model import AdminState
from lb.state import ManagedBackend
from lb.wire import Stats


def backend(admin: AdminState = AdminState.DRAIN) -> ManagedBackend:
    return ManagedBackend("web", "127.0.0.1:9001", 1, admin=admin)


def snap(seq: int, active: int | None) -> Stats:
    pools: Any = {} if active is None else {"web": {"127.0.0.1:9001": {"active": active}}}
    return Stats(worker=1, seq=seq, pools=pools)


def test_ready_is_never_removable() -> None:
    st = removability(backend(AdminState.READY), None, [snap(9, 0)])
    assert not st.removable and "ready" in st.reason


def test_a_snapshot_older_than_the_drain_proves_nothing() -> None:
    d = Drain(seq=5, started=0.0)
    st = removability(backend(), d, [snap(5, 0), snap(4, 0)])
    assert (st.removable, st.pending, st.workers) == (False, 1, 2)


def test_active_anywhere_blocks_and_zero_everywhere_allows() -> None:
    d = Drain(seq=5, started=0.0)
    st = removability(backend(), d, [snap(6, 0), snap(7, 2)])
    assert (st.removable, st.active) == (False, 2)
    st = removability(backend(), d, [snap(6, 0), snap(7, None)])  # unknown there: nothing
    assert st.removable


async def test_tracker_wakes_waiters_and_closes_after_drain_timeout() -> None:
    loop = asyncio.get_running_loop()
    snaps: list[Stats] = [snap(0, 1)]
    closed: list[tuple[str, str]] = []
    tracker = DrainTracker(
        loop, lambda: list(snaps), lambda pool: 0.05, lambda p, i: closed.append((p, i))
    )
    b = backend()
    tracker.backend_changed("web", b, seq=3)
    waiter = loop.create_task(tracker.wait(lambda: b, 5.0))
    await asyncio.sleep(0.1)
    assert closed == [("web", "127.0.0.1:9001")]  # drain_timeout expired
    assert not waiter.done()
    snaps[:] = [snap(3, 0)]
    tracker.stats_updated()
    st = await asyncio.wait_for(waiter, 1.0)
    assert st.removable


async def test_wait_times_out_with_final_counts() -> None:
    loop = asyncio.get_running_loop()
    tracker = DrainTracker(loop, lambda: [snap(9, 3)], lambda pool: 60.0, lambda p, i: None)
    b = backend()
    tracker.backend_changed("web", b, seq=1)
    st = await tracker.wait(lambda: b, 0.05)
    assert (st.removable, st.active) == (False, 3)
    tracker.close()


async def test_back_to_ready_cancels_the_drain() -> None:
    loop = asyncio.get_running_loop()
    closed: list[tuple[str, str]] = []
    tracker = DrainTracker(
        loop, lambda: [snap(9, 1)], lambda pool: 0.05, lambda p, i: closed.append((p, i))
    )
    b = backend()
    tracker.backend_changed("web", b, seq=1)
    b.admin = AdminState.READY
    tracker.backend_changed("web", b, seq=2)
    await asyncio.sleep(0.1)
    assert closed == [] and tracker.drains == {}
