"""End to end with the Swarm provider and a real single-node swarm: real lb, real lb-scaler,
one single-replica service per member (busybox httpd on the host network, 127.0.0.1 only).

* 1 -> 4 -> 1 under a bounded load with no failed request; every member the controller
  drained (seen through lb's API while it happens) is the service that went, and no other;
* ``kill -9`` of the scaler and a restart: every service adopted, nothing registered twice,
  nothing orphaned; ``lb-scaler status`` names node, task and slot;
* ``docker service rm`` by hand, ``docker kill`` of a task's container and a task Swarm
  replaces by itself (``docker service update --force``) are healed: the member is replaced,
  and lb keeps no stale address and names the task that runs;
* the provider alone: a missing image is a clear error that leaves nothing behind.

Every service a test's scaler creates carries ``test-run=<id>``; the ``swarm_label``
fixture removes them all at the end, whatever happened.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiodocker
import pytest

from lb.control.models import BackendView
from scaler.config import SwarmSettings
from scaler.providers.base import ProviderError
from scaler.providers.swarm import SwarmProvider
from tests.docker.conftest import IMAGE
from tests.helpers import Proc, ProcessGroup
from tests.integration.test_scaler import (
    INTERVAL,
    MARGIN,
    Load,
    Scaled,
    config,
    drive,
    log_events,
    port_block,
    up,
    wait_for,
)


def swarm_config(label: str, image: str = IMAGE, **scaler: Any) -> dict[str, Any]:
    cfg = config(**scaler)
    sc = cfg["scalers"][0]
    del sc["process"]
    sc["provider"] = "swarm"
    sc["stop_timeout"] = "5s"
    sc["start_timeout"] = "30s"
    sc["swarm"] = {
        "image": image,
        "command": "busybox httpd -f -p 127.0.0.1:{port} -h /www",
        "port_range": port_block(12),
        "labels": {"test-run": label, "team": "edge"},
        "memory": "64m",
    }
    return cfg


async def _services(label: str) -> list[dict[str, Any]]:
    docker = aiodocker.Docker()
    try:
        found = await docker.services.list(filters={"label": [f"test-run={label}"]})
        tasks = await docker.tasks.list(filters={"label": [f"test-run={label}"]})
        out = []
        for s in found:
            mine = [t for t in tasks if t["ServiceID"] == s["ID"]]
            out.append({**s, "tasks": mine})
        return out
    finally:
        await docker.close()


def services(label: str) -> list[dict[str, Any]]:
    return asyncio.run(_services(label))


def running_task(s: dict[str, Any]) -> dict[str, Any] | None:
    for t in s["tasks"]:
        if t["DesiredState"] == "running" and t["Status"]["State"] == "running":
            return t
    return None


def address_of(s: dict[str, Any]) -> str:
    return f"127.0.0.1:{s['Spec']['Labels']['lb.port']}"


async def _containers(label: str, running_only: bool = False) -> list[dict[str, Any]]:
    docker = aiodocker.Docker()
    try:
        filters: dict[str, list[str]] = {"label": [f"test-run={label}"]}
        if running_only:
            filters["status"] = ["running"]
        found = await docker.containers.list(all=True, filters=filters)
        return [c._container for c in found]
    finally:
        await docker.close()


def containers(label: str, running_only: bool = False) -> list[dict[str, Any]]:
    return asyncio.run(_containers(label, running_only))


@pytest.fixture
def scaled(procs: ProcessGroup, tmp_path: Path, swarm_label: str) -> Iterator[Scaled]:
    s = Scaled(procs, tmp_path)
    try:
        yield s
    finally:
        # The scaler first (it would replace what we remove); swarm_label removes the services.
        for p in procs.procs:
            if p.name.startswith("scaler"):
                p.stop(signal.SIGKILL)


def start_scaler(scaled: Scaled, name: str = "scaler") -> Proc:
    """lb-scaler, once it says it runs (a busy shared machine may take longer than the
    process provider's tests allow)."""
    p = scaled.procs.spawn(name, [sys.executable, "-m", "scaler", "-c", str(scaled.path)])
    wait_for(lambda: "lb-scaler: running" in p.output() or p.popen.poll() is not None, 30, "banner")
    assert p.popen.poll() is None, p.output()
    return p


def live_and_registered(scaled: Scaled, label: str, n: int) -> list[dict[str, Any]] | None:
    """The n services, when each runs a task and lb has exactly their addresses, up."""
    svcs = services(label)
    if len(svcs) != n or not all(running_task(s) for s in svcs):
        return None
    backends = scaled.backends()
    if sorted(b.address for b in backends) != sorted(address_of(s) for s in svcs):
        return None
    return svcs if all(up(b) for b in backends) else None


def test_one_to_four_to_one_under_load_removes_exactly_the_drained_services(
    scaled: Scaled, swarm_label: str
) -> None:
    scaled.start(swarm_config(swarm_label, max=4, max_add=3))
    scaler = start_scaler(scaled)
    (first,) = wait_for(lambda: live_and_registered(scaled, swarm_label, 1), 30, "1 up", scaler)
    spec = first["Spec"]
    labels = spec["Labels"]
    container = spec["TaskTemplate"]["ContainerSpec"]
    assert labels["lb.managed-by"] == "scaler" and labels["lb.pool"] == "web"
    assert labels["team"] == "edge" and container["Labels"]["lb.port"] == labels["lb.port"]
    assert spec["Mode"] == {"Replicated": {"Replicas": 1}}
    assert spec["TaskTemplate"]["RestartPolicy"]["Condition"] == "none"
    assert container["StopGracePeriod"] == 5_000_000_000 and container["Init"] is True
    assert f"PORT={labels['lb.port']}" in container["Env"]

    load = Load()
    path = "/cgi-bin/slow"  # 0.2 s per request: 8 clients keep ~8 in flight (target 2 -> 4)
    seen_by_address: dict[str, str] = {}  # address -> service id, for every member seen
    drained: dict[str, float] = {}  # address -> when lb first showed it draining

    async def watch(stop: asyncio.Event) -> None:
        async with scaled.client() as cl:
            while not stop.is_set():
                for b in (await cl.backends("web")).backends:
                    if b.admin == "drain":
                        drained.setdefault(b.address, time.time())
                    if b.metadata.get("member"):
                        seen_by_address[b.address] = b.metadata["member"]
                await asyncio.sleep(0.05)

    async def scenario() -> dict[str, float]:
        marks: dict[str, float] = {"load": time.time()}
        loop = asyncio.get_running_loop()
        stop_watch = asyncio.Event()
        watcher = loop.create_task(watch(stop_watch))
        four = False
        heavy = loop.create_task(drive(scaled.port, load, 8, lambda: four, path=path))
        try:
            async with scaled.client() as cl:
                deadline = time.monotonic() + 60
                while time.monotonic() < deadline:
                    if len([b for b in (await cl.backends("web")).backends if up(b)]) == 4:
                        marks["four_up"] = time.time()
                        break
                    await asyncio.sleep(0.1)
                await asyncio.sleep(1.0)  # all four serve under the load
                four = True
                await heavy
                marks["light"] = time.time()
                done = False
                light = loop.create_task(drive(scaled.port, load, 1, lambda: done, path=path))
                try:
                    deadline = time.monotonic() + 60
                    while time.monotonic() < deadline:
                        if len((await cl.backends("web")).backends) == 1:
                            marks["back_to_one"] = time.time()
                            break
                        await asyncio.sleep(0.1)
                    await asyncio.sleep(1.0)
                finally:
                    done = True
                    await light
        finally:
            four = True
            await heavy
            stop_watch.set()
            await watcher
        return marks

    marks = asyncio.run(scenario())
    assert load.errors == []
    assert {status for _, _, status, _ in load.results} == {200}
    assert "four_up" in marks and "back_to_one" in marks, marks

    events = log_events(scaler)
    started = [e for e in events if e.get("event") == "scaler_member_started"]
    removed = [e for e in events if e.get("event") == "scaler_member_removed"]
    assert len(started) == 4 and len(removed) == 3, [e.get("msg") for e in started + removed]
    removed_ids = {e["member"] for e in removed}
    # The controller drained exactly the members it removed (lb showed each draining, and
    # no other), and each of them is the service that went: its service, its task and its
    # container are gone; the survivor was never drained.
    assert {seen_by_address[a] for a in drained} == removed_ids
    assert {e["address"] for e in removed} == set(drained)
    (survivor,) = wait_for(lambda: live_and_registered(scaled, swarm_label, 1), 15, "1 left")
    assert survivor["ID"] not in removed_ids and address_of(survivor) not in drained
    # A removed service's container is stopped before removal returns; Swarm's agent deletes
    # it a few seconds later.
    assert {
        c["Labels"]["com.docker.swarm.service.id"]
        for c in containers(swarm_label, running_only=True)
    } == {survivor["ID"]}
    wait_for(
        lambda: (
            {c["Labels"]["com.docker.swarm.service.id"] for c in containers(swarm_label)}
            == {survivor["ID"]}
        ),
        20,
        "the removed services' containers deleted",
    )
    for e in removed:
        assert "drained, stopped, deregistered" in e["msg"]
    started_at = {e["member"]: e["time"] for e in started}
    first_new = min(t for sid, t in started_at.items() if sid != first["ID"])
    print(
        f"\nswarm provider: load step -> first new service started "
        f"{first_new - marks['load']:.2f}s,"
        f" -> 4 up {marks['four_up'] - marks['load']:.2f}s; load drop -> back to 1 "
        f"{marks['back_to_one'] - marks['light']:.2f}s; {len(load.results)} requests, 0 failed;"
        f" drained and removed: {sorted(removed_ids)}"
    )


def _metadata_of(scaled: Scaled) -> dict[str, dict[str, str]]:
    return {b.address: dict(b.metadata) for b in scaled.backends()}


def test_kill_9_of_the_scaler_then_a_restart_adopts_every_service(
    scaled: Scaled, swarm_label: str
) -> None:
    scaled.start(swarm_config(swarm_label, min=2, scale_down_stabilization="60s"))
    scaler = start_scaler(scaled)
    before = wait_for(lambda: live_and_registered(scaled, swarm_label, 2), 40, "2 up", scaler)
    tasks = {s["ID"]: running_task(s)["ID"] for s in before}  # type: ignore[index]
    # lb's metadata names each member's service, task, node and slot.
    meta = _metadata_of(scaled)
    for s in before:
        m = meta[address_of(s)]
        t = running_task(s)
        assert t is not None
        assert m["member"] == s["ID"] and m["provider"] == "swarm"
        assert m["task"] == t["ID"] and m["slot"] == "1" and m["node"]
    scaler.stop(signal.SIGKILL)

    again = start_scaler(scaled, "scaler2")
    wait_for(
        lambda: len([e for e in log_events(again) if e.get("event") == "scaler_decision"]) >= 1,
        15,
        "a decision",
        again,
    )
    time.sleep(3 * INTERVAL)
    after = services(swarm_label)
    assert {s["ID"]: running_task(s)["ID"] for s in after} == tasks  # type: ignore[index]
    backends: list[BackendView] = scaled.backends()
    assert sorted(b.address for b in backends) == sorted(address_of(s) for s in after)
    assert len(backends) == 2  # nothing registered twice
    assert not [e for e in log_events(again) if e.get("event") == "scaler_member_started"]
    # Nothing orphaned: every container of the test belongs to one of the two services.
    ids = {c["Labels"]["com.docker.swarm.service.id"] for c in containers(swarm_label)}
    assert ids == set(tasks)
    assert len(containers(swarm_label)) == 2

    status = scaled.procs.spawn(
        "status", [sys.executable, "-m", "scaler", "-c", str(scaled.path), "status"]
    )
    assert status.popen.wait(15) == 0
    text = status.output()
    for s in after:
        assert f"task={tasks[s['ID']]}" in text, text
    assert text.count("slot=1") == 2 and "node=" in text


def test_service_rm_and_docker_kill_are_healed_with_no_stale_address(
    scaled: Scaled, swarm_label: str
) -> None:
    scaled.start(swarm_config(swarm_label, min=2, scale_down_stabilization="60s"))
    scaler = start_scaler(scaled)
    svcs = wait_for(lambda: live_and_registered(scaled, swarm_label, 2), 40, "2 up", scaler)

    # 1. `docker service rm` by hand.
    victim = svcs[0]

    async def service_rm() -> None:
        docker = aiodocker.Docker()
        try:
            await docker.services.delete(victim["ID"])
        finally:
            await docker.close()

    t0 = time.time()
    asyncio.run(service_rm())
    wait_for(
        lambda: address_of(victim) not in {b.address for b in scaled.backends()},
        10,
        "deregistered",
        scaler,
    )
    deregistered = time.time() - t0
    healed = wait_for(lambda: live_and_registered(scaled, swarm_label, 2), 40, "replaced", scaler)
    rm_healed = time.time() - t0
    assert victim["ID"] not in {s["ID"] for s in healed}
    assert deregistered < 2 * INTERVAL + MARGIN  # the events stream wakes the loop

    # 2. `docker kill` of a task's container: the task fails; Swarm does not restart it, the
    # scaler replaces the member (a new service on another port), and lb drops the old address.
    target = healed[0]
    task = running_task(target)
    assert task is not None
    cid = task["Status"]["ContainerStatus"]["ContainerID"]

    async def kill() -> None:
        docker = aiodocker.Docker()
        try:
            await docker.containers.container(cid).kill()
        finally:
            await docker.close()

    t1 = time.time()
    asyncio.run(kill())
    wait_for(
        lambda: address_of(target) not in {b.address for b in scaled.backends()},
        10,
        "the killed member deregistered",
        scaler,
    )
    killed_deregistered = time.time() - t1
    final = wait_for(lambda: live_and_registered(scaled, swarm_label, 2), 40, "replaced", scaler)
    kill_healed = time.time() - t1
    assert target["ID"] not in {s["ID"] for s in final}
    # No stale address, and lb's metadata names the task that runs now.
    meta = _metadata_of(scaled)
    assert sorted(meta) == sorted(address_of(s) for s in final)
    for s in final:
        t = running_task(s)
        assert t is not None and meta[address_of(s)]["task"] == t["ID"]
        assert meta[address_of(s)]["member"] == s["ID"]
    assert not [c for c in containers(swarm_label, running_only=True) if c["Id"] == cid]

    def kinds(since: float) -> list[Any]:
        return [e.get("event") for e in log_events(scaler) if e["time"] >= since]

    wait_for(lambda: kinds(t1).count("scaler_member_started") >= 1, 5, "the start logged", scaler)
    assert "scaler_died" in kinds(t1) and "scaler_deregistered" in kinds(t1)
    assert killed_deregistered < 2 * INTERVAL + MARGIN

    # 3. Swarm replaces a task by itself (`docker service update --force`): the new task is
    # not the member lb knows, so the scaler replaces the member; lb names the running task.
    forced = final[0]

    async def force_update() -> None:
        docker = aiodocker.Docker()
        try:
            svc = await docker.services.inspect(forced["ID"])
            spec = svc["Spec"]
            spec["TaskTemplate"]["ForceUpdate"] = spec["TaskTemplate"].get("ForceUpdate", 0) + 1
            await docker._query_json(
                f"services/{forced['ID']}/update",
                method="POST",
                data=json.dumps(spec),
                params={"version": svc["Version"]["Index"]},
            )
        finally:
            await docker.close()

    t2 = time.time()
    asyncio.run(force_update())
    after = wait_for(
        lambda: (
            got
            if (got := live_and_registered(scaled, swarm_label, 2)) is not None
            and forced["ID"] not in {s["ID"] for s in got}
            else None
        ),
        40,
        "the rescheduled member replaced",
        scaler,
    )
    update_healed = time.time() - t2
    meta = _metadata_of(scaled)
    for s in after:
        t = running_task(s)
        assert t is not None and meta[address_of(s)]["task"] == t["ID"]
        assert len(s["tasks"]) == 1  # each member is still the task its service started
    # Reported dead (the new task starting, or running as "replaced task ..."), then replaced.
    assert [
        e
        for e in log_events(scaler)
        if e.get("event") == "scaler_died" and e.get("member") == forced["ID"]
    ]
    print(
        f"\nswarm: service rm -> deregistered {deregistered:.2f}s, replaced {rm_healed:.2f}s; "
        f"docker kill -> deregistered {killed_deregistered:.2f}s, replaced {kill_healed:.2f}s; "
        f"service update --force -> replaced {update_healed:.2f}s"
    )


async def test_provider_bad_image_cpu_and_idempotent_removal(swarm_label: str) -> None:
    """Without lb: a missing image is a clear error that leaves no service; a member's CPU is
    read through its task's container; removing twice is fine."""
    bad = SwarmProvider(
        "bad",
        SwarmSettings(
            image="lbtest/no-such-image:1",
            port_range=port_block(3),
            labels={"test-run": swarm_label},
        ),
        start_timeout=20,
        stop_timeout=2,
    )
    await bad.open()
    try:
        with pytest.raises(ProviderError) as info:
            await bad.create()
        assert "image 'lbtest/no-such-image:1' is not on the node of service" in str(info.value)
        assert "build or load it on every node first" in str(info.value)
        assert await bad.list() == []
    finally:
        await bad.close()
    assert await _services(swarm_label) == []

    settings = SwarmSettings(
        image=IMAGE,
        command="busybox httpd -f -p 127.0.0.1:{port} -h /www",
        port_range=port_block(3),
        labels={"test-run": swarm_label},
    )
    p = SwarmProvider("cpu", settings, start_timeout=30, stop_timeout=2)
    await p.open()
    try:
        m = await p.create()
        assert m.running and m.name.startswith("lb-cpu-") and m.info["slot"] == "1"
        (listed,) = await p.list()
        assert listed == m
        first = await p.cpu(m)
        assert first is not None and first.seconds >= 0
        await p.stop_and_remove(m, grace=2)
        await p.stop_and_remove(m, grace=2)  # already gone: fine
        assert await p.list() == []
        assert await p.cpu(m) is None
        assert await _containers(swarm_label, running_only=True) == []
    finally:
        await p.close()
