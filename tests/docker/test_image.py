"""lb's image (Dockerfile), built on locally made Debian bases (tests/docker/lb_image.py):
lb runs in it from a mounted /etc/lb/config.toml as a non-root user, proxies to a demo backend
that runs from the same image, is reachable through ``docker exec … lbctl``, reports healthy
through its HEALTHCHECK, runs compiled, and on SIGTERM lets a request in flight finish."""

from __future__ import annotations

import socket
import threading
from pathlib import Path

import orjson
import pytest

from tests.docker.lb_image import Built, Containers, containers, docker, lb_image, wait_until
from tests.helpers import free_port, http_get, to_toml, wait_port

__all__ = ["containers", "lb_image"]  # fixtures

pytestmark = pytest.mark.timeout(1800)  # the first test may build the image (lb_image.py)

LB_UID = 10001


def start_stack(
    built: Built, containers: Containers, tmp_path: Path, grace: str = "10s"
) -> tuple[str, int, int]:
    """A demo backend container and an lb container in front of it; returns (lb container,
    listener port, backend port) once lb answers through the backend."""
    backend = free_port()
    containers.run(
        "--network",
        "host",
        built.image,
        "python",
        "-m",
        "lb.demo_server",
        "--host",
        "127.0.0.1",
        "--port",
        str(backend),
        "--name",
        f"img-{backend}",
    )
    wait_port(backend, timeout=30)
    port = free_port()
    config = tmp_path / "config.toml"
    config.write_text(
        to_toml(
            {
                "lb": {
                    "workers": 1,
                    "grace": grace,
                    "control_socket": "/var/lib/lb/lb.sock",
                    "state_file": "/var/lib/lb/state.json",
                },
                "listeners": [
                    {"name": "web", "bind": f"127.0.0.1:{port}", "mode": "http", "pool": "web"}
                ],
                "pools": {
                    "web": {
                        "health": {"type": "http", "path": "/healthz", "interval": "200ms"},
                        "backends": [{"address": f"127.0.0.1:{backend}"}],
                    }
                },
            }
        )
    )
    config.chmod(0o644)
    name = containers.run(
        "--network", "host",
        "--health-interval", "1s", "--health-start-period", "30s",
        "-v", f"{config}:/etc/lb/config.toml:ro",
        built.image,
    )  # fmt: skip
    wait_port(port, timeout=60)

    def through() -> bool:
        try:
            status, _, body = http_get(port, "/", timeout=5)
        except OSError:
            return False
        return status == 200 and f"img-{backend}".encode() in body

    wait_until(through, 60, "a request through lb in the container reaches the backend")
    return name, port, backend


def test_lb_in_the_image_proxies_runs_as_non_root_and_answers_lbctl(
    lb_image: Built, containers: Containers, tmp_path: Path
) -> None:
    name, _, backend = start_stack(lb_image, containers, tmp_path)

    # Non-root: the container's user, and the uid of lb's process as the host kernel sees it.
    assert (
        docker("inspect", "-f", "{{.Config.User}}", lb_image.image).stdout.strip() == "10001:10001"
    )
    assert docker("exec", name, "id", "-u").stdout.strip() == str(LB_UID)
    pid = int(docker("inspect", "-f", "{{.State.Pid}}", name).stdout)
    uids = next(
        line.split()[1:]
        for line in Path(f"/proc/{pid}/status").read_text().splitlines()
        if line.startswith("Uid:")
    )
    assert uids == [str(LB_UID)] * 4, uids

    # lbctl through docker exec: it finds /etc/lb/config.toml from the image's WORKDIR.
    out = docker("exec", name, "lbctl", "backends")
    assert f"127.0.0.1:{backend}" in out.stdout and " up " in out.stdout, out.stdout
    doc = orjson.loads(docker("exec", name, "lbctl", "--json", "backends", "web").stdout)
    assert [b["health"] for b in doc["backends"]] == ["up"]

    # The hot path is compiled in the image.
    report = docker(
        "exec", name, "python", "-c", "import lb._compiled as c; print(c.report())"
    ).stdout
    assert "lb.http._speedups: loaded" in report and "not compiled" not in report, report
    assert report.count(": compiled") >= 10, report

    # The image's HEALTHCHECK (lb-healthcheck) turns healthy.
    wait_until(
        lambda: (
            docker("inspect", "-f", "{{.State.Health.Status}}", name).stdout.strip() == "healthy"
        ),
        45,
        "the container's health status is healthy",
        step=0.5,
    )
    assert "healthy" in docker("exec", name, "lb-healthcheck").stdout


def test_sigterm_lets_a_request_in_flight_finish(
    lb_image: Built, containers: Containers, tmp_path: Path
) -> None:
    name, port, _ = start_stack(lb_image, containers, tmp_path, grace="15s")
    result: dict[str, object] = {}

    def slow_request() -> None:
        try:
            result["response"] = http_get(port, "/sleep?ms=3000", timeout=30)
        except OSError as exc:
            result["error"] = exc

    client = threading.Thread(target=slow_request)
    client.start()

    def in_flight() -> bool:
        doc = orjson.loads(docker("exec", name, "lbctl", "--json", "backends", "web").stdout)
        return sum(b["active"] for b in doc["backends"]) == 1

    wait_until(in_flight, 10, "the slow request is in flight in lb", step=0.05)
    docker("kill", "--signal", "TERM", name)

    # lb stops accepting at once, while the request in flight goes on.
    def refused() -> bool:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return False
        except OSError:
            return True

    wait_until(refused, 10, "lb refuses new connections after SIGTERM")
    assert client.is_alive(), f"the request ended before its backend answered: {result}"
    client.join(30)
    assert "error" not in result, result
    status, _, body = result["response"]  # type: ignore[misc]
    assert status == 200 and body.startswith(b"slept 3000 ms"), (status, body)

    assert docker("wait", name, timeout=60).stdout.strip() == "0"
    logs = docker("logs", name)
    assert "stopping (SIGTERM)" in logs.stdout + logs.stderr
