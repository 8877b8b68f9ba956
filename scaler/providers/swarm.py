"""The ``swarm`` provider: each member is a single-replica Docker Swarm service.

Theory of operation
-------------------
The scaler is the replica controller: it decides how many members a pool has, and which
one goes (the one it drained). Swarm supplies placement on a node, the image on that node,
and the start. One service with N replicas cannot do that: when its replicas drop, Swarm
chooses the task to stop (non-running tasks first, then by node balance), not the one lb
drained. So every member is its own service with one replica, and removing a member is
removing its service: exactly that task goes, on whatever node it runs, with no call to that
node's engine.

Every service it creates carries the labels ``lb.managed-by=scaler``, ``lb.pool=POOL`` and
``lb.port`` (plus the user's labels), on the service and on its container. The labels are the
only record: ``list()`` asks a manager for the services and tasks with both labels, so a
restarted scaler adopts what an earlier one started. A member's id is its service id, stable
for its whole life; ``Member.info`` names its current task, the node it runs on and its slot.

Members use the host network and bind ``host:port``, with a port from ``port_range`` chosen
per service (``{port}`` in the command, ``$PORT`` in its environment).

Swarm does not restart a task here (restart condition ``none``): a task that dies leaves its
service without a running task, ``list()`` reports the member not running, and the controller
removes that service, deregisters its address and starts a new member on a new port (ports
rotate through the range). A restarted task would come back on the same address with lb's
registration (and its metadata naming the old task) left as it was, and two replica
controllers (Swarm restarting, the scaler replacing) would race over the same member. For the
same reason a task Swarm replaced by itself (a forced service update, a drained node) is
reported dead: a member is the task its service started first.

``create()`` returns once the task runs and ``host:port`` accepts connections; on any failure
(no such image on the node, a task that fails or is rejected, no listener within
``start_timeout``) the service is removed before the error is raised. ``stop_and_remove()``
removes the service (Swarm stops its task with the service's ``StopGracePeriod``: SIGTERM,
then SIGKILL) and waits, on the local node, until its container has stopped; it is
idempotent. ``events()`` follows the engine's events (``die`` of a labelled container,
``remove`` of a service) for fast death notice; a container on another node dies unseen by
this engine's events, and the next ``list()`` (every interval) finds it. ``cpu()`` reads the
container's stats through the local engine: None for a task on another node.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import secrets
import time
from collections.abc import AsyncIterator, Mapping
from datetime import datetime
from typing import Any

from aiodocker.exceptions import DockerError

from scaler.config import SwarmSettings
from scaler.providers.base import (
    LISTEN_POLL,
    CpuSample,
    Member,
    MemberGone,
    ProviderError,
    pick_port,
)
from scaler.providers.docker import EngineProvider, _accepts, _error_text, render

log = logging.getLogger("scaler.swarm")

CONNECT_TIMEOUT = 5.0  # the engine must answer a version call within this at open()
CALL_TIMEOUT = 30.0  # any other engine call
TASK_POLL = 0.05  # between two looks at a starting task
SERVICE_LABEL = "com.docker.swarm.service.id"  # set by Swarm on every task's container
# Task states from which a task never runs (again).
ENDED = frozenset({"complete", "shutdown", "failed", "rejected", "remove", "orphaned"})
_FRACTION = re.compile(r"\.(\d+)")


def parse_time(text: object) -> float:
    """Swarm's ``CreatedAt`` (RFC 3339 with nanoseconds) -> epoch seconds; 0 if unreadable."""
    if not isinstance(text, str) or not text:
        return 0.0
    value = _FRACTION.sub(lambda m: "." + m.group(1)[:6].ljust(6, "0"), text, count=1)
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return 0.0


def current_task(tasks: list[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The task that speaks for a service: one Swarm wants running, else the newest."""
    if not tasks:
        return None

    def key(t: Mapping[str, Any]) -> tuple[bool, int, float]:
        index = (t.get("Version") or {}).get("Index")
        return (
            t.get("DesiredState") == "running",
            index if isinstance(index, int) else 0,
            parse_time(t.get("CreatedAt")),
        )

    return max(tasks, key=key)


def task_state(task: Mapping[str, Any] | None) -> tuple[bool, str]:
    """(running, why not) of a service's current task."""
    if task is None:
        return False, "no task"
    status = task.get("Status") or {}
    state = str(status.get("State", "?"))
    running = state == "running" and task.get("DesiredState") == "running"
    if running:
        return True, ""
    why = f"task {str(task.get('ID', '?'))[:12]} {state}"
    err = str(status.get("Err") or "").strip()
    return False, why + (f": {err}" if err else "")


def member_state(tasks: list[Mapping[str, Any]]) -> tuple[Mapping[str, Any] | None, bool, str]:
    """(current task, running, why not) of one service's tasks. A service whose running task
    is not its first one had its task replaced by Swarm itself (``docker service update
    --force``, a drained node): lb's registration names the old task, so the member counts
    as dead and the scaler replaces it with a new one."""
    task = current_task(tasks)
    running, why = task_state(task)
    if running and task is not None:
        older = [t for t in tasks if t.get("ID") != task.get("ID")]
        if older:
            first = min(older, key=lambda t: parse_time(t.get("CreatedAt")))
            return (
                task,
                False,
                f"task {str(task.get('ID', '?'))[:12]} replaced task "
                f"{str(first.get('ID', '?'))[:12]} (Swarm rescheduled it: a service update or "
                "a drained node)",
            )
    return task, running, why


def service_name(pool: str, port: int) -> str:
    """A valid Swarm service name (letters, digits, dashes; at most 63 characters)."""
    safe = re.sub(r"[^A-Za-z0-9-]+", "-", pool).strip("-")[:40] or "pool"
    return f"lb-{safe}-{port}-{secrets.token_hex(3)}"


class SwarmProvider(EngineProvider):
    kind = "swarm"
    title = "Swarm"

    def __init__(
        self, pool: str, settings: SwarmSettings, *, start_timeout: float, stop_timeout: float
    ) -> None:
        super().__init__(
            pool,
            docker_url=settings.docker_url,
            image=settings.image,
            port_range=settings.port_range,
            start_timeout=start_timeout,
        )
        self.settings = settings
        self.stop_timeout = stop_timeout
        self._nodes: dict[str, str] = {}  # node id -> host name

    # -- lifecycle ------------------------------------------------------------------------------

    async def open(self) -> None:
        info = await self._connect()
        swarm = info.get("Swarm") or {}
        if swarm.get("LocalNodeState") != "active" or not swarm.get("ControlAvailable"):
            await self.close()
            state = swarm.get("LocalNodeState") or "unknown"
            raise ProviderError(
                f"the Docker engine at {self.url} is not a Swarm manager (swarm state: "
                f"{state}); run `docker swarm init` there, or point [scalers.swarm] docker_url "
                "at a manager"
            )
        await self._check_image(
            "image %s is not on the manager at %s: a task is rejected on every node without it "
            "(the scaler never pulls)"
        )

    # -- list -----------------------------------------------------------------------------------

    def _filters(self) -> dict[str, list[str]]:
        return {"label": [f"{k}={v}" for k, v in self.labels.items()]}

    async def _call(self, what: str, coro: Any) -> Any:
        try:
            async with asyncio.timeout(CALL_TIMEOUT):
                return await coro
        except DockerError as exc:
            raise ProviderError(f"Swarm manager at {self.url}: {_error_text(exc)}") from None
        except TimeoutError:
            raise ProviderError(f"Swarm manager at {self.url}: no answer {what}") from None

    async def _services(self) -> list[Mapping[str, Any]]:
        found: list[Mapping[str, Any]] = await self._call(
            "listing services", self._engine().services.list(filters=self._filters())
        )
        return found

    async def _tasks(self, service_id: str | None = None) -> list[Mapping[str, Any]]:
        filters: dict[str, list[str]] = {"service": [service_id]} if service_id else self._filters()
        found: list[Mapping[str, Any]] = await self._call(
            "listing tasks", self._engine().tasks.list(filters=filters)
        )
        return found

    async def _node_name(self, node_id: str) -> str:
        if node_id and node_id not in self._nodes:
            with contextlib.suppress(ProviderError):
                nodes = await self._call("listing nodes", self._engine().nodes.list())
                for n in nodes:
                    host = (n.get("Description") or {}).get("Hostname") or n.get("ID", "")
                    self._nodes[str(n.get("ID", ""))] = str(host)
        return self._nodes.get(node_id, node_id)

    async def _member(self, service: Mapping[str, Any], tasks: list[Mapping[str, Any]]) -> Member:
        spec = service.get("Spec") or {}
        labels = spec.get("Labels") or {}
        sid = str(service["ID"])
        address = f"{self.settings.host}:{labels.get('lb.port', '0')}"
        task, running, detail = member_state([t for t in tasks if t.get("ServiceID") == sid])
        info = {"service": str(spec.get("Name", sid))}
        if task is not None:
            info["task"] = str(task.get("ID", ""))
            info["node"] = await self._node_name(str(task.get("NodeID") or ""))
            info["slot"] = str(task.get("Slot", ""))
        return Member(
            id=sid,
            name=str(spec.get("Name", sid)),
            address=address,
            created=parse_time(service.get("CreatedAt")),
            running=running,
            detail=detail,
            info=info,
        )

    async def list(self) -> list[Member]:
        services = await self._services()
        if not services:
            return []
        tasks = await self._tasks()
        return [await self._member(s, tasks) for s in services]

    # -- create ---------------------------------------------------------------------------------

    async def create(self) -> Member:
        s = self.settings
        taken = set(self._reserved)
        for svc in await self._services():
            with contextlib.suppress(ValueError):
                taken.add(int(((svc.get("Spec") or {}).get("Labels") or {}).get("lb.port", "0")))
        port = pick_port(self.port_lo, self.port_hi, taken, self._last_port, s.host)
        if port is None:
            raise ProviderError(f"no free port in port_range {s.port_range}; widen it or lower max")
        self._last_port = port
        self._reserved.add(port)
        try:
            return await self._create(port)
        finally:
            self._reserved.discard(port)

    def _task_template(self, port: int) -> dict[str, Any]:
        s = self.settings
        values = {"port": str(port), "host": s.host, "pool": self.pool}
        labels = {**s.labels, **self.labels, "lb.port": str(port)}
        container: dict[str, Any] = {
            "Image": s.image,
            # A dict: aiodocker turns it into the KEY=VALUE list the engine wants.
            "Env": {**s.env, "PORT": str(port), "LB_POOL": self.pool},
            "Labels": labels,
            "Init": s.init,
            "StopGracePeriod": int(self.stop_timeout * 1e9),
        }
        if s.command is not None:
            # Args, as `docker service create IMAGE CMD...` does: the image's entrypoint stays.
            container["Args"] = render(s.command, values)
        template: dict[str, Any] = {
            "ContainerSpec": container,
            "RestartPolicy": {"Condition": "none"},  # the scaler replaces a dead member
            "Networks": [{"Target": "host"}],
        }
        limits: dict[str, int] = {}
        if s.cpus is not None:
            limits["NanoCPUs"] = int(s.cpus * 1e9)
        if s.memory is not None:
            limits["MemoryBytes"] = s.memory
        if limits:
            template["Resources"] = {"Limits": limits}
        if s.constraints:
            template["Placement"] = {"Constraints": list(s.constraints)}
        return template

    async def _create(self, port: int) -> Member:
        s = self.settings
        name = service_name(self.pool, port)
        labels = {**s.labels, **self.labels, "lb.port": str(port)}
        try:
            async with asyncio.timeout(CALL_TIMEOUT):
                created = await self._engine().services.create(
                    self._task_template(port),
                    name=name,
                    labels=labels,
                    mode={"Replicated": {"Replicas": 1}},
                )
        except DockerError as exc:
            raise ProviderError(
                f"cannot create a Swarm service of {s.image}: {_error_text(exc)}"
            ) from None
        except TimeoutError:
            # The manager may still make it: the labels let the next list() find and remove it.
            raise ProviderError(
                f"Swarm manager at {self.url}: no answer creating a service"
            ) from None
        sid = str(created["ID"])
        try:
            return await self._started(sid, name, port)
        except BaseException:
            await self._remove_quietly(sid)
            raise

    async def _started(self, sid: str, name: str, port: int) -> Member:
        s = self.settings
        deadline = time.monotonic() + self.start_timeout
        last_look = 0.0
        state = "no task yet"
        running = False
        while True:
            now = time.monotonic()
            if now - last_look >= TASK_POLL:
                last_look = now
                task = current_task(await self._tasks(sid))
                running, why = task_state(task)
                state = why or "running"
                if task is not None and not running:
                    status = task.get("Status") or {}
                    if status.get("State") in ENDED:
                        err = str(status.get("Err") or status.get("Message") or "")
                        if "No such image" in err:
                            raise ProviderError(
                                f"image {s.image!r} is not on the node of service {name}: build "
                                "or load it on every node first ([scalers.swarm] image; the "
                                "scaler never pulls)"
                            )
                        raise ProviderError(
                            f"service {name} of {s.image}: {why} before it listened"
                        )
            if running and await _accepts(s.host, port):
                break
            if time.monotonic() >= deadline:
                raise ProviderError(
                    f"service {name} of {s.image}: nothing accepted connections on "
                    f"{s.host}:{port} within {self.start_timeout:g}s ({state}); check its "
                    "command, port and placement"
                )
            await asyncio.sleep(LISTEN_POLL)
        services = await self._call(
            "inspecting a service", self._engine().services.list(filters={"id": [sid]})
        )
        for svc in services:
            if svc["ID"] == sid:
                return await self._member(svc, await self._tasks(sid))
        raise ProviderError(f"service {name} disappeared right after it started")

    async def _remove_quietly(self, sid: str) -> None:
        with contextlib.suppress(DockerError, TimeoutError, ProviderError):
            async with asyncio.timeout(CALL_TIMEOUT):
                await self._engine().services.delete(sid)

    # -- stop -----------------------------------------------------------------------------------

    async def stop_and_remove(self, member: Member, grace: float) -> None:
        """Remove the service; Swarm stops its task (SIGTERM, SIGKILL after the service's
        StopGracePeriod). Then wait until its container on this node has stopped, so the
        port is free when this returns (a task on another node is not seen here)."""
        try:
            async with asyncio.timeout(CALL_TIMEOUT):
                await self._engine().services.delete(member.id)
        except DockerError as exc:
            if exc.status != 404:
                raise ProviderError(
                    f"docker service rm {member.name}: {_error_text(exc)}"
                ) from None
        except TimeoutError:
            raise ProviderError(
                f"docker service rm {member.name}: no answer from the manager"
            ) from None
        deadline = time.monotonic() + max(grace, self.stop_timeout) + CALL_TIMEOUT
        filters = {"label": [f"{SERVICE_LABEL}={member.id}"], "status": ["running"]}
        while time.monotonic() < deadline:
            try:
                async with asyncio.timeout(CALL_TIMEOUT):
                    left = await self._engine().containers.list(filters=filters)
            except (DockerError, TimeoutError):
                return  # the service is gone; its container is Swarm's to stop
            if not left:
                return
            await asyncio.sleep(0.1)
        log.warning("service %s removed, but its container still runs", member.name)

    # -- events and stats -----------------------------------------------------------------------

    async def events(self) -> AsyncIterator[MemberGone]:
        docker = self._engine()
        stream: Any = docker.events  # untyped in aiodocker
        # Service events carry no labels: filter them here, by what they name.
        filters = {"type": ["container", "service"], "event": ["die", "remove"]}
        while True:
            subscriber = stream.subscribe(filters=filters)
            while True:
                event = await subscriber.get()
                if event is None:
                    break  # the stream ended (engine restarted?): subscribe again
                gone = self._gone(event)
                if gone is not None:
                    yield gone
            await stream.stop()
            log.warning("Docker event stream ended; following it again in 1s")
            await asyncio.sleep(1.0)

    def _gone(self, event: Mapping[str, Any]) -> MemberGone | None:
        actor = event.get("Actor") or {}
        attrs = actor.get("Attributes") or {}
        action = str(event.get("Action") or event.get("status") or "")
        kind = event.get("Type")
        if kind == "service" and action == "remove":
            sid = str(actor.get("ID") or "")
            return MemberGone(sid, "service removed") if sid else None
        if kind == "container" and all(attrs.get(k) == v for k, v in self.labels.items()):
            sid = str(attrs.get(SERVICE_LABEL) or "")
            code = attrs.get("exitCode")
            detail = f"task container {action}" + (f" (exit code {code})" if code else "")
            return MemberGone(sid, detail) if sid else None
        return None

    async def cpu(self, member: Member) -> CpuSample | None:
        try:
            tasks = await self._tasks(member.id)
        except ProviderError:
            return None
        task = current_task(tasks)
        cid = ((task or {}).get("Status") or {}).get("ContainerStatus", {}).get("ContainerID")
        if not cid:
            return None
        container = self._engine().containers.container(str(cid))
        try:
            async with asyncio.timeout(self.settings.stats_timeout):
                samples = await container.stats(stream=False)
        except (DockerError, TimeoutError):
            return None  # on another node, or gone
        if not samples:
            return None
        usage = ((samples[-1].get("cpu_stats") or {}).get("cpu_usage") or {}).get("total_usage")
        if not isinstance(usage, int | float):
            return None
        return CpuSample(usage / 1e9, time.monotonic())


__all__ = [
    "SwarmProvider",
    "current_task",
    "member_state",
    "parse_time",
    "service_name",
    "task_state",
]
