"""Docker tests: a real engine (``scripts/dockerd.sh start``; ``DOCKER_HOST``), skipped when
none is reachable, failed instead when ``LB_REQUIRE_DOCKER=1`` (as ``.ci/run`` sets it).

The tests build their own image, ``lbtest/busybox-cgi:2``: busybox httpd with ``/healthz``
and a CGI ``/cgi-bin/slow`` that answers after 0.2 s with ``X-Backend: web-$PORT``. Every
container a test's scaler starts carries the label ``test-run=<id>``, and the fixture removes
them all at the end, whatever happened.

The Swarm tests also need the engine to be a Swarm manager (``scripts/dockerd.sh start`` runs
``docker swarm init``): ``swarm_engine`` skips without it (fails under ``LB_REQUIRE_DOCKER=1``),
and ``swarm_label`` removes every service with its label at the end."""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import shutil
import tarfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import aiodocker
import aiohttp
import pytest

from tests.helpers import ProcessGroup, env_flag

IMAGE = "lbtest/busybox-cgi:2"
# The CGI writes its own header block: CRLF line ends, as HTTP wants them (lb refuses bare LF).
SLOW_CGI = b"""#!/bin/busybox sh
/bin/busybox sleep 0.2
printf 'Content-Type: text/plain\\r\\nX-Backend: web-%s\\r\\n\\r\\nslow\\n' "$PORT"
"""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.docker)


def _unavailable(why: str) -> None:
    if env_flag("LB_REQUIRE_DOCKER"):
        pytest.fail(f"LB_REQUIRE_DOCKER=1 but {why}", pytrace=False)
    pytest.skip(why)


async def _engine_version() -> str:
    docker = aiodocker.Docker()
    try:
        async with asyncio.timeout(5):
            return str((await docker.version())["Version"])
    finally:
        await docker.close()


def _image_tar() -> bytes:
    busybox = shutil.which("busybox") or "/bin/busybox"
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:

        def add(name: str, data: bytes, mode: int = 0o644) -> None:
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), mode
            tar.addfile(info, io.BytesIO(data))

        for d in ("bin", "www", "www/cgi-bin", "tmp"):
            info = tarfile.TarInfo(d)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info)
        add("bin/busybox", Path(busybox).read_bytes(), 0o755)
        add("www/healthz", b"ok\n")
        add("www/index.html", b"hello\n")
        add("www/cgi-bin/slow", SLOW_CGI, 0o755)
    return buf.getvalue()


async def _build_image() -> None:
    docker = aiodocker.Docker()
    try:
        try:
            await docker.images.inspect(IMAGE)
            return
        except aiodocker.DockerError as exc:
            if exc.status != 404:
                raise
    finally:
        await docker.close()
    host = os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
    # `docker import`: POST /images/create?fromSrc=- with the root file system as a tar.
    repo, tag = IMAGE.rsplit(":", 1)
    if host.startswith("unix://"):
        connector: aiohttp.BaseConnector = aiohttp.UnixConnector(path=host[len("unix://") :])
        base = "http://docker"
    else:
        connector = aiohttp.TCPConnector()
        base = host.replace("tcp://", "http://")
    async with (
        aiohttp.ClientSession(connector=connector) as s,
        s.post(
            f"{base}/images/create",
            params={"fromSrc": "-", "repo": repo, "tag": tag},
            data=io.BytesIO(_image_tar()),
            headers={"Content-Type": "application/x-tar"},
        ) as r,
    ):
        body = await r.read()
        assert r.status == 200, body


@pytest.fixture(scope="session")
def docker_engine() -> str:
    """The engine's version, with the test image built; skips (or fails) without one."""
    if not (shutil.which("busybox") or os.path.exists("/bin/busybox")):
        _unavailable("busybox is not installed (apt-get install busybox-static)")
    if not os.environ.get("DOCKER_HOST") and not os.path.exists("/var/run/docker.sock"):
        _unavailable("no Docker engine: DOCKER_HOST is not set (scripts/dockerd.sh start)")
    try:
        version = asyncio.run(_engine_version())
    except (aiodocker.DockerError, OSError, TimeoutError, ValueError) as exc:
        _unavailable(f"no Docker engine reachable ({exc}); run scripts/dockerd.sh start")
    asyncio.run(_build_image())
    return version


async def remove_labelled(label: str) -> int:
    docker = aiodocker.Docker()
    try:
        found = await docker.containers.list(all=True, filters={"label": [label]})
        for c in found:
            await c.delete(force=True)
        return len(found)
    finally:
        await docker.close()


@pytest.fixture
def run_label(docker_engine: str) -> Iterator[str]:
    """A label value unique to this test; every container with it is removed at the end."""
    value = uuid.uuid4().hex[:12]
    try:
        yield value
    finally:
        asyncio.run(remove_labelled(f"test-run={value}"))


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[ProcessGroup]:
    group = ProcessGroup(tmp_path)
    try:
        yield group
    finally:
        group.close()


# -- Swarm (the swarm provider's tests) ---------------------------------------------------------


async def _swarm_state() -> tuple[str, bool]:
    docker = aiodocker.Docker()
    try:
        async with asyncio.timeout(5):
            swarm = (await docker.system.info()).get("Swarm") or {}
    finally:
        await docker.close()
    return str(swarm.get("LocalNodeState") or "?"), bool(swarm.get("ControlAvailable"))


@pytest.fixture(scope="session")
def swarm_engine(docker_engine: str) -> str:
    """The engine's version, once it is a Swarm manager; skips (or fails under
    LB_REQUIRE_DOCKER=1) when it is not in swarm mode."""
    state, manager = asyncio.run(_swarm_state())
    if state != "active" or not manager:
        _unavailable(
            f"the Docker engine is not a Swarm manager (swarm state {state}); "
            "scripts/dockerd.sh start runs docker swarm init"
        )
    return docker_engine


async def remove_labelled_services(label: str, within: float = 30.0) -> int:
    """Remove every service with ``label``, then wait until their containers are gone."""
    docker = aiodocker.Docker()
    try:
        found = await docker.services.list(filters={"label": [label]})
        for s in found:
            with contextlib.suppress(aiodocker.DockerError):
                await docker.services.delete(s["ID"])
        deadline = asyncio.get_running_loop().time() + within
        while asyncio.get_running_loop().time() < deadline:
            if not await docker.containers.list(all=True, filters={"label": [label]}):
                break
            await asyncio.sleep(0.2)
        for c in await docker.containers.list(all=True, filters={"label": [label]}):
            with contextlib.suppress(aiodocker.DockerError):
                await c.delete(force=True)
        return len(found)
    finally:
        await docker.close()


@pytest.fixture
def swarm_label(swarm_engine: str) -> Iterator[str]:
    """A label value unique to this test; every service (and container) with it is removed at
    the end, whatever happened."""
    value = uuid.uuid4().hex[:12]
    try:
        yield value
    finally:
        asyncio.run(remove_labelled_services(f"test-run={value}"))
