"""``lbctl -c FILE reload`` with a FILE that is not valid TOML reaches lb, with a real lb
(issue 14): lbctl finds the socket by a line scan and shows lb's own 422, and lb keeps its
running config."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson

from tests.helpers import ProcessGroup, free_port


def lbctl(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lb.control.lbctl", "-c", str(config), *args],
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_reload_of_a_file_that_is_not_toml_shows_lbs_422(procs: ProcessGroup) -> None:
    backend = procs.backend("b1")
    bind = f"127.0.0.1:{free_port()}"
    cfg = {
        # Not the default socket: the scan, not the fallback, must find it.
        "lb": {"workers": 1, "control_socket": "ctl/lb.sock"},
        "listeners": [{"name": "t", "bind": bind, "mode": "tcp", "pool": "p"}],
        "pools": {"p": {"backends": [{"address": f"127.0.0.1:{backend.port}"}]}},
    }
    lb = procs.lb(cfg)
    path: Path = lb.extra["config_path"]
    good = path.read_text()
    path.write_text(good + "\n[pools.p\nweight = \n")  # an edit under way

    r = lbctl(path, "reload")
    assert r.returncode == 1, r.stdout + r.stderr  # refused by lb, not a usage error (2)
    note, refused = r.stderr.strip().splitlines()
    assert note.startswith(f"lbctl: note: {path} is not valid TOML")
    assert "control socket ctl/lb.sock from its [lb] control_socket line" in note
    assert refused.startswith(f"lbctl: refused (HTTP 422): config: {path}: not valid TOML")
    assert "reload (api) refused" in lb.output()

    # lb runs its old config; lbctl reaches it for everything else too.
    r = lbctl(path, "--json", "backends", "p")
    assert r.returncode == 0, r.stderr
    (b,) = orjson.loads(r.stdout)["backends"]
    assert b["address"] == f"127.0.0.1:{backend.port}"

    path.write_text(good)
    r = lbctl(path, "reload")
    assert r.returncode == 0 and "reloaded" in r.stdout and r.stderr == ""
