"""HealthManager without sockets: passive events in, ClusterState changes and timers out."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from lb.config import parse_config
from lb.control.plane import backend_entry
from lb.health.manager import HealthManager
from lb.health_rules import SLOW_START_FLOOR
from lb.model import HealthState
from lb.state import ClusterState
from lb.wire import BackendEntry, Failure, Success

ADDRS = ["127.0.0.1:9001", "127.0.0.1:9002", "127.0.0.1:9003", "127.0.0.1:9004"]


def state(**pool: Any) -> ClusterState:
    cfg = parse_config(
        {
            "listeners": [{"name": "l", "bind": "127.0.0.1:8000", "pool": "web"}],
            "pools": {"web": {"backends": [{"address": a, "weight": 10} for a in ADDRS], **pool}},
        }
    )
    return ClusterState(cfg, now=asyncio.get_running_loop().time())


class Harness:
    def __init__(self, st: ClusterState) -> None:
        self.state = st
        self.loop = asyncio.get_running_loop()
        self.sent: list[BackendEntry] = []
        self.health = HealthManager(st, self.loop)
        # Unit tests drive health by hand: no check task may probe anything.
        self.health.checker.stopped = True

        def changed(pool: str, b: Any) -> None:
            self.sent.append(backend_entry(b, self.loop.time()))
            self.health.backend_changed(pool, b)

        st.on_change = changed
        st.on_remove = lambda pool, bid: self.health.backend_removed(pool, bid)

    def fail(self, addr: str, n: int = 1, kind: str = "connect") -> None:
        for _ in range(n):
            self.health.on_failure(Failure(1, "web", addr, kind, "connection refused"))

    def succeed(self, addr: str) -> None:
        self.health.on_success(Success(1, "web", addr, 0))


@pytest.fixture
async def passive() -> AsyncIterator[Harness]:
    h = Harness(
        state(
            passive={
                "consecutive_failures": 3,
                "ejection_time": "100ms",
                "max_ejection_time": "300ms",
                "max_ejection_percent": 50,
            }
        )
    )
    h.health.start()
    try:
        yield h
    finally:
        await h.health.stop()


async def test_ejection_reaches_workers_and_expires(
    passive: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO")
    b = passive.state.backend("web", ADDRS[0])
    passive.fail(ADDRS[0], 2)
    passive.succeed(ADDRS[0])  # the count starts over
    passive.fail(ADDRS[0], 2)
    assert passive.sent == []
    passive.fail(ADDRS[0])
    assert passive.sent[-1].ejected is True and b.ejections == 1
    assert "3 consecutive connect failures (connection refused); out for 100ms" in caplog.text
    await asyncio.sleep(0.15)
    # The readmission timer re-sent the backend, now computed as not ejected.
    assert passive.sent[-1].ejected is False and len(passive.sent) == 2
    assert "readmitted: ejection of 100ms ended" in caplog.text


async def test_repeat_ejections_double_up_to_the_cap(passive: Harness) -> None:
    durations = []
    for _ in range(4):
        passive.fail(ADDRS[1], 3)
        b = passive.state.backend("web", ADDRS[1])
        durations.append(round(b.ejected_until - passive.loop.time(), 1))
        await asyncio.sleep(b.ejected_until - passive.loop.time() + 0.02)
        assert not b.ejected(passive.loop.time())
    assert durations == [0.1, 0.2, 0.3, 0.3]


async def test_failures_while_ejected_are_ignored(passive: Harness) -> None:
    passive.fail(ADDRS[0], 3)
    passive.fail(ADDRS[0], 10)
    assert [e.ejected for e in passive.sent] == [True]


async def test_max_ejection_percent_holds_and_is_logged_once(
    passive: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO")
    for addr in ADDRS:
        passive.fail(addr, 4)
    now = passive.loop.time()
    ejected = [a for a in ADDRS if passive.state.backend("web", a).ejected(now)]
    assert ejected == ADDRS[:2]  # 50 % of 4
    assert caplog.text.count(f"web/{ADDRS[2]} not ejected") == 1
    assert "max_ejection_percent = 50 allows 2 of 4 ejected and 2 already are" in caplog.text


async def test_5xx_needs_on_5xx_and_unknown_backends_are_ignored(passive: Harness) -> None:
    passive.fail(ADDRS[0], 5, kind="5xx")
    passive.health.on_failure(Failure(1, "web", "nope", "connect"))
    passive.health.on_failure(Failure(1, "nopool", "x", "connect"))
    assert passive.sent == []


async def test_no_passive_section_no_ejection() -> None:
    h = Harness(state())
    h.health.start()
    h.fail(ADDRS[0], 50)
    assert h.sent == []
    await h.health.stop()


async def test_slow_start_ramps_a_backend_that_comes_up() -> None:
    h = Harness(state(health={}, slow_start="10s"))
    h.health.start()
    try:
        t0 = h.loop.time()
        # Up at its first check after lb started: it was serving already, so no ramp.
        h.state.set_health("web", ADDRS[0], HealthState.UP, "first TCP check passed", now=t0)
        assert h.sent[-1].effective_weight == 10.0 and not h.health.ramps
        # Back from down: it ramps from the floor.
        h.state.set_health("web", ADDRS[0], HealthState.DOWN, "3 failed TCP checks", now=t0)
        h.state.set_health("web", ADDRS[0], HealthState.UP, "2 passed TCP checks", now=t0)
        assert h.sent[-1].effective_weight == pytest.approx(10 * SLOW_START_FLOOR)
        weights = []
        for t in (2.5, 5.0, 7.5, 10.0, 12.0):
            h.health.step_ramps(t0 + t)
            weights.append(round(h.state.backend("web", ADDRS[0]).effective_weight, 2))
        assert weights == [3.25, 5.5, 7.75, 10.0, 10.0]
        assert not h.health.ramps
        # Going down mid-ramp ends it; coming back starts a new one at the floor.
        h.state.set_health("web", ADDRS[0], HealthState.DOWN, "3 failed TCP checks", now=t0)
        h.state.set_health("web", ADDRS[0], HealthState.UP, "2 passed TCP checks", now=t0)
        assert h.state.backend("web", ADDRS[0]).effective_weight == pytest.approx(1.0)
    finally:
        await h.health.stop()


async def test_slow_start_for_runtime_added_backend_without_checks() -> None:
    h = Harness(state(slow_start="10s"))
    h.health.start()
    try:
        # Backends from the config at startup did not "come up": no ramp.
        assert not h.health.ramps
        assert h.state.backend("web", ADDRS[0]).effective_weight == 10.0
        b, _ = h.state.add_backend("web", "127.0.0.1:9005", 10, now=h.loop.time())
        assert b.health is HealthState.UP
        assert h.sent[-1].effective_weight == pytest.approx(10 * SLOW_START_FLOOR)
        assert list(h.health.ramps) == [("web", "127.0.0.1:9005")]
        h.state.remove("web", "127.0.0.1:9005")
        assert not h.health.ramps
    finally:
        await h.health.stop()


async def test_panic_is_logged_on_entry_and_exit(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO")
    h = Harness(state(health={}, panic="route_all"))
    h.health.start()
    try:
        now = h.loop.time()
        h.state.set_health("web", ADDRS[0], HealthState.UP, "x", now=now)
        for a in ADDRS[1:]:
            h.state.set_health("web", a, HealthState.DOWN, "x", now=now)
        assert "panic" not in caplog.text
        h.state.set_health("web", ADDRS[0], HealthState.DOWN, "x", now=now)
        assert (
            "pool web: no eligible backend; panic (route_all): routing to all 4 ready "
            "backend(s) whatever their health" in caplog.text
        )
        h.state.set_health("web", ADDRS[2], HealthState.UP, "x", now=now)
        assert "pool web: 1 eligible backend(s) again; panic over" in caplog.text
        assert caplog.text.count("no eligible backend") == 1
    finally:
        await h.health.stop()
