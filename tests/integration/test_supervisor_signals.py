"""Signals that reach the supervisor while it starts.

The workers answer before the supervisor's start is over: it still waits (up to about one
check) for every backend's first health result before it prints its banner and says READY.
A SIGTERM in that window must stop lb cleanly (exit 0, workers gone), not kill the
supervisor with the default action; a SIGHUP there must not kill it either, and the reload
it asks for runs once the start is over."""

from __future__ import annotations

import signal
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.helpers import Proc, ProcessGroup, children, free_port, http_get


@pytest.fixture
def blackhole() -> Iterator[int]:
    """A port that completes TCP handshakes (the kernel's backlog) but never answers: an
    HTTP check against it waits for its whole timeout."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    try:
        yield sock.getsockname()[1]
    finally:
        sock.close()


def config(port: int, backend: int, blackhole: int) -> dict[str, Any]:
    return {
        "lb": {"workers": 1, "grace": "1s"},
        "listeners": [{"name": "web", "bind": f"127.0.0.1:{port}", "mode": "http", "pool": "p"}],
        "pools": {
            "p": {
                "backends": [
                    {"address": f"127.0.0.1:{backend}"},
                    {"address": f"127.0.0.1:{blackhole}"},
                ],
                # The first check of the blackhole takes 4 s: the start waits for it.
                "health": {"type": "http", "interval": "6s", "timeout": "4s", "jitter": 0},
            }
        },
    }


def start_in_the_window(procs: ProcessGroup, blackhole: int, name: str) -> tuple[Proc, int]:
    """An lb whose worker answers while its supervisor's start is not over yet."""
    backend = procs.backend(name)
    port = free_port()
    lb = procs.lb(config(port, backend.port, blackhole), wait=False)
    deadline = time.monotonic() + 20
    while True:
        assert lb.popen.poll() is None, lb.output()
        try:
            status, _, _ = http_get(port, "/", timeout=1)
        except OSError:
            status = 0
        if status == 200:
            break
        assert time.monotonic() < deadline, f"no worker answered:\n{lb.output()}"
        time.sleep(0.02)
    assert "lb: running" not in lb.output(), "the start was over: the test missed its window"
    return lb, port


def test_sigterm_while_the_first_checks_run_stops_lb_cleanly(
    procs: ProcessGroup, blackhole: int
) -> None:
    lb, _ = start_in_the_window(procs, blackhole, "s1")
    workers = children(lb.pid)
    assert workers, "the supervisor runs a worker"
    lb.popen.send_signal(signal.SIGTERM)
    assert lb.popen.wait(timeout=20) == 0, lb.output()
    assert "stopping (SIGTERM)" in lb.output()
    for pid in workers:
        try:
            with open(f"/proc/{pid}/status") as f:
                state = next(line for line in f if line.startswith("State:"))
        except (FileNotFoundError, ProcessLookupError):
            continue
        assert "Z" in state, f"worker {pid} outlived its supervisor: {state}"


def test_sighup_while_the_first_checks_run_reloads_after_the_start(
    procs: ProcessGroup, blackhole: int
) -> None:
    lb, port = start_in_the_window(procs, blackhole, "h1")
    lb.popen.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 20
    while "reload (SIGHUP)" not in lb.output():
        assert lb.popen.poll() is None, f"SIGHUP killed lb:\n{lb.output()}"
        assert time.monotonic() < deadline, f"no reload after the start:\n{lb.output()}"
        time.sleep(0.05)
    out = lb.output()
    assert out.index("lb: running") < out.index("reload (SIGHUP)"), out
    status, _, body = http_get(port, "/")
    assert status == 200 and b"h1" in body
    assert lb.stop() == 0, lb.output()
