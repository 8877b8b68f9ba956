"""``kill -9`` of lb-scaler the moment a Swarm service is created, with a real engine: the
manager made the service (its labels are the only record) but the scaler never heard the
answer. The next scaler adopts it (registers it once, starts nothing), and ``stop-all``
leaves no service, no container and no backend.

The kill lands at that moment through the Docker tests' engine proxy
(``tests/docker/test_scaler_docker_orphans.py``), watching for ``POST .../services/create``
instead of a container start.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.docker import test_scaler_docker_orphans as orphans
from tests.docker.test_scaler_swarm import containers, running_task, services, swarm_config
from tests.helpers import ROOT, ProcessGroup
from tests.integration.test_scaler import Scaled, log_events, wait_for

CREATE = re.compile(rb"^POST /[^ ]*services/create[ ?]")


@pytest.fixture
def scaled(procs: ProcessGroup, tmp_path: Path, swarm_label: str) -> Iterator[Scaled]:
    s = Scaled(procs, tmp_path)
    try:
        yield s
    finally:
        for p in procs.procs:
            if p.name.startswith("scaler"):
                p.stop(signal.SIGKILL)


def test_kill_9_right_after_a_service_create_leaves_nothing_orphaned(
    scaled: Scaled, swarm_label: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(orphans, "START", CREATE)  # the proxy's trigger: a service create
    with orphans.EngineProxy(orphans.engine_socket(), tmp_path / "engine.sock") as proxy:
        cfg = swarm_config(swarm_label, min=1, scale_down_stabilization="60s")
        cfg["scalers"][0]["swarm"]["docker_url"] = f"unix://{proxy.path}"
        scaled.start(cfg)

        # 1. Killed once the manager answered the create: the service exists, lb knows nothing.
        orphans.killed_scaler(scaled, proxy, "after-start", "scaler-1")
        (svc,) = wait_for(
            lambda: (
                got if len(got := services(swarm_label)) == 1 and running_task(got[0]) else None
            ),
            30,
            "the created service running",
        )
        assert scaled.backends() == []

        # 2. The next scaler adopts it (registers it once) and starts nothing.
        proxy.arm(None)
        again = scaled.procs.spawn(
            "scaler-2", [sys.executable, "-m", "scaler", "-c", str(scaled.path)]
        )
        wait_for(
            lambda: any(e.get("event") == "scaler_decision" for e in log_events(again)),
            30,
            "a decision",
            again,
        )
        events = log_events(again)
        assert [e["member"] for e in events if e.get("event") == "scaler_adopted"] == [svc["ID"]]
        assert not [e for e in events if e.get("event") == "scaler_member_started"]
        backends = scaled.backends()
        assert len(backends) == 1 and backends[0].metadata["member"] == svc["ID"]
        assert [s["ID"] for s in services(swarm_label)] == [svc["ID"]]
        assert again.stop(signal.SIGTERM) == 0

        # 3. stop-all leaves nothing: no service, no running container, no backend.
        done = subprocess.run(
            [sys.executable, "-m", "scaler", "-c", str(scaled.path), "stop-all"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=90,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        assert "1 member(s) stopped and removed" in done.stdout
        assert services(swarm_label) == []
        assert containers(swarm_label, running_only=True) == []
        assert scaled.backends() == []
