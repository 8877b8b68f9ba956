"""The ``docker`` provider: each member is a container, driven through aiodocker.

Theory of operation
-------------------
Every container it creates carries the labels ``lb.managed-by=scaler``, ``lb.pool=POOL`` and
``lb.port`` (plus the user's labels). The labels are the only record: ``list()`` asks the
engine for the containers with both labels, in any state, so a restarted scaler adopts what
an earlier one started, and a container whose start was interrupted (state ``created``) or
that died (``exited``) is reported not running, to be removed. Nothing is pulled: the image
must be on the engine.

The labels are written by the create, before the start, so a scaler killed at any moment
leaves nothing unknown: killed before or during the create, the engine has no container, or
a labelled one; between the create and the start, a ``created`` container, which the next
scaler (or ``stop-all``) removes; between the start and the registration in lb, a running
one, which the next scaler adopts and registers (``tests/docker/test_scaler_docker_orphans.py``
kills it at both moments).

With ``network_mode = "host"`` a member gets a port from ``port_range`` and binds
``host:port`` itself (``{port}`` in the command, ``$PORT`` in its environment); with
``"bridge"`` it listens on ``container_port`` inside the container, which is published on
``host`` (127.0.0.1) at a port the engine chooses and the provider reads back.

``create()`` returns once the container runs and its address accepts connections; on any
failure (bad image, start error, exit, no listener within ``start_timeout``) the container is
removed before the error is raised, so a failed start leaves nothing behind.
``stop_and_remove()`` is ``docker stop -t`` then ``docker rm -f``. ``events()`` follows the
engine's event stream (``die``/``destroy`` of labelled containers) for fast death notice.
``cpu()`` reads one stats sample per call, within ``stats_timeout``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import secrets
import shlex
import socket
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

import aiodocker
from aiodocker.exceptions import DockerError

from scaler.config import DockerSettings, parse_port_range
from scaler.providers.base import (
    LISTEN_POLL,
    MANAGED_BY,
    CpuSample,
    Member,
    MemberGone,
    ProviderError,
    pick_port,
)

log = logging.getLogger("scaler.docker")

DEFAULT_SOCKET = "/var/run/docker.sock"
CONNECT_TIMEOUT = 5.0  # the engine must answer a version call within this at open()
CALL_TIMEOUT = 30.0  # any other engine call (stop waits longer: its own timeout is added)


def render(template: str | list[str], values: dict[str, str]) -> list[str]:
    words = shlex.split(template) if isinstance(template, str) else list(template)
    out = []
    for word in words:
        for key, value in values.items():
            word = word.replace("{" + key + "}", value)
        out.append(word)
    return out


def _error_text(exc: DockerError) -> str:
    return str(exc.message).strip() or f"HTTP {exc.status}"


class EngineProvider:
    """What the Docker and Swarm providers share: the engine's address and connection, the
    labels that mark a pool's members, and the ports of host-network members."""

    kind: str  # "docker" or "swarm": also its config table, [scalers.KIND]
    title: str  # for messages: "Docker", "Swarm"

    def __init__(
        self,
        pool: str,
        *,
        docker_url: str | None,
        image: str,
        port_range: str,
        start_timeout: float,
    ) -> None:
        self.pool = pool
        self.docker_url = docker_url
        self.image = image
        self.start_timeout = start_timeout
        self.port_lo, self.port_hi = parse_port_range(port_range)
        self._last_port = self.port_hi
        self._reserved: set[int] = set()  # ports of members being created right now
        self.docker: aiodocker.Docker | None = None
        self.labels = {"lb.managed-by": MANAGED_BY, "lb.pool": pool}
        self.log = logging.getLogger(f"scaler.{self.kind}")

    @property
    def url(self) -> str:
        """The engine's address, as configured (for messages)."""
        default = f"unix://{DEFAULT_SOCKET} (the default)"
        return self.docker_url or os.environ.get("DOCKER_HOST") or default

    # -- lifecycle ------------------------------------------------------------------------------

    async def _connect(self) -> Mapping[str, Any]:
        """Connect to the engine; its ``info``. Raises ProviderError naming the setting to fix."""
        table = f"[scalers.{self.kind}]"
        url = self.docker_url or os.environ.get("DOCKER_HOST")
        if url is None and not await asyncio.to_thread(os.path.exists, DEFAULT_SOCKET):
            raise ProviderError(
                f"no Docker engine address: DOCKER_HOST is not set and there is no "
                f"{DEFAULT_SOCKET}; set {table} docker_url or DOCKER_HOST"
            )
        try:
            self.docker = aiodocker.Docker(url=url)
        except (ValueError, AssertionError, OSError) as exc:
            raise ProviderError(
                f"bad Docker engine address {url!r}: {exc}; set {table} docker_url "
                "or DOCKER_HOST to unix:///path/docker.sock or tcp://host:port"
            ) from None
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT):
                info: Mapping[str, Any] = await self.docker.system.info()
        except (DockerError, TimeoutError, OSError) as exc:
            why = _error_text(exc) if isinstance(exc, DockerError) else "no answer"
            await self.close()
            raise ProviderError(
                f"cannot reach the Docker engine at {self.url}: {why}; start it, or set "
                f"{table} docker_url / DOCKER_HOST"
            ) from None
        return info

    async def _check_image(self, missing: str) -> None:
        """Log ``missing`` (with the image and the engine's address) when the image is not on
        the engine: members cannot start until it is there, but the scaler still runs."""
        try:
            async with asyncio.timeout(CALL_TIMEOUT):
                await self._engine().images.inspect(self.image)
        except DockerError as exc:
            if exc.status != 404:
                raise ProviderError(f"Docker engine: {_error_text(exc)}") from None
            self.log.error(missing, self.image, self.url)

    async def close(self) -> None:
        if self.docker is not None:
            await self.docker.close()
            self.docker = None

    def _engine(self) -> aiodocker.Docker:
        if self.docker is None:
            raise ProviderError(f"the {self.title} provider is not open")
        return self.docker


class DockerProvider(EngineProvider):
    kind = "docker"
    title = "Docker"

    def __init__(self, pool: str, settings: DockerSettings, *, start_timeout: float) -> None:
        super().__init__(
            pool,
            docker_url=settings.docker_url,
            image=settings.image,
            port_range=settings.port_range,
            start_timeout=start_timeout,
        )
        self.settings = settings

    async def open(self) -> None:
        await self._connect()
        await self._check_image(
            "image %s is not on the Docker engine at %s: members cannot start until it is built "
            "or loaded (the scaler never pulls)"
        )

    # -- list -----------------------------------------------------------------------------------

    async def _containers(self) -> list[dict[str, Any]]:
        filters = {"label": [f"{k}={v}" for k, v in self.labels.items()]}
        try:
            async with asyncio.timeout(CALL_TIMEOUT):
                found = await self._engine().containers.list(all=True, filters=filters)
        except DockerError as exc:
            raise ProviderError(f"Docker engine at {self.url}: {_error_text(exc)}") from None
        except TimeoutError:
            raise ProviderError(f"Docker engine at {self.url}: no answer listing members") from None
        return [c._container for c in found]

    def _member(self, c: dict[str, Any]) -> Member:
        labels = c.get("Labels") or {}
        state = str(c.get("State", ""))
        name = str((c.get("Names") or ["?"])[0]).lstrip("/")
        address = ""
        if self.settings.network_mode == "host":
            address = f"{self.settings.host}:{labels.get('lb.port', '0')}"
        else:
            for p in c.get("Ports") or []:
                if p.get("PrivatePort") == self.settings.container_port and p.get("PublicPort"):
                    address = f"{self.settings.host}:{p['PublicPort']}"
                    break
        running = state == "running" and bool(address)
        return Member(
            id=str(c["Id"]),
            name=name,
            address=address,
            created=float(c.get("Created", 0)),
            running=running,
            detail="" if running else str(c.get("Status", state)),
            info={"container": str(c["Id"])[:12], "image": str(c.get("Image", ""))},
        )

    async def list(self) -> list[Member]:
        return [self._member(c) for c in await self._containers()]

    # -- create ---------------------------------------------------------------------------------

    async def create(self) -> Member:
        s = self.settings
        port = 0
        if s.network_mode == "host":
            taken = set(self._reserved)
            for c in await self._containers():
                with contextlib.suppress(ValueError):
                    taken.add(int((c.get("Labels") or {}).get("lb.port", "0")))
            found = pick_port(self.port_lo, self.port_hi, taken, self._last_port, s.host)
            if found is None:
                raise ProviderError(
                    f"no free port in port_range {s.port_range}; widen it or lower max"
                )
            port = self._last_port = found
            self._reserved.add(port)
        try:
            return await self._create(port)
        finally:
            self._reserved.discard(port)

    async def _create(self, port: int) -> Member:
        s = self.settings
        docker = self._engine()
        inner = port or s.container_port or 0
        values = {"port": str(inner), "host": s.host, "pool": self.pool}
        name = f"lb-{self.pool}-{port or 'b'}-{secrets.token_hex(3)}"
        config: dict[str, Any] = {
            "Image": s.image,
            "Env": [f"{k}={v}" for k, v in s.env.items()]
            + [f"PORT={inner}", f"LB_POOL={self.pool}"],
            "Labels": {**s.labels, **self.labels, "lb.port": str(inner)},
            "HostConfig": {
                "NetworkMode": s.network_mode,
                "Init": s.init,
                "RestartPolicy": {"Name": "no"},
            },
        }
        if s.command is not None:
            config["Cmd"] = render(s.command, values)
        if s.cpus is not None:
            config["HostConfig"]["NanoCpus"] = int(s.cpus * 1e9)
        if s.memory is not None:
            config["HostConfig"]["Memory"] = s.memory
        if s.network_mode == "bridge":
            key = f"{s.container_port}/tcp"
            config["ExposedPorts"] = {key: {}}
            config["HostConfig"]["PortBindings"] = {key: [{"HostIp": s.host, "HostPort": ""}]}
        try:
            async with asyncio.timeout(CALL_TIMEOUT):
                container = await docker.containers.create(config, name=name)
        except DockerError as exc:
            # Nothing was created: the engine refuses before it makes the container.
            if exc.status == 404 and "image" in exc.message.lower():
                raise ProviderError(
                    f"image {s.image!r} is not on the Docker engine at {self.url}: build or "
                    "load it first ([scalers.docker] image; the scaler never pulls)"
                ) from None
            raise ProviderError(
                f"cannot create a container of {s.image}: {_error_text(exc)}"
            ) from None
        except TimeoutError:
            # The engine may still make it: the labels let the next list() find and remove it.
            raise ProviderError(
                f"Docker engine at {self.url}: no answer creating a container"
            ) from None
        try:
            return await self._start(container.id, name, port)
        except BaseException as exc:
            await self._remove_quietly(container.id)
            if isinstance(exc, DockerError):
                raise ProviderError(
                    f"container {name} of {s.image} did not start: {_error_text(exc)}"
                ) from None
            raise

    async def _start(self, cid: str, name: str, port: int) -> Member:
        s = self.settings
        docker = self._engine()
        container = docker.containers.container(cid)
        async with asyncio.timeout(CALL_TIMEOUT):
            await container.start()
        deadline = time.monotonic() + self.start_timeout
        while True:
            async with asyncio.timeout(CALL_TIMEOUT):
                info = await container.show()
            state = info.get("State") or {}
            if not state.get("Running"):
                tail = await self._log_tail(container)
                raise ProviderError(
                    f"container {name} of {s.image} exited (code {state.get('ExitCode')}) "
                    "before it listened" + (f"; its output ends with: {tail}" if tail else "")
                )
            if s.network_mode == "bridge":
                bindings = ((info.get("NetworkSettings") or {}).get("Ports") or {}).get(
                    f"{s.container_port}/tcp"
                ) or []
                port = int(bindings[0]["HostPort"]) if bindings else 0
            if port and await _accepts(s.host, port):
                break
            if time.monotonic() >= deadline:
                where = f"{s.host}:{port}" if port else f"container port {s.container_port}"
                raise ProviderError(
                    f"container {name} of {s.image} runs but nothing accepted connections on "
                    f"{where} within {self.start_timeout:g}s; check its command and port"
                )
            await asyncio.sleep(LISTEN_POLL)
        for c in await self._containers():
            if c["Id"] == cid:
                return self._member(c)
        raise ProviderError(f"container {name} disappeared right after it started")

    async def _log_tail(self, container: Any) -> str:
        try:
            async with asyncio.timeout(5):
                lines = await container.log(stdout=True, stderr=True, tail=5)
        except (DockerError, TimeoutError):
            return ""
        return " | ".join(str(line).strip() for line in lines if str(line).strip())

    async def _remove_quietly(self, cid: str) -> None:
        with contextlib.suppress(DockerError, TimeoutError, ProviderError):
            async with asyncio.timeout(CALL_TIMEOUT):
                await self._engine().containers.container(cid).delete(force=True)

    # -- stop -----------------------------------------------------------------------------------

    async def stop_and_remove(self, member: Member, grace: float) -> None:
        container = self._engine().containers.container(member.id)
        try:
            async with asyncio.timeout(CALL_TIMEOUT + grace):
                await container.stop(t=math.ceil(grace))
        except DockerError as exc:
            if exc.status == 404:
                return
            log.warning("docker stop %s: %s; removing it anyway", member.name, _error_text(exc))
        except TimeoutError:
            log.warning("docker stop %s: no answer; removing it anyway", member.name)
        try:
            async with asyncio.timeout(CALL_TIMEOUT):
                await container.delete(force=True)
        except DockerError as exc:
            if exc.status != 404:
                raise ProviderError(f"docker rm {member.name}: {_error_text(exc)}") from None
        except TimeoutError:
            raise ProviderError(f"docker rm {member.name}: no answer from the engine") from None

    # -- events and stats -----------------------------------------------------------------------

    async def events(self) -> AsyncIterator[MemberGone]:
        docker = self._engine()
        stream: Any = docker.events  # untyped in aiodocker
        filters = {
            "type": ["container"],
            "event": ["die", "destroy"],
            "label": [f"{k}={v}" for k, v in self.labels.items()],
        }
        while True:
            subscriber = stream.subscribe(filters=filters)
            while True:
                event = await subscriber.get()
                if event is None:
                    break  # the stream ended (engine restarted?): subscribe again
                actor = event.get("Actor") or {}
                cid = str(actor.get("ID") or event.get("id") or "")
                attrs = actor.get("Attributes") or {}
                action = str(event.get("Action") or event.get("status") or "")
                code = attrs.get("exitCode")
                detail = f"{action} (exit code {code})" if code is not None else action
                if cid:
                    yield MemberGone(cid, detail)
            await stream.stop()
            log.warning("Docker event stream ended; following it again in 1s")
            await asyncio.sleep(1.0)

    async def cpu(self, member: Member) -> CpuSample | None:
        container = self._engine().containers.container(member.id)
        try:
            async with asyncio.timeout(self.settings.stats_timeout):
                samples = await container.stats(stream=False)
        except (DockerError, TimeoutError):
            return None
        if not samples:
            return None
        usage = ((samples[-1].get("cpu_stats") or {}).get("cpu_usage") or {}).get("total_usage")
        if not isinstance(usage, int | float):
            return None
        return CpuSample(usage / 1e9, time.monotonic())


async def _accepts(host: str, port: int) -> bool:
    loop = asyncio.get_running_loop()
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.setblocking(False)
        try:
            async with asyncio.timeout(1.0):
                await loop.sock_connect(sock, (host, port))
        except (OSError, TimeoutError):
            return False
    return True
