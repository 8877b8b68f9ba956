"""The seam between the supervisor and the control services (lb/control/plane.py), without a
Supervisor: a ControlPlane with fake workers drives the ControlService, its API and metrics.

The fake workers decode every frame they are sent, as a worker does, and report a snapshot
that echoes its sequence number, as a worker does when it applies a drain."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast

import pytest

from lb import wire
from lb.config import load_config
from lb.control.api import Call, ControlApi
from lb.control.errors import ApiError
from lb.control.events import EventsQuery, NewEvent, PostEvents
from lb.control.models import (
    BackendsResponse,
    BackendView,
    DeleteQuery,
    PatchBackend,
    RemoveResult,
    WaitQuery,
    WaitResult,
)
from lb.control.plane import ControlPlane
from lb.control.service import ControlService
from lb.model import AdminState
from lb.state import ManagedBackend
from tests.helpers import to_toml
from tests.unit.test_wire import zero_counters

A, B = "127.0.0.1:9001", "127.0.0.1:9002"


def write_config(path: Path, weight: int = 1, **lb: Any) -> None:
    path.write_text(
        to_toml(
            {
                "lb": {"workers": 2, **lb},
                "listeners": [{"name": "l", "bind": "127.0.0.1:18090", "pool": "web"}],
                "pools": {
                    "web": {
                        "drain_timeout": "30s",
                        "backends": [{"address": A, "weight": weight}, {"address": B}],
                    }
                },
            }
        )
    )


class FakeWorker:
    """A ``WorkerLink`` that applies what it is sent and reports like a worker."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.restarts = 0
        self.up = True
        self.seq = 0
        self.received: list[wire.ToWorker] = []
        self.active: dict[tuple[str, str], int] = {}  # what the test says is in flight here
        self.stats: wire.Stats | None = None
        self.service: ControlService | None = None

    def send(self, frame: bytes) -> None:
        self.seq, msg = wire.decode_to_worker(frame)
        self.received.append(msg)
        if isinstance(msg, wire.BackendUpdate) and msg.backend.admin is not AdminState.READY:
            asyncio.get_running_loop().call_soon(self.report)  # a drain: report at once

    def report(self) -> None:
        pools: dict[str, dict[str, wire.BackendCounters]] = {}
        for (pool, bid), n in self.active.items():
            counters = zero_counters()
            counters["active"], counters["total"] = n, 10 * n
            pools.setdefault(pool, {})[bid] = counters
        self.stats = wire.Stats(worker=self.index, seq=self.seq, pools=pools)
        if self.service is not None:
            self.service.worker_stats(self.index, self.restarts, self.stats)

    def latest_stats(self) -> wire.Stats | None:
        return self.stats

    def alive(self) -> bool:
        return self.up

    def kinds(self) -> list[str]:
        return [m.TYPE for m in self.received]


@pytest.fixture
async def plane(tmp_path: Path) -> ControlPlane:
    path = tmp_path / "lb.toml"
    write_config(path)
    p = ControlPlane(load_config(path), path, asyncio.get_running_loop())
    p.workers = [FakeWorker(1), FakeWorker(2)]
    return p


def fakes(plane: ControlPlane) -> list[FakeWorker]:
    return [w for w in plane.workers if isinstance(w, FakeWorker)]


@pytest.fixture
async def service(plane: ControlPlane) -> AsyncIterator[ControlService]:
    s = ControlService(plane)

    # What the supervisor does with the state's change reports.
    def changed(pool: str, b: ManagedBackend) -> None:
        plane.broadcast(plane.backend_update(pool, b))
        s.backend_changed(pool, b, plane.seq)

    def removed(pool: str, backend_id: str) -> None:
        plane.broadcast(wire.RemoveBackend(pool, backend_id))
        s.backend_removed(pool, backend_id)

    plane.state.on_change = changed
    plane.state.on_remove = removed
    for w in fakes(plane):
        w.service = s
    try:
        yield s
    finally:
        await s.close()


# -- the plane -------------------------------------------------------------------------------


async def test_broadcast_stamps_one_number_per_message(plane: ControlPlane) -> None:
    plane.broadcast(wire.CloseBackend("web", A))
    plane.broadcast(wire.RemoveBackend("web", A))
    for w in fakes(plane):
        assert w.received == [wire.CloseBackend("web", A), wire.RemoveBackend("web", A)]
        assert w.seq == 2
    # What a starting worker gets is stamped with the current number, not a new one.
    seq, msg = wire.decode_to_worker(plane.frame(plane.pools_snapshot()))
    assert seq == 2 and plane.seq == 2
    assert isinstance(msg, wire.PoolsSnapshot)
    assert [e.id for e in msg.pools["web"]] == [A, B]


async def test_snapshots_are_the_live_workers_and_totals_every_worker(
    plane: ControlPlane,
) -> None:
    w1, w2 = fakes(plane)
    dead = FakeWorker(3)
    plane.workers = [w1, w2, dead]
    w1.active[("web", A)] = 2
    dead.active[("web", A)] = 5
    w1.report()
    dead.report()
    dead.up = False
    snaps = plane.snapshots()
    assert snaps == [w1.stats, wire.Stats(worker=2)]  # w2 has not reported: seq 0, nothing
    totals = plane.totals().pools["web"][A]
    assert (totals["active"], totals["total"]) == (7, 70)  # a dead worker's last word counts


async def test_apply_config_makes_it_current_before_the_workers_hear(
    plane: ControlPlane, tmp_path: Path
) -> None:
    order: list[str] = []

    def changed(pool: str, b: ManagedBackend) -> None:
        order.append(f"state: weight {b.weight}")
        plane.broadcast(plane.backend_update(pool, b))

    plane.state.on_change = changed
    plane.on_config.append(
        lambda config: order.append(f"on_config: weight {config.pools['web'].backends[0].weight}")
    )
    w1 = fakes(plane)[0]
    write_config(tmp_path / "lb.toml", weight=5)
    result = plane.reload("test")
    assert result.changes == [f"backend web/{A} weight 1 -> 5"]
    assert result.restart_required == []
    assert order == ["state: weight 5", "on_config: weight 5"]
    assert plane.config.pools["web"].backends[0].weight == 5
    assert w1.kinds() == ["backend", "config", "pools"]
    last = w1.received[-1]
    assert isinstance(last, wire.PoolsSnapshot) and last.pools["web"][0].weight == 5


async def test_a_refused_reload_changes_nothing(plane: ControlPlane, tmp_path: Path) -> None:
    before = plane.config
    (tmp_path / "lb.toml").write_text("[lb]\nworkers = -1\n")
    with pytest.raises(ApiError) as ei:
        plane.reload("test")
    assert (ei.value.status, ei.value.field) == (422, "config")
    assert plane.config is before and plane.seq == 0
    write_config(tmp_path / "lb.toml", workers=4)  # between process counts: applied
    result = plane.reload("test")
    assert result.restart_required == [] and "lb.workers: 2 -> 4" in result.changes
    write_config(tmp_path / "lb.toml", workers=0)  # to the in-process mode: a restart
    assert plane.reload("test").restart_required == ["lb.workers"]


# -- the service and its API, driven by the plane ------------------------------------------


async def test_views_sum_the_workers_snapshots(
    plane: ControlPlane, service: ControlService
) -> None:
    w1, w2 = fakes(plane)
    w1.active[("web", A)] = 1
    w2.active[("web", A)] = 2
    w1.report()
    w2.report()
    api = ControlApi(plane, service)
    status, result = await api.list_backends(Call({"pool": "web"}, None, None))
    assert status == 200 and isinstance(result, BackendsResponse)
    view = {b.id: b for b in result.backends}[A]
    assert (view.active, view.total) == (3, 30)


async def test_a_drain_is_acknowledged_once_every_worker_applied_it(
    plane: ControlPlane, service: ControlService
) -> None:
    w1, w2 = fakes(plane)
    w1.active[("web", A)] = 1
    api = ControlApi(plane, service)
    path = {"pool": "web", "backend": A}
    status, view = await asyncio.wait_for(
        api.patch_backend(Call(path, None, PatchBackend(admin=AdminState.DRAIN))), 1.0
    )
    assert status == 200 and isinstance(view, BackendView)
    assert view.admin == "drain" and not view.removable  # one request in flight in worker 1
    assert all(w.stats is not None and w.stats.seq == plane.seq for w in (w1, w2))
    waiting = asyncio.ensure_future(api.wait_backend(Call(path, WaitQuery(timeout=5), None)))
    await asyncio.sleep(0.01)
    assert not waiting.done()
    w1.active[("web", A)] = 0
    w1.report()
    _, waited = await asyncio.wait_for(waiting, 1.0)
    assert isinstance(waited, WaitResult) and waited.removable and waited.workers == 2


async def test_a_forced_delete_closes_before_it_removes(
    plane: ControlPlane, service: ControlService
) -> None:
    api = ControlApi(plane, service)
    call = Call({"pool": "web", "backend": A}, DeleteQuery(force=True), None)
    _, removed = await api.delete_backend(call)
    assert isinstance(removed, RemoveResult) and removed.forced
    for w in fakes(plane):
        assert w.kinds() == ["close_backend", "remove"]
    assert [b.id for b in plane.state.pools["web"].values()] == [B]


async def test_the_service_owns_its_event_log(plane: ControlPlane, service: ControlService) -> None:
    api = ControlApi(plane, service)
    event = NewEvent(time=1.0, kind="decision", message="up", current=1, desired=2)
    body = PostEvents(events=[event, event])
    status, _ = await api.post_events(Call({"pool": "web"}, None, body))
    assert status == 201 and service.events.seq == 2
    _, listed = await api.list_events(Call({}, EventsQuery(), None))
    assert [e.message for e in listed.events] == ["up", "up"]  # type: ignore[attr-defined]
    # /metrics reads the scaler's decisions from the same log.
    text = service.metrics.exposition()[0].decode()
    assert 'lb_scaler_desired_replicas{pool="web"} 2.0' in text
    another = ControlService(plane)
    assert another.events is not service.events and another.events.seq == 0
    await another.close()


async def test_failure_events_count_for_metrics(
    plane: ControlPlane, service: ControlService
) -> None:
    service.worker_failure(wire.Failure(1, "web", A, "connect", "connection refused"))
    service.worker_failure(wire.Failure(1, "web", "gone", "connect"))
    text = service.metrics.exposition()[0].decode()
    assert f'lb_backend_errors_total{{backend="{A}",kind="connect",pool="web"}} 1.0' in text


async def test_info_and_listeners_show_live_workers_and_a_listener_nobody_serves(
    plane: ControlPlane, service: ControlService
) -> None:
    w1, w2 = fakes(plane)
    api = ControlApi(plane, service)
    for w in (w1, w2):
        w.stats = wire.Stats(
            worker=w.index, listeners={"l": cast(wire.ListenerCounters, {"active": 3})}
        )
    _, listeners = await api.list_listeners(Call({}, None, None))
    (view,) = listeners.listeners
    assert (view.workers_serving, view.up, view.active) == (2, True, 6)
    w2.up = False  # died; its replacement has not reported yet
    _, info = await api.info(Call({}, None, None))
    assert (info.workers, info.workers_live) == (2, 1)
    _, listeners = await api.list_listeners(Call({}, None, None))
    (view,) = listeners.listeners
    assert (view.workers_serving, view.up, view.active) == (1, True, 3)  # not the dead one's
    w1.up = False
    _, listeners = await api.list_listeners(Call({}, None, None))
    (view,) = listeners.listeners
    assert (view.workers_serving, view.up) == (0, False)
