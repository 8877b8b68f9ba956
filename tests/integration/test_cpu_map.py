"""``[lb] cpu_map`` pins real worker processes: at start, after a worker restarts, and as a
reload changes or removes it (read back from /proc/PID/status, as taskset would show it)."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

from lb.config import format_cpu_list
from tests.helpers import Proc, ProcessGroup, children, free_port, http_get, to_toml

CPUS = sorted(os.sched_getaffinity(0))
ALL = format_cpu_list(frozenset(CPUS))


def config(port: int, backend: int, cpu_map: object) -> dict[str, Any]:
    lb: dict[str, Any] = {"workers": 2, "grace": "1s"}
    if cpu_map is not None:
        lb["cpu_map"] = cpu_map
    return {
        "lb": lb,
        "listeners": [{"name": "web", "bind": f"127.0.0.1:{port}", "mode": "http", "pool": "p"}],
        "pools": {"p": {"backends": [{"address": f"127.0.0.1:{backend}"}]}},
    }


def workers(lb: Proc) -> dict[int, tuple[int, str]]:
    """Worker index -> (pid, Cpus_allowed_list)."""
    out: dict[int, tuple[int, str]] = {}
    for pid in children(lb.pid):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        if b"--index" not in argv:
            continue
        index = int(argv[argv.index(b"--index") + 1])
        allowed = next(x for x in status.splitlines() if x.startswith("Cpus_allowed_list:"))
        out[index] = (pid, allowed.split(":", 1)[1].strip())
    return out


def until_pinned(
    lb: Proc, want: dict[int, str], what: str, gone: int = 0
) -> dict[int, tuple[int, str]]:
    """Until the workers run on ``want``'s CPUs (and none is the process ``gone``)."""
    deadline = time.monotonic() + 15
    while True:
        got = workers(lb)
        fresh = all(pid != gone for pid, _ in got.values())
        if fresh and {i: cpus for i, (_, cpus) in got.items()} == want:
            return got
        assert lb.popen.poll() is None, lb.output()
        assert time.monotonic() < deadline, f"{what}: {got} != {want}\n{lb.output()}"
        time.sleep(0.05)


def reload(lb: Proc, cfg: dict[str, Any]) -> None:
    done = lb.output().count("reload (SIGHUP)")
    Path(lb.extra["config_path"]).write_text(to_toml(cfg))
    lb.popen.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 15
    while lb.output().count("reload (SIGHUP)") == done:
        assert time.monotonic() < deadline, lb.output()
        time.sleep(0.05)


def test_cpu_map_pins_workers_through_restarts_and_reloads(procs: ProcessGroup) -> None:
    backend = procs.backend("c1")
    port = free_port()
    lb = procs.lb(config(port, backend.port, "auto"))
    auto = {1: str(CPUS[0]), 2: str(CPUS[1 % len(CPUS)])}
    first = until_pinned(lb, auto, "auto at start")
    assert http_get(port)[0] == 200
    assert "worker 1 runs on CPUs" in lb.output()

    # A worker that dies is restarted, pinned again.
    os.kill(first[1][0], signal.SIGKILL)
    again = until_pinned(lb, auto, "after worker 1 was restarted", gone=first[1][0])
    assert "worker 1 died" in lb.output()

    # A reload applies a new map at once, to the same processes.
    swapped = {1: str(CPUS[-1]), 2: str(CPUS[0])}
    reload(lb, config(port, backend.port, [CPUS[-1], CPUS[0]]))
    now = until_pinned(lb, swapped, "after a reload swapped them")
    assert {i: pid for i, (pid, _) in now.items()} == {i: pid for i, (pid, _) in again.items()}
    assert "lb.cpu_map: 'auto' -> " in lb.output()

    # Unset: every worker may run anywhere lb may.
    reload(lb, config(port, backend.port, None))
    until_pinned(lb, {1: ALL, 2: ALL}, "after cpu_map was removed")
    assert http_get(port)[0] == 200
    assert lb.stop() == 0, lb.output()


def test_a_bad_cpu_map_on_reload_changes_nothing(procs: ProcessGroup) -> None:
    backend = procs.backend("c2")
    port = free_port()
    lb = procs.lb(config(port, backend.port, "auto"))
    auto = {1: str(CPUS[0]), 2: str(CPUS[1 % len(CPUS)])}
    until_pinned(lb, auto, "auto at start")
    far = max(CPUS) + 1000
    reload(lb, config(port, backend.port, [CPUS[0], far]))
    assert f"lb.cpu_map[1]: '{far}' is invalid: CPU {far} is not one lb may run on" in lb.output()
    until_pinned(lb, auto, "after a refused reload")
    assert lb.stop() == 0, lb.output()
