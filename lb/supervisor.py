"""The control plane: owns pool state and the worker processes.

The supervisor is the single source of truth for pools, backends, weights, admin and health
states. It sends workers a full snapshot when they start and deltas afterwards, collects their
counter snapshots, restarts a worker that dies, and on SIGTERM/SIGINT asks every worker to
stop accepting and finish its open connections within the grace period.

With ``workers = 0`` the data plane runs inside this process, connected by a ``LocalBus``; the
code path is otherwise the same.

The state, the config and the way to the workers live in the ``ControlPlane``
(``lb/control/plane.py``), which is all the control service, its API and the metrics see of
this process. The supervisor keeps what is about processes: spawning, restarting and stopping
workers, and routing what they send (``lb/wire.py``) to the health manager and the service.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import sys
import time
from dataclasses import dataclass
from typing import assert_never

from lb import wire
from lb.bus import LocalBus, PipeBus
from lb.config import Config
from lb.control.errors import ControlStartupError
from lb.control.plane import ControlPlane
from lb.control.service import ControlService
from lb.health.manager import HealthManager
from lb.state import ClusterState, ManagedBackend
from lb.worker import DataPlane

log = logging.getLogger("lb.supervisor")

RESTART_BACKOFF_MAX = 5.0


@dataclass
class WorkerHandle:
    """One worker slot; a ``WorkerLink`` for the control plane."""

    index: int
    proc: asyncio.subprocess.Process | None = None
    bus: PipeBus | LocalBus | None = None
    local: DataPlane | None = None  # only with workers = 0
    ready: asyncio.Future[None] | None = None
    started_at: float = 0.0
    restarts: int = 0
    fatal: str | None = None
    stats: wire.Stats | None = None  # the latest snapshot it sent

    def send(self, frame: bytes) -> None:
        if self.bus is not None:
            self.bus.send(frame)

    def latest_stats(self) -> wire.Stats | None:
        if self.local is not None:
            self.stats = self.local.snapshot()  # in-process: always current
        return self.stats

    def alive(self) -> bool:
        if self.local is not None:
            return True
        # A dead (or restarting) worker's connections died with it.
        return isinstance(self.bus, PipeBus) and not self.bus.closed.done()


class StartupError(Exception):
    pass


class Supervisor:
    def __init__(self, config: Config, config_path: str, log_format: str, log_level: str) -> None:
        self.config_path = config_path
        self.log_format = log_format
        self.log_level = log_level
        self.loop = asyncio.get_running_loop()
        self.workers: list[WorkerHandle] = []
        self.plane = ControlPlane(config, config_path, self.loop)
        self.plane.workers = self.workers
        self.plane.state.on_change = self._backend_changed
        self.plane.state.on_remove = self._backend_removed
        self.plane.on_config.append(self._config_applied)
        self.health = HealthManager(self.plane.state, self.loop)
        self.stopping = False
        self._stop = self.loop.create_future()
        self.control = ControlService(self.plane)

    @property
    def config(self) -> Config:
        return self.plane.config

    @property
    def state(self) -> ClusterState:
        return self.plane.state

    # -- state ------------------------------------------------------------------------------

    def _backend_changed(self, pool: str, b: ManagedBackend) -> None:
        self.plane.broadcast(self.plane.backend_update(pool, b))
        self.health.backend_changed(pool, b)
        # The drain logic waits for snapshots that echo this message's sequence number.
        self.control.backend_changed(pool, b, self.plane.seq)

    def _backend_removed(self, pool: str, backend_id: str) -> None:
        self.plane.broadcast(wire.RemoveBackend(pool, backend_id))
        self.health.backend_removed(pool, backend_id)
        self.control.backend_removed(pool, backend_id)

    def _config_applied(self, config: Config) -> None:
        if self.health.started:
            self.health.checker.sync()  # checks turned on or off for a pool

    def _greet(self, w: WorkerHandle) -> None:
        """A worker that starts gets the config, then a full snapshot of the pools."""
        w.send(self.plane.frame(self.plane.new_config()))
        w.send(self.plane.frame(self.plane.pools_snapshot()))

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
        local = DataPlane(0, plane_end)
        plane_end.on_message = local.on_frame
        sup_end.on_message = lambda frame: self._on_worker_frame(w, frame)
        w.local = local
        self.workers.append(w)
        self._greet(w)
        try:
            await local.start()
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
            parent, lambda frame: self._on_worker_frame(w, frame), lambda: self._on_worker_gone(w)
        )
        self._greet(w)

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

    def _on_worker_frame(self, w: WorkerHandle, frame: bytes) -> None:
        try:
            msg = wire.decode_to_supervisor(frame)
        except wire.WireError as exc:
            log.warning("worker %d sent a bad message, ignored: %s", w.index, exc)
            return
        self._on_worker_message(w, msg)

    def _on_worker_message(self, w: WorkerHandle, msg: wire.ToSupervisor) -> None:
        match msg:
            case wire.Stats():
                w.stats = msg
                self.control.worker_stats(w.index, w.restarts, msg)
            case wire.Ready():
                if w.ready is not None and not w.ready.done():
                    w.ready.set_result(None)
            case wire.Fatal():
                w.fatal = msg.error
                log.error("worker %d: %s", w.index, w.fatal)
            case wire.Failure():
                self.health.on_failure(msg)
                self.control.worker_failure(msg)
            case wire.Success():
                self.health.on_success(msg)
            case _:
                assert_never(msg)

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

    async def stop(self) -> None:
        self.stopping = True
        await self.control.close()
        await self.health.stop()
        grace = self.config.lb.grace
        waits = []
        for w in self.workers:
            if w.local is not None:
                waits.append(w.local.stop(grace))
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
