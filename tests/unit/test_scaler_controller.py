"""The reconcile loop against an in-memory provider and an in-memory lb: adoption, dead
members, scale up and down (drain -> wait -> stop -> deregister, victims by in-flight then
age), failed starts with backoff, lb outages, removal intents that survive a restart, the
events posted to lb, and the pure helpers (samples, victims, status text)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any, cast

import pytest

from lb.control.client import ApiError, ControlClient, Unreachable
from lb.control.models import (
    AddResult,
    BackendsResponse,
    BackendStats,
    BackendView,
    Percentiles,
    PoolDemand,
    PoolStats,
    RemoveResult,
    StatsResponse,
    WaitResult,
)
from lb.model import AdminState, HealthState
from scaler import controller
from scaler.config import ScalerConfig
from scaler.controller import PoolScaler
from scaler.observe import pick_victims, samples
from scaler.policy import Sample
from scaler.providers.base import CpuSample, Member, MemberGone, ProviderError, cpu_percent
from scaler.status import format_status

POOL = "web"


class World:
    """What the fakes share: a call log (for ordering) and a clock."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.now = 100.0


class FakeProvider:
    kind = "fake"

    def __init__(self, world: World) -> None:
        self.world = world
        self.members: dict[str, Member] = {}
        self.fail_next = 0
        self.port = 9100

    def add(self, created: float, running: bool = True) -> Member:
        self.port += 1
        m = Member(
            id=f"m{self.port}",
            name=f"m{self.port}",
            address=f"127.0.0.1:{self.port}",
            created=created,
            running=running,
            detail="" if running else "exited with status 1",
        )
        self.members[m.id] = m
        return m

    async def open(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def list(self) -> list[Member]:
        return list(self.members.values())

    async def create(self) -> Member:
        self.world.calls.append("create")
        if self.fail_next:
            self.fail_next -= 1
            raise ProviderError("boom: exited with status 1")
        return self.add(created=self.world.now)

    async def stop_and_remove(self, member: Member, grace: float) -> None:
        self.world.calls.append(f"stop {member.address}")
        self.members.pop(member.id, None)

    async def events(self) -> AsyncIterator[MemberGone]:
        return
        yield  # an async generator that never yields

    async def cpu(self, member: Member) -> CpuSample | None:
        return None


def view(address: str, **kw: Any) -> BackendView:
    doc: dict[str, Any] = {
        "pool": POOL,
        "id": address,
        "address": address,
        "weight": 1,
        "effective_weight": 1.0,
        "admin": "ready",
        "health": "up",
        "ejected": False,
        "ejected_for": 0.0,
        "metadata": {"managed-by": "scaler"},
        "dynamic": True,
        "last_check": "",
        "active": 0,
        "total": 0,
        "connect_failures": 0,
        "errors": 0,
        "bytes_in": 0,
        "bytes_out": 0,
        "removable": False,
    }
    doc.update(kw)
    return BackendView.model_validate(doc)


class FakeLB:
    def __init__(self, world: World) -> None:
        self.world = world
        self.backends_: dict[str, BackendView] = {}
        self.in_flight: dict[str, int] = {}
        self.down = False
        self.removable_after_wait = True
        self.posted: list[dict[str, Any]] = []
        self.demand_: tuple[int, int] = (0, 0)
        self.seq = 0
        self.changed = asyncio.Event()
        self.demand_error: Exception | None = None
        self.demand_calls = 0

    def _check(self) -> None:
        if self.down:
            raise Unreachable("no control socket at run/lb.sock: is lb running?")

    async def backends(self, pool: str) -> BackendsResponse:
        self._check()
        return BackendsResponse(pool=pool, backends=list(self.backends_.values()))

    async def stats(self, pool: str, *, window: float = 10.0) -> StatsResponse:
        self._check()
        per = {}
        for b in self.backends_.values():
            eligible = b.admin == "ready" and b.health == "up"
            per[b.id] = BackendStats(
                address=b.address,
                admin=b.admin,
                health=b.health,
                eligible=eligible,
                weight=1,
                in_flight=self.in_flight.get(b.address, 0),
                connections=0,
                total=0,
                rate=0.0,
                errors=0,
                error_rate=0.0,
                latency_ms=None,
            )
        ps = PoolStats(
            in_flight=sum(self.in_flight.values()),
            connections=0,
            total=0,
            rate=0.0,
            errors=0,
            error_rate=0.0,
            latency_ms=None,
            backends_total=len(per),
            backends_eligible=sum(1 for s in per.values() if s.eligible),
            backends=per,
        )
        return StatsResponse(window=window, measured=window, pools={pool: ps})

    async def add_backend(
        self,
        pool: str,
        address: str,
        weight: int = 1,
        *,
        id: str | None = None,
        metadata: dict[str, str] | None = None,
    ) -> AddResult:
        self._check()
        self.world.calls.append(f"register {address}")
        # A runtime-added backend starts checking; pretend the first check passed at once.
        b = view(address, metadata=metadata or {})
        self.backends_[address] = b
        return AddResult(created=True, backend=b)

    async def drain(self, pool: str, backend: str) -> BackendView:
        self._check()
        self.world.calls.append(f"drain {backend}")
        b = self.backends_[backend].model_copy(update={"admin": AdminState.DRAIN})
        self.backends_[backend] = b
        return b

    async def wait_removable(self, pool: str, backend: str, within: float = 30.0) -> WaitResult:
        self._check()
        self.world.calls.append(f"wait {backend}")
        ok = self.removable_after_wait
        return WaitResult(
            pool=pool,
            id=backend,
            admin=AdminState.DRAIN,
            removable=ok,
            timed_out=not ok,
            active=0 if ok else 2,
            workers=1,
            pending_workers=0,
            waited=0.0,
            reason="removable" if ok else "2 active",
        )

    async def remove(self, pool: str, backend: str, *, force: bool = False) -> RemoveResult:
        self._check()
        self.world.calls.append(f"deregister {backend}" + (" force" if force else ""))
        if backend not in self.backends_:
            raise ApiError(404, "backend", "no such backend")
        b = self.backends_.pop(backend)
        return RemoveResult(removed=b, forced=force)

    # The demand API: answers at once when seq > after (or without after), else waits up to
    # ``within`` for a change; then the current values.
    def set_demand(self, queued: int = 0, held: int = 0) -> None:
        """In flight is what the backends have (``in_flight``); this sets what waits in lb."""
        self.demand_ = (queued, held)
        self.seq += 1
        self.changed.set()
        self.changed = asyncio.Event()

    def _demand_now(self, pool: str) -> PoolDemand:
        in_flight, (queued, held) = sum(self.in_flight.values()), self.demand_
        eligible = sum(
            1 for b in self.backends_.values() if b.admin == "ready" and b.health == "up"
        )
        return PoolDemand(
            pool=pool,
            seq=self.seq,
            in_flight=in_flight,
            queued=queued,
            held=held,
            demand=in_flight + queued + held,
            eligible=eligible,
            backends=len(self.backends_),
        )

    async def demand(self, pool: str, after: int | None = None, within: float = 25.0) -> PoolDemand:
        self._check()
        if self.demand_error is not None:
            self.demand_calls += 1
            raise self.demand_error
        if after is not None and self.seq <= after:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(within):
                    await self.changed.wait()
        return self._demand_now(pool)

    async def request(self, method: str, path: str, **kw: Any) -> tuple[int, Any]:
        self._check()
        self.posted.append({"method": method, "path": path, **kw})
        return 201, {}


def scaler_config(**kw: Any) -> ScalerConfig:
    doc: dict[str, Any] = {
        "pool": POOL,
        "min": 1,
        "max": 5,
        "target": 10,
        "interval": 1,
        "scale_down_stabilization": 0,
        "process": {"command": "/bin/true {port}"},
    }
    doc.update(kw)
    return ScalerConfig.model_validate(doc)


def make(world: World, **kw: Any) -> tuple[PoolScaler, FakeProvider, FakeLB]:
    resume = kw.pop("resume", None)
    provider, lb = FakeProvider(world), FakeLB(world)
    ps = PoolScaler(
        scaler_config(**kw),
        provider,
        cast(ControlClient, lb),
        resume=resume,
        clock=lambda: world.now,
    )
    return ps, provider, lb


async def test_adopts_running_members_without_creating_any() -> None:
    w = World()
    ps, provider, lb = make(w, scale_down_stabilization=60)  # no scale-down right after start
    a, b = provider.add(1), provider.add(2)
    lb.backends_["127.0.0.1:7000"] = view("127.0.0.1:7000", metadata={})  # static: untouched
    await ps.tick()
    assert w.calls == [f"register {a.address}", f"register {b.address}"]
    assert lb.backends_[a.address].metadata == {
        "managed-by": "scaler",
        "member": a.id,
        "provider": "process",
    }
    assert "127.0.0.1:7000" in lb.backends_
    assert ps.last is not None and ps.last.current == 2
    assert [x["kind"] for x in ps.actions] == ["adopted", "adopted"]


async def test_dead_members_are_cleaned_up_and_deregistered() -> None:
    w = World()
    ps, provider, lb = make(w, min=1)
    alive = provider.add(1)
    dead = provider.add(2, running=False)
    lb.backends_[alive.address] = view(alive.address)
    lb.backends_[dead.address] = view(dead.address)
    lb.backends_["127.0.0.1:7000"] = view("127.0.0.1:7000")  # ours, but no member at all
    await ps.tick()
    assert f"stop {dead.address}" in w.calls
    assert f"deregister {dead.address} force" in w.calls
    assert "deregister 127.0.0.1:7000 force" in w.calls
    assert set(lb.backends_) == {alive.address}
    kinds = [x["kind"] for x in ps.actions]
    assert kinds.count("died") == 1 and kinds.count("deregistered") == 2


async def test_scale_up_creates_and_registers_each_member() -> None:
    w = World()
    ps, provider, lb = make(w, panic_window=0)  # the HPA's path (panic mode: below)
    m = provider.add(1)
    lb.backends_[m.address] = view(m.address)
    lb.in_flight[m.address] = 30
    await ps.tick()
    assert ps.last is not None
    assert ps.last.reason.startswith("scale up 1 -> 3: inflight_per_backend 30.0 > target 10.0")
    assert w.calls.count("create") == 2
    assert len(lb.backends_) == 3
    assert [x["kind"] for x in ps.actions] == ["member_started", "member_started"]


async def test_scale_down_drains_waits_stops_then_deregisters_fewest_in_flight_newest_first() -> (
    None
):
    w = World()
    ps, provider, lb = make(w, max_remove=1)
    old, busy, new = provider.add(1), provider.add(2), provider.add(3)
    for m in (old, busy, new):
        lb.backends_[m.address] = view(m.address)
    lb.in_flight[busy.address] = 5  # 5 / 3 members: wants 2 fewer, max_remove=1
    await ps.tick()
    assert ps.last is not None and (ps.last.current, ps.last.desired) == (3, 2)
    a = new.address
    assert w.calls == [f"drain {a}", f"wait {a}", f"stop {a}", f"deregister {a}"]
    w.calls.clear()
    w.now += 20  # a new period
    await ps.tick()
    a = old.address
    assert w.calls == [f"drain {a}", f"wait {a}", f"stop {a}", f"deregister {a}"]
    assert set(provider.members) == {busy.id}


async def test_drain_timeout_stops_anyway_and_forces_the_removal() -> None:
    w = World()
    ps, provider, lb = make(w)
    keep, victim = provider.add(1), provider.add(2)
    for m in (keep, victim):
        lb.backends_[m.address] = view(m.address)
    lb.removable_after_wait = False
    await ps.tick()
    assert w.calls[-2:] == [f"stop {victim.address}", f"deregister {victim.address} force"]
    assert "drain_timeout" in [x["kind"] for x in ps.actions]


async def test_failed_starts_back_off_and_recover() -> None:
    w = World()
    ps, provider, _lb = make(w, min=1, backoff=2, backoff_max=5)
    provider.fail_next = 2
    await ps.tick()  # below min: create fails
    assert w.calls == ["create"] and ps.failures == 1
    assert ps.actions[-1]["kind"] == "start_failed"
    assert "boom: exited with status 1" in ps.actions[-1]["message"]
    assert "next attempt in 2s" in ps.actions[-1]["message"]
    w.now += 1
    await ps.tick()  # within the backoff: no attempt
    assert w.calls == ["create"]
    w.now += 1.5
    await ps.tick()  # fails again: backoff doubles
    assert w.calls == ["create", "create"] and "next attempt in 4s" in ps.last_error + str(
        ps.actions[-1]["message"]
    )
    w.now += 4.5
    await ps.tick()
    assert w.calls[-2:] == ["create", f"register 127.0.0.1:{provider.port}"]
    assert ps.failures == 0


async def test_without_lb_nothing_is_touched() -> None:
    w = World()
    ps, provider, lb = make(w, min=2)
    provider.add(1)
    lb.down = True
    await ps.tick()  # lb not up yet (started together): waiting, not an incident
    assert w.calls == [] and list(ps.actions) == []
    lb.down = False
    await ps.tick()
    assert w.calls.count("create") == 1 and list(ps.actions)[-1]["kind"] == "member_started"
    lb.down = True
    await ps.tick()
    await ps.tick()
    assert [x["kind"] for x in ps.actions].count("lb_unreachable") == 1  # reported once
    calls = len(w.calls)
    await ps.tick()
    assert len(w.calls) == calls  # nothing stopped or started without lb
    lb.down = False
    await ps.tick()
    assert "lb_reachable" in [x["kind"] for x in ps.actions]


async def test_a_removal_intent_survives_a_restart() -> None:
    w = World()
    ps, provider, lb = make(w)
    keep, leaving = provider.add(1), provider.add(2)
    for m in (keep, leaving):
        lb.backends_[m.address] = view(m.address)
    lb.backends_[leaving.address] = view(leaving.address, admin="drain")
    ps2 = PoolScaler(
        ps.sc, provider, cast(ControlClient, lb), resume={leaving.id}, clock=lambda: w.now
    )
    await ps2.tick()
    a = leaving.address
    assert w.calls == [f"drain {a}", f"wait {a}", f"stop {a}", f"deregister {a}"]
    assert ps2.last is not None and ps2.last.current == 1  # the leaving one does not count
    assert ps2.removing == set()


async def test_events_are_posted_to_lb() -> None:
    w = World()
    ps, _provider, lb = make(w)
    await ps.tick()
    await ps.publish()
    (post,) = lb.posted
    assert post["path"] == "/v1/pools/web/events"
    kinds = [e["kind"] for e in post["body"]["events"]]
    assert kinds == ["decision", "member_started"]
    decision = post["body"]["events"][0]
    assert decision["current"] == 0 and decision["desired"] == 1
    assert decision["message"] == "scale up 0 -> 1: below min=1"
    # A repeated hold is neither logged at info nor posted again.
    await ps.tick()
    await ps.tick()
    await ps.publish()
    assert len(lb.posted) == 2 and len(lb.posted[1]["body"]["events"]) == 1


async def test_stop_all_removes_every_member() -> None:
    w = World()
    ps, provider, lb = make(w)
    a, b = provider.add(1), provider.add(2)
    lb.backends_[a.address] = view(a.address)
    assert await ps.stop_all() == 2
    assert provider.members == {}
    assert f"drain {a.address}" in w.calls and f"stop {b.address}" in w.calls
    assert f"drain {b.address}" not in w.calls  # never registered: nothing to drain
    assert lb.backends_ == {}


def stats(address: str, **kw: Any) -> BackendStats:
    doc: dict[str, Any] = {
        "address": address,
        "admin": "ready",
        "health": "up",
        "eligible": True,
        "weight": 1,
        "in_flight": 0,
        "connections": 0,
        "total": 0,
        "rate": 0.0,
        "errors": 0,
        "error_rate": 0.0,
        "latency_ms": None,
    }
    doc.update(kw)
    return BackendStats.model_validate(doc)


NOT_IN_SERVICE = Sample(None, ready=False)


def member(port: int, created: float = 0.0) -> Member:
    return Member(f"m{port}", f"m{port}", f"127.0.0.1:{port}", created)


@pytest.mark.parametrize(
    ("metric", "st", "cpu", "expected"),
    [
        ("inflight_per_backend", {"in_flight": 7}, None, Sample(7.0)),
        ("rps_per_backend", {"rate": 12.5}, None, Sample(12.5)),
        (
            "p95_latency_ms",
            {"latency_ms": Percentiles(p50=1, p95=9, p99=20, samples=10)},
            None,
            Sample(9.0),
        ),
        ("p95_latency_ms", {}, None, Sample(None)),  # no latency samples: missing
        ("cpu_percent", {}, 42.0, Sample(42.0)),
        ("cpu_percent", {}, None, Sample(None)),  # first CPU sample: missing
        (
            "inflight_per_backend",
            {"health": "checking", "eligible": False},
            None,
            Sample(None, False),
        ),
        ("inflight_per_backend", {"health": "down", "eligible": False}, None, Sample(None, False)),
    ],
)
def test_samples(metric: str, st: dict[str, Any], cpu: float | None, expected: Sample) -> None:
    m = member(1)
    assert samples(metric, [m], {m.address: stats(m.address, **st)}, {m.id: cpu}) == [expected]


def test_samples_skip_drained_and_mark_unregistered_unready() -> None:
    a, b = member(1), member(2)
    got = samples("inflight_per_backend", [a, b], {a.address: stats(a.address, admin="drain")}, {})
    assert got == [Sample(None, ready=False)]


def test_victims_fewest_in_flight_then_newest_never_operator_drained() -> None:
    a, b, c, d = member(1, 10), member(2, 20), member(3, 30), member(4, 40)
    st = {
        a.address: stats(a.address, in_flight=0),
        b.address: stats(b.address, in_flight=3),
        c.address: stats(c.address, in_flight=0),
        d.address: stats(d.address, admin=AdminState.MAINT, health=HealthState.UP),
    }
    assert pick_victims([a, b, c, d], st, 2) == [c, a]
    assert pick_victims([a, b, c, d], st, 9) == [c, a, b]


def test_cpu_percent_skips_the_first_sample() -> None:
    assert cpu_percent(None, CpuSample(1.0, 10.0)) is None
    assert cpu_percent(CpuSample(1.0, 10.0), CpuSample(1.5, 11.0)) == pytest.approx(50.0)
    assert cpu_percent(CpuSample(1.0, 10.0), CpuSample(0.5, 11.0)) is None  # restarted


async def test_status_text_shows_members_and_reasons() -> None:
    w = World()
    ps, provider, lb = make(w)
    m = provider.add(1)
    lb.backends_[m.address] = view(m.address)
    lb.in_flight[m.address] = 3
    await ps.tick()
    doc = {"pid": 42, "started": 0, "updated": 0, "config": "c.toml", "pools": {POOL: ps.status()}}
    text = format_status(doc, 42, "c.toml")
    assert "lb-scaler: running (pid 42)" in text
    assert "pool web: 1 member(s), desired 1 (min 1, max 5)" in text
    assert "127.0.0.1:9101" in text and "ready/up" in text
    assert "last decision: hold at 1: inflight_per_backend 3.0 < target 10.0" in text
    assert "  demand (in flight + queued + held): 3\n" in text
    assert "NOT running" in format_status(doc, None, "c.toml")
    assert "has not run" in format_status(None, None, "c.toml")


# -- demand: scale from zero, to zero, panic, and the watcher that wakes the loop ---------------


async def until(cond: Callable[[], bool], within: float = 5.0) -> None:
    """Poll ``cond``: the tasks under test change plain attributes, not events."""
    async with asyncio.timeout(within):
        while not cond():  # noqa: ASYNC110
            await asyncio.sleep(0.01)


async def test_a_held_request_at_zero_members_starts_one_member() -> None:
    w = World()
    ps, _provider, lb = make(w, min=0)
    await ps.tick()
    assert ps.last is not None and ps.last.reason == (
        "hold at 0: demand (in flight + queued + held) is 0"
    )
    assert w.calls == []
    lb.set_demand(held=1)
    await ps.tick()
    assert ps.last is not None and ps.last.reason == (
        "scale up 0 -> 1: scale from zero: demand (in flight + queued + held) 1 / target 10.0, "
        "at once"
    )
    assert w.calls[0] == "create" and w.calls[1].startswith("register ")


async def test_queued_requests_count_in_inflight_per_backend() -> None:
    """With max_conn = 4 the member's own in-flight count stops at 4; the 36 queued in lb are
    load too. The step from 1 to 40 panics: 4 members in one decision, despite max_add=1."""
    w = World()
    ps, provider, lb = make(w, max_add=1, scale_down_stabilization=60)
    m = provider.add(1)
    lb.backends_[m.address] = view(m.address)
    lb.in_flight[m.address] = 1
    await ps.tick()
    assert ps.last is not None and ps.last.desired == 1
    w.now += 1
    lb.in_flight[m.address] = 4
    lb.set_demand(queued=36)
    await ps.tick()
    d = ps.last
    assert d is not None and (d.current, d.desired, d.panic) == (1, 4, True)
    assert "panic" in d.reason and "inflight_per_backend 40.0 per member" in d.reason
    assert w.calls.count("create") == 3
    assert ps.decisions[-1]["panic"] is True and ps.decisions[-1]["demand"] == 40


async def test_an_idle_pool_goes_to_zero_after_scale_to_zero_after() -> None:
    w = World()
    ps, provider, lb = make(w, min=0, scale_to_zero_after=3)
    m = provider.add(1)
    lb.backends_[m.address] = view(m.address)
    await ps.tick()  # the policy starts now: a whole idle time before zero
    assert ps.last is not None and ps.last.desired == 1
    w.now += 2
    lb.set_demand(queued=1)
    ps.on_demand(1, eligible=1)  # a request came between two ticks
    lb.set_demand()
    w.now += 2
    await ps.tick()
    assert ps.last is not None and ps.last.desired == 1  # 2 s idle, not 3
    w.now += 1.5
    await ps.tick()
    assert ps.last is not None and ps.last.reason == (
        "scale down 1 -> 0: demand (in flight + queued + held) has been 0 for 4s "
        "(scale_to_zero_after=3s)"
    )
    a = m.address
    assert w.calls[-4:] == [f"drain {a}", f"wait {a}", f"stop {a}", f"deregister {a}"]
    assert provider.members == {}


async def test_demand_wakes_the_loop_when_it_leaves_zero_or_jumps(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(controller, "JUMP_SETTLE", 0.01)
    w = World()
    ps, _provider, _lb = make(w)
    ps.demand = 0
    ps.on_demand(0, eligible=0)
    assert not ps.wake.is_set()
    ps.on_demand(1, eligible=1)  # a member takes it: nothing to do
    await asyncio.sleep(0.05)
    assert not ps.wake.is_set()
    ps.on_demand(1, eligible=0)
    assert ps.wake.is_set()  # at once: the first request held at zero members
    ps.wake.clear()
    ps.demand = 5
    ps.on_demand(8, eligible=1)  # not twice as much
    ps.on_demand(14, eligible=1)  # twice as much, but less than one target (10) more
    await asyncio.sleep(0.05)
    assert not ps.wake.is_set()
    ps.on_demand(15, eligible=1)  # 3x and 10 more: a jump, acted on after JUMP_SETTLE
    assert not ps.wake.is_set()
    await asyncio.sleep(0.05)
    assert ps.wake.is_set()


async def test_the_loop_reacts_to_demand_long_before_its_interval() -> None:
    w = World()
    ps, provider, lb = make(w, min=0, interval=60)
    ps.clock = asyncio.get_running_loop().time
    stop = asyncio.Event()
    run = asyncio.create_task(ps.run(stop))
    follow = asyncio.create_task(ps.follow_demand())
    try:
        await until(lambda: ps.last is not None)  # the first tick: nothing to do
        assert provider.members == {}
        lb.set_demand(held=1)
        # The interval is 60 s: only a wake-up gets here within 10 s.
        await until(lambda: bool(provider.members), within=10)
        assert ps.last is not None and "scale from zero" in ps.last.reason
    finally:
        stop.set()
        ps.wake.set()
        await run
        follow.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await follow


async def test_an_lb_without_the_demand_api_leaves_the_loop_on_its_interval(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(controller, "DEMAND_BACKOFF", (0.01, 0.02, 0.02))
    w = World()
    ps, provider, lb = make(w, min=1)
    lb.demand_error = ApiError(404, "path", "no such path: /v1/pools/web/demand")
    m = provider.add(1)
    lb.backends_[m.address] = view(m.address)
    lb.in_flight[m.address] = 30
    caplog.set_level(logging.INFO, logger="scaler")
    follow = asyncio.create_task(ps.follow_demand())
    try:
        await until(lambda: lb.demand_calls >= 4)
    finally:
        follow.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await follow
    said = [r.getMessage() for r in caplog.records if "demand API" in r.getMessage()]
    assert said == [
        "web: lb has no demand API (an older lb?): the demand is the pool's in-flight count, "
        "nothing waits for a member at zero, and the scaler reacts every interval (1s); asking "
        "again from time to time"
    ]
    assert not ps.wake.is_set()
    calls = lb.demand_calls
    # The tick does without: the pool's in-flight count is its demand.
    await ps.tick()
    assert ps.demand == 30
    assert ps.last is not None and ps.last.desired == 3
    await ps.tick()
    assert lb.demand_calls == calls  # the ticks leave it to the watcher
    # lb is upgraded: the watcher finds the API, and the ticks use it again.
    lb.demand_error = None
    lb.set_demand(queued=20)
    follow = asyncio.create_task(ps.follow_demand())
    try:
        await until(lambda: ps._demand_api)
    finally:
        follow.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await follow
    await ps.tick()
    assert ps.demand == 50
