"""``benchmarks.run --pin``: the proxy alone on the last CPU, everything else on the others."""

from __future__ import annotations

import pytest

from benchmarks import procs


@pytest.fixture
def pin_on(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(procs, "PIN", True)


def test_off_by_default_leaves_the_command_alone() -> None:
    assert procs.PIN is False
    assert procs.pinned(["wrk", "x"], "other") == ["wrk", "x"]
    assert procs.pinned(["haproxy"], "proxy") == ["haproxy"]


@pytest.mark.usefixtures("pin_on")
@pytest.mark.parametrize(("cpus", "proxy", "other"), [(2, "1", "0"), (4, "3", "0-2")])
def test_the_proxy_gets_the_last_cpu_and_the_rest_the_others(
    monkeypatch: pytest.MonkeyPatch, cpus: int, proxy: str, other: str
) -> None:
    monkeypatch.setattr(procs.os, "cpu_count", lambda: cpus)
    assert procs.pinned(["lb", "run"], "proxy") == ["taskset", "-c", proxy, "lb", "run"]
    assert procs.pinned(["wrk"], "other") == ["taskset", "-c", other, "wrk"]


@pytest.mark.usefixtures("pin_on")
def test_a_proxy_with_two_workers_and_a_one_cpu_machine_are_not_pinned(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert procs.pinned(["haproxy"], "proxy", workers=2) == ["haproxy"]
    monkeypatch.setattr(procs.os, "cpu_count", lambda: 1)
    assert procs.pinned(["wrk"], "other") == ["wrk"]


def test_run_refuses_pin_with_the_workers_group(capsys: pytest.CaptureFixture[str]) -> None:
    from benchmarks import run

    assert run.main(["--pin", "--groups", "workers", "--proxies", "lb"]) == 2
    assert "--pin gives each proxy one CPU: leave out 'workers'" in capsys.readouterr().err
    assert procs.PIN is False
