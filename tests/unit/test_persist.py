"""State file: the merge rules between config.toml and runtime changes, and atomic writes."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from lb import persist
from lb.config import Config, parse_config
from lb.model import AdminState, HealthState
from lb.state import ClusterState


def config(backends: list[dict[str, Any]] | None = None, **pools: Any) -> Config:
    default = [{"address": "127.0.0.1:9001"}, {"address": "127.0.0.1:9002", "weight": 2}]
    return parse_config(
        {
            "listeners": [{"name": "l", "bind": "127.0.0.1:8000", "pool": "web"}],
            "pools": {"web": {"backends": default if backends is None else backends}, **pools},
        }
    )


def restart(cfg: Config, saved: persist.SavedState) -> ClusterState:
    """What a fresh lb builds from ``cfg`` and the state file."""
    st = ClusterState(cfg)
    st.apply_config(cfg, persist.merge(cfg, saved), now=0.0)
    return st


def shape(st: ClusterState) -> dict[str, list[tuple[str, str, int, str, bool]]]:
    return {
        name: [(b.id, b.address, b.weight, b.admin.value, b.dynamic) for b in bs.values()]
        for name, bs in st.pools.items()
    }


def test_runtime_changes_survive_a_restart() -> None:
    cfg = config()
    st = ClusterState(cfg)
    st.add_backend("web", "127.0.0.1:9003", 3, id="b3", metadata={"owner": "scaler"})
    st.set_weight("web", "127.0.0.1:9001", 7)
    st.set_admin("web", "127.0.0.1:9002", AdminState.DRAIN)
    saved = persist.dump(cfg, st)
    again = restart(cfg, persist.SavedState.model_validate_json(persist.encode(saved)))
    assert shape(again) == shape(st)
    assert again.pools["web"]["b3"].metadata == {"owner": "scaler"}


def test_health_is_not_persisted() -> None:
    cfg = config()
    st = ClusterState(cfg)
    st.set_health("web", "127.0.0.1:9001", HealthState.DOWN, "test", now=1.0)
    again = restart(cfg, persist.dump(cfg, st))
    assert again.pools["web"]["127.0.0.1:9001"].health is HealthState.UP


def test_config_backend_removed_at_runtime_stays_removed() -> None:
    cfg = config()
    st = ClusterState(cfg)
    st.remove("web", "127.0.0.1:9001")
    saved = persist.dump(cfg, st)
    assert [r.id for r in saved.pools["web"].removed] == ["127.0.0.1:9001"]
    assert list(restart(cfg, saved).pools["web"]) == ["127.0.0.1:9002"]


def test_weight_edited_in_the_file_since_wins() -> None:
    cfg = config()
    st = ClusterState(cfg)
    st.set_weight("web", "127.0.0.1:9002", 9)
    saved = persist.dump(cfg, st)
    edited = config([{"address": "127.0.0.1:9001"}, {"address": "127.0.0.1:9002", "weight": 4}])
    assert restart(edited, saved).pools["web"]["127.0.0.1:9002"].weight == 4
    # Unedited: the runtime weight stays.
    assert restart(cfg, saved).pools["web"]["127.0.0.1:9002"].weight == 9


def test_file_dropping_a_backend_or_pool_is_obeyed() -> None:
    cfg = config(other={"backends": [{"address": "127.0.0.1:9100"}]})
    st = ClusterState(cfg)
    st.add_backend("other", "127.0.0.1:9101")
    st.add_backend("web", "127.0.0.1:9003")
    saved = persist.dump(cfg, st)
    smaller = config([{"address": "127.0.0.1:9002", "weight": 2}])
    again = restart(smaller, saved)
    assert set(again.pools) == {"web"}
    assert list(again.pools["web"]) == ["127.0.0.1:9002", "127.0.0.1:9003"]


def test_runtime_backend_now_declared_is_taken_over_by_the_file() -> None:
    cfg = config()
    st = ClusterState(cfg)
    st.add_backend("web", "127.0.0.1:9003", 5)
    st.set_admin("web", "127.0.0.1:9003", AdminState.MAINT)
    saved = persist.dump(cfg, st)
    declared = config([{"address": "127.0.0.1:9001"}, {"address": "127.0.0.1:9003", "weight": 1}])
    b = restart(declared, saved).pools["web"]["127.0.0.1:9003"]
    assert (b.weight, b.admin, b.dynamic) == (1, AdminState.MAINT, False)


def test_reload_keeps_health_of_kept_backends_and_reports_changes() -> None:
    cfg = config()
    st = ClusterState(cfg)
    st.set_health("web", "127.0.0.1:9001", HealthState.DOWN, "test", now=1.0)
    st.add_backend("web", "127.0.0.1:9003")
    events: list[tuple[str, str]] = []
    st.on_change = lambda pool, b: events.append(("change", b.id))
    st.on_remove = lambda pool, bid: events.append(("remove", bid))
    new = config([{"address": "127.0.0.1:9001"}], extra={"backends": []})
    changes = st.apply_config(new, persist.merge(new, persist.dump(cfg, st)), now=2.0)
    assert ("remove", "127.0.0.1:9002") in events
    assert "pool extra added" in changes and "backend web/127.0.0.1:9002 removed" in changes
    assert list(st.pools["web"]) == ["127.0.0.1:9001", "127.0.0.1:9003"]
    # Health of a kept backend is observed state, not config: a reload leaves it.
    # (Without health checks configured it is brought back up.)
    assert st.pools["web"]["127.0.0.1:9001"].health is HealthState.UP


def test_write_atomic_and_read_back(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "state.json"
    assert persist.read(path) is None
    cfg = config()
    st = ClusterState(cfg)
    st.add_backend("web", "127.0.0.1:9003")
    persist.write_atomic(path, persist.encode(persist.dump(cfg, st)))
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    saved = persist.read(path)
    assert saved is not None and [b.id for b in saved.pools["web"].backends][-1] == (
        "127.0.0.1:9003"
    )
    assert [p.name for p in path.parent.iterdir()] == ["state.json"]  # no temp file left


@pytest.mark.parametrize("content", [b"{not json", b'{"version": 99}', b'{"pools": 3}'])
def test_bad_state_file_is_refused_with_its_path(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "state.json"
    path.write_bytes(content)
    with pytest.raises(persist.StateFileError, match=str(path)):
        persist.read(path)
    with pytest.raises(persist.StateFileError) as ei:
        persist.read(path)
    t0 = time.time()
    gone = persist.discard(path, ei.value)
    assert not path.exists() and gone.moved_to.read_bytes() == content
    assert gone.moved_to.name.startswith("state.json.bad-") and gone.error == str(ei.value)
    assert t0 <= gone.at <= time.time()


async def test_persister_coalesces_bursts_and_flush_waits(tmp_path: Path) -> None:
    cfg = config()
    st = ClusterState(cfg)
    path = tmp_path / "state.json"
    p = persist.Persister(path, lambda: persist.dump(cfg, st))
    for i in range(50):
        st.add_backend("web", f"127.0.0.1:{10000 + i}")
        p.request()
    await p.flush()
    saved = persist.read(path)
    assert saved is not None and len(saved.pools["web"].backends) == 52
    assert p.writes <= 3  # 50 changes, a handful of writes
    before = p.writes
    await p.flush()  # nothing changed: nothing written
    assert p.writes == before
    await p.close()


async def test_persister_reports_write_errors(tmp_path: Path) -> None:
    cfg = config()
    st = ClusterState(cfg)
    blocker = tmp_path / "file"
    blocker.write_text("")
    p = persist.Persister(blocker / "state.json", lambda: persist.dump(cfg, st))
    with pytest.raises(OSError):
        await p.flush()
    assert p.error is not None and "state.json" in p.error
    await p.close()
