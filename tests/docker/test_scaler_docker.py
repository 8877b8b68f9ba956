"""End to end with the Docker provider and a real engine: real lb, real lb-scaler, busybox
httpd containers on the host network binding 127.0.0.1 only.

The same scenario as the process provider on a smaller scale (1 -> 3 -> 1 under a bounded
load, no failed request), the labels and limits of the containers, ``kill -9`` of the scaler
and a restart (adoption), ``docker rm -f`` of a member (deregistered and replaced), and a bad
image (a clear error, nothing left behind).
"""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiodocker
import pytest

from scaler.config import DockerSettings
from scaler.providers.base import cpu_percent
from scaler.providers.docker import DockerProvider
from tests.docker.conftest import IMAGE
from tests.helpers import ProcessGroup
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


def docker_config(run_label: str, image: str = IMAGE, **scaler: Any) -> dict[str, Any]:
    cfg = config(**scaler)
    sc = cfg["scalers"][0]
    del sc["process"]
    sc["provider"] = "docker"
    sc["docker"] = {
        "image": image,
        "command": "busybox httpd -f -p 127.0.0.1:{port} -h /www",
        "network_mode": "host",
        "port_range": port_block(10),
        "labels": {"test-run": run_label, "team": "edge"},
        "cpus": 0.5,
        "memory": "64m",
    }
    return cfg


async def containers(run_label: str) -> list[dict[str, Any]]:
    docker = aiodocker.Docker()
    try:
        found = await docker.containers.list(all=True, filters={"label": [f"test-run={run_label}"]})
        return [await c.show() for c in found]
    finally:
        await docker.close()


def running(run_label: str) -> list[dict[str, Any]]:
    return [c for c in asyncio.run(containers(run_label)) if c["State"]["Running"]]


@pytest.fixture
def scaled(procs: ProcessGroup, tmp_path: Path, run_label: str) -> Iterator[Scaled]:
    s = Scaled(procs, tmp_path)
    try:
        yield s
    finally:
        # The scaler first (it would replace what we remove); run_label removes the containers.
        for p in procs.procs:
            if p.name.startswith("scaler"):
                p.stop(signal.SIGKILL)


def test_scale_scenario_with_containers(scaled: Scaled, run_label: str) -> None:
    scaled.start(docker_config(run_label, max=3, max_add=3))
    scaler = scaled.scaler()
    first = wait_for(lambda: [b for b in scaled.backends() if up(b)], 20, "min member up", scaler)
    first_name = f"web-{first[0].address.rsplit(':', 1)[1]}"

    # Labels, limits and networking of the member.
    (c,) = running(run_label)
    labels = c["Config"]["Labels"]
    port = first[0].address.rsplit(":", 1)[1]
    assert labels["lb.managed-by"] == "scaler" and labels["lb.pool"] == "web"
    assert labels["lb.port"] == port and labels["team"] == "edge"
    assert c["HostConfig"]["NetworkMode"] == "host" and c["HostConfig"]["Init"] is True
    assert c["HostConfig"]["NanoCpus"] == 500_000_000
    assert c["HostConfig"]["Memory"] == 64 * 1024 * 1024
    assert f"PORT={port}" in c["Config"]["Env"]

    load = Load()
    url_path = "/cgi-bin/slow"  # 0.2 s per request: 6 clients keep ~6 in flight (target 2)

    async def scenario() -> dict[str, float]:
        marks: dict[str, float] = {"load": time.time()}
        loop = asyncio.get_running_loop()
        end = time.monotonic() + 10
        heavy = loop.create_task(
            drive(scaled.port, load, 6, lambda: time.monotonic() > end, path=url_path)
        )
        async with scaled.client() as cl:
            while not heavy.done():
                if len([b for b in (await cl.backends("web")).backends if up(b)]) == 3:
                    marks.setdefault("three_up", time.time())
                await asyncio.sleep(0.1)
            await heavy
            marks["light"] = time.time()
            done = False
            light = loop.create_task(drive(scaled.port, load, 1, lambda: done, path=url_path))
            try:
                deadline = time.monotonic() + 25
                while time.monotonic() < deadline:
                    if len((await cl.backends("web")).backends) == 1:
                        marks["back_to_min"] = time.time()
                        break
                    await asyncio.sleep(0.1)
                await asyncio.sleep(1.0)
            finally:
                done = True
                await light
        return marks

    marks = asyncio.run(scenario())
    sc_events = log_events(scaler)
    lb_events = log_events(scaled.lb) if scaled.lb else []
    assert load.errors == []
    assert {status for _, _, status, _ in load.results} == {200}
    assert "three_up" in marks and "back_to_min" in marks, marks

    ups = [
        e
        for e in sc_events
        if e.get("event") == "scaler_decision"
        and e.get("action") == "scale_up"
        and e["time"] >= marks["load"]
    ]
    decided = ups[0]["time"] - marks["load"]
    assert decided <= 2 * INTERVAL + MARGIN
    went_up = {
        f"web-{e['backend'].rsplit(':', 1)[1]}": e["time"]
        for e in lb_events
        if e.get("event") == "health_state" and e.get("to") == "up"
    }
    first_served: dict[str, float] = {}
    for _, t1, _, name in sorted(load.results, key=lambda r: r[1]):
        first_served.setdefault(name, t1)
    new = {n: t for n, t in first_served.items() if n != first_name}
    assert len(new) == 2, sorted(first_served)
    for name, t in new.items():
        assert t >= went_up[name]
    to_first_new = min(new.values()) - marks["load"]
    assert len(running(run_label)) == 1  # the removed ones are gone, not just stopped
    assert len(asyncio.run(containers(run_label))) == 1
    print(
        f"\ndocker provider: load step -> scale-up decision {decided:.2f}s, -> first new "
        f"backend serving {to_first_new:.2f}s, -> 3 members up "
        f"{marks['three_up'] - marks['load']:.2f}s; load stop -> back to 1 "
        f"{marks['back_to_min'] - marks['light']:.2f}s; {len(load.results)} requests, 0 failed"
    )


def test_kill_9_of_the_scaler_then_a_restart_adopts_the_containers(
    scaled: Scaled, run_label: str
) -> None:
    scaled.start(docker_config(run_label, min=2, scale_down_stabilization="60s"))
    scaler = scaled.scaler()
    wait_for(lambda: len([b for b in scaled.backends() if up(b)]) == 2, 20, "2 up", scaler)
    before = sorted(c["Id"] for c in running(run_label))
    assert len(before) == 2
    scaler.stop(signal.SIGKILL)

    again = scaled.scaler("scaler2")
    wait_for(
        lambda: len([e for e in log_events(again) if e.get("event") == "scaler_decision"]) >= 1,
        10,
        "a decision",
        again,
    )
    time.sleep(3 * INTERVAL)
    assert sorted(c["Id"] for c in asyncio.run(containers(run_label))) == before  # no duplicate
    registered = sorted(b.address for b in scaled.backends() if up(b))
    assert registered == sorted(
        f"127.0.0.1:{c['Config']['Labels']['lb.port']}" for c in running(run_label)
    )
    assert not [e for e in log_events(again) if e.get("event") == "scaler_member_started"]


def test_docker_rm_f_of_a_member_gets_it_deregistered_and_replaced(
    scaled: Scaled, run_label: str
) -> None:
    scaled.start(docker_config(run_label, min=2, scale_down_stabilization="60s"))
    scaler = scaled.scaler()
    wait_for(lambda: len([b for b in scaled.backends() if up(b)]) == 2, 20, "2 up", scaler)
    victim = running(run_label)[0]
    address = f"127.0.0.1:{victim['Config']['Labels']['lb.port']}"

    async def rm_f() -> None:
        docker = aiodocker.Docker()
        try:
            await docker.containers.container(victim["Id"]).delete(force=True)
        finally:
            await docker.close()

    t0 = time.time()
    asyncio.run(rm_f())
    wait_for(
        lambda: address not in {b.address for b in scaled.backends()}, 10, "deregistered", scaler
    )
    deregistered = time.time() - t0
    wait_for(
        lambda: len([b for b in scaled.backends() if up(b)]) == 2 and len(running(run_label)) == 2,
        15,
        "replaced",
        scaler,
    )
    replaced = time.time() - t0
    assert victim["Id"] not in {c["Id"] for c in running(run_label)}

    def kinds() -> list[Any]:
        return [e.get("event") for e in log_events(scaler) if e["time"] >= t0]

    # lb may see the new member up before the scaler has written its line about it.
    wait_for(lambda: "scaler_member_started" in kinds(), 5, "the start logged", scaler)
    assert "scaler_deregistered" in kinds()
    assert deregistered < 2 * INTERVAL + MARGIN  # the events stream wakes the loop
    print(f"\ndocker rm -f: deregistered in {deregistered:.2f}s, replaced in {replaced:.2f}s")


def test_a_bad_image_is_a_clear_error_and_leaves_no_container(
    scaled: Scaled, run_label: str
) -> None:
    scaled.start(docker_config(run_label, image="lbtest/no-such-image:1", backoff="500ms"))
    scaler = scaled.scaler()
    failed = wait_for(
        lambda: (
            [e for e in log_events(scaler) if e.get("event") == "scaler_start_failed"][:2]
            if len([e for e in log_events(scaler) if e.get("event") == "scaler_start_failed"]) >= 2
            else None
        ),
        15,
        "failed starts",
        scaler,
    )
    msg = failed[0]["msg"]
    assert "image 'lbtest/no-such-image:1' is not on the Docker engine" in msg
    assert "build or load it first" in msg
    assert "is not on the Docker engine" in scaler.output()  # also said at start
    assert asyncio.run(containers(run_label)) == []
    assert scaled.backends() == []
    status = scaled.procs.spawn(
        "status", [sys.executable, "-m", "scaler", "-c", str(scaled.path), "status"]
    )
    assert status.popen.wait(10) == 0
    assert "is not on the Docker engine" in status.output()


async def test_provider_reads_cpu_with_a_timeout_and_cleans_up(run_label: str) -> None:
    settings = DockerSettings(
        image=IMAGE,
        command="busybox httpd -f -p 127.0.0.1:{port} -h /www",
        port_range=port_block(5),
        labels={"test-run": run_label},
        stats_timeout=5.0,
    )
    p = DockerProvider("cpu", settings, start_timeout=10)
    await p.open()
    try:
        m = await p.create()
        assert m.running and m.name.startswith("lb-cpu-")
        first = await p.cpu(m)
        assert first is not None and first.seconds >= 0
        second = await p.cpu(m)
        percent = cpu_percent(first, second)
        assert percent is not None and 0 <= percent < 100  # an idle httpd
        await p.stop_and_remove(m, grace=5)
        assert await p.list() == []
        assert await p.cpu(m) is None  # gone: no sample, no error
    finally:
        await p.close()
