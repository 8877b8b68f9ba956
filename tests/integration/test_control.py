"""End to end: lb as a real process with 2 workers, driven through lbctl and the async client,
with real clients relaying through a tcp listener while backends are drained and reloaded."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from lb.control.client import ApiError, ControlClient
from tests.helpers import Proc, ProcessGroup, free_port, http_get, to_toml


def config(port: int, backends: list[int], **extra: Any) -> dict[str, Any]:
    pool = extra.pop("pool", {})
    return {
        "lb": {"workers": 2, "grace": "5s", **extra.pop("lb", {})},
        **extra,
        "listeners": [{"name": "t", "bind": f"127.0.0.1:{port}", "mode": "tcp", "pool": "p"}],
        "pools": {
            "p": {
                "strategy": "round_robin",
                **pool,
                "backends": [{"address": f"127.0.0.1:{b}"} for b in backends],
            }
        },
    }


def socket_of(lb: Proc) -> Path:
    return Path(lb.extra["config_path"]).parent / "run" / "lb.sock"


def lbctl(lb: Proc, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lb.control.lbctl", "-c", str(lb.extra["config_path"]), *args],
        capture_output=True,
        text=True,
        timeout=30,
    )


@dataclass
class Load:
    """Client threads opening one connection per request through the listener."""

    port: int
    results: list[tuple[float, str]] = field(default_factory=list)  # (start, backend)
    errors: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        deadline = time.monotonic() + 30  # bounded even if the test never says stop
        while not self.stop.is_set() and time.monotonic() < deadline:
            t0 = time.monotonic()
            try:
                status, headers, _ = http_get(self.port, timeout=5)
                if status != 200:
                    self.errors.append(f"status {status}")
                self.results.append((t0, headers.get("x-backend", "?")))
            except OSError as exc:
                self.errors.append(repr(exc))
            time.sleep(0.002)


@contextmanager
def load(port: int, threads: int = 3) -> Iterator[Load]:
    ld = Load(port)
    ts = [threading.Thread(target=ld.run) for _ in range(threads)]
    for t in ts:
        t.start()
    try:
        yield ld
    finally:
        ld.stop.set()
        for t in ts:
            t.join(35)


def test_lbctl_drives_every_operation(procs: ProcessGroup) -> None:
    b1, b2 = procs.backend("b1"), procs.backend("b2")
    lb = procs.lb(config(free_port(), [b1.port]))
    addr2 = f"127.0.0.1:{b2.port}"

    r = lbctl(lb, "add", "p", addr2, "--weight", "2", "--id", "two", "--meta", "owner=t")
    assert r.returncode == 0 and "added p/two" in r.stdout, r
    r = lbctl(lb, "add", "p", addr2, "--id", "two")
    assert r.returncode == 0 and "already registered" in r.stdout
    r = lbctl(lb, "backends")
    assert r.returncode == 0 and "ADMIN" in r.stdout and addr2 in r.stdout
    r = lbctl(lb, "--json", "backends", "p")
    doc = orjson.loads(r.stdout)
    assert [b["id"] for b in doc["backends"]] == [f"127.0.0.1:{b1.port}", "two"]
    assert doc["backends"][1]["metadata"] == {"owner": "t"}
    assert lbctl(lb, "pools").stdout.splitlines()[1].split()[:2] == ["p", "round_robin"]
    assert "weight 5" in lbctl(lb, "weight", "p", "two", "5").stdout
    assert "admin maint" in lbctl(lb, "maint", "p", "two").stdout
    assert "admin ready" in lbctl(lb, "ready", "p", addr2).stdout  # by address, too
    r = lbctl(lb, "remove", "p", "two")
    assert r.returncode == 1 and "not removable" in r.stderr and "409" in r.stderr
    assert "admin drain" in lbctl(lb, "drain", "p", "two").stdout
    r = lbctl(lb, "wait", "p", "two", "--timeout", "10")
    assert r.returncode == 0 and "removable" in r.stdout, r
    r = lbctl(lb, "remove", "p", "two")
    assert r.returncode == 0 and "removed p/two" in r.stdout
    for _ in range(5):
        assert http_get(lb.port)[0] == 200
    r = lbctl(lb, "stats", "--window", "5")
    assert r.returncode == 0 and "IN-FLIGHT" in r.stdout
    st = orjson.loads(lbctl(lb, "--json", "stats", "p").stdout)
    assert st["pools"]["p"]["backends_total"] == 1
    r = lbctl(lb, "reload")
    assert r.returncode == 0 and "reloaded" in r.stdout
    assert f"pid: {lb.pid}" in lbctl(lb, "info").stdout

    # Errors: the API's message and a non-zero exit; reaching no lb is explained.
    r = lbctl(lb, "weight", "p", f"127.0.0.1:{b1.port}", "-1")
    assert r.returncode == 1 and "weight" in r.stderr and "greater than or equal" in r.stderr
    r = lbctl(lb, "drain", "nope", "x")
    assert r.returncode == 1 and "no pool 'nope'" in r.stderr
    r = lbctl(lb, "add", "p", "not-an-address")
    assert r.returncode == 1 and "address" in r.stderr
    r = lbctl(lb, "--socket", str(socket_of(lb)) + ".missing", "backends")
    assert r.returncode == 3 and "no control socket" in r.stderr
    r = subprocess.run(
        [sys.executable, "-m", "lb.control.lbctl", "-c", "/nonexistent.toml", "backends"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.returncode == 2 and "--socket" in r.stderr


async def test_drain_under_load_loses_nothing(procs: ProcessGroup) -> None:
    b1, b2 = procs.backend("d1"), procs.backend("d2")
    lb = procs.lb(config(free_port(), [b1.port, b2.port]))
    async with ControlClient(socket_of(lb)) as c:
        with load(lb.port) as ld:
            await asyncio.sleep(0.7)
            b = await c.drain("p", f"127.0.0.1:{b2.port}")
            acked = time.monotonic()
            assert b.admin == "drain"
            w = await c.wait_removable("p", f"127.0.0.1:{b2.port}", within=10)
            assert w.removable and w.workers == 2 and w.pending_workers == 0, w
            removed = await c.remove("p", f"127.0.0.1:{b2.port}")
            assert not removed.forced
            await asyncio.sleep(0.5)
        assert not ld.errors, ld.errors[:5]
        assert len(ld.results) > 50
        assert any(name == "d2" for _, name in ld.results)  # it did serve before the drain
        late = [(t - acked, name) for t, name in ld.results if t > acked and name == "d2"]
        assert not late, late[:5]
        assert [x.id for x in (await c.backends("p")).backends] == [f"127.0.0.1:{b1.port}"]


async def test_forced_delete_and_drain_timeout_close_connections(procs: ProcessGroup) -> None:
    b1, b2 = procs.backend("f1"), procs.backend("f2")
    lb = procs.lb(config(free_port(), [b1.port, b2.port], pool={"drain_timeout": "1s"}))

    def held() -> tuple[socket.socket, str]:
        s = socket.create_connection(("127.0.0.1", lb.port), timeout=10)
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")  # keep-alive: the pair stays open
        head = s.recv(4096).decode("latin-1")
        name = head.split("X-Backend: ", 1)[1].split("\r\n", 1)[0]
        return s, name

    # Each worker round-robins on its own: open until both backends hold connections.
    conns: list[tuple[socket.socket, str]] = []
    try:
        while len(conns) < 20 and not {"f1", "f2"} <= {name for _, name in conns}:
            conns.append(held())
        on_f2 = sum(name == "f2" for _, name in conns)
        assert 0 < on_f2 < len(conns)
        async with ControlClient(socket_of(lb)) as c:
            # Forced delete closes f1's connections in every worker at once.
            with pytest.raises(ApiError) as ei:
                await c.remove("p", f"127.0.0.1:{b1.port}")
            assert ei.value.status == 409 and "force" in ei.value.message
            res = await c.remove("p", f"127.0.0.1:{b1.port}", force=True)
            assert res.forced
            for s, name in conns:
                if name == "f1":
                    assert s.recv(100) == b""
            # Draining f2: its connections run until drain_timeout (1 s), then are closed.
            await c.drain("p", f"127.0.0.1:{b2.port}")
            w = await c.wait_removable("p", f"127.0.0.1:{b2.port}", within=0.2)
            assert not w.removable and w.timed_out and w.active == on_f2, w
            t0 = time.monotonic()
            w = await c.wait_removable("p", f"127.0.0.1:{b2.port}", within=10)
            assert w.removable and 0.4 < time.monotonic() - t0 < 5, w
            for s, name in conns:
                if name == "f2":
                    assert s.recv(100) == b""
    finally:
        for s, _ in conns:
            s.close()


async def test_registered_backends_survive_kill9(procs: ProcessGroup) -> None:
    b1, b2, b3 = (procs.backend(f"k{i}") for i in range(3))
    cfg = config(free_port(), [b1.port, b2.port])
    lb = procs.lb(cfg)
    sock = socket_of(lb)
    assert stat.S_IMODE(os.stat(sock).st_mode) == 0o600
    async with ControlClient(sock) as c:
        await c.add_backend("p", f"127.0.0.1:{b3.port}", 7, id="k3", metadata={"z": "1"})
        await c.set_weight("p", f"127.0.0.1:{b1.port}", 3)
        await c.maint("p", f"127.0.0.1:{b2.port}")
        await c.remove("p", f"127.0.0.1:{b2.port}")
        await c.drain("p", "k3")
        before = [
            (b.id, b.address, b.weight, b.admin, b.metadata)
            for b in (await c.backends("p")).backends
        ]
    # A second lb on the same config refuses to start and leaves the live socket alone.
    second = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "lb", "run", "-c", str(lb.extra["config_path"])],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert second.returncode == 1 and "another lb is serving" in second.stderr
    assert sock.exists()

    lb.popen.send_signal(signal.SIGKILL)
    lb.popen.wait(10)
    assert sock.exists()  # left behind, stale
    again = procs.lb(cfg)  # same config path: same state file and socket
    assert "removing stale control socket" in again.output()
    async with ControlClient(sock) as c:
        after = [
            (b.id, b.address, b.weight, b.admin, b.metadata)
            for b in (await c.backends("p")).backends
        ]
    assert after == before
    assert http_get(again.port)[1]["x-backend"] == "k0"  # k0 is the only ready backend


async def test_reload_under_load(procs: ProcessGroup) -> None:
    bs = [procs.backend(f"r{i}") for i in range(3)]
    extra = procs.backend("r3")
    port = free_port()
    cfg = config(port, [b.port for b in bs])
    lb = procs.lb(cfg)
    path = Path(lb.extra["config_path"])
    async with ControlClient(socket_of(lb)) as c:
        await c.add_backend("p", f"127.0.0.1:{extra.port}")
        with load(port) as ld:
            await asyncio.sleep(0.7)
            # Change the strategy and drop r2 from the file.
            cfg2 = config(port, [bs[0].port, bs[1].port], pool={"strategy": "least_conn"})
            await asyncio.to_thread(path.write_text, to_toml(cfg2))
            r = await c.reload()
            acked = time.monotonic()
            assert "pool p strategy: 'round_robin' -> 'least_conn'" in r.changes, r
            assert f"backend p/127.0.0.1:{bs[2].port} removed" in r.changes, r
            await asyncio.sleep(0.7)
            # A broken file is refused (API and SIGHUP alike); lb keeps serving.
            await asyncio.to_thread(
                path.write_text, to_toml(cfg2).replace("least_conn", "most_conn")
            )
            with pytest.raises(ApiError) as ei:
                await c.reload()
            assert ei.value.field == "config" and "pools.p.strategy" in ei.value.message
            lb.popen.send_signal(signal.SIGHUP)
            await asyncio.sleep(0.7)
        assert "reload (SIGHUP) refused" in lb.output()
        assert not ld.errors, ld.errors[:5]
        late = [name for t, name in ld.results if t > acked + 0.05 and name == "r2"]
        assert not late, late[:5]
        seen_after = {name for t, name in ld.results if t > acked}
        assert seen_after == {"r0", "r1", "r3"}, seen_after  # the runtime-added one survived
        pool = await c.pool("p")
        assert pool.strategy == "least_conn"


async def test_admin_listener_reads_freely_and_writes_with_token(
    procs: ProcessGroup, tmp_path: Path
) -> None:
    b1 = procs.backend("a1")
    admin_port = free_port()
    (tmp_path / "token").write_text("s3cret\n")
    # No health checks and no client traffic: whatever addresses schemathesis registers are
    # never contacted.
    lb = procs.lb(
        config(
            free_port(),
            [b1.port],
            admin={"bind": f"127.0.0.1:{admin_port}", "token_file": "token"},
        )
    )
    base = f"http://127.0.0.1:{admin_port}"
    body = {"address": "127.0.0.1:9"}
    async with aiohttp.ClientSession() as s:
        async with s.get(base + "/v1/pools") as r:
            assert r.status == 200
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret"}):
            async with s.post(base + "/v1/pools/p/backends", json=body, headers=headers) as r:
                assert r.status == 401, await r.text()
                assert (await r.json())["error"]["field"] == "authorization"
                assert r.headers["WWW-Authenticate"].startswith("Bearer")
        async with s.post(
            base + "/v1/pools/p/backends", json=body, headers={"Authorization": "Bearer s3cret"}
        ) as r:
            assert r.status == 201
    async with ControlClient(url=base, token="s3cret") as c:
        await c.remove("p", "127.0.0.1:9", force=True)
        assert [b.id for b in (await c.backends("p")).backends] == [f"127.0.0.1:{b1.port}"]

    # schemathesis against the published description: no 5xx, no schema violation.
    st = Path(sys.executable).parent / "st"
    if not st.exists():
        pytest.skip("schemathesis is not installed (pip install '.[test]')")
    r = await asyncio.to_thread(
        subprocess.run,
        [str(st), "run", base + "/v1/openapi.json", "-H", "Authorization: Bearer s3cret",
         "--checks", "not_a_server_error,status_code_conformance,content_type_conformance,"
         "response_schema_conformance,response_headers_conformance",
         "--max-examples", "15", "--seed", "1", "--no-color",
         # A long poll answers when the figures change or after up to a minute: fuzzing it
         # would only time out (tests/integration/test_overload.py covers it).
         "--exclude-path", "/v1/pools/{pool}/demand"],
        capture_output=True, text=True, timeout=90, cwd=tmp_path,
    )  # fmt: skip
    assert r.returncode == 0, r.stdout[-4000:]
    assert "Traceback" not in lb.output()


async def test_http_drain_under_keepalive_load_and_latency_stats(procs: ProcessGroup) -> None:
    b1, b2 = procs.backend("h1", "--latency", "5"), procs.backend("h2", "--latency", "5")
    cfg = config(free_port(), [b1.port, b2.port])
    cfg["listeners"][0]["mode"] = "http"
    lb = procs.lb(cfg)
    url = f"http://127.0.0.1:{lb.port}/"
    results: list[tuple[float, str]] = []
    errors: list[str] = []
    stop = asyncio.Event()

    async def client(session: aiohttp.ClientSession) -> None:
        deadline = time.monotonic() + 30
        while not stop.is_set() and time.monotonic() < deadline:
            t0 = time.monotonic()
            try:
                async with session.get(url) as r:
                    await r.read()
                    if r.status != 200:
                        errors.append(f"status {r.status}")
                    results.append((t0, r.headers.get("X-Backend", "?")))
            except aiohttp.ClientError as exc:
                errors.append(repr(exc))

    async with aiohttp.ClientSession() as session, ControlClient(socket_of(lb)) as c:
        tasks = [asyncio.create_task(client(session)) for _ in range(4)]
        await asyncio.sleep(1.5)
        await c.drain("p", f"127.0.0.1:{b2.port}")
        acked = time.monotonic()
        w = await c.wait_removable("p", f"127.0.0.1:{b2.port}", within=10)
        assert w.removable, w
        await c.remove("p", f"127.0.0.1:{b2.port}")
        await asyncio.sleep(0.5)
        stats = await c.stats("p", window=5)
        stop.set()
        await asyncio.gather(*tasks)
    assert not errors, errors[:5]
    assert any(name == "h2" for t, name in results if t < acked)
    late = [round(t - acked, 3) for t, name in results if t > acked and name == "h2"]
    assert not late, late[:5]
    pool = stats.pools["p"]
    assert pool.rate > 50 and pool.error_rate == 0
    assert pool.latency_ms is not None and 4 < pool.latency_ms.p50 < 50, pool.latency_ms
