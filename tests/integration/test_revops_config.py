"""An operator's first day: config values that ``lb check`` accepts must run, and a reload lb
reports as applied must have reached every worker (review "revops", benchmarks/results/revops.md).

Each test runs the real ``lb`` (``python -m lb check|run``, ``lbctl``) on loopback with a demo
backend. The ones marked ``xfail(strict=True)`` fail on main today; each reason names the defect.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import Proc, ProcessGroup, children, free_port, http_get, to_toml


def config(port: int, backend: int, workers: int = 1, **listener: Any) -> dict[str, Any]:
    return {
        "lb": {"workers": workers, "grace": "1s"},
        "listeners": [
            {
                "name": "web",
                "bind": f"127.0.0.1:{port}",
                "mode": "http",
                "pool": "web",
                **listener,
            }
        ],
        "pools": {"web": {"backends": [{"address": f"127.0.0.1:{backend}"}]}},
    }


def lb_cli(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lb", *args], capture_output=True, text=True, timeout=timeout
    )


def lbctl(path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lb.control.lbctl", "-c", str(path), *args],
        capture_output=True,
        text=True,
        timeout=30,
    )


def statuses(port: int, n: int) -> list[int]:
    """n requests, each on a new connection (the kernel spreads them over the workers)."""
    out = []
    for _ in range(n):
        try:
            out.append(http_get(port, timeout=2)[0])
        except OSError:  # refused, reset or timed out: nobody accepted it in time
            out.append(0)
    return out


# TOML floats `inf` and `nan` are durations to pydantic (seconds), but the supervisor sends the
# config to its workers as JSON (orjson writes them as null), where the worker's check refuses it.
@pytest.mark.parametrize(
    ("section", "line", "field"),
    [
        ("lb", "grace = nan", "lb.grace"),
        ("listener", "connect_timeout = inf", "listeners[0].connect_timeout"),
    ],
)
def test_check_refuses_non_finite_durations(
    tmp_path: Path, section: str, line: str, field: str
) -> None:
    lb_extra = line if section == "lb" else ""
    listener_extra = line if section == "listener" else ""
    path = tmp_path / "config.toml"
    path.write_text(
        f"[lb]\nworkers = 1\n{lb_extra}\n"
        '[[listeners]]\nname = "web"\nbind = "127.0.0.1:1"\nmode = "http"\npool = "web"\n'
        f"{listener_extra}\n"
        '[pools.web]\nbackends = [{address = "127.0.0.1:2"}]\n'
    )
    r = lb_cli("check", "-c", str(path))
    assert r.returncode != 0, r.stdout + r.stderr
    assert field in r.stderr, r.stderr


def test_backlog_beyond_int_is_refused_with_its_field(tmp_path: Path, procs: ProcessGroup) -> None:
    port, backend = free_port(), procs.backend().port
    path = tmp_path / "config.toml"
    path.write_text(to_toml(config(port, backend, backlog=10**11)))
    check = lb_cli("check", "-c", str(path))
    run = lb_cli("run", "-c", str(path))  # must refuse at once; it never starts serving
    for r in (check, run):
        assert r.returncode != 0, r.stdout + r.stderr
        assert "listeners[0].backlog" in r.stderr, r.stderr
        assert "Traceback" not in r.stderr, r.stderr


def test_a_config_lb_check_accepts_serves(tmp_path: Path, procs: ProcessGroup) -> None:
    """HAProxy reads `timeout connect 0` as no timeout; lb check says OK, then nothing connects.
    Either refuse it (naming the field) or serve with it."""
    port, backend = free_port(), procs.backend().port
    cfg = config(port, backend, connect_timeout="0s")
    path = tmp_path / "check.toml"
    path.write_text(to_toml(cfg))
    if lb_cli("check", "-c", str(path)).returncode != 0:
        return  # refused: fine (the xfail then fails as XPASS and the mark can go)
    procs.lb(cfg)
    assert statuses(port, 5) == [200] * 5


def test_reload_with_a_value_workers_refuse_is_refused(procs: ProcessGroup) -> None:
    port, backend = free_port(), procs.backend().port
    cfg = config(port, backend, workers=2)
    lb = procs.lb(cfg)
    path: Path = lb.extra["config_path"]
    path.write_text(to_toml(config(port, backend, workers=2, connect_timeout=float("inf"))))
    r = lbctl(path, "reload")
    assert r.returncode == 1, r.stdout + r.stderr
    assert "listeners[0].connect_timeout" in r.stderr, r.stderr


def _restart_one_worker(lb: Proc) -> None:
    old = children(lb.pid)
    assert len(old) == 2, old
    with contextlib.suppress(ProcessLookupError):
        os.kill(old[0], signal.SIGKILL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        now = children(lb.pid)
        if len(now) == 2 and old[0] not in now:
            return
        time.sleep(0.05)


def test_worker_restarted_after_such_a_reload_serves(procs: ProcessGroup) -> None:
    """Whatever lb answered the reload, a worker that dies afterwards must come back serving:
    the supervisor holds its SO_REUSEPORT socket, so the kernel keeps queueing its share."""
    port, backend = free_port(), procs.backend().port
    lb = procs.lb(config(port, backend, workers=2))
    path: Path = lb.extra["config_path"]
    assert statuses(port, 8) == [200] * 8
    path.write_text(to_toml(config(port, backend, workers=2, connect_timeout=float("inf"))))
    lbctl(path, "reload")
    time.sleep(0.5)
    _restart_one_worker(lb)
    time.sleep(2)  # a healthy restart is ready well within this
    assert statuses(port, 12) == [200] * 12, lb.output()[-2000:]


def test_run_refuses_a_port_another_process_serves(tmp_path: Path, procs: ProcessGroup) -> None:
    port, backend = free_port(), procs.backend().port
    other = socket.socket()
    other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    other.bind(("127.0.0.1", port))
    other.listen()
    try:
        path = tmp_path / "config.toml"
        path.write_text(to_toml(config(port, backend)))
        lb = procs.spawn("lb", [sys.executable, "-m", "lb", "run", "-c", str(path)])
        deadline = time.monotonic() + 20
        while lb.popen.poll() is None and "lb: running" not in lb.output():
            assert time.monotonic() < deadline, lb.output()
            time.sleep(0.05)
        assert lb.popen.poll() not in (None, 0), "lb started on a port already in use"
        assert "listeners[0].bind" in lb.output(), lb.output()
    finally:
        other.close()


def test_check_refuses_a_wildcard_bind_overlapping_another_listener(tmp_path: Path) -> None:
    port = free_port()
    cfg = config(port, free_port())
    cfg["listeners"].append(
        {"name": "all", "bind": f"0.0.0.0:{port}", "mode": "tcp", "pool": "web"}
    )
    path = tmp_path / "config.toml"
    path.write_text(to_toml(cfg))
    r = lb_cli("check", "-c", str(path))
    assert r.returncode != 0, r.stdout
    assert "listeners[1].bind" in r.stderr, r.stderr
