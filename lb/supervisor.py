"""The control plane: owns pool state and the worker processes.

The supervisor is the single source of truth for pools, backends, weights, admin and health
states. It sends workers a full snapshot when they start and deltas afterwards, collects their
counter snapshots, restarts a worker that dies, and on SIGTERM/SIGINT asks every worker to
stop accepting and finish its open connections within the grace period.

With ``workers = 0`` the data plane runs inside this process, connected by a ``LocalBus``; the
code path is otherwise the same.

The supervisor also owns the listening sockets (``lb/sockets.py``): it binds each listener once
per worker slot before any worker starts, hands a worker its slot's sockets when it spawns it
(and a replacement the same ones), and sends new ones over each worker's socket channel when a
reload adds or moves a listener. A worker that dies, at any moment, even before it said it was
ready, is restarted with backoff; while it restarts, new connections for its slot wait in the
kernel's accept queue.

The state, the config and the way to the workers live in the ``ControlPlane``
(``lb/control/plane.py``), which is all the control service, its API and the metrics see of
this process. The supervisor keeps what is about processes: spawning, restarting and stopping
workers, and routing what they send (``lb/wire.py``) to the health manager and the service.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
import time
from dataclasses import dataclass
from typing import assert_never

from lb import wire
from lb.bus import LocalBus, PipeBus
from lb.certwatch import CertWatcher
from lb.config import Config, format_cpu_list, usable_cpus
from lb.control.errors import ApiError, ControlStartupError
from lb.control.plane import ControlPlane
from lb.control.service import ControlService
from lb.health.manager import HealthManager
from lb.sdnotify import Notifier
from lb.sockets import BindError, SocketTable, fds_argument, send_socket
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
    channel: socket.socket | None = None  # the socket channel (lb/sockets.py)
    local: DataPlane | None = None  # only with workers = 0
    ready: asyncio.Future[None] | None = None
    started_at: float = 0.0
    restarts: int = 0  # deaths after the first start (each one restarted)
    is_ready: bool = False  # the current process said "ready"
    retiring: bool = False  # a reload lowered ``workers``: let it finish, do not restart it
    failed_starts: int = 0  # consecutive deaths before "ready" (the restart backoff)
    fatal: str | None = None
    stats: wire.Stats | None = None  # the latest snapshot it sent
    cpus: frozenset[int] | None = None  # what its process is pinned to ([lb] cpu_map)

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
        self.plane.before_apply.append(self._prepare_sockets)
        self.health = HealthManager(self.plane.state, self.loop)
        self.sockets = SocketTable()
        self.started = False  # the first start is over: every later death is restarted
        self.stopping = False
        self._running = False  # start() is over: READY was said
        self._reload_pending = False  # a SIGHUP came before that
        self._stop = self.loop.create_future()
        # Our own CPUs (taskset, systemd's CPUAffinity=): a worker without cpu_map gets these.
        self._cpus = usable_cpus()
        self.control = ControlService(self.plane)
        # [listeners.tls] watch: a changed certificate file reloads as SIGHUP does
        self.certwatch = CertWatcher(lambda: self.plane.config, self.control.reload_soon)
        # systemd (Type=notify; lb/sdnotify.py): READY=1 once every listener accepts,
        # RELOADING=1 then READY=1 around a reload that applies, STOPPING=1. Registered after
        # _prepare_sockets: a reload refused there never says RELOADING.
        self.notify = Notifier()
        self.plane.before_apply.append(self._notify_reloading)
        self.plane.on_config.append(self._notify_reloaded)

    def _notify_reloading(self, old: Config, new: Config) -> None:
        if self.started:
            self.notify.reloading()

    def _notify_reloaded(self, config: Config) -> None:
        if self.started:
            self.notify.ready(self._ready_status(config))

    @staticmethod
    def _ready_status(config: Config) -> str:
        binds = ", ".join(f"{lc.name} {lc.bind}" for lc in config.listeners)
        return f"{config.lb.worker_count} worker(s); listening: {binds}"

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
        # Workers retire the listeners that went away when they get this config; our copies
        # of their sockets go now.
        self.sockets.release_unused(config)
        for w in self.workers:
            self._pin(w, config)  # a changed cpu_map applies at once
        if (
            self.started
            and config.lb.worker_count != len(self.workers)
            and self.workers[0].local is None
        ):
            self.loop.create_task(self._resize(config.lb.worker_count))

    @staticmethod
    def _resizable(old: Config, new: Config) -> bool:
        """``workers`` changes on reload between process counts (not to or from 0, the
        in-process mode, which needs a restart)."""
        a, b = old.lb.worker_count, new.lb.worker_count
        return a != b and a > 0 and b > 0

    async def _resize(self, n: int) -> None:
        """A reload changed ``workers``: start the new slots (their sockets are bound), or
        retire the highest ones (they stop accepting and finish their connections within
        ``grace``, as on a stop; their sockets close)."""
        while len(self.workers) < n and not self.stopping:
            w = WorkerHandle(index=len(self.workers) + 1)
            self.workers.append(w)
            log.info("workers: starting worker %d (reload)", w.index)
            await self._spawn(w)
        if len(self.workers) > n:
            retired = self.workers[n:]
            del self.workers[n:]
            for w in retired:
                log.info("workers: retiring worker %d (reload)", w.index)
                w.retiring = True
                self.sockets.drop_slot(w.index)
                if w.proc is not None and w.proc.returncode is None:
                    w.proc.send_signal(signal.SIGTERM)
            await asyncio.gather(*(self._reap(w, self.config.lb.grace + 5) for w in retired))
            for w in retired:
                if w.channel is not None:
                    w.channel.close()

    def _prepare_sockets(self, old: Config, new: Config) -> None:
        """Before a reload applies: bind the sockets that new or moved listeners need, for
        every worker slot, and hand them to the workers. A bind that fails refuses the reload
        (ApiError 422) with nothing bound and nothing changed."""
        slots = [w.index for w in self.workers]
        if self._resizable(old, new):
            slots += range(len(self.workers) + 1, new.lb.worker_count + 1)
        # (no worker yet, as before the first start: a probe, so that the answer is the same)
        table = self.sockets if slots else SocketTable()
        try:
            fresh = table.bind(new, slots or [0])
        except BindError as exc:
            i = exc.index
            raise ApiError(
                422,
                f"listeners[{i}].bind",
                f"{self.config_path}: listeners[{i}].bind: {exc}; the running config is unchanged",
            ) from None
        if table is not self.sockets:
            table.close()
            return
        for w in self.workers:
            for key, sock in fresh.get(w.index, {}).items():
                self._hand_over(w, key, sock)

    def _hand_over(self, w: WorkerHandle, key: str, sock: socket.socket) -> None:
        if w.local is not None:
            w.local.add_sockets([(key, sock.dup())])
            return
        if w.channel is None or not w.alive():
            return  # restarting: the replacement gets every socket of its slot at spawn
        try:
            send_socket(w.channel, key, sock)
        except OSError as exc:  # it died meanwhile; its replacement gets the socket
            log.warning("worker %d: cannot hand over %s: %s", w.index, key, exc)

    def _greet(self, w: WorkerHandle) -> None:
        """A worker that starts gets the config, then a full snapshot of the pools."""
        w.send(self.plane.frame(self.plane.new_config()))
        w.send(self.plane.frame(self.plane.pools_snapshot()))

    # -- worker lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        # SIGTERM/SIGINT from here on stop lb cleanly: the workers answer before start()
        # returns (it still waits for the first health checks), and a signal in that window
        # must not kill the supervisor with the default action and leave its workers behind.
        self._install_signals()
        # The control socket first: a second lb on the same config stops here, before it binds
        # anything; the state file is merged before any worker gets its first snapshot. The
        # API answers while workers start (changes reach them with their first snapshot).
        try:
            await self.control.prepare()
        except ControlStartupError as exc:
            raise StartupError(str(exc)) from None
        await self.control.serve()
        n = self.config.lb.worker_count
        try:
            self.sockets.bind(self.config, range(1, n + 1) if n else [0])
        except BindError as exc:
            raise StartupError(f"{self.config_path}: listeners[{exc.index}].bind: {exc}") from None
        # Checks run while the workers start; they get the states in their first snapshot.
        self.health.start()
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
        self.started = True
        self.certwatch.start(self.loop)
        # Announce "running" once the first checks said who is up (bounded by about a check).
        await self.health.wait_initial()
        # Every worker said "ready": each has its listeners accepting.
        self.notify.ready(self._ready_status(self.config))
        self.notify.start_watchdog(self.loop)
        self._running = True
        if self._reload_pending:
            self._reload_pending = False
            self.control.reload_soon("SIGHUP")

    async def _start_local(self) -> None:
        sup_end, plane_end = LocalBus.pair()
        w = WorkerHandle(index=0, bus=sup_end, ready=self.loop.create_future())
        sockets = {key: sock.dup() for key, sock in self.sockets.of(0).items()}
        local = DataPlane(0, plane_end, sockets=sockets)
        plane_end.on_message = local.on_frame
        sup_end.on_message = lambda frame: self._on_worker_frame(w, frame)
        w.local = local
        self.workers.append(w)
        self._pin(w, self.config)
        self._greet(w)
        try:
            await local.start()
        except OSError as exc:
            raise StartupError(f"cannot bind: {exc}") from None

    async def _spawn(self, w: WorkerHandle) -> None:
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        chan_parent, chan_child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        listening = self.sockets.of(w.index)
        try:
            w.proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "lb.worker",
                "--bus-fd",
                str(child.fileno()),
                "--index",
                str(w.index),
                "--sockets",
                fds_argument(listening),
                "--socket-channel-fd",
                str(chan_child.fileno()),
                "--log-format",
                self.log_format,
                "--log-level",
                self.log_level,
                "--supervisor-pid",
                str(os.getpid()),
                pass_fds=(
                    child.fileno(),
                    chan_child.fileno(),
                    *(s.fileno() for s in listening.values()),
                ),
            )
        except BaseException:
            parent.close()
            chan_parent.close()
            raise
        finally:
            child.close()
            chan_child.close()
        if w.channel is not None:
            w.channel.close()
        w.channel = chan_parent
        w.cpus = None
        self._pin(w, self.config)
        w.ready = self.loop.create_future()
        w.started_at = time.monotonic()
        w.is_ready = False
        w.bus = await PipeBus.connect(
            parent, lambda frame: self._on_worker_frame(w, frame), lambda: self._on_worker_gone(w)
        )
        self._greet(w)

    def _pin(self, w: WorkerHandle, config: Config) -> None:
        """``[lb] cpu_map``: set the worker process's CPUs (ours when cpu_map is unset)."""
        if w.local is not None:
            pid = os.getpid()  # workers = 0: the one process
        elif w.proc is not None and w.proc.returncode is None:
            pid = w.proc.pid
        else:
            return
        cpus = config.lb.cpus_of(w.index) or self._cpus
        if cpus == (w.cpus or self._cpus):
            return
        try:
            # Every thread (a running worker may have started libuv's pool): a tid each.
            try:
                tids = [int(t) for t in os.listdir(f"/proc/{pid}/task")]
            except OSError:
                tids = [pid]
            for tid in tids:
                with contextlib.suppress(ProcessLookupError):  # a thread that just ended
                    os.sched_setaffinity(tid, cpus)
        except OSError as exc:  # the CPU went offline since the config was checked
            log.error("worker %d: cannot pin to CPUs %s: %s", w.index, format_cpu_list(cpus), exc)
            return
        w.cpus = cpus
        log.info("worker %d runs on CPUs %s", w.index, format_cpu_list(cpus))

    def _on_worker_gone(self, w: WorkerHandle) -> None:
        self.control.worker_gone(w.index)
        if w.ready is not None and not w.ready.done():
            w.ready.set_result(None)
            if not self.started:
                # The first start: lb refuses to run (StartupError) rather than restart.
                w.fatal = w.fatal or f"worker {w.index} exited during startup"
                return
        if self.stopping or w.retiring:
            return
        # Any other death, ready or not (a replacement killed while it starts, too), is
        # restarted: lb never stays without a worker for a slot.
        self.loop.create_task(self._restart(w))

    async def _restart(self, w: WorkerHandle) -> None:
        code = await w.proc.wait() if w.proc is not None else None
        w.restarts += 1
        lived = time.monotonic() - w.started_at
        # A worker that had started (said "ready") and ran for a second is replaced at once.
        # One that keeps dying before it is ready (a crash at import, a bad host), or at once
        # after, is retried with a doubling delay, 0.1 s to RESTART_BACKOFF_MAX; the count
        # starts again when a worker gets ready.
        if w.is_ready and lived >= 1.0:
            delay = 0.0
        else:
            w.failed_starts += 1
            delay = min(RESTART_BACKOFF_MAX, 0.1 * 2 ** min(w.failed_starts - 1, 6))
        log.error(
            "worker %d died (exit code %s) after %.1fs%s; restarting in %.1fs",
            w.index,
            code,
            lived,
            "" if w.is_ready else ", before it was ready",
            delay,
            extra={"event": {"event": "worker_restart", "worker": w.index, "exit_code": code}},
        )
        await asyncio.sleep(delay)
        if self.stopping:
            return
        try:
            await self._spawn(w)
        except OSError as exc:  # fork failed (out of memory, pids): try again, later
            log.error("worker %d: cannot start a replacement: %s", w.index, exc)
            w.started_at = time.monotonic()
            self.loop.create_task(self._restart(w))

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
            case wire.Demand():
                self.control.worker_demand(msg)
            case wire.Ready():
                w.is_ready = True
                w.failed_starts = 0
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

    def _install_signals(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            self.loop.add_signal_handler(sig, self.request_stop, sig.name)
        self.loop.add_signal_handler(signal.SIGHUP, self._on_sighup)

    def _on_sighup(self) -> None:
        # A reload while the workers start would race their first snapshot: it waits for them.
        if self._running:
            self.control.reload_soon("SIGHUP")
        else:
            self._reload_pending = True

    async def run(self) -> None:
        """Until SIGTERM or SIGINT (handled since start()), then a graceful stop."""
        why = await self._stop
        log.info("stopping (%s): no new connections; open ones may finish", why)
        await self.stop()

    async def stop(self) -> None:
        self.stopping = True
        self.notify.stopping()
        # Workers stop accepting; with our copies closed too, new connections are refused
        # instead of waiting in a queue that nobody will read.
        self.sockets.close()
        await self.certwatch.stop()
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
            if w.channel is not None:
                w.channel.close()
        self.notify.close()

    async def _reap(self, w: WorkerHandle, limit: float) -> None:
        if w.proc is None:
            return
        try:
            async with asyncio.timeout(limit):
                await w.proc.wait()
        except TimeoutError:
            log.error("worker %d ignored SIGTERM for %.0fs; killing it", w.index, limit)
            w.proc.kill()
            await w.proc.wait()
