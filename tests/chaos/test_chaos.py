"""Chaos schedules, one test per family: kills under a steady, recorded load, then a checker.

Each test draws its schedule from the seed (``CHAOS_SEED``, fixed by default; ``random``; or
N to replay), runs it against real processes, and asserts the invariants of
``harness.Checker``. The summary (schedule, incidents, requests and failures by kind, each
invariant with its numbers) is printed (``pytest -s``) and is the assertion message.

Families:

* ``workers`` (``workers = 1`` and ``2``): SIGKILL/SIGTERM a worker, and a replacement within
  50 ms of its appearance (before it is ready), while an API writer adds backends and sets
  weights.
* ``supervisor``: SIGKILL/SIGTERM the supervisor, then ``lb run`` again on the same config
  (state file kept), with the API writer; the API state is checked after every restart.
* ``backend``: SIGKILL/SIGTERM a backend, restarted on its port a moment later.
* ``scaler``: the process provider; the scaler is killed at every step of a scale-up
  (decision, spawn, registration, started) and of a scale-in (decision, drain, member
  stopped, removed), a new one finishes the job; membership is checked after each step.
* ``docker``: ``docker kill`` of a member (docker provider); skipped without an engine.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import aiodocker
import pytest

from tests.chaos.harness import (
    BASE_SEED,
    RECOVERY_LIMIT,
    TAG_ENV,
    ApiPlan,
    Checker,
    Incident,
    Lab,
    Mix,
    Step,
    Traffic,
    alive,
    backend_steps,
    children,
    client_ports,
    cmdline,
    frozen,
    lb_config,
    listening_inodes,
    member_steps,
    pick,
    polled_inodes,
    pool_backends,
    prompt,
    rounds,
    scaler_steps,
    schedule_rng,
    signal_named,
    supervisor_steps,
    tagged,
    wait_until,
    worker_steps,
)
from tests.docker.conftest import IMAGE
from tests.helpers import Proc, free_port
from tests.integration.test_scaler import port_block

# Round k runs seed BASE_SEED + k; the id says which, so a failed round replays alone.
SEEDS = [pytest.param(BASE_SEED + k, id=f"seed{BASE_SEED + k}") for k in range(rounds())]
POOL = "web"

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(170)]


def address(p: Proc) -> str:
    return f"127.0.0.1:{p.port}"


# -- common parts ---------------------------------------------------------------------------


def check_api(lab: Lab, chk: Checker, load: Traffic, when: str) -> None:
    with load.api_paused():
        try:
            backends = pool_backends(lab.sock, POOL)
        except (OSError, RuntimeError) as exc:
            chk.point("acknowledged API changes persist", False, f"{when}: cannot read: {exc}")
            return
        chk.api_state(list(load.ops), backends, when)


def stop_lb_and_backends(lab: Lab, chk: Checker) -> None:
    """The orderly end: lb (SIGTERM), then everything else the group started; then no process
    may carry the tag."""
    if lab.lb is not None:
        code = lab.lb.stop(signal.SIGTERM, timeout=15)
        if code != 0:
            chk.note(f"lb exited with {code} on SIGTERM")
    for p in lab.group.procs:
        p.stop(signal.SIGTERM, timeout=10)
    wait_until(lambda: not tagged(lab.tag), 8, 0.05)
    chk.orphans(tagged(lab.tag), [], "after lb, backends and members were stopped")


def recover(lab: Lab, n: int, killed: set[int]) -> float | None:
    """When ``n`` workers accept again, none of them a pid that was killed; None if not within
    RECOVERY_LIMIT."""
    _, t = wait_until(
        lambda: len([p for p in lab.accepting_workers() if p not in killed]) >= n,
        RECOVERY_LIMIT,
        0.005,
    )
    return t


# -- workers --------------------------------------------------------------------------------


def kill_worker(lab: Lab, chk: Checker, step: Step, n: int) -> bool:
    """One worker step; False when lb did not recover (the schedule stops there)."""
    victim = pick(lab.accepting_workers() or lab.workers(), step.pick)
    before = set(lab.workers())
    with prompt(), frozen([victim]):
        held = client_ports([victim], lab.port)
        t = time.monotonic()
        os.kill(victim, signal_named(step.sig))
    strict = step.sig == "SIGKILL"
    incidents = [Incident("worker", f"pid {victim}", step.sig, t, held=held, strict=strict)]
    chk.incidents.append(incidents[0])
    killed = {victim}
    if step.action == "kill-worker-in-startup":
        with prompt():
            new, seen = wait_until(
                lambda: [p for p in lab.workers() if p not in before], RECOVERY_LIMIT, 0.001
            )
            if seen is None:
                incidents[0].note = "no replacement appeared"
                return False
            repl = new[0]
            time.sleep(max(0.0, step.delay - (time.monotonic() - seen)))
            # Only cheap reads before the kill; whether it was accepting is worked out after.
            polled = polled_inodes(repl)
            exec_done = any("lb.worker" in a for a in cmdline(repl))
            t2 = time.monotonic()
            os.kill(repl, signal_named(step.sig2))
        ready = bool(polled & listening_inodes(lab.port))
        second = Incident(
            "worker-startup",
            f"pid {repl}",
            step.sig2,
            t2,
            held=set(),  # not accepting yet: it holds no client connection
            strict=step.sig2 == "SIGKILL",
            note=f"{(t2 - seen) * 1000:.0f} ms after it appeared, "
            + ("already accepting" if ready else "not accepting yet")
            + ("" if exec_done else ", before its exec"),
        )
        if ready:  # not a kill during startup after all: what it held is unknown
            second.held = None
        chk.incidents.append(second)
        incidents[0].chained = True
        incidents.append(second)
        killed.add(repl)
    t_back = recover(lab, n, killed)
    for i in incidents:
        i.t_back = t_back
        if t_back is None:
            workers = lab.workers()
            i.note = (i.note + "; " if i.note else "") + (
                f"after {RECOVERY_LIMIT:.0f}s: {len(workers)} worker process(es), "
                f"{len(lab.accepting_workers())} accepting, of {n}"
            )
    return t_back is not None


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("workers", [pytest.param(n, id=f"workers{n}") for n in (1, 2)])
def test_worker_kills(lab: Lab, seed: int, workers: int) -> None:
    family = f"workers{workers}"
    steps = worker_steps(schedule_rng(family, seed))
    chk = Checker(family, seed, steps)
    backends = lab.backends("b0", "b1")
    spares = lab.backends("s0", "s1")
    lab.write(lb_config(free_port(), [b.port for b in backends], workers=workers))
    lab.start_lb()
    plan = ApiPlan(lab.sock, POOL, [address(b) for b in backends], [address(s) for s in spares])
    with Traffic(lab.port, seed, api=plan) as load:
        time.sleep(0.5)
        for step in steps:
            if not kill_worker(lab, chk, step, workers):
                chk.note(f"lb did not recover after {step.action}: schedule stopped there")
                break
            time.sleep(step.pause)
        time.sleep(0.3)
    chk.traffic(load.records, load.concurrency)
    chk.recovery()
    check_api(lab, chk, load, "at the end")
    stop_lb_and_backends(lab, chk)
    chk.na("no duplicate member", "no scaler in this schedule")
    chk.na("lb and scaler agree on membership", "no scaler in this schedule")
    chk.finish(load.records, load.ops)


# -- supervisor -----------------------------------------------------------------------------


@pytest.mark.parametrize("seed", SEEDS)
def test_supervisor_kills(lab: Lab, seed: int) -> None:
    family = "supervisor"
    steps = supervisor_steps(schedule_rng(family, seed), 3)
    chk = Checker(family, seed, steps)
    backends = lab.backends("b0", "b1")
    spares = lab.backends("s0", "s1", "s2")
    lab.write(lb_config(free_port(), [b.port for b in backends], workers=2))
    lab.start_lb()
    # Calls close together: some are in flight when the supervisor dies (answered or not).
    plan = ApiPlan(
        lab.sock,
        POOL,
        [address(b) for b in backends],
        [address(s) for s in spares],
        every=(0.02, 0.08),
    )
    with Traffic(lab.port, seed, api=plan) as load:
        time.sleep(0.5)
        for k, step in enumerate(steps, 1):
            sup = lab.lb
            assert sup is not None
            workers = lab.workers()
            with prompt(), frozen(workers):
                held = client_ports(workers, lab.port)  # the supervisor's: its workers'
                t = time.monotonic()
                sup.popen.send_signal(signal_named(step.sig))
            inc = Incident("supervisor", f"pid {sup.pid}", step.sig, t, held=held)
            chk.incidents.append(inc)
            try:
                sup.popen.wait(15)
            except subprocess.TimeoutExpired:
                inc.note = "did not exit within 15s of the signal"
                break
            inc.note = f"exited {sup.popen.returncode} after {time.monotonic() - t:.2f}s"
            time.sleep(step.delay)
            try:
                lab.start_lb()
            except AssertionError as exc:
                inc.note += f"; lb run again failed: {str(exc)[-300:]}"
                chk.note(f"restart {k} failed: schedule stopped there")
                break
            inc.t_back = time.monotonic()
            check_api(lab, chk, load, f"after restart {k}")
            time.sleep(step.pause)
        time.sleep(0.3)
    chk.traffic(load.records, load.concurrency)
    chk.recovery()
    check_api(lab, chk, load, "at the end")
    stop_lb_and_backends(lab, chk)
    chk.na("no duplicate member", "no scaler in this schedule")
    chk.na("lb and scaler agree on membership", "no scaler in this schedule")
    chk.finish(load.records, load.ops)


# -- backends -------------------------------------------------------------------------------


def port_closed(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) != 0


@pytest.mark.parametrize("seed", SEEDS)
def test_backend_kills(lab: Lab, seed: int) -> None:
    family = "backend"
    steps = backend_steps(schedule_rng(family, seed), 4)
    chk = Checker(family, seed, steps)
    names = ["b0", "b1", "b2"]
    backends = lab.backends(*names)
    spares = lab.backends("s0")
    lab.write(lb_config(free_port(), [b.port for b in backends], workers=2))
    lab.start_lb()
    plan = ApiPlan(lab.sock, POOL, [address(b) for b in backends], [address(s) for s in spares])
    with Traffic(lab.port, seed, api=plan) as load:
        time.sleep(0.5)
        for step in steps:
            k = pick(range(len(backends)), step.pick)
            victim = backends[k]
            t = time.monotonic()
            victim.popen.send_signal(signal_named(step.sig))
            inc = Incident("backend", f"{names[k]} :{victim.port}", step.sig, t)
            chk.incidents.append(inc)
            try:
                victim.popen.wait(10)
            except subprocess.TimeoutExpired:
                victim.stop(signal.SIGKILL)
                inc.note = "ignored SIGTERM for 10s"
            inc.t_gone = time.monotonic()
            time.sleep(step.delay)
            backends[k] = lab.backend(names[k], port=victim.port)  # the same address
            inc.t_back = time.monotonic()
            time.sleep(step.pause)
        time.sleep(0.3)
    chk.traffic(load.records, load.concurrency)
    chk.na("lb recovers after every kill", "no lb-process kill in this schedule")
    check_api(lab, chk, load, "at the end")
    stop_lb_and_backends(lab, chk)
    chk.na("no duplicate member", "no scaler in this schedule")
    chk.na("lb and scaler agree on membership", "no scaler in this schedule")
    chk.finish(load.records, load.ops)


# -- the scaler (process provider) ----------------------------------------------------------


def scaler_config(lab: Lab, port: int, ports: str, target: int) -> dict[str, Any]:
    cfg = lb_config(port, [], workers=1)
    cfg["scalers"] = [
        {
            "pool": POOL,
            "min": target,
            "max": target,
            "target": 1000,
            "interval": "1s",
            "scale_down_stabilization": "0s",
            "drain_timeout": "5s",
            "stop_timeout": "3s",
            "backoff": "1s",
            "process": {
                "command": "{python} -m lb.demo_server --port {port} --name web-{port}",
                "port_range": ports,
                "env": {TAG_ENV: lab.tag},
            },
        }
    ]
    return cfg


def log_events(p: Proc) -> list[dict[str, Any]]:
    out = []
    for line in p.output().splitlines():
        if line.startswith("{"):
            with contextlib.suppress(ValueError):
                out.append(json.loads(line))
    return out


def members_file(lab: Lab) -> list[dict[str, Any]]:
    try:
        return list(json.loads((lab.tmp / "run" / f"scaler-{POOL}.json").read_text())["members"])
    except (OSError, ValueError, KeyError):
        return []


def scaler_removing(lab: Lab) -> list[str]:
    try:
        doc = json.loads((lab.tmp / "run" / "scaler.json").read_text())
        return list(doc.get("pools", {}).get(POOL, {}).get("removing", []))
    except (OSError, ValueError):
        return []


def managed(lab: Lab) -> list[dict[str, Any]]:
    try:
        backends = pool_backends(lab.sock, POOL)
    except (OSError, RuntimeError):
        return []
    return [b for b in backends if b.get("metadata", {}).get("managed-by") == "scaler"]


def start_scaler(lab: Lab) -> Proc:
    return lab.group.spawn("scaler", [sys.executable, "-m", "scaler", "-c", str(lab.path)])


def stop_scaler(p: Proc, sig: signal.Signals = signal.SIGTERM) -> None:
    p.stop(sig, timeout=30)


def trigger(lab: Lab, p: Proc, trig: str, up: bool) -> Callable[[], bool]:
    """A condition that becomes true at the moment ``trig`` of this scaler's action."""
    before = {b["address"] for b in managed(lab)}
    before_pids = [m["pid"] for m in members_file(lab) if isinstance(m.get("pid"), int)]
    action = "scale_up" if up else "scale_down"

    def logged(event: str, **match: Any) -> bool:
        return any(
            e.get("event") == event and all(e.get(k) == v for k, v in match.items())
            for e in log_events(p)
        )

    conds: dict[str, Callable[[], bool]] = {
        "decision": lambda: logged("scaler_decision", action=action),
        "spawned": lambda: bool(children(p.pid)),
        "registered": lambda: bool({b["address"] for b in managed(lab)} - before),
        "started": lambda: logged("scaler_member_started"),
        "draining": lambda: any(b["admin"] == "drain" for b in managed(lab)),
        "stopped": lambda: any(not alive(pid) for pid in before_pids if pid > 1),
        "removed": lambda: logged("scaler_member_removed"),
    }
    return conds[trig]


def settle(lab: Lab, chk: Checker, target: int, when: str, limit: float = 25.0) -> bool:
    """Wait until the scaler's members and lb's managed backends are the same ``target``
    addresses, all up and ready, nothing being removed; check the invariants on the way."""
    dup_seen: list[tuple[list[str], list[str]]] = []

    def state() -> tuple[list[str], list[str], bool]:
        recs = [m for m in members_file(lab) if isinstance(m.get("pid"), int) and alive(m["pid"])]
        rec = [str(m["address"]) for m in members_file(lab)]
        lbs = managed(lab)
        lb_addr = [str(b["address"]) for b in lbs]
        if len(set(rec)) < len(rec) or len(set(lb_addr)) < len(lb_addr):
            dup_seen.append((rec, lb_addr))
        done = (
            len(recs) == target
            and sorted(str(m["address"]) for m in recs) == sorted(lb_addr)
            and all(b["health"] == "up" and b["admin"] == "ready" for b in lbs)
            and not scaler_removing(lab)
        )
        return rec, lb_addr, done

    final: list[tuple[list[str], list[str]]] = []

    def cond() -> bool:
        rec, lb_addr, done = state()
        final[:] = [(rec, lb_addr)]
        return done

    _, t = wait_until(cond, limit, 0.05)
    rec, lb_addr = final[0]
    if dup_seen:
        chk.duplicates(*dup_seen[0], when + " (while settling)")
    chk.duplicates(rec, lb_addr, when)
    chk.agreement(rec, lb_addr, when + ("" if t is not None else f" (not settled in {limit:.0f}s)"))
    return t is not None


@pytest.mark.parametrize("seed", SEEDS)
def test_scaler_kills(lab: Lab, seed: int) -> None:
    family = "scaler"
    steps = scaler_steps(schedule_rng(family, seed), start=1, lo=1, hi=4)
    chk = Checker(family, seed, steps)
    port, ports = free_port(), port_block(20)
    lab.write(scaler_config(lab, port, ports, 1))
    lab.start_lb()
    first = start_scaler(lab)
    assert settle(lab, chk, 1, "start"), first.output()[-3000:]
    stop_scaler(first)
    with Traffic(lab.port, seed) as load:
        time.sleep(0.5)
        for k, step in enumerate(steps, 1):
            up = "up" in step.action
            lab.write(scaler_config(lab, port, ports, step.target))
            p = start_scaler(lab)
            cond = trigger(lab, p, step.trigger, up)
            _, seen = wait_until(cond, 15, 0.002)
            inc = None
            if seen is None:
                chk.note(f"step {k}: {step.trigger} not seen in 15s; scaler stopped normally")
                stop_scaler(p)
            else:
                time.sleep(step.delay)
                t = time.monotonic()
                p.popen.send_signal(signal_named(step.sig))
                with contextlib.suppress(subprocess.TimeoutExpired):
                    p.popen.wait(30)
                inc = Incident(
                    "scaler",
                    f"step {k} {'up' if up else 'in'} at {step.trigger}",
                    step.sig,
                    t,
                    note=f"{(t - seen) * 1000:.0f} ms after the trigger",
                )
                chk.incidents.append(inc)
            again = start_scaler(lab)
            settled = settle(lab, chk, step.target, f"after step {k}")
            if inc is not None and settled:
                inc.t_back = time.monotonic()
            stop_scaler(again)
            if not settled:
                chk.note(f"step {k}: not settled: {again.output()[-1500:]}")
                break
            time.sleep(step.pause)
        time.sleep(0.3)
    chk.traffic(load.records, load.concurrency)
    chk.na("lb recovers after every kill", "no lb-process kill in this schedule")
    chk.na(
        "acknowledged API changes persist",
        "lb is not killed here (the scaler's registrations: see the agreement)",
    )
    stop_all = subprocess.run(
        [sys.executable, "-m", "scaler", "-c", str(lab.path), "stop-all"],
        capture_output=True,
        text=True,
        timeout=60,
        env=lab.group.env,
    )
    chk.note(f"stop-all: exit {stop_all.returncode}: {stop_all.stdout.strip()[-200:]}")
    chk.agreement(
        [str(m["address"]) for m in members_file(lab)],
        [str(b["address"]) for b in managed(lab)],
        "after stop-all",
    )
    stop_lb_and_backends(lab, chk)
    chk.finish(load.records, load.ops)


# -- Docker members -------------------------------------------------------------------------


async def _containers(label: str) -> list[dict[str, Any]]:
    docker = aiodocker.Docker()
    try:
        found = await docker.containers.list(all=True, filters={"label": [f"test-run={label}"]})
        return [
            {
                "id": c.id,
                "state": c["State"],
                "port": (c["Labels"] or {}).get("lb.port", "0"),
            }
            for c in found
        ]
    finally:
        await docker.close()


def containers(label: str) -> list[dict[str, Any]]:
    return asyncio.run(_containers(label))


async def docker_kill(container_id: str, sig: str) -> None:
    docker = aiodocker.Docker()
    try:
        await docker.containers.container(container_id).kill(signal=sig)
    finally:
        await docker.close()


def docker_settle(
    lab: Lab, chk: Checker, label: str, target: int, when: str, gone: str = ""
) -> bool:
    """Like ``settle``, with the labelled containers as the scaler's record; ``gone``: a killed
    container that must have been cleaned up first."""
    final: list[tuple[list[str], list[str]]] = []
    dup_seen: list[tuple[list[str], list[str]]] = []

    def cond() -> bool:
        cs = containers(label)
        rec = [f"127.0.0.1:{c['port']}" for c in cs]
        running = sorted(f"127.0.0.1:{c['port']}" for c in cs if c["state"] == "running")
        lbs = managed(lab)
        lb_addr = [str(b["address"]) for b in lbs]
        final[:] = [(rec, lb_addr)]
        if len(set(rec)) < len(rec) or len(set(lb_addr)) < len(lb_addr):
            dup_seen.append((rec, lb_addr))
        return (
            not (gone and any(c["id"] == gone for c in cs))
            and len(running) == target
            and len(cs) == target
            and running == sorted(lb_addr)
            and all(b["health"] == "up" and b["admin"] == "ready" for b in lbs)
        )

    _, t = wait_until(cond, 25, 0.1)
    rec, lb_addr = final[0]
    if dup_seen:
        chk.duplicates(*dup_seen[0], when + " (while settling)")
    chk.duplicates(rec, lb_addr, when)
    chk.agreement(rec, lb_addr, when + ("" if t is not None else " (not settled in 25s)"))
    return t is not None


@pytest.mark.docker
@pytest.mark.parametrize("seed", SEEDS)
def test_docker_member_kills(lab: Lab, seed: int, run_label: str) -> None:
    family = "docker"
    steps = member_steps(schedule_rng(family, seed), 3)
    chk = Checker(family, seed, steps)
    target = 2
    cfg = scaler_config(lab, free_port(), "", target)
    sc = cfg["scalers"][0]
    del sc["process"]
    sc["provider"] = "docker"
    sc["docker"] = {
        "image": IMAGE,
        "command": "busybox httpd -f -p 127.0.0.1:{port} -h /www",
        "network_mode": "host",
        "port_range": port_block(10),
        "labels": {"test-run": run_label},
    }
    lab.write(cfg)
    lab.start_lb()
    scaler = start_scaler(lab)
    assert docker_settle(lab, chk, run_label, target, "start"), scaler.output()[-3000:]
    # busybox httpd: a 0.2 s CGI (GET and POST) and a static file; it closes after each answer.
    mix = Mix(gets=("/cgi-bin/slow", "/index.html"), post="/cgi-bin/slow", echo=False)
    with Traffic(lab.port, seed, concurrency=6, mix=mix) as load:
        time.sleep(0.5)
        for k, step in enumerate(steps, 1):
            running = [c for c in containers(run_label) if c["state"] == "running"]
            victim = running[pick(range(len(running)), step.pick)]
            t = time.monotonic()
            # What `docker kill --signal ...` does: the engine's kill call.
            asyncio.run(docker_kill(victim["id"], step.sig))
            inc = Incident(
                "member", f"container {victim['id'][:12]} :{victim['port']}", step.sig, t
            )
            chk.incidents.append(inc)
            _, inc.t_gone = wait_until(partial(port_closed, int(victim["port"])), 10, 0.005)
            settled = docker_settle(
                lab, chk, run_label, target, f"after kill {k}", gone=victim["id"]
            )
            inc.t_back = time.monotonic() if settled else None
            if not settled:
                chk.note(f"kill {k}: not settled: {scaler.output()[-1500:]}")
                break
            time.sleep(step.pause)
        time.sleep(0.3)
    chk.traffic(load.records, load.concurrency)
    chk.na("lb recovers after every kill", "no lb-process kill in this schedule")
    chk.na(
        "acknowledged API changes persist",
        "lb is not killed here (the scaler's registrations: see the agreement)",
    )
    stop_scaler(scaler)
    stop_all = subprocess.run(
        [sys.executable, "-m", "scaler", "-c", str(lab.path), "stop-all"],
        capture_output=True,
        text=True,
        timeout=60,
        env=lab.group.env,
    )
    chk.note(f"stop-all: exit {stop_all.returncode}: {stop_all.stdout.strip()[-200:]}")
    stop_lb_and_backends(lab, chk)
    left = [c["id"][:12] for c in containers(run_label)]
    chk.orphans([], left, "containers after stop-all")
    chk.finish(load.records, load.ops)
