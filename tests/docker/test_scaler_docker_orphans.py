"""``kill -9`` of lb-scaler between a container's create and its start, and between its start
and its registration in lb, with a real engine (issue 14): the next scaler removes the first
and adopts the second, and ``stop-all`` leaves no container.

The kills land at exactly those moments through a small proxy between the scaler and the
engine (``[scalers.docker] docker_url``): it passes the bytes through, and when a container
start request goes by it SIGKILLs the scaler either before forwarding the request (the
container stays ``created``) or once the engine has answered it (the container runs, and the
scaler never learns it). The labels, written at create, are the only record either way.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.docker.test_scaler_docker import containers, docker_config
from tests.helpers import ROOT, Proc, ProcessGroup
from tests.integration.test_scaler import Scaled, log_events, wait_for

START = re.compile(rb"^POST /[^ ]*containers/[^/ ]+/start[ ?]")


class EngineProxy:
    """A byte pipe on a unix socket in front of the engine, in a thread of its own."""

    def __init__(self, engine: str, path: Path) -> None:
        self.engine = engine
        self.path = path
        self.victim = 0  # pid to SIGKILL
        self.kill_at: str | None = None  # "before-start" | "after-start" (one shot)
        self.killed = threading.Event()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.tasks: set[asyncio.Task[None]] = set()
        self.server: asyncio.Server | None = None

    def __enter__(self) -> EngineProxy:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self._serve(), self.loop).result(5)
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self._close(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()

    def arm(self, at: str | None, victim: int = 0) -> None:
        self.killed.clear()
        self.victim, self.kill_at = victim, at

    def _kill(self) -> None:
        self.kill_at = None
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.victim, signal.SIGKILL)
        self.killed.set()

    async def _serve(self) -> None:
        self.server = await asyncio.start_unix_server(self._connection, str(self.path))

    async def _close(self) -> None:
        if self.server is not None:
            self.server.close()
        for t in list(self.tasks):
            t.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.tasks.add(task)
        up_r, up_w = await asyncio.open_unix_connection(self.engine)
        started = asyncio.Event()  # a start request went to the engine (after-start)

        async def to_engine() -> None:
            while data := await reader.read(65536):
                if self.kill_at is not None and START.match(data):
                    if self.kill_at == "before-start":
                        self._kill()
                        return
                    started.set()
                up_w.write(data)
                await up_w.drain()

        async def to_scaler() -> None:
            while data := await up_r.read(65536):
                if started.is_set():
                    self._kill()  # the engine answered; the scaler never hears it
                    return
                writer.write(data)
                await writer.drain()

        pipes = [asyncio.ensure_future(to_engine()), asyncio.ensure_future(to_scaler())]
        try:
            await asyncio.wait(pipes, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for p in pipes:
                p.cancel()
            await asyncio.gather(*pipes, return_exceptions=True)
            for w in (writer, up_w):
                w.close()
                with contextlib.suppress(OSError):
                    await w.wait_closed()
            self.tasks.discard(task)


@pytest.fixture
def scaled(procs: ProcessGroup, tmp_path: Path, run_label: str) -> Iterator[Scaled]:
    s = Scaled(procs, tmp_path)
    try:
        yield s
    finally:
        for p in procs.procs:
            if p.name.startswith("scaler"):
                p.stop(signal.SIGKILL)


def engine_socket() -> str:
    host = os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
    if not host.startswith("unix://"):
        pytest.skip(f"the proxy speaks to a unix socket engine, not {host}")
    return host[len("unix://") :]


def killed_scaler(scaled: Scaled, proxy: EngineProxy, at: str, name: str) -> Proc:
    p = scaled.procs.spawn(name, [sys.executable, "-m", "scaler", "-c", str(scaled.path)])
    proxy.arm(at, p.pid)
    if not proxy.killed.wait(30):
        p.stop(signal.SIGKILL)
        raise AssertionError(f"{name} was not killed at {at}:\n{p.output()[-3000:]}")
    p.popen.wait(10)
    return p


def state(run_label: str) -> list[tuple[str, str]]:
    return sorted((c["Id"], c["State"]["Status"]) for c in asyncio.run(containers(run_label)))


def test_kill_9_between_create_start_and_registration_leaves_no_container(
    docker_engine: str, scaled: Scaled, run_label: str, tmp_path: Path
) -> None:
    with EngineProxy(engine_socket(), tmp_path / "engine.sock") as proxy:
        cfg = docker_config(run_label, min=1, scale_down_stabilization="60s")
        cfg["scalers"][0]["docker"]["docker_url"] = f"unix://{proxy.path}"
        scaled.start(cfg)

        # 1. Killed between create and start: the container stays "created".
        killed_scaler(scaled, proxy, "before-start", "scaler-1")
        ((created, status),) = state(run_label)
        assert status == "created"

        # 2. The next one removes it, starts another, and is killed once the engine started
        #    it: it runs, labelled, and lb does not know it.
        second = killed_scaler(scaled, proxy, "after-start", "scaler-2")
        wait_for(lambda: state(run_label) and state(run_label)[0][1] == "running", 10, "running")
        ((running, status),) = state(run_label)
        assert running != created
        died = [e for e in log_events(second) if e.get("event") == "scaler_died"]
        assert [e["member"] for e in died] == [created]
        assert scaled.backends() == []

        # 3. The next one adopts it (registers it) and starts nothing.
        proxy.arm(None)
        third = scaled.scaler("scaler-3")
        wait_for(
            lambda: any(e.get("event") == "scaler_decision" for e in log_events(third)),
            15,
            "a decision",
            third,
        )
        events = log_events(third)
        assert [e["member"] for e in events if e.get("event") == "scaler_adopted"] == [running]
        assert not [e for e in events if e.get("event") == "scaler_member_started"]
        assert len(scaled.backends()) == 1
        assert third.stop(signal.SIGTERM) == 0

        # 4. stop-all leaves nothing.
        t0 = time.monotonic()
        done = subprocess.run(
            [sys.executable, "-m", "scaler", "-c", str(scaled.path), "stop-all"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        assert "1 member(s) stopped and removed" in done.stdout
        assert state(run_label) == []
        assert scaled.backends() == []
        print(f"stop-all in {time.monotonic() - t0:.1f}s")
