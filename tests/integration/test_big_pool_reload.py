"""A worker with a pool of 10,000 backends keeps answering while reloads send it that pool
again: unchanged, with its strategy changed, and with a few backends changed.

lb runs as a real process with one worker. One backend is real (a demo server, weight 1); the
other 9,999 have weight 0, so they are in the pool (and in every snapshot the worker applies,
in slices) but never picked. Keep-alive load from an aiohttp client runs for the whole test
and must see no failure. No timing is asserted (``benchmarks.stall`` measures the stalls)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp

from tests.helpers import Proc, ProcessGroup, free_port, to_toml

N = 10_000


def big_config(port: int, real: int, strategy: str = "weighted", heavy: int = 0) -> dict[str, Any]:
    """``heavy``: how many of the idle backends get a ``max_conn`` (a field every snapshot
    carries), so that the snapshot changes them; they keep weight 0, so stay unpicked."""
    idle = [
        {
            "address": f"127.0.{i // 250}.{i % 250 + 1}:9",
            "weight": 0,
            **({"max_conn": 5} if i < heavy else {}),
        }
        for i in range(1, N)
    ]
    return {
        "lb": {"workers": 1, "grace": "2s"},
        "listeners": [{"name": "web", "bind": f"127.0.0.1:{port}", "mode": "http", "pool": "p"}],
        "pools": {
            "p": {
                "strategy": strategy,
                "backends": [{"address": f"127.0.0.1:{real}", "weight": 1}, *idle],
            }
        },
    }


def reload(lb: Proc, cfg: dict[str, Any]) -> str:
    path = Path(lb.extra["config_path"])
    path.write_text(to_toml(cfg))
    r = subprocess.run(
        [sys.executable, "-m", "lb.control.lbctl", "-c", str(path), "reload"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout


async def steady_load(port: int, stop: asyncio.Event, failures: list[str], done: list[int]) -> None:
    """Keep-alive GETs on 4 connections until ``stop`` (bounded: 180 s at most)."""
    deadline = time.monotonic() + 180
    conn = aiohttp.TCPConnector(limit=4)
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(connector=conn, timeout=timeout) as session:

        async def worker() -> None:
            while not stop.is_set() and time.monotonic() < deadline:
                try:
                    async with session.get(f"http://127.0.0.1:{port}/load") as r:
                        await r.read()
                        if r.status != 200:
                            failures.append(f"status {r.status}")
                        done[0] += 1
                except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                    failures.append(repr(exc))
                await asyncio.sleep(0.002)

        await asyncio.gather(*(worker() for _ in range(4)))


async def test_a_worker_with_10000_backends_keeps_answering_through_reloads(
    procs: ProcessGroup,
) -> None:
    real = procs.backend("real")
    port = free_port()
    lb = procs.lb(big_config(port, real.port))
    stop, failures, done = asyncio.Event(), list[str](), [0]
    load = asyncio.create_task(steady_load(port, stop, failures, done))
    try:
        for cfg in (
            big_config(port, real.port),  # unchanged
            big_config(port, real.port, strategy="least_conn"),  # a new strategy: a full build
            big_config(port, real.port, strategy="least_conn", heavy=50),  # a few changed
            big_config(port, real.port, strategy="round_robin"),
        ):
            before = done[0]
            await asyncio.to_thread(reload, lb, cfg)
            for _ in range(400):  # bounded: 20 s
                if done[0] >= before + 20:
                    break
                await asyncio.sleep(0.05)
            assert done[0] >= before + 20, f"no traffic after a reload: {lb.output()[-2000:]}"
    finally:
        stop.set()
        await load
    assert not failures, failures[:5]
    assert done[0] > 80
