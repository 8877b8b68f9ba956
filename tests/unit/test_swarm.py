"""The Swarm provider's pure parts: its config section, how a service's tasks become a
member, the service it asks Swarm for, and which engine events mean a member died."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from scaler.config import SwarmSettings, parse_scalers
from scaler.providers.swarm import (
    SwarmProvider,
    current_task,
    member_state,
    parse_time,
    service_name,
    task_state,
)


def entry(**over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "pool": "web",
        "provider": "swarm",
        "max": 4,
        "target": 2,
        "swarm": {"image": "lbtest/busybox-cgi:2", "port_range": "9300-9309"},
    }
    base.update(over)
    return base


def error_of(**over: Any) -> str:
    with pytest.raises(ValidationError) as info:
        parse_scalers([entry(**over)])
    return str(info.value)


def test_a_swarm_entry_validates_with_its_defaults() -> None:
    (sc,) = parse_scalers([entry()])
    assert sc.provider == "swarm" and sc.swarm is not None
    assert sc.swarm.host == "127.0.0.1" and sc.swarm.init is True
    assert sc.swarm.constraints == [] and sc.process is None and sc.docker is None
    assert "swarm image lbtest/busybox-cgi:2" in sc.settings_text()


@pytest.mark.parametrize(
    ("over", "where", "says"),
    [
        ({"swarm": None}, "swarm", 'provider = "swarm" needs [scalers.swarm]'),
        (
            {"process": {"command": "{python} -m lb.demo_server --port {port}"}},
            "process",
            'only applies to provider = "process"',
        ),
        ({"docker": {"image": "x:1"}}, "docker", 'only applies to provider = "docker"'),
        ({"max": 11}, "swarm.port_range", "10 port(s) but max = 11"),
        ({"swarm": {"image": "a b"}}, "swarm.image", "an image reference without spaces"),
        ({"swarm": {"image": "x", "labels": {"lb.port": "1"}}}, "swarm.labels", "scaler's own"),
        ({"swarm": {"image": "x", "command": "httpd -p {nope}"}}, "swarm.command", "{nope}"),
        ({"swarm": {"image": "x", "constraints": ["worker"]}}, "swarm.constraints", "KEY==VALUE"),
        ({"swarm": {"image": "x", "memory": "1k"}}, "swarm.memory", "at least 4m"),
        ({"swarm": {"image": "x", "host": "a:b"}}, "swarm.host", "IPv4 address"),
        ({"swarm": {"image": "x", "network": "overlay"}}, "swarm.network", "Extra inputs"),
    ],
)
def test_bad_swarm_settings_name_the_field(over: dict[str, Any], where: str, says: str) -> None:
    if over.get("swarm", 1) is None:
        over = {}
        data = entry()
        del data["swarm"]
        with pytest.raises(ValidationError) as info:
            parse_scalers([data])
        text = str(info.value)
    else:
        text = error_of(**over)
    assert where in text and says in text, text


def test_another_provider_refuses_a_swarm_section() -> None:
    text = error_of(provider="docker", docker={"image": "x:1"})
    assert 'only applies to provider = "swarm"' in text


def task(
    tid: str, state: str, desired: str = "running", index: int = 1, err: str = ""
) -> dict[str, Any]:
    status: dict[str, Any] = {"State": state}
    if err:
        status["Err"] = err
    return {
        "ID": tid,
        "ServiceID": "svc1",
        "NodeID": "node1",
        "Slot": 1,
        "DesiredState": desired,
        "Status": status,
        "Version": {"Index": index},
        "CreatedAt": "2026-12-03T15:42:29.181253626Z",
    }


def test_the_task_that_speaks_for_a_service() -> None:
    old = task("t-old", "failed", desired="shutdown", index=9, err="non-zero exit (137)")
    new = task("t-new", "running", index=5)
    assert current_task([old, new]) is new  # the one Swarm wants running, whatever its age
    assert current_task([old]) is old
    assert current_task([]) is None
    assert task_state(new) == (True, "")
    assert task_state(old) == (False, "task t-old failed: non-zero exit (137)")
    assert task_state(task("t3", "starting")) == (False, "task t3 starting")
    assert task_state(None) == (False, "no task")
    # Running, but Swarm is shutting it down (the service was removed): not a live member.
    assert task_state(task("t4", "running", desired="shutdown"))[0] is False


def test_a_task_swarm_replaced_by_itself_is_a_dead_member() -> None:
    first = task("t-first", "shutdown", desired="shutdown", index=3)
    first["CreatedAt"] = "2026-12-03T15:00:00Z"
    second = task("t-second", "running", index=8)
    cur, running, why = member_state([first, second])
    assert cur is second and running is False
    assert why.startswith("task t-second replaced task t-first (Swarm rescheduled it")
    only = task("t-only", "running")
    assert member_state([only]) == (only, True, "")
    dead = task("t-dead", "failed", desired="shutdown", err="non-zero exit (137)")
    assert member_state([dead]) == (dead, False, "task t-dead failed: non-zero exit (137)")
    assert member_state([]) == (None, False, "no task")


def test_swarm_times_and_names() -> None:
    assert parse_time("2026-12-03T15:42:29.181253626Z") == pytest.approx(1796312549.181253)
    assert parse_time("2026-12-03T15:42:29Z") == pytest.approx(1796312549.0)
    assert parse_time("garbage") == 0.0 and parse_time(None) == 0.0
    name = service_name("web_api.v2", 9301)
    assert name.startswith("lb-web-api-v2-9301-") and len(name) <= 63
    assert all(c.isalnum() or c == "-" for c in name)


def provider(**settings: Any) -> SwarmProvider:
    s = SwarmSettings(image="lbtest/busybox-cgi:2", port_range="9300-9309", **settings)
    return SwarmProvider("web", s, start_timeout=10, stop_timeout=7.5)


def test_the_service_it_asks_for() -> None:
    p = provider(
        command="busybox httpd -f -p {host}:{port} -h /www",
        env={"MODE": "x"},
        labels={"team": "edge"},
        cpus=0.5,
        memory="64m",
        constraints=["node.role==worker"],
    )
    t = p._task_template(9304)
    c = t["ContainerSpec"]
    assert c["Args"] == ["busybox", "httpd", "-f", "-p", "127.0.0.1:9304", "-h", "/www"]
    assert c["Env"] == {"MODE": "x", "PORT": "9304", "LB_POOL": "web"}
    assert c["Labels"] == {
        "team": "edge",
        "lb.managed-by": "scaler",
        "lb.pool": "web",
        "lb.port": "9304",
    }
    assert c["StopGracePeriod"] == 7_500_000_000 and c["Init"] is True
    assert t["RestartPolicy"] == {"Condition": "none"}  # the scaler replaces a dead member
    assert t["Networks"] == [{"Target": "host"}]
    assert t["Resources"] == {"Limits": {"NanoCPUs": 500_000_000, "MemoryBytes": 64 << 20}}
    assert t["Placement"] == {"Constraints": ["node.role==worker"]}
    bare = provider()._task_template(9300)
    assert "Args" not in bare["ContainerSpec"]  # the image's CMD
    assert "Resources" not in bare and "Placement" not in bare


def test_which_engine_events_mean_a_member_died() -> None:
    p = provider()
    ours = {"lb.managed-by": "scaler", "lb.pool": "web", "com.docker.swarm.service.id": "svc1"}
    die = {"Type": "container", "Action": "die", "Actor": {"ID": "c1", "Attributes": ours}}
    gone = p._gone(die)
    assert gone is not None and gone.id == "svc1" and "die" in gone.detail
    coded = {**die, "Actor": {"ID": "c1", "Attributes": {**ours, "exitCode": "137"}}}
    gone = p._gone(coded)
    assert gone is not None and "exit code 137" in gone.detail
    other_pool = {"Type": "container", "Action": "die"}
    other_pool["Actor"] = {"ID": "c2", "Attributes": {**ours, "lb.pool": "api"}}
    assert p._gone(other_pool) is None
    removed = {"Type": "service", "Action": "remove", "Actor": {"ID": "svc9"}}
    gone = p._gone(removed)
    assert gone is not None and gone.id == "svc9" and gone.detail == "service removed"
    assert p._gone({"Type": "service", "Action": "update", "Actor": {"ID": "svc9"}}) is None
