"""An operator's first day: the files a config names (state file, admin token) are checked
where it matters, and a write the control API answers 2xx is on disk (review "revops",
benchmarks/results/revops.md).

Real ``lb``, ``lb check`` and ``lbctl`` processes on loopback with a demo backend. The tests
marked ``xfail(strict=True)`` fail on main today; each reason names the defect.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tests.helpers import ProcessGroup, free_port, http_get, to_toml


def config(
    port: int, backend: int, lb: dict[str, Any] | None = None, **more: Any
) -> dict[str, Any]:
    listener = {"name": "web", "bind": f"127.0.0.1:{port}", "mode": "http", "pool": "web"}
    listener.update(more.pop("listener", {}))
    return {
        "lb": {"workers": 1, "grace": "1s", **(lb or {})},
        **more,
        "listeners": [listener],
        "pools": {"web": {"backends": [{"address": f"127.0.0.1:{backend}"}]}},
    }


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=30)


def started(lb_output: Any, popen: subprocess.Popen[bytes], timeout: float = 20) -> bool:
    """True once lb prints its banner, False if it exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if "lb: running" in lb_output():
            return True
        if popen.poll() is not None:
            return False
        time.sleep(0.05)
    raise AssertionError(f"lb neither started nor exited:\n{lb_output()}")


def test_a_registered_backend_is_on_disk_or_refused(tmp_path: Path, procs: ProcessGroup) -> None:
    """The state folder goes away under a running lb (a disk remounted read-only, a full disk,
    a cleanup job): a write the API answers 2xx must still be on disk, or be refused."""
    port, backend, extra = free_port(), procs.backend().port, procs.backend().port
    folder = tmp_path / "state"
    state = folder / "state.json"
    path = tmp_path / "config.toml"
    path.write_text(to_toml(config(port, backend, lb={"state_file": str(state)})))
    lb = procs.spawn("lb", [sys.executable, "-m", "lb", "run", "-c", str(path)])
    assert started(lb.output, lb.popen), lb.output()
    assert http_get(port)[0] == 200
    folder.rename(tmp_path / "state.old")
    folder.write_text("a file where the state folder was\n")  # ENOTDIR, root or not
    add = run("-m", "lb.control.lbctl", "-c", str(path), "add", "web", f"127.0.0.1:{extra}")
    if add.returncode == 0:
        assert state.exists() and f"127.0.0.1:{extra}" in state.read_text(), add.stdout
    else:
        assert "state" in add.stderr, add.stderr


def test_check_refuses_a_missing_admin_token_file(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    cfg = config(
        free_port(), free_port(), admin={"bind": f"127.0.0.1:{free_port()}", "token_file": "nope"}
    )
    path.write_text(to_toml(cfg))
    check = run("-m", "lb", "check", "-c", str(path))
    assert check.returncode != 0, check.stdout
    assert "admin.token_file" in check.stderr, check.stderr


def test_check_and_run_refuse_a_state_file_that_is_a_folder(tmp_path: Path) -> None:
    (tmp_path / "state").mkdir()
    path = tmp_path / "config.toml"
    path.write_text(to_toml(config(free_port(), free_port(), lb={"state_file": "state"})))
    for command in ("check", "run"):
        r = run("-m", "lb", command, "-c", str(path))
        assert r.returncode == 2, r.stdout + r.stderr
        assert "lb.state_file:" in r.stderr and "is a folder" in r.stderr, r.stderr


def test_version() -> None:
    r = run("-m", "lb", "--version")
    assert r.returncode == 0 and r.stdout.startswith("lb "), r.stdout + r.stderr
