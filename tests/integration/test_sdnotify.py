"""systemd readiness (lb/sdnotify.py) end to end: a real ``lb run`` with ``NOTIFY_SOCKET``
pointing at a unix datagram socket that this test owns, as systemd's would be.

The worker is held at interpreter start (a ``sitecustomize`` on ``PYTHONPATH`` waits for a
gate file) while the supervisor has already bound the listener: a TCP connect then succeeds
(the kernel's backlog) but nothing accepts. ``READY=1`` must not come while the worker is
held, and when it comes, a request through the listener must be answered by the backend.
Then a reload must say ``RELOADING=1`` then ``READY=1``, the watchdog must ping, and SIGTERM
must say ``STOPPING=1``. Every message must come from lb's main process (what
``NotifyAccess=main`` accepts), and the worker must not inherit ``NOTIFY_SOCKET``."""

from __future__ import annotations

import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import ROOT, ProcessGroup, children, free_port, http_get, to_toml, wait_port

GATE_SITECUSTOMIZE = """\
import os, sys, time
# Hold lb's worker processes (python -m lb.worker --bus-fd ...) until the test opens the gate.
if "--bus-fd" in sys.argv and os.environ.get("LB_TEST_GATE"):
    while not os.path.exists(os.environ["LB_TEST_GATE"]):
        time.sleep(0.01)
"""

UCRED = struct.Struct("3i")  # pid, uid, gid (SCM_CREDENTIALS)


class NotifySocket:
    """The service manager's end: a datagram socket, read by a thread as systemd reads it
    (promptly: the kernel queues only a few datagrams), that records each sender's pid."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.messages: list[tuple[dict[str, str], int]] = []
        self.cursor = 0  # messages before it were looked at
        self.changed = threading.Condition()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        while True:
            try:
                data, anc, _, _ = self.sock.recvmsg(4096, socket.CMSG_SPACE(UCRED.size))
            except OSError:
                return  # closed
            if not data:
                return
            pid = -1
            for level, kind, payload in anc:
                if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                    pid = UCRED.unpack(payload[: UCRED.size])[0]
            fields = dict(line.split("=", 1) for line in data.decode().splitlines())
            with self.changed:
                self.messages.append((fields, pid))
                self.changed.notify_all()

    def since_cursor(self) -> list[dict[str, str]]:
        with self.changed:
            return [m for m, _ in self.messages[self.cursor :]]

    def until(self, key: str, timeout: float) -> tuple[dict[str, str], int]:
        """The next message (after the cursor) with ``key``, and its sender's pid; the cursor
        moves past it."""
        deadline = time.monotonic() + timeout
        with self.changed:
            while True:
                for i in range(self.cursor, len(self.messages)):
                    if key in self.messages[i][0]:
                        self.cursor = i + 1
                        return self.messages[i]
                left = deadline - time.monotonic()
                if left <= 0:
                    got = [m for m, _ in self.messages[self.cursor :]]
                    raise AssertionError(f"no {key} within {timeout}s; got {got}")
                self.changed.wait(left)

    def skip_all(self) -> None:
        with self.changed:
            self.cursor = len(self.messages)

    def close(self) -> None:
        # A datagram of zero bytes wakes the reader, which then stops.
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.sendto(b"", str(self.path))
        self.reader.join(5)
        self.sock.close()


@pytest.fixture
def notify(tmp_path: Path) -> Iterator[NotifySocket]:
    s = NotifySocket(tmp_path / "notify.sock")
    try:
        yield s
    finally:
        s.close()


def test_ready_after_listeners_accept_then_reloading_watchdog_stopping(
    procs: ProcessGroup, notify: NotifySocket, tmp_path: Path
) -> None:
    backend = procs.backend("sd1")
    port = free_port()
    config = tmp_path / "lb.toml"
    config.write_text(
        to_toml(
            {
                "lb": {
                    "workers": 1,
                    "grace": "2s",
                    "control_socket": str(tmp_path / "lb.sock"),
                    "state_file": str(tmp_path / "state.json"),
                },
                "listeners": [
                    {"name": "web", "bind": f"127.0.0.1:{port}", "mode": "http", "pool": "p"}
                ],
                "pools": {"p": {"backends": [{"address": f"127.0.0.1:{backend.port}"}]}},
            }
        )
    )
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(GATE_SITECUSTOMIZE)
    gate = tmp_path / "gate"
    env = {
        **os.environ,
        "NOTIFY_SOCKET": str(notify.path),
        "WATCHDOG_USEC": "400000",  # a ping every 0.2 s
        "LB_TEST_GATE": str(gate),
        "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]),
    }
    log = (tmp_path / "lb.log").open("wb")
    lb = subprocess.Popen(
        [sys.executable, "-m", "lb", "run", "-c", str(config)],
        env=env,
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    log.close()
    try:
        # The supervisor bound the listener (connects complete in the kernel's backlog) and
        # serves its control socket; the worker is held, so nothing accepts yet.
        wait_port(port, timeout=20)
        deadline = time.monotonic() + 20
        while not (tmp_path / "lb.sock").exists():
            assert lb.poll() is None and time.monotonic() < deadline, tmp_path / "lb.log"
            time.sleep(0.02)
        time.sleep(1.0)
        early = notify.since_cursor()
        assert not early, f"lb said {early} before its worker could accept"
        workers = children(lb.pid)
        assert len(workers) == 1
        worker_env = Path(f"/proc/{workers[0]}/environ").read_bytes().split(b"\0")
        assert not any(v.startswith(b"NOTIFY_SOCKET=") for v in worker_env)
        assert any(v.startswith(b"LB_TEST_GATE=") for v in worker_env)  # the env did pass

        gate.touch()
        ready, sender = notify.until("READY", timeout=20)
        assert sender == lb.pid
        assert ready["READY"] == "1"
        assert f"web 127.0.0.1:{port}" in ready["STATUS"]
        status, headers, body = http_get(port, "/", timeout=5)
        assert status == 200 and b"sd1" in body, (status, headers, body)

        # The watchdog pings from the supervisor's loop.
        assert notify.until("WATCHDOG", timeout=5)[1] == lb.pid

        # A reload: RELOADING=1 (with MONOTONIC_USEC), then READY=1 again.
        notify.skip_all()
        out = subprocess.run(
            [sys.executable, "-m", "lb.control.lbctl", "-c", str(config), "reload"],
            cwd=ROOT,
            capture_output=True,
            timeout=30,
        )
        assert out.returncode == 0, out
        reloading, sender = notify.until("RELOADING", timeout=10)
        assert sender == lb.pid and int(reloading["MONOTONIC_USEC"]) > 0
        assert notify.until("READY", timeout=10)[1] == lb.pid

        notify.skip_all()
        lb.send_signal(signal.SIGTERM)
        assert notify.until("STOPPING", timeout=10)[1] == lb.pid
        assert lb.wait(timeout=20) == 0
    finally:
        if lb.poll() is None:
            lb.kill()
            lb.wait()
