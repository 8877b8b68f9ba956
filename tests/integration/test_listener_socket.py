"""The listening socket is what the config says: ``backlog`` reaches the kernel, at start and
on reload (uvloop listens again on a socket it is given, with 100 unless told otherwise)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import ProcessGroup, free_port, to_toml

pytestmark = pytest.mark.skipif(shutil.which("ss") is None, reason="needs ss (iproute2)")


def backlogs(port: int) -> list[int]:
    """The backlog of every socket listening on ``port`` (``ss``: Send-Q of a listener)."""
    out = subprocess.run(
        ["ss", "-ltnH", f"sport = :{port}"], capture_output=True, text=True, check=True
    ).stdout
    return [int(line.split()[2]) for line in out.splitlines() if line.startswith("LISTEN")]


def config(port: int, backend: int, backlog: int) -> dict[str, Any]:
    return {
        "lb": {"workers": 2, "grace": "2s"},
        "listeners": [
            {
                "name": "web",
                "bind": f"127.0.0.1:{port}",
                "mode": "http",
                "pool": "a",
                "backlog": backlog,
            }
        ],
        "pools": {"a": {"backends": [{"address": f"127.0.0.1:{backend}"}]}},
    }


def test_backlog_reaches_the_kernel_at_start_and_on_reload(procs: ProcessGroup) -> None:
    a = procs.backend("a0")
    port = free_port()
    lb = procs.lb(config(port, a.port, 3000))
    assert backlogs(port) == [3000, 3000]  # one SO_REUSEPORT socket per worker
    path = Path(lb.extra["config_path"])
    path.write_text(to_toml(config(port, a.port, 2000)))
    r = subprocess.run(
        [sys.executable, "-m", "lb.control.lbctl", "-c", str(path), "reload"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    deadline = time.monotonic() + 5
    while backlogs(port) != [2000, 2000]:
        assert time.monotonic() < deadline, backlogs(port)
        time.sleep(0.05)
