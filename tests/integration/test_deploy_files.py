"""The deploy/ files that external tools check: systemd's units (``systemd-analyze verify``),
and the compose file (``docker compose config``). Each test skips when its tool is missing,
and fails instead under ``LB_REQUIRE_DEPLOY_TOOLS=1`` (``.ci/run`` sets it after it installed
them). The rules file is checked by promtool in ``make test`` (Makefile, ``deploy-check``)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import ROOT, env_flag

SYSTEMD = ROOT / "deploy" / "systemd"
COMPOSE = ROOT / "deploy" / "compose"
UNITS = ("lb.service", "lb-scaler.service")


def need(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        if env_flag("LB_REQUIRE_DEPLOY_TOOLS"):
            pytest.fail(f"LB_REQUIRE_DEPLOY_TOOLS=1 but {tool} is not installed", pytrace=False)
        pytest.skip(f"{tool} is not installed")
    return path


def test_systemd_units_verify(tmp_path: Path) -> None:
    """``systemd-analyze verify`` checks that every Exec*= command exists: the units name
    /opt/lb/bin (docs/deploy.md), so the copies verified here point at this venv's scripts,
    and nothing else changes. Any message at all (an unknown key, a bad value) fails."""
    analyze = need("systemd-analyze")
    bindir = Path(sys.executable).parent
    for tool in ("lb", "lbctl", "lb-scaler"):
        assert (bindir / tool).exists(), f"{tool} is not installed next to {sys.executable}"
    for unit in UNITS:
        text = (SYSTEMD / unit).read_text()
        assert "/opt/lb/bin/" in text
        (tmp_path / unit).write_text(text.replace("/opt/lb/bin/", f"{bindir}/"))
    out = subprocess.run(
        [analyze, "verify", *(str(tmp_path / u) for u in UNITS)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "SYSTEMD_LOG_LEVEL": "notice"},
    )
    assert out.returncode == 0 and not out.stdout.strip() and not out.stderr.strip(), out


def test_systemd_units_say_what_the_issue_asks() -> None:
    lb = (SYSTEMD / "lb.service").read_text()
    for line in (
        "Type=notify",
        "ExecReload=/opt/lb/bin/lbctl -c /etc/lb/config.toml reload",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "ReadWritePaths=/run/lb /var/lib/lb",
        "User=lb",
    ):
        assert f"\n{line}\n" in lb, line
    scaler = (SYSTEMD / "lb-scaler.service").read_text()
    for line in ("Requires=lb.service", "After=lb.service docker.service", "NoNewPrivileges=yes"):
        assert f"\n{line}\n" in scaler, line


def compose_command() -> list[str]:
    """``docker compose`` (the v2 plugin) where it works, else ``docker-compose`` (v1)."""
    docker = shutil.which("docker")
    if docker is not None:
        probe = subprocess.run([docker, "compose", "version"], capture_output=True, timeout=30)
        if probe.returncode == 0:
            return [docker, "compose"]
    return [need("docker-compose")]


def test_compose_file_is_valid() -> None:
    env = {**os.environ, "DOCKER_GID": "999", "LB_IMAGE": "lb:latest"}
    out = subprocess.run(
        [*compose_command(), "-f", str(COMPOSE / "docker-compose.yml"), "config"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=COMPOSE,
    )
    assert out.returncode == 0, out
    for service in ("lb:", "lb-scaler:"):
        assert service in out.stdout
    assert out.stdout.count("network_mode: host") == 2
