"""A worker never runs unmanaged: it ends when told to, or when its supervisor is gone,
even before it received a config."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time

import pytest

from tests.helpers import ROOT


def start_worker() -> tuple[socket.socket, subprocess.Popen[bytes]]:
    ours, theirs = socket.socketpair()
    proc = subprocess.Popen(
        [sys.executable, "-m", "lb.worker", "--bus-fd", str(theirs.fileno()), "--index", "9"],
        pass_fds=(theirs.fileno(),),
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    theirs.close()
    time.sleep(1.0)  # running, waiting for a config that never comes
    return ours, proc


@pytest.mark.parametrize("how", ["sigterm", "bus closed"])
def test_unconfigured_worker_stops(how: str) -> None:
    bus, proc = start_worker()
    try:
        assert proc.poll() is None
        if how == "sigterm":
            proc.send_signal(signal.SIGTERM)
        else:
            bus.close()
        assert proc.wait(5) == 0
        assert proc.stderr is not None
        assert b"stopping during startup" in proc.stderr.read()
    finally:
        bus.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()
