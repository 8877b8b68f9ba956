"""The control plane: owns pool state and the worker processes.

The supervisor is the single source of truth for pools, backends, weights, admin and health
states. It sends workers a full snapshot when they start and deltas afterwards, collects their
counter snapshots, restarts a worker that dies, and on SIGTERM/SIGINT asks every worker to
stop accepting and finish its open connections within the grace period.

With ``workers = 0`` the data plane runs inside this process, connected by a ``LocalBus``; the
code path is otherwise the same.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from lb.bus import LocalBus, Message, PipeBus
from lb.config import Config
from lb.control.errors import ControlStartupError
from lb.control.service import ControlService
from lb.health.manager import HealthManager
from lb.state import BackendSpec, ClusterState, ManagedBackend
from lb.worker import DataPlane

log = logging.getLogger("lb.supervisor")

RESTART_BACKOFF_MAX = 5.0


@dataclass
class WorkerHandle:
    index: int
    proc: asyncio.subprocess.Process | None = None
    bus: PipeBus | LocalBus | None = None
    plane: DataPlane | None = None  # only with workers = 0
    ready: asyncio.Future[None] | None = None
    started_at: float = 0.0
    restarts: int = 0
    fatal: str | None = None
    stats: dict[str, Any] = field(default_factory=dict)


class StartupError(Exception):
    pass


class Supervisor:
    def __init__(self, config: Config, config_path: str, log_format: str, log_level: str) -> None:
        self.config = config
        self.config_path = config_path
        self.log_format = log_format
        self.log_level = log_level
        self.loop = asyncio.get_running_loop()
        self.state = ClusterState(config, now=self.loop.time())
        self.state.on_change = self._backend_changed
        self.state.on_remove = self._backend_removed
        self.health = HealthManager(self.state, self.loop)
        self.workers: list[WorkerHandle] = []
        self.stopping = False
        self._stop = self.loop.create_future()
        # Every message to the workers carries ``seq``; their stats echo the last one applied,
        # which tells the drain logic that a drain reached every worker (lb/control/drain.py).
        self.seq = 0
        self.control = ControlService(self)

    # -- state ------------------------------------------------------------------------------

    def _backend_changed(self, pool: str, b: ManagedBackend) -> None:
        self.broadcast({"type": "backend", "pool": pool, "backend": b.entry(self.loop.time())})
        self.health.backend_changed(pool, b)
        self.control.backend_changed(pool, b, self.seq)

    def _backend_removed(self, pool: str, backend_id: str) -> None:
        self.broadcast({"type": "remove", "pool": pool, "id": backend_id})
        self.health.backend_removed(pool, backend_id)
        self.control.backend_removed(pool, backend_id)

    def pools_message(self) -> Message:
        return {**self.state.pools_message(self.loop.time()), "seq": self.seq}

    def config_message(self) -> Message:
        return {"type": "config", "config": self.config.model_dump(mode="json")}

    def broadcast(self, msg: Message) -> None:
        self.seq += 1
        msg["seq"] = self.seq
        for w in self.workers:
            if w.bus is not None:
                w.bus.send(msg)

    # -- worker lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        # The control socket first: a second lb on the same config stops here, before it binds
        # anything; the state file is merged before any worker gets its first snapshot. The
        # API answers while workers start (changes reach them with their first snapshot).
        try:
            await self.control.prepare()
        except ControlStartupError as exc:
            raise StartupError(str(exc)) from None
        await self.control.serve()
        # Checks run while the workers start; they get the states in their first snapshot.
        self.health.start()
        n = self.config.lb.worker_count
        if n == 0:
            await self._start_local()
        else:
            for i in range(n):
                w = WorkerHandle(index=i + 1)
                self.workers.append(w)
                await self._spawn(w)
        for w in self.workers:
            assert w.ready is not None
            try:
                async with asyncio.timeout(15):
                    await w.ready
            except TimeoutError:
                raise StartupError(f"worker {w.index} did not become ready in 15s") from None
        failed = [w for w in self.workers if w.fatal]
        if failed:
            raise StartupError(failed[0].fatal or "worker failed")
        # Announce "running" once the first checks said who is up (bounded by about a check).
        await self.health.wait_initial()

    async def _start_local(self) -> None:
        sup_end, plane_end = LocalBus.pair()
        w = WorkerHandle(index=0, bus=sup_end, ready=self.loop.create_future())
        plane = DataPlane(0, plane_end)
        plane_end.on_message = plane.on_message
        sup_end.on_message = lambda msg: self._on_worker_message(w, msg)
        w.plane = plane
        self.workers.append(w)
        sup_end.send(self.config_message())
        sup_end.send(self.pools_message())
        try:
            await plane.start()
        except OSError as exc:
            raise StartupError(f"cannot bind: {exc}") from None

    async def _spawn(self, w: WorkerHandle) -> None:
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            w.proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "lb.worker",
                "--bus-fd",
                str(child.fileno()),
                "--index",
                str(w.index),
                "--log-format",
                self.log_format,
                "--log-level",
                self.log_level,
                pass_fds=(child.fileno(),),
            )
        finally:
            child.close()
        w.ready = self.loop.create_future()
        w.started_at = time.monotonic()
        w.bus = await PipeBus.connect(
            parent, lambda msg: self._on_worker_message(w, msg), lambda: self._on_worker_gone(w)
        )
        w.bus.send(self.config_message())
        w.bus.send(self.pools_message())

    def _on_worker_gone(self, w: WorkerHandle) -> None:
        if w.ready is not None and not w.ready.done():
            w.fatal = w.fatal or f"worker {w.index} exited during startup"
            w.ready.set_result(None)
            return
        if self.stopping:
            return
        self.loop.create_task(self._restart(w))

    async def _restart(self, w: WorkerHandle) -> None:
        code = await w.proc.wait() if w.proc is not None else None
        w.restarts += 1
        # Restart at once after a long healthy run; back off when a worker keeps dying.
        lived = time.monotonic() - w.started_at
        delay = 0.0 if lived > 10 else min(RESTART_BACKOFF_MAX, 0.2 * 2 ** min(w.restarts, 5))
        log.error(
            "worker %d died (exit code %s) after %.1fs; restarting in %.1fs",
            w.index,
            code,
            lived,
            delay,
            extra={"event": {"event": "worker_restart", "worker": w.index, "exit_code": code}},
        )
        await asyncio.sleep(delay)
        if not self.stopping:
            await self._spawn(w)

    def _on_worker_message(self, w: WorkerHandle, msg: Message) -> None:
        kind = msg.get("type")
        if kind == "stats":
            w.stats = msg
            self.control.worker_stats(w, msg)
        elif kind == "ready":
            if w.ready is not None and not w.ready.done():
                w.ready.set_result(None)
        elif kind == "fatal":
            w.fatal = str(msg.get("error"))
            log.error("worker %d: %s", w.index, w.fatal)
        elif kind == "failure":
            self.health.on_failure(msg)
            self.control.metrics.failure(msg)  # errors by kind, for /metrics
        elif kind == "success":
            self.health.on_success(msg)
        else:
            log.warning("unknown message from worker %d: %r", w.index, kind)

    # -- stats ------------------------------------------------------------------------------

    def aggregate_stats(self) -> dict[str, Any]:
        """Sum the latest snapshot of every worker."""
        listeners: dict[str, dict[str, int]] = {}
        pools: dict[str, dict[str, dict[str, int]]] = {}
        for w in self.workers:
            if w.plane is not None:
                w.stats = w.plane.snapshot()
            for name, counters in w.stats.get("listeners", {}).items():
                acc = listeners.setdefault(name, {})
                for k, v in counters.items():
                    acc[k] = acc.get(k, 0) + v
            for pool, backends in w.stats.get("pools", {}).items():
                pacc = pools.setdefault(pool, {})
                for bid, counters in backends.items():
                    bacc = pacc.setdefault(bid, {})
                    for k, v in counters.items():
                        bacc[k] = bacc.get(k, 0) + v
        return {"listeners": listeners, "pools": pools}

    # -- shutdown ---------------------------------------------------------------------------

    def request_stop(self, why: str) -> None:
        if not self._stop.done():
            self._stop.set_result(why)

    async def run(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            self.loop.add_signal_handler(sig, self.request_stop, sig.name)
        self.loop.add_signal_handler(signal.SIGHUP, self.control.reload_soon, "SIGHUP")
        why = await self._stop
        log.info("stopping (%s): no new connections; open ones may finish", why)
        await self.stop()

    def apply_config(
        self, config: Config, backends: Mapping[str, Sequence[BackendSpec]]
    ) -> list[str]:
        """Hot reload of a validated config; ``backends`` is the merged membership
        (``lb/persist.py``). Workers get the config, then a full snapshot: they start new
        listeners only after that snapshot, so a new listener never sees an empty pool."""
        changes = self.state.apply_config(config, backends, self.loop.time())
        self.config = config
        if self.health.started:
            self.health.checker.sync()  # checks turned on or off for a pool
        self.broadcast(self.config_message())
        self.broadcast(self.pools_message())
        return changes

    async def stop(self) -> None:
        self.stopping = True
        await self.control.close()
        await self.health.stop()
        grace = self.config.lb.grace
        waits = []
        for w in self.workers:
            if w.plane is not None:
                waits.append(w.plane.stop(grace))
            elif w.proc is not None and w.proc.returncode is None:
                w.proc.send_signal(signal.SIGTERM)
                waits.append(self._reap(w, grace + 5))
        await asyncio.gather(*waits)
        for w in self.workers:
            if w.bus is not None:
                w.bus.close()

    async def _reap(self, w: WorkerHandle, limit: float) -> None:
        assert w.proc is not None
        try:
            async with asyncio.timeout(limit):
                await w.proc.wait()
        except TimeoutError:
            log.error("worker %d ignored SIGTERM for %.0fs; killing it", w.index, limit)
            w.proc.kill()
            await w.proc.wait()
