"""The process provider with real processes (no lb): start, adopt, verify ownership, stop,
failed starts, death notice, ports."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import socket
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from scaler.config import ProcessSettings
from scaler.providers.base import Member, ProviderError, port_is_free
from scaler.providers.process import ProcessProvider, proc_stat, render
from tests.helpers import http_get


def port_block(n: int = 20) -> str:
    """n consecutive free ports below the ephemeral range (so that no client connection or
    TIME_WAIT takes one meanwhile), checked now and used right after."""
    rng = random.Random()
    for _ in range(200):
        lo = rng.randrange(20000, 32000 - n)
        if all(port_is_free("127.0.0.1", p) for p in range(lo, lo + n)):
            return f"{lo}-{lo + n - 1}"
    raise RuntimeError("no block of free ports")


def provider(tmp: Path, command: str, start_timeout: float = 10.0, **kw: str) -> ProcessProvider:
    settings = ProcessSettings(command=command, port_range=kw.get("port_range") or port_block())
    return ProcessProvider(
        "web",
        settings,
        state_file=tmp / "scaler-web.json",
        log_dir=tmp / "members",
        cwd=tmp,
        start_timeout=start_timeout,
    )


BACKEND = "{python} -m lb.demo_server --port {port} --name web-{port}"


def kill_recorded(state_file: Path) -> None:
    with contextlib.suppress(OSError, ValueError):
        for m in json.loads(state_file.read_text())["members"]:
            if isinstance(m["pid"], int) and m["pid"] > 1:  # null: recorded, never spawned
                with contextlib.suppress(OSError):
                    os.killpg(m["pid"], signal.SIGKILL)


@pytest.fixture
def tmp(tmp_path: Path) -> Iterator[Path]:
    try:
        yield tmp_path
    finally:
        kill_recorded(tmp_path / "scaler-web.json")


async def test_members_start_in_their_own_session_and_are_adopted(tmp: Path) -> None:
    p = provider(tmp, BACKEND)
    await p.open()
    m = await p.create()
    port = int(m.address.rsplit(":", 1)[1])
    pid = int(m.info["pid"])
    assert m.running and os.getsid(pid) == pid  # not in our session: survives our exit
    status, headers, _ = await asyncio.to_thread(http_get, port, "/healthz")
    assert status == 200
    assert headers["x-backend"] == f"web-{port}"
    doc = json.loads((tmp / "scaler-web.json").read_text())
    (rec,) = doc["members"]
    assert rec["pid"] == pid and rec["port"] == port
    assert rec["cmdline"][1:] == [
        "-m",
        "lb.demo_server",
        "--port",
        str(port),
        "--name",
        f"web-{port}",
    ]

    # A second provider on the same file (a restarted scaler) adopts it.
    again = provider(tmp, BACKEND)
    await again.open()
    (adopted,) = await again.list()
    assert adopted.id == m.id and adopted.running

    # Stopping is SIGTERM to the group; the record goes.
    await again.stop_and_remove(adopted, grace=5.0)
    assert proc_stat(pid) is None or proc_stat(pid)[0] == "Z"  # type: ignore[index]
    assert json.loads((tmp / "scaler-web.json").read_text())["members"] == []
    await p.stop_and_remove(m, grace=1.0)  # idempotent


async def test_a_reused_pid_is_not_ours_and_is_never_signalled(tmp: Path) -> None:
    p = provider(tmp, BACKEND)
    await p.open()
    m = await p.create()
    doc = json.loads((tmp / "scaler-web.json").read_text())
    real = dict(doc["members"][0])
    doc["members"][0]["start_ticks"] += 1  # as if the pid now belonged to another process
    (tmp / "scaler-web.json").write_text(json.dumps(doc))
    other = provider(tmp, BACKEND)
    await other.open()
    (seen,) = await other.list()
    assert not seen.running and "now belongs to another process" in seen.detail
    await other.stop_and_remove(seen, grace=1.0)  # forgets it without a signal
    assert proc_stat(real["pid"]) is not None and proc_stat(real["pid"])[0] != "Z"  # type: ignore[index]
    await p.stop_and_remove(m, grace=5.0)


async def test_a_failed_start_is_reported_with_its_output_and_leaves_nothing(tmp: Path) -> None:
    p = provider(tmp, "{python} -c \"import sys; print('cannot bind {port}'); sys.exit(3)\"")
    await p.open()
    with pytest.raises(ProviderError) as info:
        await p.create()
    msg = str(info.value)
    assert "exited with status 3" in msg and "cannot bind" in msg
    assert await p.list() == []
    assert json.loads((tmp / "scaler-web.json").read_text())["members"] == []


async def test_a_member_that_never_listens_is_killed(tmp: Path) -> None:
    p = provider(tmp, '{python} -c "import time; time.sleep(60)" {port}', start_timeout=0.5)
    await p.open()
    t0 = time.monotonic()
    with pytest.raises(ProviderError, match=r"nothing accepted connections on 127\.0\.0\.1:"):
        await p.create()
    assert time.monotonic() - t0 < 5
    assert await p.list() == []


async def test_death_is_reported_fast(tmp: Path) -> None:
    p = provider(tmp, BACKEND)
    await p.open()
    m = await p.create()
    events: AsyncIterator[object] = p.events()
    os.kill(int(m.info["pid"]), signal.SIGKILL)
    t0 = time.monotonic()
    async with asyncio.timeout(5):
        gone = await anext(events)  # type: ignore[call-overload]
    await events.aclose()  # type: ignore[attr-defined]
    assert gone.id == m.id and "killed by SIGKILL" in gone.detail  # type: ignore[attr-defined]
    assert time.monotonic() - t0 < 1.5
    (dead,) = await p.list()
    assert not dead.running
    await p.stop_and_remove(dead, grace=0)
    assert await p.list() == []


async def test_ports_rotate_and_skip_ports_in_use(tmp: Path) -> None:
    block = port_block(4)
    lo = int(block.split("-")[0])
    squatter = socket.socket()
    try:
        squatter.bind(("127.0.0.1", lo + 1))
        squatter.listen()
        p = provider(tmp, BACKEND, port_range=block)
        await p.open()
        members: list[Member] = [await p.create() for _ in range(3)]
        ports = [int(m.address.rsplit(":", 1)[1]) for m in members]
        assert ports == [lo, lo + 2, lo + 3]
        with pytest.raises(ProviderError, match="no free port in port_range"):
            await p.create()
        await p.stop_and_remove(members[0], grace=5)
        m = await p.create()  # the freed port is the only one left
        assert m.address.endswith(f":{lo}")
        members[0] = m
        for m in await p.list():
            await p.stop_and_remove(m, grace=5)
    finally:
        squatter.close()


def test_placeholders_are_filled_per_word() -> None:
    assert render("{python} -m x --name 'a {port}'", {"python": "/py", "port": "9"}) == [
        "/py",
        "-m",
        "x",
        "--name",
        "a 9",
    ]


async def test_cpu_time_comes_from_proc(tmp: Path) -> None:
    p = provider(tmp, BACKEND)
    await p.open()
    m = await p.create()
    first = await p.cpu(m)
    assert first is not None and first.seconds > 0  # Python's start-up alone takes some
    await p.stop_and_remove(m, grace=5)
    assert await p.cpu(m) is None
