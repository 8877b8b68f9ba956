"""``[pools.NAME.health]``, ``[pools.NAME.passive]`` and ``panic``: defaults and errors."""

from __future__ import annotations

from typing import Any

import pytest

from lb.config import Config, ConfigError, parse_config


def cfg(**pool: Any) -> dict[str, Any]:
    return {
        "listeners": [{"name": "l", "bind": "127.0.0.1:8000", "pool": "web"}],
        "pools": {"web": {"backends": [{"address": "127.0.0.1:9001"}], **pool}},
    }


def error_for(data: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as ei:
        parse_config(data, "conf.toml")
    return str(ei.value)


def test_no_sections_means_no_checks_and_503() -> None:
    pool = parse_config(cfg()).pools["web"]
    assert pool.health is None and pool.passive is None and pool.panic == "503"


def test_health_defaults() -> None:
    h = parse_config(cfg(health={})).pools["web"].health
    assert h is not None
    assert (h.type, h.interval, h.timeout, h.fast_interval) == ("tcp", 2.0, 1.0, 2.0)
    assert (h.rise, h.fall, h.jitter) == (2, 3, 0.1)
    assert (h.method, h.path, h.host, h.expect_status, h.expect_body) == (
        "GET",
        "/",
        None,
        "200-399",
        None,
    )


def test_timeout_and_fast_interval_follow_a_short_interval() -> None:
    h = parse_config(cfg(health={"interval": "300ms"})).pools["web"].health
    assert h is not None and h.timeout == 0.3 and h.fast_interval == 0.3
    h = parse_config(cfg(health={"interval": "5s"})).pools["web"].health
    assert h is not None and h.timeout == 1.0 and h.fast_interval == 5.0


def test_full_http_section() -> None:
    h = (
        parse_config(
            cfg(
                health={
                    "type": "http",
                    "interval": "1s",
                    "timeout": "250ms",
                    "fast_interval": "200ms",
                    "rise": 1,
                    "fall": 2,
                    "jitter": 0.2,
                    "method": "HEAD",
                    "path": "/healthz?full=1",
                    "host": "app.local",
                    "expect_status": "200,204",
                }
            )
        )
        .pools["web"]
        .health
    )
    assert h is not None and h.method == "HEAD" and h.timeout == 0.25


def test_passive_defaults_and_cap_follows_a_long_base() -> None:
    p = parse_config(cfg(passive={})).pools["web"].passive
    assert p is not None
    assert (p.consecutive_failures, p.ejection_time, p.max_ejection_time) == (5, 30.0, 300.0)
    assert (p.max_ejection_percent, p.on_5xx) == (50, False)
    p = parse_config(cfg(passive={"ejection_time": "10m"})).pools["web"].passive
    assert p is not None and p.max_ejection_time == 600.0


@pytest.mark.parametrize("panic", ["503", 503, "route_all"])
def test_panic_values(panic: object) -> None:
    assert parse_config(cfg(panic=panic)).pools["web"].panic == str(panic)


@pytest.mark.parametrize(
    ("pool", "expected"),
    [
        (
            {"health": {"interval": "1s", "timeout": "2s"}},
            "pools.web.health.timeout: '2s' is invalid: must not exceed interval (1s): "
            "a check must end before the next one is due; lower it or raise interval",
        ),
        (
            {"health": {"interval": "1s", "fast_interval": "3s"}},
            "pools.web.health.fast_interval: '3s' is invalid: must not exceed interval (1s)",
        ),
        (
            {"health": {"path": "/healthz"}},
            "pools.web.health.path: '/healthz' is invalid: only applies to type = \"http\"; "
            'remove it or set type = "http"',
        ),
        (
            {"health": {"type": "http", "path": "healthz"}},
            "pools.web.health.path: 'healthz' is invalid: a path starting with \"/\"",
        ),
        (
            {"health": {"type": "http", "expect_status": "ok"}},
            "pools.web.health.expect_status: 'ok' is invalid: 'ok' is not a status; "
            'use a status, a range, a class or a list, e.g. "200", "200-399"',
        ),
        (
            {"health": {"type": "http", "method": "get"}},
            "pools.web.health.method: 'get' is invalid: an HTTP method in capitals",
        ),
        (
            {"health": {"type": "http", "method": "HEAD", "expect_body": "ok"}},
            "pools.web.health.expect_body: 'ok' is invalid: a HEAD response has no body",
        ),
        (
            {"health": {"type": "udp"}},
            "pools.web.health.type: 'udp' is invalid",
        ),
        (
            {"health": {"rise": 0}},
            "pools.web.health.rise: 0 is invalid: Input should be greater than or equal to 1",
        ),
        (
            {"health": {"jitter": "100ms"}},
            "pools.web.health.jitter: '100ms' is invalid: jitter is a fraction of the interval",
        ),
        (
            {"health": {"jitter": 0.9}},
            "pools.web.health.jitter: 0.9 is invalid: Input should be less than or equal to 0.5",
        ),
        (
            {"health": {"interval": "soon"}},
            "pools.web.health.interval: 'soon' is invalid: a duration such as",
        ),
        (
            {"health": {"intervall": "1s"}},
            "pools.web.health.intervall: unknown field; remove it or check its spelling",
        ),
        (
            {"passive": {"ejection_time": "10s", "max_ejection_time": "5s"}},
            "pools.web.passive.max_ejection_time: '5s' is invalid: must be at least "
            "ejection_time (10s)",
        ),
        (
            {"passive": {"max_ejection_percent": 150}},
            "pools.web.passive.max_ejection_percent: 150 is invalid",
        ),
        (
            {"passive": {"consecutive_failures": 0}},
            "pools.web.passive.consecutive_failures: 0 is invalid",
        ),
        (
            {"panic": "drop"},
            "pools.web.panic: 'drop' is invalid: Input should be '503' or 'route_all'",
        ),
    ],
)
def test_errors_name_the_field_and_the_fix(pool: dict[str, Any], expected: str) -> None:
    msg = error_for(cfg(**pool))
    assert msg.startswith("conf.toml:")
    assert expected in msg, msg


def test_round_trip_to_workers() -> None:
    """Workers re-validate the supervisor's dump: derived defaults must survive it."""
    c = parse_config(
        cfg(
            health={"type": "http", "interval": "300ms", "path": "/healthz"},
            passive={"ejection_time": "1s"},
            panic="route_all",
        )
    )
    again = Config.model_validate(c.model_dump(mode="json"))
    assert again == c
    c = parse_config(cfg(health={"interval": "300ms"}))  # tcp: the http fields at defaults
    assert Config.model_validate(c.model_dump(mode="json")) == c
