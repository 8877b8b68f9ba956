"""deploy/compose as a user runs it: ``up`` brings lb and lb-scaler (docker provider, through
the mounted engine socket) on host networking; bounded load takes the pool from 1 member to 3
and, once it stops, back to 1, with no failed request; ``down`` leaves no container, the
scaler's members included.

The stack is deploy/compose's own files, copied, with only what a shared test machine needs
changed in config.toml: free ports for the listener, the admin listener and the members, a
label for the members (so that cleanup finds them), and a shorter scale-down stabilization.
Every replacement must hit, so the test follows the example file."""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.docker.lb_image import Built, compose_command, docker, lb_image, wait_until
from tests.helpers import ROOT, free_port, http_get

__all__ = ["lb_image"]  # fixture

pytestmark = pytest.mark.timeout(1800)  # the first test may build the image (lb_image.py)

# In flight at once: ceil(25 / 10) = 3 members at target 10. Not 30: at exactly three times
# the target, the demand lb sums over its workers (each worker's figure is a few hundred ms old,
# and these clients open a new connection per request, so they move between workers) is as
# often a little above 30 as below it, and the panic recommendation ceil(demand / target) then
# asks for a fourth member: right for the figures it sees, but a coin flip for the test.
CLIENTS = 25
LIGHT = 3  # in flight while the pool scales back down: 1 member at target 10
PER_CLIENT = 3000  # a bound on each client's requests (the phases below end them sooner)
LOAD_LIMIT = 240.0  # seconds: the load stops by then whatever happens


class Stack:
    def __init__(self, tmp: Path, label: str) -> None:
        self.dir = tmp / "stack"
        shutil.copytree(ROOT / "deploy" / "compose", self.dir)
        self.web, self.admin = free_port(), free_port()
        base = random.randrange(30000, 39000, 20)
        self.member_ports = range(base, base + 20)
        self.label = label
        self.project = f"lbtest{label}"
        config = self.dir / "config.toml"
        text = config.read_text()
        for old, new in (
            ('bind = "127.0.0.1:9900"', f'bind = "127.0.0.1:{self.admin}"'),
            ('bind = "127.0.0.1:8080"', f'bind = "127.0.0.1:{self.web}"'),
            ('port_range = "9001-9099"', f'port_range = "{base}-{base + 19}"'),
            ('scale_down_stabilization = "30s"', 'scale_down_stabilization = "4s"'),
            (
                'labels = { "stack" = "lb-demo" }',
                f'labels = {{ "stack" = "lb-demo", "test-run" = "{label}" }}',
            ),
        ):
            assert old in text, f"deploy/compose/config.toml no longer has {old!r}"
            text = text.replace(old, new)
        config.write_text(text)
        config.chmod(0o644)
        host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
        assert host.startswith("unix://"), "the compose stack mounts the engine's unix socket"
        sock = host.removeprefix("unix://")
        self.env = {
            **os.environ,
            "LB_IMAGE": "lb:test",
            "DOCKER_SOCK": sock,
            "DOCKER_GID": str(os.stat(sock).st_gid),
        }
        self.cmd = [
            *compose_command(),
            "-p",
            self.project,
            "-f",
            str(self.dir / "docker-compose.yml"),
        ]

    def compose(self, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        out = subprocess.run(
            [*self.cmd, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=self.env,
            cwd=self.dir,
            stdin=subprocess.DEVNULL,
        )
        assert out.returncode == 0, f"compose {' '.join(args)}:\n{out.stdout}\n{out.stderr}"
        return out

    def backends(self) -> list[dict[str, Any]]:
        url = f"http://127.0.0.1:{self.admin}/v1/pools/web/backends"
        try:
            with urllib.request.urlopen(url, timeout=3) as r:
                doc = orjson.loads(r.read())
        except OSError:
            return []
        return list(doc["backends"])

    def eligible(self) -> int:
        return sum(1 for b in self.backends() if b["health"] == "up" and b["admin"] == "ready")

    def members(self) -> list[str]:
        """Running containers of this stack's members (the scaler's label and ours)."""
        out = docker(
            "ps",
            "-q",
            "--filter",
            "label=lb.managed-by=scaler",
            "--filter",
            f"label=test-run={self.label}",
        )
        return out.stdout.split()

    def leftovers(self) -> list[str]:
        found = set()
        for label in (f"test-run={self.label}", f"com.docker.compose.project={self.project}"):
            found.update(docker("ps", "-aq", "--filter", f"label={label}").stdout.split())
        return sorted(found)


@pytest.fixture
def stack(lb_image: Built, run_label: str, tmp_path: Path) -> Iterator[Stack]:
    s = Stack(tmp_path, run_label)
    try:
        yield s
    finally:
        subprocess.run(
            [*s.cmd, "down", "-v", "--timeout", "5"],
            capture_output=True,
            timeout=300,
            env=s.env,
            cwd=s.dir,
        )


class Load:
    """CLIENTS threads, each sending GET /sleep?ms=200 (a new connection each) until stopped,
    PER_CLIENT requests or LOAD_LIMIT seconds; only the first ``active`` of them send, the
    others wait. Every failure is kept."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.active = CLIENTS
        self.stop = threading.Event()
        self.ok = 0
        self.failures: list[str] = []
        self.lock = threading.Lock()
        self.deadline = time.monotonic() + LOAD_LIMIT
        self.threads = [threading.Thread(target=self.client, args=(i,)) for i in range(CLIENTS)]

    def running(self) -> bool:
        return not self.stop.is_set() and time.monotonic() < self.deadline

    def client(self, index: int) -> None:
        sent = 0
        while sent < PER_CLIENT and self.running():
            if index >= self.active:
                time.sleep(0.05)
                continue
            sent += 1
            try:
                status, _, body = http_get(self.port, "/sleep?ms=200", timeout=15)
                failure = None if status == 200 else f"{status}: {body[:80]!r}"
            except OSError as exc:
                failure = repr(exc)
            with self.lock:
                if failure is None:
                    self.ok += 1
                else:
                    self.failures.append(failure)

    def __enter__(self) -> Load:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(30)


def test_compose_scales_1_3_1_without_a_failed_request_and_down_leaves_nothing(
    stack: Stack,
) -> None:
    stack.compose("up", "-d")
    wait_until(lambda: stack.eligible() == 1, 90, "lb up with the scaler's first member", step=0.5)
    status, _, body = http_get(stack.web, "/", timeout=5)
    assert status == 200 and b"web-" in body, (status, body)
    assert len(stack.members()) == 1
    # What the README shows, and each service's health check run by hand (no waiting for
    # the engine's interval).
    table = stack.compose("exec", "-T", "lb", "lbctl", "backends").stdout
    assert " up " in table and any(f"127.0.0.1:{p}" in table for p in stack.member_ports), table
    assert "healthy" in stack.compose("exec", "-T", "lb", "lb-healthcheck").stdout
    assert "healthy" in stack.compose("exec", "-T", "lb-scaler", "lb-healthcheck").stdout

    with Load(stack.web) as load:
        wait_until(lambda: stack.eligible() >= 3, 90, "3 members up under load", step=0.5)
        time.sleep(2)  # the load goes on across the new members
        peak = len(stack.members())
        served_at_peak = load.ok
        # Light load: the scaler drains and removes two members while requests go on.
        load.active = LIGHT
        wait_until(
            lambda: len(stack.members()) == 1 and len(stack.backends()) == 1,
            90,
            f"back to 1 member with {LIGHT} in flight",
            step=0.5,
        )
        assert load.running(), "the load ran out of time before the pool was back at 1"
        time.sleep(1)
    assert peak == 3, f"{peak} members for {CLIENTS} in flight at target 10"
    assert not load.failures, f"{len(load.failures)} failed: {load.failures[:5]}"
    assert served_at_peak >= CLIENTS and load.ok > served_at_peak
    status, _, body = http_get(stack.web, "/", timeout=5)
    assert status == 200, (status, body)

    stack.compose("down", timeout=240)
    assert stack.leftovers() == [], "containers left after down"
