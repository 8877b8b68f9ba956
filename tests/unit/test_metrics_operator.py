"""Operator experience without sockets: structured log lines (text and JSON), the drain line,
and the banner."""

from __future__ import annotations

import asyncio
import logging
import shlex
from typing import Any

import orjson
import pytest

from lb.cli import banner
from lb.config import Config
from lb.control.drain import DrainTracker
from lb.logs import JsonFormatter, TextFormatter, logfmt_value
from lb.model import AdminState, HealthState
from lb.state import ClusterState, ManagedBackend
from lb.wire import Stats

EVENT = {
    "event": "health_state",
    "pool": "web",
    "backend": "127.0.0.1:9001",
    "from": "up",
    "to": "down",
    "cause": '3 failed HTTP checks (status 503, body "nope")',
}


def record(event: dict[str, object] | None) -> logging.LogRecord:
    rec = logging.LogRecord(
        "lb.state", logging.INFO, __file__, 1, "%s up -> down: %s", ("web/b", "why"), None
    )
    if event is not None:
        rec.event = event
    return rec


def test_text_lines_are_one_line_with_parseable_fields() -> None:
    line = TextFormatter("lb").format(record(EVENT))
    assert "\n" not in line
    assert "lb.state: web/b up -> down: why" in line
    fields = dict(tok.split("=", 1) for tok in shlex.split(line.split(": why ", 1)[1]))
    assert fields == {k: str(v) for k, v in EVENT.items()}


def test_json_lines_carry_the_event_fields() -> None:
    doc = orjson.loads(JsonFormatter("worker 1").format(record(EVENT)))
    assert doc["msg"] == "web/b up -> down: why"
    assert doc["process"] == "worker 1" and doc["level"] == "info"
    assert {k: doc[k] for k in EVENT} == EVENT


@pytest.mark.parametrize(
    ("value", "text"),
    [
        ("up", "up"),
        (3, "3"),
        (True, "True"),
        ("", '""'),
        ("a b", '"a b"'),
        ("k=v", '"k=v"'),
        ('say "hi"', '"say \\"hi\\""'),
        ("line\nbreak", '"line\\nbreak"'),
        (["pool a added", "pool b removed"], '"pool a added; pool b removed"'),
    ],
)
def test_logfmt_values(value: object, text: str) -> None:
    assert logfmt_value(value) == text


def config(admin: str | None) -> Config:
    doc: dict[str, object] = {
        "listeners": [
            {
                "name": "web",
                "bind": "127.0.0.1:8080",
                "mode": "http",
                "pool": "web",
                "routes": [{"path_prefix": "/api", "pool": "api"}],
            }
        ],
        "pools": {
            "web": {"backends": [{"address": "127.0.0.1:9001", "weight": 2}]},
            "api": {"health": {"interval": "1s"}, "backends": [{"address": "127.0.0.1:9101"}]},
        },
    }
    if admin is not None:
        doc["admin"] = {"bind": admin}
    return Config.model_validate(doc)


def test_banner_says_where_to_look() -> None:
    cfg = config("0.0.0.0:9900")
    state = ClusterState(cfg)
    state.add_backend("api", "127.0.0.1:9102")
    state.set_health("api", "127.0.0.1:9101", HealthState.UP, "test", now=1.0)
    state.set_admin("api", "127.0.0.1:9101", AdminState.DRAIN)
    text = banner(cfg, "/etc/lb/config.toml", state)
    lines = text.splitlines()
    assert lines[0].startswith("lb: running /etc/lb/config.toml with 1 worker")
    assert "  listener web: http://127.0.0.1:8080 -> pool web (routes also to api)" in lines
    assert "  pool web [round_robin]: 127.0.0.1:9001 (w=2, up)" in lines
    # Runtime backends and states come from the running state, not the file.
    assert (
        "  pool api [round_robin]: 127.0.0.1:9101 (w=1, up, drain), 127.0.0.1:9102 (w=1, checking)"
        in lines
    )
    assert "  control socket: /etc/lb/run/lb.sock (lbctl -c /etc/lb/config.toml)" in lines
    assert "  dashboard: http://127.0.0.1:9900/" in lines
    assert any(line.startswith("  metrics: http://127.0.0.1:9900/metrics") for line in lines)


def test_banner_without_admin_listener_says_how_to_turn_it_on() -> None:
    text = banner(config(None), "config.toml")
    assert 'dashboard and /metrics: off (set [admin] bind = "127.0.0.1:9900")' in text
    assert "  pool web [round_robin]: 127.0.0.1:9001 (w=2)" in text.splitlines()


async def test_a_completed_drain_is_one_log_line(caplog: pytest.LogCaptureFixture) -> None:
    loop = asyncio.get_running_loop()

    def snap(seq: int, active: int) -> Stats:
        pools: Any = {"p": {"b": {"active": active}}}
        return Stats(worker=1, seq=seq, pools=pools)

    snaps = [snap(0, 1)]
    tracker = DrainTracker(loop, lambda: snaps, lambda pool: 30.0, lambda pool, bid: None)
    b = ManagedBackend("p", "127.0.0.1:9001", 1, id="b")
    b.admin = AdminState.DRAIN
    caplog.set_level(logging.INFO, logger="lb.drain")
    tracker.backend_changed("p", b, seq=1)
    tracker.stats_updated()  # the worker has not applied the drain yet
    snaps[0] = snap(1, 1)
    tracker.stats_updated()  # one request still in flight
    assert not [r for r in caplog.records if "drained" in r.getMessage()]
    snaps[0] = snap(2, 0)
    tracker.stats_updated()
    tracker.stats_updated()
    lines = [r for r in caplog.records if getattr(r, "event", {}).get("event") == "drained"]
    assert len(lines) == 1
    event = dict(lines[0].event)
    assert event.pop("seconds") >= 0
    assert event == {"event": "drained", "pool": "p", "backend": "127.0.0.1:9001", "forced": False}
    tracker.close()
