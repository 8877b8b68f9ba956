"""lb's container image, built once per test session and shared by tests/docker/test_image*.py
and test_compose*.py (``lb_image`` fixture).

Nothing is pulled: the Dockerfile builds on two Debian bookworm bases made here with mmdebstrap
(deploy/docker/base-image.sh, once per engine: their tags follow their package lists), with
the wheels of lb's dependencies fetched beforehand by this machine's pip
(deploy/docker/wheelhouse.sh), and ``PIP_NO_INDEX=1``. The build stage is tagged
``lb-build:test`` so that its ``/dist`` (the sdist and the wheel of ``python -m build``) can be
copied out; the image is tagged ``lb:test`` and ``lb:latest`` (the name that
deploy/compose/config.toml starts its members from). The engine's layer cache makes a second
build of the same source a matter of seconds.

Without docker, mmdebstrap or a reachable engine the tests skip, and fail instead under
``LB_REQUIRE_DOCKER=1``."""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers import ROOT, env_flag

IMAGE = "lb:test"
BUILD_STAGE = "lb-build:test"
BUILD_LABEL = "lb.test-build=1"  # on every image built here (the cleanup below finds them)
BUILD_TIMEOUT = 1500.0  # a cold build: the two Debian bases and the compile (~10 min here)


@dataclass(frozen=True)
class Built:
    image: str
    dist: Path  # lb-VERSION.tar.gz and lb-VERSION-*.whl from the build stage
    log: Path


def unavailable(why: str) -> None:
    if env_flag("LB_REQUIRE_DOCKER"):
        pytest.fail(f"LB_REQUIRE_DOCKER=1 but {why}", pytrace=False)
    pytest.skip(why)


def docker(
    *args: str, timeout: float = 60.0, check: bool = True
) -> subprocess.CompletedProcess[str]:
    out = subprocess.run(
        ["docker", *args], capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
    )
    if check and out.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)}: exit {out.returncode}\n{out.stderr}")
    return out


def _run_logged(args: Sequence[str], log: Path, timeout: float, env: dict[str, str]) -> str:
    with log.open("a") as fh:
        fh.write(f"\n$ {' '.join(args)}\n")
        fh.flush()
        out = subprocess.run(
            list(args),
            stdout=subprocess.PIPE,
            stderr=fh,
            text=True,
            timeout=timeout,
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
        )
        fh.write(out.stdout)
    if out.returncode != 0:
        tail = "\n".join(log.read_text().splitlines()[-40:])
        raise AssertionError(f"{' '.join(args)} failed (exit {out.returncode}); {log}:\n{tail}")
    return out.stdout


@functools.cache
def build(workdir: Path) -> Built:
    if shutil.which("docker") is None:
        unavailable("the docker CLI is not installed (apt-get install docker.io)")
    if shutil.which("mmdebstrap") is None:
        unavailable("mmdebstrap is not installed (apt-get install mmdebstrap)")
    workdir.mkdir(parents=True, exist_ok=True)
    log = workdir / "build.log"
    env = {**os.environ, "DOCKER_BUILDKIT": "0", "PYTHON": sys.executable}
    t0 = time.monotonic()
    names = _run_logged(["deploy/docker/base-image.sh"], log, BUILD_TIMEOUT, env).split()
    base, build_base = names[-2], names[-1]
    _run_logged(["deploy/docker/wheelhouse.sh"], log, 600, env)
    common = [
        "--label",
        BUILD_LABEL,
        "--network",
        "host",
        "--build-arg",
        f"BASE={base}",
        "--build-arg",
        f"BUILD_BASE={build_base}",
        "--build-arg",
        "PIP_NO_INDEX=1",
    ]
    left = BUILD_TIMEOUT - (time.monotonic() - t0)
    _run_logged(
        ["docker", "build", *common, "--target", "build", "-t", BUILD_STAGE, "."], log, left, env
    )
    left = BUILD_TIMEOUT - (time.monotonic() - t0)
    _run_logged(["docker", "build", *common, "-t", IMAGE, "-t", "lb:latest", "."], log, left, env)
    # Dangling images that this build replaced (they carry our label) go, so that builds do not
    # pile up on the engine (vfs, where overlay2 is not available, copies every layer whole).
    docker("image", "prune", "--force", "--filter", f"label={BUILD_LABEL}", timeout=300)
    dist = workdir / "dist"
    cid = docker("create", BUILD_STAGE).stdout.strip()
    try:
        docker("cp", f"{cid}:/dist", str(dist))
    finally:
        docker("rm", "-f", cid, check=False)
    with log.open("a") as fh:
        fh.write(f"\nbuilt {IMAGE} in {time.monotonic() - t0:.0f}s\n")
    return Built(IMAGE, dist, log)


@pytest.fixture(scope="session")
def lb_image(docker_engine: str, tmp_path_factory: pytest.TempPathFactory) -> Built:
    """The image, built on the first use in a session (``functools.cache``: every module that
    imports this fixture gets the same build)."""
    return build(tmp_path_factory.getbasetemp() / "lb-image")


class Containers:
    """``docker run -d`` with the test's label; every container is removed at the end."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.names: list[str] = []

    def run(self, *args: str, name: str | None = None) -> str:
        name = name or f"lbtest-{uuid.uuid4().hex[:10]}"
        docker("run", "-d", "--name", name, "--label", f"test-run={self.label}", *args)
        self.names.append(name)
        return name

    def close(self) -> None:
        for name in reversed(self.names):
            docker("rm", "-f", name, check=False)


@pytest.fixture
def containers(run_label: str) -> Iterator[Containers]:
    c = Containers(run_label)
    try:
        yield c
    finally:
        c.close()


def wait_until(cond: Callable[[], object], limit: float, what: str, step: float = 0.1) -> None:
    deadline = time.monotonic() + limit
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {limit}s: {what}")
        time.sleep(step)


def compose_command() -> list[str]:
    """``docker compose`` (the v2 plugin) where it works, else ``docker-compose`` (v1)."""
    probe = subprocess.run(["docker", "compose", "version"], capture_output=True, timeout=30)
    if probe.returncode == 0:
        return ["docker", "compose"]
    v1 = shutil.which("docker-compose")
    if v1 is None:
        unavailable("neither `docker compose` nor docker-compose is installed")
        raise AssertionError("unreachable")
    return [v1]
