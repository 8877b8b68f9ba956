"""Config validation: good files load, bad ones name the file, the field, the value and the fix."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from lb.config import ConfigError, load_config, parse_config, parse_duration
from tests.helpers import to_toml

ROOT = Path(__file__).resolve().parents[2]


def base() -> dict[str, Any]:
    return {
        "listeners": [{"name": "l", "bind": "127.0.0.1:8000", "pool": "web"}],
        "pools": {"web": {"backends": [{"address": "127.0.0.1:9001"}]}},
    }


def error_for(cfg: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as ei:
        parse_config(cfg, "conf.toml")
    return str(ei.value)


def test_shipped_config_is_valid() -> None:
    cfg = load_config(ROOT / "config.toml")
    assert cfg.listeners[0].bind.startswith("127.0.0.1:")


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("2s", 2.0), ("150ms", 0.15), ("1m", 60.0), ("500us", 0.0005), ("1.5h", 5400.0), (3, 3.0)],
)
def test_durations(text: str | int, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    "bad", ["2", "fast", "-1s", "1d", True, -2, float("inf"), float("nan"), "597h", 2_147_484]
)
def test_bad_durations(bad: object) -> None:
    with pytest.raises(ValueError):
        parse_duration(bad)


def test_the_longest_duration_is_haproxys() -> None:
    assert parse_duration("596h") == 596 * 3600.0
    assert parse_duration(2_147_483.647) == 2_147_483.647


def test_negative_weight_names_the_field() -> None:
    cfg = base()
    cfg["pools"]["web"]["backends"].append({"address": "127.0.0.1:9002", "weight": -1})
    msg = error_for(cfg)
    assert msg.startswith("conf.toml:")
    assert "pools.web.backends[1].weight: -1 is invalid" in msg
    assert "greater than or equal to 0" in msg


def test_unknown_field_is_a_typo() -> None:
    cfg = base()
    cfg["pools"]["web"]["stratgy"] = "weighted"
    msg = error_for(cfg)
    assert "pools.web.stratgy: unknown field; remove it or check its spelling" in msg


def test_unknown_strategy_lists_valid_ones() -> None:
    cfg = base()
    cfg["pools"]["web"]["strategy"] = "fastest"
    msg = error_for(cfg)
    assert "pools.web.strategy: 'fastest' is invalid" in msg
    assert "round_robin" in msg and "consistent_hash" in msg


def test_listener_pool_must_exist() -> None:
    cfg = base()
    cfg["listeners"][0]["pool"] = "api"
    msg = error_for(cfg)
    assert "listeners[0].pool: 'api' is invalid: no such pool; defined pools: web" in msg


def test_bad_address() -> None:
    cfg = base()
    cfg["pools"]["web"]["backends"][0]["address"] = "localhost"
    assert "pools.web.backends[0].address: 'localhost' is invalid" in error_for(cfg)


def test_bad_duration_names_field() -> None:
    cfg = base()
    cfg["listeners"][0]["connect_timeout"] = "soon"
    msg = error_for(cfg)
    assert "listeners[0].connect_timeout: 'soon' is invalid" in msg
    assert '"150ms"' in msg


def test_missing_required_field() -> None:
    cfg = base()
    del cfg["listeners"][0]["bind"]
    assert "listeners[0].bind: required field is missing; add it" in error_for(cfg)


def test_workers_auto_and_range() -> None:
    cfg = base()
    cfg["lb"] = {"workers": "auto"}
    assert parse_config(cfg).lb.worker_count >= 1
    cfg["lb"] = {"workers": -1}
    assert "lb.workers" in error_for(cfg)


def test_tcp_listener_cannot_hash_on_header() -> None:
    cfg = base()
    cfg["pools"]["web"].update(strategy="consistent_hash", hash_key="header:X-User")
    msg = error_for(cfg)
    assert "pools.web.hash_key" in msg and "source_ip" in msg


def test_duplicate_backend_names_the_item_not_the_whole_pool() -> None:
    cfg = base()
    cfg["pools"]["web"]["backends"] += [
        {"address": "127.0.0.1:9002"},
        {"address": "127.0.0.1:9001", "weight": 3},
    ]
    msg = error_for(cfg)
    line = msg.splitlines()[1]
    assert line.startswith("  pools.web.backends[2].address: '127.0.0.1:9001' is invalid: "), msg
    assert "listed twice" in line and "backends[0]" in line and "id" in line
    assert "{" not in msg and "9002" not in msg  # the item, not the pool as a dict


def test_duplicate_backend_id_names_the_id() -> None:
    cfg = base()
    cfg["pools"]["web"]["backends"] = [
        {"address": "127.0.0.1:9001", "id": "a"},
        {"address": "127.0.0.1:9002", "id": "a"},
    ]
    msg = error_for(cfg)
    assert "  pools.web.backends[1].id: 'a' is invalid: listed twice" in msg, msg
    assert "{" not in msg


def test_unreadable_and_invalid_toml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[lb\nworkers = 1\n")
    with pytest.raises(ConfigError, match=r"bad\.toml: not valid TOML"):
        load_config(bad)


def test_round_trip_through_test_writer(tmp_path: Path) -> None:
    p = tmp_path / "c.toml"
    p.write_text(to_toml(base()))
    assert load_config(p).pools["web"].backends[0].address == "127.0.0.1:9001"


@pytest.mark.parametrize(
    ("first", "second", "refused"),
    [
        ("127.0.0.1:8080", "127.0.0.1:8080", True),
        ("0.0.0.0:8080", "127.0.0.1:8080", True),
        ("127.0.0.2:8080", "0.0.0.0:8080", True),
        ("[::]:8080", "127.0.0.1:8080", True),  # dual-stack on Linux
        ("[::1]:8080", "[::]:8080", True),
        ("0.0.0.0:8080", "[::1]:8080", False),
        ("127.0.0.1:8080", "127.0.0.2:8080", False),
        ("0.0.0.0:8080", "0.0.0.0:8081", False),
    ],
)
def test_listeners_that_would_share_connections_are_refused(
    first: str, second: str, refused: bool
) -> None:
    cfg = base()
    cfg["listeners"] = [
        {"name": "a", "bind": first, "pool": "web"},
        {"name": "b", "bind": second, "pool": "web"},
    ]
    if not refused:
        parse_config(cfg, "conf.toml")
        return
    with pytest.raises(ConfigError) as ei:
        parse_config(cfg, "conf.toml")
    assert "listeners[1].bind" in str(ei.value)
