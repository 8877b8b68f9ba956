"""One scaler keeping two real lb instances in step (process provider, no Docker).

lb ``a`` is reached through its control socket (the scaler's config is ``a``'s file); lb ``b``
through its admin listener with a bearer token (``lbs = [...]`` in that file). Both proxy the
same pool with ``consistent_hash`` on the header ``X-Key``. Bounded aiohttp clients drive each
lb; which backend served is the ``X-Backend`` header (``web-PORT``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from lb.control.client import ControlClient
from lb.control.models import BackendView
from tests.helpers import Proc, ProcessGroup, free_port, to_toml
from tests.integration.test_scaler import Load, drive, log_events, port_block, wait_for

TOKEN = "fleet-test-token-0123456789"


def pool() -> dict[str, Any]:
    return {
        "strategy": "consistent_hash",
        "hash_key": "header:X-Key",
        "health": {
            "type": "http",
            "path": "/healthz",
            "interval": "1s",
            "fast_interval": "100ms",
            "timeout": "500ms",
        },
    }


@dataclass
class Fleet:
    procs: ProcessGroup
    tmp: Path
    a_cfg: dict[str, Any] = field(default_factory=dict)
    b_cfg: dict[str, Any] = field(default_factory=dict)
    a: Proc | None = None
    b: Proc | None = None
    metrics_port: int = 0

    def configs(self, **scaler: Any) -> None:
        b_admin = free_port()
        (self.tmp / "b.token").write_text(TOKEN + "\n")
        self.b_cfg = {
            "lb": {
                "workers": 1,
                "grace": "5s",
                "log_format": "json",
                "control_socket": "b/lb.sock",
                "state_file": "b/state.json",
            },
            "admin": {"bind": f"127.0.0.1:{b_admin}", "token_file": "b.token"},
            "listeners": [
                {"name": "web", "bind": f"127.0.0.1:{free_port()}", "mode": "http", "pool": "web"}
            ],
            "pools": {"web": pool()},
        }
        self.a_cfg = {
            "lb": {
                "workers": 1,
                "grace": "5s",
                "log_format": "json",
                "control_socket": "a/lb.sock",
                "state_file": "a/state.json",
            },
            "listeners": [
                {"name": "web", "bind": f"127.0.0.1:{free_port()}", "mode": "http", "pool": "web"}
            ],
            "pools": {"web": pool()},
            "scalers": [
                {
                    "pool": "web",
                    "min": 1,
                    "max": 4,
                    "target": 2,
                    "interval": "1s",
                    "scale_down_stabilization": "4s",
                    "drain_timeout": "3s",
                    "lbs": [
                        {"url": f"http://127.0.0.1:{b_admin}", "name": "b", "token_file": "b.token"}
                    ],
                    **scaler,
                    "process": {
                        "command": "{python} -m lb.demo_server --port {port} --name web-{port}",
                        "port_range": port_block(10),
                    },
                }
            ],
        }

    def start_a(self) -> None:
        self.a = self.procs.lb(self.a_cfg, "a")

    def start_b(self, name: str = "b") -> None:
        self.b = self.procs.lb(self.b_cfg, name)

    @property
    def path(self) -> Path:
        return self.tmp / "a.toml"

    def write_a(self) -> None:
        self.path.write_text(to_toml(self.a_cfg))

    def port(self, cfg: dict[str, Any]) -> int:
        return int(cfg["listeners"][0]["bind"].rsplit(":", 1)[1])

    def scaler(self) -> Proc:
        self.metrics_port = free_port()
        args = [sys.executable, "-m", "scaler", "-c", str(self.path)]
        p = self.procs.spawn(
            "scaler", [*args, "run", "--metrics", f"127.0.0.1:{self.metrics_port}"]
        )
        wait_for(
            lambda: "lb-scaler: running" in p.output() or p.popen.poll() is not None, 10, "banner"
        )
        assert p.popen.poll() is None, p.output()
        return p

    def client(self, which: str) -> ControlClient:
        if which == "a":
            return ControlClient(self.tmp / "a" / "lb.sock")
        return ControlClient(url=f"http://{self.b_cfg['admin']['bind']}")

    def managed(self, which: str) -> list[BackendView] | None:
        """The scaler's backends on lb ``which`` (None: it does not answer)."""

        async def get() -> list[BackendView] | None:
            async with self.client(which) as c:
                try:
                    view = await c.backends("web")
                except Exception:
                    return None
                return [b for b in view.backends if b.metadata.get("managed-by") == "scaler"]

        return asyncio.run(get())

    def recorded(self) -> list[str]:
        try:
            doc = json.loads((self.tmp / "a" / "scaler-web.json").read_text())
        except (OSError, ValueError):
            return []
        return sorted(m["address"] for m in doc["members"] if m.get("address"))

    def status(self) -> dict[str, Any]:
        try:
            doc = json.loads((self.tmp / "a" / "scaler.json").read_text())
        except (OSError, ValueError):
            return {}
        return dict(doc["pools"]["web"])

    def lb_status(self, name: str) -> dict[str, Any]:
        return next((x for x in self.status().get("lbs", []) if x["name"] == name), {})

    def metrics(self) -> str:
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as r:
            return str(r.read().decode())

    def in_step(self, n: int | None = None, up: bool = True) -> list[str] | None:
        """The members' addresses when both lbs have exactly them (each up, if ``up``)."""
        rec = self.recorded()
        a, b = self.managed("a"), self.managed("b")
        if a is None or b is None or (n is not None and len(rec) != n):
            return None
        for view in (a, b):
            if sorted(x.address for x in view) != rec:
                return None
            if up and not all(x.health == "up" and x.admin == "ready" for x in view):
                return None
        return rec


@pytest.fixture
def fleet(procs: ProcessGroup, tmp_path: Path) -> Iterator[Fleet]:
    f = Fleet(procs, tmp_path)
    try:
        yield f
    finally:
        for p in procs.procs:
            if p.name.startswith("scaler"):
                p.stop(signal.SIGKILL)
        kill_members(tmp_path / "a" / "scaler-web.json")


def kill_members(members_file: Path) -> None:
    with contextlib.suppress(OSError, ValueError):
        for m in json.loads(members_file.read_text())["members"]:
            if isinstance(m["pid"], int) and m["pid"] > 1:
                with contextlib.suppress(OSError):
                    os.killpg(m["pid"], signal.SIGKILL)


def metric(text: str, name: str, **labels: str) -> float | None:
    """The value of the series ``name`` that has ``labels`` (among others), or None."""
    for line in text.splitlines():
        if line.startswith(f"{name}{{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return None


async def keys_map(port: int, keys: list[str]) -> dict[str, str]:
    """Key -> the backend that served it, through the lb on ``port`` (20 at a time)."""
    out: dict[str, str] = {}
    sem = asyncio.Semaphore(20)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:

        async def one(k: str) -> None:
            async with sem, session.get(f"http://127.0.0.1:{port}/", headers={"X-Key": k}) as r:
                await r.read()
                assert r.status == 200
                out[k] = r.headers["X-Backend"]

        await asyncio.gather(*(one(k) for k in keys))
    return out


def test_two_lbs_stay_in_step_through_scale_up_restart_and_scale_in(fleet: Fleet) -> None:
    fleet.configs()
    fleet.start_b()
    fleet.start_a()
    scaler = fleet.scaler()
    wait_for(lambda: fleet.in_step(1), 20, "1 member up on both lbs", scaler)
    pa, pb = fleet.port(fleet.a_cfg), fleet.port(fleet.b_cfg)
    load_a, load_b = Load(), Load()
    keys = [f"user-{i}" for i in range(1000)]
    marks: dict[str, Any] = {}

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        # Scale-up: 4 clients on each lb, each always one request in flight (50 ms): demand
        # 8, summed over the two lbs; target 2 -> 4 members (max).
        stop_a = stop_b = False
        ta = loop.create_task(drive(pa, load_a, 4, lambda: stop_a, "/sleep?ms=50"))
        tb = loop.create_task(drive(pb, load_b, 4, lambda: stop_b, "/sleep?ms=50"))
        deadline = time.monotonic() + 30
        while not (got := await asyncio.to_thread(fleet.in_step, 4)):
            assert time.monotonic() < deadline, "not 4 members up on both lbs within 30s"
            await asyncio.sleep(0.2)
        marks["four"] = got
        # The same keys go to the same backends on both instances.
        marks["map_a"] = await keys_map(pa, keys)
        marks["map_b"] = await keys_map(pb, keys)
        # Enough answered traffic on each lb before b stops (checked below): on a fast machine
        # the four members are up within a second, before 100 requests of 50 ms have passed.
        deadline = time.monotonic() + 30
        while len(load_a.results) <= 100 or len(load_b.results) <= 100:
            assert time.monotonic() < deadline, "not 100 answers on each lb within 30s"
            await asyncio.sleep(0.2)

        # lb b stops (its clients first: a stopped lb refuses connections, which is not the
        # scaler's doing), and the load on a drops to one client: scale-in with b away.
        stop_b = True
        await tb
        assert fleet.b is not None
        assert await asyncio.to_thread(fleet.b.stop, signal.SIGTERM, 15) == 0
        marks["b_down"] = time.time()
        stop_a = True
        await ta
        light = False
        tl = loop.create_task(drive(pa, load_a, 1, lambda: light, "/sleep?ms=50"))
        deadline = time.monotonic() + 30
        while len(await asyncio.to_thread(fleet.recorded)) != 1:
            assert time.monotonic() < deadline, "not back to 1 member within 30s"
            await asyncio.sleep(0.2)
        marks["one"] = time.time()
        marks["status_b_away"] = fleet.lb_status("b")
        marks["metrics_b_away"] = await asyncio.to_thread(fleet.metrics)

        # b comes back with its own state file (4 members, 3 of them gone): the resync
        # deregisters the 3; then its clients start again.
        await asyncio.to_thread(fleet.start_b, "b2")
        deadline = time.monotonic() + 20
        while not await asyncio.to_thread(fleet.in_step, 1):
            assert time.monotonic() < deadline, "b not back in step within 20s"
            await asyncio.sleep(0.2)
        marks["b_in_step"] = time.time()
        done = False
        # One client on each: demand 2 per member, the target: no scale-up meanwhile.
        tb2 = loop.create_task(drive(pb, load_b, 1, lambda: done, "/sleep?ms=50"))
        await asyncio.sleep(2.0)
        done = True
        await tb2
        light = True
        await tl
        marks["status_b_back"] = fleet.lb_status("b")
        marks["metrics_b_back"] = await asyncio.to_thread(fleet.metrics)

    asyncio.run(scenario())
    events = log_events(scaler)
    story = "\n".join(
        f"{e['time'] - events[0]['time']:+7.2f}s {e['msg']}"
        for e in events
        if str(e.get("event", "")).startswith("scaler_")
    )
    why = f"\nerrors a {load_a.errors[:3]} b {load_b.errors[:3]}\n{story}"
    assert load_a.errors == [] and load_b.errors == [], why
    assert {r[2] for r in load_a.results} == {200} and {r[2] for r in load_b.results} == {200}
    assert len(load_a.results) > 100 and len(load_b.results) > 100, why

    # Same backend for every key on both instances, over all four members.
    assert marks["map_a"] == marks["map_b"], why
    assert len(set(marks["map_a"].values())) == 4, sorted(set(marks["map_a"].values()))

    # While b was away: reported unreachable, in status and in the metrics; the removals did
    # not wait for it beyond drain_timeout.
    away = marks["status_b_away"]
    assert away["state"] == "unreachable" and away["reason"], away
    assert metric(marks["metrics_b_away"], "lb_scaler_lb_reachable", lb="b") == 0.0
    assert metric(marks["metrics_b_away"], "lb_scaler_lb_in_step", lb="b") == 0.0
    assert metric(marks["metrics_b_away"], "lb_scaler_lb_reachable", lb="local") == 1.0
    assert metric(marks["metrics_b_away"], "lb_scaler_members", pool="web") == 1.0
    kinds = [e.get("event") for e in events]
    assert kinds.count("scaler_member_removed") == 3, why
    assert "scaler_drain_unreachable" in kinds, why
    # Back: in step, by a resync that deregistered what its state file still had.
    back = marks["status_b_back"]
    assert back["state"] == "in step" and back["resyncs"] >= 1, back
    assert metric(marks["metrics_b_back"], "lb_scaler_lb_in_step", lb="b") == 1.0
    resync = [e for e in events if e.get("event") == "scaler_lb_in_step"]
    assert resync and "deregistered" in resync[-1]["msg"], why
    removed = set(marks["four"]) - set(fleet.recorded())
    assert all(a in resync[-1]["msg"] for a in removed), why
    started = metric(marks["metrics_b_back"], "lb_scaler_actions_total", kind="member_started")
    assert started is not None and started >= 4.0, why
    text = subprocess_status(fleet)
    assert "b (http://127.0.0.1:" in text and "in step" in text, text
    print(
        f"\n2 lbs: 1 -> 4 -> 1 members, b restarted during the scale-in, back in step "
        f"{marks['b_in_step'] - marks['b_down']:.2f}s after it stopped; "
        f"{len(load_a.results)} + {len(load_b.results)} requests, 0 failed; 1000 keys, same "
        "backend on both"
    )


def subprocess_status(fleet: Fleet) -> str:
    import subprocess

    out = subprocess.run(
        [sys.executable, "-m", "scaler", "-c", str(fleet.path), "status"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    assert TOKEN not in out.stdout
    return out.stdout


def test_an_lb_unreachable_at_start_is_reported_then_brought_in_step(fleet: Fleet) -> None:
    fleet.configs(min=2)
    fleet.start_a()
    scaler = fleet.scaler()  # b is not running yet
    wait_for(
        lambda: (
            len([b for b in fleet.managed("a") or [] if b.health == "up"]) == 2
            and fleet.lb_status("b").get("state") == "unreachable"
        ),
        20,
        "2 members up on a, b unreachable",
        scaler,
    )
    st = fleet.lb_status("b")
    assert "cannot connect" in st["reason"], st
    text = fleet.metrics()
    assert metric(text, "lb_scaler_lb_reachable", lb="b") == 0.0
    assert metric(text, "lb_scaler_lb_in_step", lb="b") == 0.0
    assert metric(text, "lb_scaler_lb_in_step", lb="local") == 1.0
    assert metric(text, "lb_scaler_desired_members", pool="web") == 2.0
    out = subprocess_status(fleet)
    assert "b (http://127.0.0.1:" in out and "UNREACHABLE since" in out, out

    fleet.start_b()
    members = wait_for(lambda: fleet.in_step(2), 20, "b in step with 2 members", scaler)
    assert len(members) == 2
    wait_for(lambda: fleet.lb_status("b").get("state") == "in step", 5, "status says so", scaler)
    wait_for(
        lambda: metric(fleet.metrics(), "lb_scaler_lb_in_step", lb="b") == 1.0,
        5,
        "metrics say so",
        scaler,
    )
    # The registration carried the scaler's metadata there too.
    b = fleet.managed("b")
    assert b is not None and {x.metadata["provider"] for x in b} == {"process"}
