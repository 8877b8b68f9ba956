"""``[[scalers]]``: defaults, and errors that name the field and the fix, from both ``lb``
(which checks the section but ignores it) and ``lb-scaler``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from lb.config import ConfigError, load_config, parse_config
from scaler.cli import main as scaler_main
from scaler.config import parse_memory, parse_port_range, scalers_of

ROOT = Path(__file__).resolve().parents[2]


def config(*scalers: dict[str, Any], pools: tuple[str, ...] = ("web",)) -> dict[str, Any]:
    return {
        "listeners": [{"name": "web", "bind": "127.0.0.1:8080", "mode": "http", "pool": "web"}],
        "pools": {p: {} for p in pools},
        "scalers": list(scalers),
    }


def entry(**kw: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "pool": "web",
        "max": 5,
        "target": 20,
        "process": {"command": "{python} -m lb.demo_server --port {port}"},
    }
    base.update(kw)
    return base


def error_of(data: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(data, "config.toml")
    return str(info.value)


def test_lb_accepts_a_config_with_scalers_and_keeps_them_as_tables() -> None:
    cfg = parse_config(config(entry()))
    assert cfg.scalers[0]["pool"] == "web"
    (sc,) = scalers_of(cfg)
    assert (sc.provider, sc.min, sc.max, sc.metric, sc.target) == (
        "process",
        1,
        5,
        "inflight_per_backend",
        20.0,
    )
    assert (sc.interval, sc.scale_up_stabilization, sc.scale_down_stabilization) == (5, 0, 300)
    # The HPA's default step limits when none is set.
    assert (sc.max_add, sc.max_add_percent, sc.max_remove, sc.max_remove_percent) == (
        4,
        100.0,
        None,
        100.0,
    )


def test_min_zero_scale_to_zero_and_panic_settings() -> None:
    (sc,) = scalers_of(parse_config(config(entry())))
    assert (sc.scale_to_zero_after, sc.panic_window, sc.panic_threshold) == (60.0, 6.0, 2.0)
    e = entry(min=0, scale_to_zero_after="3s", panic_window="0s", panic_threshold=3)
    (sc,) = scalers_of(parse_config(config(e)))
    assert (sc.min, sc.scale_to_zero_after, sc.panic_window, sc.panic_threshold) == (
        0,
        3.0,
        0.0,
        3.0,
    )


def test_setting_one_step_limit_turns_off_the_default_of_that_direction() -> None:
    (sc,) = scalers_of(parse_config(config(entry(max_add=2, max_remove=1))))
    assert (sc.max_add, sc.max_add_percent, sc.max_remove, sc.max_remove_percent) == (
        2,
        None,
        1,
        None,
    )


def test_durations_and_docker_settings() -> None:
    docker = {
        "image": "lbtest/busybox:1",
        "command": "busybox httpd -f -p 127.0.0.1:{port} -h /www",
        "memory": "64m",
        "cpus": 0.5,
        "labels": {"team": "edge"},
    }
    data = config(
        entry(provider="docker", process=None, docker=docker, interval="500ms", period="1m")
    )
    del data["scalers"][0]["process"]
    (sc,) = scalers_of(parse_config(data))
    assert sc.interval == 0.5 and sc.period == 60
    assert sc.docker is not None
    assert sc.docker.memory == 64 * 1024 * 1024 and sc.docker.network_mode == "host"


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"max": 0}, "scalers[0].max: 0 is invalid: Input should be greater than or equal to 1"),
        ({"min": 3, "max": 2}, "scalers[0].max: 2 is invalid: must be at least min (3)"),
        ({"maxx": 3}, "scalers[0].maxx: unknown field; remove it or check its spelling"),
        ({"target": None}, "scalers[0].target: required field is missing; add it"),
        ({"metric": "cpu"}, "scalers[0].metric: 'cpu' is invalid: Input should be"),
        ({"interval": "5 parsecs"}, "scalers[0].interval: '5 parsecs' is invalid: a duration"),
        ({"pool": "api"}, "scalers[0].pool: 'api' is invalid: no such pool; defined pools: web"),
        (
            {"process": {"command": "{python} -m lb.demo_server --port {prot}"}},
            "scalers[0].process.command: '{python} -m lb.demo_server --port {prot}' is invalid: "
            "unknown placeholder {prot}; the placeholders are {host}, {pool}, {port}, {python}",
        ),
        (
            {"process": {"command": "no-such-program-xyz {port}"}},
            "'no-such-program-xyz' is not on PATH; give its full path or install it",
        ),
        (
            {"process": {"command": "/bin/true {port}", "port_range": "9100-9102"}},
            "scalers[0].process.port_range: '9100-9102' is invalid: 3 port(s) but max = 5",
        ),
        (
            {"process": {"command": "/bin/true {port}", "port_range": "9200-9100"}},
            "scalers[0].process.port_range: '9200-9100' is invalid: a port range such as",
        ),
        ({"process": None}, 'provider = "process" needs [scalers.process] with a command'),
        (
            {"docker": {"image": "x"}},
            "scalers[0].docker: {'image': 'x'} is invalid: only applies to provider = \"docker\"",
        ),
        (
            {"backoff": "10s", "backoff_max": "5s"},
            "scalers[0].backoff_max: '5s' is invalid: must be at least backoff (10s)",
        ),
        ({"min": -1}, "scalers[0].min: -1 is invalid: Input should be greater than or equal to 0"),
        (
            {"scale_to_zero_after": "30s"},
            "scalers[0].scale_to_zero_after: 30.0 is invalid: only applies with min = 0 (min is "
            "1); set min = 0 to let the pool go to zero members when idle, or remove it",
        ),
        (
            {"min": 0, "scale_to_zero_after": "0s"},
            "scalers[0].scale_to_zero_after: '0s' is invalid: must be above 0s and at most 1 day",
        ),
        (
            {"panic_threshold": 1},
            "scalers[0].panic_threshold: 1 is invalid: must be above 1 and at most 100: panic "
            "starts when the short window's load is this many times the target (e.g. 2.0); to "
            'turn panic mode off set panic_window = "0s"',
        ),
        (
            {"panic_window": "soon"},
            "scalers[0].panic_window: 'soon' is invalid: a duration",
        ),
    ],
)
def test_errors_name_the_field_and_the_fix(changes: dict[str, Any], expected: str) -> None:
    e = entry()
    for k, v in changes.items():
        if v is None:
            e.pop(k, None)
        else:
            e[k] = v
    assert expected in error_of(config(e))


@pytest.mark.parametrize(
    ("docker", "expected"),
    [
        (
            {"image": "x", "network_mode": "bridge"},
            'scalers[0].docker.container_port: None is invalid: network_mode = "bridge" '
            "needs container_port",
        ),
        (
            {"image": "x", "container_port": 80},
            "scalers[0].docker.container_port: 80 is invalid: only applies to network_mode = "
            '"bridge"',
        ),
        (
            {"image": "x", "labels": {"lb.pool": "other"}},
            "label 'lb.pool': labels starting with lb. are the scaler's own",
        ),
        ({"image": "x", "memory": "lots"}, "scalers[0].docker.memory: 'lots' is invalid: a size"),
        ({"image": "x y"}, "scalers[0].docker.image: 'x y' is invalid: an image reference"),
        ({}, "scalers[0].docker.image: required field is missing; add it"),
    ],
)
def test_docker_errors(docker: dict[str, Any], expected: str) -> None:
    e = entry(provider="docker", docker=docker)
    del e["process"]
    assert expected in error_of(config(e))


def test_one_scaler_per_pool() -> None:
    msg = error_of(config(entry(), entry()))
    assert "scalers[1].pool: 'web' is invalid: scalers[0] already scales this pool" in msg


def test_every_problem_is_listed() -> None:
    msg = error_of(config(entry(max=0, target=-1, colour="red")))
    assert "(3 problem(s))" in msg


def test_helpers() -> None:
    assert parse_port_range("9100-9199") == (9100, 9199)
    assert parse_port_range("9100") == (9100, 9100)
    assert parse_memory("128m") == 128 * 1024**2
    assert parse_memory("1GiB") == 1024**3
    assert parse_memory(8 * 1024 * 1024) == 8 * 1024 * 1024
    with pytest.raises(ValueError, match="at least 4m"):
        parse_memory("1k")


def test_the_shipped_config_runs_the_demo_pool_with_the_process_provider() -> None:
    cfg = load_config(ROOT / "config.toml")
    (sc,) = scalers_of(cfg)
    assert sc.pool == "web" and sc.provider == "process" and (sc.min, sc.max) == (1, 5)
    assert cfg.pools["web"].backends == []
    assert cfg.pools["web"].health is not None and cfg.pools["web"].health.path == "/healthz"
    assert sc.process is not None and "{python} -m lb.demo_server" in sc.process.command


def test_lb_scaler_check(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert scaler_main(["-c", str(ROOT / "config.toml"), "check"]) == 0
    assert "OK (1 scaler(s): web)" in capsys.readouterr().out
    bad = tmp_path / "bad.toml"
    bad.write_text(
        '[[listeners]]\nname = "w"\nbind = "127.0.0.1:1"\npool = "web"\n[pools.web]\n'
        '[[scalers]]\npool = "web"\nmax = 2\ntarget = 1\n'
    )
    assert scaler_main(["check", "-c", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "scalers[0].process: None is invalid" in err
    assert 'provider = "process" needs [scalers.process]' in err
