"""ClusterState: validated, all-or-nothing changes, and change notifications."""

from __future__ import annotations

import pytest

from lb.config import parse_config
from lb.model import AdminState, HealthState, IllegalTransition
from lb.state import ClusterState, StateError


def make() -> tuple[ClusterState, list[tuple[str, str]]]:
    cfg = parse_config(
        {
            "listeners": [{"name": "l", "bind": "127.0.0.1:8000", "pool": "web"}],
            "pools": {"web": {"backends": [{"address": "127.0.0.1:9001"}]}},
        }
    )
    st = ClusterState(cfg)
    events: list[tuple[str, str]] = []
    st.on_change = lambda pool, b: events.append(("change", b.id))
    st.on_remove = lambda pool, bid: events.append(("remove", bid))
    return st, events


def test_add_is_idempotent_for_same_address() -> None:
    st, events = make()
    b, created = st.add_backend("web", "127.0.0.1:9002", 3)
    assert created and b.dynamic and b.weight == 3
    b2, created2 = st.add_backend("web", "127.0.0.1:9002", 3)
    assert b2 is b and not created2
    assert events == [("change", "127.0.0.1:9002")]


def test_same_id_other_address_conflicts() -> None:
    st, events = make()
    st.add_backend("web", "127.0.0.1:9002", id="a")
    with pytest.raises(StateError) as ei:
        st.add_backend("web", "127.0.0.1:9003", id="a")
    assert ei.value.status == 409 and ei.value.field == "id"
    assert len(st.pools["web"]) == 2
    assert events == [("change", "a")]


@pytest.mark.parametrize(
    ("args", "field"),
    [
        (("nopool", "127.0.0.1:1", 1), "pool"),
        (("web", "nonsense", 1), "address"),
        (("web", "127.0.0.1:99999", 1), "address"),
        (("web", "127.0.0.1:9005", -1), "weight"),
    ],
)
def test_bad_add_changes_nothing(args: tuple[str, str, int], field: str) -> None:
    st, events = make()
    with pytest.raises(StateError) as ei:
        st.add_backend(*args)
    assert ei.value.field == field
    assert list(st.pools["web"]) == ["127.0.0.1:9001"] and events == []


def test_admin_and_health_changes_notify_once() -> None:
    st, events = make()
    st.set_admin("web", "127.0.0.1:9001", AdminState.DRAIN)
    st.set_admin("web", "127.0.0.1:9001", AdminState.DRAIN)
    st.set_health("web", "127.0.0.1:9001", HealthState.DOWN, "test", now=1.0)
    assert events == [("change", "127.0.0.1:9001")] * 2
    with pytest.raises(IllegalTransition):
        st.set_health("web", "127.0.0.1:9001", HealthState.CHECKING, "test", now=2.0)


def test_remove_and_lookup_by_address() -> None:
    st, events = make()
    st.add_backend("web", "127.0.0.1:9002", id="b2")
    assert st.backend("web", "127.0.0.1:9002").id == "b2"
    st.remove("web", "b2")
    assert events[-1] == ("remove", "b2")
    with pytest.raises(StateError) as ei:
        st.backend("web", "b2")
    assert ei.value.status == 404
