"""Health writes through ClusterState, and the worker side: panic picks and success reports."""

from __future__ import annotations

from typing import Any

import pytest

from lb.config import parse_config
from lb.control.plane import backend_entry
from lb.health_rules import SLOW_START_FLOOR
from lb.model import AdminState, Backend, HealthState
from lb.proxy.pool import PoolRuntime
from lb.state import ClusterState, StateError
from lb.wire import BackendEntry


def config(**pool: Any) -> Any:
    return parse_config(
        {
            "listeners": [{"name": "l", "bind": "127.0.0.1:8000", "pool": "web"}],
            "pools": {
                "web": {
                    "backends": [{"address": "127.0.0.1:9001", "weight": 4}],
                    **pool,
                }
            },
        }
    )


def make(**pool: Any) -> tuple[ClusterState, list[BackendEntry]]:
    st = ClusterState(config(**pool), now=0.0)
    sent: list[BackendEntry] = []
    st.on_change = lambda _pool, b: sent.append(backend_entry(b, 5.0))
    return st, sent


B = "127.0.0.1:9001"


def test_initial_health_follows_the_health_section() -> None:
    assert make()[0].backend("web", B).health is HealthState.UP
    st, _ = make(health={})
    assert st.backend("web", B).health is HealthState.CHECKING
    b, _created = st.add_backend("web", "127.0.0.1:9002")
    assert b.health is HealthState.CHECKING


def test_record_check_keeps_streaks_and_last_check_quietly() -> None:
    st, sent = make(health={})
    st.record_check("web", B, False, "connection refused")
    st.record_check("web", B, False, "connection refused")
    b = st.backend("web", B)
    assert (b.checks_passed, b.checks_failed, b.last_check) == (0, 2, "connection refused")
    st.record_check("web", B, True, "HTTP 200 in 1ms")
    assert (b.checks_passed, b.checks_failed) == (1, 0)
    assert sent == []  # workers do not need check details


def test_coming_up_with_slow_start_starts_at_the_floor() -> None:
    st, sent = make(health={}, slow_start="30s")
    st.set_health("web", B, HealthState.UP, "first TCP check passed", now=1.0)
    assert sent[-1].effective_weight == pytest.approx(4 * SLOW_START_FLOOR)
    assert sent[-1].health == "up"


def test_coming_up_without_slow_start_keeps_the_weight() -> None:
    st, sent = make(health={})
    st.set_health("web", B, HealthState.UP, "first TCP check passed", now=1.0)
    assert sent[-1].effective_weight == 4.0


def test_set_effective_weight_clamps_and_notifies_on_change_only() -> None:
    st, sent = make()
    st.set_effective_weight("web", B, 2.5)
    st.set_effective_weight("web", B, 2.5)
    st.set_effective_weight("web", B, 99)
    st.set_effective_weight("web", B, -1)
    assert [e.effective_weight for e in sent] == [2.5, 4.0, 0.0]


def test_eject_and_readmit(caplog: pytest.LogCaptureFixture) -> None:
    st, sent = make()
    caplog.set_level("INFO", logger="lb.state")
    st.eject("web", B, until=10.0, ejections=1, cause="3 consecutive connect failures", now=2.0)
    assert sent[-1].ejected is True  # sent at t=5, before the deadline
    b = st.backend("web", B)
    assert b.ejected(9.9) and not b.ejected(10.0)
    st.readmit("web", B, "ejection of 8s ended", now=9.999)
    assert not b.ejected(9.999)  # a timer that fires a hair early still readmits
    assert b.ejected_until == 9.999
    assert "web/127.0.0.1:9001 ejected: 3 consecutive connect failures" in caplog.text
    assert "web/127.0.0.1:9001 readmitted: ejection of 8s ended" in caplog.text
    with pytest.raises(StateError):
        st.eject("web", B, until=1.0, ejections=1, cause="x", now=2.0)


# -- the worker side ----------------------------------------------------------------------


def entry(i: int, **kw: Any) -> BackendEntry:
    fields = {
        "id": f"b{i}",
        "address": f"127.0.0.1:{9000 + i}",
        "weight": 1,
        "effective_weight": 1.0,
        "admin": "ready",
        "health": "up",
        "ejected": False,
        **kw,
    }
    return BackendEntry(
        **{**fields, "admin": AdminState(fields["admin"]), "health": HealthState(fields["health"])}
    )


def runtime(panic: str, entries: list[BackendEntry]) -> PoolRuntime:
    pool = PoolRuntime("web", config(panic=panic).pools["web"])
    pool.apply_snapshot(entries)
    return pool


def test_503_panic_picks_nothing() -> None:
    pool = runtime("503", [entry(1, health="down"), entry(2, ejected=True)])
    assert pool.pick(None) is None


def test_route_all_panic_rotates_over_ready_backends() -> None:
    pool = runtime(
        "route_all",
        [
            entry(1, health="down"),
            entry(2, ejected=True),
            entry(3, health="checking"),
            entry(4, health="down", admin="drain"),  # the operator said no: still no
            entry(5, health="down", weight=0, effective_weight=0.0),
        ],
    )
    picks = [pool.pick(None) for _ in range(6)]
    assert {b.id for b in picks if b is not None} == {"b1", "b2", "b3"}
    tried = [pool.backends["b1"], pool.backends["b2"]]
    assert {pool.pick(None, tried).id for _ in range(3)} == {"b3"}  # type: ignore[union-attr]
    assert pool.pick(None, [*tried, pool.backends["b3"]]) is None


def test_no_panic_while_something_is_eligible() -> None:
    pool = runtime("route_all", [entry(1), entry(2, health="down")])
    assert {pool.pick(None).id for _ in range(4)} == {"b1"}  # type: ignore[union-attr]
    # All eligible ones tried (a retry): no panic fallback to the down one.
    assert pool.pick(None, [pool.backends["b1"]]) is None


def test_success_after_failure_is_reported_once() -> None:
    pool = runtime("503", [entry(1)])
    reports: list[tuple[str, str, int]] = []
    pool.on_success = lambda name, b, n: reports.append((name, b.id, n))
    b = pool.backends["b1"]
    b.failure_streak = 3  # the worker counted three reported failures
    if b.failure_streak:  # what a proxy does after a success
        pool.note_success(b)
    if b.failure_streak:
        pool.note_success(b)
    assert reports == [("web", "b1", 3)] and b.failure_streak == 0


def test_backend_failure_streak_starts_at_zero() -> None:
    assert Backend("127.0.0.1:1").failure_streak == 0


def test_a_retry_goes_back_to_a_tried_backend_only_when_no_other_is_eligible() -> None:
    pool = runtime("503", [entry(1), entry(2), entry(3, health="down")])
    b1, b2 = pool.backends["b1"], pool.backends["b2"]
    # Another eligible backend first.
    assert {pool.pick_retry(None, [b1]) for _ in range(4)} == {b2}
    # All eligible ones tried: the one tried longest ago, never the down one.
    assert pool.pick_retry(None, [b1, b2]) is b1
    assert pool.pick_retry(None, [b2, b1]) is b2
    single = runtime("503", [entry(1)])
    only = single.backends["b1"]
    assert single.pick_retry(None, [only]) is only
    only.health = HealthState.DOWN
    assert single.pick_retry(None, [only]) is None
